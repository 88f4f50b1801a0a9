// One pgbench run against one target: throughput from pgbench's summary, latency percentiles
// from its per-transaction log (-l), and the first error line when clients were aborted.
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { percentileSorted } from './stats.js';
import { tempDir } from '../test/harness/tools.js';

export interface PgbenchSpec {
  script: 'select' | 'tpcb';
  protocol: 'simple' | 'extended' | 'prepared';
  clients: number;
  /** -C: a new connection for every transaction. */
  connectPerTransaction: boolean;
  /**
   * Total transactions, split evenly over clients (-t). A fixed amount of work rather than -T:
   * -T counts connection setup against the run, and forking 64+ direct backends on a loaded
   * 2-core machine can take the whole run, leaving the direct baseline unmeasured.
   */
  transactions: number;
}

export interface RunOutcome {
  /** Transactions (or operations) per second; undefined when the run failed outright. */
  rate?: number;
  /** How many transactions/operations completed, for CPU per 1000. */
  count?: number;
  p50Ms?: number;
  p99Ms?: number;
  /** The run did not complete cleanly (aborted clients, refused connection, timeout). */
  error?: string;
}

function firstErrorLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter(Boolean);
  const hit = lines.find((l) => /error|fatal|abort|failed|could not|refused|closed|terminat/i.test(l)) ?? lines[0] ?? 'unknown error';
  return hit.replace(/^pgbench: /, '').replace(/^error: /, '').slice(0, 200);
}

/** Latencies (µs) from every pgbench_log file under dir; column 3 is the transaction's latency. */
function readLatenciesUs(dir: string): Float64Array {
  const values: number[] = [];
  for (const file of readdirSync(dir)) {
    const text = readFileSync(join(dir, file), 'utf8');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end === -1) end = text.length;
      const line = text.slice(start, end);
      start = end + 1;
      const parts = line.split(' ');
      const latency = Number(parts[2]);
      if (parts.length >= 6 && Number.isFinite(latency)) values.push(latency);
    }
  }
  return Float64Array.from(values).sort();
}

export function runPgbench(host: string, port: number, spec: PgbenchSpec): Promise<RunOutcome> {
  const logDir = tempDir('pgbench-log');
  const args = [
    '-h', host, '-p', String(port), '-U', 'postgres',
    '-n', // no VACUUM before the run: it goes through the proxy and is not what is measured
    '-c', String(spec.clients),
    '-j', String(Math.min(2, spec.clients)),
    '-t', String(Math.max(1, Math.ceil(spec.transactions / spec.clients))),
    '-M', spec.protocol,
    ...(spec.script === 'select' ? ['-S'] : []),
    ...(spec.connectPerTransaction ? ['-C'] : []),
    '-l', `--log-prefix=${join(logDir, 'tx')}`,
    'postgres',
  ];
  // A hung or very slow target must not hang the suite.
  const timeoutMs = 120_000;
  return new Promise((resolve) => {
    execFile('pgbench', args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, PGCONNECT_TIMEOUT: '20' } }, (err, stdout, stderr) => {
      const outcome: RunOutcome = {};
      const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout) ?? /tps = ([\d.]+)/.exec(stdout);
      const processed = /number of transactions actually processed: (\d+)/.exec(stdout);
      if (tps) outcome.rate = Number(tps[1]);
      if (processed) outcome.count = Number(processed[1]);
      try {
        const latencies = readLatenciesUs(logDir);
        if (latencies.length > 0) {
          outcome.p50Ms = (percentileSorted(latencies, 50) ?? 0) / 1000;
          outcome.p99Ms = (percentileSorted(latencies, 99) ?? 0) / 1000;
        }
      } catch {
        // No log files: the run never got a transaction through.
      }
      rmSync(logDir, { recursive: true, force: true });
      const killed = err && (err as NodeJS.ErrnoException & { killed?: boolean }).killed;
      if (killed) outcome.error = `timed out after ${timeoutMs / 1000}s`;
      else if (err || /aborted/i.test(stdout + stderr)) outcome.error = firstErrorLine(stderr || stdout);
      if (!outcome.error && !outcome.count) outcome.error = 'no transaction completed';
      if (outcome.error) outcome.rate = undefined;
      resolve(outcome);
    });
  });
}
