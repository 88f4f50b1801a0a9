// The admin console over the wire, through the real binary: SHOW POOLS agrees with /status
// under known load, the extended protocol works, PAUSE/RESUME hold and release clients, and a
// user outside admin_users gets FATAL 28000.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startSluice } from './harness/sluice-process.js';
import { freePort, waitFor } from './harness/tools.js';

const run = promisify(execFile);
const server = await startPostgres();
t.teardown(() => server.destroy());
await server.psql("CREATE ROLE viewer LOGIN PASSWORD 'viewer-secret'");

const port = await freePort();
const sluice = await startSluice(`
metrics: { listen: "{{METRICS}}" }
log: { level: warn }
postgres:
  - name: main
    listen: 127.0.0.1:${port}
    server: { host: 127.0.0.1, port: ${server.port} }
    pool_mode: transaction
    pool_size: 3
    auth_method: scram-sha-256
    users: [{ name: app, password: ${PG_USERS.scram.password} }, { name: viewer, password: viewer-secret }]
    admin_users: [app]
`);
t.teardown(() => sluice.stop());

function client(user = 'app', password: string = PG_USERS.scram.password, database = 'postgres'): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port, user, password, database });
}

async function adminPsql(sql: string): Promise<string[][]> {
  const { stdout } = await run('psql', ['-X', '-q', '-At', '-F', '\t', '-h', '127.0.0.1', '-p', String(port), '-U', 'app', '-d', 'sluice', '-c', sql], {
    env: { ...process.env, PGPASSWORD: PG_USERS.scram.password },
    cwd: '/',
  });
  return stdout.trim() === '' ? [] : stdout.trim().split('\n').map((line) => line.split('\t'));
}

interface StatusPool {
  database: string;
  user: string;
  cl_active: number;
  cl_waiting: number;
  sv_active: number;
  sv_idle: number;
  pool_size: number;
}

async function statusPool(): Promise<StatusPool | undefined> {
  const status = (await (await fetch(`http://127.0.0.1:${sluice.metricsPort}/status`)).json()) as { listeners: Array<{ pools: StatusPool[] }> };
  return status.listeners[0].pools.find((p) => p.database === 'postgres' && p.user === 'app');
}

t.test('SHOW POOLS through psql shows the numbers /status shows, while 3 clients hold transactions and 3 wait', async (t) => {
  const holders = Array.from({ length: 6 }, () => client());
  await Promise.all(holders.map((c) => c.connect()));
  t.teardown(() => Promise.all(holders.map((c) => c.end().catch(() => {}))));
  await Promise.all(holders.slice(0, 3).map((c) => c.query('BEGIN')));
  const waiting = holders.slice(3).map((c) => c.query('select 1'));
  await waitFor('three clients waiting', async () => (await statusPool())?.cl_waiting === 3);

  const rows = await adminPsql('SHOW POOLS');
  const header = (await run('psql', ['-X', '-q', '-A', '-F', '\t', '-h', '127.0.0.1', '-p', String(port), '-U', 'app', '-d', 'sluice', '-c', 'SHOW POOLS'], { env: { ...process.env, PGPASSWORD: PG_USERS.scram.password }, cwd: '/' })).stdout.split('\n')[0].split('\t');
  const row = rows.find((r) => r[header.indexOf('database')] === 'postgres' && r[header.indexOf('user')] === 'app');
  t.ok(row, 'a row for database postgres, user app');
  const status = (await statusPool()) as StatusPool;
  for (const column of ['cl_active', 'cl_waiting', 'sv_active', 'sv_idle', 'pool_size'] as const) {
    t.equal(Number(row?.[header.indexOf(column)]), status[column], `${column} agrees with /status (${status[column]})`);
  }
  t.equal(status.cl_active, 3);
  t.equal(status.cl_waiting, 3);
  await Promise.all(holders.slice(0, 3).map((c) => c.query('COMMIT')));
  await Promise.all(waiting);
});

t.test('the extended protocol works on the console (node-postgres named statements)', async (t) => {
  const admin = client('app', PG_USERS.scram.password, 'sluice');
  await admin.connect();
  t.teardown(() => admin.end());
  const pools = await admin.query({ name: 'pools', text: 'SHOW POOLS', rowMode: 'array' });
  t.ok(pools.fields.some((f) => f.name === 'cl_waiting'), 'RowDescription names the columns');
  t.ok(pools.rows.length >= 1);
  const again = await admin.query({ name: 'pools', text: 'SHOW POOLS' });
  t.equal(again.rows.length, pools.rows.length, 'the prepared statement runs again');
  const version = await admin.query({ name: 'version', text: 'SHOW VERSION' });
  t.match(version.rows[0].version, /^sluice \d+\.\d+\.\d+/);
  await t.rejects(admin.query({ name: 'bad', text: 'DROP TABLE x' }), { code: '42601' });
  const config = await admin.query('SHOW CONFIG');
  t.ok(config.rows.some((r) => r.key === 'postgres[0].pool_size' && r.value === '3'));
  t.notOk(JSON.stringify(config.rows).includes(PG_USERS.scram.password), 'no password in SHOW CONFIG');
});

t.test('PAUSE holds new work and RESUME releases it', async (t) => {
  const admin = client('app', PG_USERS.scram.password, 'sluice');
  await admin.connect();
  t.teardown(() => admin.end());
  const worker = client();
  await worker.connect();
  t.teardown(() => worker.end());
  await admin.query('PAUSE postgres');
  let done = false;
  const query = worker.query('select 42 as answer').then((r) => {
    done = true;
    return r;
  });
  await waitFor('the query to queue behind the pause', async () => (await statusPool())?.cl_waiting === 1);
  t.equal(done, false, 'held while paused');
  await admin.query('RESUME postgres');
  t.equal((await query).rows[0].answer, 42, 'answered after RESUME');
  await t.rejects(admin.query('PAUSE nosuchdb'), { code: '3D000' });
});

t.test('a user outside admin_users gets FATAL 28000 from the console', async (t) => {
  const outsider = client('viewer', 'viewer-secret', 'sluice');
  await t.rejects(outsider.connect(), { code: '28000' });
  const wrong = client('app', 'not-the-password', 'sluice');
  await t.rejects(wrong.connect(), { code: '28P01' });
});
