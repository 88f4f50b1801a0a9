// One pool per (database, user): the generic Pool of server connections, the clients of that
// pair on their state lists, the welcome parameters servers of this pool report, and the
// metric handles. Clients change list only through `moveClient()`.
import type { PoolMetrics } from '../../metrics/metrics.js';
import { Pool, type CloseReason, type Connector, type PoolOptions } from '../pool/pool.js';
import type { ServerConnection, ServerHandler } from './server-connection.js';

export type ClientState = 'login' | 'idle' | 'waiting' | 'active' | 'closed';

/** What the pool needs to know of a client; client-session.ts implements it. */
export interface PoolClient {
  state: ClientState;
}

export class DatabasePool implements ServerHandler {
  readonly pool: Pool<ServerConnection>;
  readonly clients: Record<Exclude<ClientState, 'login' | 'closed'>, Set<PoolClient>> = {
    idle: new Set(),
    waiting: new Set(),
    active: new Set(),
  };
  /** Pinned clients (session mode, or pinned by session state). */
  readonly pinned = new Set<PoolClient>();
  /** ParameterStatus values a server of this pool reported at login; the welcome for new clients. */
  welcomeParams: Map<string, string> | undefined;
  /** Date.now() since when the pool has had no clients and no servers; 0 while it has some (the listener removes it after timeouts.pool_idle). */
  emptySinceMs = 0;

  constructor(
    readonly database: string,
    readonly user: string,
    options: PoolOptions,
    connector: Connector<ServerConnection>,
    readonly metrics: PoolMetrics,
  ) {
    this.pool = new Pool(options, connector);
  }

  /** The one place a client of this pool changes state. */
  moveClient(client: PoolClient, to: ClientState): void {
    const from = client.state;
    if (from === to) return;
    if (from !== 'login' && from !== 'closed') this.clients[from].delete(client);
    if (to !== 'login' && to !== 'closed') this.clients[to].add(client);
    if (to === 'closed') this.pinned.delete(client);
    client.state = to;
  }

  get clientCount(): number {
    return this.clients.idle.size + this.clients.waiting.size + this.clients.active.size;
  }

  /** Records a server's reported parameters as the welcome for later clients. */
  learnWelcome(server: ServerConnection): void {
    if (!this.welcomeParams) this.welcomeParams = new Map(server.params);
  }

  // An idle server in the pool: async messages are dropped, a close removes it.
  onServerFrame(server: ServerConnection, type: number, buf: Buffer, start: number, end: number): void {
    if (type === 0x53) {
      // ParameterStatus can arrive while idle (e.g. after ALTER ROLE ... SET); keep params current.
      const text = buf.toString('utf8', start + 5, end);
      const [name, value] = text.split('\0');
      if (name) server.setParam(name, value ?? '');
    } else if (type === 0x45) {
      // An ErrorResponse on an idle server is a FATAL (admin shutdown, terminate_backend).
      server.destroy();
    }
  }

  onServerChunkEnd(): void {}

  onServerClosed(server: ServerConnection): void {
    this.pool.remove(server, 'error' satisfies CloseReason);
  }
}
