// Process lifecycle without traffic: readiness during a drain, shutdown_delay, reload on SIGHUP
// and on a ConfigMap-style symlink swap, an invalid reload keeping the old config.
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startSluice } from './harness/sluice-process.js';
import { freePort, tempDir, waitFor } from './harness/tools.js';

async function reloadCount(metricsText: Promise<string>, result: 'success' | 'failure'): Promise<number> {
  const match = new RegExp(`sluice_config_reload_total\\{result="${result}"\\} (\\d+)`).exec(await metricsText);
  return match ? Number(match[1]) : 0;
}

function config(metrics: string, level: string, redisPort: number): string {
  return `
metrics: { listen: "${metrics}" }
log: { level: ${level} }
shutdown_delay: 600ms
shutdown_timeout: 5s
redis:
  - { name: cache, listen: 127.0.0.1:${redisPort}, server: { host: 127.0.0.1, port: 1 } }
`;
}

t.test('SIGTERM turns /readyz 503 at once, keeps /metrics and /healthz up through shutdown_delay, then exits 0', async (t) => {
  const { startRedis } = await import('./harness/redis-server.js');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const sluice = await startSluice(config('{{METRICS}}', 'info', await freePort()).replace('port: 1 }', `port: ${redis.port} }`), { waitReady: false });
  const base = `http://127.0.0.1:${sluice.metricsPort}`;
  t.equal((await fetch(`${base}/readyz`)).status, 200, 'ready: listening, upstream reachable');
  sluice.signal('SIGTERM');
  await waitFor('readiness off', async () => (await fetch(`${base}/readyz`)).status === 503);
  const body = (await (await fetch(`${base}/readyz`)).json()) as { ready: boolean; reason: string };
  t.equal(body.ready, false);
  t.match(body.reason, /delaying|draining/);
  t.equal((await fetch(`${base}/healthz`)).status, 200, 'liveness stays up while draining');
  t.match(await sluice.metrics(), /sluice_listener_clients/, '/metrics answers while draining');
  t.equal(await sluice.exited, 0);
});

t.test('a second signal during the drain exits at once', async (t) => {
  const sluice = await startSluice(config('{{METRICS}}', 'info', await freePort()).replace('shutdown_delay: 600ms', 'shutdown_delay: 60s'), { waitReady: false });
  sluice.signal('SIGTERM');
  await waitFor('the drain to start', () => sluice.logs.some((l) => l.msg === 'shutting down: readiness off'));
  sluice.signal('SIGINT');
  t.equal(await sluice.exited, 0);
  t.ok(sluice.logs.some((l) => l.msg === 'second signal: closing everything now'));
});

t.test('SIGHUP reloads; an invalid config is rejected whole, logged and counted, and the old one keeps running', async (t) => {
  const redisPort = await freePort();
  const sluice = await startSluice(config('{{METRICS}}', 'info', redisPort), { waitReady: false });
  t.teardown(() => sluice.stop());
  sluice.writeConfig(config('{{METRICS}}', 'debug', redisPort));
  sluice.signal('SIGHUP');
  await waitFor('a successful reload', async () => (await reloadCount(sluice.metrics(), 'success')) >= 1);
  sluice.writeConfig(config('{{METRICS}}', 'debug', redisPort).replace('shutdown_timeout: 5s', 'shutdown_timeout: soon'));
  sluice.signal('SIGHUP');
  await waitFor('a failed reload', async () => (await reloadCount(sluice.metrics(), 'failure')) >= 1);
  const rejected = sluice.logs.find((l) => l.msg === 'config reload rejected: keeping the running config');
  t.ok(rejected, 'the rejection is logged');
  t.match(JSON.stringify(rejected?.problems), /shutdown_timeout: must be a duration/);
  t.equal((await fetch(`http://127.0.0.1:${sluice.metricsPort}/healthz`)).status, 200, 'still serving');
  sluice.writeConfig(config('{{METRICS}}', 'debug', await freePort()));
  sluice.signal('SIGHUP');
  await waitFor('the listen change to be reported', () => sluice.logs.some((l) => Array.isArray(l.needs_restart)));
  const report = sluice.logs.find((l) => Array.isArray(l.needs_restart));
  t.same(report?.needs_restart, ['redis[0].listen'], 'a changed listen address needs a restart and is said so');
});

t.test('a Kubernetes ConfigMap-style symlink swap is picked up without a signal', async (t) => {
  const dir = tempDir('configmap');
  const metricsPort = await freePort();
  const redisPort = await freePort();
  const writeVersion = (name: string, level: string) => {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'sluice.yaml'), config(`127.0.0.1:${metricsPort}`, level, redisPort));
  };
  // The layout the kubelet makes: ..data -> ..<timestamp>/, and the file -> ..data/file.
  writeVersion('..2026_11_27_01', 'info');
  symlinkSync('..2026_11_27_01', join(dir, '..data'));
  symlinkSync('..data/sluice.yaml', join(dir, 'sluice.yaml'));
  const sluice = await startSluice('', { configFile: join(dir, 'sluice.yaml'), metricsPort, waitReady: false });
  t.teardown(() => sluice.stop());
  writeVersion('..2026_11_27_02', 'warn');
  symlinkSync('..2026_11_27_02', join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  await waitFor('the file-change reload', async () => (await reloadCount(sluice.metrics(), 'success')) >= 1);
  t.ok(sluice.logs.some((l) => l.msg === 'config reloaded' && l.trigger === 'file change'));
});

t.test('/readyz is 503 naming the upstream while it is down, and 200 once it is back, with no client traffic', async (t) => {
  const { startRedis } = await import('./harness/redis-server.js');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  await redis.stop();
  const sluice = await startSluice(config('{{METRICS}}', 'info', await freePort()).replace('port: 1 }', `port: ${redis.port} }`), { waitReady: false });
  t.teardown(() => sluice.stop());
  const readyz = async () => {
    const res = await fetch(`http://127.0.0.1:${sluice.metricsPort}/readyz`);
    return { status: res.status, body: (await res.json()) as { reason?: string } };
  };
  const down = await readyz();
  t.equal(down.status, 503);
  t.match(down.body.reason, `redis upstream 127.0.0.1:${redis.port} of cache is unreachable`);
  await redis.start();
  await waitFor('readiness back on', async () => (await readyz()).status === 200);
  t.same(await readyz(), { status: 200, body: { ready: true } }, 'ready again once the upstream answers');
});
