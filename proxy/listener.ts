// What every protocol listener offers the process: bind, drain, close, reload, and a snapshot
// of its state for metrics and /status. The process (proxy/sluice.ts) drives listeners only
// through this interface, so it knows nothing of Postgres or Redis.
import type { Server } from 'node:net';
import { parseHostPort } from './address.js';
import { ListenError } from './errors.js';
import type { Metrics } from '../metrics/metrics.js';
import type { AdminContext } from './admin/admin-console.js';
import type { Logger } from './log.js';
import type { PoolStats } from './pool/pool.js';

export type Protocol = 'postgres' | 'redis';

/** What the process hands every listener it creates. */
export interface ListenerDeps {
  log: Logger;
  metrics: Metrics;
  /** The admin console's view of the process (the Postgres listener serves database "sluice" with it). */
  admin?: AdminContext;
  /** Set when this process is worker `index` of `count` (config `workers` > 1; proxy/cluster/). */
  worker?: WorkerSeat;
}

/**
 * A worker's place among its siblings, for the few things that cross processes. Postgres cancel
 * keys carry the issuing worker's index; a CancelRequest that lands on another worker is relayed
 * through the primary to the owner, which alone knows the session.
 */
export interface WorkerSeat {
  readonly index: number;
  readonly count: number;
  /** Relays a CancelRequest to worker `owner`, for its listener named `listener`. */
  forwardCancel(owner: number, listener: string, pid: number, secret: number): void;
  /** Registers what to run when a sibling relays a CancelRequest for `listener` here. */
  onForwardedCancel(listener: string, handler: (pid: number, secret: number) => void): void;
  /** Asks the primary to re-read the config and hand it to every worker (admin RELOAD). */
  requestReload(trigger: string): void;
}

/** One pool's state at a moment, as metrics and SHOW POOLS see it. */
export interface PoolSnapshot {
  database: string;
  user: string;
  stats: PoolStats;
  /** Clients of this pool holding a server now. */
  clientsActive: number;
  /** Clients of this pool waiting for a server now. */
  clientsWaiting: number;
  /** Clients of this pool connected and neither active nor waiting. */
  clientsIdle: number;
  /** Clients pinned to a server beyond a transaction (Postgres) or holding a dedicated connection (Redis). */
  pinned: number;
  /** Dedicated (non-shared) upstream connections open now (Redis). */
  dedicated: number;
}

/** Running totals a listener keeps as plain numbers (cheap on the hot path); metrics turn them into counters. */
export interface ListenerTotals {
  bytesReceived: number;
  bytesSent: number;
  /** Postgres: transactions completed; Redis: unused. */
  transactions: number;
  /** Postgres: queries (Query or Execute) completed; Redis: commands answered. */
  queries: number;
}

export interface ListenerSnapshot {
  protocol: Protocol;
  name: string;
  listen: string;
  upstream: string;
  /** Postgres: session | transaction | statement. */
  poolMode?: string;
  clients: number;
  pools: PoolSnapshot[];
  totals: ListenerTotals;
  /** Whether the upstream answered at the last check (a successful connect or a live connection). */
  upstreamReachable: boolean;
  accepting: boolean;
}

export interface ReloadOutcome {
  /** Keys whose change needs a restart (e.g. listen), reported, not applied. */
  needsRestart: string[];
}

export interface Listener {
  readonly protocol: Protocol;
  readonly name: string;
  /** Binds the listen address. Rejects with ListenError. */
  start(): Promise<void>;
  /** Stops accepting; closes clients that are between transactions; lets the rest finish, then closes them. */
  drain(): void;
  /** Clients still connected; the drain is over when it is 0. */
  clientCount(): number;
  /** Closes everything now (shutdown_timeout passed, or a second signal). */
  close(): void;
  /** Applies a new config for this listener (same name). */
  reload(config: unknown): ReloadOutcome;
  snapshot(): ListenerSnapshot;
}

/** Binds a net.Server to "host:port", turning EADDRINUSE and friends into a ListenError naming the address. */
export function bindServer(server: Server, address: string): Promise<void> {
  const { host, port } = parseHostPort(address);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      const reason = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EADDRNOTAVAIL' ? 'address not available' : err.message;
      reject(new ListenError(address, reason, { cause: err }));
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host, port, backlog: 4096 });
  });
}
