// Transaction pooling without surprises, as a message tap on the Postgres listener: named
// prepared statements renamed and replayed per server (prepared-statements.ts), and clients
// pinned to their server when their SQL creates session state (session-state.ts).
//
//   client-session ──fromClient(link, msg)──► tap ──► link.serverSink (rewritten / injected)
//                                               └──► link.clientSink (a reply answered locally)
//   client-session ◄─fromServer(link, msg)─── tap ──► link.clientSink (forwarded / swallowed /
//                                                     synthesised, in order)
//
// The tap sees client messages only once the client holds a ready server (it must know which
// server's statements to use), and server messages after the session did its own bookkeeping
// (ReadyForQuery, ParameterStatus). In session mode it stays out of the way.
import type { PostgresListenerConfig } from '../../config/schema.js';
import type { ReplySink } from './prepared-reply-queue.js';
import { ClientStatements, ClientStream, fromClient, ServerStatements, StatementRegistry } from './prepared-statements.js';
import { FrontendCode } from './protocol-codes.js';
import { firstPinReason } from './session-state.js';
import { scanParseMessage, scanQueryMessage } from './sql-scan.js';

/** What the tap needs of a client's link to its server (client-session.ts provides it). */
export interface SessionStateLink {
  readonly mode: 'session' | 'transaction' | 'statement';
  /** The server the client holds now (any object identifying it), undefined when none. */
  readonly serverHandle: object | undefined;
  /** The client's outbox, in order with forwarded replies. */
  readonly clientSink: ReplySink;
  /** The server's outbox, in order with forwarded requests. */
  readonly serverSink: ReplySink;
  /** Whether the client is already pinned. */
  readonly pinned: boolean;
  /** Keeps the client on its server until it leaves. */
  pin(reason: string): void;
}

interface ClientEntry {
  statements: ClientStatements;
  stream: ClientStream;
}

export class SessionStateTap {
  readonly registry = new StatementRegistry();
  private readonly clients = new WeakMap<SessionStateLink, ClientEntry>();
  private readonly servers = new WeakMap<object, ServerStatements>();

  constructor(
    private readonly options: { preparedStatements: boolean; maxPreparedStatements: number; pinOnSessionState: boolean },
  ) {}

  /** A client message bound for the client's server; true when the tap wrote what the server gets. */
  fromClient(link: SessionStateLink, type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): boolean {
    if (link.mode === 'session') return false;
    if (first && this.options.pinOnSessionState && !link.pinned && (type === FrontendCode.query || type === FrontendCode.parse)) {
      const effects = type === FrontendCode.query ? scanQueryMessage(buf, start, end) : scanParseMessage(buf, start, end);
      const reason = firstPinReason(effects);
      if (reason) link.pin(reason);
    }
    if (!this.options.preparedStatements) return false;
    const server = this.serverOf(link);
    if (server === undefined) return false;
    const client = this.clientOf(link);
    fromClient(client.statements, client.stream, server, type, buf, start, end, first, last, link.serverSink, link.clientSink);
    return true;
  }

  /** A server message for the client; true when the tap wrote what the client gets. */
  fromServer(link: SessionStateLink, type: number, buf: Buffer, start: number, end: number, first: boolean, _last: boolean): boolean {
    if (link.mode === 'session' || !this.options.preparedStatements) return false;
    const server = this.serverOf(link);
    if (server === undefined) return false;
    server.replies.onServerMessage(type, buf, start, end, first, link.clientSink);
    return true;
  }

  /** The client gave its server back (idle, nothing outstanding). */
  serverReleased(link: SessionStateLink): void {
    const server = link.serverHandle && this.servers.get(link.serverHandle);
    server?.setClient(undefined);
  }

  /** The client left; `serverHandle` is the server it held, if any, with replies maybe outstanding. */
  clientClosed(link: SessionStateLink, serverHandle: object | undefined): void {
    this.clients.get(link)?.statements.close();
    this.clients.delete(link);
    const server = serverHandle && this.servers.get(serverHandle);
    if (server && !server.replies.idle) server.abandon();
    else server?.setClient(undefined);
  }

  /** A server connection closed: its statements went with it. */
  serverClosed(serverHandle: object): void {
    this.servers.get(serverHandle)?.close();
    this.servers.delete(serverHandle);
  }

  /** The statements of a server (tests, SHOW). */
  statementsOf(serverHandle: object): ServerStatements | undefined {
    return this.servers.get(serverHandle);
  }

  private clientOf(link: SessionStateLink): ClientEntry {
    let entry = this.clients.get(link);
    if (entry === undefined) {
      entry = { statements: new ClientStatements(this.registry), stream: new ClientStream() };
      this.clients.set(link, entry);
    }
    return entry;
  }

  private serverOf(link: SessionStateLink): ServerStatements | undefined {
    const handle = link.serverHandle;
    if (handle === undefined) return undefined;
    let server = this.servers.get(handle);
    if (server === undefined) {
      server = new ServerStatements(this.registry, this.options.maxPreparedStatements);
      this.servers.set(handle, server);
    }
    return server;
  }
}

/** The tap for a listener, or undefined when it has nothing to do (session mode, features off). */
export function createSessionStateTap(config: PostgresListenerConfig): SessionStateTap | undefined {
  if (config.pool_mode === 'session') return undefined;
  if (!config.prepared_statements && !config.pin_on_session_state) return undefined;
  return new SessionStateTap({
    preparedStatements: config.prepared_statements,
    maxPreparedStatements: config.max_prepared_statements,
    pinOnSessionState: config.pin_on_session_state,
  });
}
