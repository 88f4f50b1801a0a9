// Transaction pooling without surprises, as the listener's message tap (message-tap.ts): named
// prepared statements renamed and replayed per server (prepared-statements.ts), and clients
// pinned to their server when their SQL creates session state (session-state.ts).
//
//   client msg ─► fromClient ─┬─ no server yet: held here, in order (a zero-length placeholder in
//                             │  the session's server outbox makes it acquire one)
//                             └─ server known: rewritten/injected ─► link.toServer
//                                                answered locally  ─► link.toClient (in order)
//   serverAssigned ─► the held messages go out, rewritten for that server
//   server msg ─► fromServer ─► swallowed | written here (ends of requests the pooler ignores,
//                               then the replies due after them) | left to the pooler (rows, COPY,
//                               ReadyForQuery, CommandComplete, ParameterStatus, errors)
//
// Rewriting needs to know which server gets the message (what is prepared there), which in
// transaction mode is decided only when the client acquires one — hence the holding.
// In session mode the tap stays out of the way.
import type { PostgresListenerConfig } from '../../config/schema.js';
import type { MessageTap, TapLink } from './message-tap.js';
import type { ReplySink } from './prepared-reply-queue.js';
import { ClientStatements, ClientStream, fromClient, ServerStatements, StatementRegistry } from './prepared-statements.js';
import { BackendCode, byteSet, FrontendCode } from './protocol-codes.js';
import { firstPinReason } from './session-state.js';
import { scanParseMessage, scanQueryMessage } from './sql-scan.js';

/**
 * Server replies that end a request the pooler does not look at: after them a synthesised reply
 * may be due, so the tap writes them itself and then the due replies. Every other forwarded
 * message goes back to the pooler, which forwards it as a slice of what it received (merged
 * writes for rows and COPY data) and sees what it must (ReadyForQuery, CommandComplete,
 * ParameterStatus, COPY, errors); replies due after a CommandComplete or ReadyForQuery go out
 * before the next server message.
 */
const TAP_WRITES = byteSet(
  BackendCode.parseComplete,
  BackendCode.bindComplete,
  BackendCode.closeComplete,
  BackendCode.rowDescription,
  BackendCode.noData,
  BackendCode.emptyQueryResponse,
  BackendCode.portalSuspended,
);
/** Client messages with no reply of their own and nothing to rewrite: left to the pooler. */
const CLIENT_PASS = byteSet(FrontendCode.copyData, FrontendCode.copyDone, FrontendCode.copyFail, FrontendCode.flush);

const PLACEHOLDER = Buffer.alloc(0);

interface HeldMessage {
  type: number;
  buf: Buffer;
  start: number;
  end: number;
}

interface ClientEntry {
  statements: ClientStatements;
  stream: ClientStream;
  /** Messages that arrived while the client held no server. */
  held: HeldMessage[];
  pinned: boolean;
  toServer: ReplySink;
  toClient: ReplySink;
}

export interface SessionStateOptions {
  preparedStatements: boolean;
  maxPreparedStatements: number;
  pinOnSessionState: boolean;
}

export class SessionStateTap implements MessageTap {
  readonly registry = new StatementRegistry();
  private readonly clients = new WeakMap<TapLink, ClientEntry>();
  // The seam has no "client gone" call: when a session is collected, its statements are released
  // (the registry drops texts nobody uses any more).
  private readonly goneClients = new FinalizationRegistry<ClientStatements>((statements) => statements.close());
  /** Per server connection id. */
  private readonly servers = new Map<number, ServerStatements>();

  constructor(private readonly options: SessionStateOptions) {}

  fromClient(link: TapLink, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean {
    if (link.mode === 'session') return false;
    const client = this.clientOf(link);
    if (this.options.pinOnSessionState && !client.pinned && (type === FrontendCode.query || type === FrontendCode.parse)) {
      const reason = firstPinReason(type === FrontendCode.query ? scanQueryMessage(buf, start, end) : scanParseMessage(buf, start, end));
      if (reason) {
        client.pinned = true;
        link.pin(reason);
      }
    }
    if (!this.options.preparedStatements) return false;
    if (CLIENT_PASS[type] === 1 && link.serverId !== undefined && client.held.length === 0) return false;
    if (link.serverId === undefined || client.held.length > 0) {
      if (!last) {
        // the rest of this message would reach the server ahead of the held ones
        link.error('FATAL', '54000', 'sluice: a message over 64 KiB cannot follow extended-protocol messages that wait for a server');
        return true;
      }
      if (client.held.length === 0) link.toServer(PLACEHOLDER);
      client.held.push({ type, buf, start, end });
      link.countSent(type);
      return true;
    }
    // a long Query or CopyData arrives in pieces: the tap sees the first, the pooler streams the rest after it
    fromClient(client.statements, client.stream, this.serverOf(link.serverId), type, buf, start, end, true, last, client.toServer, client.toClient);
    link.countSent(type);
    return true;
  }

  fromServer(link: TapLink, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean {
    if (link.mode === 'session' || !this.options.preparedStatements || link.serverId === undefined) return false;
    const server = this.servers.get(link.serverId);
    const client = this.clients.get(link);
    if (server === undefined || client === undefined) return false;
    const sink = client.toClient;
    if (!server.replies.classify(type, buf, start, end, sink)) {
      server.replies.drainLocal(sink);
      return true;
    }
    if (TAP_WRITES[type] !== 1 || !last) return false;
    sink.add(buf, start, end);
    server.replies.drainLocal(sink);
    return true;
  }

  serverAssigned(link: TapLink): void {
    if (link.mode === 'session' || !this.options.preparedStatements || link.serverId === undefined) return;
    const server = this.serverOf(link.serverId);
    // the previous client left with requests outstanding: the pooler rolled the server back
    // without us, so what it holds is unknown
    if (!server.replies.idle) server.abandon();
    const client = this.clientOf(link);
    const held = client.held;
    client.held = [];
    for (const m of held) fromClient(client.statements, client.stream, server, m.type, m.buf, m.start, m.end, true, true, client.toServer, client.toClient);
  }

  serverReleased(link: TapLink): void {
    if (link.serverId !== undefined) this.servers.get(link.serverId)?.setClient(undefined);
  }

  /** The statements of a server (tests, SHOW). */
  statementsOf(serverId: number): ServerStatements | undefined {
    return this.servers.get(serverId);
  }

  private clientOf(link: TapLink): ClientEntry {
    let entry = this.clients.get(link);
    if (entry === undefined) {
      entry = {
        statements: new ClientStatements(this.registry),
        stream: new ClientStream(),
        held: [],
        pinned: false,
        toServer: { add: (b, s, e) => link.toServer(b, s, e), addBuffer: (b) => link.toServer(b) },
        toClient: { add: (b, s, e) => link.toClient(b, s, e), addBuffer: (b) => link.toClient(b) },
      };
      this.clients.set(link, entry);
      this.goneClients.register(link, entry.statements);
    }
    return entry;
  }

  private serverOf(id: number): ServerStatements {
    let server = this.servers.get(id);
    if (server === undefined) {
      server = new ServerStatements(this.registry, this.options.maxPreparedStatements);
      this.servers.set(id, server);
    }
    return server;
  }
}

/**
 * The tap for a listener, or undefined when both features are off. A session-mode listener gets
 * one too (it steps aside per client in session mode) so a reload to transaction mode finds it.
 */
export function createSessionStateTap(config: PostgresListenerConfig): SessionStateTap | undefined {
  if (!config.prepared_statements && !config.pin_on_session_state) return undefined;
  return new SessionStateTap({
    preparedStatements: config.prepared_statements,
    maxPreparedStatements: config.max_prepared_statements,
    pinOnSessionState: config.pin_on_session_state,
  });
}
