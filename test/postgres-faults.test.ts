// Faults and limits through the Postgres listener against a real Postgres: cancel, clients and
// servers dying mid-transaction, garbage and oversized messages, every timeout, max clients,
// drain and reload. Each test names the behaviour that keeps other clients and data safe.
import { connect as netConnect, createServer, type Socket } from 'node:net';
import type { Client as PgClient } from 'pg';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { freePort, waitFor } from './harness/tools.js';
import { cancelRequest, query, startupMessage } from '../proxy/postgres/wire-messages.js';
import { backendsIn, connect, freshDatabase, rejection, startListener } from './pg-support.js';

const pg = await startPostgres();
t.teardown(() => pg.destroy());
await pg.psql(`create table t_rows (id int, note text); grant all on t_rows to ${PG_USERS.scram.name}`);

/** Sends a CancelRequest with the key a client was given. */
function sendCancel(port: number, pid: number, secret: number): Promise<void> {
  const key = Buffer.alloc(4);
  key.writeInt32BE(secret | 0, 0);
  return new Promise((resolve) => {
    const socket = netConnect(port, '127.0.0.1', () => socket.end(cancelRequest(pid, key)));
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
}

function keyOf(client: PgClient): { pid: number; secret: number } {
  const c = client as unknown as { processID: number; secretKey: number };
  return { pid: c.processID, secret: c.secretKey };
}

/** Raw bytes in, everything the listener answers until it closes. */
function rawExchange(port: number, ...chunks: Buffer[]): Promise<Buffer> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    const socket: Socket = netConnect(port, '127.0.0.1', () => {
      for (const chunk of chunks) socket.write(chunk);
    });
    socket.on('data', (d) => got.push(d));
    socket.on('error', () => {});
    socket.on('close', () => resolve(Buffer.concat(got)));
  });
}

/** The first error event (or connection end) of a client. */
function nextError(client: PgClient): Promise<Error & { code?: string }> {
  return new Promise((resolve) => {
    client.removeAllListeners('error');
    client.on('error', (err) => resolve(err as Error & { code?: string }));
  });
}

t.test('cancel of pg_sleep(10) returns 57014 promptly; a stale key never cancels another client', async (t) => {
  const sluice = await startListener(pg, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const sleeper = await connect(sluice.port);
  const started = Date.now();
  const sleeping = rejection(sleeper.query('select pg_sleep(10)'));
  await waitFor('the sleep to run', async () => (await pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(10)'")) === '1');
  const { pid, secret } = keyOf(sleeper);
  const cancelAt = Date.now();
  await sendCancel(sluice.port, pid, secret);
  const err = await sleeping;
  t.equal(err.code, '57014', 'query_canceled');
  t.ok(Date.now() - started < 9000, `cancelled long before pg_sleep(10) ended (${Date.now() - cancelAt}ms after the cancel)`);
  t.equal((await sleeper.query('select 1 as n')).rows[0].n, 1, 'the session goes on');

  // An idle client holds no server: its cancel is dropped, not sent to whoever has the server now.
  const idle = await connect(sluice.port);
  const busy = sleeper.query('select pg_sleep(0.5) as slept');
  await waitFor('the short sleep to run', async () => (await pg.psql("select count(*) from pg_stat_activity where query like 'select pg_sleep(0.5)%'")) === '1');
  await sendCancel(sluice.port, keyOf(idle).pid, keyOf(idle).secret);
  await sendCancel(sluice.port, 12345, 67890);
  const res = await busy;
  t.equal(res.rows.length, 1, "another client's cancel did not hit this query");
  await Promise.all([idle.end(), sleeper.end()]);
});

t.test('session mode: BackendKeyData carries the real server pid', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'session', pool_size: 2 });
  t.teardown(() => sluice.close());
  const client = await connect(sluice.port);
  const backendPid = (await client.query('select pg_backend_pid() as pid')).rows[0].pid;
  t.equal(keyOf(client).pid, backendPid, 'pg_backend_pid() matches the key the client got');
  await client.end();
});

t.test('a client killed mid-transaction leaves no committed row and no dirty server', async (t) => {
  const sluice = await startListener(pg, { pool_size: 1 });
  t.teardown(() => sluice.close());
  const doomed = await connect(sluice.port);
  await doomed.query('begin');
  await doomed.query("insert into t_rows values (1, 'uncommitted')");
  (doomed as unknown as { connection: { stream: Socket } }).connection.stream.destroy();
  const next = await connect(sluice.port);
  t.equal((await next.query("select count(*)::int as n from t_rows where note = 'uncommitted'")).rows[0].n, 0, 'the insert was rolled back');
  t.equal((await next.query('select now() = statement_timestamp() as fresh')).rows[0].fresh, true, 'the next client is not inside the old transaction');

  // Mid-query: the running statement is cancelled, then rolled back; the server is reused, not lost.
  const busy = await connect(sluice.port);
  await busy.query('begin');
  await busy.query("insert into t_rows values (2, 'mid-query')");
  busy.query('select pg_sleep(30)').catch(() => {});
  await waitFor('the sleep to run', async () => (await pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'")) === '1');
  const serverPid = await pg.psql("select pid from pg_stat_activity where query = 'select pg_sleep(30)'");
  (busy as unknown as { connection: { stream: Socket } }).connection.stream.destroy();
  t.equal((await next.query("select count(*)::int as n from t_rows where note = 'mid-query'")).rows[0].n, 0, 'the mid-query transaction was rolled back');
  t.equal(String((await next.query('select pg_backend_pid() as pid')).rows[0].pid), serverPid, 'the cancelled server went back to the pool clean and was reused');
  await next.end();
});

t.test('garbage bytes and an oversized length get 08P01; the proxy keeps serving', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'trust', max_message_size: 1024 * 1024 });
  t.teardown(() => sluice.close());
  const bystander = await connect(sluice.port, { user: PG_USERS.trust.name });
  await bystander.query('begin');
  const garbage = await rawExchange(sluice.port, Buffer.from('GET / HTTP/1.1\r\nHost: sluice\r\n\r\n'));
  t.equal(garbage[0], 0x45, 'an ErrorResponse');
  t.match(garbage.toString('latin1'), /C08P01/);
  const oversized = Buffer.alloc(5);
  oversized[0] = 0x51;
  oversized.writeInt32BE(0x7ffffff0, 1);
  const big = await rawExchange(sluice.port, startupMessage({ user: PG_USERS.trust.name, database: 'postgres' }), oversized);
  t.match(big.toString('latin1'), /C08P01/);
  t.match(big.toString('latin1'), /exceeds max_message_size/);
  const unknownType = await rawExchange(sluice.port, startupMessage({ user: PG_USERS.trust.name, database: 'postgres' }), Buffer.from([0x01, 0, 0, 0, 4]), query('select 1'));
  t.match(unknownType.toString('latin1'), /C08P01/);
  const protocol2 = Buffer.alloc(8);
  protocol2.writeInt32BE(8, 0);
  protocol2.writeInt32BE(0x00020000, 4);
  t.match((await rawExchange(sluice.port, protocol2)).toString('latin1'), /unsupported frontend protocol 2\.0/);
  t.equal((await bystander.query('select 1 as n')).rows[0].n, 1, 'a client in a transaction was untouched');
  await bystander.query('commit');
  const fresh = await connect(sluice.port, { user: PG_USERS.trust.name });
  t.equal((await fresh.query('select 2 as n')).rows[0].n, 2, 'new clients are served');
  await Promise.all([fresh.end(), bystander.end()]);
});

t.test('protocol 3.2 and _pq_ options get NegotiateProtocolVersion, not a failure', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'trust' });
  t.teardown(() => sluice.close());
  const packet = startupMessage({ user: PG_USERS.trust.name, database: 'postgres', '_pq_.something': 'x' });
  packet.writeInt32BE(0x00030002, 4);
  const terminate = Buffer.from([0x58, 0, 0, 0, 4]);
  const reply = await rawExchange(sluice.port, packet, query('select 1'), terminate);
  t.equal(reply[0], 0x76, 'NegotiateProtocolVersion first');
  t.equal(reply.readInt32BE(5), 0x00030000, 'newest supported: 3.0');
  t.match(reply.toString('latin1'), /_pq_\.something/);
  t.match(reply.toString('latin1'), /SELECT 1/, 'the session went on and ran the query');
});

t.test('timeouts.acquire: a waiting client gets 53300 naming the pool and the key, then the connection closes', async (t) => {
  const sluice = await startListener(pg, { pool_size: 1, timeouts: { acquire: '400ms' } });
  t.teardown(() => sluice.close());
  const holder = await connect(sluice.port);
  await holder.query('begin');
  const waiter = await connect(sluice.port);
  const err = await rejection(waiter.query('select 1'));
  t.equal(err.code, '53300');
  t.match(err.message, /pool "pg\/postgres\/app".*400ms \(timeouts\.acquire\)/);
  await holder.query('commit');
  await holder.end();
});

t.test('timeouts.connect: an upstream that never answers fails clients within the timeout; a refused one fails at once', async (t) => {
  const blackhole = createServer(() => {});
  const holePort = await freePort();
  await new Promise<void>((resolve) => blackhole.listen(holePort, '127.0.0.1', resolve));
  t.teardown(() => blackhole.close());
  const sluice = await startListener(pg, { server: { host: '127.0.0.1', port: holePort }, auth_method: 'trust', timeouts: { connect: '500ms' } });
  t.teardown(() => sluice.close());
  const err = await rejection(connect(sluice.port, { user: PG_USERS.trust.name }));
  t.equal(err.code, '08006');
  t.match(err.message, /timeouts\.connect/);
  const closedPort = await freePort();
  const refused = await startListener(pg, { server: { host: '127.0.0.1', port: closedPort }, auth_method: 'trust' });
  t.teardown(() => refused.close());
  const err2 = await rejection(connect(refused.port, { user: PG_USERS.trust.name }));
  t.equal(err2.code, '08006');
  t.match(err2.message, /cannot connect to upstream 127\.0\.0\.1:\d+/);
  t.equal(refused.listener.snapshot().upstreamReachable, false, 'the snapshot reports the upstream unreachable');
});

t.test('timeouts.server_idle and server_lifetime retire idle servers; a server is never retired mid-transaction', async (t) => {
  const database = await freshDatabase(pg, 'idle');
  const sluice = await startListener(pg, { pool_size: 2, timeouts: { server_idle: '300ms' } });
  t.teardown(() => sluice.close());
  const client = await connect(sluice.port, { database });
  await client.query('select 1');
  await waitFor('idle server closed', async () => (await backendsIn(pg, database)) === 0, 10_000);
  t.equal(await backendsIn(pg, database), 0, 'the idle server was closed after server_idle');
  const lifetime = await startListener(pg, { pool_size: 1, timeouts: { server_lifetime: '400ms' } });
  t.teardown(() => lifetime.close());
  const c2 = await connect(lifetime.port, { database });
  const pidOf = async () => (await c2.query('select pg_backend_pid() as pid')).rows[0].pid as number;
  await c2.query('begin');
  const first = await pidOf();
  await c2.query('select pg_sleep(0.8)');
  t.equal(await pidOf(), first, 'same server throughout a transaction longer than server_lifetime');
  await c2.query('commit');
  await waitFor('a new server after server_lifetime', async () => (await pidOf()) !== first, 10_000);
  t.not(await pidOf(), first, 'the old server was retired once idle');
  await Promise.all([client.end(), c2.end()]);
});

t.test('timeouts.client_idle, idle_in_transaction, query and client_login name their config key', async (t) => {
  const sluice = await startListener(pg, { pool_size: 2, timeouts: { client_idle: '1s', idle_in_transaction: '1s', query: '400ms' } });
  t.teardown(() => sluice.close());
  const idle = await connect(sluice.port);
  const idleErr = await nextError(idle);
  t.equal(idleErr.code, '57P05');
  t.match(idleErr.message, /timeouts\.client_idle/);

  const inTx = await connect(sluice.port);
  await inTx.query('begin');
  await inTx.query("insert into t_rows values (3, 'idle-in-tx')");
  const txErr = await nextError(inTx);
  t.equal(txErr.code, '25P03');
  t.match(txErr.message, /timeouts\.idle_in_transaction/);
  t.equal(await pg.psql("select count(*) from t_rows where note = 'idle-in-tx'"), '0', 'the abandoned transaction was rolled back');

  const slow = await connect(sluice.port);
  const notices: string[] = [];
  slow.on('notice', (n) => notices.push(n.message ?? ''));
  const queryErr = await rejection(slow.query('select pg_sleep(5)'));
  t.equal(queryErr.code, '57014', 'the query was cancelled');
  t.match(notices.join('\n'), /timeouts\.query/, 'a notice names timeouts.query');
  await slow.end().catch(() => {});

  // A short client_login on its own listener, so slow logins of the clients above under load cannot trip it.
  const loginLimited = await startListener(pg, { timeouts: { client_login: '400ms' } });
  t.teardown(() => loginLimited.close());
  const silent = await rawExchange(loginLimited.port);
  t.match(silent.toString('latin1'), /timeouts\.client_login/, 'a client that never logs in is closed, naming timeouts.client_login');
});

t.test('max_client_connections: the next client gets 53300; the others are untouched', async (t) => {
  const sluice = await startListener(pg, { max_client_connections: 2 });
  t.teardown(() => sluice.close());
  const a = await connect(sluice.port);
  const b = await connect(sluice.port);
  const err = await rejection(connect(sluice.port));
  t.equal(err.code, '53300');
  t.match(err.message, /max_client_connections 2/);
  t.same([(await a.query('select 1 as n')).rows[0].n, (await b.query('select 2 as n')).rows[0].n], [1, 2]);
  await Promise.all([a.end(), b.end()]);
});

t.test('reload applies users and pool size without dropping clients; drain lets transactions finish', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'scram-sha-256', users: [{ name: 'app', password: 'app-secret' }], pool_size: 1 });
  t.teardown(() => sluice.close());
  const kept = await connect(sluice.port);
  await kept.query('begin');
  const outcome = sluice.listener.reload(sluice.reconfigure({ users: [{ name: 'app', password: 'app-secret' }, { name: 'md5user', password: 'md5-secret' }], pool_size: 3, listen: '127.0.0.1:1' }));
  t.same(outcome.needsRestart, ['listen'], 'a listen change is reported, not applied');
  const added = await connect(sluice.port, { user: 'md5user', password: 'md5-secret' });
  t.equal((await added.query('select 1 as n')).rows[0].n, 1, 'a user added by reload logs in');
  const second = await connect(sluice.port);
  t.equal((await second.query('select 1 as n')).rows[0].n, 1, 'the larger pool serves a second app client while the first holds its server');
  t.equal((await kept.query('select 1 as n')).rows[0].n, 1, 'the client connected before the reload is still in its transaction');

  const idleGone = nextError(second);
  const keptEnded = new Promise<void>((resolve) => kept.on('end', () => resolve()));
  sluice.listener.drain();
  const idleErr = await idleGone;
  t.equal(idleErr.code, '57P01');
  t.match(idleErr.message, /sluice is shutting down/);
  t.equal((await kept.query('select 2 as n')).rows[0].n, 2, 'a client inside a transaction may finish it');
  await kept.query('commit').catch(() => {});
  await keptEnded;
  await t.rejects(kept.query('select 3'), 'and is closed after its transaction: its connection takes no more queries');
  await rejection(connect(sluice.port));
  await waitFor('every client gone', () => sluice.listener.clientCount() === 0, 10_000);
  t.pass('new connections are refused and the drain completes');
  await added.end().catch(() => {});
});

t.test('the server dying mid-transaction gives 08006 naming the upstream; the pool recovers when it is back', async (t) => {
  const sluice = await startListener(pg, { pool_size: 2, timeouts: { connect: '2s' } });
  t.teardown(() => sluice.close());
  const victim = await connect(sluice.port);
  await victim.query('begin');
  const pending = rejection(victim.query('select pg_sleep(30)'));
  await waitFor('the sleep to run', async () => (await pg.psql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)'")) === '1');
  await pg.kill();
  const err = await pending;
  t.equal(err.code, '08006', `08006 (${err.message})`);
  t.match(err.message, `server connection to 127.0.0.1:${pg.port} lost`, 'the error names the upstream');
  const late = await connect(sluice.port).catch((e: Error & { code?: string }) => e);
  const down = late instanceof Error ? late : await rejection(late.query('select 1'));
  t.equal(down.code, '08006', 'while the upstream is down, clients get 08006 quickly');
  await pg.start();
  let answer: unknown;
  await waitFor('a client works again', async () => {
    try {
      const client = await connect(sluice.port);
      answer = (await client.query('select 1 as n')).rows[0].n;
      await client.end();
      return true;
    } catch {
      return false;
    }
  });
  t.equal(answer, 1, 'the next client works after the upstream is back, without a restart');
});

t.test('reload with a new server address retires the old servers and serves clients from the new one', async (t) => {
  const closedPort = await freePort();
  const sluice = await startListener(pg, { server: { host: '127.0.0.1', port: closedPort }, auth_method: 'scram-sha-256', users: [{ name: 'app', password: 'app-secret' }] });
  t.teardown(() => sluice.close());
  const before = await connect(sluice.port).catch((e: Error) => e);
  const failed = before instanceof Error ? before : await rejection(before.query('select 1'));
  t.match(failed.message, /cannot connect to upstream/, 'the wrong address fails');
  sluice.listener.reload(sluice.reconfigure({ server: { host: pg.host, port: pg.port } }));
  const client = await connect(sluice.port);
  t.equal((await client.query('select 1 as n')).rows[0].n, 1, 'after the reload the new address serves');
  const firstPid = (await client.query('select pg_backend_pid() as pid')).rows[0].pid;
  sluice.listener.reload(sluice.reconfigure({ server: { host: pg.host, port: pg.port, tls: 'prefer' } }));
  const secondPid = (await client.query('select pg_backend_pid() as pid')).rows[0].pid;
  t.not(secondPid, firstPid, 'a changed server block retires the idle server; the same client carries on, on a new one');
  await waitFor('the retired server to be gone', async () => (await pg.psql(`select count(*) from pg_stat_activity where pid = ${firstPid}`)) === '0');
  t.equal(await pg.psql(`select count(*) from pg_stat_activity where pid = ${firstPid}`), '0', 'the retired server was closed');
  await client.end();
});
