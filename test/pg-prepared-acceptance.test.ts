// Issue 7 against a real Postgres through the real listener in transaction mode (with the tap
// it installs by default), fewer servers than clients: drivers that prepare statements (pgbench -M prepared, postgres.js,
// node-postgres named queries, psycopg 3), the prepared-statement edge cases on raw protocol
// bytes, session-state pinning (temp table, advisory lock, SET search_path), pins in metrics,
// and LISTEN/NOTIFY.
import type pg from 'pg';
import { serialize } from 'pg-protocol';
import postgres from 'postgres';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { connect, execFileAsync, freshDatabase, startListener } from './pg-support.js';
import { RawClient } from './pg-prepared-wire.js';

const server = await startPostgres();
t.teardown(() => server.destroy());

const P = (name: string, text: string, types: number[] = []) => serialize.parse({ name, text, types });
const B = (statement: string, values: unknown[] = []) => serialize.bind({ statement, values: values as string[] });
const E = () => serialize.execute({});
const S = () => serialize.sync();

/** Holds one server of the pool in an open transaction, so the next client gets another. */
async function holdServer(port: number, database: string): Promise<() => Promise<void>> {
  const holder = await connect(port, { database });
  await holder.query('begin');
  await holder.query('select 1');
  return async () => {
    await holder.query('commit');
    await holder.end();
  };
}

t.test('pgbench -M prepared, select-only and TPC-B, 32 clients over a pool of 4: zero failed transactions', async (t) => {
  const sluice = await startListener(server, { pool_size: 4, timeouts: { acquire: '120s' } });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(server, 'prepared_bench');
  const env = { ...process.env, PGPASSWORD: PG_USERS.scram.password };
  const common = ['-h', '127.0.0.1', '-p', String(sluice.port), '-U', PG_USERS.scram.name, database];
  await execFileAsync('pgbench', ['-i', '-q', '-s', '1', ...common], { env, cwd: '/' });
  // pgbench prepares each statement with a blocking PQprepare on first use, which stalls every
  // client of its thread; with BEGIN…END transactions holding all servers that deadlocks any
  // transaction pooler unless each client has its own thread (-j 32). Select-only does not hold.
  for (const script of [['-S', '-j', '2'], ['-j', '32']]) {
    const { stdout } = await execFileAsync('pgbench', ['-n', '-c', '32', '-t', '30', '-M', 'prepared', ...script, ...common], { env, cwd: '/', timeout: 240_000 });
    const label = script[0] === '-S' ? 'select-only' : 'TPC-B';
    t.match(stdout, /number of failed transactions: 0 /, `${label}: zero failed transactions`);
    t.match(stdout, /number of transactions actually processed: 960\/960/, `${label}: every transaction processed`);
  }
  const [history, accounts] = (await server.psql("select (select sum(delta) from pgbench_history) || ',' || (select sum(abalance) from pgbench_accounts)", database)).split(',');
  t.equal(accounts, history, 'TPC-B invariant: account balances equal the history sum');
});

t.test('postgres.js (prepare: true by default), 50 concurrent clients over a pool of 3', async (t) => {
  const sluice = await startListener(server, { pool_size: 3, timeouts: { acquire: '120s' } });
  t.teardown(() => sluice.close());
  const results = await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      const sql = postgres({ host: '127.0.0.1', port: sluice.port, user: PG_USERS.scram.name, password: PG_USERS.scram.password, database: 'postgres', max: 1, onnotice: () => {} });
      try {
        let total = 0;
        for (let q = 0; q < 5; q++) {
          const [row] = await sql`select ${i}::int + ${q}::int as n, ${`c${i}`}::text as tag`;
          if (row.tag !== `c${i}`) throw new Error('reply for another client');
          total += row.n;
          const rows = await sql`select generate_series(1, ${q + 1}::int) as g`;
          if (rows.length !== q + 1) throw new Error('wrong row count');
        }
        return total;
      } finally {
        await sql.end();
      }
    }),
  );
  t.same(
    results,
    Array.from({ length: 50 }, (_, i) => 5 * i + 10),
    'every client got its own answers',
  );
});

for (const mode of ['transaction', 'statement'] as const)
t.test(`node-postgres named queries from 50 concurrent clients over a pool of 3 (${mode} mode)`, async (t) => {
  const sluice = await startListener(server, { pool_mode: mode, pool_size: 3, timeouts: { acquire: '120s' } });
  t.teardown(() => sluice.close());
  const results = await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      const client = await connect(sluice.port);
      try {
        const seen: number[] = [];
        for (let q = 0; q < 4; q++) {
          const res = await client.query({ name: 'add', text: 'select $1::int + $2::int as n', values: [i, q] });
          const other = await client.query({ name: `own_${i % 5}`, text: `select $1::text || '-${i % 5}' as s`, values: [`c${i}`] });
          if (other.rows[0].s !== `c${i}-${i % 5}`) throw new Error('reply for another client');
          seen.push(res.rows[0].n);
        }
        return seen.reduce((a, b) => a + b, 0);
      } finally {
        await client.end();
      }
    }),
  );
  t.same(
    results,
    Array.from({ length: 50 }, (_, i) => 4 * i + 6),
  );
});

t.test('psycopg 3 with server-side prepared statements, 10 threads over a pool of 2', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '120s' } });
  t.teardown(() => sluice.close());
  const script = `
import sys, threading, psycopg
port = int(sys.argv[1])
errors = []
def work(i):
    try:
        with psycopg.connect(host='127.0.0.1', port=port, user='${PG_USERS.scram.name}', password='${PG_USERS.scram.password}', dbname='postgres', prepare_threshold=0) as conn:
            for q in range(6):
                row = conn.execute('select %s::int + %s::int, %s::text', (i, q, 'c%d' % i), prepare=True).fetchone()
                assert row == (i + q, 'c%d' % i), row
                conn.commit()
    except Exception as e:
        errors.append(repr(e))
threads = [threading.Thread(target=work, args=(i,)) for i in range(10)]
for th in threads: th.start()
for th in threads: th.join()
print('errors:', len(errors), errors[:3])
`;
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script, String(sluice.port)], { cwd: '/', timeout: 120_000 });
  t.match(stdout, /^errors: 0 /, stdout.trim());
});

t.test('prepared-statement edge cases on raw protocol bytes, across servers', async (t) => {
  const sluice = await startListener(server, { pool_size: 2 });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(server, 'edges');
  const c = await RawClient.connect(sluice.port, database);
  t.teardown(() => c.end());

  t.same(await c.run([P('s1', 'selec 1'), S()]), ['E 42601', 'Z I'], 'a failed Parse reports its error');
  t.same(await c.run([P('s1', 'select 1 as one'), B('s1'), E(), S()]), ['1', '2', 'D 1', 'C SELECT 1', 'Z I'], 'the same name parses again: no mapping was left');

  await c.run([P('d', 'select $1::int as x'), S()]);
  const release = await holdServer(sluice.port, database);
  t.same(await c.run([serialize.describe({ type: 'S', name: 'd' }), S()]), ['t', 'T x', 'Z I'], 'Describe without Execute, possibly on a server that never saw it');
  t.same(await c.run([B('d', ['5']), E(), S()]), ['2', 'D 5', 'C SELECT 1', 'Z I']);
  await release();

  await c.run([P('n', 'select 1 as a'), S()]);
  t.same(
    await c.run([serialize.close({ type: 'S', name: 'n' }), P('n', 'select 2 as b'), B('n'), serialize.describe({ type: 'P', name: '' }), E(), S()]),
    ['3', '1', '2', 'T b', 'D 2', 'C SELECT 1', 'Z I'],
    'Close then re-Parse with other text runs the new text',
  );

  await c.run([P('a', 'select 3'), S()]);
  t.same(await c.run([serialize.query('DEALLOCATE ALL')]), ['C DEALLOCATE ALL', 'Z I']);
  t.same(await c.run([B('a'), E(), S()]), ['E 26000', 'Z I'], 'after DEALLOCATE ALL the name is gone, as on a direct connection');
  t.same(await c.run([P('a', 'select 4'), B('a'), E(), S()]), ['1', '2', 'D 4', 'C SELECT 1', 'Z I'], 'and can be parsed again');

  t.same(await c.run([P('dup', 'select 5'), P('dup', 'select 6'), S()]), ['1', 'E 42P05', 'Z I'], 'a second Parse of a name in use fails with 42P05');

  await server.psql('create table ddl_t (a int); insert into ddl_t values (1)', database);
  t.same(await c.run([P('q', 'select * from ddl_t'), B('q'), serialize.describe({ type: 'P', name: '' }), E(), S()]), ['1', '2', 'T a', 'D 1', 'C SELECT 1', 'Z I']);
  await server.psql('alter table ddl_t add column b int default 2', database);
  t.same(
    await c.run([B('q'), serialize.describe({ type: 'P', name: '' }), E(), S()]),
    ['2', 'T a,b', 'D 1,2', 'C SELECT 1', 'Z I'],
    'cached plan must not change result type is healed: the statement is prepared afresh and the batch retried',
  );
});

t.test('a temp table stays with its client across transactions and is never visible to another', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const owner = await connect(sluice.port);
  t.teardown(() => owner.end());
  await owner.query('create temp table scratch (x int)');
  await owner.query('insert into scratch values (1), (2)');
  await owner.query('begin');
  await owner.query('insert into scratch values (3)');
  await owner.query('commit');
  t.equal((await owner.query('select count(*)::int as n from scratch')).rows[0].n, 3, 'the next transactions of the same client see it');
  const others = await Promise.all(
    Array.from({ length: 6 }, async () => {
      const other = await connect(sluice.port);
      try {
        await other.query('select * from scratch');
        return 'visible';
      } catch (err) {
        return (err as { code?: string }).code;
      } finally {
        await other.end();
      }
    }),
  );
  t.same(others, Array(6).fill('42P01'), 'no other client sees it');
  const rendered = await sluice.metrics.render();
  t.match(rendered, /sluice_pins_total\{[^}]*reason="temp-table"[^}]*\} 1/, 'the pin is counted by reason');
});

t.test('a session advisory lock is held across transactions by the client that took it', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  const owner = await connect(sluice.port);
  t.teardown(() => owner.end());
  await owner.query('select pg_advisory_lock(4242)');
  await owner.query('begin');
  await owner.query('select 1');
  await owner.query('commit');
  const other = await connect(sluice.port);
  t.teardown(() => other.end());
  t.equal((await other.query('select pg_try_advisory_lock(4242) as got')).rows[0].got, false, 'another client cannot take it');
  t.equal(await server.psql("select count(*) from pg_locks where locktype = 'advisory' and objid = 4242 and granted"), '1', 'Postgres shows it held');
  t.equal((await owner.query('select pg_advisory_unlock(4242) as released')).rows[0].released, true, 'the owner still holds it and can release it');
});

t.test('SET search_path outside a transaction persists for that client only', async (t) => {
  const sluice = await startListener(server, { pool_size: 2, timeouts: { acquire: '60s' } });
  t.teardown(() => sluice.close());
  await server.psql(`create schema if not exists app_schema authorization ${PG_USERS.scram.name}`);
  const a = await connect(sluice.port);
  t.teardown(() => a.end());
  await a.query('set search_path to app_schema, public');
  const others = await Promise.all(
    Array.from({ length: 4 }, async () => {
      const b = await connect(sluice.port);
      try {
        return (await b.query('show search_path')).rows[0].search_path;
      } finally {
        await b.end();
      }
    }),
  );
  t.same(others, Array(4).fill('"$user", public'), 'other clients keep the default');
  await a.query('begin');
  await a.query('commit');
  t.equal((await a.query('show search_path')).rows[0].search_path, 'app_schema, public', 'the client keeps its setting');
});

t.test('LISTEN in transaction mode receives NOTIFY sent from another connection', async (t) => {
  const sluice = await startListener(server, { pool_size: 2 });
  t.teardown(() => sluice.close());
  const listener = await connect(sluice.port);
  t.teardown(() => listener.end());
  const received = new Promise<pg.Notification>((resolve) => listener.on('notification', resolve));
  await listener.query('listen sluice_jobs');
  // other clients come and go on the pool meanwhile
  for (let i = 0; i < 3; i++) {
    const other = await connect(sluice.port);
    await other.query('select 1');
    await other.end();
  }
  await server.psql("notify sluice_jobs, 'hello'");
  const note = await received;
  t.equal(note.channel, 'sluice_jobs');
  t.equal(note.payload, 'hello');
});
