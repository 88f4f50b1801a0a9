// The benchmark suite's entry point (npm run bench): starts the servers and targets, runs every
// workload in alternating rounds, writes bench/RESULTS.md, and stops everything it started.
//   node dist/bench/run.js [--quick] [--only pg-select,redis-get] [--rounds N] [--out FILE] [--no-sluice] [--workers]
// --workers adds sluice with `workers: 2` (target sluice-w2) on pg-select-c64, pg-tpcb-c64 and redis-get-c500-p1.
// A full run writes bench/RESULTS.md; --quick and --only write bench/RESULTS.partial.md (git-ignored).
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openIdlePostgresClients, openIdleRedisClients } from './idle-clients.js';
import { runPgbench } from './pgbench-runner.js';
import { loadAverage, residentKiB, totalCpuTimes } from './process-usage.js';
import { probeRedis, runRedisBenchmark } from './redis-benchmark-runner.js';
import { type IdleRow, pairedRatio, renderResults, type RunInfo, type TargetRow, type WorkloadResult, summarise } from './report.js';
import {
  COLLECTABLE_NODE_ARGS,
  commandVersion,
  fdLimit,
  raiseFdLimit,
  skippedTarget,
  startBenchPostgres,
  startBenchRedis,
  startOrSkip,
  startPgBouncer,
  startPipeRelay,
  startSluicePostgres,
  startSluiceRedis,
  startTwemproxy,
  type Target,
  type TargetRole,
} from './targets.js';
import { makePlan, type Plan, type Workload } from './workloads.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const startedAt = Date.now();
const log = (message: string) => process.stderr.write(`[bench ${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s] ${message}\n`);

/**
 * A target by name that is started on first use and restarted (at most twice) if it dies, so
 * one crash of an in-development proxy costs the workloads it crashed in, not the whole suite.
 */
class TargetSlot {
  current: Target | undefined;
  restarts = 0;
  /** Node flags the current process was started with (fresh() sets them). */
  private nodeArgs: string[] = [];
  constructor(
    readonly name: string,
    readonly role: TargetRole,
    /** `nodeArgs`: extra flags for a target that is a Node process (ignored by the others). */
    private readonly start: (nodeArgs: string[]) => Promise<Target>,
  ) {}

  async ensure(): Promise<{ target: Target; note?: string }> {
    // After a signal, cleanup is stopping targets: starting or restarting one would orphan it.
    if (stopping) throw new Error('stopping');
    if (!this.current) {
      this.current = await startOrSkip(this.name, this.role, () => this.start(this.nodeArgs));
      if (this.current.skipped) log(`${this.name}: skipped: ${this.current.skipped}`);
      return { target: this.current };
    }
    const failure = this.current.skipped ? undefined : this.current.failure();
    if (failure && this.restarts < 2) {
      this.restarts++;
      log(`${this.name}: ${failure}; restarting`);
      await this.current.stop();
      this.current = await startOrSkip(this.name, this.role, () => this.start(this.nodeArgs));
      return { target: this.current, note: `restarted after: ${failure}` };
    }
    return { target: this.current };
  }

  /** A new process in place of the current one (idle-memory runs measure a fresh heap). */
  async fresh(nodeArgs: string[] = []): Promise<{ target: Target; note?: string }> {
    if (this.current && !this.current.skipped) {
      await this.current.stop();
      this.current = undefined;
    }
    this.nodeArgs = nodeArgs;
    return this.ensure();
  }

  async stop(): Promise<void> {
    await this.current?.stop();
  }
}

/** Everything started, so a signal or a crash still stops it all by PID. */
const cleanups: Array<() => Promise<void>> = [];
let stopping = false;
async function cleanupAll(): Promise<void> {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop() as () => Promise<void>;
    await cleanup().catch((err: Error) => log(`cleanup: ${err.message}`));
  }
}

async function runThroughput(workload: Exclude<Workload, { kind: 'idle' }>, slots: TargetSlot[], rounds: number): Promise<TargetRow[]> {
  const rows = new Map<string, TargetRow>(slots.map((s) => [s.name, { name: s.name, role: s.role, samples: [], notes: [], excluded: workload.exclude?.[s.name] }]));
  for (let round = 0; round < rounds; round++) {
    // Rotate the order each round so no target always runs first (A B C D, B C D A, ...).
    const order = slots.map((_, i) => slots[(i + round) % slots.length]);
    for (const slot of order) {
      const row = rows.get(slot.name) as TargetRow;
      if (row.excluded || row.skipped) continue;
      const { target, note } = await slot.ensure();
      if (note) row.notes.push(note);
      if (target.skipped) {
        row.skipped = target.skipped;
        continue;
      }
      const failure = target.failure();
      if (failure) {
        row.samples.push({ round, outcome: { error: failure } });
        continue;
      }
      if (workload.kind === 'redis-benchmark') {
        const problem = await probeRedis(target.host, target.port);
        if (problem) {
          row.samples.push({ round, outcome: { error: problem } });
          log(`${workload.id} r${round + 1} ${slot.name}: ${problem}`);
          continue;
        }
      }
      const cpuBefore = totalCpuTimes(target.pids);
      const outcome = workload.kind === 'pgbench' ? await runPgbench(target.host, target.port, workload.spec) : await runRedisBenchmark(target.host, target.port, workload.spec);
      const cpuAfter = totalCpuTimes(target.pids);
      const measured = target.pids.length > 0;
      const cpuMs = measured ? cpuAfter.userMs + cpuAfter.systemMs - cpuBefore.userMs - cpuBefore.systemMs : undefined;
      const cpuUserMs = measured ? cpuAfter.userMs - cpuBefore.userMs : undefined;
      const after = target.failure();
      if (after) outcome.error = outcome.error ? `${outcome.error} (${after})` : after;
      row.samples.push({ round, outcome, cpuMs, cpuUserMs });
      log(`${workload.id} r${round + 1} ${slot.name}: ${outcome.rate?.toFixed(0) ?? '-'}/s p50 ${outcome.p50Ms?.toFixed(2) ?? '-'} p99 ${outcome.p99Ms?.toFixed(2) ?? '-'} cpu ${cpuMs ?? '-'}ms (user ${cpuUserMs ?? '-'})${outcome.error ? ` ERROR ${outcome.error}` : ''}`);
    }
  }
  // sluice-w2 against single-worker sluice, same round: the figure the workers option is about.
  const single = rows.get('sluice');
  const multi = rows.get('sluice-w2');
  const ratio = multi && !multi.excluded && !multi.skipped ? pairedRatio(multi, single) : undefined;
  if (multi && ratio !== undefined) multi.notes.push(`${ratio.toFixed(2)}× single-worker sluice (median of same-round ratios)`);
  return [...rows.values()].map((row) => {
    if (row.skipped) row.samples = [];
    return row;
  });
}

async function runIdle(workload: Extract<Workload, { kind: 'idle' }>, slots: TargetSlot[]): Promise<IdleRow[]> {
  const rows: IdleRow[] = [];
  for (const slot of slots) {
    const row: IdleRow = { name: slot.name, role: slot.role, excluded: workload.exclude?.[slot.name] };
    rows.push(row);
    if (row.excluded) continue;
    // A proxy that just ran the throughput workloads carries their heap; garbage collection then
    // shrinks RSS during the measurement and the delta says nothing (seen: 140 → 134 MiB for
    // 10 000 clients). Every proxy with a process of its own is measured freshly started.
    const { target } = slot.role === 'direct' ? await slot.ensure() : await slot.fresh(COLLECTABLE_NODE_ARGS);
    if (target.skipped) {
      row.skipped = target.skipped;
      continue;
    }
    if (target.pids.length === 0) {
      row.excluded = 'no process of its own to measure';
      continue;
    }
    const open = workload.protocol === 'postgres' ? openIdlePostgresClients : openIdleRedisClients;
    // A relay holds two descriptors per client; where the fd limit cannot be raised, it gets fewer clients.
    let n = workload.clients;
    if (slot.role === 'floor') {
      const cap = Math.floor((fdLimit(target.pids[0]) - 200) / 2);
      if (cap < n) {
        n = cap;
        row.error = `${n} clients, not ${workload.clients}: the relay needs 2 fds per client and its open-file limit is ${fdLimit(target.pids[0])}`;
      }
    }
    const rss = () => target.pids.reduce((sum, pid) => sum + (residentKiB(pid) ?? 0), 0);
    // One client first, so pools, caches and lazily built state exist before the baseline.
    const warm = await open(target.host, target.port, 1);
    // The first half of the clients absorbs one-time growth (V8's heap spaces grow to their
    // working size during thousands of connects); the figure is the RSS growth over the second
    // half: what one more idle client costs.
    const settle = await open(target.host, target.port, Math.floor(n / 2));
    await sleep(1000);
    const rssBefore = rss();
    if (target.collect) {
      await target.collect();
      row.rssBeforeCollectedKiB = rss();
    }
    const clients = await open(target.host, target.port, n - Math.floor(n / 2));
    await sleep(2000);
    const rssAfter = rss();
    if (target.collect) {
      await target.collect();
      row.rssAfterCollectedKiB = rss();
    }
    row.opened = clients.opened;
    row.failed = clients.failed;
    row.rssBeforeKiB = rssBefore;
    row.rssAfterKiB = rssAfter;
    const failure = target.failure();
    if (failure) row.error = failure;
    else if (clients.failed > 0) row.error = `${clients.failed} failed, first: ${clients.firstError}`;
    if (warm.failed > 0 && clients.opened === 0) row.error = `login failed: ${warm.firstError}`;
    const collected = target.collect ? `; after a full GC ${row.rssBeforeCollectedKiB} -> ${row.rssAfterCollectedKiB} KiB` : '';
    log(`${workload.id} ${slot.name}: ${clients.opened} held, ${clients.failed} failed, RSS ${rssBefore} -> ${rssAfter} KiB${collected}${row.error ? ` (${row.error})` : ''}`);
    await clients.close();
    await settle.close();
    await warm.close();
    await sleep(1000);
  }
  return rows;
}

/**
 * One short pass through every target before the first measured round, so the first round
 * does not pay for opening pools (PgBouncer and sluice open server connections lazily) or, for
 * Redis, for V8 compiling sluice's hot path: a probe alone left that to round 1 of the first
 * workload, which then ran at a fraction of its later rounds (redis-get-c50-p1 r1 3 968 ops/s,
 * r3 42 194, same run), a cost the C anchors never pay.
 */
async function warmUp(slots: TargetSlot[], protocol: 'postgres' | 'redis', poolSize: number): Promise<void> {
  for (const slot of slots) {
    const { target } = await slot.ensure();
    if (target.skipped || target.failure()) continue;
    if (protocol === 'redis') {
      await probeRedis(target.host, target.port);
      for (const command of ['get', 'set'] as const) await runRedisBenchmark(target.host, target.port, { command, clients: 50, pipeline: 1, requests: 10_000 });
    } else await runPgbench(target.host, target.port, { script: 'select', protocol: 'simple', clients: poolSize, connectPerTransaction: false, transactions: poolSize * 50 });
  }
  log(`warmed up ${slots.map((s) => s.name).join(', ')}`);
}

async function runSection(workloads: Workload[], slots: TargetSlot[], plan: Plan, results: WorkloadResult[]): Promise<void> {
  const protocol = isPostgres(workloads[0]) ? 'postgres' : 'redis';
  await warmUp(slots, protocol, protocol === 'postgres' ? plan.postgresPoolSize : plan.redisPoolSize);
  for (const workload of workloads) {
    const began = Date.now();
    log(`== ${workload.id}: ${workload.title}`);
    const result: WorkloadResult = { workload, rows: [], idleRows: [], elapsedS: 0 };
    if (workload.kind === 'idle') result.idleRows = await runIdle(workload, slots);
    else result.rows = await runThroughput(workload, slots, plan.rounds);
    result.elapsedS = (Date.now() - began) / 1000;
    results.push(result);
  }
}

function failedSection(workloads: Workload[], reason: string, results: WorkloadResult[]): void {
  for (const workload of workloads) {
    results.push({
      workload,
      rows: [{ name: 'all targets', role: 'direct', samples: [], notes: [], skipped: reason }],
      idleRows: [{ name: 'all targets', role: 'direct', skipped: reason }],
      elapsedS: 0,
    });
  }
}

function isPostgres(w: Workload): boolean {
  return w.kind === 'pgbench' || (w.kind === 'idle' && w.protocol === 'postgres');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean' },
      only: { type: 'string' },
      rounds: { type: 'string' },
      out: { type: 'string' },
      'no-sluice': { type: 'boolean' },
      workers: { type: 'boolean' },
    },
  });
  const only = (values.only ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const plan = makePlan(values.quick ? 'quick' : 'full', values.rounds ? Number(values.rounds) : undefined, only, values.workers === true);
  if (plan.workloads.length === 0) throw new Error(`--only ${values.only} matches no workload`);
  // Only a full run replaces the committed RESULTS.md; quick and --only runs go beside it.
  const partial = plan.mode === 'quick' || only.length > 0;
  const out = values.out ?? fileURLToPath(new URL(partial ? '../../bench/RESULTS.partial.md' : '../../bench/RESULTS.md', import.meta.url));
  const fdProblem = raiseFdLimit(process.pid);
  if (fdProblem) log(`open-file limit stays at ${fdLimit()} (${fdProblem})`);
  const loadBefore = loadAverage();
  log(`${plan.mode} mode: ${plan.workloads.length} workloads x ${plan.rounds} rounds; load ${loadBefore}`);

  const versions: Record<string, string> = {
    node: process.version,
    postgres: commandVersion('pgbench', ['--version'], /(\d+\.\d+\S*)/),
    pgbouncer: commandVersion('/usr/sbin/pgbouncer', ['--version'], /PgBouncer (\S+)/),
    nutcracker: commandVersion('/usr/sbin/nutcracker', ['--version'], /nutcracker-(\S+)/),
    redis: commandVersion('redis-server', ['--version'], /v=(\S+)/),
  };
  const noSluice = values['no-sluice'] ? 'left out with --no-sluice' : undefined;
  const results: WorkloadResult[] = [];

  const pgWorkloads = plan.workloads.filter(isPostgres);
  if (pgWorkloads.length > 0) {
    log('starting Postgres and loading the pgbench database');
    try {
      const pg = await startBenchPostgres(plan.scale);
      cleanups.push(() => pg.server.destroy());
      versions.postgres = pg.version;
      const slots = [
        new TargetSlot('direct', 'direct', async () => pg.direct),
        new TargetSlot('pipe-relay', 'floor', (nodeArgs) => startPipeRelay(pg.server.port, nodeArgs)),
        new TargetSlot('pgbouncer', 'anchor', () => startPgBouncer(pg.server.port, plan.postgresPoolSize)),
        new TargetSlot('sluice', 'sluice', async (nodeArgs) => (noSluice ? skippedTarget('sluice', 'sluice', noSluice) : startSluicePostgres(pg.server.port, plan.postgresPoolSize, { nodeArgs }))),
        ...(plan.withWorkers
          ? [new TargetSlot('sluice-w2', 'sluice', async (nodeArgs) => (noSluice ? skippedTarget('sluice-w2', 'sluice', noSluice) : startSluicePostgres(pg.server.port, plan.postgresPoolSize, { workers: 2, nodeArgs })))]
          : []),
      ];
      cleanups.push(async () => {
        for (const slot of slots) await slot.stop();
      });
      await runSection(pgWorkloads, slots, plan, results);
      await cleanupAll();
    } catch (err) {
      log(`Postgres section failed: ${(err as Error).stack}`);
      await cleanupAll();
      failedSection(pgWorkloads.filter((w) => !results.some((r) => r.workload === w)), `Postgres could not be started: ${(err as Error).message.split('\n')[0]}`, results);
    }
  }

  const redisWorkloads = plan.workloads.filter((w) => !isPostgres(w));
  if (redisWorkloads.length > 0) {
    try {
      const redis = await startBenchRedis();
      cleanups.push(() => redis.server.stop());
      const slots = [
        new TargetSlot('direct', 'direct', async () => redis.direct),
        new TargetSlot('pipe-relay', 'floor', (nodeArgs) => startPipeRelay(redis.server.port, nodeArgs)),
        new TargetSlot('twemproxy', 'anchor', () => startTwemproxy(redis.server.port, plan.redisPoolSize)),
        new TargetSlot('sluice', 'sluice', async (nodeArgs) => (noSluice ? skippedTarget('sluice', 'sluice', noSluice) : startSluiceRedis(redis.server.port, plan.redisPoolSize, { nodeArgs }))),
        ...(plan.withWorkers
          ? [new TargetSlot('sluice-w2', 'sluice', async (nodeArgs) => (noSluice ? skippedTarget('sluice-w2', 'sluice', noSluice) : startSluiceRedis(redis.server.port, plan.redisPoolSize, { workers: 2, nodeArgs })))]
          : []),
      ];
      cleanups.push(async () => {
        for (const slot of slots) await slot.stop();
      });
      await runSection(redisWorkloads, slots, plan, results);
      await cleanupAll();
    } catch (err) {
      log(`Redis section failed: ${(err as Error).stack}`);
      await cleanupAll();
      failedSection(redisWorkloads.filter((w) => !results.some((r) => r.workload === w)), `redis-server could not be started: ${(err as Error).message.split('\n')[0]}`, results);
    }
  }

  const info: RunInfo = {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    plan,
    versions,
    loadBefore,
    loadAfter: loadAverage(),
    cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}`,
    elapsedS: (Date.now() - startedAt) / 1000,
    command: `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim(),
  };
  writeFileSync(out, renderResults(info, results));
  log(`wrote ${out}`);
  for (const result of results) {
    for (const row of result.rows) {
      const s = summarise(row);
      if (!row.excluded && !row.skipped) log(`${result.workload.id.padEnd(28)} ${row.name.padEnd(11)} ${s.rate?.toFixed(0) ?? 'failed'}`);
    }
  }
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    stopping = true;
    log(`${signal}: stopping everything started`);
    cleanupAll().finally(() => process.exit(130));
  });
}

main().then(
  // Exit explicitly: a socket or child left behind by a failed target must not keep the suite alive.
  () => process.exit(0),
  async (err: Error) => {
    log(`failed: ${err.stack ?? err.message}`);
    await cleanupAll();
    process.exit(1);
  },
);
