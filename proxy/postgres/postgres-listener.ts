// The Postgres listener: accepts clients, keeps one DatabasePool per (database, user), routes
// cancel requests by the keys it issued, runs the janitor that enforces per-client timeouts,
// and implements drain/close/reload/snapshot for the process.
import { createHmac, randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import type { PostgresListenerConfig } from '../../config/schema.js';
import { type ListenerMetrics, UNKNOWN_USER_LABEL } from '../../metrics/metrics.js';
import type { AdminContext, AdminControls, ConnectionInfo } from '../admin/admin-console.js';
import { TooManyPoolsError } from '../errors.js';
import { bindServer, type Listener, type ListenerDeps, type ListenerSnapshot, type ListenerTotals, type ReloadOutcome } from '../listener.js';
import type { Logger } from '../log.js';
import type { Connector, PoolOptions } from '../pool/pool.js';
import { type PasswordKnowledge, parsePassword, type ScramSecret, safeEqual, scramSecretFor } from './auth.js';
import { ADMIN_DATABASE, ClientSession, type SessionContext } from './client-session.js';
import { DatabasePool } from './database-pool.js';
import type { MessageTap } from './message-tap.js';
import { type PassthroughLimits, PassthroughVerifier, type VerifyingClient } from './passthrough-verifier.js';
import { createSessionStateTap } from './session-state-tap.js';
import { openServer, type ServerConnection, type UpstreamTarget } from './server-connection.js';
import { errorResponse } from './wire-messages.js';

/** How often the janitor checks client timeouts; timeouts fire within this much of their setting. */
const JANITOR_INTERVAL_MS = 100;

/** Without a tap of its own, a listener gets the issue-7 one (prepared statements, session-state pinning) its config asks for. */
export function createPostgresListener(config: PostgresListenerConfig, deps: ListenerDeps, tap?: MessageTap): Listener {
  return new PostgresListener(config, deps, tap ?? createSessionStateTap(config));
}

export class PostgresListener implements Listener, SessionContext, AdminControls {
  readonly protocol = 'postgres' as const;
  readonly name: string;
  readonly log: Logger;
  readonly metrics: ListenerMetrics;
  readonly totals: ListenerTotals = { bytesReceived: 0, bytesSent: 0, transactions: 0, queries: 0 };
  tlsContext: SecureContext | undefined;
  draining = false;
  readonly admin: AdminContext | undefined;

  private server: Server | undefined;
  private accepting = false;
  private readonly sessions = new Set<ClientSession>();
  private readonly pools = new Map<string, DatabasePool>();
  private readonly keys = new Map<number, ClientSession>();
  private readonly passthrough: PassthroughVerifier;
  private users = new Map<string, PasswordKnowledge>();
  private readonly scramSecrets = new Map<string, ScramSecret>();
  /** Salts decoy SCRAM secrets for unknown users, so repeated attempts see a stable salt. */
  private readonly decoyKey = randomBytes(32);
  private janitor: NodeJS.Timeout | undefined;
  private upstreamReachable = true;
  private nextPid = randomInt(1 << 20, 1 << 30);

  constructor(
    public config: PostgresListenerConfig,
    private readonly deps: ListenerDeps,
    readonly tap: MessageTap | undefined,
  ) {
    this.name = config.name;
    this.log = deps.log.child({ listener: config.name, protocol: 'postgres' });
    this.metrics = deps.metrics.forListener('postgres', config.name);
    this.admin = deps.admin;
    deps.worker?.onForwardedCancel(config.name, (pid, secret) => this.cancelOwn(pid, secret));
    this.applyUsers();
    this.tlsContext = this.loadTls();
    this.passthrough = new PassthroughVerifier(passthroughLimits(config), (database, user, password) => this.checkUpstream(database, user, password));
  }

  private loadTls(): SecureContext | undefined {
    const tls = this.config.tls;
    if (!tls) return undefined;
    return createSecureContext({ cert: readFileSync(tls.cert_file), key: readFileSync(tls.key_file), minVersion: tls.min_version, ciphers: tls.ciphers });
  }

  private applyUsers(): void {
    this.users = new Map(this.config.users.map((user) => [user.name, parsePassword(user.password, user.name)]));
    this.scramSecrets.clear();
  }

  private get target(): UpstreamTarget {
    const { host, port, tls, ca_file, tls_min_version, tls_ciphers } = this.config.server;
    return { host, port, tls, caFile: ca_file, tlsMinVersion: tls_min_version, tlsCiphers: tls_ciphers };
  }

  async start(): Promise<void> {
    this.server = createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => this.log.error({ err }, 'listener error'));
    await bindServer(this.server, this.config.listen);
    this.accepting = true;
    this.janitor = setInterval(() => this.sweep(), JANITOR_INTERVAL_MS);
    this.janitor.unref();
    this.log.info({ listen: this.config.listen, upstream: `${this.config.server.host}:${this.config.server.port}`, pool_mode: this.config.pool_mode }, 'postgres listener started');
  }

  private accept(socket: Socket): void {
    if (!this.accepting) {
      this.metrics.refused('shutting_down');
      socket.on('error', () => {});
      socket.end(errorResponse('FATAL', '57P01', 'sluice is shutting down'));
      return;
    }
    if (this.sessions.size >= this.config.max_client_connections) {
      this.metrics.refused('max_clients');
      socket.on('error', () => {});
      socket.end(errorResponse('FATAL', '53300', `sluice: too many client connections (max_client_connections ${this.config.max_client_connections})`));
      return;
    }
    this.metrics.accepted();
    this.sessions.add(new ClientSession(socket, this));
  }

  // ─────────────── SessionContext ───────────────

  poolFor(database: string, user: string): DatabasePool {
    const key = `${database}\0${user}`;
    let entry = this.pools.get(key);
    if (entry) return entry;
    // Pools are made by what clients name: bounded, and empty ones make room before a refusal.
    if (this.pools.size >= this.config.max_pools && !this.reclaimOneEmptyPool()) {
      this.metrics.refused('max_pools');
      throw new TooManyPoolsError(this.config.name, this.config.max_pools);
    }
    const metrics = this.deps.metrics.forPool('postgres', this.config.name, database, user);
    const connector: Connector<ServerConnection> = {
      open: async (timeoutMs) => {
        try {
          const server = await openServer(this.target, this.loginFor(database, user), timeoutMs);
          this.upstreamReachable = true;
          if (entry) server.attach(entry);
          return server;
        } catch (err) {
          const sqlstate = loginSqlstate(err);
          // The server answered: it is up. A rejected learned password was rotated: check the next login upstream.
          if (sqlstate === undefined) this.upstreamReachable = false;
          if (sqlstate === '28P01' && this.config.server.password === undefined) this.passthrough.forget(user);
          this.log.warn({ database, user, err: (err as Error).message }, 'cannot open server connection');
          throw err;
        }
      },
      close: (server, reason) => {
        this.log.debug({ database, user, server: server.id, reason }, 'closing server connection');
        server.terminate();
        this.tap?.serverClosed?.(server.id);
      },
    };
    const options: PoolOptions = {
      ...this.poolOptions(),
      name: `${this.config.name}/${database}/${user}`,
      observer: {
        waited: (waitMs) => metrics.waitSeconds.observe(waitMs / 1000),
        opened: () => metrics.serverOpened(),
        closed: (reason) => metrics.serverClosed(reason),
        acquireTimedOut: () => undefined,
        connectFailed: () => metrics.error('connect'),
      },
    };
    entry = new DatabasePool(database, user, options, connector, metrics);
    this.pools.set(key, entry);
    return entry;
  }

  private poolOptions(): Omit<PoolOptions, 'name' | 'observer'> {
    const c = this.config;
    return {
      size: c.pool_size,
      minSize: c.min_pool_size,
      acquireTimeoutMs: c.timeouts.acquire,
      connectTimeoutMs: c.timeouts.connect,
      idleTimeoutMs: c.timeouts.server_idle,
      lifetimeMs: c.timeouts.server_lifetime,
      maintenanceIntervalMs: Math.max(50, Math.min(1000, Math.floor(Math.min(c.timeouts.server_idle || 1000, c.timeouts.server_lifetime || 1000) / 4))),
    };
  }

  /** Upstream credentials: server.user/password when set, else the client's user and what sluice knows of its password. */
  private loginFor(database: string, user: string): { user: string; database: string; password?: string } {
    const server = this.config.server;
    const upstreamUser = server.user ?? user;
    let password = server.password;
    if (password === undefined) {
      password = this.passthrough.learnedPassword(user);
      const known = this.users.get(user);
      if (password === undefined && known?.kind === 'plain') password = known.password;
    }
    return { user: upstreamUser, database: server.database ?? database, password };
  }

  userPassword(user: string): PasswordKnowledge | undefined {
    return this.users.get(user);
  }

  scramSecret(user: string): { secret: ScramSecret; real: boolean } {
    const known = this.users.get(user);
    if (known?.kind === 'scram') return { secret: known.secret, real: true };
    if (known?.kind === 'plain') {
      let secret = this.scramSecrets.get(user);
      if (!secret) {
        secret = scramSecretFor(known.password);
        this.scramSecrets.set(user, secret);
      }
      return { secret, real: true };
    }
    // Unknown user (or only an md5 secret): a decoy exchange that always fails, indistinguishable on the wire.
    const salt = createHmac('sha256', this.decoyKey).update(user).digest().subarray(0, 16);
    return { secret: { iterations: 4096, salt, storedKey: randomBytes(32), serverKey: randomBytes(32) }, real: false };
  }

  authFailureLabel(user: string): string {
    const known = this.users.has(user) || this.config.admin_users.includes(user) || this.passthrough.knowsUser(user);
    return known ? user : UNKNOWN_USER_LABEL;
  }

  acceptsLearnedPassword(user: string, password: string): boolean {
    return this.passthrough.acceptsLocally(user, password, safeEqual);
  }

  verifyUpstream(database: string, user: string, password: string, client: VerifyingClient): Promise<boolean> {
    // An admin console login (passthrough) is checked against the upstream's default database.
    if (database === ADMIN_DATABASE && this.admin) database = 'postgres';
    return this.passthrough.verify(database, user, password, client);
  }

  private async checkUpstream(database: string, user: string, password: string): Promise<boolean> {
    // Always the client's own user and password: server.user/password would accept anyone.
    const login = { user, database: this.config.server.database ?? database, password };
    try {
      const server = await openServer(this.target, login, this.config.timeouts.connect);
      this.upstreamReachable = true;
      // The checked connection is logged in exactly as the pool would log in: keep it there.
      const samePool = this.config.server.user === undefined && this.config.server.password === undefined;
      const entry = samePool ? this.pools.get(`${database}\0${user}`) ?? this.tryPoolFor(database, user) : undefined;
      if (entry) {
        entry.learnWelcome(server);
        server.attach(entry);
      }
      if (!entry?.pool.adopt(server)) server.terminate();
    } catch (err) {
      const sqlstate = loginSqlstate(err);
      if (sqlstate === '28P01' || sqlstate === '28000') return false;
      // Any other answer (3D000 no such database, 53300 too many clients) came from a live server.
      if (sqlstate === undefined) this.upstreamReachable = false;
      throw err;
    }
    return true;
  }

  /** poolFor, or nothing when max_pools is reached (the login that needs it is refused then). */
  private tryPoolFor(database: string, user: string): DatabasePool | undefined {
    try {
      return this.poolFor(database, user);
    } catch {
      return undefined;
    }
  }

  /** Removes pools that have had no clients and no servers for timeouts.pool_idle. */
  private reclaimIdlePools(nowMs: number): void {
    const idleMs = this.config.timeouts.pool_idle;
    if (idleMs === 0) return;
    for (const [key, entry] of this.pools) {
      if (!poolIsEmpty(entry)) entry.emptySinceMs = 0;
      else if (entry.emptySinceMs === 0) entry.emptySinceMs = nowMs;
      else if (nowMs - entry.emptySinceMs >= idleMs) this.removePool(key, entry);
    }
  }

  /**
   * At max_pools: a pool no client uses goes at once, whatever timeouts.pool_idle says (its idle
   * servers close); the one with the fewest idle servers, so the least warm state is lost.
   */
  private reclaimOneEmptyPool(): boolean {
    let best: [string, DatabasePool] | undefined;
    for (const pair of this.pools) {
      if (poolIsUnused(pair[1]) && (best === undefined || pair[1].pool.idle.length < best[1].pool.idle.length)) best = pair;
    }
    if (best === undefined) return false;
    this.removePool(best[0], best[1]);
    return true;
  }

  private removePool(key: string, entry: DatabasePool): void {
    this.pools.delete(key);
    entry.pool.close();
    this.log.debug({ database: entry.database, user: entry.user }, 'pool removed: no clients and no servers');
    void this.deps.metrics.forgetPool('postgres', this.config.name, entry.database, entry.user);
  }

  /**
   * The secret carries the issuing worker: secret % workers = worker index (always 0 with one
   * process). The secret, not the pid, because in session mode the pid is the real backend's
   * (pg_backend_pid() matches it) and cannot be chosen.
   */
  issueKey(client: ClientSession, pid: number | undefined): { pid: number; secret: number } {
    const count = this.deps.worker?.count ?? 1;
    const index = this.deps.worker?.index ?? 0;
    const draw = () => randomInt(1, Math.floor(0x7fffffff / count)) * count + index;
    let secret = draw();
    while (this.keys.has(secret)) secret = draw();
    this.keys.set(secret, client);
    return { pid: pid ?? this.nextPid++, secret };
  }

  dropKey(client: ClientSession): void {
    if (this.keys.get(client.key.secret) === client) this.keys.delete(client.key.secret);
  }

  /**
   * A CancelRequest. CancelRequests arrive on a new connection, which the kernel or the cluster
   * may hand to any worker: one for a key another worker issued is relayed to that worker.
   */
  cancel(pid: number, secret: number): void {
    const seat = this.deps.worker;
    if (seat && secret > 0 && secret % seat.count !== seat.index) {
      this.metrics.cancel('relayed');
      seat.forwardCancel(secret % seat.count, this.name, pid, secret);
      return;
    }
    this.cancelOwn(pid, secret);
  }

  /** A cancel for a key this process issued: forwarded to the server that client holds now, with that server's key; else dropped. */
  private cancelOwn(pid: number, secret: number): void {
    const client = this.keys.get(secret);
    const server = client?.cancelTarget;
    if (!client || client.key.pid !== pid || !server || client.state !== 'active') {
      this.metrics.cancel('dropped');
      return;
    }
    this.metrics.cancel('forwarded');
    server.sendCancel(this.config.timeouts.connect);
  }

  loggedIn(_client: ClientSession): void {}

  gone(client: ClientSession): void {
    this.sessions.delete(client);
  }

  /** Per-client timeouts, checked in one sweep instead of a timer per client. */
  private sweep(): void {
    const now = Date.now();
    for (const client of this.sessions) client.checkTimeouts(now);
    this.reclaimIdlePools(now);
  }

  // ─────────────── Listener ───────────────

  drain(): void {
    this.accepting = false;
    this.draining = true;
    this.server?.close();
    for (const client of [...this.sessions]) client.drain();
    for (const entry of this.pools.values()) entry.pool.close();
  }

  clientCount(): number {
    return this.sessions.size;
  }

  close(): void {
    this.accepting = false;
    this.draining = true;
    this.server?.close();
    clearInterval(this.janitor);
    for (const client of [...this.sessions]) client.fatal('57P01', 'sluice is shutting down');
    for (const entry of this.pools.values()) {
      entry.pool.close();
      for (const server of [...entry.pool.active]) server.terminate();
    }
  }

  reload(raw: unknown): ReloadOutcome {
    const next = raw as PostgresListenerConfig;
    const needsRestart: string[] = [];
    if (next.listen !== this.config.listen) needsRestart.push('listen');
    const prev = this.config;
    const serverChanged = JSON.stringify(prev.server) !== JSON.stringify(next.server);
    this.config = { ...next, listen: prev.listen };
    this.applyUsers();
    try {
      this.tlsContext = this.loadTls();
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'cannot load tls files; keeping the previous ones');
    }
    if (serverChanged) this.passthrough.forgetAll();
    this.passthrough.reconfigure(passthroughLimits(this.config));
    for (const entry of this.pools.values()) {
      entry.pool.reconfigure(this.poolOptions());
      if (serverChanged) {
        entry.welcomeParams = undefined;
        entry.pool.retireAll();
      }
    }
    return { needsRestart };
  }

  // ─────────────── AdminControls ───────────────

  private poolsOf(database?: string): DatabasePool[] {
    return [...this.pools.values()].filter((entry) => database === undefined || entry.database === database);
  }

  pause(database?: string): number {
    const pools = this.poolsOf(database);
    for (const entry of pools) entry.pool.pause();
    return pools.length;
  }

  resume(database?: string): number {
    const pools = this.poolsOf(database);
    for (const entry of pools) entry.pool.resume();
    return pools.length;
  }

  reconnect(database?: string): number {
    const pools = this.poolsOf(database);
    for (const entry of pools) entry.pool.retireAll();
    return pools.length;
  }

  clients(): ConnectionInfo[] {
    return [...this.sessions].filter((client) => client.state !== 'login' && client.state !== 'closed').map((client) => client.describe(this.config.name));
  }

  servers(): ConnectionInfo[] {
    const out: ConnectionInfo[] = [];
    for (const entry of this.pools.values()) {
      const describe = (server: ServerConnection, state: string): ConnectionInfo => ({
        protocol: 'postgres',
        pool: this.config.name,
        database: entry.database,
        user: entry.user,
        state,
        addr: server.socket.remoteAddress ?? '',
        port: server.socket.remotePort ?? 0,
        localAddr: server.socket.localAddress ?? '',
        localPort: server.socket.localPort ?? 0,
        connectTime: new Date(server.openedAtMs),
        requestTime: new Date(server.idleSinceMs),
        waitSeconds: 0,
        id: `pg-s${server.id}`,
        link: server.holder instanceof ClientSession ? `pg-c${server.holder.id}` : '',
      });
      for (const server of entry.pool.idle) out.push(describe(server, 'idle'));
      for (const server of entry.pool.active) out.push(describe(server, server.holder instanceof ClientSession ? 'active' : 'used'));
    }
    return out;
  }

  snapshot(): ListenerSnapshot {
    const now = Date.now();
    return {
      protocol: 'postgres',
      name: this.config.name,
      listen: this.config.listen,
      upstream: `${this.config.server.host}:${this.config.server.port}`,
      poolMode: this.config.pool_mode,
      clients: this.sessions.size,
      pools: [...this.pools.values()].map((entry) => ({
        database: entry.database,
        user: entry.user,
        stats: entry.pool.stats(now),
        clientsActive: entry.clients.active.size,
        clientsWaiting: entry.clients.waiting.size,
        clientsIdle: entry.clients.idle.size,
        pinned: entry.pinned.size,
        dedicated: 0,
      })),
      totals: this.totals,
      upstreamReachable: this.upstreamReachable,
      accepting: this.accepting,
    };
  }
}

function passthroughLimits(config: PostgresListenerConfig): PassthroughLimits {
  const p = config.passthrough;
  return {
    maxConcurrent: p.max_verifications,
    maxPerUser: p.max_user_verifications,
    maxQueued: p.max_queued_verifications,
    failureDelayMs: p.failure_delay,
    maxFailureDelayMs: p.max_failure_delay,
    recheckMs: p.recheck_interval,
    maxTracked: p.max_tracked,
  };
}

/** The SQLSTATE of the server's ErrorResponse that ended an upstream login, if the server sent one. */
function loginSqlstate(err: unknown): string | undefined {
  // ConnectError reasons from the login read "<SQLSTATE> <message>" (server-connection.ts LoginRun)
  return /^cannot connect to upstream \S+: ([0-9A-Z]{5}) /.exec((err as Error).message)?.[1];
}

/** No client of any state and no server connection, opening ones included. */
function poolIsEmpty(entry: DatabasePool): boolean {
  return poolIsUnused(entry) && entry.pool.idle.length === 0;
}

/** No client and no server lent, opening or being cleaned: at most idle servers. */
function poolIsUnused(entry: DatabasePool): boolean {
  return entry.clientCount === 0 && entry.pool.active.size === 0 && entry.pool.opening.size === 0 && entry.pool.waiting === 0 && entry.pinned.size === 0;
}
