// The replies one server connection owes, in request order, each with what to do with it when it
// arrives: forward it to the client, swallow it (sluice sent the request itself), or — for a
// request sluice answered without asking the server — write a synthesised reply at exactly this
// point of the reply stream. Also the undo of each request's optimistic effects when the server
// skips or rejects it.
//
//   client ─► P(a) B(a) E S  ──rewrite──►  server gets: P(sluice_1) B(sluice_1) E S
//                                          (or, when sluice_1 is already there: B(sluice_1) E S)
//
//   queue (head first):  [ local:ParseComplete ][ bind:fwd ][ execute:fwd ][ sync:fwd ]
//   server replies:                              2            D… C           Z
//   client receives:       1 (synthesised)       2            D… C           Z
//
// Rules (PostgreSQL "Extended Query" protocol section):
// - Every request that the server answers has one entry; Flush and COPY data have none.
// - An ErrorResponse to an extended-protocol request ends that request, and the server skips
//   every message up to the next Sync: those entries are dropped and their effects undone, and
//   a synthesised reply among them is never written (the client must not see a ParseComplete
//   after the error). If no Sync has been queued yet, requests queued later are skipped too.
// - A simple Query (or FunctionCall) and a Sync end at ReadyForQuery; errors inside a Query
//   do not end it.
// - NoticeResponse, NotificationResponse and ParameterStatus may come at any time and always
//   go to the client.
import { BackendCode, TxStatus } from './protocol-codes.js';

/** The kind of reply a request expects. 'local' is answered by sluice (a synthesised reply). */
export type ExpectedReply = 'parse' | 'bind' | 'describe-statement' | 'describe-portal' | 'close' | 'execute' | 'sync' | 'simple' | 'local';

/** What happens to the reply: written through, dropped, or (for 'local') written from `synthesized`. */
export type ReplyAction = 'forward' | 'swallow' | 'synthesize';

/** Where replies go: the client's outbox (proxy/postgres/outbox.ts has this shape). */
export interface ReplySink {
  add(buf: Buffer, start: number, end: number): void;
  addBuffer(buf: Buffer): void;
}

export interface Expectation {
  reply: ExpectedReply;
  action: ReplyAction;
  /** For 'synthesize': the bytes written to the client when this entry reaches the head. */
  synthesized?: Buffer;
  /** Runs when the server answered the request (or when a synthesised reply is written). */
  onDone?: () => void;
  /** Runs when the server rejected or skipped the request: puts back what sending it assumed. */
  onUndo?: () => void;
  /** Opaque to the queue: what the prepared-statement layer needs to heal or rename an error. */
  context?: unknown;
  /** Send order, stamped by push(). */
  seq?: number;
}

/** Hooks the prepared-statement layer installs; the queue itself knows no statements. */
export interface ReplyHooks {
  /**
   * An ErrorResponse ended `failed` (an extended-protocol request). Returns a replacement
   * ErrorResponse to write instead (e.g. with the client's statement name), undefined to forward
   * it, or 'retry' when the hooks have just sent the failed part of the batch again (only when
   * `retrySafe`): then the error and the ReadyForQuery of the failed batch's Sync never reach
   * the client, and the replies of the new attempt take their place.
   */
  onError?(failed: Expectation, sqlstate: string, buf: Buffer, start: number, end: number, retrySafe: boolean): Buffer | 'retry' | undefined;
  /** A CommandComplete ended `entry` (Execute or a statement of a Query). */
  onCommandComplete?(entry: Expectation, buf: Buffer, start: number, end: number): void;
}

let sequence = 0;

/** A monotonic stamp for "sent before / after" comparisons across queues and maps. */
export function nextSeq(): number {
  return ++sequence;
}

/** The last stamp handed out: entries pushed from now on get larger ones. */
export function currentSeq(): number {
  return sequence;
}

const RESULT_TYPES = new Uint8Array(256);
for (const code of [
  BackendCode.dataRow,
  BackendCode.commandComplete,
  BackendCode.emptyQueryResponse,
  BackendCode.portalSuspended,
  BackendCode.copyInResponse,
  BackendCode.copyOutResponse,
  BackendCode.copyBothResponse,
  BackendCode.copyData,
]) {
  RESULT_TYPES[code] = 1;
}

export class ReplyQueue {
  private entries: Expectation[] = [];
  private head = 0;
  /** The server skips everything until the next Sync, and no Sync is queued yet. */
  private skipping = false;
  /** Verdict for the later pieces of a message the framer delivers in pieces. */
  private pieceForward = true;
  /** Results (rows, command completions, COPY) written to the client since the last ReadyForQuery. */
  private resultsSinceReady = 0;
  /** Transaction status from the last ReadyForQuery: 'I', 'T' or 'E' as a byte. */
  txStatus: number = TxStatus.idle;
  /** Replies that matched no expectation (tracking lost); the core should not reuse the server. */
  unexpected = 0;

  constructor(private readonly hooks: ReplyHooks = {}) {}

  /** No reply outstanding: with ReadyForQuery 'I' the server may go back to the pool. */
  get idle(): boolean {
    return this.head === this.entries.length;
  }

  get length(): number {
    return this.entries.length - this.head;
  }

  /** A request was written to the server (or answered locally). */
  push(entry: Expectation, client: ReplySink): void {
    entry.seq = nextSeq();
    if (this.skipping) {
      if (entry.reply === 'sync') this.skipping = false;
      else {
        // the server will ignore it: as if never sent
        entry.onUndo?.();
        return;
      }
    }
    if (entry.reply === 'local' && this.idle) {
      this.writeLocal(entry, client);
      return;
    }
    this.entries.push(entry);
  }

  /**
   * One server message, or one piece of a long one (first/last as the framer says). Writes what
   * the client should get to `client` and returns whether this message was forwarded.
   */
  onServerMessage(type: number, buf: Buffer, start: number, end: number, first: boolean, client: ReplySink): boolean {
    if (!first) {
      if (this.pieceForward) client.add(buf, start, end);
      return this.pieceForward;
    }
    const forward = this.classify(type, buf, start, end, client);
    this.pieceForward = forward;
    if (forward) client.add(buf, start, end);
    this.drainLocal(client);
    return forward;
  }

  /**
   * The first piece of a server message: writes the synthesised replies due before it, updates
   * the expectations, and says whether the message itself should reach the client — writing it
   * is the caller's job, followed by drainLocal() for the replies due after it. (A replacement,
   * such as an error naming the client's statement, is written here and counts as not forwarded.)
   */
  classify(type: number, buf: Buffer, start: number, end: number, client: ReplySink): boolean {
    this.drainLocal(client);
    const forward = this.match(type, buf, start, end, client);
    if (forward && RESULT_TYPES[type] === 1) this.resultsSinceReady++;
    return forward;
  }

  /** Drops every expectation (the server connection is gone), undoing their effects. */
  clear(): void {
    const dropped = this.entries.slice(this.head);
    this.entries = [];
    this.head = 0;
    this.skipping = false;
    for (let i = dropped.length - 1; i >= 0; i--) dropped[i].onUndo?.();
  }

  private peek(): Expectation | undefined {
    return this.head < this.entries.length ? this.entries[this.head] : undefined;
  }

  private shift(): Expectation {
    const entry = this.entries[this.head++];
    if (this.head === this.entries.length) {
      this.entries.length = 0;
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
    return entry;
  }

  private complete(): boolean {
    const entry = this.shift();
    entry.onDone?.();
    return entry.action === 'forward';
  }

  private match(type: number, buf: Buffer, start: number, end: number, client: ReplySink): boolean {
    if (type === BackendCode.noticeResponse || type === BackendCode.notificationResponse || type === BackendCode.parameterStatus) return true;
    const head = this.peek();
    if (head === undefined) {
      this.unexpected++;
      return true;
    }
    const reply = head.reply;
    if (type === BackendCode.errorResponse) return this.onError(head, buf, start, end, client);
    if (type === BackendCode.readyForQuery) return this.onReady(buf[start + 5]);
    switch (reply) {
      case 'parse':
        if (type === BackendCode.parseComplete) return this.complete();
        break;
      case 'bind':
        if (type === BackendCode.bindComplete) return this.complete();
        break;
      case 'close':
        if (type === BackendCode.closeComplete) return this.complete();
        break;
      case 'describe-statement':
        if (type === BackendCode.parameterDescription) return head.action === 'forward';
        if (type === BackendCode.rowDescription || type === BackendCode.noData) return this.complete();
        break;
      case 'describe-portal':
        if (type === BackendCode.rowDescription || type === BackendCode.noData) return this.complete();
        break;
      case 'execute':
        if (type === BackendCode.commandComplete) {
          this.hooks.onCommandComplete?.(head, buf, start, end);
          return this.complete();
        }
        if (type === BackendCode.emptyQueryResponse || type === BackendCode.portalSuspended) return this.complete();
        return head.action === 'forward';
      case 'simple':
        if (type === BackendCode.commandComplete) this.hooks.onCommandComplete?.(head, buf, start, end);
        return head.action === 'forward';
      case 'sync':
        break;
      case 'local':
        break;
    }
    this.unexpected++;
    return true;
  }

  private onError(head: Expectation, buf: Buffer, start: number, end: number, client: ReplySink): boolean {
    // an error inside a simple Query, or at Sync (a failed implicit COMMIT), ends at ReadyForQuery
    if (head.reply === 'simple' || head.reply === 'sync') return head.action === 'forward';
    const failed = this.shift();
    const undone: Expectation[] = [failed];
    let sawSync = false;
    for (let next = this.peek(); next !== undefined; next = this.peek()) {
      if (next.reply === 'sync') {
        sawSync = true;
        break;
      }
      undone.push(this.shift());
    }
    if (!sawSync) this.skipping = true;
    for (let i = undone.length - 1; i >= 0; i--) undone[i].onUndo?.();
    // Safe to run the failed part again: nothing of this batch executed (no result reached the
    // client), the batch began outside a transaction block (the error aborted only its implicit
    // transaction), and its Sync is queued (the server resumes right after it).
    const retrySafe = sawSync && this.resultsSinceReady === 0 && this.txStatus === TxStatus.idle;
    const replacement = this.hooks.onError?.(failed, sqlstateOf(buf, start, end), buf, start, end, retrySafe);
    if (replacement === 'retry') {
      // the head is the failed batch's Sync: its ReadyForQuery is not the client's any more
      const sync = this.peek();
      if (sync !== undefined) sync.action = 'swallow';
      return false;
    }
    if (replacement) {
      client.addBuffer(replacement);
      return false;
    }
    return true;
  }

  private onReady(status: number): boolean {
    this.txStatus = status;
    this.resultsSinceReady = 0;
    // the entry ReadyForQuery ends is the first Sync or simple one; anything before it was skipped
    const undone: Expectation[] = [];
    for (let next = this.peek(); next !== undefined; next = this.peek()) {
      if (next.reply === 'sync' || next.reply === 'simple') {
        for (let i = undone.length - 1; i >= 0; i--) undone[i].onUndo?.();
        return this.complete();
      }
      this.unexpected++;
      undone.push(this.shift());
    }
    for (let i = undone.length - 1; i >= 0; i--) undone[i].onUndo?.();
    this.unexpected++;
    return true;
  }

  /** Writes the synthesised replies now at the head: nothing the server owes comes before them. */
  drainLocal(client: ReplySink): void {
    for (let next = this.peek(); next !== undefined && next.reply === 'local'; next = this.peek()) {
      this.writeLocal(this.shift(), client);
    }
  }

  private writeLocal(entry: Expectation, client: ReplySink): void {
    if (entry.synthesized) client.addBuffer(entry.synthesized);
    entry.onDone?.();
  }
}

/** The SQLSTATE ('C' field) of an ErrorResponse at buf[start..end); '' when absent. */
export function sqlstateOf(buf: Buffer, start: number, end: number): string {
  let at = start + 5;
  while (at < end && buf[at] !== 0) {
    const code = buf[at];
    const nul = buf.indexOf(0, at + 1);
    if (nul < 0 || nul >= end) return '';
    if (code === 0x43) return buf.toString('latin1', at + 1, nul);
    at = nul + 1;
  }
  return '';
}

/** The message ('M' field) of an ErrorResponse; '' when absent. */
export function errorMessageOf(buf: Buffer, start: number, end: number): string {
  let at = start + 5;
  while (at < end && buf[at] !== 0) {
    const code = buf[at];
    const nul = buf.indexOf(0, at + 1);
    if (nul < 0 || nul >= end) return '';
    if (code === 0x4d) return buf.toString('utf8', at + 1, nul);
    at = nul + 1;
  }
  return '';
}

/** The ErrorResponse with every occurrence of `from` in its text fields replaced by `to`. */
export function renameInError(buf: Buffer, start: number, end: number, from: string, to: string): Buffer {
  const parts: Buffer[] = [];
  let at = start + 5;
  while (at < end && buf[at] !== 0) {
    const nul = buf.indexOf(0, at + 1);
    if (nul < 0 || nul >= end) break;
    const value = buf.toString('utf8', at + 1, nul).replaceAll(from, to);
    parts.push(Buffer.from([buf[at]]), Buffer.from(value, 'utf8'), Buffer.from([0]));
    at = nul + 1;
  }
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = buf[start];
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
