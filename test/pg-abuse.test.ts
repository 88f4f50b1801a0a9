// A hostile or broken Postgres client must cost the others nothing: each test runs the real
// sluice binary against a real Postgres, lets a misbehaving client (raw sockets where a driver
// would behave) do its worst, and checks that a well-behaved client connected throughout keeps
// working, and where memory is the point that sluice's resident memory stays within a bound
// derived from the configured limit.
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startSluice } from './harness/sluice-process.js';
import { freePort, waitFor } from './harness/tools.js';
import { errorFields, MiB, parseAndSync, RawPg, residentBytes } from './abuse-support.js';
import { connect, rejection } from './pg-support.js';
import { query } from '../proxy/postgres/wire-messages.js';
import pg from 'pg';

// Few enough connection slots that an unbounded login storm would take them all.
const server = await startPostgres({ maxConnections: 40 });
t.teardown(() => server.destroy());

async function sluiceWith(listener: string): Promise<{ port: number; proc: Awaited<ReturnType<typeof startSluice>> }> {
  const port = await freePort();
  const proc = await startSluice(`
metrics: { listen: "{{METRICS}}" }
log: { level: info }
postgres:
  - name: pg
    listen: 127.0.0.1:${port}
    server: { host: 127.0.0.1, port: ${server.port} }
${listener
  .trim()
  .split('\n')
  .map((line) => `    ${line}`)
  .join('\n')}
`);
  t.teardown(() => proc.stop());
  return { port, proc };
}

async function selectOne(client: pg.Client): Promise<number> {
  return (await client.query('select 1 as n')).rows[0].n;
}

t.test('before authentication a password message is limited to max_login_message_size: 64 MiB sent by an unknown user is refused after its header', async (t) => {
  const { port, proc } = await sluiceWith(`
pool_size: 2
auth_method: passthrough
max_login_message_size: 65536`);
  const good = await connect(port);
  t.teardown(() => good.end());
  t.equal(await selectOne(good), 1, 'well-behaved client logged in');
  const before = residentBytes(proc.pid);

  const raw = new RawPg(port);
  raw.startup({ user: 'mallory', database: 'postgres' });
  const ask = await raw.next('R');
  t.equal(ask?.body.readInt32BE(0), 3, 'asked for a cleartext password');
  // A password message declaring 64 MiB, then the bytes, 1 MiB at a time.
  const declared = 64 * MiB;
  const header = Buffer.alloc(5);
  header[0] = 0x70;
  header.writeInt32BE(declared + 4, 1);
  let sent = 0;
  let open = await raw.write(header);
  const chunk = Buffer.alloc(MiB, 0x61);
  while (open && sent < declared) {
    open = await raw.write(chunk);
    if (open) sent += chunk.length;
  }
  const refusal = await raw.next('E');
  t.equal(errorFields(refusal).code, '08P01');
  t.match(errorFields(refusal).message, /max_login_message_size 65536/);
  await raw.done;
  const growth = residentBytes(proc.pid) - before;
  t.ok(growth < 65536 + 24 * MiB, `sluice grew ${(growth / MiB).toFixed(1)} MiB, bounded by max_login_message_size plus slack (the client sent ${(sent / MiB).toFixed(0)} MiB)`);
  t.equal(await selectOne(good), 1, 'well-behaved client still works');
});

t.test('passthrough: 90 parallel wrong-password logins never take more than max_verifications upstream slots; the database stays open to others', async (t) => {
  const { port } = await sluiceWith(`
pool_size: 5
auth_method: passthrough
passthrough: { max_verifications: 4, max_user_verifications: 4, max_queued_verifications: 200, failure_delay: 1ms, max_failure_delay: 1ms }`);
  const good = await connect(port);
  t.teardown(() => good.end());
  let storming = true;
  let peak = 0;
  const watcher = (async () => {
    while (storming) {
      peak = Math.max(peak, Number(await server.psql("select count(*) from pg_stat_activity where backend_type = 'client backend'")));
    }
  })();
  const storm = Array.from({ length: 90 }, (_, i) => rejection(connect(port, { password: `wrong-${i}` })));
  // Another application logs in directly while the storm runs.
  const direct = new pg.Client({ host: '127.0.0.1', port: server.port, user: PG_USERS.scram.name, password: PG_USERS.scram.password, database: 'postgres' });
  await direct.connect();
  t.equal((await direct.query('select 1 as n')).rows[0].n, 1, 'a direct login during the storm works');
  await direct.end();
  const errors = await Promise.all(storm);
  storming = false;
  await watcher;
  const codes = new Set(errors.map((e) => e.code));
  t.same([...codes], ['28P01'], 'every storm login was told its password is wrong, none saw the server full');
  // the watcher's own psql, the direct client, the good client's pool server, sluice's checks
  // (a failed check's backend may still be exiting when the next starts: some slack)
  t.ok(peak <= 4 + 5 + 3 + 4, `at most ${peak} client backends at once`);
  t.equal(await selectOne(good), 1, 'well-behaved client still works');
});

t.test('passthrough: repeated failures of one (user, address) are delayed with a growing back-off; other users are not', async (t) => {
  const { port, proc } = await sluiceWith(`
auth_method: passthrough
passthrough: { failure_delay: 1h, max_failure_delay: 1h }
timeouts: { client_login: 1s }`);
  const good = await connect(port, { user: PG_USERS.md5.name, password: PG_USERS.md5.password });
  t.teardown(() => good.end());
  const first = await rejection(connect(port, { password: 'guess-1' }));
  t.equal(first.code, '28P01', 'the first wrong password is checked and refused');
  // The next try of the same user from the same address must wait an hour: its login times out.
  const second = await rejection(connect(port, { password: 'guess-2' }));
  t.equal(second.code, '08P01', 'the second is held back, not checked');
  t.match(second.message, /timeouts\.client_login/);
  t.equal(await selectOne(good), 1, 'another user is not held back');
  const other = await connect(port, { user: PG_USERS.cleartext.name, password: PG_USERS.cleartext.password });
  t.equal(await selectOne(other), 1, 'a new login of another user works');
  await other.end();
  t.ok(
    proc.logs.some((line) => line.msg === 'client authentication failed' && line.addr === '127.0.0.1' && line.user === PG_USERS.scram.name),
    'the failure is logged with the source address',
  );
});

t.test('passthrough: a learned password is checked upstream again after recheck_interval, so a rotated password stops working', async (t) => {
  await server.psql("create role rotating login superuser password 'old-secret'");
  t.teardown(() => server.psql('drop role if exists rotating'));
  const { port } = await sluiceWith(`
auth_method: passthrough
passthrough: { recheck_interval: 1ms, failure_delay: 10ms, max_failure_delay: 10ms }`);
  const good = await connect(port);
  t.teardown(() => good.end());
  const first = await connect(port, { user: 'rotating', password: 'old-secret' });
  t.equal(await selectOne(first), 1, 'logged in with the old password (learned)');
  await first.end();
  await server.psql("alter role rotating password 'new-secret'");
  const stale = await rejection(connect(port, { user: 'rotating', password: 'old-secret' }));
  t.equal(stale.code, '28P01', 'the old password no longer works through sluice');
  const fresh = await connect(port, { user: 'rotating', password: 'new-secret' });
  t.equal(await selectOne(fresh), 1, 'the new one does');
  await fresh.end();
  t.equal(await selectOne(good), 1, 'well-behaved client still works');
});

async function poolsIn(metricsPort: number): Promise<Array<{ database: string; user: string }>> {
  const status = (await (await fetch(`http://127.0.0.1:${metricsPort}/status`)).json()) as { listeners: Array<{ pools: Array<{ database: string; user: string }> }> };
  return status.listeners[0].pools;
}

t.test('pools are bounded by max_pools and removed with their metric series once empty for timeouts.pool_idle', async (t) => {
  const { port, proc } = await sluiceWith(`
auth_method: trust
users: [{ name: app, password: app-secret }, { name: md5user, password: md5-secret }]
max_pools: 3
timeouts: { pool_idle: 200ms }`);
  const good = await connect(port, { user: PG_USERS.trust.name, password: '' });
  t.teardown(() => good.end());
  let most = 0;
  for (let i = 0; i < 40; i++) {
    const err = await rejection(connect(port, { user: PG_USERS.trust.name, password: '', database: `missing_${i}` }));
    t.match(err.message, /does not exist/, `login ${i} to a missing database gets the server's answer`);
    most = Math.max(most, (await poolsIn(proc.metricsPort)).length);
  }
  t.ok(most <= 3, `never more than max_pools pools (saw ${most})`);
  await waitFor('empty pools removed', async () => (await poolsIn(proc.metricsPort)).length === 1);
  t.notMatch(await proc.metrics(), /database="missing_/, 'no metric series left for removed pools');

  // Pools in use are never taken: past max_pools a login is refused, clearly.
  const held = [await connect(port, { user: PG_USERS.trust.name, password: '', database: 'template1' }), await connect(port, { user: PG_USERS.scram.name, password: '', database: 'postgres' })];
  const refused = await rejection(connect(port, { user: PG_USERS.md5.name, password: '', database: 'postgres' }));
  t.equal(refused.code, '53300');
  t.match(refused.message, /max_pools/);
  await held[0].end();
  const after = await connect(port, { user: PG_USERS.md5.name, password: '', database: 'postgres' });
  t.equal(await selectOne(after), 1, 'once a pool empties a new one can be made');
  await after.end();
  await held[1].end();
  t.equal(await selectOne(good), 1, 'well-behaved client still works');
});

t.test('a client Parsing more than max_client_prepared_statements (20) named statements is closed with 53400; sluice holds at most that many of its texts', async (t) => {
  const { port, proc } = await sluiceWith(`
auth_method: trust
pool_mode: transaction
max_client_prepared_statements: 20`);
  const good = await connect(port, { user: PG_USERS.trust.name, password: '' });
  t.teardown(() => good.end());
  await good.query({ name: 'mine', text: 'select $1::int as n', values: [1] });
  const before = residentBytes(proc.pid);

  const raw = new RawPg(port);
  raw.startup({ user: PG_USERS.trust.name, database: 'postgres' });
  await raw.next('Z');
  const textBytes = 100 * 1024;
  const padding = 'x'.repeat(textBytes);
  let sent = 0;
  for (let i = 0; i < 1000; i++) {
    if (!(await raw.write(parseAndSync(`s${i}`, `select ${i} /* ${padding} */`)))) break;
    sent++;
  }
  await raw.write(query('select 1'));
  const refusal = await raw.next('E', 'C');
  t.equal(errorFields(refusal).code, '53400');
  t.match(errorFields(refusal).message, /max_client_prepared_statements/);
  await raw.done;
  const growth = residentBytes(proc.pid) - before;
  // each text is held twice at most (the shared statement and the Parse in flight), plus read buffers
  t.ok(growth < 20 * textBytes * 2 + 32 * MiB, `sluice grew ${(growth / MiB).toFixed(1)} MiB for ${sent} statements sent, bounded by 20 texts plus slack`);
  t.equal((await good.query({ name: 'mine', text: 'select $1::int as n', values: [2] })).rows[0].n, 2, 'well-behaved client still works');
});
