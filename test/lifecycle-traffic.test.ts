// Shutdown and reload under real traffic: SIGTERM while pgbench (TPC-B) and a Redis pipeline
// run loses no acknowledged work and ends every client with a reply or a clean error; pool_size
// raised and lowered by reload under load costs no client an error.
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import t from 'tap';
import { startPostgres } from './harness/postgres-server.js';
import { startRedis } from './harness/redis-server.js';
import { startSluice } from './harness/sluice-process.js';
import { findBinary, freePort, postgresBinDirs, waitFor } from './harness/tools.js';

const run = promisify(execFile);
const pgbench = findBinary('pgbench', postgresBinDirs(), 'apt-get install postgresql-contrib');

const pg = await startPostgres();
const redis = await startRedis();
t.teardown(async () => {
  await pg.destroy();
  await redis.stop();
});
await run(pgbench, ['-i', '-q', '-s', '1', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres', 'postgres']);

function sluiceConfig(pgPort: number, redisPort: number, poolSize: number): string {
  return `
metrics: { listen: "{{METRICS}}" }
shutdown_timeout: 20s
# As in Kubernetes: readiness goes off first, the drain starts after the delay. Without it a
# drain that finishes in a few milliseconds can exit before the test's first /readyz poll.
shutdown_delay: 1s
postgres:
  - name: main
    listen: 127.0.0.1:${pgPort}
    server: { host: 127.0.0.1, port: ${pg.port} }
    pool_mode: transaction
    pool_size: ${poolSize}
    auth_method: trust
redis:
  - name: cache
    listen: 127.0.0.1:${redisPort}
    server: { host: 127.0.0.1, port: ${redis.port} }
    pool_size: 2
`;
}

interface PgbenchRun {
  done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

function startPgbench(port: number, args: string[]): PgbenchRun {
  const child = spawn(pgbench, ['-n', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', ...args, 'postgres']);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  return { done: new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr }))) };
}

function processed(stdout: string): number {
  const match = /number of transactions actually processed: (\d+)/.exec(stdout);
  return match ? Number(match[1]) : -1;
}

t.test('SIGTERM under pgbench TPC-B and a Redis pipeline: acknowledged work kept, clean errors, exit 0 within shutdown_timeout', async (t) => {
  const pgPort = await freePort();
  const redisPort = await freePort();
  await pg.psql('TRUNCATE pgbench_history');
  const sluice = await startSluice(sluiceConfig(pgPort, redisPort, 5));
  const bench = startPgbench(pgPort, ['-c', '20', '-j', '2', '-T', '60']);

  // A Redis client pipelining INCRs; every acknowledged INCR must be in the final value.
  const client = new Redis({ host: '127.0.0.1', port: redisPort, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null, lazyConnect: true });
  client.on('error', () => {});
  await client.connect();
  await redis.cli('SET', 'drain-counter', '0');
  let acknowledged = 0;
  const redisErrors: string[] = [];
  let stopRedis = false;
  const redisLoop = (async () => {
    while (!stopRedis) {
      const pipeline = client.pipeline();
      for (let i = 0; i < 16; i++) pipeline.incr('drain-counter');
      try {
        const replies = (await pipeline.exec()) ?? [];
        for (const [err] of replies) {
          if (err) redisErrors.push(err.message);
          else acknowledged++;
        }
        if (replies.some(([err]) => err)) return;
      } catch (err) {
        redisErrors.push((err as Error).message);
        return;
      }
    }
  })();

  await waitFor('pgbench traffic through sluice', async () => Number(await pg.psql('select count(*) from pgbench_history')) > 50, 30_000);
  const termAt = Date.now();
  sluice.signal('SIGTERM');
  await waitFor('readiness off', async () => (await fetch(`http://127.0.0.1:${sluice.metricsPort}/readyz`)).status === 503);
  const code = await sluice.exited;
  const drainMs = Date.now() - termAt;
  stopRedis = true;
  await redisLoop;
  client.disconnect();
  const result = await bench.done;

  t.equal(code, 0, 'sluice exits 0');
  t.ok(drainMs < 20_000, `drained within shutdown_timeout (${drainMs}ms)`);
  const history = Number(await pg.psql('select count(*) from pgbench_history'));
  t.ok(processed(result.stdout) >= 0 || result.stderr.length > 0, 'pgbench reported');
  t.ok(history >= Math.max(processed(result.stdout), 0), `every acknowledged transaction is committed (history ${history}, pgbench ${processed(result.stdout)})`);
  t.notMatch(result.stderr, /server closed the connection unexpectedly|connection reset|Connection reset/i, 'no reset without a message');
  if (result.stderr.trim() !== '') t.match(result.stderr, /sluice is shutting down/, 'clients were told why');
  const final = Number(await redis.cli('GET', 'drain-counter'));
  t.ok(final >= acknowledged, `every acknowledged INCR landed (${final} >= ${acknowledged})`);
  t.ok(acknowledged > 0, 'the Redis pipeline ran');
  t.notOk(redisErrors.some((e) => /ECONNRESET/.test(e)), `no reset without a message: ${redisErrors.slice(0, 3).join('; ')}`);
});

t.test('raising and lowering pool_size by reload under load costs no client an error', async (t) => {
  const pgPort = await freePort();
  const redisPort = await freePort();
  const sluice = await startSluice(sluiceConfig(pgPort, redisPort, 4));
  t.teardown(() => sluice.stop());
  const bench = startPgbench(pgPort, ['-c', '16', '-j', '2', '-T', '8', '-S']);
  // The pool's own count: pg_stat_activity lags a closed backend by a moment, which would
  // make a connection retired by the shrink look like one too many.
  let maxServers = 0;
  const watcher = setInterval(async () => {
    const status = (await (await fetch(`http://127.0.0.1:${sluice.metricsPort}/status`)).json()) as { listeners: Array<{ pools: Array<{ sv_active: number; sv_idle: number; sv_opening: number }> }> };
    const n = status.listeners[0].pools.reduce((sum, p) => sum + p.sv_active + p.sv_idle + p.sv_opening, 0);
    maxServers = Math.max(maxServers, n);
  }, 100);
  await new Promise((r) => setTimeout(r, 2000));
  sluice.writeConfig(sluiceConfig(pgPort, redisPort, 8));
  sluice.signal('SIGHUP');
  await new Promise((r) => setTimeout(r, 2500));
  sluice.writeConfig(sluiceConfig(pgPort, redisPort, 2));
  sluice.signal('SIGHUP');
  const result = await bench.done;
  clearInterval(watcher);
  t.equal(result.code, 0, result.stderr);
  t.match(result.stdout, /number of failed transactions: 0/);
  t.ok(maxServers <= 8, `never more server connections than the largest pool_size (${maxServers})`);
  const metrics = await sluice.metrics();
  // SIGHUP and the file watcher both see each rewrite, so each change may reload twice.
  const reloads = Number(/sluice_config_reload_total\{result="success"\} (\d+)/.exec(metrics)?.[1] ?? 0);
  t.ok(reloads >= 2, `both reloads applied (${reloads})`);
  t.match(metrics, /sluice_pool_size\{protocol="postgres",pool="main",database="postgres",user="postgres"\} 2/);
});
