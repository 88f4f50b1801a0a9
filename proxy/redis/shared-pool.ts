// The shared connections of one (user, database, protocol): up to pool_size pipelined upstream
// connections, all in use at once by many clients. Unlike proxy/pool/pool.ts nothing is lent out:
// a client's requests are queued on the least busy connection, or on the one that still holds
// its earlier replies. Lost connections are replaced on demand, with back-off after failures.
import type { SluiceError } from '../errors.js';
import type { RespVersion } from './resp-values.js';
import { type ServerInfo, Upstream, type UpstreamEvents, type UpstreamOptions } from './upstream.js';

export interface SharedPoolOptions extends Omit<UpstreamOptions, 'delayMs' | 'db' | 'resp'> {
  size: number;
}

export interface SharedPoolHooks {
  opened(): void;
  closed(error: SluiceError | null): void;
  /** A connection logged in (true) or failed to (false). */
  reachable(up: boolean): void;
  /** The server refused every login of a pool that never worked (e.g. SELECT of a database it lacks): forget it. */
  unused(): void;
}

const RETRY_BACKOFF_MS = [0, 50, 100, 250, 500, 1000];

export class SharedPool implements UpstreamEvents {
  /** Connections taking new requests: opening or open, not retiring. */
  readonly connections: Upstream[] = [];
  /** Retiring connections still answering what was sent to them. */
  readonly retiring = new Set<Upstream>();
  private failedOpens = 0;
  private everReady = false;

  constructor(
    readonly user: string,
    readonly db: number,
    readonly resp: RespVersion,
    private options: SharedPoolOptions,
    private readonly hooks: SharedPoolHooks,
  ) {}

  /** The connection for a client with nothing in flight: an idle one, else a new one while under pool_size, else the least busy. */
  pick(): Upstream {
    let best: Upstream | null = null;
    for (const conn of this.connections) {
      if (best === null || conn.inFlight < best.inFlight) best = conn;
    }
    if (best !== null && (best.inFlight === 0 || this.connections.length >= this.options.size)) return best;
    return this.open();
  }

  /** Calls back once some connection of this pool is logged in (or the attempt failed). */
  whenReady(callback: (err: SluiceError | null, info: ServerInfo | null) => void): void {
    for (const conn of this.connections) {
      if (conn.state === 'ready') {
        callback(null, conn.serverInfo);
        return;
      }
    }
    const conn = this.pick();
    conn.whenReady((err) => callback(err, conn.serverInfo));
  }

  serverInfo(): ServerInfo | null {
    for (const conn of this.connections) if (conn.serverInfo) return conn.serverInfo;
    return null;
  }

  /** Applies pool_size and timeouts from a reload; connections beyond a smaller size retire. */
  reconfigure(options: SharedPoolOptions): void {
    this.options = options;
    const extra = this.connections.length - options.size;
    if (extra > 0) {
      const quietest = [...this.connections].sort((a, b) => a.inFlight - b.inFlight).slice(0, extra);
      for (const conn of quietest) this.retire(conn);
    }
  }

  /** Every connection stops taking requests and closes politely when its replies are in. */
  retireAll(): void {
    for (const conn of [...this.connections]) this.retire(conn);
  }

  /** Closes now; requests in flight get an error. */
  close(): void {
    for (const conn of [...this.connections, ...this.retiring]) conn.destroy('sluice is closing');
  }

  total(): number {
    return this.connections.length + this.retiring.size;
  }

  ready(): void {
    this.failedOpens = 0;
    this.everReady = true;
    this.hooks.reachable(true);
  }

  closed(conn: Upstream, error: SluiceError | null, wasReady: boolean): void {
    const i = this.connections.indexOf(conn);
    if (i >= 0) this.connections.splice(i, 1);
    this.retiring.delete(conn);
    if (!wasReady && error !== null) {
      this.failedOpens++;
      this.hooks.reachable(false);
    }
    this.hooks.closed(error);
    if (!this.everReady && conn.loginRefused && this.total() === 0) this.hooks.unused();
  }

  private retire(conn: Upstream): void {
    const i = this.connections.indexOf(conn);
    if (i >= 0) this.connections.splice(i, 1);
    if (conn.state === 'closed') return;
    this.retiring.add(conn);
    conn.quit();
  }

  private open(): Upstream {
    const delayMs = RETRY_BACKOFF_MS[Math.min(this.failedOpens, RETRY_BACKOFF_MS.length - 1)];
    const conn = new Upstream({ ...this.options, db: this.db, resp: this.resp, delayMs }, this);
    this.connections.push(conn);
    this.hooks.opened();
    return conn;
  }
}
