// The sluice process: starts the listeners and the HTTP endpoints, and owns the lifecycle:
// SIGTERM drains (readiness off at once, optional shutdown_delay, then clients finish and leave,
// bounded by shutdown_timeout), SIGHUP or a config-file change reloads without dropping clients.
import { watch, type FSWatcher } from 'node:fs';
import type { Server } from 'node:http';
import { basename, dirname } from 'node:path';
import { type ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { createHttpServer, statusDocument } from '../metrics/http-server.js';
import { Metrics } from '../metrics/metrics.js';
import type { AdminContext } from './admin/admin-console.js';
import { bindServer, type Listener } from './listener.js';
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
        if (key === 'password' || key === 'users') continue;
        walk(value, path === '' ? key : `${path}.${key}`);
      }
    } else out.push([path, String(node)]);
  };
  walk(config, '');
  return out;
}

export type Phase = 'starting' | 'running' | 'delaying' | 'draining' | 'stopped';

export interface SluiceOptions {
  config: Config;
  log: Logger;
  /** The file to re-read on SIGHUP and to watch; absent when running on the embedded default. */
  configPath?: string;
  /** The package version, for SHOW VERSION. */
  version?: string;
  /** Called once the process should end, with its exit code. */
  exit(code: number): void;
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
  private reloadTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: SluiceOptions) {
    this.config = options.config;
    this.log = options.log;
    this.metrics.addSource(() => this.listeners.map((l) => l.snapshot()));
  }

  async start(): Promise<void> {
    const admin: AdminContext = {
      version: this.options.version ?? '0.0.0',
      listeners: () => this.listeners,
      reload: () => this.reload('admin RELOAD'),
      configRows: () => configRows(this.config),
    };
    const deps = { log: this.log, metrics: this.metrics, admin };
    this.listeners = [
      ...this.config.postgres.map((c) => createPostgresListener(c, deps)),
      ...this.config.redis.map((c) => createRedisListener(c, deps)),
    ];
    this.http = createHttpServer({
      metrics: this.metrics,
      readiness: () => this.readiness(),
      status: () => statusDocument(this.metrics.snapshots()),
    });
    // Listeners bind before the HTTP side, so a startup probe that sees /healthz answer knows
    // the proxy ports accept connections too.
    for (const listener of this.listeners) {
      await listener.start();
      const snap = listener.snapshot();
      this.log.info({ protocol: snap.protocol, pool: snap.name, listen: snap.listen, upstream: snap.upstream }, `${snap.protocol} listening on ${snap.listen}, forwarding to ${snap.upstream}`);
    }
    await bindServer(this.http as unknown as import('node:net').Server, this.config.metrics.listen);
    this.log.info({ listen: this.config.metrics.listen }, 'metrics listening: GET /metrics /healthz /readyz /status');
    await this.probe.start();
    this.phase = 'running';
    this.watchConfig();
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
      this.log.warn({ signal }, 'second signal: closing everything now');
      this.finish();
      return;
    }
    this.shutdown(signal);
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
    const path = this.options.configPath;
    if (!path) {
      this.log.warn({ trigger }, 'reload asked, but sluice runs on the embedded default config: nothing to re-read');
      return false;
    }
    let next: Config;
    try {
      next = loadConfigFile(path);
    } catch (err) {
      this.metrics.configReloaded('failure');
      this.log.error({ trigger, path, problems: (err as ConfigError).problems ?? [String(err)] }, 'config reload rejected: keeping the running config');
      return false;
    }
    const needsRestart: string[] = [];
    if (next.metrics.listen !== this.config.metrics.listen) needsRestart.push('metrics.listen');
    for (const kind of ['postgres', 'redis'] as const) {
      const before = new Map<string, { listen: string }>(this.config[kind].map((c) => [c.name, c]));
      const after = new Map<string, { listen: string }>(next[kind].map((c) => [c.name, c]));
      next[kind].forEach((c, i) => {
        const old = before.get(c.name);
        if (!old) needsRestart.push(`${kind}[${i}] (new listener ${c.name})`);
        else if (old.listen !== c.listen) needsRestart.push(`${kind}[${i}].listen`);
      });
      for (const name of before.keys()) if (!after.has(name)) needsRestart.push(`${kind} listener ${name} (removed)`);
      for (const listener of this.listeners.filter((l) => l.protocol === kind)) {
        const fresh = next[kind].find((c) => c.name === listener.name);
        // A changed listen address is already reported above, by its path in the file.
        const extra = fresh ? listener.reload(fresh).needsRestart.filter((k) => k !== 'listen') : [];
        needsRestart.push(...extra.map((k) => `${kind} ${listener.name}: ${k}`));
      }
    }
    this.config = { ...next, metrics: this.config.metrics };
    this.metrics.configReloaded('success');
    // Logged before the new level applies, so a reload that quiets the log is still recorded.
    if (needsRestart.length > 0) this.log.warn({ trigger, needs_restart: needsRestart }, 'config reloaded; these changes need a restart and were not applied');
    else this.log.info({ trigger, log_level: next.log.level }, 'config reloaded');
    this.log.level = next.log.level;
    return true;
  }

  /**
   * Watches the config file's directory, not the file: a Kubernetes ConfigMap update swaps a
   * `..data` symlink, so the file's own inode never changes. Events are debounced.
   */
  private watchConfig(): void {
    const path = this.options.configPath;
    if (!path) return;
    try {
      this.watcher = watch(dirname(path), { persistent: false }, (_event, file) => {
        if (file !== null && file !== basename(path) && !String(file).startsWith('..')) return;
        clearTimeout(this.reloadTimer);
        this.reloadTimer = setTimeout(() => this.reload('file change'), 200);
        this.reloadTimer.unref();
      });
    } catch (err) {
      this.log.warn({ path, err: (err as Error).message }, 'cannot watch the config directory; reload with SIGHUP');
    }
  }
}
