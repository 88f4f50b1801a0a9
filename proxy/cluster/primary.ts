// The cluster primary of `workers` > 1: forks N workers (node:cluster; the primary accepts on
// each listen address and hands connections to the workers round-robin), proxies nothing
// itself, and owns what is one per pod: signals, the config file, and the HTTP side, whose
// answers it gathers from every worker. A worker that dies while running is forked again in its
// slot, with backoff; its slot index, and so its share of each pool and its cancel keys, stay.
//
//   slot states:  starting ──▶ running ──▶ restarting ──▶ starting …
//                     └──────────┴──────────────┴──────▶ exited   (drain, force, startup failure)
import cluster, { type Worker } from 'node:cluster';
import type { FSWatcher } from 'node:fs';
import type { Server } from 'node:http';
import type { Server as NetServer } from 'node:net';
import { workerBudgetProblems } from '../../config/load.js';
import type { Config } from '../../config/schema.js';
import { aggregateMetrics, mergeSnapshots } from '../../metrics/cluster-aggregate.js';
import { createHttpServer, type Readiness, statusDocument } from '../../metrics/http-server.js';
import { Metrics, type MetricsJson } from '../../metrics/metrics.js';
import { readReloadedConfig, recordReload } from '../config-reload.js';
import { bindServer, type ListenerSnapshot } from '../listener.js';
import type { Logger } from '../log.js';
import { type Phase, restartNeeded, watchConfigFile } from '../sluice.js';
import { isMessage, type Question, type ToPrimary, type ToWorker, WORKER_INDEX_ENV } from './messages.js';

type SlotState = 'starting' | 'running' | 'restarting' | 'exited';

interface Slot {
  readonly index: number;
  state: SlotState;
  worker: Worker | undefined;
  startedAtMs: number;
  /** Deaths in a row, each within STABLE_MS of its start; sets the restart backoff. */
  failures: number;
  restartTimer: NodeJS.Timeout | undefined;
}

export interface PrimaryOptions {
  config: Config;
  log: Logger;
  configPath?: string;
  version: string;
  exit(code: number): void;
}

/** A worker that ran this long before dying restarts after the shortest backoff again. */
const STABLE_MS = 30_000;
const RESTART_BACKOFF_MS = { first: 100, max: 10_000 };
/** How long the HTTP side waits for a worker's answer before reporting it as unanswered. */
const ASK_TIMEOUT_MS = 2000;
/** Past shutdown_delay + shutdown_timeout, workers get this long to exit before SIGKILL. */
const KILL_GRACE_MS = 5000;

/** Thrown by start() when a worker could not start; `code` is the worker's error code. */
export class WorkerStartError extends Error {
  override name = 'WorkerStartError';
  constructor(
    message: string,
    readonly code: string | undefined,
  ) {
    super(message);
  }
}

export class ClusterPrimary {
  phase: Phase = 'starting';
  /** The primary's own metrics (config reloads, its process); summed with the workers' on scrape. */
  readonly metrics = new Metrics();
  private readonly slots: Slot[];
  private config: Config;
  private readonly log: Logger;
  private http: Server | undefined;
  private watcher: FSWatcher | undefined;
  private nextRequest = 1;
  private readonly pending = new Map<number, (body: unknown) => void>();

  constructor(private readonly options: PrimaryOptions) {
    this.config = options.config;
    this.log = options.log;
    this.slots = Array.from({ length: options.config.workers }, (_, index) => ({
      index,
      state: 'starting' as SlotState,
      worker: undefined,
      startedAtMs: 0,
      failures: 0,
      restartTimer: undefined,
    }));
  }

  /** Forks every worker and waits until each listens; then binds the HTTP side. */
  async start(): Promise<void> {
    // The workers run this same file (proxy/main.js); the env variable makes them workers.
    cluster.setupPrimary({ exec: process.argv[1], args: [], silent: false });
    try {
      await Promise.all(this.slots.map((slot) => this.fork(slot)));
      this.http = createHttpServer({
        metrics: { render: () => this.renderMetrics(), contentType: this.metrics.contentType },
        readiness: () => this.readiness(),
        status: () => this.status(),
        statusAccess: { mode: this.config.metrics.status_access, token: this.config.metrics.status_token },
      });
      await bindServer(this.http as unknown as NetServer, this.config.metrics.listen);
    } catch (err) {
      for (const slot of this.slots) {
        this.move(slot, 'exited');
        slot.worker?.process.kill('SIGKILL');
      }
      throw err;
    }
    this.log.info({ listen: this.config.metrics.listen, workers: this.slots.length }, 'metrics listening: GET /metrics /healthz /readyz /status (summed over the workers)');
    this.phase = 'running';
    this.watcher = watchConfigFile(this.options.configPath, this.log, (trigger) => this.reload(trigger));
  }

  private move(slot: Slot, to: SlotState): void {
    if (slot.state === to) return;
    this.log.debug({ worker: slot.index, pid: slot.worker?.process.pid }, `worker ${slot.index}: ${slot.state} -> ${to}`);
    slot.state = to;
  }

  /** Forks the worker of a slot; resolves once it listens, rejects if it cannot start. */
  private fork(slot: Slot): Promise<void> {
    const worker = cluster.fork({ [WORKER_INDEX_ENV]: String(slot.index) });
    slot.worker = worker;
    slot.startedAtMs = Date.now();
    this.move(slot, 'starting');
    return new Promise((resolve, reject) => {
      let settled = false;
      worker.on('message', (raw: unknown) => {
        if (!isMessage<ToPrimary>(raw)) return;
        if (raw.type === 'hello') {
          this.send(worker, { type: 'start', index: slot.index, count: this.slots.length, config: this.config, configPath: this.options.configPath, version: this.options.version });
        } else if (raw.type === 'started') {
          settled = true;
          this.move(slot, 'running');
          this.log.info({ worker: slot.index, pid: worker.process.pid }, `worker ${slot.index} running`);
          resolve();
          // Forked while a drain began: it drains too.
          if (this.phase !== 'running' && this.phase !== 'starting') this.send(worker, { type: 'shutdown', why: 'draining' });
        } else if (raw.type === 'start-failed') {
          settled = true;
          reject(new WorkerStartError(raw.message, raw.code));
        } else {
          this.onMessage(raw);
        }
      });
      worker.on('exit', (code, signal) => {
        if (!settled) {
          settled = true;
          reject(new WorkerStartError(`worker ${slot.index} exited while starting (${signal ?? `code ${code}`})`, undefined));
        }
        this.onExit(slot, worker, code, signal);
      });
    });
  }

  private send(worker: Worker, message: ToWorker): void {
    if (worker.isConnected()) worker.send(message);
  }

  private broadcast(message: ToWorker): void {
    for (const slot of this.slots) if (slot.worker) this.send(slot.worker, message);
  }

  private onMessage(message: ToPrimary): void {
    switch (message.type) {
      case 'reply':
        this.pending.get(message.id)?.(message.body);
        return;
      case 'reload':
        this.reload(message.trigger);
        return;
      case 'cancel': {
        // The owner may be restarting: its sessions, and so the cancel's target, are gone anyway.
        const owner = this.slots[message.owner];
        if (owner?.state === 'running' && owner.worker) this.send(owner.worker, { type: 'cancel', listener: message.listener, pid: message.pid, secret: message.secret });
        return;
      }
      default:
        return;
    }
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.worker = undefined;
    if (this.phase === 'running') {
      slot.failures = Date.now() - slot.startedAtMs >= STABLE_MS ? 1 : slot.failures + 1;
      const delayMs = Math.min(RESTART_BACKOFF_MS.max, RESTART_BACKOFF_MS.first * 2 ** (slot.failures - 1));
      this.log.error({ worker: slot.index, pid: worker.process.pid, code, signal, restart_in_ms: delayMs }, `worker ${slot.index} exited unexpectedly; restarting it in ${delayMs}ms`);
      this.move(slot, 'restarting');
      slot.restartTimer = setTimeout(() => {
        slot.restartTimer = undefined;
        if (this.phase === 'running') this.fork(slot).catch((err: Error) => this.log.error({ worker: slot.index, err: err.message }, `worker ${slot.index} failed to start`));
      }, delayMs);
      return;
    }
    this.move(slot, 'exited');
    if (this.phase === 'starting') return;
    this.log.info({ worker: slot.index, pid: worker.process.pid, code, signal }, `worker ${slot.index} exited`);
    if (this.slots.every((s) => s.state === 'exited')) this.finish();
  }

  // ─────────────── signals and lifecycle ───────────────

  /** As a single process: SIGHUP reloads, the first SIGTERM drains, any signal after it forces. */
  onSignal(signal: NodeJS.Signals): void {
    if (signal === 'SIGHUP') {
      this.reload('SIGHUP');
      return;
    }
    if (this.phase === 'delaying' || this.phase === 'draining') {
      this.log.warn({ signal }, 'second signal: closing everything now');
      this.broadcast({ type: 'force', why: signal });
      return;
    }
    this.shutdown(signal);
  }

  /**
   * Every worker drains as a single process would (shutdown_delay, then clients finish within
   * shutdown_timeout); the primary keeps /healthz and /metrics up and exits 0 once all are gone.
   */
  shutdown(why: string): void {
    if (this.phase !== 'running' && this.phase !== 'starting') return;
    const { shutdown_delay: delayMs, shutdown_timeout: timeoutMs } = this.config;
    this.log.info({ why, shutdown_delay_ms: delayMs, shutdown_timeout_ms: timeoutMs, workers: this.slots.length }, 'shutting down: readiness off');
    this.phase = 'delaying';
    this.watcher?.close();
    setTimeout(() => {
      if (this.phase === 'delaying') this.phase = 'draining';
    }, delayMs).unref();
    for (const slot of this.slots) {
      clearTimeout(slot.restartTimer);
      if (!slot.worker) this.move(slot, 'exited');
    }
    this.broadcast({ type: 'shutdown', why });
    // The workers enforce shutdown_timeout themselves; this only catches one that hangs.
    setTimeout(() => {
      for (const slot of this.slots) {
        if (!slot.worker) continue;
        this.log.warn({ worker: slot.index, pid: slot.worker.process.pid }, `worker ${slot.index} still running past shutdown_timeout: killing it`);
        slot.worker.process.kill('SIGKILL');
      }
    }, delayMs + timeoutMs + KILL_GRACE_MS).unref();
    if (this.slots.every((s) => s.state === 'exited')) this.finish();
  }

  private finish(): void {
    if (this.phase === 'stopped') return;
    this.phase = 'stopped';
    this.watcher?.close();
    this.http?.close();
    this.http?.closeAllConnections();
    this.log.info('stopped');
    this.log.flush(() => this.options.exit(0));
  }

  /**
   * Re-reads the file, checks it against the running worker count, and hands it to every
   * worker, which applies its share. A worker forked later starts on this config too.
   */
  reload(trigger: string): boolean {
    const next = readReloadedConfig(this.options.configPath, trigger, this.log, this.metrics, (c: Config) => workerBudgetProblems(c, this.slots.length));
    if (!next) return false;
    const needsRestart = restartNeeded(this.config, next);
    this.config = { ...next, metrics: this.config.metrics, workers: this.config.workers };
    this.broadcast({ type: 'config', config: this.config });
    recordReload(next, trigger, needsRestart, this.log, this.metrics);
    return true;
  }

  // ─────────────── the HTTP side, gathered from the workers ───────────────

  private ask(slot: Slot, what: Question): Promise<unknown> {
    const worker = slot.worker;
    if (!worker?.isConnected()) return Promise.reject(new Error(`worker ${slot.index} is ${slot.state}`));
    const id = this.nextRequest++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker ${slot.index} did not answer within ${ASK_TIMEOUT_MS}ms`));
      }, ASK_TIMEOUT_MS);
      this.pending.set(id, (body) => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(body);
      });
      this.send(worker, { type: 'request', id, what });
    });
  }

  /** Workers that run now; one restarting has nothing to report yet (its counters restart at 0). */
  private live(): Slot[] {
    return this.slots.filter((slot) => slot.state === 'running' && slot.worker !== undefined);
  }

  /**
   * A scrape fails whole rather than leaving out a worker that did not answer: a sum missing
   * one worker would look like a counter reset to Prometheus.
   */
  private async renderMetrics(): Promise<string> {
    const parts = await Promise.all(this.live().map((slot) => this.ask(slot, 'metrics') as Promise<MetricsJson>));
    const { text } = await aggregateMetrics([await this.metrics.json(), ...parts]);
    return text;
  }

  /** Ready only when the primary runs and every worker is running and ready itself. */
  private async readiness(): Promise<Readiness> {
    if (this.phase !== 'running') return { ready: false, reason: `sluice is ${this.phase}` };
    const idle = this.slots.find((slot) => slot.state !== 'running');
    if (idle) return { ready: false, reason: `worker ${idle.index} is ${idle.state}` };
    const answers = await Promise.all(
      this.slots.map((slot) => (this.ask(slot, 'readiness') as Promise<Readiness>).catch((err: Error): Readiness => ({ ready: false, reason: err.message }))),
    );
    const notReady = answers.findIndex((answer) => !answer.ready);
    if (notReady >= 0) return { ready: false, reason: `worker ${notReady}: ${answers[notReady].reason}` };
    return { ready: true };
  }

  private async status(): Promise<unknown> {
    const live = this.live();
    const snapshots = await Promise.all(live.map((slot) => this.ask(slot, 'status') as Promise<ListenerSnapshot[]>));
    return {
      ...(statusDocument(mergeSnapshots(snapshots)) as object),
      workers: this.slots.map((slot) => ({ index: slot.index, state: slot.state, pid: slot.worker?.process.pid ?? null })),
    };
  }
}
