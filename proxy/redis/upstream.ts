// One connection to the Redis server: login handshake, batched writes, and the FIFO of requests
// in flight that says whose reply each incoming frame is. Shared and dedicated connections are
// both this; a dedicated one has an `owner` that also receives pushes.
//
//   in-flight FIFO (parallel arrays, `head` = oldest):
//
//     owners   [ c1 | c1 | c7 | null | c2 | … ]   null = reply read and dropped (setup command)
//     kinds    [ reply | reply | blocking | …  ]
//     families [ 0 | 0 | 8 | -1 | 2 | … ]         command family (metric-labels.ts); -1 = not counted
//     sentAtMs [ t0 | t0 | t1 | … ]               performance.now() when queued: command timeout and latency
//               ^head                         ^tail (array length)
//
// Replies are framed and handed on as slices of the read buffer; consecutive replies for the
// same client in one read become one slice. A reply bigger than a read is passed on as it comes.
// Each reply's arrival feeds its family's command count and latency (plain numbers, no labels),
// and a reply starting with '-' is counted by its error prefix.
import { createConnection, type Socket } from 'node:net';
import { ConnectError, type SluiceError, TimeoutError, UpstreamLostError } from '../errors.js';
import type { PooledConnection, ServerState } from '../pool/pool.js';
import { errorKind } from './metric-labels.js';
import { REPLY_BYTE, ReplyFramer } from './resp-framer.js';
import { encodeRequest, parseReply, RespError, RespMap, type RespValue, type RespVersion } from './resp-values.js';

/** Who a reply goes to: a client connection. */
export interface ReplyTarget {
  /** `replies` complete replies (0 for pushes) in buf[start, end). */
  receive(buf: Buffer, start: number, end: number, replies: number): void;
  /** Bytes of a reply that has not ended yet (a big value arriving over several reads). */
  receivePartial(buf: Buffer, start: number, end: number): void;
  /** One request of this target will get no reply from the server; `midReply` when part of its reply was already passed on. */
  requestFailed(message: string, midReply: boolean): void;
  /** The dedicated connection this target holds has closed. */
  dedicatedLost(conn: Upstream): void;
  /** Pub/sub mode: one frame the server sent (or, `complete` false, the first bytes of one too big to keep). */
  pubsubFrame(frame: Buffer, complete: boolean): void;
  /** Pub/sub mode: every byte so far belongs to a complete frame; the owner may call `leavePassthrough()` now. */
  pubsubSettled(conn: Upstream): void;
}

export type UpstreamState = 'waiting' | 'connecting' | 'handshake' | 'ready' | 'quitting' | 'closed';

/** 'subscribe': from this reply on, everything the server sends belongs to the owner (pub/sub mode). */
export type EntryKind = 'reply' | 'blocking' | 'subscribe';

export interface UpstreamOptions {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
  resp: RespVersion;
  connectTimeoutMs: number;
  commandTimeoutMs: number;
  maxBulkBytes: number;
  /** Back-off before connecting (after failed attempts). */
  delayMs: number;
  metrics: UpstreamMetrics;
}

/** Where a connection reports the replies it passes on. */
export interface UpstreamMetrics {
  /** Latency recorders indexed by command family (metric-labels.ts `COMMAND_FAMILIES`). */
  readonly commands: ReadonlyArray<{ observe(seconds: number): void }>;
  /** An error reply went to a client; `kind` is its prefix or `other`. */
  errorReply(kind: string): void;
}

export interface UpstreamEvents {
  ready(conn: Upstream): void;
  closed(conn: Upstream, error: SluiceError | null, wasReady: boolean): void;
}

/** Server facts learned from HELLO at login. */
export interface ServerInfo {
  version: string;
  mode: string;
  role: string;
}

/** First size of a connection's output buffer; it doubles as a turn needs. */
const OUT_INITIAL_BYTES = 16 * 1024;
/**
 * Queued bytes past this go out at once instead of at the end of the turn: with 2 000 clients a
 * turn reads ~1 000 requests, and Redis would sit idle until the last was read, then answer all
 * of them in one burst (the tail-latency target of issue 8). Pipeline-1 turns with 50 clients
 * queue ~2 KiB and never reach it.
 */
const FLUSH_EARLY_BYTES = 16 * 1024;
/** An output buffer bigger than this (a big value passed through) is not kept for the next turn. */
const OUT_KEEP_BYTES = 256 * 1024;
/** Pub/sub frames longer than this that span reads are not kept whole (only published messages are that big). */
const PUBSUB_FRAME_BYTES = 64 * 1024;

export class Upstream implements PooledConnection {
  // PooledConnection (used when a dedicated pool lends it).
  poolState: ServerState = 'opening';
  openedAtMs = Date.now();
  idleSinceMs = 0;
  generation = 0;

  state: UpstreamState = 'waiting';
  /** The client holding this connection when it is dedicated. */
  owner: ReplyTarget | null = null;
  /** Database and protocol this connection is in now (a dedicated holder may change them). */
  db: number;
  resp: RespVersion;
  serverInfo: ServerInfo | null = null;
  /** No new requests: closes politely once the FIFO is empty. */
  retiring = false;
  /** In pub/sub mode every byte goes to the owner; the FIFO no longer applies. */
  passthrough = false;

  private socket: Socket | null = null;
  private framer: ReplyFramer;
  private owners: Array<ReplyTarget | null> = [];
  private kinds: EntryKind[] = [];
  private families: number[] = [];
  private sentAtMs: number[] = [];
  private head = 0;
  /** Pub/sub mode: the pieces of a frame that spans reads (up to PUBSUB_FRAME_BYTES of it). */
  private pubsubPieces: Buffer[] = [];
  private pubsubBytes = 0;
  private blockingInFlight = 0;
  /**
   * Request bytes queued this turn, copied in (clients' reads are views of a buffer the next read
   * reuses, client-input.ts): one write per turn, and no Buffer.concat of pieces.
   */
  private out: Buffer | null = null;
  private outBytes = 0;
  private flushScheduled = false;
  private readonly flushBound = () => {
    this.flushScheduled = false;
    this.flush();
  };
  private connectTimer: NodeJS.Timeout | undefined;
  private commandTimer: NodeJS.Timeout | undefined;
  private handshakeReplies = 0;
  private handshakeBuffer: Buffer = Buffer.alloc(0);
  private readyWaiters: Array<(err: SluiceError | null) => void> = [];
  private wasReady = false;
  /** The server refused the login (wrong password, bad database): not a network fault. */
  loginRefused = false;
  private lostReason = '';

  constructor(
    private readonly options: UpstreamOptions,
    private readonly events: UpstreamEvents,
  ) {
    this.db = options.db;
    this.resp = options.resp;
    this.framer = new ReplyFramer(options.maxBulkBytes);
    if (options.delayMs > 0) {
      const timer = setTimeout(() => this.connect(), options.delayMs);
      timer.unref();
    } else {
      this.connect();
    }
  }

  get address(): string {
    return `${this.options.host}:${this.options.port}`;
  }

  /** Requests written or queued and not yet answered. */
  get inFlight(): number {
    return this.owners.length - this.head;
  }

  get usable(): boolean {
    return !this.retiring && this.state !== 'closed' && this.state !== 'quitting';
  }

  /** Calls back once ready (null) or failed. */
  whenReady(callback: (err: SluiceError | null) => void): void {
    if (this.state === 'ready') callback(null);
    else if (this.state === 'closed' || this.state === 'quitting') callback(new ConnectError(this.address, 'connection closed'));
    else this.readyWaiters.push(callback);
  }

  /**
   * Registers that a request was queued whose reply goes to `owner` (null: read and drop);
   * `family` is the command family its reply is counted under (-1: not counted); `queuedAtMs`
   * is performance.now() when the request was read (one clock read per client read, shared by
   * the requests in it).
   */
  expect(owner: ReplyTarget | null, kind: EntryKind, family = -1, queuedAtMs = performance.now()): void {
    // In pub/sub mode all the server sends is the owner's, in its order: nothing to match.
    if (this.passthrough) return;
    if (this.state === 'closed' || this.state === 'quitting') {
      // Too late for this connection: the request is answered with an error, never lost.
      if (owner !== null) queueMicrotask(() => owner.requestFailed(`upstream connection lost (${this.address}: closed)`, false));
      return;
    }
    this.owners.push(owner);
    this.kinds.push(kind);
    this.families.push(family);
    this.sentAtMs.push(queuedAtMs);
    if (kind === 'blocking') this.blockingInFlight++;
    if (this.options.commandTimeoutMs > 0 && this.commandTimer === undefined) this.armCommandTimer();
  }

  /** Queues a copy of buf[start, end); the turn's requests go out in one write at its end. */
  write(buf: Buffer, start = 0, end = buf.length): void {
    const n = end - start;
    if (n === 0) return;
    const used = this.outBytes;
    let out = this.out;
    if (out === null || used + n > out.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(OUT_INITIAL_BYTES, 2 * (used + n)));
      if (out !== null) out.copy(grown, 0, 0, used);
      this.out = out = grown;
    }
    buf.copy(out, used, start, end);
    this.outBytes = used + n;
    if (this.outBytes >= FLUSH_EARLY_BYTES && this.state === 'ready') {
      this.flush();
      return;
    }
    if (!this.flushScheduled && this.state === 'ready') {
      this.flushScheduled = true;
      setImmediate(this.flushBound);
    }
  }

  /** Sends a request sluice makes itself, its reply read and dropped. */
  sendInternal(args: Array<string | Buffer>): void {
    this.expect(null, 'reply');
    this.write(encodeRequest(args));
  }

  /** Polite close: QUIT now if nothing is in flight, else once the last reply arrives. */
  quit(): void {
    this.retiring = true;
    if (this.state === 'closed' || this.state === 'quitting') return;
    if (this.state !== 'ready') {
      this.destroy('closed by sluice');
      return;
    }
    if (this.inFlight > 0 && !this.passthrough) return;
    this.state = 'quitting';
    this.flush();
    this.socket?.end('*1\r\n$4\r\nQUIT\r\n');
    const timer = setTimeout(() => this.socket?.destroy(), 1000);
    timer.unref();
  }

  /** Closes now; requests in flight get `-ERR upstream connection lost (…)`. */
  destroy(reason: string): void {
    this.lostReason = reason;
    this.fail(new UpstreamLostError(this.address, reason));
  }

  /** A reload changed timeouts.command. */
  setCommandTimeout(timeoutMs: number): void {
    this.options.commandTimeoutMs = timeoutMs;
  }

  private connect(): void {
    if (this.state !== 'waiting') return;
    this.state = 'connecting';
    const socket = createConnection({ host: this.options.host, port: this.options.port });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    this.connectTimer = setTimeout(() => this.fail(new ConnectError(this.address, `no login within ${this.options.connectTimeoutMs}ms (timeouts.connect)`)), this.options.connectTimeoutMs);
    socket.on('connect', () => this.startHandshake());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const reason = err.code ?? err.message;
      if (this.wasReady) this.destroy(reason);
      else this.fail(new ConnectError(this.address, reason, { cause: err }));
    });
    socket.on('close', () => {
      if (this.state === 'quitting') this.finish(null);
      else if (this.wasReady) this.destroy('closed by server');
      else this.fail(new ConnectError(this.address, 'closed by server'));
    });
  }

  private startHandshake(): void {
    this.state = 'handshake';
    const { username, password, resp, db } = this.options;
    const hello: string[] = ['HELLO', String(resp)];
    if (password !== undefined) hello.push('AUTH', username ?? 'default', password);
    const requests = [encodeRequest(hello)];
    if (db !== 0) requests.push(encodeRequest(['SELECT', String(db)]));
    this.handshakeReplies = requests.length;
    this.socket?.write(Buffer.concat(requests));
  }

  private onHandshakeData(chunk: Buffer): void {
    this.handshakeBuffer = this.handshakeBuffer.length === 0 ? chunk : Buffer.concat([this.handshakeBuffer, chunk]);
    if (this.handshakeBuffer.length > 1024 * 1024) {
      this.fail(new ConnectError(this.address, 'login reply too large'));
      return;
    }
    let pos = 0;
    while (this.handshakeReplies > 0) {
      let end: number;
      try {
        end = this.framer.next(this.handshakeBuffer, pos);
      } catch (err) {
        this.fail(new ConnectError(this.address, (err as Error).message));
        return;
      }
      if (end < 0) {
        // The framer consumed the partial frame; keep the whole frame for decoding next time.
        this.handshakeBuffer = this.handshakeBuffer.subarray(pos);
        this.resetFramerForRetry();
        return;
      }
      const { value } = parseReply(this.handshakeBuffer, pos);
      pos = end;
      if (value instanceof RespError) {
        this.loginRefused = true;
        this.fail(new ConnectError(this.address, value.message));
        return;
      }
      if (this.serverInfo === null) this.serverInfo = helloInfo(value);
      this.handshakeReplies--;
    }
    const rest = this.handshakeBuffer.subarray(pos);
    this.handshakeBuffer = Buffer.alloc(0);
    this.becomeReady();
    if (rest.length > 0) this.onData(rest);
  }

  /** The handshake path re-reads a partial frame from its start, so the framer must start over. */
  private resetFramerForRetry(): void {
    this.framer = new ReplyFramer(this.options.maxBulkBytes);
  }

  private becomeReady(): void {
    clearTimeout(this.connectTimer);
    this.state = 'ready';
    this.wasReady = true;
    this.events.ready(this);
    for (const waiter of this.readyWaiters.splice(0)) waiter(null);
    if (this.outBytes > 0) this.flush();
    if (this.retiring && this.inFlight === 0) this.quit();
  }

  private flush(): void {
    if (this.state !== 'ready' && this.state !== 'quitting') return;
    const socket = this.socket;
    const out = this.out;
    if (socket === null || out === null || this.outBytes === 0) return;
    socket.write(out.subarray(0, this.outBytes));
    this.outBytes = 0;
    // The kernel took it all (nothing left queued in the socket): the buffer is free for the next
    // turn. Otherwise the socket still holds it, and the next turn starts a new one.
    if (socket.writableLength !== 0 || out.length > OUT_KEEP_BYTES) this.out = null;
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'handshake') {
      this.onHandshakeData(chunk);
      return;
    }
    if (this.state !== 'ready') return;
    if (this.passthrough) {
      this.owner?.receive(chunk, 0, chunk.length, 0);
      this.scanPubsub(chunk, 0);
      return;
    }
    const framer = this.framer;
    const len = chunk.length;
    // One clock read per read: replies that arrive together are timed together.
    const now = performance.now();
    let pos = 0;
    let runTarget: ReplyTarget | null = null;
    let runStart = 0;
    let runReplies = 0;
    while (pos < len) {
      const fresh = this.framer.atBoundary;
      let end: number;
      try {
        end = framer.next(chunk, pos);
      } catch (err) {
        if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
        this.destroy(`server sent bad bytes: ${(err as Error).message}`);
        return;
      }
      let target: ReplyTarget | null;
      let isReply = false;
      if (fresh && this.head < this.owners.length && this.kinds[this.head] === 'subscribe') {
        // From here on the connection is in pub/sub mode and belongs to its owner alone.
        if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
        this.observe(this.head, now);
        this.enterPassthrough();
        this.owner?.receive(chunk, pos, len, 0);
        this.scanPubsub(chunk, pos);
        return;
      }
      if (framer.topType === REPLY_BYTE.push) {
        // A push is nobody's reply: the holder of a dedicated connection gets it, a shared one drops it.
        target = this.owner;
      } else {
        if (this.head >= this.owners.length) {
          if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
          this.destroy('server sent a reply nobody asked for');
          return;
        }
        target = this.owners[this.head];
        isReply = true;
      }
      if (fresh && framer.topType === REPLY_BYTE.error && target !== null) {
        const kind = errorKind(chunk, pos, len);
        if (kind !== null) this.options.metrics.errorReply(kind);
      }
      if (end < 0) {
        if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
        target?.receivePartial(chunk, pos, len);
        return;
      }
      if (isReply) {
        this.observe(this.head, now);
        this.pop();
      }
      if (target !== runTarget) {
        if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
        runTarget = target;
        runStart = pos;
        runReplies = 0;
      }
      if (isReply) runReplies++;
      pos = end;
    }
    if (runTarget !== null) runTarget.receive(chunk, runStart, pos, runReplies);
    if (this.retiring && this.inFlight === 0) this.quit();
  }

  private enterPassthrough(): void {
    this.passthrough = true;
    this.owners = [];
    this.kinds = [];
    this.families = [];
    this.sentAtMs = [];
    this.head = 0;
    this.blockingInFlight = 0;
    // The subscribe reply was already half framed for the FIFO: pub/sub framing starts at its first byte.
    this.framer = new ReplyFramer(this.options.maxBulkBytes);
    this.pubsubPieces = [];
    this.pubsubBytes = 0;
  }

  /** The owner saw its last subscription go (and nothing else due): back to request/reply matching. */
  leavePassthrough(): void {
    this.passthrough = false;
  }

  /**
   * Pub/sub mode: frames what the owner was just given, so it can follow its subscriptions.
   * The bytes were already passed on whole; this only reads them.
   */
  private scanPubsub(chunk: Buffer, pos: number): void {
    const owner = this.owner;
    if (owner === null) return;
    const framer = this.framer;
    const len = chunk.length;
    while (pos < len) {
      let end: number;
      try {
        end = framer.next(chunk, pos);
      } catch (err) {
        this.destroy(`server sent bad bytes: ${(err as Error).message}`);
        return;
      }
      if (end < 0) {
        this.keepPubsubPiece(chunk.subarray(pos));
        return;
      }
      if (this.pubsubPieces.length === 0) owner.pubsubFrame(chunk.subarray(pos, end), true);
      else {
        this.keepPubsubPiece(chunk.subarray(pos, end));
        owner.pubsubFrame(Buffer.concat(this.pubsubPieces), this.pubsubBytes <= PUBSUB_FRAME_BYTES);
        this.pubsubPieces = [];
        this.pubsubBytes = 0;
      }
      pos = end;
    }
    owner.pubsubSettled(this);
  }

  private keepPubsubPiece(piece: Buffer): void {
    if (this.pubsubBytes <= PUBSUB_FRAME_BYTES) this.pubsubPieces.push(piece);
    this.pubsubBytes += piece.length;
  }

  /** Counts FIFO entry `i`'s reply under its family, with its latency. */
  private observe(i: number, now: number): void {
    const family = this.families[i];
    if (family >= 0) this.options.metrics.commands[family].observe((now - this.sentAtMs[i]) / 1000);
  }

  private pop(): void {
    const i = this.head;
    this.owners[i] = null;
    if (this.kinds[i] === 'blocking') this.blockingInFlight--;
    this.head++;
    if (this.head === this.owners.length) {
      this.owners.length = 0;
      this.kinds.length = 0;
      this.families.length = 0;
      this.sentAtMs.length = 0;
      this.head = 0;
    } else if (this.head > 4096 && this.head * 2 > this.owners.length) {
      this.owners = this.owners.slice(this.head);
      this.kinds = this.kinds.slice(this.head);
      this.families = this.families.slice(this.head);
      this.sentAtMs = this.sentAtMs.slice(this.head);
      this.head = 0;
    }
  }

  private armCommandTimer(): void {
    const timeoutMs = this.options.commandTimeoutMs;
    const oldest = this.sentAtMs[this.head];
    if (oldest === undefined) {
      this.commandTimer = undefined;
      return;
    }
    this.commandTimer = setTimeout(() => this.checkCommandTimeout(), Math.max(1, oldest + timeoutMs - performance.now()));
    this.commandTimer.unref();
  }

  private checkCommandTimeout(): void {
    this.commandTimer = undefined;
    if (this.state !== 'ready' || this.passthrough) return;
    const timeoutMs = this.options.commandTimeoutMs;
    const oldest = this.sentAtMs[this.head];
    if (oldest === undefined) return;
    // A blocking command waits as long as its own timeout argument says.
    if (this.blockingInFlight === 0 && performance.now() - oldest >= timeoutMs) {
      this.fail(new TimeoutError('timeouts.command', timeoutMs, 'no reply from upstream'));
      return;
    }
    this.armCommandTimer();
  }

  /** The connection is gone: every request in flight gets an error, in order. */
  private fail(error: SluiceError): void {
    if (this.state === 'closed') return;
    this.finish(error);
  }

  private finish(error: SluiceError | null): void {
    const wasReady = this.wasReady;
    this.state = 'closed';
    clearTimeout(this.connectTimer);
    clearTimeout(this.commandTimer);
    this.socket?.destroy();
    const midReply = !this.framer.atBoundary;
    // Clients see the reason in the words the issue promises: "upstream connection lost (…)".
    const message = error instanceof UpstreamLostError ? `upstream connection lost (${this.address}: ${this.lostReason})` : (error?.message ?? 'upstream connection closed');
    const owners = this.owners;
    const head = this.head;
    this.owners = [];
    this.kinds = [];
    this.families = [];
    this.sentAtMs = [];
    this.head = 0;
    this.out = null;
    this.outBytes = 0;
    for (let i = head; i < owners.length; i++) owners[i]?.requestFailed(message, midReply && i === head);
    for (const waiter of this.readyWaiters.splice(0)) waiter(error ?? new ConnectError(this.address, 'connection closed'));
    this.owner?.dedicatedLost(this);
    this.events.closed(this, error, wasReady);
  }
}

/** Reads version, mode and role from a HELLO reply (a RESP3 map or a RESP2 flat array). */
function helloInfo(value: RespValue): ServerInfo {
  const info: ServerInfo = { version: '7.0.0', mode: 'standalone', role: 'master' };
  const pairs: Array<[RespValue, RespValue]> = [];
  if (value instanceof RespMap) pairs.push(...value.entries);
  else if (Array.isArray(value)) for (let i = 0; i + 1 < value.length; i += 2) pairs.push([value[i], value[i + 1]]);
  for (const [k, v] of pairs) {
    const key = String(k);
    if (key === 'version' || key === 'mode' || key === 'role') info[key] = String(v);
  }
  return info;
}
