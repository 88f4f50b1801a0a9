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
//   chunk end  ─► serverChunkEnd ─► replies due after the chunk's last message (a batch ending in
//                                   Flush gets no later server message that would push them out)
//   server gone ─► serverClosed ─► its statement cache is dropped
//
// Self-healing: from the first Bind/Describe of a renamed statement in a batch (nothing executed
// before it in that batch) to the batch's Sync, the client's messages are kept by reference
// (bounded by MAX_RETRY_BYTES). When the server rejects the statement with 0A000 "cached plan
// must not change result type" or 26000 (it lost the statement), the batch began outside a
// transaction block and nothing was pipelined after its Sync, the statement is healed and the
// failed part sent again at once; the server, skipping to that Sync, runs it right after:
//
//   client:  B(q) D E S                          server gets: B(sluice_1) D E S
//   server:  E 0A000 … Z(I)   ── swallowed ──►   sluice sends: C(sluice_1) P(sluice_2) B(sluice_2) D E S
//   server:  3 1 2 T D… C Z   ── 3 1 swallowed ► client gets: 2 T D… C Z
//
// Session pins: SessionPins (session-state.ts) per pinned client; its ReadyForQuery, errors and
// ROLLBACK tags decide when a removal (UNLISTEN *, DISCARD ALL, …) took effect and the pin ends.
//
// Rewriting needs to know which server gets the message (what is prepared there), which in
// transaction mode is decided only when the client acquires one — hence the holding.
// In session mode the tap stays out of the way.
import type { PostgresListenerConfig } from '../../config/schema.js';
import type { MessageTap, TapLink } from './message-tap.js';
import { currentSeq, type Expectation, type ReplySink } from './prepared-reply-queue.js';
import { type BatchRetrier, ClientStatements, ClientStream, fromClient, namesClientStatement, ServerStatements, StatementRegistry } from './prepared-statements.js';
import { BackendCode, byteSet, FrontendCode } from './protocol-codes.js';
import { firstPinReason, SessionPins } from './session-state.js';
import { commandTagEffect, scanParseMessage, scanQueryMessage } from './sql-scan.js';

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
/** Extended-protocol messages after which a batch has executed something (no retry past them). */
const EXECUTES = byteSet(FrontendCode.bind, FrontendCode.execute, FrontendCode.query, FrontendCode.functionCall);
/** Most client bytes kept per batch for a retry; a bigger batch is never retried. */
export const MAX_RETRY_BYTES = 256 * 1024;

interface HeldMessage {
  type: number;
  buf: Buffer;
  start: number;
  end: number;
}

/**
 * The client's messages of the batch in flight, from the first Bind/Describe of a renamed
 * statement to the Sync, by reference (the framer's buffers are never reused), with the reply
 * stamp before each so an error can be traced to the message it answers.
 */
interface RetryBatch {
  messages: HeldMessage[];
  /** currentSeq() before messages[i] was sent: its expectations have larger stamps. */
  seqs: number[];
  bytes: number;
  /** Its Sync is in: nothing after it was sent yet (else the batch is dropped). */
  complete: boolean;
  retried: boolean;
}

interface ClientEntry extends BatchRetrier {
  statements: ClientStatements;
  stream: ClientStream;
  /** Messages that arrived while the client held no server. */
  held: HeldMessage[];
  /** Present once the client's SQL created session state (pin_on_session_state). */
  pins: SessionPins | undefined;
  /** The batch that may be sent again after a heal. */
  batch: RetryBatch | undefined;
  /** Nothing executed since the last Sync: a batch starting now can be retried from its start. */
  batchFresh: boolean;
  toServer: ReplySink;
  toClient: ReplySink;
}

export interface SessionStateOptions {
  preparedStatements: boolean;
  maxPreparedStatements: number;
  /** Named statements one client may hold; the Parse of one more closes the client. */
  maxClientStatements?: number;
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
    if (this.options.pinOnSessionState && (type === FrontendCode.query || type === FrontendCode.parse)) {
      const effects = type === FrontendCode.query ? scanQueryMessage(buf, start, end) : scanParseMessage(buf, start, end);
      if (effects !== undefined && (client.pins !== undefined || firstPinReason(effects) !== undefined)) {
        client.pins ??= new SessionPins();
        const reason = client.pins.sent(effects, link.pendingSyncs, type === FrontendCode.query);
        if (reason) link.pin(reason);
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
    this.send(client, this.serverOf(link.serverId), type, buf, start, end, last);
    link.countSent(type);
    return true;
  }

  fromServer(link: TapLink, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean {
    if (link.mode === 'session') return false;
    const client = this.clients.get(link);
    if (client === undefined) return false;
    const pins = client.pins;
    if (pins !== undefined && (type === BackendCode.errorResponse || (type === BackendCode.commandComplete && commandTagEffect(buf, start, end) === 'rollback'))) pins.failed();
    const taken = this.replyFromServer(link, client, type, buf, start, end, last);
    if (pins !== undefined && type === BackendCode.readyForQuery && !taken) {
      // a ReadyForQuery the client gets (not one of a batch sluice sent again)
      const ended = pins.ready(buf[start + 5]);
      if (ended !== undefined) link.unpin(ended);
    }
    return taken;
  }

  /** The prepared-statement side of fromServer: true when the tap wrote or swallowed the message. */
  private replyFromServer(link: TapLink, client: ClientEntry, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean {
    if (!this.options.preparedStatements || link.serverId === undefined) return false;
    const server = this.servers.get(link.serverId);
    if (server === undefined) return false;
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

  serverChunkEnd(link: TapLink): void {
    if (link.serverId === undefined) return;
    const server = this.servers.get(link.serverId);
    const client = this.clients.get(link);
    if (server !== undefined && client !== undefined) server.replies.drainLocal(client.toClient);
  }

  serverAssigned(link: TapLink): void {
    if (link.mode === 'session' || !this.options.preparedStatements || link.serverId === undefined) return;
    const server = this.serverOf(link.serverId);
    // the previous client left with requests outstanding: the pooler rolled the server back
    // without us, so what it holds is unknown
    if (!server.replies.idle) server.abandon();
    const client = this.clientOf(link);
    server.retrier = client;
    const held = client.held;
    client.held = [];
    for (const m of held) this.send(client, server, m.type, m.buf, m.start, m.end, true);
  }

  serverReleased(link: TapLink): void {
    if (link.serverId === undefined) return;
    const server = this.servers.get(link.serverId);
    if (server === undefined) return;
    server.setClient(undefined);
    server.retrier = undefined;
  }

  serverClosed(serverId: number): void {
    const server = this.servers.get(serverId);
    if (server === undefined) return;
    this.servers.delete(serverId);
    server.close();
  }

  /** The statements of a server (tests, SHOW). */
  statementsOf(serverId: number): ServerStatements | undefined {
    return this.servers.get(serverId);
  }

  /** Ids of the servers with per-server state (tests). */
  serverIds(): number[] {
    return [...this.servers.keys()];
  }

  /** Server connections with per-server state (tests: it must not grow as servers come and go). */
  get serverCount(): number {
    return this.servers.size;
  }

  /** Why a client is pinned now, or [] (tests, SHOW). */
  pinReasons(link: TapLink): string[] {
    return this.clients.get(link)?.pins?.reasons() ?? [];
  }

  /** One whole client message (or the first piece of a long one) to its server, kept for a retry when it belongs to a retryable batch. */
  private send(client: ClientEntry, server: ServerStatements, type: number, buf: Buffer, start: number, end: number, last: boolean): void {
    let batch = client.batch;
    // anything after a recorded Sync would be answered before a retry of that batch
    if (batch?.complete) batch = client.batch = undefined;
    if (batch === undefined && client.batchFresh && last && namesClientStatement(client.statements, type, buf, start, end)) {
      batch = client.batch = { messages: [], seqs: [], bytes: 0, complete: false, retried: false };
    }
    if (batch !== undefined) {
      if (!last || batch.bytes + (end - start) > MAX_RETRY_BYTES) client.batch = undefined;
      else {
        batch.messages.push({ type, buf, start, end });
        batch.seqs.push(currentSeq());
        batch.bytes += end - start;
        if (type === FrontendCode.sync) batch.complete = true;
      }
    }
    // a Sync ends a batch, and so does a Query or FunctionCall (its own ReadyForQuery)
    if (type === FrontendCode.sync || type === FrontendCode.query || type === FrontendCode.functionCall) client.batchFresh = true;
    else if (EXECUTES[type] === 1) client.batchFresh = false;
    fromClient(client.statements, client.stream, server, type, buf, start, end, true, last, client.toServer, client.toClient);
  }

  private clientOf(link: TapLink): ClientEntry {
    let entry = this.clients.get(link);
    if (entry === undefined) {
      const created: ClientEntry = {
        statements: new ClientStatements(this.registry, this.options.maxClientStatements, (count) => clientStatementLimitReached(link, count)),
        stream: new ClientStream(),
        held: [],
        pins: undefined,
        batch: undefined,
        batchFresh: true,
        toServer: { add: (b, s, e) => link.toServer(b, s, e), addBuffer: (b) => link.toServer(b) },
        toClient: { add: (b, s, e) => link.toClient(b, s, e), addBuffer: (b) => link.toClient(b) },
        retry: (server, failed) => retryBatch(created, server, failed),
      };
      entry = created;
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
 * After a healed error on `failed`: sends the client's batch again from the message that failed,
 * when nothing in the batch before it executed and nothing was sent after the batch's Sync.
 */
function retryBatch(client: ClientEntry, server: ServerStatements, failed: Expectation): boolean {
  const batch = client.batch;
  if (batch === undefined || !batch.complete || batch.retried || failed.seq === undefined) return false;
  let from = batch.seqs.length - 1;
  while (from >= 0 && batch.seqs[from] >= failed.seq) from--;
  if (from < 0) return false;
  for (let i = 0; i < from; i++) if (EXECUTES[batch.messages[i].type] === 1) return false;
  batch.retried = true;
  for (let i = from; i < batch.messages.length; i++) {
    const m = batch.messages[i];
    fromClient(client.statements, client.stream, server, m.type, m.buf, m.start, m.end, true, true, client.toServer, client.toClient);
  }
  return true;
}

/**
 * The tap for a listener, or undefined when both features are off. A session-mode listener gets
 * one too (it steps aside per client in session mode) so a reload to transaction mode finds it.
 */
/** A client holds max_client_prepared_statements names and Parsed one more: sluice holds each client's texts, so this is where it stops. */
function clientStatementLimitReached(link: TapLink, count: number): void {
  link.error('FATAL', '53400', `sluice: more than ${count} named prepared statements on one connection (max_client_prepared_statements); close (DEALLOCATE) statements no longer needed`);
}

export function createSessionStateTap(config: PostgresListenerConfig): SessionStateTap | undefined {
  if (!config.prepared_statements && !config.pin_on_session_state) return undefined;
  return new SessionStateTap({
    preparedStatements: config.prepared_statements,
    maxPreparedStatements: config.max_prepared_statements,
    maxClientStatements: config.max_client_prepared_statements,
    pinOnSessionState: config.pin_on_session_state,
  });
}
