// The sluice process: starts the listeners and the HTTP endpoints, and owns the lifecycle:
// SIGTERM drains (readiness off at once, optional shutdown_delay, then clients finish and leave,
// bounded by shutdown_timeout), SIGHUP or a config-file change reloads without dropping clients.
// With `workers` > 1 each worker runs one of these without the HTTP side or the config watch,
// which the cluster primary (proxy/cluster/primary.ts) owns.
import { watch, type FSWatcher } from 'node:fs';
import type { Server } from 'node:http';
import { basename, dirname } from 'node:path';
import { type ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createHttpServer, statusDocument } from '../metrics/http-server.js';
import { Metrics } from '../metrics/metrics.js';
import type { AdminContext } from './admin/admin-console.js';
import { readReloadedConfig, recordReload } from './config-reload.js';
import { bindServer, type Listener, type WorkerSeat } from './listener.js';
import type { Logger } from './log.js';
import { UpstreamProbe } from './upstream-probe.js';
import { createPostgresListener } from './postgres/postgres-listener.js';
import { createRedisListener } from './redis/redis-listener.js';

/** SHOW CONFIG: flattened `key = value` rows of the running config, with every secret left out. */
export function configRows(config: Config): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const walk = (node: unknown, path: string) => {
    if (Array.isArray(node)) node.forEach((item, i) => {
      walk(item, `${path}[${i}]`);
    });
    else if (node !== null && typeof node === 'object') {
      for (const [key, value] of Object.entries(node)) {
        if (key === 'password' || key === 'users' || key === 'status_token') continue;
        walk(value, path === '' ? key : `${path}.${key}`);
      }
    } else out.push([path, String(node)]);
  };
  walk(config, '');
  return out;
}

export type Phase = 'starting' | 'running' | 'delaying' | 'draining' | 'stopped';

/**
 * Config changes a running process cannot apply, by their path in the file: listen addresses,
 * added or removed listeners, the worker count. Listeners apply everything else themselves.
 */
export function restartNeeded(before: Config, after: Config): string[] {
  const out: string[] = [];
  if (after.metrics.listen !== before.metrics.listen) out.push('metrics.listen');
  if (after.workers !== before.workers) out.push('workers');
  for (const kind of ['postgres', 'redis'] as const) {
    const old = new Map<string, { listen: string }>(before[kind].map((c) => [c.name, c]));
    const next = new Set(after[kind].map((c) => c.name));
    after[kind].forEach((c, i) => {
      const was = old.get(c.name);
      if (!was) out.push(`${kind}[${i}] (new listener ${c.name})`);
      else if (was.listen !== c.listen) out.push(`${kind}[${i}].listen`);
    });
    for (const name of old.keys()) if (!next.has(name)) out.push(`${kind} listener ${name} (removed)`);
  }
  return out;
}

export interface SluiceOptions {
  config: Config;
  log: Logger;
  /** The file to re-read on SIGHUP and to watch; absent when running on the embedded default. */
  configPath?: string;
  /** The package version, for SHOW VERSION. */
  version?: string;
  /** Called once the process should end, with its exit code. */
  exit(code: number): void;
  /** Set in a cluster worker: no HTTP side and no config watch here; the primary has them. */
  worker?: WorkerSeat;
}

const DRAIN_POLL_MS = 50;

export class Sluice {
  phase: Phase = 'starting';
  readonly metrics = new Metrics();
  private listeners: Listener[] = [];
  private http: Server | undefined;
  private config: Config;
  private readonly log: Logger;
  private watcher: FSWatcher | undefined;
  private readonly probe = new UpstreamProbe(() => this.listeners.map((l) => l.snapshot().upstream));

  constructor(private readonly options: SluiceOptions) {
    this.config = options.config;
    this.log = options.log;
    this.metrics.addSource(() => this.listeners.map((l) => l.snapshot()));
  }

  async start(): Promise<void> {
    const admin: AdminContext = {
      version: this.options.version ?? '0.0.0',
      listeners: () => this.listeners,
      reload: () => (this.options.worker ? this.askPrimaryToReload('admin RELOAD') : this.reload('admin RELOAD')),
      configRows: () => configRows(this.config),
    };
    const deps = { log: this.log, metrics: this.metrics, admin, worker: this.options.worker };
    this.listeners = [
      ...this.config.postgres.map((c) => createPostgresListener(c, deps)),
      ...this.config.redis.map((c) => createRedisListener(c, deps)),
    ];
    // Listeners bind before the HTTP side, so a startup probe that sees /healthz answer knows
    // the proxy ports accept connections too.
    for (const listener of this.listeners) {
      await listener.start();
      const snap = listener.snapshot();
      this.log.info({ protocol: snap.protocol, pool: snap.name, listen: snap.listen, upstream: snap.upstream }, `${snap.protocol} listening on ${snap.listen}, forwarding to ${snap.upstream}`);
    }
    if (!this.options.worker) {
      this.http = createHttpServer({
        metrics: this.metrics,
        readiness: () => this.readiness(),
        status: () => statusDocument(this.metrics.snapshots()),
        statusAccess: { mode: this.config.metrics.status_access, token: this.config.metrics.status_token },
      });
      await bindServer(this.http as unknown as import('node:net').Server, this.config.metrics.listen);
      this.log.info({ listen: this.config.metrics.listen }, 'metrics listening: GET /metrics /healthz /readyz /status');
    }
    await this.probe.start();
    this.phase = 'running';
    if (!this.options.worker) this.watcher = watchConfigFile(this.options.configPath, this.log, (trigger) => this.reload(trigger));
  }

  readiness(): { ready: boolean; reason?: string } {
    if (this.phase !== 'running') return { ready: false, reason: `sluice is ${this.phase}` };
    for (const listener of this.listeners) {
      const snap = listener.snapshot();
      if (!snap.accepting) return { ready: false, reason: `${snap.protocol} listener ${snap.name} is not accepting` };
      const probe = this.probe.result(snap.upstream);
      if (probe && !probe.reachable) return { ready: false, reason: `${snap.protocol} upstream ${snap.upstream} of ${snap.name} is unreachable (${probe.reason})` };
    }
    return { ready: true };
  }

  /** First SIGTERM: drain. Any signal after that: exit now. */
  onSignal(signal: NodeJS.Signals): void {
    if (signal === 'SIGHUP') {
      this.reload('SIGHUP');
      return;
    }
    if (this.phase === 'delaying' || this.phase === 'draining') {
      this.stopNow(signal);
      return;
    }
    this.shutdown(signal);
  }

  /** Closes everything at once: a second signal, or (in a worker) the primary said so or went away. */
  stopNow(why: string): void {
    if (this.phase === 'stopped') return;
    this.log.warn({ signal: why }, 'second signal: closing everything now');
    this.finish();
  }

  shutdown(why: string): void {
    if (this.phase !== 'running' && this.phase !== 'starting') return;
    const { shutdown_delay: delayMs, shutdown_timeout: timeoutMs } = this.config;
    this.log.info({ why, shutdown_delay_ms: delayMs, shutdown_timeout_ms: timeoutMs }, 'shutting down: readiness off');
    this.phase = 'delaying';
    this.watcher?.close();
    const deadline = setTimeout(() => {
      this.log.warn({ clients: this.clientCount() }, 'shutdown_timeout passed: closing the remaining clients');
      this.finish();
    }, delayMs + timeoutMs);
    deadline.unref();
    setTimeout(() => {
      if (this.phase !== 'delaying') return;
      this.phase = 'draining';
      for (const listener of this.listeners) listener.drain();
      const poll = setInterval(() => {
        if (this.phase !== 'draining') {
          clearInterval(poll);
          return;
        }
        if (this.clientCount() === 0) {
          clearInterval(poll);
          clearTimeout(deadline);
          this.log.info('drained: every client has left');
          this.finish();
        }
      }, DRAIN_POLL_MS);
    }, delayMs);
  }

  private clientCount(): number {
    return this.listeners.reduce((sum, l) => sum + l.clientCount(), 0);
  }

  private finish(): void {
    if (this.phase === 'stopped') return;
    this.phase = 'stopped';
    this.watcher?.close();
    this.probe.stop();
    for (const listener of this.listeners) listener.close();
    // Give polite Terminate/QUIT writes a moment to leave, then close the HTTP side and exit.
    setTimeout(() => {
      this.http?.close();
      this.http?.closeAllConnections();
      this.log.info('stopped');
      this.log.flush(() => this.options.exit(0));
    }, 20);
  }

  /** Re-reads the config file; an invalid one is rejected whole and the old one keeps running. */
  reload(trigger: string): boolean {
    const next = readReloadedConfig(this.options.configPath, trigger, this.log, this.metrics);
    if (!next) return false;
    const needsRestart = [...restartNeeded(this.config, next), ...this.applyConfig(next)];
    recordReload(next, trigger, needsRestart, this.log, this.metrics);
    return true;
  }

  /**
   * Hands a checked config to the listeners (what a worker does with the config the primary
   * re-read); returns what they could not apply beyond restartNeeded()'s list.
   */
  applyConfig(next: Config): string[] {
    const needsRestart: string[] = [];
    for (const kind of ['postgres', 'redis'] as const) {
      for (const listener of this.listeners.filter((l) => l.protocol === kind)) {
        const fresh = next[kind].find((c) => c.name === listener.name);
        // A changed listen address is reported by restartNeeded(), by its path in the file.
        const extra = fresh ? listener.reload(fresh).needsRestart.filter((k) => k !== 'listen') : [];
        needsRestart.push(...extra.map((k) => `${kind} ${listener.name}: ${k}`));
      }
    }
    this.config = { ...next, metrics: this.config.metrics, workers: this.config.workers };
    if (this.options.worker) this.log.level = next.log.level;
    return needsRestart;
  }

  /** A worker's admin RELOAD: checked here so the console can answer, applied by the primary to every worker. */
  private askPrimaryToReload(trigger: string): boolean {
    const path = this.options.configPath;
    if (!path) return false;
    try {
      loadConfigFile(path);
    } catch (err) {
      this.log.error({ trigger, path, problems: (err as ConfigError).problems ?? [String(err)] }, 'config reload rejected: keeping the running config');
      return false;
    }
    this.options.worker?.requestReload(trigger);
    return true;
  }
}

/**
 * Watches the config file's directory, not the file: a Kubernetes ConfigMap update swaps a
 * `..data` symlink, so the file's own inode never changes. Events are debounced.
 */
export function watchConfigFile(path: string | undefined, log: Logger, reload: (trigger: string) => void): FSWatcher | undefined {
  if (!path) return undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    return watch(dirname(path), { persistent: false }, (_event, file) => {
      if (file !== null && file !== basename(path) && !String(file).startsWith('..')) return;
      clearTimeout(timer);
      timer = setTimeout(() => reload('file change'), 200);
      timer.unref();
    });
  } catch (err) {
    log.warn({ path, err: (err as Error).message }, 'cannot watch the config directory; reload with SIGHUP');
    return undefined;
  }
}
