// What sluice tells whom: a config with inline secrets that group or others can read draws a
// warning at start and from --check, and GET /status names databases, users and upstream
// addresses only to callers metrics.status_access allows (the rest see "(redacted)"), while
// /healthz, /readyz and /metrics stay open.
import { execFile } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { MAIN_JS, startSluice } from './harness/sluice-process.js';
import { freePort, tempDir } from './harness/tools.js';
import { connect } from './pg-support.js';

const run = promisify(execFile);

async function check(path: string): Promise<{ stdout: string; stderr: string }> {
  const { stdout, stderr } = await run(process.execPath, [MAIN_JS, '--check', '--config', path], { env: { ...process.env, APP_PASSWORD: 'x' } });
  return { stdout, stderr };
}

const dir = tempDir('secrets');
const listener = (password: string) => `postgres:\n  - name: p\n    listen: 127.0.0.1:1\n    server: { host: h }\n    auth_method: scram-sha-256\n    users: [{ name: app, password: "${password}" }]\n`;

t.test('--check warns about inline secrets in a file group or others can read, and only then', async (t) => {
  const inline = join(dir, 'inline.yaml');
  writeFileSync(inline, listener('app-secret'));
  chmodSync(inline, 0o644);
  const loose = await check(inline);
  t.match(loose.stdout, /ok/, 'still valid');
  t.match(loose.stderr, /warning: config file .*inline\.yaml \(mode 0644\) is readable by group or others and holds inline secrets at postgres\[0\]\.users\[0\]\.password: chmod 600/);
  chmodSync(inline, 0o600);
  t.equal((await check(inline)).stderr, '', 'owner-only file: no warning');
  const fromEnv = join(dir, 'env.yaml');
  writeFileSync(fromEnv, listener(`\${APP_PASSWORD}`));
  chmodSync(fromEnv, 0o644);
  t.equal((await check(fromEnv)).stderr, '', 'secrets read from the environment: no warning');
});

const pg = await startPostgres();
t.teardown(() => pg.destroy());

async function sluiceWith(metrics: string, mode: number): Promise<{ port: number; proc: Awaited<ReturnType<typeof startSluice>> }> {
  const port = await freePort();
  const proc = await startSluice(`
metrics: { listen: "{{METRICS}}"${metrics} }
postgres:
  - name: p
    listen: 127.0.0.1:${port}
    server: { host: 127.0.0.1, port: ${pg.port} }
    auth_method: trust
    users: [{ name: app, password: app-secret }]
`);
  chmodSync(proc.configPath, mode);
  t.teardown(() => proc.stop());
  return { port, proc };
}

t.test('a start with such a file logs a warning', async (t) => {
  const metricsPort = await freePort();
  const path = join(dir, 'start.yaml');
  writeFileSync(path, `metrics: { listen: "127.0.0.1:${metricsPort}" }\n${listener('app-secret').replace('127.0.0.1:1', `127.0.0.1:${await freePort()}`).replace('host: h', `host: 127.0.0.1, port: ${pg.port}`)}`);
  chmodSync(path, 0o640);
  const proc = await startSluice('', { configFile: path, metricsPort });
  t.teardown(() => proc.stop());
  t.ok(proc.logs.some((line) => line.level === 'warn' && /readable by group or others and holds inline secrets/.test(String(line.msg))), 'a warn line names the problem');
});

interface Status {
  listeners: Array<{ upstream: string; pools: Array<{ database: string; user: string; cl_idle: number }> }>;
}

async function status(metricsPort: number, token?: string): Promise<Status> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/status`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return (await res.json()) as Status;
}

t.test('status_access token: /status shows names only with the token; the rest of the document and the other endpoints are unchanged', async (t) => {
  const token = 'a-long-status-token-0123';
  const { port, proc } = await sluiceWith(`, status_access: token, status_token: ${token}`, 0o600);
  const client = await connect(port, { user: PG_USERS.scram.name });
  t.teardown(() => client.end());
  t.equal((await client.query('select 1 as n')).rows[0].n, 1);
  const open = await status(proc.metricsPort);
  t.equal(open.listeners[0].upstream, '(redacted)', 'no upstream address without the token');
  t.same(
    open.listeners[0].pools.map((p) => [p.database, p.user, p.cl_idle]),
    [['(redacted)', '(redacted)', 1]],
    'pools and counts stay, names go',
  );
  const wrong = await status(proc.metricsPort, 'not-the-token-at-all!!!');
  t.equal(wrong.listeners[0].pools[0].user, '(redacted)', 'a wrong token sees nothing more');
  const full = await status(proc.metricsPort, token);
  t.equal(full.listeners[0].upstream, `127.0.0.1:${pg.port}`);
  t.same(full.listeners[0].pools.map((p) => [p.database, p.user]), [['postgres', PG_USERS.scram.name]]);
  for (const path of ['/healthz', '/readyz', '/metrics']) t.equal((await fetch(`http://127.0.0.1:${proc.metricsPort}${path}`)).status, 200, `${path} stays open`);
  t.equal((await client.query('select 1 as n')).rows[0].n, 1, 'well-behaved client still works');
});

t.test('status_access loopback (the default): a loopback caller sees names', async (t) => {
  const { port, proc } = await sluiceWith('', 0o600);
  const client = await connect(port, { user: PG_USERS.scram.name });
  t.teardown(() => client.end());
  t.same((await status(proc.metricsPort)).listeners[0].pools.map((p) => p.user), [PG_USERS.scram.name]);
});
