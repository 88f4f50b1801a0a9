// `npm run demo`: a throwaway Postgres and Redis, sluice in front of them, more clients than
// pool slots, and a live view of the pools every second (read from sluice's /status and
// /metrics, as an operator would) until Ctrl-C. Every process it starts is stopped on the way out.
// A dev tool: it uses the test harness and the dev dependencies pg and ioredis.
import { Redis } from 'ioredis';
import pg from 'pg';
import { bucketQuantile, type MetricFamily, parseExposition } from '../metrics/exposition.js';
import { PG_USERS, type PostgresServer, startPostgres } from '../test/harness/postgres-server.js';
import { type RedisServer, startRedis } from '../test/harness/redis-server.js';
import { type SluiceProcess, startSluice } from '../test/harness/sluice-process.js';
import { freePort } from '../test/harness/tools.js';

const PG_CLIENTS = 20;
const PG_POOL_SIZE = 5;
const REDIS_CLIENTS = 12;
const REDIS_POOL_SIZE = 2;
/** The workload stops by itself after this long even without Ctrl-C (`--seconds N` to change). */
const DEFAULT_SECONDS = 600;

interface PoolStatus {
  database: string;
  user: string;
  cl_active: number;
  cl_waiting: number;
  cl_idle: number;
  sv_active: number;
  sv_idle: number;
  pool_size: number;
  maxwait_seconds: number;
}
interface ListenerStatus {
  protocol: string;
  name: string;
  listen: string;
  upstream_reachable: boolean;
  clients: number;
  pools: PoolStatus[];
}

/** What one scrape says, kept to compute per-second rates and recent percentiles. */
interface Sample {
  atMs: number;
  families: Map<string, MetricFamily>;
}

const started: { pg?: PostgresServer; redis?: RedisServer; sluice?: SluiceProcess } = {};
let stopping = false;
/** Ctrl-C reaches the servers too (same process group): a failure after it is no failure. */
let interrupted = false;
const workloadErrors = new Map<string, number>();

function seconds(): number {
  const at = process.argv.indexOf('--seconds');
  const value = at >= 0 ? Number(process.argv[at + 1]) : DEFAULT_SECONDS;
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_SECONDS;
}

function noteError(kind: string, err: unknown): void {
  if (stopping) return;
  const key = `${kind}: ${(err as Error).message?.split('\n')[0] ?? String(err)}`.slice(0, 100);
  workloadErrors.set(key, (workloadErrors.get(key) ?? 0) + 1);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One Postgres client: short transactions back to back, each holding a server for ~10-30ms. */
async function postgresClient(port: number, id: number): Promise<void> {
  while (!stopping) {
    const client = new pg.Client({ host: '127.0.0.1', port, user: PG_USERS.scram.name, password: PG_USERS.scram.password, database: 'postgres' });
    client.on('error', (err) => noteError('postgres', err));
    try {
      await client.connect();
      while (!stopping) {
        await client.query('BEGIN');
        await client.query('UPDATE demo_counters SET n = n + 1 WHERE id = $1', [id % 10]);
        await client.query('SELECT pg_sleep(0.01 + random() * 0.02)');
        await client.query('COMMIT');
      }
    } catch (err) {
      noteError('postgres', err);
      await sleep(500);
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/** One Redis client: a mix of single commands and small pipelines. */
async function redisClient(port: number, id: number): Promise<void> {
  const redis = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => (stopping ? null : 500) });
  redis.on('error', (err) => noteError('redis', err));
  try {
    await redis.connect();
    while (!stopping) {
      try {
        await redis.incr(`demo:counter:${id % 4}`);
        await redis.pipeline().set(`demo:key:${id}`, String(Date.now())).get(`demo:key:${id}`).hincrby('demo:hash', `f${id % 8}`, 1).exec();
        await sleep(5);
      } catch (err) {
        noteError('redis', err);
        await sleep(500);
      }
    }
  } catch (err) {
    noteError('redis', err);
  } finally {
    redis.disconnect();
  }
}

async function scrape(metricsPort: number): Promise<{ status: ListenerStatus[]; sample: Sample }> {
  const [status, metrics] = await Promise.all([
    fetch(`http://127.0.0.1:${metricsPort}/status`).then((r) => r.json() as Promise<{ listeners: ListenerStatus[] }>),
    fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text()),
  ]);
  return { status: status.listeners, sample: { atMs: Date.now(), families: parseExposition(metrics) } };
}

function sum(family: MetricFamily | undefined, match: Record<string, string>, sampleName?: string): number {
  if (!family) return 0;
  return family.samples
    .filter((s) => (sampleName === undefined || s.name === sampleName) && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((total, s) => total + s.value, 0);
}

/** p99 of sluice_pool_wait_seconds over the window between two scrapes (NaN when nothing was acquired). */
function recentWaitP99(now: Sample, then: Sample, labels: Record<string, string>): number {
  const name = 'sluice_pool_wait_seconds';
  const buckets = (sample: Sample) => {
    const byLe = new Map<number, number>();
    for (const s of sample.families.get(name)?.samples ?? []) {
      if (s.name !== `${name}_bucket` || !Object.entries(labels).every(([k, v]) => s.labels[k] === v)) continue;
      const le = s.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(s.labels.le);
      byLe.set(le, (byLe.get(le) ?? 0) + s.value);
    }
    return byLe;
  };
  const a = buckets(now);
  const b = buckets(then);
  return bucketQuantile(0.99, [...a].map(([le, count]) => ({ le, count: count - (b.get(le) ?? 0) })));
}

function formatSeconds(value: number): string {
  if (!Number.isFinite(value)) return '-';
  if (value < 0.001) return `${(value * 1_000_000).toFixed(0)}µs`;
  if (value < 1) return `${(value * 1000).toFixed(1)}ms`;
  return `${value.toFixed(2)}s`;
}

function render(status: ListenerStatus[], now: Sample, then: Sample, elapsedS: number): string {
  const windowS = Math.max(0.001, (now.atMs - then.atMs) / 1000);
  const lines = [
    `sluice demo — ${PG_CLIENTS} Postgres clients on pool_size ${PG_POOL_SIZE}, ${REDIS_CLIENTS} Redis clients on pool_size ${REDIS_POOL_SIZE}   (${elapsedS.toFixed(0)}s, Ctrl-C to stop)`,
    '',
    `${'pool'.padEnd(34)}${'clients act/wait'.padStart(18)}${'servers used/size'.padStart(19)}${'per second'.padStart(16)}${'p99 wait'.padStart(11)}${'longest wait'.padStart(14)}`,
  ];
  for (const listener of status) {
    const rateFamily = listener.protocol === 'postgres' ? 'sluice_transactions_total' : 'sluice_commands_total';
    const unit = listener.protocol === 'postgres' ? 'tx' : 'cmd';
    const labels = { protocol: listener.protocol, pool: listener.name };
    const counted = (now.families.get(rateFamily)?.samples ?? []).some((s) => s.labels.pool === listener.name);
    const rate = (sum(now.families.get(rateFamily), labels) - sum(then.families.get(rateFamily), labels)) / windowS;
    // A listener that does not record this counter (yet) shows '-', not a misleading 0.
    const perSecond = counted ? `${rate.toFixed(0)} ${unit}` : '-';
    const reach = listener.upstream_reachable ? '' : '  (upstream unreachable)';
    if (listener.pools.length === 0) {
      lines.push(`${`${listener.protocol}/${listener.name}`.padEnd(34)}  ${listener.clients} clients connected, no pool yet${reach}`);
      continue;
    }
    for (const pool of listener.pools) {
      const name = `${listener.protocol}/${listener.name} ${pool.database}/${pool.user}`;
      const p99 = recentWaitP99(now, then, { ...labels, database: pool.database, user: pool.user });
      lines.push(
        `${name.slice(0, 33).padEnd(34)}${`${pool.cl_active}/${pool.cl_waiting}`.padStart(18)}${`${pool.sv_active}/${pool.pool_size}`.padStart(19)}${perSecond.padStart(16)}${formatSeconds(p99).padStart(11)}${formatSeconds(pool.maxwait_seconds).padStart(14)}${reach}`,
      );
    }
  }
  lines.push('', 'rates and p99 wait over the last 5 seconds; p99 wait is from sluice_pool_wait_seconds');
  if (workloadErrors.size > 0) {
    lines.push('', 'workload errors (count):');
    for (const [message, count] of [...workloadErrors].slice(-6)) lines.push(`  ${count}× ${message}`);
  }
  return lines.join('\n');
}

async function cleanup(): Promise<void> {
  stopping = true;
  await started.sluice?.stop().catch(() => undefined);
  await started.redis?.stop().catch(() => undefined);
  await started.pg?.destroy().catch(() => undefined);
}

async function main(): Promise<void> {
  const runForMs = seconds() * 1000;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    stopping = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  process.stdout.write('starting a throwaway Postgres and Redis…\n');
  started.pg = await startPostgres();
  started.redis = await startRedis();
  await started.pg.psql('CREATE TABLE demo_counters (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0); INSERT INTO demo_counters (id) SELECT generate_series(0, 9);');
  const pgPort = await freePort();
  const redisPort = await freePort();
  process.stdout.write('starting sluice…\n');
  started.sluice = await startSluice(
    `
metrics: { listen: "{{METRICS}}" }
log: { level: warn }
shutdown_timeout: 5s
postgres:
  - name: main
    listen: 127.0.0.1:${pgPort}
    server: { host: 127.0.0.1, port: ${started.pg.port} }
    pool_size: ${PG_POOL_SIZE}
redis:
  - name: cache
    listen: 127.0.0.1:${redisPort}
    server: { host: 127.0.0.1, port: ${started.redis.port} }
    pool_size: ${REDIS_POOL_SIZE}
`,
    { waitReady: false },
  );
  const metricsPort = started.sluice.metricsPort;
  process.stdout.write(`sluice: Postgres on 127.0.0.1:${pgPort}, Redis on 127.0.0.1:${redisPort}, metrics on http://127.0.0.1:${metricsPort}/metrics\n`);
  process.stdout.write(`pids: postgres ${started.pg.pid}, redis ${started.redis.pid}, sluice ${started.sluice.pid}\n`);
  started.sluice.exited.then((code) => {
    if (!stopping) {
      noteError('sluice', new Error(`sluice exited with code ${code}: ${started.sluice?.stderr().slice(-300)}`));
      stopping = true;
    }
  });

  const workload = [
    ...Array.from({ length: PG_CLIENTS }, (_, i) => postgresClient(pgPort, i)),
    ...Array.from({ length: REDIS_CLIENTS }, (_, i) => redisClient(redisPort, i)),
  ];
  const startMs = Date.now();
  const history: Sample[] = [];
  const tty = process.stdout.isTTY;
  while (!stopping && Date.now() - startMs < runForMs) {
    try {
      const { status, sample } = await scrape(metricsPort);
      history.push(sample);
      if (history.length > 6) history.shift();
      const view = render(status, sample, history[0], (Date.now() - startMs) / 1000);
      process.stdout.write(tty ? `\x1b[2J\x1b[H${view}\n` : `${view}\n\n`);
    } catch (err) {
      process.stdout.write(`cannot read sluice's /status or /metrics: ${(err as Error).message}\n`);
    }
    await sleep(1000);
  }
  stopping = true;
  process.stdout.write('\nstopping the workload, sluice, Redis and Postgres…\n');
  await Promise.race([Promise.allSettled(workload), sleep(5000)]);
  await cleanup();
  process.stdout.write('done: every process the demo started is stopped.\n');
}

main().catch(async (err) => {
  if (!interrupted) process.stderr.write(`demo failed: ${(err as Error).stack ?? err}\n`);
  await cleanup();
  if (interrupted) process.stdout.write('interrupted while starting: every process the demo started is stopped.\n');
  process.exit(interrupted ? 130 : 1);
});
