// Issue 7 against a real Postgres through the real listener in transaction mode: prepared
// statements healed and retried after DDL (0A000) or a lost statement (26000), pins that end
// when the client removes its session state, per-server state freed when servers close, and a
// batch ending in Flush that gets every reply it is owed.
import type pg from 'pg';
import { serialize } from 'pg-protocol';
import t from 'tap';
import type { PostgresListener } from '../proxy/postgres/postgres-listener.js';
import type { SessionStateTap } from '../proxy/postgres/session-state-tap.js';
import { startPostgres } from './harness/postgres-server.js';
import { waitFor } from './harness/tools.js';
import { RawClient } from './pg-prepared-wire.js';
import { connect, freshDatabase, rejection, type RunningListener, startListener } from './pg-support.js';

const server = await startPostgres();
t.teardown(() => server.destroy());

function tapOf(sluice: RunningListener): SessionStateTap {
  return (sluice.listener as PostgresListener).tap as SessionStateTap;
}

const sourced = new WeakSet<RunningListener>();

/** The value of one sample of the exposition (summed over matching series), 0 when absent. */
async function sample(sluice: RunningListener, name: string, labels: Record<string, string> = {}): Promise<number> {
  if (!sourced.has(sluice)) {
    // gauges are read from listener snapshots at scrape time, as the process does
    sluice.metrics.addSource(() => [sluice.listener.snapshot()]);
    sourced.add(sluice);
  }
  const text = await sluice.metrics.render();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (!Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

const pid = async (client: pg.Client): Promise<number> => (await client.query('select pg_backend_pid() as pid')).rows[0].pid;

t.test('after ALTER TABLE adds a column, the same named query succeeds with the new columns (0A000 healed and retried)', async (t) => {
  const sluice = await startListener(server, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(server, 'heal_ddl');
  await server.psql('create table items (a int); insert into items values (1)', database);
  const client = await connect(sluice.port, { database });
  t.teardown(() => client.end());
  const named = { name: 'all_items', text: 'select * from items' };
  const before = await client.query(named);
  t.same(before.fields.map((f) => f.name), ['a']);
  await server.psql('alter table items add column b int default 2', database);
  const after = await client.query(named);
  t.same(after.fields.map((f) => f.name), ['a', 'b'], 'the new column set');
  t.same(after.rows, [{ a: 1, b: 2 }]);
  const healed = tapOf(sluice).statementsOf(serverIdOf(tapOf(sluice)))!;
  t.equal(healed.lastHeal?.sqlstate, '0A000', 'it was a cached-plan error that was healed');
  t.equal(healed.retries, 1, 'by sending the batch again once');

  await server.psql('alter table items add column c text default $$x$$', database);
  await client.query('begin');
  const inside = await rejection(client.query(named));
  t.equal(inside.code, '0A000', 'inside a transaction block the error passes through (the transaction is aborted)');
  await client.query('rollback');
  const next = await client.query(named);
  t.same(next.rows, [{ a: 1, b: 2, c: 'x' }], 'and the next transaction prepares the statement afresh');
  t.equal(healed.retries, 1, 'no retry inside the transaction block');
});

/** The one server a pool_size 1 tap knows. */
function serverIdOf(tap: SessionStateTap): number {
  const ids = tap.serverIds();
  if (ids.length !== 1) throw new Error(`expected one server known to the tap, found ${ids.length}`);
  return ids[0];
}

t.test('a statement the server lost (DEALLOCATE of its sluice name) is prepared again and the Bind retried (26000 healed)', async (t) => {
  const sluice = await startListener(server, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const client = await connect(sluice.port);
  t.teardown(() => client.end());
  const named = { name: 'answer', text: 'select $1::int * 2 as n', values: [21] };
  t.same((await client.query(named)).rows, [{ n: 42 }]);
  // the pool has one server: another client's SQL runs on it and drops the statement behind sluice's back
  const vandal = await connect(sluice.port);
  t.teardown(() => vandal.end());
  const [row] = (await vandal.query("select name from pg_prepared_statements where name like 'sluice_%'")).rows;
  t.match(row?.name, /^sluice_/, 'the server holds the renamed statement');
  await vandal.query(`deallocate "${row.name}"`);
  t.same((await client.query(named)).rows, [{ n: 42 }], 'the named query still works');
  const statements = tapOf(sluice).statementsOf(serverIdOf(tapOf(sluice)))!;
  t.equal(statements.lastHeal?.sqlstate, '26000');
  t.equal(statements.retries, 1);
  t.equal((await vandal.query('select count(*)::int as n from pg_prepared_statements where name = $1', [row.name])).rows[0].n, 1, 'prepared there again');
});

t.test('the raw protocol sees one clean reply stream for a healed batch', async (t) => {
  const sluice = await startListener(server, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(server, 'heal_raw');
  await server.psql('create table r (a int); insert into r values (1)', database);
  const c = await RawClient.connect(sluice.port, database);
  t.teardown(() => c.end());
  const P = serialize.parse({ name: 'q', text: 'select * from r' });
  const B = serialize.bind({ statement: 'q' });
  const DP = serialize.describe({ type: 'P', name: '' });
  const E = serialize.execute({});
  const S = serialize.sync();
  t.same(await c.run([P, B, DP, E, S]), ['1', '2', 'T a', 'D 1', 'C SELECT 1', 'Z I']);
  await server.psql('alter table r add column b int default 5', database);
  t.same(await c.run([B, DP, E, S]), ['2', 'T a,b', 'D 1,5', 'C SELECT 1', 'Z I'], 'no error, no extra reply');
  await server.psql('alter table r add column c int default 6', database);
  // two batches in one write: the first fails with something pipelined behind it, so it is not retried
  t.same(await c.run([B, DP, E, S, serialize.query('select 7'), B, DP, E, S], 3), ['E 0A000', 'Z I', 'T ?column?', 'D 7', 'C SELECT 1', 'Z I', '2', 'T a,b,c', 'D 1,5,6', 'C SELECT 1', 'Z I']);
});

t.test('UNLISTEN * after LISTEN gives the server back to the pool', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('listen sluice_unpin');
  const first = await pid(a);
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1, 'pinned by LISTEN');
  await a.query('unlisten *');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0, 'the pinned gauge drops');
  t.equal(await sample(sluice, 'sluice_unpins_total', { reason: 'unlisten' }), 1, 'the unpin is counted by what ended it');
  const b = await connect(sluice.port);
  t.teardown(() => b.end());
  await b.query('begin');
  t.equal(await pid(b), first, "another client's transaction gets the server the listener had");
  t.not(await pid(a), first, "and the former listener's next transaction runs on another server");
  await b.query('commit');
});

t.test('UNLISTEN of one channel keeps the pin while another is listened to; a ROLLBACKed UNLISTEN * keeps it', async (t) => {
  const sluice = await startListener(server, { pool_size: 2 });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('listen one');
  await a.query('listen two');
  await a.query('unlisten one');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1, 'still listening to two');
  await a.query('begin');
  await a.query('unlisten *');
  await a.query('rollback');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1, 'the rolled-back UNLISTEN did not end it');
  await rejection(a.query('unlisten *; select 1/0'));
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1, 'nor did one whose implicit transaction failed');
  await a.query('begin; unlisten two; commit');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0, 'a committed UNLISTEN of the last channel does');
});

t.test('DISCARD ALL ends every pin reason at once', async (t) => {
  const sluice = await startListener(server, { pool_size: 2 });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('create temp table scratch (x int)');
  await a.query('listen discard_me');
  await a.query('prepare p as select 1');
  await a.query('select pg_advisory_lock(77)');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1);
  await a.query('discard all');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0, 'unpinned');
  t.equal(await sample(sluice, 'sluice_unpins_total', { reason: 'discard-all' }), 1);
  t.equal(await server.psql("select count(*) from pg_locks where locktype = 'advisory' and objid = 77"), '0', 'the lock is really gone');
});

t.test('pg_advisory_unlock_all() after pg_advisory_lock ends the pin; DEALLOCATE ALL after PREPARE too', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('select pg_advisory_lock(4711)');
  const first = await pid(a);
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1);
  await a.query('select pg_advisory_unlock_all()');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0);
  t.equal(await sample(sluice, 'sluice_unpins_total', { reason: 'advisory-unlock-all' }), 1);
  const b = await connect(sluice.port);
  t.teardown(() => b.end());
  await b.query('begin');
  t.equal(await pid(b), first, 'the server went back to the pool');
  await b.query('commit');
  await a.query('prepare mine as select 1');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1, 'SQL PREPARE pins');
  await a.query('deallocate all');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0, 'DEALLOCATE ALL ends it');
});

t.test('a temp table dropped by DISCARD TEMP and a WITH HOLD cursor closed by CLOSE ALL end their pins', async (t) => {
  const sluice = await startListener(server, { pool_size: 2 });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('create temp table t1 (x int)');
  await a.query('discard temp');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0);
  await a.query('begin');
  await a.query('declare c cursor with hold for select 1');
  await a.query('commit');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 1);
  await a.query('close all');
  t.equal(await sample(sluice, 'sluice_pinned_clients'), 0);
});

t.test('servers killed one after another leave no per-server state behind, and named statements keep working', async (t) => {
  const sluice = await startListener(server, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(server, 'killed');
  const tap = tapOf(sluice);
  const client = await connect(sluice.port, { database });
  t.teardown(() => client.end());
  const named = { name: 'double', text: 'select $1::int * 2 as n' };
  for (let round = 0; round < 8; round++) {
    t.same((await client.query({ ...named, values: [round] })).rows, [{ n: 2 * round }], `round ${round}`);
    const killed = await server.psql(`select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = '${database}' and backend_type = 'client backend'`);
    t.equal(killed, '1', 'the pool had one server, now terminated');
    await waitFor('sluice to notice the server is gone', () => tap.serverCount === 0);
  }
  t.same((await client.query({ ...named, values: [50] })).rows, [{ n: 100 }], 'after all that');
  t.equal(tap.serverCount, 1, 'state for the one live server only');
});

t.test('a batch ending in Flush gets the ParseComplete sluice answers after its last CommandComplete', async (t) => {
  const sluice = await startListener(server, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const c = await RawClient.connect(sluice.port);
  t.teardown(() => c.end());
  t.same(await c.run([serialize.parse({ name: 'two', text: 'select 2' }), serialize.sync()]), ['1', 'Z I']);
  let watchdog: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    watchdog = setTimeout(() => reject(new Error('stalled: the client is still waiting for a reply after 20s')), 20_000);
  });
  t.teardown(() => clearTimeout(watchdog));
  const got = await Promise.race([stalled, c.take(
    [
      serialize.parse({ name: '', text: 'select 1' }),
      serialize.bind({}),
      serialize.execute({}),
      // the same text as "two", already prepared on the only server: answered by sluice
      serialize.parse({ name: 'deux', text: 'select 2' }),
      serialize.flush(),
    ],
    5,
  )]);
  t.same(got, ['1', '2', 'D 1', 'C SELECT 1', '1'], 'every reply, the synthesised one last');
  t.same(await c.run([serialize.bind({ statement: 'deux' }), serialize.execute({}), serialize.sync()]), ['2', 'D 2', 'C SELECT 1', 'Z I']);
});

t.test('a Parse answered by sluice while the client waited for a server reaches the client when the server comes', async (t) => {
  const sluice = await startListener(server, { pool_size: 1, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const c = await RawClient.connect(sluice.port);
  t.teardown(() => c.end());
  t.same(await c.run([serialize.parse({ name: 'two', text: 'select 2' }), serialize.sync()]), ['1', 'Z I']);
  const holder = await connect(sluice.port);
  t.teardown(() => holder.end());
  await holder.query('begin');
  // the only server is busy: this waits in sluice; once it is granted, sluice answers it itself
  const reply = c.take([serialize.parse({ name: 'zwei', text: 'select 2' }), serialize.flush()], 1);
  await waitFor('the raw client to wait for the server', () => sluice.listener.snapshot().pools.some((p) => p.stats.waiting === 1));
  await holder.query('commit');
  let watchdog: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    watchdog = setTimeout(() => reject(new Error('stalled: the client is still waiting for its ParseComplete after 20s')), 20_000);
  });
  t.teardown(() => clearTimeout(watchdog));
  t.same(await Promise.race([stalled, reply]), ['1']);
  t.same(await c.run([serialize.bind({ statement: 'zwei' }), serialize.execute({}), serialize.sync()]), ['2', 'D 2', 'C SELECT 1', 'Z I']);
});

t.test('the session state of a pinned client that disconnects never reaches the next client of its server', async (t) => {
  const sluice = await startListener(server, { pool_size: 1, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  await a.query('create temp table left_behind (x int)');
  await a.query('select pg_advisory_lock(9191)');
  await a.query('listen left_behind');
  await a.end();
  const b = await connect(sluice.port);
  t.teardown(() => b.end());
  const seen = await rejection(b.query('select * from pg_temp.left_behind'));
  t.equal(seen.code, '42P01', 'no temp table of the previous client');
  t.equal((await b.query('select count(*)::int as n from pg_locks where locktype = $1 and objid = 9191', ['advisory'])).rows[0].n, 0, 'no advisory lock of it');
  t.equal((await b.query('select count(*)::int as n from pg_listening_channels()')).rows[0].n, 0, 'no LISTEN of it');
  t.equal(await sample(sluice, 'sluice_server_connections_closed_total', { reason: 'session-state' }), 1, 'its server was closed, not reused');
});
