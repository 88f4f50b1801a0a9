// CPU-profiles sluice under load: starts Postgres and Redis, runs sluice with node --cpu-prof,
// drives it with pgbench -S and redis-benchmark, stops it (which writes the profile), and
// prints the top self-time functions; then counts syscalls per transaction (strace -c) for
// sluice, PgBouncer/twemproxy and the pipe relay under the same fixed workload.
// Profiles go to a temp dir (they are large: not committed).
//   node dist/bench/profile.js [--only postgres|redis] [--out-dir DIR] [--no-strace]
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { tempDir } from '../test/harness/tools.js';
import { runPgbench } from './pgbench-runner.js';
import { renderProfileSummary, summariseProfile } from './profile-summary.js';
import { runRedisBenchmark } from './redis-benchmark-runner.js';
import { countSyscalls, perUnit } from './syscall-count.js';
import { startBenchPostgres, startBenchRedis, startOrSkip, startPgBouncer, startPipeRelay, startSluicePostgres, startSluiceRedis, startTwemproxy, type Target } from './targets.js';

const log = (message: string) => process.stderr.write(`[profile] ${message}\n`);

async function profiled(label: string, dir: string, start: (nodeArgs: string[]) => Promise<Target>, drive: (t: Target) => Promise<void>): Promise<void> {
  const profileDir = join(dir, label);
  const target = await startOrSkip('sluice', 'sluice', () => start(['--cpu-prof', `--cpu-prof-dir=${profileDir}`]));
  if (target.skipped) throw new Error(`sluice did not start: ${target.skipped}`);
  try {
    await drive(target);
  } finally {
    // A clean exit is what makes node write the .cpuprofile.
    await target.stop();
  }
  const files = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`no .cpuprofile in ${profileDir}: did sluice exit cleanly?`);
  for (const file of files) {
    const path = join(profileDir, file);
    process.stdout.write(`\n== ${label}: ${path}\n${renderProfileSummary(summariseProfile(JSON.parse(readFileSync(path, 'utf8'))), 30)}\n`);
  }
}

/** Syscalls per transaction for each proxy under the same fixed workload (the tracer slows each one equally). */
async function syscallsPerUnit(label: string, targets: Target[], units: number, drive: (t: Target) => Promise<void>): Promise<void> {
  process.stdout.write(`\n== syscalls per ${label} (strace -c, fixed work of ${units})\n`);
  for (const target of targets) {
    if (target.skipped || target.pids.length === 0) continue;
    try {
      const counts = await countSyscalls(target.pids[0], () => drive(target));
      process.stdout.write(`  ${target.name.padEnd(11)} total ${(counts.total / units).toFixed(2)}: ${perUnit(counts, units)}\n`);
    } catch (err) {
      process.stdout.write(`  ${target.name.padEnd(11)} not measured: ${(err as Error).message.split('\n')[0]}\n`);
    }
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, 'out-dir': { type: 'string' }, 'no-strace': { type: 'boolean' } } });
  const strace = !values['no-strace'];
  const dir = values['out-dir'] ?? tempDir('bench-profile');
  log(`profiles in ${dir}`);
  if (!values.only || values.only === 'postgres') {
    const pg = await startBenchPostgres(10);
    try {
      await profiled('postgres', dir, (nodeArgs) => startSluicePostgres(pg.server.port, 16, { nodeArgs }), async (t) => {
        for (const spec of [
          { clients: 64, protocol: 'simple' as const, script: 'select' as const },
          { clients: 64, protocol: 'extended' as const, script: 'select' as const },
          { clients: 16, protocol: 'simple' as const, script: 'tpcb' as const },
        ]) {
          const outcome = await runPgbench(t.host, t.port, { ...spec, connectPerTransaction: false, transactions: spec.script === 'select' ? 30_000 : 5_000 });
          log(`pgbench ${spec.script} ${spec.protocol} c${spec.clients}: ${outcome.rate?.toFixed(0) ?? '-'} tps ${outcome.error ?? ''}`);
        }
      });
      if (strace) {
        const targets = [
          await startOrSkip('pipe-relay', 'floor', () => startPipeRelay(pg.server.port)),
          await startOrSkip('pgbouncer', 'anchor', () => startPgBouncer(pg.server.port, 16)),
          await startOrSkip('sluice', 'sluice', () => startSluicePostgres(pg.server.port, 16)),
        ];
        try {
          const tx = 4_000;
          const select = (t: Target) => runPgbench(t.host, t.port, { script: 'select', protocol: 'simple', clients: 16, connectPerTransaction: false, transactions: tx }).then(() => {});
          // Warm each pool first so logins are not counted.
          for (const t of targets) if (!t.skipped) await select(t);
          await syscallsPerUnit('pgbench -S transaction, 16 clients', targets, tx, select);
        } finally {
          for (const t of targets) await t.stop();
        }
      }
    } finally {
      await pg.server.destroy();
    }
  }
  if (!values.only || values.only === 'redis') {
    const redis = await startBenchRedis();
    try {
      await profiled('redis', dir, (nodeArgs) => startSluiceRedis(redis.server.port, 4, { nodeArgs }), async (t) => {
        for (const spec of [
          { command: 'get' as const, clients: 50, pipeline: 1, requests: 100_000 },
          { command: 'set' as const, clients: 50, pipeline: 16, requests: 400_000 },
          { command: 'get' as const, clients: 500, pipeline: 1, requests: 100_000 },
        ]) {
          const outcome = await runRedisBenchmark(t.host, t.port, spec);
          log(`redis-benchmark ${spec.command} c${spec.clients} P${spec.pipeline}: ${outcome.rate?.toFixed(0) ?? '-'} ops/s ${outcome.error ?? ''}`);
        }
      });
      if (strace) {
        const targets = [
          await startOrSkip('pipe-relay', 'floor', () => startPipeRelay(redis.server.port)),
          await startOrSkip('twemproxy', 'anchor', () => startTwemproxy(redis.server.port, 4)),
          await startOrSkip('sluice', 'sluice', () => startSluiceRedis(redis.server.port, 4)),
        ];
        try {
          for (const pipeline of [1, 16]) {
            const ops = pipeline === 1 ? 20_000 : 100_000;
            const get = (t: Target) => runRedisBenchmark(t.host, t.port, { command: 'get', clients: 50, pipeline, requests: ops }).then(() => {});
            await syscallsPerUnit(`GET, 50 clients, pipeline ${pipeline}`, targets, ops, get);
          }
        } finally {
          for (const t of targets) await t.stop();
        }
      }
    } finally {
      await redis.server.stop();
    }
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    log(`failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
