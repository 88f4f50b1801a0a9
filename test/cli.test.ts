// The CLI contract other issues and external checks rely on: flags, exit codes, JSON logs,
// health endpoints, SIGTERM.
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import t from 'tap';
import { MAIN_JS, startSluice } from './harness/sluice-process.js';
import { freePort } from './harness/tools.js';

const run = promisify(execFile);

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [MAIN_JS, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const exampleConfig = new URL('../../config/sluice.example.yaml', import.meta.url).pathname;

t.test('--check exits 0 on the example config', async (t) => {
  const result = await cli(['--check', '--config', exampleConfig]);
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /ok/);
});

t.test('--check exits 1 naming every bad path', async (t) => {
  const { writeFileSync } = await import('node:fs');
  const { tempDir } = await import('./harness/tools.js');
  const path = `${tempDir('cli')}/bad.yaml`;
  writeFileSync(path, 'postgres:\n  - name: m\n    listen: 127.0.0.1:1\n    server: { host: h }\n    pool_size: 0\n    typo: 1\n    timeouts: { connect: soon }\n');
  const result = await cli(['--check', '--config', path]);
  t.equal(result.code, 1);
  t.match(result.stderr, 'postgres[0].pool_size: must be >= 1, got 0');
  t.match(result.stderr, 'postgres[0].typo: unknown key');
  t.match(result.stderr, 'postgres[0].timeouts.connect: must be a duration');
});

t.test('SLUICE_CONFIG is the fallback for --config', async (t) => {
  const result = await cli(['--check'], { SLUICE_CONFIG: '/nonexistent/sluice.yaml' });
  t.equal(result.code, 1);
  t.match(result.stderr, '/nonexistent/sluice.yaml');
});

t.test('--version prints the package version', async (t) => {
  const result = await cli(['--version']);
  t.equal(result.code, 0);
  t.match(result.stdout, /^sluice \d+\.\d+\.\d+/);
});

t.test('an unknown flag is a usage error (exit 1)', async (t) => {
  const result = await cli(['--bogus']);
  t.equal(result.code, 1);
  t.match(result.stderr, /usage: sluice/);
});

t.test('the process logs JSON, serves /healthz /readyz /metrics /status, and exits 0 on SIGTERM', async (t) => {
  const pgPort = await freePort();
  const redisPort = await freePort();
  const sluice = await startSluice(`
metrics: { listen: "{{METRICS}}" }
log: { level: info }
postgres:
  - { name: main, listen: 127.0.0.1:${pgPort}, server: { host: 127.0.0.1, port: 1 }, auth_method: passthrough }
redis:
  - { name: cache, listen: 127.0.0.1:${redisPort}, server: { host: 127.0.0.1, port: 1 } }
`, { waitReady: false });
  const base = `http://127.0.0.1:${sluice.metricsPort}`;
  t.equal((await fetch(`${base}/healthz`)).status, 200);
  const metrics = await sluice.metrics();
  t.match(metrics, /sluice_listener_clients\{protocol="postgres",pool="main"\} 0/);
  t.match(metrics, /sluice_process_cpu_user_seconds_total/);
  const status = (await (await fetch(`${base}/status`)).json()) as { listeners: Array<{ name: string }> };
  t.same(status.listeners.map((l) => l.name), ['main', 'cache']);
  t.equal((await fetch(`${base}/nope`)).status, 404);
  t.ok(sluice.logs.length >= 3 && sluice.logs.every((l) => typeof l.level === 'string' && typeof l.msg === 'string'), 'every stdout line is a JSON log object');
  t.ok(sluice.logs.some((l) => l.msg === `postgres listening on 127.0.0.1:${pgPort}, forwarding to 127.0.0.1:1`));
  t.ok(sluice.logs.some((l) => l.msg === `redis listening on 127.0.0.1:${redisPort}, forwarding to 127.0.0.1:1`));
  t.equal(await sluice.stop(), 0);
});

t.test('a taken listen address exits 2 and names the address', async (t) => {
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const port = (blocker.address() as { port: number }).port;
  const { writeFileSync } = await import('node:fs');
  const { tempDir } = await import('./harness/tools.js');
  const path = `${tempDir('cli')}/taken.yaml`;
  writeFileSync(path, `metrics: { listen: 127.0.0.1:${await freePort()} }\nredis:\n  - { name: r, listen: 127.0.0.1:${port}, server: { host: 127.0.0.1 } }\n`);
  const result = await cli(['--config', path]);
  blocker.close();
  t.equal(result.code, 2);
  t.match(result.stderr, `cannot listen on 127.0.0.1:${port}: address already in use`);
});

t.test('secrets from the config never reach the logs', async (t) => {
  const sluice = await startSluice(`
metrics: { listen: "{{METRICS}}" }
log: { level: trace }
postgres:
  - name: main
    listen: 127.0.0.1:${await freePort()}
    server: { host: 127.0.0.1, port: 1, password: "\${PG_SECRET}" }
    auth_method: scram-sha-256
    users: [{ name: app, password: "\${PG_SECRET}" }]
`, { env: { PG_SECRET: 'hunter2-very-secret' }, waitReady: false });
  sluice.signal('SIGHUP');
  await new Promise((r) => setTimeout(r, 300));
  t.equal(await sluice.stop(), 0);
  t.notMatch(JSON.stringify(sluice.logs) + sluice.stderr(), 'hunter2-very-secret');
});
