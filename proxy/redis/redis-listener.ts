// The Redis listener: accepts clients, checks their passwords, and owns the upstream pools —
// shared pipelined connections per (user, db, protocol) and a bounded pool of dedicated
// connections per user — plus drain, close, reload and the snapshot metrics read.
import { createServer, type Server, type Socket } from 'node:net';
import type { RedisListenerConfig } from '../../config/schema.js';
import { type ListenerMetrics, type PoolMetrics, UNKNOWN_USER_LABEL } from '../../metrics/metrics.js';
import type { SluiceError } from '../errors.js';
import { bindServer, type Listener, type ListenerDeps, type ListenerSnapshot, type ListenerTotals, type PoolSnapshot, type ReloadOutcome } from '../listener.js';
import { type CloseReason, Pool } from '../pool/pool.js';
import { type ClientHost, RedisClient, sameSecret } from './client.js';
import { COMMAND_FAMILIES } from './metric-labels.js';
import { RequestFramer, type RespLimits } from './resp-framer.js';
import type { RespVersion } from './resp-values.js';
import { SharedPool, type SharedPoolOptions } from './shared-pool.js';
import { type ServerInfo, Upstream, type UpstreamMetrics } from './upstream.js';

const TOO_MANY_CLIENTS = Buffer.from('-ERR max number of clients reached\r\n');
/** Dedicated connections idle this long close (they are opened on demand, again later if needed). */
const DEDICATED_IDLE_MS = 60_000;

export function createRedisListener(config: RedisListenerConfig, deps: ListenerDeps): Listener {
  return new RedisListener(config, deps);
}

class RedisListener implements Listener, ClientHost {
  readonly protocol = 'redis' as const;
  readonly name: string;
  readonly totals: ListenerTotals = { bytesReceived: 0, bytesSent: 0, transactions: 0, queries: 0 };
  readonly limits: RespLimits;
  sharedFramer: RequestFramer;
  draining = false;
  poolGeneration = 0;

  private config: RedisListenerConfig;
  private server: Server | undefined;
  private accepting = false;
  private readonly clientSet = new Set<RedisClient>();
  private readonly shared = new Map<string, SharedPool>();
  private readonly dedicated = new Map<string, Pool<Upstream>>();
  private nextClientId = 1;
  private upstreamReachable = true;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly metrics: ListenerMetrics;
  private readonly poolMetricHandles = new Map<string, PoolMetrics>();
  /** What every upstream connection of this listener reports replies to. */
  private readonly upstreamMetrics: UpstreamMetrics;

  constructor(
    config: RedisListenerConfig,
    private readonly deps: ListenerDeps,
  ) {
    this.config = config;
    this.name = config.name;
    this.limits = limitsOf(config);
    this.sharedFramer = new RequestFramer(this.limits);
    this.metrics = deps.metrics.forListener('redis', config.name);
    this.upstreamMetrics = {
      commands: deps.metrics.commandFamilies('redis', config.name, COMMAND_FAMILIES),
      errorReply: (kind) => this.metrics.error(kind),
    };
  }

  get defaultDb(): number {
    return this.config.server.db;
  }

  async start(): Promise<void> {
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server = server;
    await bindServer(server, this.config.listen);
    this.accepting = true;
    this.armIdleSweep();
    this.deps.log.info({ listener: this.name, listen: this.config.listen, upstream: this.upstreamAddress() }, 'redis listener started');
  }

  drain(): void {
    this.accepting = false;
    this.draining = true;
    this.server?.close();
    for (const client of [...this.clientSet]) client.drain();
    if (this.clientSet.size === 0) this.quitPools();
  }

  clientCount(): number {
    return this.clientSet.size;
  }

  close(): void {
    this.accepting = false;
    this.draining = true;
    this.server?.close();
    clearInterval(this.idleTimer);
    for (const client of [...this.clientSet]) client.destroy();
    for (const pool of this.shared.values()) pool.close();
    for (const pool of this.dedicated.values()) pool.close();
  }

  reload(next: unknown): ReloadOutcome {
    const config = next as RedisListenerConfig;
    const needsRestart = config.listen !== this.config.listen ? ['listen'] : [];
    const serverChanged = JSON.stringify(config.server) !== JSON.stringify(this.config.server);
    this.config = { ...config, listen: this.config.listen };
    Object.assign(this.limits, limitsOf(config));
    if (serverChanged) {
      // New address or credentials: connections open now retire as their replies come in.
      for (const pool of this.shared.values()) pool.retireAll();
      this.shared.clear();
      this.poolGeneration++;
      for (const pool of this.dedicated.values()) pool.retireAll();
    }
    for (const pool of this.shared.values()) {
      pool.reconfigure(this.sharedOptions(pool.user));
      for (const conn of [...pool.connections, ...pool.retiring]) conn.setCommandTimeout(config.timeouts.command);
    }
    for (const pool of this.dedicated.values()) {
      pool.reconfigure({ size: config.max_dedicated_connections, acquireTimeoutMs: config.timeouts.acquire, connectTimeoutMs: config.timeouts.connect });
      for (const conn of [...pool.idle, ...pool.active]) conn.setCommandTimeout(config.timeouts.command);
    }
    clearInterval(this.idleTimer);
    this.armIdleSweep();
    return { needsRestart };
  }

  snapshot(): ListenerSnapshot {
    const pools = new Map<string, PoolSnapshot>();
    const entry = (user: string, db: number): PoolSnapshot => {
      const key = `${user}\u0000${db}`;
      let snap = pools.get(key);
      if (snap === undefined) {
        snap = {
          database: String(db),
          user,
          stats: { size: this.config.pool_size, idle: 0, active: 0, opening: 0, waiting: 0, oldestWaitMs: 0, paused: false },
          clientsActive: 0,
          clientsWaiting: 0,
          clientsIdle: 0,
          pinned: 0,
          dedicated: 0,
        };
        pools.set(key, snap);
      }
      return snap;
    };
    for (const pool of this.shared.values()) {
      const snap = entry(pool.user, pool.db);
      for (const conn of pool.connections) {
        if (conn.state !== 'ready') snap.stats.opening++;
        else if (conn.inFlight > 0) snap.stats.active++;
        else snap.stats.idle++;
      }
    }
    for (const [user, pool] of this.dedicated) {
      const stats = pool.stats();
      const snap = entry(user, this.defaultDb);
      snap.dedicated = stats.idle + stats.active;
      snap.stats.waiting += stats.waiting;
      snap.stats.oldestWaitMs = Math.max(snap.stats.oldestWaitMs, stats.oldestWaitMs);
    }
    for (const client of this.clientSet) {
      const snap = entry(client.user, client.db);
      if (client.dedicated !== null) snap.pinned++;
      if (client.waiting) snap.clientsWaiting++;
      else if (client.outstanding > 0 || client.dedicated !== null) snap.clientsActive++;
      else snap.clientsIdle++;
    }
    return {
      protocol: 'redis',
      name: this.name,
      listen: this.config.listen,
      upstream: this.upstreamAddress(),
      clients: this.clientSet.size,
      pools: [...pools.values()],
      totals: { ...this.totals },
      upstreamReachable: this.upstreamReachable,
      accepting: this.accepting,
    };
  }

  // ── ClientHost ──────────────────────────────────────────────────────────────────────────

  get maxDedicated(): number {
    return this.config.max_dedicated_connections;
  }

  requiresAuth(): boolean {
    return this.config.password !== undefined || this.config.users.length > 0;
  }

  authenticate(user: string, password: Buffer): boolean {
    const listed = this.config.users.find((u) => u.name === user);
    if (listed !== undefined) return sameSecret(password, listed.password);
    if (user === 'default' && this.config.password !== undefined) return sameSecret(password, this.config.password);
    return false;
  }

  sharedPool(user: string, db: number, resp: RespVersion): SharedPool {
    const key = `${user}\u0000${db}\u0000${resp}`;
    let pool = this.shared.get(key);
    if (pool === undefined) {
      pool = new SharedPool(user, db, resp, this.sharedOptions(user), {
        opened: () => this.poolMetrics(user, db).serverOpened(),
        closed: (error) => {
          this.poolMetrics(user, db).serverClosed(error === null ? 'retired' : 'error');
          this.upstreamClosed(error);
        },
        reachable: (up) => {
          this.upstreamReachable = up;
        },
        unused: () => {
          if (this.shared.get(key) === pool) {
            this.shared.delete(key);
            this.poolGeneration++;
          }
        },
      });
      this.shared.set(key, pool);
    }
    return pool;
  }

  dedicatedPool(user: string): Pool<Upstream> {
    let pool = this.dedicated.get(user);
    if (pool === undefined) {
      const created: Pool<Upstream> = new Pool<Upstream>(
        {
          name: `${this.name}/${user}`,
          size: this.config.max_dedicated_connections,
          minSize: 0,
          acquireTimeoutMs: this.config.timeouts.acquire,
          connectTimeoutMs: this.config.timeouts.connect,
          idleTimeoutMs: DEDICATED_IDLE_MS,
          lifetimeMs: 0,
          observer: { acquireTimedOut: () => this.metrics.timeout('timeouts.acquire') },
        },
        {
          open: (timeoutMs) => this.openDedicated(user, timeoutMs, () => created),
          // A connection given up mid-command (a client left during BLPOP 0) may never answer: cut it.
          close: (conn: Upstream, reason: CloseReason) => (reason === 'error' || conn.inFlight > 0 ? conn.destroy('closed by sluice') : conn.quit()),
        },
      );
      pool = created;
      this.dedicated.set(user, pool);
    }
    return pool;
  }

  serverInfo(): ServerInfo | null {
    for (const pool of this.shared.values()) {
      const info = pool.serverInfo();
      if (info !== null) return info;
    }
    return null;
  }

  clients(): Iterable<RedisClient> {
    return this.clientSet;
  }

  removed(client: RedisClient): void {
    this.clientSet.delete(client);
    if (this.draining && this.clientSet.size === 0) this.quitPools();
  }

  authFailed(user: string, addr: string): void {
    // Only configured names become label values: a client trying random names adds no series.
    const known = this.config.users.some((u) => u.name === user) || (user === 'default' && this.config.password !== undefined);
    this.metrics.authFailed(known ? user : UNKNOWN_USER_LABEL);
    this.deps.log.info({ listener: this.name, user, addr }, 'client authentication failed');
  }

  errorReplied(kind: string): void {
    this.metrics.error(kind);
  }

  pinned(user: string, db: number, reason: string): void {
    this.poolMetrics(user, db).pin(reason);
  }

  /** Label-bound handles, made once per (user, db): the hot path never hashes labels. */
  private poolMetrics(user: string, db: number): PoolMetrics {
    const key = `${user}\u0000${db}`;
    let handles = this.poolMetricHandles.get(key);
    if (handles === undefined) {
      handles = this.deps.metrics.forPool('redis', this.name, String(db), user);
      this.poolMetricHandles.set(key, handles);
    }
    return handles;
  }

  // ── Internals ───────────────────────────────────────────────────────────────────────────

  private accept(socket: Socket): void {
    if (!this.accepting) {
      socket.destroy();
      return;
    }
    if (this.clientSet.size >= this.config.max_client_connections) {
      this.metrics.refused('max_clients');
      this.metrics.error('ERR');
      socket.on('error', () => socket.destroy());
      socket.end(TOO_MANY_CLIENTS);
      return;
    }
    this.metrics.accepted();
    this.clientSet.add(new RedisClient(this.nextClientId++, socket, this));
  }

  private openDedicated(user: string, timeoutMs: number, pool: () => Pool<Upstream>): Promise<Upstream> {
    return new Promise((resolve, reject) => {
      const conn = new Upstream(
        { ...this.upstreamOptions(user), db: this.defaultDb, resp: 2, connectTimeoutMs: timeoutMs, delayMs: 0 },
        {
          ready: () => {
            this.upstreamReachable = true;
          },
          closed: (closed, error, wasReady) => {
            if (!wasReady) this.upstreamReachable = false;
            else this.upstreamClosed(error);
            // A dedicated connection that dies while lent or idle leaves the pool's lists.
            if (closed.poolState === 'idle' || closed.poolState === 'active') pool().remove(closed, 'error');
          },
        },
      );
      conn.whenReady((err) => (err ? reject(err) : resolve(conn)));
    });
  }

  private upstreamClosed(error: SluiceError | null): void {
    if (error === null) return;
    if (error.code === 'SLUICE_TIMEOUT') this.metrics.timeout('timeouts.command');
    this.metrics.error(error.code);
    this.deps.log.warn({ listener: this.name, code: error.code }, error.message);
  }

  private upstreamOptions(user: string): Omit<SharedPoolOptions, 'size'> {
    const { server, timeouts, limits } = this.config;
    // A listener user logs in upstream as itself, so its ACL rights are its own; everyone else
    // uses the server credentials.
    const listed = this.config.users.find((u) => u.name === user);
    return {
      host: server.host,
      port: server.port,
      username: listed ? listed.name : server.username,
      password: listed ? listed.password : server.password,
      connectTimeoutMs: timeouts.connect,
      commandTimeoutMs: timeouts.command,
      maxBulkBytes: limits.max_bulk_bytes,
      metrics: this.upstreamMetrics,
    };
  }

  private sharedOptions(user: string): SharedPoolOptions {
    return { ...this.upstreamOptions(user), size: this.config.pool_size };
  }

  private quitPools(): void {
    clearInterval(this.idleTimer);
    for (const pool of this.shared.values()) pool.retireAll();
    for (const pool of this.dedicated.values()) pool.close();
  }

  private armIdleSweep(): void {
    const idleMs = this.config.timeouts.client_idle;
    if (idleMs <= 0) return;
    this.idleTimer = setInterval(() => this.sweepIdle(idleMs), Math.max(100, Math.min(1000, idleMs / 2)));
    this.idleTimer.unref();
  }

  private sweepIdle(idleMs: number): void {
    // Clients stamp activity with performance.now() (client.ts onData).
    const now = performance.now();
    for (const client of [...this.clientSet]) {
      // Like Redis's `timeout`: pub/sub clients and clients waiting on a reply are not idle.
      if (client.outstanding > 0 || client.subscribed || client.stalled !== null) continue;
      if (now - client.lastActivityMs >= idleMs) {
        this.metrics.timeout('timeouts.client_idle');
        client.closeForIdle();
      }
    }
  }

  private upstreamAddress(): string {
    return `${this.config.server.host}:${this.config.server.port}`;
  }
}

function limitsOf(config: RedisListenerConfig): RespLimits {
  return { maxBulkBytes: config.limits.max_bulk_bytes, maxArrayElements: config.limits.max_array_elements, maxInlineBytes: config.limits.max_inline_bytes };
}
