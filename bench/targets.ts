// The processes a benchmark talks to: the throwaway servers, the pipe() floor, the anchors
// (PgBouncer, twemproxy) and sluice. Each target is an address plus the PIDs whose CPU and
// memory count against it; every process started here is stopped by its PID.
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgres, type PostgresServer } from '../test/harness/postgres-server.js';
import { startRedis, type RedisServer } from '../test/harness/redis-server.js';
import { asPostgresUser, chownToPostgres, findBinary, freePort, GiveUp, tempDir, waitFor } from '../test/harness/tools.js';

export type TargetRole = 'direct' | 'floor' | 'anchor' | 'sluice';

export interface Target {
  /** Row label in the results, e.g. "pgbouncer". */
  name: string;
  role: TargetRole;
  host: string;
  port: number;
  /** Processes whose CPU and RSS are charged to this target (none for direct). */
  pids: number[];
  /** Set when the target could not be started: the reason goes in the results instead of numbers. */
  skipped?: string;
  /** Why the target is no longer usable (it exited mid-suite), checked before and after each run. */
  failure(): string | undefined;
  /** Set for Node targets started with COLLECTABLE_NODE_ARGS: a full garbage collection in each process. */
  collect?: () => Promise<void>;
  stop(): Promise<void>;
}

/**
 * The flags the Dockerfile's entrypoint (and `npm start`, and the `sluice` command's shebang)
 * runs sluice with; the bench runs it the same way. `--max-semi-space-size=2` caps V8's young
 * generation at 2 MiB per semi-space instead of growing it to 16: every page of it that
 * allocation has touched stays resident, which measured ~28 MiB of RSS on a proxy with
 * thousands of clients, for about 1% more CPU at 500 clients (bench/README.md, "Idle memory").
 */
export const SLUICE_NODE_FLAGS = ['--max-semi-space-size=2'];

const COLLECT_ON_SIGNAL_JS = new URL('./collect-on-signal.js', import.meta.url).href;

/** Node flags that let the bench ask a Node target for a full garbage collection (Target.collect). */
export const COLLECTABLE_NODE_ARGS = ['--expose-gc', '--import', COLLECT_ON_SIGNAL_JS];

/** Signals every process of a target started with COLLECTABLE_NODE_ARGS and gives them time to collect. */
async function collectIn(pids: number[]): Promise<void> {
  for (const pid of pids) process.kill(pid, 'SIGUSR2');
  // A full collection of a ~50 MiB heap takes tens of milliseconds; the wait is generous.
  await new Promise((resolve) => setTimeout(resolve, 1000));
}

/** Descriptors beyond the default 20 000 are needed for 10 000 idle clients through a relay (2 fds each). */
export const FD_LIMIT = 65_536;

/** The open-file limit children actually get (containers without CAP_SYS_RESOURCE cannot raise it). */
export function fdLimit(pid: number | 'self' = 'self'): number {
  try {
    const match = /^Max open files\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return match ? Number(match[1]) : 1024;
  } catch {
    return 1024;
  }
}

/** Raises a process's open-file limit; root may raise the hard limit too. Best effort. */
export function raiseFdLimit(pid: number): string | undefined {
  try {
    execFileSync('prlimit', [`--nofile=${FD_LIMIT}:${FD_LIMIT}`, `--pid=${pid}`], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `prlimit failed: ${(err as Error).message.split('\n')[0]}`;
  }
}

export function skippedTarget(name: string, role: TargetRole, reason: string): Target {
  return { name, role, host: '', port: 0, pids: [], skipped: reason, failure: () => reason, stop: async () => {} };
}

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/**
 * A long-running child we own: spawned, fd limit raised, watched for early exit,
 * stopped with SIGTERM (then SIGKILL) by PID.
 */
class OwnedProcess {
  readonly child: ChildProcess;
  private stderrTail = '';
  private exitNote: string | undefined;
  readonly exited: Promise<void>;

  constructor(
    readonly label: string,
    command: string,
    args: string[],
    options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
  ) {
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd ?? '/', env: options.env ?? process.env });
    this.child.stdout?.on('data', () => {});
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString()).slice(-2000);
    });
    this.exited = new Promise((resolve) =>
      this.child.once('exit', (code, signal) => {
        this.exitNote = `${label} exited (${signal ?? `code ${code}`})${this.stderrTail ? `: ${lastLine(this.stderrTail)}` : ''}`;
        resolve();
      }),
    );
    if (this.child.pid) raiseFdLimit(this.child.pid);
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  failure(): string | undefined {
    return this.exitNote;
  }

  stderr(): string {
    return this.stderrTail;
  }

  async waitListening(port: number, extra?: () => Promise<boolean>): Promise<void> {
    await waitFor(`${this.label} on port ${port}`, async () => {
      if (this.exitNote) throw new GiveUp(this.exitNote);
      return (await tcpAccepts(port)) && (extra ? await extra() : true);
    });
  }

  async stop(): Promise<void> {
    if (this.exitNote || !this.child.pid) return;
    process.kill(this.child.pid, 'SIGTERM');
    const timer = setTimeout(() => {
      if (!this.exitNote && this.child.pid) process.kill(this.child.pid, 'SIGKILL');
    }, 5000);
    await this.exited;
    clearTimeout(timer);
  }
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return (lines[lines.length - 1] ?? '').slice(0, 300);
}

function asTarget(name: string, role: TargetRole, port: number, proc: OwnedProcess, onStop?: () => void): Target {
  return {
    name,
    role,
    host: '127.0.0.1',
    port,
    pids: [proc.pid],
    failure: () => proc.failure(),
    stop: async () => {
      await proc.stop();
      onStop?.();
    },
  };
}

/** Starts a target, turning a start failure into a skipped target with the reason. */
export async function startOrSkip(name: string, role: TargetRole, start: () => Promise<Target>): Promise<Target> {
  try {
    return await start();
  } catch (first) {
    // One retry: dist/ is shared with engineers rebuilding it, and a start during their tsc
    // run can load a half-written file.
    await new Promise((r) => setTimeout(r, 3000));
    try {
      return await start();
    } catch (err) {
      const reason = (err as Error).message.split('\n')[0].slice(0, 300);
      const firstReason = (first as Error).message.split('\n')[0].slice(0, 300);
      return skippedTarget(name, role, reason === firstReason ? reason : `${reason} (first attempt: ${firstReason})`);
    }
  }
}

// --- the servers ---

export interface BenchPostgres {
  server: PostgresServer;
  direct: Target;
  version: string;
}

/** Throwaway Postgres with a scale-10 pgbench database; fsync is off here only (the harness sets it). */
export async function startBenchPostgres(scale: number): Promise<BenchPostgres> {
  const server = await startPostgres({
    maxConnections: 600,
    conf: ['shared_buffers = 256MB', 'max_wal_size = 4GB', 'checkpoint_timeout = 30min', 'log_min_messages = fatal'],
  });
  try {
    execFileSync('pgbench', ['-i', '-q', '-s', String(scale), '-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres', 'postgres'], { stdio: 'pipe' });
    // Separate statements: psql -c with several runs them in one transaction, which VACUUM refuses.
    await server.psql('VACUUM ANALYZE');
    await server.psql('CHECKPOINT');
  } catch (err) {
    await server.destroy();
    throw err;
  }
  const version = await server.psql('SHOW server_version');
  return {
    server,
    version,
    direct: { name: 'direct', role: 'direct', host: '127.0.0.1', port: server.port, pids: [], failure: () => undefined, stop: async () => {} },
  };
}

export interface BenchRedis {
  server: RedisServer;
  direct: Target;
}

export async function startBenchRedis(): Promise<BenchRedis> {
  const server = await startRedis({ args: ['--maxclients', '30000', '--protected-mode', 'no'] });
  raiseFdLimit(server.pid);
  return {
    server,
    // Direct Redis is charged its own PID so idle-client memory has a server-side reference row.
    direct: { name: 'direct', role: 'direct', host: '127.0.0.1', port: server.port, pids: [server.pid], failure: () => undefined, stop: async () => {} },
  };
}

// --- the floor ---

const PIPE_RELAY_JS = fileURLToPath(new URL('./pipe-relay.js', import.meta.url));

export async function startPipeRelay(upstreamPort: number, nodeArgs: string[] = []): Promise<Target> {
  const port = await freePort();
  const proc = new OwnedProcess('pipe-relay', process.execPath, [...nodeArgs, PIPE_RELAY_JS, String(port), `127.0.0.1:${upstreamPort}`]);
  await proc.waitListening(port);
  const target = asTarget('pipe-relay', 'floor', port, proc);
  if (nodeArgs.includes('--expose-gc')) target.collect = () => collectIn(target.pids);
  return target;
}

// --- the anchors ---

/** PgBouncer in transaction mode with the same pool size as sluice; trust auth on both sides (as sluice is configured). */
export async function startPgBouncer(upstreamPort: number, poolSize: number): Promise<Target> {
  const binary = findBinary('pgbouncer', ['/usr/sbin'], 'apt-get install pgbouncer');
  const dir = tempDir('pgbouncer');
  const port = await freePort();
  writeFileSync(join(dir, 'userlist.txt'), '"postgres" ""\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      `* = host=127.0.0.1 port=${upstreamPort}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      "unix_socket_dir = ''",
      'auth_type = trust',
      `auth_file = ${join(dir, 'userlist.txt')}`,
      'pool_mode = transaction',
      `default_pool_size = ${poolSize}`,
      'min_pool_size = 0',
      'reserve_pool_size = 0',
      'max_client_conn = 30000',
      'listen_backlog = 4096',
      // Per-connection log lines would tax PgBouncer on the churn workload; sluice logs at warn.
      'log_connections = 0',
      'log_disconnections = 0',
      'log_pooler_errors = 1',
      'ignore_startup_parameters = extra_float_digits',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      '',
    ].join('\n'),
  );
  chownToPostgres(dir);
  const [cmd, args] = asPostgresUser(binary, [join(dir, 'pgbouncer.ini')]);
  const proc = new OwnedProcess('pgbouncer', cmd, args);
  await proc.waitListening(port);
  return asTarget('pgbouncer', 'anchor', port, proc);
}

/** twemproxy with server_connections equal to sluice's Redis pool size, one server, no ejection. */
export async function startTwemproxy(upstreamPort: number, serverConnections: number): Promise<Target> {
  const binary = findBinary('nutcracker', ['/usr/sbin'], 'apt-get install nutcracker');
  const dir = tempDir('twemproxy');
  const port = await freePort();
  const statsPort = await freePort();
  const conf = join(dir, 'nutcracker.yml');
  writeFileSync(
    conf,
    [
      'bench:',
      `  listen: 127.0.0.1:${port}`,
      '  hash: fnv1a_64',
      '  distribution: ketama',
      '  redis: true',
      '  auto_eject_hosts: false',
      '  preconnect: true',
      '  backlog: 4096',
      `  server_connections: ${serverConnections}`,
      '  servers:',
      `    - 127.0.0.1:${upstreamPort}:1`,
      '',
    ].join('\n'),
  );
  const proc = new OwnedProcess('nutcracker', binary, ['-c', conf, '-s', String(statsPort), '-a', '127.0.0.1', '-o', join(dir, 'nutcracker.log'), '-v', '4']);
  await proc.waitListening(port);
  return asTarget('twemproxy', 'anchor', port, proc);
}

// --- sluice ---

export const SLUICE_MAIN_JS = fileURLToPath(new URL('../proxy/main.js', import.meta.url));

export interface SluiceOptions {
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR']. */
  nodeArgs?: string[];
  /** The `workers` setting; above 1 the target is named sluice-wN and charged for the primary and every worker. */
  workers?: number;
}

/** The cluster workers of a sluice primary, from /proc (Linux: task/PID/children). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function startSluiceWith(label: string, listenerYaml: (port: number) => string, options: SluiceOptions): Promise<Target> {
  if (!existsSync(SLUICE_MAIN_JS)) throw new Error(`${SLUICE_MAIN_JS} missing: run npm run build first`);
  const dir = tempDir('bench-sluice');
  const port = await freePort();
  const metricsPort = await freePort();
  const configPath = join(dir, 'sluice.yaml');
  const workers = options.workers ?? 1;
  writeFileSync(
    configPath,
    [`metrics: { listen: "127.0.0.1:${metricsPort}" }`, 'log: { level: warn }', 'shutdown_timeout: 2s', `workers: ${workers}`, listenerYaml(port), ''].join('\n'),
  );
  const proc = new OwnedProcess(label, process.execPath, [...SLUICE_NODE_FLAGS, ...(options.nodeArgs ?? []), SLUICE_MAIN_JS, '--config', configPath], { cwd: dir });
  await proc.waitListening(port, async () => {
    try {
      return (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).status === 200;
    } catch {
      return false;
    }
  });
  const name = workers > 1 ? `sluice-w${workers}` : 'sluice';
  const target = asTarget(name, 'sluice', port, proc);
  // /healthz answers once every worker listens, so all of them are forked by now.
  if (workers > 1) target.pids = [proc.pid, ...childPids(proc.pid)];
  if (options.nodeArgs?.includes('--expose-gc')) target.collect = () => collectIn(target.pids);
  return target;
}

/** sluice with one Postgres listener: transaction pooling, trust auth (as PgBouncer here). */
export function startSluicePostgres(upstreamPort: number, poolSize: number, options: SluiceOptions = {}): Promise<Target> {
  return startSluiceWith(
    'sluice (postgres)',
    (port) =>
      [
        'postgres:',
        '  - name: bench',
        `    listen: "127.0.0.1:${port}"`,
        `    server: { host: 127.0.0.1, port: ${upstreamPort} }`,
        '    pool_mode: transaction',
        `    pool_size: ${poolSize}`,
        '    max_client_connections: 30000',
        '    auth_method: trust',
      ].join('\n'),
    options,
  );
}

/** sluice with one Redis listener whose shared pool matches twemproxy's server_connections. */
export function startSluiceRedis(upstreamPort: number, poolSize: number, options: SluiceOptions = {}): Promise<Target> {
  return startSluiceWith(
    'sluice (redis)',
    (port) =>
      [
        'redis:',
        '  - name: bench',
        `    listen: "127.0.0.1:${port}"`,
        `    server: { host: 127.0.0.1, port: ${upstreamPort} }`,
        `    pool_size: ${poolSize}`,
        '    max_client_connections: 30000',
      ].join('\n'),
    options,
  );
}

/** A tool's version from its --version output; nutcracker prints it on stderr. */
export function commandVersion(command: string, args: string[], pattern: RegExp): string {
  const result = spawnSync(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (result.error) return `not available (${result.error.message.slice(0, 80)})`;
  const out = `${result.stdout}${result.stderr}`;
  return pattern.exec(out)?.[1] ?? out.split('\n')[0].trim();
}
