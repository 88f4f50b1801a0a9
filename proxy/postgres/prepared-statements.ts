// Protocol-level named prepared statements in transaction and statement mode (the PgBouncer
// ≥ 1.21 design, with its known gaps closed): each client's statement names map to sluice-wide
// names, one per unique (query text, parameter types); each server connection remembers which
// of those it has prepared (an LRU bounded by max_prepared_statements); client messages are
// rewritten on the way in and the replies put in order on the way out.
//
//   StatementRegistry (one per process)      "SELECT … $1" + [int4]  ─►  sluice_3f9a01c2_17
//        ▲ resolve                                   (refcounted: dropped when nobody uses it)
//   ClientStatements (one per client)         "s1" ─► sluice_3f9a01c2_17   (only what this client Parsed)
//   ServerStatements (one per server conn)    LRU { sluice_3f9a01c2_17, … }  + Closes owed + ReplyQueue
//
//   client msg ─► fromClient(client, server, …) ─► bytes for the server (rewritten, or with a Parse
//                                                   injected first) + one Expectation per request
//   server msg ─► server.replies.onServerMessage(…) ─► forwarded / swallowed / synthesised, in order
//
// What a client message becomes (S = the sluice name of the client's statement):
//   Parse "n" (new name), S prepared here   → nothing sent; ParseComplete synthesised in order
//   Parse "n" (new name), S not prepared    → Parse S sent; its ParseComplete forwarded
//   Parse "n" (name already used)           → Parse S sent again so the server answers 42P05 as
//                                             it would directly (the name in the error is mapped back)
//   Bind/Describe 'S' "n", S not prepared   → Parse S injected first, its ParseComplete swallowed
//   Close 'S' "n"                           → client mapping forgotten, CloseComplete synthesised
//                                             (the server keeps S for whoever needs it next)
//   unnamed statements, portals, unknown    → forwarded untouched (the server answers as directly,
//   names, Execute, Sync, Query, COPY          e.g. 26000 for a name the client never Parsed)
//
// Every effect is applied when the message is sent (later messages in the same pipeline see it)
// and undone if the server rejects or skips the request (a failed Parse leaves no mapping:
// supavisor #1175, odyssey #1361). Closes of evicted statements are sent only at a batch boundary
// (first message after a Sync), where nothing can make the server skip them. In an aborted
// transaction a Parse is answered locally only for COMMIT/ROLLBACK-like text; other Parses go to
// the server, which answers 25P02 as it would directly.
import { createHash } from 'node:crypto';
import { type Expectation, type ReplyHooks, ReplyQueue, type ReplySink, errorMessageOf, nextSeq, renameInError } from './prepared-reply-queue.js';
import { BackendCode, FrontendCode, TxStatus } from './protocol-codes.js';
import { type CommandTagEffect, commandTagEffect, isTransactionExitStatement, scanQueryMessage } from './sql-scan.js';

/** One unique (query text, parameter types), under its sluice-wide name. */
export interface SharedStatement {
  /** The Parse body after the name (text, NUL, count, type OIDs) as latin1: exact and unique. */
  readonly key: string;
  readonly name: string;
  /** The Parse message under `name`, ready to send. */
  readonly parse: Buffer;
  /** Where the query text sits in `parse`. */
  readonly textStart: number;
  readonly textEnd: number;
  /** Client mappings and server caches holding it. */
  refs: number;
  /** Replaced after `cached plan must not change result type`: never prepared again under this name. */
  retired: boolean;
}

const NAME_PREFIX = 'sluice_';

/** Sluice-wide names per (text, types). Names never repeat: a short hash for readability plus a counter. */
export class StatementRegistry {
  private readonly byKey = new Map<string, SharedStatement>();
  private counter = 0;

  get size(): number {
    return this.byKey.size;
  }

  /** The statement for Parse bytes buf[textStart..end) (text, NUL, int16 count, OIDs). */
  resolve(buf: Buffer, textStart: number, end: number): SharedStatement {
    const key = buf.toString('latin1', textStart, end);
    const known = this.byKey.get(key);
    if (known) return known;
    const hash = createHash('sha1').update(buf.subarray(textStart, end)).digest('hex').slice(0, 8);
    const name = `${NAME_PREFIX}${hash}_${++this.counter}`;
    const parse = parseUnder(name, buf, textStart, end);
    const textStartInParse = 6 + Buffer.byteLength(name);
    const textEnd = parse.indexOf(0, textStartInParse);
    const statement: SharedStatement = { key, name, parse, textStart: textStartInParse, textEnd, refs: 0, retired: false };
    this.byKey.set(key, statement);
    return statement;
  }

  /** The current statement for the same text and types as `old` (a new name once `old` is retired). */
  current(old: SharedStatement): SharedStatement {
    if (!old.retired) return old;
    const at = old.textStart;
    return this.resolve(old.parse, at, old.parse.length);
  }

  retain(statement: SharedStatement): void {
    statement.refs++;
  }

  release(statement: SharedStatement): void {
    if (--statement.refs <= 0) this.dropIfUnused(statement);
  }

  dropIfUnused(statement: SharedStatement): void {
    if (statement.refs <= 0 && this.byKey.get(statement.key) === statement) this.byKey.delete(statement.key);
  }

  /** After DDL changed its result type: later Parses of this text get a fresh name. */
  retire(statement: SharedStatement): void {
    statement.retired = true;
    if (this.byKey.get(statement.key) === statement) this.byKey.delete(statement.key);
  }
}

interface ClientStatement {
  statement: SharedStatement;
  /** When the client's Parse was sent (DEALLOCATE ALL clears only what existed before it ran). */
  seq: number;
  /** Its Parse was rejected or skipped: never to be put back. */
  dead?: boolean;
}

/** One client's named statements: its names → sluice statements. */
export class ClientStatements {
  readonly names = new Map<string, ClientStatement>();

  constructor(
    readonly registry: StatementRegistry,
    /** Most names this client may hold (max_client_prepared_statements). */
    readonly maxNames = Number.POSITIVE_INFINITY,
    /** Called instead of mapping one more name past maxNames; the caller closes the client. */
    readonly overLimit: (maxNames: number) => void = () => {},
  ) {}

  /** The sluice name a client name maps to now, if any (for logs, tests, SHOW). */
  sluiceName(clientName: string): string | undefined {
    return this.names.get(clientName)?.statement.name;
  }

  /** Forgets mappings created before `seq` (DISCARD ALL / DEALLOCATE ALL ran at `seq`). */
  clearBefore(seq: number): void {
    for (const [name, entry] of this.names) {
      if (entry.seq < seq) {
        this.names.delete(name);
        this.registry.release(entry.statement);
      }
    }
  }

  /** The client disconnected. */
  close(): void {
    this.clearBefore(Number.POSITIVE_INFINITY);
  }
}

/** A statement prepared on one server; the same object while it is evicted and taken back. */
export interface CachedStatement {
  statement: SharedStatement;
  seq: number;
  /** The Parse that put it there was rejected or skipped, or the server said it lacks it. */
  dead?: boolean;
}

/** What an entry in the reply queue refers to, for healing and renaming errors. */
interface StatementContext {
  statement: SharedStatement;
  clientName: string;
  client: ClientStatements;
}

function isStatementContext(context: unknown): context is StatementContext {
  return typeof context === 'object' && context !== null && 'clientName' in context;
}

/** What ServerStatements reports after an error on one of its statements. */
export interface HealReport {
  sqlstate: string;
  statement: string;
  clientName: string;
  /** Re-preparing and re-running the batch would be invisible to the client (no result reached it, not inside a transaction block). */
  retrySafe: boolean;
}

/**
 * Whoever can send the failed part of a batch again (the tap, which keeps a copy of the client's
 * messages): returns true when it did, after the statement was healed on this server.
 */
export interface BatchRetrier {
  retry(server: ServerStatements, failed: Expectation): boolean;
}

/** One server connection's prepared sluice statements (LRU, oldest first) and its reply queue. */
export class ServerStatements implements ReplyHooks {
  /** Map order is LRU order: a touch deletes and re-inserts. */
  readonly prepared = new Map<string, CachedStatement>();
  /** Evicted while a batch was open: closed at the next batch boundary. */
  readonly closesOwed: CachedStatement[] = [];
  /** Held aside by a DEALLOCATE ALL not yet confirmed. */
  readonly stashed = new Set<CachedStatement>();
  readonly replies: ReplyQueue;
  /** True after a Sync (and initially): nothing before the next message can make the server skip it. */
  atBatchBoundary = true;
  /** The last error healed on this server (tests and metrics). */
  lastHeal: HealReport | undefined;
  /** Batches sent again after a heal, on this server. */
  retries = 0;
  /** Set by the tap for the client this server answers now; undefined: errors pass through. */
  retrier: BatchRetrier | undefined;
  /** The client whose messages this server is answering (set by fromClient). */
  private client: ClientStatements | undefined;

  constructor(
    readonly registry: StatementRegistry,
    readonly maxPrepared: number,
  ) {
    this.replies = new ReplyQueue(this);
  }

  has(name: string): boolean {
    return this.prepared.has(name);
  }

  /** Sluice names prepared here, least recently used first. */
  names(): string[] {
    return [...this.prepared.keys()];
  }

  /**
   * The client left with replies outstanding; the core rolls the server back and reads them
   * without us. What those requests did is unknown, so every statement here is closed (a Close
   * of a missing statement is no error) before anything is prepared again.
   */
  abandon(): void {
    const known = [...this.prepared.values()];
    // undoes what the outstanding requests assumed, and puts back Closes in flight as owed
    this.replies.clear();
    for (const cached of known) {
      if (this.prepared.get(cached.statement.name) === cached) this.prepared.delete(cached.statement.name);
      else this.registry.retain(cached.statement); // a Parse in flight, undone: it may have run
      // uncertain now: a Close is owed, and the statement must not be taken back from it
      cached.dead = true;
      this.closesOwed.push(cached);
    }
    for (const cached of this.prepared.values()) {
      cached.dead = true;
      this.closesOwed.push(cached);
    }
    this.prepared.clear();
    this.replies.txStatus = TxStatus.idle;
    this.atBatchBoundary = true;
    this.client = undefined;
  }

  /** The server connection closed: forget everything. */
  close(): void {
    this.replies.clear();
    for (const cached of this.prepared.values()) this.registry.release(cached.statement);
    this.prepared.clear();
    for (const owed of this.closesOwed) this.registry.release(owed.statement);
    this.closesOwed.length = 0;
  }

  onError(failed: Expectation, sqlstate: string, buf: Buffer, start: number, end: number, retrySafe: boolean): Buffer | 'retry' | undefined {
    const context = failed.context;
    if (!isStatementContext(context)) return undefined;
    const { statement, clientName } = context;
    let healed = false;
    if (sqlstate === '26000') {
      // the server lost it (someone ran DEALLOCATE with its name): it is not prepared here
      this.forget(statement, false);
      this.lastHeal = { sqlstate, statement: statement.name, clientName, retrySafe };
      healed = true;
    } else if (sqlstate === '0A000' && errorMessageOf(buf, start, end).includes('cached plan must not change result type')) {
      // DDL changed the result type: this name is stale everywhere; close it here, re-prepare fresh
      this.registry.retire(statement);
      this.forget(statement, true);
      this.lastHeal = { sqlstate, statement: statement.name, clientName, retrySafe };
      healed = true;
    }
    // the heal is done: sending the request again now prepares the statement afresh
    if (healed && retrySafe && this.retrier?.retry(this, failed)) {
      this.retries++;
      return 'retry';
    }
    // "prepared statement "sluice_…" does not exist / already exists": say the client's name
    const quoted = `"${statement.name}"`;
    const at = buf.indexOf(quoted, start + 5);
    return at < 0 || at >= end ? undefined : renameInError(buf, start, end, quoted, `"${clientName}"`);
  }

  onCommandComplete(entry: Expectation, buf: Buffer, start: number, end: number): void {
    const effect: CommandTagEffect | undefined = commandTagEffect(buf, start, end);
    if (effect !== 'discard-all' && effect !== 'deallocate-all') return;
    if (entry.context instanceof DeallocateAll) {
      entry.context.confirmed = true;
      return;
    }
    // everything prepared on this server before that statement ran is gone, and so are the
    // client's statements (as on a direct connection); later pipelined Parses survive
    const seq = entry.seq ?? Number.POSITIVE_INFINITY;
    for (const [name, cached] of this.prepared) {
      if (cached.seq < seq) {
        this.prepared.delete(name);
        this.registry.release(cached.statement);
      }
    }
    for (let i = this.closesOwed.length - 1; i >= 0; i--) {
      if (this.closesOwed[i].seq < seq) this.registry.release(this.closesOwed.splice(i, 1)[0].statement);
    }
    (entry.context instanceof ClientStatements ? entry.context : this.client)?.clearBefore(seq);
  }

  /** Removes a statement from this server's cache; with `close`, owes the server a Close for it. */
  private forget(statement: SharedStatement, close: boolean): void {
    const cached = this.prepared.get(statement.name);
    if (cached?.statement !== statement) {
      for (const stashed of this.stashed) if (stashed.statement === statement) stashed.dead = true;
      return;
    }
    this.prepared.delete(statement.name);
    if (close) this.closesOwed.push(cached);
    else this.registry.release(statement);
  }

  setClient(client: ClientStatements | undefined): void {
    this.client = client;
  }
}

function deallocatesAll(buf: Buffer, start: number, end: number): boolean {
  const effects = scanQueryMessage(buf, start, end);
  return effects?.some((e) => (e.kind === 'deallocate' || e.kind === 'discard') && e.name === 'all') ?? false;
}

/**
 * A simple Query with DEALLOCATE ALL or DISCARD ALL, applied when sent (messages pipelined after
 * it must see the statements gone, as the server will) and put back unless its CommandComplete
 * tag confirms it ran.
 */
class DeallocateAll {
  confirmed = false;
  private readonly names: [string, ClientStatement][];
  private readonly cached: CachedStatement[];
  private readonly owed: CachedStatement[];

  constructor(
    private readonly client: ClientStatements,
    private readonly server: ServerStatements,
  ) {
    this.names = [...client.names];
    client.names.clear();
    this.cached = [...server.prepared.values()];
    server.prepared.clear();
    this.owed = server.closesOwed.splice(0);
    for (const cached of this.cached) server.stashed.add(cached);
    for (const owed of this.owed) server.stashed.add(owed);
  }

  settle(): void {
    const registry = this.server.registry;
    for (const cached of this.cached) this.server.stashed.delete(cached);
    for (const owed of this.owed) this.server.stashed.delete(owed);
    if (this.confirmed) {
      for (const [, entry] of this.names) registry.release(entry.statement);
      for (const cached of this.cached) registry.release(cached.statement);
      for (const owed of this.owed) registry.release(owed.statement);
      return;
    }
    for (const [name, entry] of this.names) {
      if (entry.dead || this.client.names.has(name)) registry.release(entry.statement);
      else this.client.names.set(name, entry);
    }
    for (const cached of this.cached) {
      if (cached.dead || this.server.prepared.has(cached.statement.name)) registry.release(cached.statement);
      else this.server.prepared.set(cached.statement.name, cached);
    }
    for (const owed of this.owed) {
      if (owed.dead) registry.release(owed.statement);
      else this.server.closesOwed.push(owed);
    }
  }
}

/** Where requests go: the server's outbox (proxy/postgres/outbox.ts has this shape). */
export type RequestSink = ReplySink;

/** Whether a whole Bind or Describe message names one of the client's (renamed) statements. */
export function namesClientStatement(client: ClientStatements, type: number, buf: Buffer, start: number, end: number): boolean {
  if (client.names.size === 0) return false;
  let at: number;
  if (type === FrontendCode.bind) {
    const portalEnd = cstringEnd(buf, start + 5, end);
    if (portalEnd < 0) return false;
    at = portalEnd + 1;
  } else if (type === FrontendCode.describe && buf[start + 5] === 0x53) at = start + 6;
  else return false;
  const nameEnd = cstringEnd(buf, at, end);
  return nameEnd > at && client.names.has(buf.toString('utf8', at, nameEnd));
}

const PARSE_COMPLETE = Buffer.from([BackendCode.parseComplete, 0, 0, 0, 4]);
const CLOSE_COMPLETE = Buffer.from([BackendCode.closeComplete, 0, 0, 0, 4]);

function closeMessage(name: string): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(7 + nameBytes);
  out[0] = FrontendCode.close;
  out.writeInt32BE(6 + nameBytes, 1);
  out[5] = 0x53; // 'S'
  out.write(name, 6, 'utf8');
  out[6 + nameBytes] = 0;
  return out;
}

/** A Parse of the body buf[bodyStart..end) (text, types) under `name`. */
function parseUnder(name: string, buf: Buffer, bodyStart: number, end: number): Buffer {
  const nameBytes = Buffer.byteLength(name);
  const out = Buffer.allocUnsafe(6 + nameBytes + (end - bodyStart));
  out[0] = FrontendCode.parse;
  out.writeInt32BE(out.length - 1, 1);
  out.write(name, 5, 'utf8');
  out[5 + nameBytes] = 0;
  buf.copy(out, 6 + nameBytes, bodyStart, end);
  return out;
}

/** Describe 'S' (or Close 'S') under another name. */
function statementTargetMessage(type: number, name: string): Buffer {
  const out = closeMessage(name);
  out[0] = type;
  return out;
}

/** End of the C string starting at `at` (index of its NUL), or -1 when it does not end before `end`. */
function cstringEnd(buf: Buffer, at: number, end: number): number {
  const nul = buf.indexOf(0, at);
  return nul < 0 || nul >= end ? -1 : nul;
}

/** Bind prefix bytes collected while a long Bind arrives in pieces; bounded. */
interface BindHead {
  bytes: Buffer[];
  have: number;
}
const MAX_BIND_HEAD_BYTES = 4096;

/**
 * Per-client state of a Bind being streamed in pieces (the framer streams long messages):
 * the head is collected until both names are in, then rewritten; the rest passes through.
 */
export class ClientStream {
  head: BindHead | undefined;
  passThrough = false;
}

/**
 * One client message (or piece of one) bound for `server`: writes what the server should get to
 * `out`, queues the expected replies, and writes any reply answerable at once to `reply`.
 * Parse, Describe and Close must arrive whole; Bind may arrive in pieces.
 */
export function fromClient(
  client: ClientStatements,
  stream: ClientStream,
  server: ServerStatements,
  type: number,
  buf: Buffer,
  start: number,
  end: number,
  first: boolean,
  last: boolean,
  out: RequestSink,
  reply: ReplySink,
): void {
  server.setClient(client);
  if (!first || !last) {
    pieceFromClient(client, stream, server, type, buf, start, end, first, last, out, reply);
    return;
  }
  switch (type) {
    case FrontendCode.parse:
      onParse(client, server, buf, start, end, out, reply);
      return;
    case FrontendCode.bind:
      onBind(client, server, buf, start, end, end - start, out, reply);
      return;
    case FrontendCode.describe:
    case FrontendCode.close:
      onStatementTarget(client, server, type, buf, start, end, out, reply);
      return;
    case FrontendCode.execute:
      payClosesOwed(server, out, reply);
      out.add(buf, start, end);
      server.replies.push({ reply: 'execute', action: 'forward', context: client }, reply);
      server.atBatchBoundary = false;
      return;
    case FrontendCode.sync:
      out.add(buf, start, end);
      server.replies.push({ reply: 'sync', action: 'forward' }, reply);
      server.atBatchBoundary = true;
      return;
    case FrontendCode.query:
      out.add(buf, start, end);
      if (deallocatesAll(buf, start, end)) {
        const deallocate = new DeallocateAll(client, server);
        const settle = () => deallocate.settle();
        server.replies.push({ reply: 'simple', action: 'forward', context: deallocate, onDone: settle, onUndo: settle }, reply);
      } else server.replies.push({ reply: 'simple', action: 'forward', context: client }, reply);
      return;
    case FrontendCode.functionCall:
      out.add(buf, start, end);
      server.replies.push({ reply: 'simple', action: 'forward', context: client }, reply);
      return;
    default:
      // Flush, COPY data, Terminate: no reply of their own
      out.add(buf, start, end);
  }
}

function pieceFromClient(
  client: ClientStatements,
  stream: ClientStream,
  server: ServerStatements,
  type: number,
  buf: Buffer,
  start: number,
  end: number,
  first: boolean,
  last: boolean,
  out: RequestSink,
  reply: ReplySink,
): void {
  if (first) {
    stream.passThrough = type !== FrontendCode.bind;
    stream.head = stream.passThrough ? undefined : { bytes: [], have: 0 };
    if (type === FrontendCode.execute) {
      server.replies.push({ reply: 'execute', action: 'forward', context: client }, reply);
      server.atBatchBoundary = false;
    } else if (type === FrontendCode.query || type === FrontendCode.functionCall) {
      server.replies.push({ reply: 'simple', action: 'forward', context: client }, reply);
    } else if (type === FrontendCode.parse || type === FrontendCode.describe || type === FrontendCode.close) {
      // contract broken (these must come whole): forward as is and expect the reply
      const kind = type === FrontendCode.parse ? 'parse' : type === FrontendCode.close ? 'close' : 'describe-portal';
      server.replies.push({ reply: kind, action: 'forward' }, reply);
      server.atBatchBoundary = false;
    }
  }
  if (stream.passThrough) {
    out.add(buf, start, end);
    return;
  }
  // a streamed Bind: collect its head until the portal and statement names are complete
  const head = stream.head!;
  head.bytes.push(Buffer.from(buf.subarray(start, end)));
  head.have += end - start;
  const joined = head.bytes.length === 1 ? head.bytes[0] : Buffer.concat(head.bytes);
  head.bytes = [joined];
  const portalEnd = joined.length > 5 ? cstringEnd(joined, 5, joined.length) : -1;
  const statementEnd = portalEnd < 0 ? -1 : cstringEnd(joined, portalEnd + 1, joined.length);
  if (statementEnd < 0 && head.have < MAX_BIND_HEAD_BYTES && !last) return;
  stream.head = undefined;
  stream.passThrough = true;
  if (statementEnd < 0) {
    // names longer than any PostgreSQL identifier: not ours to rewrite
    out.addBuffer(joined);
    server.replies.push({ reply: 'bind', action: 'forward' }, reply);
    server.atBatchBoundary = false;
    return;
  }
  onBind(client, server, joined, 0, joined.length, joined.readInt32BE(1) + 1, out, reply);
}

/** Owed Closes go out first when nothing earlier in the batch can make the server skip them. */
function payClosesOwed(server: ServerStatements, out: RequestSink, reply: ReplySink): void {
  if (!server.atBatchBoundary || server.closesOwed.length === 0) return;
  for (const { statement } of server.closesOwed.splice(0)) {
    out.addBuffer(closeMessage(statement.name));
    server.replies.push(
      {
        reply: 'close',
        action: 'swallow',
        onDone: () => server.registry.release(statement),
        // only when its reply will never be read (abandon): owed again
        onUndo: () => server.closesOwed.push({ statement, seq: nextSeq(), dead: true }),
      },
      reply,
    );
  }
}

/** Makes room for one more statement on `server`, evicting the least recently used. */
function evictForOne(server: ServerStatements, keep: SharedStatement): void {
  while (server.prepared.size >= server.maxPrepared) {
    const [name, oldest] = server.prepared.entries().next().value as [string, CachedStatement];
    if (oldest.statement === keep) break;
    server.prepared.delete(name);
    server.closesOwed.push(oldest);
  }
}

/** Marks `statement` prepared on `server` (sent now); returns the undo. */
function cache(server: ServerStatements, statement: SharedStatement): () => void {
  evictForOne(server, statement);
  const cached: CachedStatement = { statement, seq: nextSeq() };
  server.prepared.set(statement.name, cached);
  server.registry.retain(statement);
  return () => {
    cached.dead = true;
    if (server.prepared.get(statement.name) === cached) {
      server.prepared.delete(statement.name);
      server.registry.release(statement);
    } else {
      const owed = server.closesOwed.indexOf(cached);
      if (owed >= 0) {
        server.closesOwed.splice(owed, 1);
        server.registry.release(statement);
      }
    }
  };
}

/**
 * Whether `statement` is usable on `server` now: touches it in the LRU, or takes back a Close
 * still owed for it (the server has not dropped it yet).
 */
function touch(server: ServerStatements, statement: SharedStatement): boolean {
  const cached = server.prepared.get(statement.name);
  if (cached) {
    server.prepared.delete(statement.name);
    server.prepared.set(statement.name, cached);
    return true;
  }
  const owed = server.closesOwed.findIndex((c) => c.statement === statement && !c.dead);
  if (owed < 0) return false;
  const [revived] = server.closesOwed.splice(owed, 1);
  evictForOne(server, statement);
  // the owed Close held the reference; the cache takes it over
  server.prepared.set(statement.name, revived);
  return true;
}

/** Before a Bind or Describe of `statement`: injects its Parse when the server lacks it. */
function ensurePrepared(server: ServerStatements, statement: SharedStatement, context: StatementContext, out: RequestSink, reply: ReplySink): void {
  if (touch(server, statement)) return;
  const undo = cache(server, statement);
  payClosesOwed(server, out, reply);
  out.addBuffer(statement.parse);
  server.replies.push({ reply: 'parse', action: 'swallow', onUndo: undo, context }, reply);
  server.atBatchBoundary = false;
}

/** The client's current statement for a name, moved off a retired sluice name. */
function currentStatement(client: ClientStatements, entry: ClientStatement): SharedStatement {
  if (!entry.statement.retired) return entry.statement;
  const fresh = client.registry.current(entry.statement);
  client.registry.retain(fresh);
  client.registry.release(entry.statement);
  entry.statement = fresh;
  return fresh;
}

function onParse(client: ClientStatements, server: ServerStatements, buf: Buffer, start: number, end: number, out: RequestSink, reply: ReplySink): void {
  const nameEnd = cstringEnd(buf, start + 5, end);
  if (nameEnd < 0 || nameEnd === start + 5) {
    // unnamed (or malformed: the server will say so)
    payClosesOwed(server, out, reply);
    out.add(buf, start, end);
    server.replies.push({ reply: 'parse', action: 'forward' }, reply);
    server.atBatchBoundary = false;
    return;
  }
  const clientName = buf.toString('utf8', start + 5, nameEnd);
  const existing = client.names.get(clientName);
  if (existing) {
    // a second Parse of a name in use fails on a direct connection: with the new text's own
    // error if it has one (the server parses before it checks the name), else 42P05. Send the
    // new text under the sluice name the server already has, and let the server decide.
    const statement = currentStatement(client, existing);
    const context: StatementContext = { statement, clientName, client };
    ensurePrepared(server, statement, context, out, reply);
    payClosesOwed(server, out, reply);
    const again = parseUnder(statement.name, buf, nameEnd + 1, end);
    out.addBuffer(again);
    server.atBatchBoundary = false;
    // ParseComplete means the first Parse of the name failed after all (it was in an earlier
    // batch of the same pipeline): the client now has the name with this text, and the server
    // has our old name with this text, which it must not keep under a name that says otherwise.
    const adopt = () => {
      const registry = client.registry;
      const fresh = registry.resolve(again, 6 + Buffer.byteLength(statement.name), again.length);
      const current = client.names.get(clientName);
      if (current === undefined || current.dead) {
        if (current) {
          client.names.delete(clientName);
          registry.release(current.statement);
        }
        client.names.set(clientName, { statement: fresh, seq: nextSeq() });
        registry.retain(fresh);
      } else registry.dropIfUnused(fresh);
      server.closesOwed.push({ statement, seq: nextSeq() });
      registry.retain(statement);
    };
    server.replies.push({ reply: 'parse', action: 'forward', context, onDone: adopt }, reply);
    return;
  }
  if (client.names.size >= client.maxNames) {
    // nothing is sent: the client is closed, so no reply order is owed
    client.overLimit(client.maxNames);
    return;
  }
  const statement = client.registry.resolve(buf, nameEnd + 1, end);
  const mapping: ClientStatement = { statement, seq: nextSeq() };
  client.names.set(clientName, mapping);
  client.registry.retain(statement);
  const unmap = () => {
    mapping.dead = true;
    if (client.names.get(clientName) === mapping) {
      client.names.delete(clientName);
      client.registry.release(mapping.statement);
    }
  };
  const context: StatementContext = { statement, clientName, client };
  const aborted = server.replies.txStatus === TxStatus.failed;
  if (touch(server, statement) && (!aborted || isTransactionExitStatement(statement.parse, statement.textStart, statement.textEnd))) {
    server.replies.push({ reply: 'local', action: 'synthesize', synthesized: PARSE_COMPLETE, onUndo: unmap }, reply);
    return;
  }
  if (server.prepared.has(statement.name)) {
    // aborted transaction: the server answers 25P02 before it would notice the name exists
    payClosesOwed(server, out, reply);
    out.addBuffer(statement.parse);
    server.replies.push({ reply: 'parse', action: 'forward', onUndo: unmap, context }, reply);
    server.atBatchBoundary = false;
    return;
  }
  const uncache = cache(server, statement);
  payClosesOwed(server, out, reply);
  out.addBuffer(statement.parse);
  server.replies.push(
    {
      reply: 'parse',
      action: 'forward',
      onUndo: () => {
        unmap();
        uncache();
      },
      context,
    },
    reply,
  );
  server.atBatchBoundary = false;
}

function onBind(
  client: ClientStatements,
  server: ServerStatements,
  buf: Buffer,
  start: number,
  end: number,
  declaredLength: number,
  out: RequestSink,
  reply: ReplySink,
): void {
  const portalEnd = cstringEnd(buf, start + 5, end);
  const statementEnd = portalEnd < 0 ? -1 : cstringEnd(buf, portalEnd + 1, end);
  const entry = statementEnd > portalEnd + 1 ? client.names.get(buf.toString('utf8', portalEnd + 1, statementEnd)) : undefined;
  if (entry === undefined) {
    payClosesOwed(server, out, reply);
    out.add(buf, start, end);
    server.replies.push({ reply: 'bind', action: 'forward' }, reply);
    server.atBatchBoundary = false;
    return;
  }
  const clientName = buf.toString('utf8', portalEnd + 1, statementEnd);
  const statement = currentStatement(client, entry);
  const context: StatementContext = { statement, clientName, client };
  ensurePrepared(server, statement, context, out, reply);
  payClosesOwed(server, out, reply);
  // header, portal, the sluice name, then the rest as it came
  const nameBytes = Buffer.byteLength(statement.name);
  const portalBytes = portalEnd + 1 - (start + 5);
  const rest = end - (statementEnd + 1);
  const out0 = Buffer.allocUnsafe(5 + portalBytes + nameBytes + 1 + rest);
  out0[0] = FrontendCode.bind;
  const newLength = declaredLength - (statementEnd - portalEnd - 1) + nameBytes;
  out0.writeInt32BE(newLength - 1, 1);
  buf.copy(out0, 5, start + 5, portalEnd + 1);
  out0.write(statement.name, 5 + portalBytes, 'utf8');
  out0[5 + portalBytes + nameBytes] = 0;
  buf.copy(out0, 6 + portalBytes + nameBytes, statementEnd + 1, end);
  out.addBuffer(out0);
  server.replies.push({ reply: 'bind', action: 'forward', context }, reply);
  server.atBatchBoundary = false;
}

function onStatementTarget(
  client: ClientStatements,
  server: ServerStatements,
  type: number,
  buf: Buffer,
  start: number,
  end: number,
  out: RequestSink,
  reply: ReplySink,
): void {
  const isDescribe = type === FrontendCode.describe;
  const target = buf[start + 5];
  const nameEnd = cstringEnd(buf, start + 6, end);
  const entry = target === 0x53 && nameEnd > start + 6 ? client.names.get(buf.toString('utf8', start + 6, nameEnd)) : undefined;
  if (entry === undefined) {
    payClosesOwed(server, out, reply);
    out.add(buf, start, end);
    const kind = !isDescribe ? 'close' : target === 0x53 ? 'describe-statement' : 'describe-portal';
    server.replies.push({ reply: kind, action: 'forward' }, reply);
    server.atBatchBoundary = false;
    return;
  }
  const clientName = buf.toString('utf8', start + 6, nameEnd);
  if (!isDescribe) {
    // Close of a statement: the client forgets it; the server keeps it for the next client
    client.names.delete(clientName);
    server.replies.push(
      {
        reply: 'local',
        action: 'synthesize',
        synthesized: CLOSE_COMPLETE,
        onDone: () => client.registry.release(entry.statement),
        onUndo: () => {
          if (client.names.has(clientName) || entry.dead) client.registry.release(entry.statement);
          else client.names.set(clientName, entry);
        },
      },
      reply,
    );
    return;
  }
  const statement = currentStatement(client, entry);
  const context: StatementContext = { statement, clientName, client };
  ensurePrepared(server, statement, context, out, reply);
  payClosesOwed(server, out, reply);
  out.addBuffer(statementTargetMessage(FrontendCode.describe, statement.name));
  server.replies.push({ reply: 'describe-statement', action: 'forward', context }, reply);
  server.atBatchBoundary = false;
}
