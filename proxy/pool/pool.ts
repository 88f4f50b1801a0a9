// A bounded pool of upstream connections, lent to one waiter at a time. It knows nothing of
// Postgres or Redis: a Connector opens and closes connections, the protocol code borrows them.
//
// State is the list a connection is on, moved only by `move()`:
//
//   opening ──open ok──▶ idle ◀──release── active
//      │                  │  └──acquire──▶   │
//      └──open failed     └──retire/idle──▶ closed ◀──remove/retired on release
//
// Waiters queue FIFO. A single timer is armed for the head waiter's deadline (every waiter has
// the same acquire timeout, so the head always expires first): no timer per waiter.
import { AcquireTimeoutError, ConnectError, PoolClosedError, type SluiceError } from '../errors.js';

export type ServerState = 'opening' | 'idle' | 'active' | 'closed';

export type CloseReason = 'idle' | 'lifetime' | 'error' | 'reset-failed' | 'session-state' | 'retired' | 'shutdown' | 'resize';

/** What the pool keeps on each connection it lends. Protocol code extends it. */
export interface PooledConnection {
  poolState: ServerState;
  /** Date.now() when it opened. */
  openedAtMs: number;
  /** Date.now() when it last became idle. */
  idleSinceMs: number;
  /** The pool generation it was opened under; older ones close instead of going idle. */
  generation: number;
}

export interface Connector<C extends PooledConnection> {
  /** Opens and logs in a connection. Rejects with a SluiceError; must settle within timeoutMs. */
  open(timeoutMs: number): Promise<C>;
  /** Closes a connection politely; it is already off every list. */
  close(conn: C, reason: CloseReason): void;
}

/** A borrower. `grant` may be called synchronously from acquire(). */
export interface Waiter<C> {
  grant(conn: C): void;
  fail(err: SluiceError): void;
}

/** Counters and histograms the metrics layer wants; gauges are read from stats() instead. */
export interface PoolObserver {
  waited?(waitMs: number): void;
  opened?(): void;
  closed?(reason: CloseReason): void;
  acquireTimedOut?(): void;
  connectFailed?(): void;
}

export interface PoolOptions {
  /** Used in error messages: the listener name, plus database/user where they apply. */
  name: string;
  size: number;
  minSize: number;
  acquireTimeoutMs: number;
  connectTimeoutMs: number;
  /** 0 = never close idle connections. */
  idleTimeoutMs: number;
  /** 0 = no lifetime limit. */
  lifetimeMs: number;
  /** How often idle/lifetime/min-size upkeep runs. */
  maintenanceIntervalMs?: number;
  observer?: PoolObserver;
}

export interface PoolStats {
  size: number;
  idle: number;
  active: number;
  opening: number;
  waiting: number;
  /** Milliseconds the longest-waiting waiter has waited, 0 when none. */
  oldestWaitMs: number;
  paused: boolean;
}

interface QueuedWaiter<C> {
  waiter: Waiter<C>;
  sinceMs: number;
}

const RETRY_BACKOFF_MS = [50, 100, 250, 500, 1000];

export class Pool<C extends PooledConnection> {
  readonly idle: C[] = [];
  readonly active = new Set<C>();
  readonly opening = new Set<Promise<unknown>>();
  private queue: QueuedWaiter<C>[] = [];
  private queueHead = 0;
  private acquireTimer: NodeJS.Timeout | undefined;
  private maintenanceTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failedOpens = 0;
  private generation = 0;
  private closing = false;
  private paused = false;

  constructor(
    private options: PoolOptions,
    private readonly connector: Connector<C>,
  ) {
    const every = options.maintenanceIntervalMs ?? 1000;
    this.maintenanceTimer = setInterval(() => this.maintain(), every);
    this.maintenanceTimer.unref();
    this.fillToMinimum();
  }

  get name(): string {
    return this.options.name;
  }

  get waiting(): number {
    return this.queue.length - this.queueHead;
  }

  stats(nowMs = Date.now()): PoolStats {
    const head = this.queue[this.queueHead];
    return {
      size: this.options.size,
      idle: this.idle.length,
      active: this.active.size,
      opening: this.opening.size,
      waiting: this.waiting,
      oldestWaitMs: head ? nowMs - head.sinceMs : 0,
      paused: this.paused,
    };
  }

  /** Lends a connection: synchronously when one is idle, else when one frees up or opens. */
  acquire(waiter: Waiter<C>): void {
    if (this.closing) {
      waiter.fail(new PoolClosedError(this.options.name));
      return;
    }
    if (!this.paused && this.waiting === 0) {
      // Most recently used first (warm caches); move() takes it off the idle list.
      const conn = this.idle[this.idle.length - 1];
      if (conn) {
        this.move(conn, 'active');
        this.options.observer?.waited?.(0);
        waiter.grant(conn);
        return;
      }
    }
    this.queue.push({ waiter, sinceMs: Date.now() });
    if (this.waiting === 1) this.armAcquireTimer();
    this.openIfNeeded();
  }

  /** Takes back a waiter that no longer wants a connection (its client went away). */
  cancel(waiter: Waiter<C>): boolean {
    for (let i = this.queueHead; i < this.queue.length; i++) {
      if (this.queue[i].waiter === waiter) {
        this.queue.splice(i, 1);
        return true;
      }
    }
    return false;
  }

  /** Returns a clean connection. The caller guarantees no transaction and no unread replies. */
  release(conn: C): void {
    if (conn.poolState !== 'active') return;
    if (this.closing || conn.generation !== this.generation || this.total() > this.options.size) {
      this.discard(conn, this.closing ? 'shutdown' : conn.generation !== this.generation ? 'retired' : 'resize');
      this.openIfNeeded();
      return;
    }
    if (this.options.lifetimeMs > 0 && Date.now() - conn.openedAtMs >= this.options.lifetimeMs) {
      this.discard(conn, 'lifetime');
      this.openIfNeeded();
      return;
    }
    const next = this.paused ? undefined : this.shift();
    if (next) {
      this.options.observer?.waited?.(Date.now() - next.sinceMs);
      next.waiter.grant(conn);
      return;
    }
    this.move(conn, 'idle');
  }

  /**
   * Takes in a connection opened outside the pool (the Postgres passthrough login check opens one
   * with the client's credentials): it serves the head waiter or goes idle. False when the pool is
   * full or closing; the caller then closes it.
   */
  adopt(conn: C): boolean {
    if (this.closing || this.total() >= this.options.size) return false;
    conn.poolState = 'opening';
    conn.generation = this.generation;
    this.options.observer?.opened?.();
    this.move(conn, 'active');
    this.release(conn);
    return true;
  }

  /** Closes a connection that is broken or dirty, and replaces it if someone waits. */
  remove(conn: C, reason: CloseReason): void {
    if (conn.poolState === 'closed') return;
    this.discard(conn, reason);
    this.openIfNeeded();
  }

  /** Applies new sizes and timeouts from a reload; connections beyond a smaller size close as they come back. */
  reconfigure(options: Partial<PoolOptions>): void {
    const timeoutChanged = options.acquireTimeoutMs !== undefined && options.acquireTimeoutMs !== this.options.acquireTimeoutMs;
    this.options = { ...this.options, ...options };
    if (timeoutChanged) {
      // the pending timer may be due at the old, later deadline
      clearTimeout(this.acquireTimer);
      this.acquireTimer = undefined;
      this.armAcquireTimer();
    }
    while (this.total() > this.options.size && this.idle.length > 0) {
      this.discard(this.idle[0], 'resize');
    }
    this.openIfNeeded();
    this.fillToMinimum();
  }

  /** Every connection open now is retired: idle ones close now, active ones when released. */
  retireAll(): void {
    this.generation++;
    for (const conn of [...this.idle]) this.discard(conn, 'retired');
    this.fillToMinimum();
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    while (this.waiting > 0 && this.idle.length > 0) {
      const conn = this.idle[this.idle.length - 1];
      const next = this.shift() as QueuedWaiter<C>;
      this.move(conn, 'active');
      this.options.observer?.waited?.(Date.now() - next.sinceMs);
      next.waiter.grant(conn);
    }
    this.openIfNeeded();
  }

  /** Fails every waiter, closes idle connections; active ones close as they are released. */
  close(): void {
    this.closing = true;
    clearInterval(this.maintenanceTimer);
    clearTimeout(this.acquireTimer);
    this.acquireTimer = undefined;
    clearTimeout(this.retryTimer);
    for (let next = this.shift(); next; next = this.shift()) next.waiter.fail(new PoolClosedError(this.options.name));
    for (const conn of [...this.idle]) this.discard(conn, 'shutdown');
  }

  /** Every connection the pool has lent, idles or is opening. */
  total(): number {
    return this.idle.length + this.active.size + this.opening.size;
  }

  /** The one place a connection changes list. */
  private move(conn: C, to: ServerState): void {
    const from = conn.poolState;
    if (from === to) return;
    if (from === 'idle') {
      // indexOf is -1 only by a bug elsewhere; splice(-1) would drop another connection.
      const at = this.idle.indexOf(conn);
      if (at >= 0) this.idle.splice(at, 1);
    }
    else if (from === 'active') this.active.delete(conn);
    if (to === 'idle') {
      conn.idleSinceMs = Date.now();
      this.idle.push(conn);
    } else if (to === 'active') this.active.add(conn);
    conn.poolState = to;
  }

  private discard(conn: C, reason: CloseReason): void {
    if (conn.poolState === 'closed') return;
    this.move(conn, 'closed');
    this.options.observer?.closed?.(reason);
    this.connector.close(conn, reason);
  }

  private shift(): QueuedWaiter<C> | undefined {
    if (this.queueHead >= this.queue.length) return undefined;
    const next = this.queue[this.queueHead++];
    // Compact occasionally so the array does not grow without bound under steady load.
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    if (this.queueHead >= this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    return next;
  }

  /**
   * One timer for the whole queue, due when the head waiter expires. Waiters are FIFO with the
   * same timeout, so the head's deadline only moves later: a timer armed for an earlier head
   * just fires early and re-arms. It is therefore armed only when none is pending, never
   * re-armed per grant (a clearTimeout + setTimeout per transaction under load).
   */
  private armAcquireTimer(): void {
    if (this.acquireTimer !== undefined) return;
    const head = this.queue[this.queueHead];
    if (!head || this.options.acquireTimeoutMs <= 0) return;
    const dueInMs = head.sinceMs + this.options.acquireTimeoutMs - Date.now();
    this.acquireTimer = setTimeout(() => {
      this.acquireTimer = undefined;
      this.expireWaiters();
    }, Math.max(0, dueInMs));
  }

  private expireWaiters(): void {
    const now = Date.now();
    const timeoutMs = this.options.acquireTimeoutMs;
    let head = this.queue[this.queueHead];
    while (head && now - head.sinceMs >= timeoutMs) {
      this.queueHead++;
      this.options.observer?.acquireTimedOut?.();
      head.waiter.fail(new AcquireTimeoutError(this.options.name, timeoutMs));
      head = this.queue[this.queueHead];
    }
    if (this.queueHead >= this.queue.length) {
      this.queue = [];
      this.queueHead = 0;
    }
    this.armAcquireTimer();
  }

  /** Opens connections while waiters outnumber connections on the way. */
  private openIfNeeded(): void {
    if (this.closing || this.retryTimer) return;
    while (this.waiting > this.opening.size && this.total() < this.options.size) this.openOne();
  }

  private fillToMinimum(): void {
    if (this.closing || this.retryTimer) return;
    while (this.total() < Math.min(this.options.minSize, this.options.size)) this.openOne();
  }

  private openOne(): void {
    const attempt: Promise<unknown> = this.connector.open(this.options.connectTimeoutMs).then(
      (conn) => {
        this.opening.delete(attempt);
        this.failedOpens = 0;
        conn.poolState = 'opening';
        conn.generation = this.generation;
        this.options.observer?.opened?.();
        if (this.closing) {
          this.discard(conn, 'shutdown');
          return;
        }
        // A fresh connection goes to the head waiter, else to the idle list.
        this.move(conn, 'active');
        this.release(conn);
      },
      (err: SluiceError) => {
        this.opening.delete(attempt);
        this.options.observer?.connectFailed?.();
        this.failedOpens++;
        // With nothing else alive, nobody can serve the waiters: tell them now, not at acquire timeout.
        if (this.active.size + this.idle.length + this.opening.size === 0) {
          const error = err instanceof Error ? err : new ConnectError(this.options.name, String(err));
          for (let next = this.shift(); next; next = this.shift()) next.waiter.fail(error as SluiceError);
        }
        this.scheduleRetry();
      },
    );
    this.opening.add(attempt);
  }

  private scheduleRetry(): void {
    if (this.closing || this.retryTimer) return;
    const delayMs = RETRY_BACKOFF_MS[Math.min(this.failedOpens - 1, RETRY_BACKOFF_MS.length - 1)];
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.openIfNeeded();
      this.fillToMinimum();
    }, delayMs);
    this.retryTimer.unref();
  }

  /** Closes idle connections past server_idle or lifetime, and keeps min_pool_size warm. */
  private maintain(): void {
    const now = Date.now();
    const { idleTimeoutMs, lifetimeMs, minSize } = this.options;
    for (const conn of [...this.idle]) {
      if (lifetimeMs > 0 && now - conn.openedAtMs >= lifetimeMs) this.discard(conn, 'lifetime');
      else if (idleTimeoutMs > 0 && now - conn.idleSinceMs >= idleTimeoutMs && this.total() > minSize) this.discard(conn, 'idle');
    }
    this.fillToMinimum();
  }
}
