// One client connection: frames its requests, sends each to the upstream connection that must
// serve it, passes replies back in request order, and answers connection-state commands itself.
//
// Routing, in order of precedence:
//   subscribed            → its dedicated connection, everything (pub/sub mode belongs to it)
//   holds a dedicated one → that connection (MULTI/WATCH pinned, or a blocking command in flight)
//   MULTI, WATCH, blocking, SUBSCRIBE → acquire a dedicated connection, then as above
//   AUTH, HELLO, SELECT, CLIENT …, QUIT, RESET → answered here (state never reaches a shared connection)
//   anything else         → a shared connection of its (user, db, protocol) pool; the one that
//                           holds its earlier replies while any are outstanding (read-your-writes)
//
// A request that must go somewhere other than where this client's replies are still pending
// (or be answered here) waits: the client is "stalled", its socket paused, until they are in.
// So replies always come back in order without a per-request reorder buffer.
import { timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import type { ListenerTotals } from '../listener.js';
import type { Pool, Waiter } from '../pool/pool.js';
import type { SluiceError } from '../errors.js';
import { keep, readInto } from './client-input.js';
import { classify, FORWARDED_CLIENT_SUBCOMMANDS, REFUSED_CLIENT_SUBCOMMANDS } from './command-table.js';
import { commandFamily, errorKind } from './metric-labels.js';
import { RequestFramer, type RequestKind, type RespLimits } from './resp-framer.js';
import { bulkReply, encodeRequest, encodeValue, errorReply, integerReply, requestArgs, RespMap, RespPush, type RespVersion, simpleReply } from './resp-values.js';
import type { SharedPool } from './shared-pool.js';
import { Subscriptions } from './subscriptions.js';
import type { EntryKind, ReplyTarget, ServerInfo, Upstream } from './upstream.js';

export type ClientState = 'open' | 'closing' | 'closed';

/** Why a client's input is on hold. */
export type StallReason = 'replies' | 'dedicated' | 'server';

/** What a client needs from its listener. */
export interface ClientHost {
  readonly limits: RespLimits;
  /**
   * The framer every client uses between requests: framing state only matters in the middle of
   * a request, so an idle client holds none. A client whose read ends mid-request takes this
   * one as its own and the host makes another.
   */
  sharedFramer: RequestFramer;
  readonly totals: ListenerTotals;
  readonly defaultDb: number;
  readonly draining: boolean;
  readonly maxDedicated: number;
  /** Changes whenever a shared pool is dropped, so cached pool references are looked up again. */
  readonly poolGeneration: number;
  requiresAuth(): boolean;
  /** True when the user/password pair may log in. */
  authenticate(user: string, password: Buffer): boolean;
  sharedPool(user: string, db: number, resp: RespVersion): SharedPool;
  dedicatedPool(user: string): Pool<Upstream>;
  serverInfo(): ServerInfo | null;
  clients(): Iterable<RedisClient>;
  removed(client: RedisClient): void;
  /** `user` as the client named it; `addr` its source address (for the log). */
  authFailed(user: string, addr: string): void;
  /** sluice answered an error of this kind (its prefix, or `other`). */
  errorReplied(kind: string): void;
  pinned(user: string, db: number, reason: string): void;
}

interface StalledRequest {
  raw: Buffer[];
  kind: RequestKind;
  name: string;
  reason: StallReason;
}

const OK = simpleReply('OK');
const NOAUTH = errorReply('NOAUTH Authentication required.');
/** Like Redis's client-query-buffer-limit: the most of one unfinished request held in memory. */
const QUERY_BUFFER_LIMIT_BYTES = 1024 * 1024 * 1024;
const SHUTTING_DOWN = errorReply('ERR sluice is shutting down');
const WRONGPASS = errorReply('WRONGPASS invalid username-password pair or user is disabled.');

/** The client a socket carries, so one set of socket handlers serves every client (no closures per client). */
const CLIENT = Symbol('sluice.redis.client');
type ClientSocket = Socket & { [CLIENT]: RedisClient };

function onSocketInput(this: Socket, chunk: Buffer): void {
  (this as ClientSocket)[CLIENT].onData(chunk);
}

function onSocketError(this: Socket): void {
  this.destroy();
}

function onSocketClose(this: Socket): void {
  (this as ClientSocket)[CLIENT].onClose();
}

/** Commands of a pipeline repeat: the family lookup runs once per change of name, across clients. */
let familyName = '';
let familyIndex = -1;

function familyOf(name: string): number {
  if (name !== familyName) {
    familyName = name;
    familyIndex = commandFamily(name);
  }
  return familyIndex;
}

// Memory per idle client is an issue-8 target (≤ 3 KiB, where a bare Node socket costs ~3.4 KiB):
// state that only some clients need (a framer mid-request, held input, addresses for CLIENT LIST)
// is created when needed, and the socket's handlers are shared functions.
export class RedisClient implements ReplyTarget, Waiter<Upstream> {
  state: ClientState = 'open';
  readonly createdAtMs = Date.now();
  /** performance.now() of the last read from the client. */
  lastActivityMs = performance.now();
  name: string | null = null;
  libName = '';
  libVer = '';
  user = 'default';
  authed: boolean;
  db: number;
  resp: RespVersion = 2;
  /** Requests sent upstream whose replies have not all come back. */
  outstanding = 0;
  /** The shared connection holding this client's outstanding replies. */
  bound: Upstream | null = null;
  dedicated: Upstream | null = null;
  inMulti = false;
  watching = false;
  subscribed = false;
  /** While subscribed: what the connection owes and holds, to tell when pub/sub mode is over. */
  private subscriptions: Subscriptions | null = null;
  stalled: StalledRequest | null = null;
  lastCommand = 'NULL';
  private addresses: { addr: string; laddr: string } | null = null;

  /** Own framer only while a request is unfinished; otherwise the host's shared one. */
  private framer: RequestFramer | null = null;
  /** Pieces (copies) of a request that has not ended yet. */
  private partial: Buffer[] | null = null;
  private partialBytes = 0;
  private pool: SharedPool | null = null;
  private poolGeneration = -1;
  /** Input (copies) not yet processed because the client is stalled. */
  private held: Buffer[] | null = null;
  private finalReply: Buffer | null = null;
  private settleScheduled = false;
  private acquiring = false;
  private midReply = false;
  /** Draining: new requests get SHUTTING_DOWN instead of being dropped. */
  private refusing = false;
  private pendingRefusals = 0;
  /** Command family of the request being routed (metric-labels.ts). */
  private family = -1;

  /** `socket` comes from a server created with `noDelay: true`. */
  constructor(
    readonly id: number,
    private readonly socket: Socket,
    private readonly host: ClientHost,
  ) {
    this.authed = !host.requiresAuth();
    this.db = host.defaultDb;
    (socket as ClientSocket)[CLIENT] = this;
    readInto(socket, onSocketInput);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
  }

  /** Peer address, as CLIENT LIST shows it (looked up on first use: most clients are never listed). */
  get addr(): string {
    return this.addressesOf().addr;
  }

  get laddr(): string {
    return this.addressesOf().laddr;
  }

  private addressesOf(): { addr: string; laddr: string } {
    this.addresses ??= { addr: `${this.socket.remoteAddress}:${this.socket.remotePort}`, laddr: `${this.socket.localAddress}:${this.socket.localPort}` };
    return this.addresses;
  }

  /** The client's pool is waiting (for a dedicated connection or the server), not merely slow. */
  get waiting(): boolean {
    return this.stalled !== null && this.stalled.reason !== 'replies';
  }

  // ── Input ────────────────────────────────────────────────────────────────────────────────

  /** One read from the client; `chunk` may be a view of a buffer reused by the next read (client-input.ts). */
  onData(chunk: Buffer): void {
    this.host.totals.bytesReceived += chunk.length;
    const now = performance.now();
    this.lastActivityMs = now;
    if (this.state !== 'open') {
      if (this.state === 'closing' && this.refusing) this.refuse(chunk);
      return;
    }
    if (this.stalled !== null) {
      (this.held ??= []).push(keep(chunk));
      return;
    }
    this.consume(chunk, now);
  }

  /**
   * While draining, requests that arrive are answered with an error (after the replies still
   * due), so the client learns why; dropping them would leave it waiting, and leaving them
   * unread would make the close a reset.
   */
  private refuse(chunk: Buffer): void {
    const framer = this.framer ?? this.host.sharedFramer;
    let pos = 0;
    while (pos < chunk.length) {
      let end: number;
      try {
        end = framer.next(chunk, pos);
      } catch {
        this.dropFramer(framer);
        this.refusing = false;
        return;
      }
      if (end < 0) break;
      if (framer.kind !== 'empty') {
        if (this.outstanding > 0) this.pendingRefusals++;
        else this.reply(SHUTTING_DOWN);
      }
      pos = end;
    }
    this.keepFramer(framer);
  }

  /**
   * Frames and routes every request in `chunk` (`now`: performance.now() of this read); returns
   * false when it stalled (the rest is held).
   */
  private consume(chunk: Buffer, now: number): boolean {
    const framer = this.framer ?? this.host.sharedFramer;
    const len = chunk.length;
    let pos = 0;
    let runTarget: Upstream | null = null;
    let runStart = 0;
    while (pos < len) {
      let end: number;
      try {
        end = framer.next(chunk, pos);
      } catch (err) {
        if (runTarget !== null) runTarget.write(chunk, runStart, pos);
        this.dropFramer(framer);
        this.protocolError((err as Error).message);
        return false;
      }
      if (end < 0) {
        if (runTarget !== null) runTarget.write(chunk, runStart, pos);
        this.keepFramer(framer);
        (this.partial ??= []).push(keep(chunk.subarray(pos)));
        this.partialBytes += len - pos;
        if (this.partialBytes > QUERY_BUFFER_LIMIT_BYTES) {
          // Each element is under max_bulk_bytes, but a request is held whole until it ends.
          this.protocolError('Protocol error: request larger than 1 GiB (the query buffer limit)');
          return false;
        }
        return true;
      }
      // The hot path: a complete ordinary command, for a shared connection. Consecutive ones go
      // out as one run of the read buffer (copied once into the connection's output).
      if (this.partial === null && framer.kind === 'array' && this.authed && this.dedicated === null) {
        const name = framer.name;
        if (classify(name) === 'shared') {
          const target = this.bound ?? this.pickShared();
          if (target !== runTarget) {
            if (runTarget !== null) runTarget.write(chunk, runStart, pos);
            runTarget = target;
            runStart = pos;
          }
          target.expect(this, 'reply', familyOf(name), now);
          this.outstanding++;
          pos = end;
          continue;
        }
      }
      if (runTarget !== null) runTarget.write(chunk, runStart, pos);
      runTarget = null;
      let raw: Buffer[];
      if (this.partial !== null) {
        this.partialBytes = 0;
        raw = this.partial;
        raw.push(chunk.subarray(pos, end));
        this.partial = null;
      } else raw = [chunk.subarray(pos, end)];
      const name = framer.kind === 'array' ? framer.name : '';
      if (!this.handle(raw, framer.kind, name)) {
        if (end < len && this.state === 'open') (this.held ??= []).unshift(keep(chunk.subarray(end)));
        this.keepFramer(framer);
        return false;
      }
      pos = end;
    }
    if (runTarget !== null) runTarget.write(chunk, runStart, pos);
    this.keepFramer(framer);
    return true;
  }

  /**
   * After framing a read: a client in the middle of a request keeps the framer that holds its
   * state (taking the shared one if it was that); a client between requests needs none.
   */
  private keepFramer(framer: RequestFramer): void {
    if (framer.atBoundary) this.framer = null;
    else if (framer !== this.framer) {
      this.framer = framer;
      this.host.sharedFramer = new RequestFramer(this.host.limits);
    }
  }

  /** A framer that threw is in no state to frame anything again. */
  private dropFramer(framer: RequestFramer): void {
    if (framer === this.host.sharedFramer) this.host.sharedFramer = new RequestFramer(this.host.limits);
    this.framer = null;
  }

  private pickShared(): Upstream {
    // The pool is looked up once per (user, db, protocol) change, not per pipeline.
    let pool = this.pool;
    if (pool === null || pool.user !== this.user || pool.db !== this.db || pool.resp !== this.resp || this.poolGeneration !== this.host.poolGeneration) {
      pool = this.host.sharedPool(this.user, this.db, this.resp);
      this.pool = pool;
      this.poolGeneration = this.host.poolGeneration;
    }
    const conn = pool.pick();
    this.bound = conn;
    return conn;
  }

  /** Routes one request that is not on the hot path. Returns false when the client stalled on it. */
  private handle(raw: Buffer[], kind: RequestKind, name: string): boolean {
    if (kind === 'empty') return true;
    let args: Buffer[] | null = null;
    if (kind === 'inline') {
      // Inline commands are re-encoded as RESP arrays so shared connections only see one syntax.
      args = requestArgs(Buffer.concat(raw));
      if (args.length === 0) return true;
      name = args[0].toString('latin1').toLowerCase();
      raw = [encodeRequest(args)];
    }
    const cls = classify(name);
    this.family = familyOf(name);
    const argv = (): Buffer[] => {
      if (args === null) args = requestArgs(raw.length === 1 ? raw[0] : Buffer.concat(raw));
      return args;
    };
    this.lastCommand = name;
    if (!this.authed && cls !== 'auth' && cls !== 'hello' && cls !== 'quit') return this.local(raw, kind, name, NOAUTH);
    if (this.subscribed && this.dedicated !== null) {
      if (cls === 'reset') return this.reset(raw, kind, name);
      // Pub/sub mode: the connection is this client's alone; the server enforces what is allowed.
      this.subscriptions?.sent(name, argv().length);
      this.send(this.dedicated, raw, 'reply');
      return true;
    }
    if (this.dedicated !== null && this.inMulti && cls !== 'quit' && cls !== 'reset') {
      // Inside MULTI everything is queued by the server, connection-state commands included.
      this.send(this.dedicated, raw, 'reply');
      if (name === 'exec' || name === 'discard') {
        this.inMulti = false;
        this.watching = false;
      } else if (cls === 'select') this.selectedOnDedicated(argv());
      return true;
    }
    switch (cls) {
      case 'shared':
        return this.forward(raw);
      case 'maybe-blocking':
        if (!hasBlockOption(argv())) return this.forward(raw);
        return this.forwardDedicated(raw, kind, name, 'blocking');
      case 'blocking':
        return this.forwardDedicated(raw, kind, name, 'blocking');
      case 'transaction-start':
        if (!this.forwardDedicated(raw, kind, name, 'reply')) return false;
        if (name === 'multi') this.inMulti = true;
        else this.watching = true;
        return true;
      case 'transaction-end':
        if (this.dedicated === null) return this.forward(raw);
        this.send(this.dedicated, raw, 'reply');
        this.watching = false;
        return true;
      case 'subscribe':
        if (!this.forwardDedicated(raw, kind, name, 'subscribe')) return false;
        this.subscribed = true;
        this.subscriptions = new Subscriptions();
        this.subscriptions.sent(name, argv().length);
        return true;
      case 'unsubscribe':
        return this.local(raw, kind, name, this.unsubscribeReplies(name, argv()));
      case 'auth':
        return this.local(raw, kind, name, this.auth(argv()));
      case 'hello':
        return this.hello(raw, kind, name, argv());
      case 'select':
        return this.select(raw, kind, name, argv());
      case 'client':
        return this.client(raw, kind, name, argv());
      case 'quit':
        if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
        this.closeWhenIdle(OK);
        return false;
      case 'reset':
        return this.reset(raw, kind, name);
      case 'refused':
        return this.local(raw, kind, name, errorReply(`ERR ${name.toUpperCase()} is not supported through sluice (it would take over a shared upstream connection)`));
    }
  }

  /** Sends to the connection holding this client's replies: its dedicated one, its bound one, or a fresh pick. */
  private forward(raw: Buffer[]): boolean {
    const target = this.dedicated ?? this.bound ?? this.pickShared();
    this.send(target, raw, 'reply');
    return true;
  }

  private send(target: Upstream, raw: Buffer[], kind: EntryKind): void {
    this.outstanding++;
    target.expect(this, kind, this.family);
    for (const piece of raw) target.write(piece);
  }

  /** Sends on a dedicated connection, acquiring one first (after the shared replies are in). */
  private forwardDedicated(raw: Buffer[], kind: RequestKind, name: string, entry: EntryKind): boolean {
    if (this.dedicated === null) {
      if (this.host.maxDedicated === 0) {
        return this.local(raw, kind, name, errorReply(`ERR ${name.toUpperCase()} needs a dedicated upstream connection and max_dedicated_connections is 0`));
      }
      if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
      this.stall(raw, kind, name, 'dedicated');
      this.acquiring = true;
      this.host.dedicatedPool(this.user).acquire(this);
      return false;
    }
    this.send(this.dedicated, raw, entry);
    return true;
  }

  /** Answers locally, once the replies before it are written. */
  private local(raw: Buffer[], kind: RequestKind, name: string, reply: Buffer): boolean {
    if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
    this.reply(reply);
    return true;
  }

  private reply(buf: Buffer): void {
    const kind = errorKind(buf, 0, buf.length);
    if (kind !== null) this.host.errorReplied(kind);
    this.host.totals.queries++;
    this.host.totals.bytesSent += buf.length;
    this.socket.write(buf);
  }

  private stall(raw: Buffer[], kind: RequestKind, name: string, reason: StallReason): false {
    // The request may be a view of the shared read buffer: keep a copy.
    this.stalled = { raw: raw.map(keep), kind, name, reason };
    this.socket.pause();
    return false;
  }

  /** Retries the stalled request (or answers it with `error`), then the input held behind it. */
  private resume(error?: Buffer): void {
    const stalled = this.stalled;
    if (stalled === null || this.state !== 'open') return;
    this.stalled = null;
    if (error !== undefined) this.reply(error);
    else if (!this.handle(stalled.raw, stalled.kind, stalled.name)) return;
    const held = this.held;
    while (held !== null && held.length > 0 && this.stalled === null && this.state === 'open') {
      const chunk = held.shift() as Buffer;
      if (!this.consume(chunk, performance.now())) return;
    }
    if (held !== null && held.length === 0 && this.held === held) this.held = null;
    if (this.stalled === null && this.state === 'open') this.socket.resume();
  }

  // ── Replies (ReplyTarget) ───────────────────────────────────────────────────────────────

  receive(buf: Buffer, start: number, end: number, replies: number): void {
    this.outstanding -= replies;
    if (this.state === 'closed') return;
    this.midReply = false;
    this.socket.write(start === 0 && end === buf.length ? buf : buf.subarray(start, end));
    const totals = this.host.totals;
    totals.bytesSent += end - start;
    totals.queries += replies;
    if (this.outstanding === 0 && replies > 0) this.becameIdle();
  }

  receivePartial(buf: Buffer, start: number, end: number): void {
    if (this.state === 'closed') return;
    this.midReply = true;
    this.socket.write(buf.subarray(start, end));
    this.host.totals.bytesSent += end - start;
  }

  requestFailed(message: string, midReply: boolean): void {
    this.outstanding--;
    if (this.state === 'closed') return;
    if (midReply || this.midReply) {
      // Half a reply was passed on: no error can follow it that the client would parse.
      this.socket.destroy();
      return;
    }
    this.reply(errorReply(`ERR ${message}`));
    if (this.outstanding === 0) this.becameIdle();
  }

  dedicatedLost(conn: Upstream): void {
    if (this.dedicated !== conn) return;
    this.dedicated = null;
    conn.owner = null;
    this.inMulti = false;
    this.watching = false;
    if (this.subscribed) {
      // Its subscriptions are gone with the connection; closing tells the client to subscribe again.
      this.subscribed = false;
      this.subscriptions = null;
      this.socket.end();
    }
  }

  pubsubFrame(frame: Buffer, complete: boolean): void {
    this.subscriptions?.received(frame, complete);
  }

  pubsubSettled(conn: Upstream): void {
    if (this.dedicated !== conn || !this.subscribed || this.subscriptions?.ended !== true || this.state !== 'open') return;
    // The last subscription is gone and every request answered: the server has left pub/sub mode,
    // so this is an ordinary client again and its connection goes back to the dedicated pool.
    conn.leavePassthrough();
    this.subscribed = false;
    this.subscriptions = null;
    this.outstanding = 0;
    this.becameIdle();
  }

  private becameIdle(): void {
    this.bound = null;
    if (!this.settleScheduled && (this.stalled !== null || this.dedicated !== null || this.state === 'closing' || this.host.draining)) {
      this.settleScheduled = true;
      queueMicrotask(() => this.settle());
    }
  }

  /** Runs after the last outstanding reply: releases a dedicated connection, resumes, or closes. */
  private settle(): void {
    this.settleScheduled = false;
    if (this.state === 'closed' || this.outstanding > 0) return;
    if (this.dedicated !== null && !this.inMulti && !this.watching && !this.subscribed) this.releaseDedicated();
    if (this.state === 'closing' || this.host.draining) {
      this.finishClosing();
      return;
    }
    if (this.stalled?.reason === 'replies') this.resume();
  }

  // ── Dedicated connections (Waiter) ──────────────────────────────────────────────────────

  grant(conn: Upstream): void {
    this.acquiring = false;
    if (this.state !== 'open') {
      this.host.dedicatedPool(this.user).release(conn);
      return;
    }
    conn.owner = this;
    this.dedicated = conn;
    const reason = this.stalled?.name ?? 'dedicated';
    this.host.pinned(this.user, this.db, reason);
    // Bring the connection to this client's protocol and database; those replies are dropped.
    if (conn.resp !== this.resp) {
      conn.sendInternal(['HELLO', String(this.resp)]);
      conn.resp = this.resp;
    }
    if (conn.db !== this.db) {
      conn.sendInternal(['SELECT', String(this.db)]);
      conn.db = this.db;
    }
    queueMicrotask(() => this.resume());
  }

  fail(err: SluiceError): void {
    this.acquiring = false;
    queueMicrotask(() => this.resume(errorReply(`ERR ${err.message}`)));
  }

  private releaseDedicated(): void {
    const conn = this.dedicated;
    if (conn === null) return;
    this.dedicated = null;
    conn.owner = null;
    const pool = this.host.dedicatedPool(this.user);
    // Only a connection with nothing unread and no pub/sub mode may serve someone else.
    if (conn.state === 'ready' && !conn.passthrough && conn.inFlight === 0 && !this.inMulti && !this.watching) pool.release(conn);
    else pool.remove(conn, 'error');
  }

  // ── Commands answered here ──────────────────────────────────────────────────────────────

  private auth(args: Buffer[]): Buffer {
    if (args.length < 2 || args.length > 3) return errorReply("ERR wrong number of arguments for 'auth' command");
    if (!this.host.requiresAuth()) {
      return errorReply('ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?');
    }
    const user = args.length === 3 ? args[1].toString() : 'default';
    if (!this.host.authenticate(user, args[args.length - 1])) {
      this.host.authFailed(user, `${this.socket.remoteAddress}:${this.socket.remotePort}`);
      return WRONGPASS;
    }
    this.switchUser(user);
    return OK;
  }

  private switchUser(user: string): void {
    this.authed = true;
    if (user === this.user) return;
    // Another user's connections carry other ACL rights: never keep one.
    if (this.dedicated !== null) {
      const conn = this.dedicated;
      this.dedicated = null;
      conn.owner = null;
      this.host.dedicatedPool(this.user).remove(conn, 'retired');
      this.inMulti = false;
      this.watching = false;
    }
    this.user = user;
  }

  private hello(raw: Buffer[], kind: RequestKind, name: string, args: Buffer[]): boolean {
    if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
    let resp = this.resp;
    if (args.length >= 2) {
      const version = args[1].toString();
      if (version !== '2' && version !== '3') return this.local(raw, kind, name, errorReply('NOPROTO unsupported protocol version'));
      resp = version === '3' ? 3 : 2;
    }
    let authUser: string | null = null;
    let authPass: Buffer | null = null;
    let setName: string | null = null;
    for (let i = 2; i < args.length; ) {
      const option = args[i].toString().toLowerCase();
      if (option === 'auth' && i + 2 < args.length) {
        authUser = args[i + 1].toString();
        authPass = args[i + 2];
        i += 3;
      } else if (option === 'setname' && i + 1 < args.length) {
        setName = args[i + 1].toString();
        i += 2;
      } else {
        return this.local(raw, kind, name, errorReply(`ERR Syntax error in HELLO option '${option}'`));
      }
    }
    if (authUser !== null && authPass !== null) {
      if (!this.host.requiresAuth() || !this.host.authenticate(authUser, authPass)) {
        if (this.host.requiresAuth()) this.host.authFailed(authUser, `${this.socket.remoteAddress}:${this.socket.remotePort}`);
        return this.local(raw, kind, name, WRONGPASS);
      }
    } else if (!this.authed) {
      return this.local(
        raw,
        kind,
        name,
        errorReply('NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time'),
      );
    }
    if (setName !== null && !validClientName(setName)) return this.local(raw, kind, name, errorReply('ERR Client names cannot contain spaces, newlines or special characters.'));
    const info = this.host.serverInfo();
    if (info === null) {
      // The reply carries the server's version: learn it from a first login.
      this.stall(raw, kind, name, 'server');
      this.host.sharedPool(authUser ?? this.user, this.db, resp).whenReady((err) => queueMicrotask(() => this.resume(err ? errorReply(`ERR ${err.message}`) : undefined)));
      return false;
    }
    if (authUser !== null) this.switchUser(authUser);
    if (setName !== null) this.name = setName || null;
    if (resp !== this.resp && this.dedicated !== null) {
      this.dedicated.sendInternal(['HELLO', String(resp)]);
      this.dedicated.resp = resp;
    }
    this.resp = resp;
    const map = new RespMap([
      ['server', 'redis'],
      ['version', info.version],
      ['proto', resp],
      ['id', this.id],
      ['mode', info.mode],
      ['role', info.role],
      ['modules', []],
    ]);
    this.reply(encodeValue(map, resp));
    return true;
  }

  private select(raw: Buffer[], kind: RequestKind, name: string, args: Buffer[]): boolean {
    if (args.length !== 2) return this.local(raw, kind, name, errorReply("ERR wrong number of arguments for 'select' command"));
    const text = args[1].toString();
    if (!/^-?\d{1,10}$/.test(text)) return this.local(raw, kind, name, errorReply('ERR value is not an integer or out of range'));
    const db = Number(text);
    if (db < 0) return this.local(raw, kind, name, errorReply('ERR DB index is out of range'));
    if (this.dedicated !== null) {
      // WATCH in progress: the pinned connection changes database; it goes back to the pool in that state and is reset on the next grant.
      this.send(this.dedicated, raw, 'reply');
      this.selectedOnDedicated(args);
      return true;
    }
    if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
    if (db === this.db) return this.local(raw, kind, name, OK);
    // Each database has its own shared connections (SELECTed at login): the client's SELECT
    // never reaches a shared connection. A first login proves the index exists.
    const pool = this.host.sharedPool(this.user, db, this.resp);
    if (pool.serverInfo() !== null) {
      this.db = db;
      return this.local(raw, kind, name, OK);
    }
    this.stall(raw, kind, name, 'server');
    pool.whenReady((err) => queueMicrotask(() => this.resume(err ? errorReply(`ERR ${err.message}`) : undefined)));
    return false;
  }

  private selectedOnDedicated(args: Buffer[]): void {
    const db = Number(args[1]?.toString());
    if (!Number.isInteger(db) || db < 0 || this.dedicated === null) return;
    this.db = db;
    this.dedicated.db = db;
  }

  private client(raw: Buffer[], kind: RequestKind, name: string, args: Buffer[]): boolean {
    if (args.length < 2) return this.local(raw, kind, name, errorReply("ERR wrong number of arguments for 'client' command"));
    const sub = args[1].toString().toLowerCase();
    this.lastCommand = `client|${sub}`;
    if (FORWARDED_CLIENT_SUBCOMMANDS.has(sub)) return this.forward(raw);
    if (REFUSED_CLIENT_SUBCOMMANDS.has(sub)) {
      return this.local(raw, kind, name, errorReply(`ERR CLIENT ${sub.toUpperCase()} is not supported through sluice (it needs an upstream connection of its own)`));
    }
    switch (sub) {
      case 'id':
        return this.local(raw, kind, name, integerReply(this.id));
      case 'getname':
        return this.local(raw, kind, name, bulkReply(this.name, this.resp));
      case 'setname': {
        if (args.length !== 3) return this.local(raw, kind, name, errorReply("ERR wrong number of arguments for 'client|setname' command"));
        const newName = args[2].toString();
        if (!validClientName(newName)) return this.local(raw, kind, name, errorReply('ERR Client names cannot contain spaces, newlines or special characters.'));
        if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
        this.name = newName || null;
        return this.local(raw, kind, name, OK);
      }
      case 'setinfo': {
        if (args.length !== 4) return this.local(raw, kind, name, errorReply("ERR wrong number of arguments for 'client|setinfo' command"));
        const attr = args[2].toString().toLowerCase();
        if (attr !== 'lib-name' && attr !== 'lib-ver') return this.local(raw, kind, name, errorReply(`ERR Unrecognized option '${args[2].toString()}'`));
        if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
        if (attr === 'lib-name') this.libName = args[3].toString();
        else this.libVer = args[3].toString();
        return this.local(raw, kind, name, OK);
      }
      case 'info':
        return this.local(raw, kind, name, bulkReply(`${this.describe()}\n`, this.resp));
      case 'list':
        return this.local(raw, kind, name, this.list(args));
      case 'kill':
        if (this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
        return this.local(raw, kind, name, this.clientKill(args));
      default:
        return this.forward(raw);
    }
  }

  private list(args: Buffer[]): Buffer {
    let type: string | null = null;
    let ids: Set<number> | null = null;
    for (let i = 2; i < args.length; ) {
      const option = args[i].toString().toLowerCase();
      if (option === 'type' && i + 1 < args.length) {
        type = args[i + 1].toString().toLowerCase();
        if (!['normal', 'master', 'replica', 'slave', 'pubsub'].includes(type)) return errorReply(`ERR Unknown client type '${args[i + 1].toString()}'`);
        i += 2;
      } else if (option === 'id' && i + 1 < args.length) {
        ids = new Set();
        for (i++; i < args.length; i++) {
          const id = Number(args[i].toString());
          if (!Number.isInteger(id) || id <= 0) return errorReply('ERR Invalid client ID');
          ids.add(id);
        }
      } else return errorReply('ERR syntax error');
    }
    const lines: string[] = [];
    for (const client of this.host.clients()) {
      if (client.state === 'closed') continue;
      if (type !== null && client.type() !== type) continue;
      if (ids !== null && !ids.has(client.id)) continue;
      lines.push(`${client.describe()}\n`);
    }
    return bulkReply(lines.join(''), this.resp);
  }

  private clientKill(args: Buffer[]): Buffer {
    if (args.length === 3) {
      // Old form: CLIENT KILL addr:port.
      const addr = args[2].toString();
      for (const client of this.host.clients()) {
        if (client.addr === addr && client.state !== 'closed') {
          client.kill(client === this);
          return OK;
        }
      }
      return errorReply('ERR No such client');
    }
    const filters: Array<(c: RedisClient) => boolean> = [];
    let skipMe = true;
    for (let i = 2; i < args.length; i += 2) {
      const option = args[i].toString().toLowerCase();
      const value = args[i + 1]?.toString();
      if (value === undefined) return errorReply('ERR syntax error');
      switch (option) {
        case 'id': {
          const id = Number(value);
          if (!Number.isInteger(id) || id <= 0) return errorReply('ERR client-id should be greater than 0');
          filters.push((c) => c.id === id);
          break;
        }
        case 'type': {
          const type = value.toLowerCase();
          if (!['normal', 'master', 'replica', 'slave', 'pubsub'].includes(type)) return errorReply(`ERR Unknown client type '${value}'`);
          filters.push((c) => c.type() === type);
          break;
        }
        case 'addr':
          filters.push((c) => c.addr === value);
          break;
        case 'laddr':
          filters.push((c) => c.laddr === value);
          break;
        case 'user':
          filters.push((c) => c.user === value);
          break;
        case 'maxage': {
          const maxAge = Number(value);
          filters.push((c) => (Date.now() - c.createdAtMs) / 1000 >= maxAge);
          break;
        }
        case 'skipme':
          if (value.toLowerCase() !== 'yes' && value.toLowerCase() !== 'no') return errorReply('ERR syntax error');
          skipMe = value.toLowerCase() === 'yes';
          break;
        default:
          return errorReply('ERR syntax error');
      }
    }
    let killed = 0;
    for (const client of [...this.host.clients()]) {
      if (client.state === 'closed' || (skipMe && client === this)) continue;
      if (!filters.every((f) => f(client))) continue;
      client.kill(client === this);
      killed++;
    }
    return integerReply(killed);
  }

  private reset(raw: Buffer[], kind: RequestKind, name: string): boolean {
    if (!this.subscribed && this.outstanding > 0) return this.stall(raw, kind, name, 'replies');
    if (this.dedicated !== null) {
      // Whatever state the pinned connection is in (MULTI, WATCH, pub/sub), it is not reused.
      const conn = this.dedicated;
      this.dedicated = null;
      conn.owner = null;
      this.host.dedicatedPool(this.user).remove(conn, 'reset-failed');
    }
    this.outstanding = 0;
    this.inMulti = false;
    this.watching = false;
    this.subscribed = false;
    this.subscriptions = null;
    this.db = this.host.defaultDb;
    this.resp = 2;
    this.name = null;
    if (this.host.requiresAuth()) this.authed = false;
    this.user = 'default';
    this.reply(simpleReply('RESET'));
    return true;
  }

  private unsubscribeReplies(name: string, args: Buffer[]): Buffer {
    const channels = args.length > 1 ? args.slice(1) : [null];
    return Buffer.concat(channels.map((channel) => encodeValue(new RespPush([name, channel, 0]), this.resp)));
  }

  // ── Lifecycle ───────────────────────────────────────────────────────────────────────────

  /** 'normal' or 'pubsub', as CLIENT LIST/KILL TYPE see it. */
  type(): string {
    return this.subscribed ? 'pubsub' : 'normal';
  }

  /** A CLIENT LIST line in the server's format (the fields a client library reads). */
  describe(): string {
    const now = Date.now();
    const idleMs = performance.now() - this.lastActivityMs;
    const flags = `${this.subscribed ? 'P' : ''}${this.inMulti ? 'x' : ''}` || 'N';
    return [
      `id=${this.id}`,
      `addr=${this.addr}`,
      `laddr=${this.laddr}`,
      'fd=-1',
      `name=${this.name ?? ''}`,
      `age=${Math.floor((now - this.createdAtMs) / 1000)}`,
      `idle=${Math.floor(idleMs / 1000)}`,
      `flags=${flags}`,
      `db=${this.db}`,
      `sub=${this.subscribed ? 1 : 0}`,
      'psub=0',
      'ssub=0',
      `multi=${this.inMulti ? 0 : -1}`,
      'qbuf=0',
      'qbuf-free=0',
      'argv-mem=0',
      'multi-mem=0',
      'rbs=0',
      'rbp=0',
      'obl=0',
      `oll=${this.outstanding}`,
      'omem=0',
      'tot-mem=0',
      'events=r',
      `cmd=${this.lastCommand}`,
      `user=${this.user}`,
      'redir=-1',
      `resp=${this.resp}`,
      `lib-name=${this.libName}`,
      `lib-ver=${this.libVer}`,
    ].join(' ');
  }

  /** CLIENT KILL: the killer's own connection closes after its reply is written. */
  kill(self: boolean): void {
    // The caller's own reply is written first, then its connection closes.
    if (self) queueMicrotask(() => this.closeWhenIdle(null));
    else this.socket.destroy();
  }

  /** Drain: no new requests; closes once the outstanding replies are written. */
  drain(): void {
    if (this.state !== 'open') return;
    // A request held back (stalled) and what arrived behind it were accepted but never sent:
    // each is refused in its turn.
    const held = this.held;
    this.held = null;
    if (this.stalled !== null) {
      this.stalled = null;
      if (this.outstanding > 0) this.pendingRefusals++;
      else this.reply(SHUTTING_DOWN);
    }
    if (held !== null) for (const chunk of held) this.refuse(chunk);
    this.refusing = true;
    this.closeWhenIdle(null);
    this.socket.resume();
  }

  closeForIdle(): void {
    this.socket.destroy();
  }

  /** Closes now (listener close). */
  destroy(): void {
    this.socket.destroy();
  }

  private protocolError(message: string): void {
    this.partial = null;
    this.held = null;
    this.closeWhenIdle(errorReply(`ERR ${message}`));
  }

  private closeWhenIdle(finalReply: Buffer | null): void {
    if (this.state !== 'open') return;
    this.state = 'closing';
    this.finalReply = finalReply;
    this.stalled = null;
    this.held = null;
    this.socket.pause();
    if (this.acquiring && this.host.dedicatedPool(this.user).cancel(this)) this.acquiring = false;
    if (this.outstanding === 0 || this.subscribed) this.finishClosing();
  }

  private finishClosing(): void {
    if (this.state === 'closed') return;
    this.state = 'closing';
    if (this.finalReply !== null) this.reply(this.finalReply);
    this.finalReply = null;
    for (; this.pendingRefusals > 0; this.pendingRefusals--) this.reply(SHUTTING_DOWN);
    this.refusing = false;
    this.socket.end();
    // Read again (onData drops what arrives now) so the client's FIN is seen and 'close' fires;
    // a paused socket never learns its peer hung up, and a drain would wait for it forever.
    this.socket.resume();
  }

  /** The socket closed (its shared handler calls this). */
  onClose(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.stalled = null;
    this.held = null;
    this.partial = null;
    if (this.acquiring && this.host.dedicatedPool(this.user).cancel(this)) this.acquiring = false;
    if (this.dedicated !== null) {
      const conn = this.dedicated;
      // A connection with replies still to come, a transaction or subscriptions is closed, not reused.
      if (this.outstanding === 0 && !this.subscribed && !this.inMulti && !this.watching) this.releaseDedicated();
      else {
        this.dedicated = null;
        conn.owner = null;
        this.host.dedicatedPool(this.user).remove(conn, 'error');
      }
    }
    this.host.removed(this);
  }
}

function hasBlockOption(args: Buffer[]): boolean {
  for (let i = 1; i < args.length; i++) {
    const arg = args[i].toString().toLowerCase();
    if (arg === 'block') return true;
    if (arg === 'streams') return false;
  }
  return false;
}

function validClientName(name: string): boolean {
  return /^[!-~]*$/.test(name);
}

/** Constant-time comparison, so a password cannot be guessed byte by byte from response times. */
export function sameSecret(given: Buffer, expected: string): boolean {
  const want = Buffer.from(expected, 'utf8');
  if (given.length !== want.length) {
    timingSafeEqual(want, want);
    return false;
  }
  return timingSafeEqual(given, want);
}
