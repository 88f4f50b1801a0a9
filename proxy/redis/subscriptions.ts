// A subscriber's view of its pub/sub session: how many channels, patterns and shard channels it
// holds and which replies it still awaits, read from the frames its dedicated connection passes
// on. When nothing is subscribed and every request is answered, the server has left pub/sub mode
// (Redis leaves it when the total of the three counts reaches 0) and the connection can serve
// anyone again.
//
// The counts come from the confirmations themselves: `[p]subscribe`/`[p]unsubscribe` carry the
// number of channels plus patterns, `ssubscribe`/`sunsubscribe` the number of shard channels
// (Redis 7 `addReplyPubsubSubscribed`). A request with N channel arguments gets N confirmations;
// an unsubscribe call without arguments gets one per subscription of its kind (one if there are
// none), so it is answered when its kind's count is 0. Messages (`message`, `pmessage`,
// `smessage`) answer nothing. Anything this cannot follow makes it give up: the connection then
// stays with its client until the client leaves, as before.
import { parseReply, RespPush, type RespValue } from './resp-values.js';

type SubscriptionKind = 'channel' | 'pattern' | 'shard';

const CONFIRMATIONS = new Map<string, { kind: SubscriptionKind; subscribe: boolean }>([
  ['subscribe', { kind: 'channel', subscribe: true }],
  ['unsubscribe', { kind: 'channel', subscribe: false }],
  ['psubscribe', { kind: 'pattern', subscribe: true }],
  ['punsubscribe', { kind: 'pattern', subscribe: false }],
  ['ssubscribe', { kind: 'shard', subscribe: true }],
  ['sunsubscribe', { kind: 'shard', subscribe: false }],
]);

/** Commands after which the connection's state may no longer be what sluice believes (protocol, db, user, transaction). */
const STATE_CHANGING = new Set(['hello', 'select', 'auth', 'client', 'multi', 'watch']);

/** The start of a published message, the only frame too big to keep that can be skipped safely. */
const MESSAGE_START = /^[*>][34]\r\n\$[78]\r\n[ps]?message\r\n/;

interface Due {
  /** Confirmations of this kind close an argument-less unsubscribe call. */
  kind: SubscriptionKind | null;
  /** Replies still to come; -1 for an argument-less unsubscribe call. */
  replies: number;
}

export class Subscriptions {
  channels = 0;
  patterns = 0;
  shards = 0;
  private readonly due: Due[] = [];
  private lost = false;

  /** The server has left pub/sub mode and owes this client nothing. */
  get ended(): boolean {
    return !this.lost && this.due.length === 0 && this.channels + this.patterns + this.shards === 0;
  }

  /** A request went to the connection: `name` lower-cased, `argc` counting the name. */
  sent(name: string, argc: number): void {
    if (STATE_CHANGING.has(name)) this.lost = true;
    const confirmation = CONFIRMATIONS.get(name);
    if (confirmation === undefined || (confirmation.subscribe && argc < 2)) this.due.push({ kind: null, replies: 1 });
    else if (argc > 1) this.due.push({ kind: confirmation.kind, replies: argc - 1 });
    else this.due.push({ kind: confirmation.kind, replies: -1 });
  }

  /** A frame from the server: whole, or (`complete` false) the first bytes of one too big to keep. */
  received(frame: Buffer, complete: boolean): void {
    if (this.lost) return;
    // Published messages are most of the traffic: recognised by their first bytes, never decoded.
    if (MESSAGE_START.test(frame.toString('latin1', 0, 24))) return;
    if (!complete) {
      this.lost = true;
      return;
    }
    let value: RespValue;
    try {
      value = parseReply(frame).value;
    } catch {
      this.lost = true;
      return;
    }
    const items = Array.isArray(value) ? value : value instanceof RespPush ? value.items : null;
    const head = items !== null && Buffer.isBuffer(items[0]) ? items[0].toString('latin1').toLowerCase() : '';
    if (head === 'message' || head === 'pmessage' || head === 'smessage') return;
    const confirmation = CONFIRMATIONS.get(head);
    const count = items?.[2];
    const confirmed = confirmation !== undefined && items?.length === 3 && typeof count === 'number';
    if (confirmed) {
      if (confirmation.kind === 'shard') this.shards = count;
      else if (confirmation.kind === 'channel') this.channels = Math.max(0, count - this.patterns);
      else this.patterns = Math.max(0, count - this.channels);
    }
    const due = this.due[0];
    if (due === undefined) {
      // A reply nobody asked for: the bookkeeping is wrong somewhere, so never trust it again.
      this.lost = true;
      return;
    }
    if (due.replies > 0) {
      due.replies--;
      if (due.replies === 0) this.due.shift();
    } else if (!confirmed || this.count(due.kind) === 0) this.due.shift();
  }

  private count(kind: SubscriptionKind | null): number {
    return kind === 'channel' ? this.channels : kind === 'pattern' ? this.patterns : kind === 'shard' ? this.shards : 0;
  }
}
