// Sluice's Prometheus metrics: one private registry, every metric defined here (the catalogue
// metrics/README.md documents). Gauges and hot-path totals are read from listener snapshots at
// scrape time; rare events (timeouts, errors, auth failures) and histograms are recorded as they
// happen through the per-pool handles returned by `forPool()`. Redis command counts and latencies
// are per command, so they go into plain-number recorders (`commandFamilies()`) that a scrape
// reads: no label hashing per command.
import { Counter, collectDefaultMetrics, Gauge, type Metric, Registry } from 'prom-client';
import type { ListenerSnapshot, Protocol } from '../proxy/listener.js';

/** A registry's state as prom-client's JSON (what one worker hands the primary). */
export type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

/** 100µs to 30s, roughly ×2.5 per step. */
export const LATENCY_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const POOL_LABELS = ['protocol', 'pool', 'database', 'user'] as const;
/** The `user` label of an auth failure for a name no config (or upstream) vouches for: one series, whatever clients send. */
export const UNKNOWN_USER_LABEL = '(unknown)';
const LISTENER_LABELS = ['protocol', 'pool'] as const;

type PoolLabels = Record<(typeof POOL_LABELS)[number], string>;

/** Handles bound to one pool's labels, so the hot path does no label hashing. */
export interface PoolMetrics {
  waitSeconds: { observe(seconds: number): void };
  transactionSeconds: { observe(seconds: number): void };
  querySeconds: { observe(seconds: number): void };
  serverOpened(): void;
  serverClosed(reason: string): void;
  timeout(configKey: string): void;
  error(kind: string): void;
  pin(reason: string): void;
  unpin(reason: string): void;
}

/** What prom-client's Registry reads from a metric at scrape time (its `get()` result). */
interface CollectedHistogram {
  name: string;
  help: string;
  type: 'histogram';
  aggregator: 'sum';
  values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }>;
}

/**
 * One (protocol, pool, family)'s command count and latency histogram as plain numbers: the hot
 * path adds to them, a scrape reads them. Buckets are per bound here (not cumulative).
 */
export class HistogramRecorder<L extends Record<string, string> = Record<string, string>> {
  count = 0;
  sumSeconds = 0;
  readonly bucketCounts = new Float64Array(LATENCY_BUCKETS_SECONDS.length);
  /** Count already added to a companion counter (sluice_commands_total). */
  exported = 0;

  constructor(readonly labels: Readonly<L>) {}

  observe(seconds: number): void {
    this.count++;
    this.sumSeconds += seconds;
    const bounds = LATENCY_BUCKETS_SECONDS;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]) i++;
    if (i < bounds.length) this.bucketCounts[i]++;
  }
}

export type CommandFamilyRecorder = HistogramRecorder<{ protocol: string; pool: string; family: string }>;

/**
 * A latency histogram kept as plain-number recorders, one per label set, read by prom-client's
 * registry at scrape time through `get()`. prom-client's own Histogram hashes its labels on every
 * observe, even through a `labels()` child; this costs one loop over 17 bounds instead.
 */
class PlainHistogram<L extends Record<string, string>> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** Keyed by the joined label values; kept across reloads, so a replaced listener's series go on counting. */
  readonly recorders = new Map<string, HistogramRecorder<L>>();

  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  recorder(labels: L): HistogramRecorder<L> {
    const key = Object.values(labels).join('\u0000');
    let recorder = this.recorders.get(key);
    if (recorder === undefined) {
      recorder = new HistogramRecorder<L>(labels);
      this.recorders.set(key, recorder);
    }
    return recorder;
  }

  /** prom-client's histogram shape; label sets never observed are left out. */
  get(): CollectedHistogram {
    const values: CollectedHistogram['values'] = [];
    const name = this.name;
    for (const recorder of this.recorders.values()) {
      if (recorder.count === 0) continue;
      let cumulative = 0;
      for (const [i, le] of LATENCY_BUCKETS_SECONDS.entries()) {
        cumulative += recorder.bucketCounts[i];
        values.push({ metricName: `${name}_bucket`, labels: { le, ...recorder.labels }, value: cumulative });
      }
      values.push({ metricName: `${name}_bucket`, labels: { le: '+Inf', ...recorder.labels }, value: recorder.count });
      values.push({ metricName: `${name}_sum`, labels: recorder.labels, value: recorder.sumSeconds });
      values.push({ metricName: `${name}_count`, labels: recorder.labels, value: recorder.count });
    }
    return { name, help: this.help, type: 'histogram', aggregator: 'sum', values };
  }
}

/** Handles bound to one listener's labels. */
export interface ListenerMetrics {
  accepted(): void;
  refused(reason: string): void;
  /** `user` is a configured user's name or UNKNOWN_USER_LABEL, never a name a client made up. */
  authFailed(user: string): void;
  /** relayed: with workers > 1, passed to the worker that issued the key, which then counts it forwarded or dropped. */
  cancel(result: 'forwarded' | 'dropped' | 'relayed'): void;
  timeout(configKey: string): void;
  error(kind: string): void;
  command(family: string, seconds: number): void;
}

export class Metrics {
  readonly registry = new Registry();
  private readonly sources: Array<() => ListenerSnapshot[]> = [];
  private readonly lastTotals = new Map<string, number>();

  private readonly clients = new Gauge({ name: 'sluice_clients', help: 'Client connections by state (active: holds a server; waiting: queued for one; idle: neither).', labelNames: [...POOL_LABELS, 'state'], registers: [] });
  private readonly listenerClients = new Gauge({ name: 'sluice_listener_clients', help: 'Client connections open on a listener, logged in or not.', labelNames: LISTENER_LABELS, registers: [] });
  private readonly servers = new Gauge({ name: 'sluice_server_connections', help: 'Upstream connections by state (active, idle, opening).', labelNames: [...POOL_LABELS, 'state'], registers: [] });
  private readonly dedicated = new Gauge({ name: 'sluice_dedicated_connections', help: 'Redis upstream connections dedicated to one client (transactions, blocking commands, pub/sub).', labelNames: POOL_LABELS, registers: [] });
  private readonly pinned = new Gauge({ name: 'sluice_pinned_clients', help: 'Clients holding a server beyond one transaction or command.', labelNames: POOL_LABELS, registers: [] });
  private readonly poolSize = new Gauge({ name: 'sluice_pool_size', help: 'Configured pool_size: the most upstream connections this pool may open.', labelNames: POOL_LABELS, registers: [] });
  // With workers > 1 the primary sums every metric over the workers (metrics/cluster-aggregate.ts),
  // except these two: the longest wait is the longest anywhere, and an upstream is up only if
  // every worker reached it.
  private readonly oldestWait = new Gauge({ name: 'sluice_pool_oldest_wait_seconds', help: 'How long the longest-waiting client of this pool has waited for a server.', labelNames: POOL_LABELS, registers: [], aggregator: 'max' });
  private readonly upstreamUp = new Gauge({ name: 'sluice_upstream_up', help: '1 when the upstream answered at the last check, else 0.', labelNames: LISTENER_LABELS, registers: [], aggregator: 'min' });
  private readonly bytesReceived = new Counter({ name: 'sluice_client_received_bytes_total', help: 'Bytes received from clients.', labelNames: LISTENER_LABELS, registers: [] });
  private readonly bytesSent = new Counter({ name: 'sluice_client_sent_bytes_total', help: 'Bytes sent to clients.', labelNames: LISTENER_LABELS, registers: [] });
  private readonly transactions = new Counter({ name: 'sluice_transactions_total', help: 'Postgres transactions completed (a statement outside a transaction counts as one).', labelNames: LISTENER_LABELS, registers: [] });
  private readonly queries = new Counter({ name: 'sluice_queries_total', help: 'Postgres queries completed (Query or Execute).', labelNames: LISTENER_LABELS, registers: [] });
  private readonly accepted = new Counter({ name: 'sluice_client_connections_accepted_total', help: 'Client connections accepted.', labelNames: LISTENER_LABELS, registers: [] });
  private readonly refused = new Counter({ name: 'sluice_client_connections_refused_total', help: 'Client connections refused, by reason (max_clients, shutting_down, paused).', labelNames: [...LISTENER_LABELS, 'reason'], registers: [] });
  private readonly serverOpened = new Counter({ name: 'sluice_server_connections_opened_total', help: 'Upstream connections opened.', labelNames: POOL_LABELS, registers: [] });
  private readonly serverClosed = new Counter({ name: 'sluice_server_connections_closed_total', help: 'Upstream connections closed, by reason (idle, lifetime, error, reset-failed, session-state, retired, shutdown, resize).', labelNames: [...POOL_LABELS, 'reason'], registers: [] });
  private readonly timeouts = new Counter({ name: 'sluice_timeouts_total', help: 'Timeouts fired, by the config key that sets them.', labelNames: [...LISTENER_LABELS, 'config_key'], registers: [] });
  private readonly errors = new Counter({ name: 'sluice_errors_total', help: 'Errors returned to clients, by kind (SQLSTATE class or Redis error prefix).', labelNames: [...LISTENER_LABELS, 'kind'], registers: [] });
  private readonly authFailures = new Counter({ name: 'sluice_auth_failures_total', help: 'Client authentication failures, by configured user ((unknown) for any other name).', labelNames: [...LISTENER_LABELS, 'user'], registers: [] });
  private readonly cancels = new Counter({ name: 'sluice_cancel_requests_total', help: 'Postgres cancel requests, by result (forwarded, dropped, relayed).', labelNames: [...LISTENER_LABELS, 'result'], registers: [] });
  private readonly pins = new Counter({ name: 'sluice_pins_total', help: 'Clients pinned to a server, by reason.', labelNames: [...POOL_LABELS, 'reason'], registers: [] });
  private readonly unpins = new Counter({ name: 'sluice_unpins_total', help: 'Pinned clients given back to transaction pooling because their session state is gone, by what ended it.', labelNames: [...POOL_LABELS, 'reason'], registers: [] });
  private readonly commands = new Counter({ name: 'sluice_commands_total', help: 'Redis commands answered, by command family.', labelNames: [...LISTENER_LABELS, 'family'], registers: [] });
  private readonly reloads = new Counter({ name: 'sluice_config_reload_total', help: 'Config reloads, by result (success, failure).', labelNames: ['result'], registers: [] });
  // Histograms observed per transaction, query or command: plain-number recorders (see PlainHistogram).
  private readonly waitSeconds = new PlainHistogram<PoolLabels>('sluice_pool_wait_seconds', 'Time clients waited for a server connection.');
  private readonly transactionSeconds = new PlainHistogram<PoolLabels>('sluice_transaction_duration_seconds', 'Postgres transaction duration, first query to ReadyForQuery idle.');
  private readonly querySeconds = new PlainHistogram<PoolLabels>('sluice_query_duration_seconds', 'Postgres query duration, request to its completion.');
  private readonly commandSeconds = new PlainHistogram<{ protocol: string; pool: string; family: string }>('sluice_command_duration_seconds', 'Redis command latency, request to reply.');

  constructor(options: { processMetrics?: boolean } = {}) {
    for (const metric of [
      this.clients, this.listenerClients, this.servers, this.dedicated, this.pinned, this.poolSize, this.oldestWait, this.upstreamUp,
      this.bytesReceived, this.bytesSent, this.transactions, this.queries, this.accepted, this.refused, this.serverOpened,
      this.serverClosed, this.timeouts, this.errors, this.authFailures, this.cancels, this.pins, this.unpins, this.commands, this.reloads,
    ] as Metric[]) {
      this.registry.registerMetric(metric);
    }
    for (const histogram of [this.waitSeconds, this.transactionSeconds, this.querySeconds, this.commandSeconds]) {
      this.registry.registerMetric(histogram as unknown as Metric);
    }
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'sluice_' });
  }

  /** Registers where scrape-time state comes from (the process's live listeners). */
  addSource(source: () => ListenerSnapshot[]): void {
    this.sources.push(source);
  }

  configReloaded(result: 'success' | 'failure'): void {
    this.reloads.inc({ result });
  }

  forPool(protocol: Protocol, pool: string, database: string, user: string): PoolMetrics {
    const labels: PoolLabels = { protocol, pool, database, user };
    return {
      waitSeconds: this.waitSeconds.recorder(labels),
      transactionSeconds: this.transactionSeconds.recorder(labels),
      querySeconds: this.querySeconds.recorder(labels),
      serverOpened: () => this.serverOpened.inc(labels),
      serverClosed: (reason) => this.serverClosed.inc({ ...labels, reason }),
      timeout: (configKey) => this.timeouts.inc({ protocol, pool, config_key: configKey }),
      error: (kind) => this.errors.inc({ protocol, pool, kind }),
      pin: (reason) => this.pins.inc({ ...labels, reason }),
      unpin: (reason) => this.unpins.inc({ ...labels, reason }),
    };
  }

  /**
   * A pool was removed (idle, or its listener's max_pools reclaimed it): its series go with it, so
   * pools that come and go (a client naming many databases) do not pile up series. Gauges are
   * rebuilt from snapshots at every scrape and need nothing.
   */
  async forgetPool(protocol: Protocol, pool: string, database: string, user: string): Promise<void> {
    const key = [protocol, pool, database, user].join('\u0000');
    for (const histogram of [this.waitSeconds, this.transactionSeconds, this.querySeconds]) histogram.recorders.delete(key);
    for (const counter of [this.serverOpened, this.serverClosed, this.pins, this.unpins]) {
      const { values } = await counter.get();
      for (const { labels } of values) {
        if (labels.protocol === protocol && labels.pool === pool && labels.database === database && labels.user === user) counter.remove(labels as Record<string, string>);
      }
    }
  }

  /**
   * Command recorders of one listener, one per family in the order given, made once and cached:
   * the caller indexes the array by family number on the hot path.
   */
  commandFamilies(protocol: Protocol, pool: string, families: readonly string[]): CommandFamilyRecorder[] {
    return families.map((family) => this.commandRecorder(protocol, pool, family));
  }

  forListener(protocol: Protocol, pool: string): ListenerMetrics {
    const labels = { protocol, pool };
    return {
      accepted: () => this.accepted.inc(labels),
      refused: (reason) => this.refused.inc({ ...labels, reason }),
      authFailed: (user) => this.authFailures.inc({ ...labels, user }),
      cancel: (result) => this.cancels.inc({ ...labels, result }),
      timeout: (configKey) => this.timeouts.inc({ ...labels, config_key: configKey }),
      error: (kind) => this.errors.inc({ ...labels, kind }),
      command: (family, seconds) => this.commandRecorder(protocol, pool, family).observe(seconds),
    };
  }

  /** Prometheus text for GET /metrics, with gauges refreshed from the listeners first. */
  async render(): Promise<string> {
    this.refresh();
    return this.registry.metrics();
  }

  /** The same state as render(), as prom-client's JSON, for a cluster primary to aggregate. */
  async json(): Promise<MetricsJson> {
    this.refresh();
    return this.registry.getMetricsAsJSON();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  snapshots(): ListenerSnapshot[] {
    return this.sources.flatMap((source) => source());
  }

  private commandRecorder(protocol: Protocol, pool: string, family: string): CommandFamilyRecorder {
    return this.commandSeconds.recorder({ protocol, pool, family });
  }

  private addTotal(counter: Counter, key: string, labels: Record<string, string>, value: number): void {
    const last = this.lastTotals.get(key) ?? 0;
    // A listener replaced by a reload starts again from 0: count its whole new total.
    const delta = value >= last ? value - last : value;
    if (delta > 0) counter.inc(labels, delta);
    this.lastTotals.set(key, value);
  }

  private refresh(): void {
    for (const gauge of [this.clients, this.listenerClients, this.servers, this.dedicated, this.pinned, this.poolSize, this.oldestWait, this.upstreamUp]) {
      gauge.reset();
    }
    for (const recorder of this.commandSeconds.recorders.values()) {
      if (recorder.count > recorder.exported) this.commands.inc(recorder.labels, recorder.count - recorder.exported);
      recorder.exported = recorder.count;
    }
    for (const snap of this.snapshots()) {
      const ll = { protocol: snap.protocol, pool: snap.name };
      this.listenerClients.set(ll, snap.clients);
      this.upstreamUp.set(ll, snap.upstreamReachable ? 1 : 0);
      const id = `${snap.protocol}/${snap.name}`;
      this.addTotal(this.bytesReceived, `${id}/rx`, ll, snap.totals.bytesReceived);
      this.addTotal(this.bytesSent, `${id}/tx`, ll, snap.totals.bytesSent);
      if (snap.protocol === 'postgres') {
        this.addTotal(this.transactions, `${id}/xact`, ll, snap.totals.transactions);
        this.addTotal(this.queries, `${id}/query`, ll, snap.totals.queries);
      }
      for (const pool of snap.pools) {
        const pl = { ...ll, database: pool.database, user: pool.user };
        this.clients.set({ ...pl, state: 'active' }, pool.clientsActive);
        this.clients.set({ ...pl, state: 'waiting' }, pool.clientsWaiting);
        this.clients.set({ ...pl, state: 'idle' }, pool.clientsIdle);
        this.servers.set({ ...pl, state: 'active' }, pool.stats.active);
        this.servers.set({ ...pl, state: 'idle' }, pool.stats.idle);
        this.servers.set({ ...pl, state: 'opening' }, pool.stats.opening);
        this.poolSize.set(pl, pool.stats.size);
        this.oldestWait.set(pl, pool.stats.oldestWaitMs / 1000);
        this.pinned.set(pl, pool.pinned);
        if (snap.protocol === 'redis') this.dedicated.set(pl, pool.dedicated);
      }
    }
  }
}
