// The seam where every message of a linked client and server passes, for features that must
// see or rewrite traffic (issue 7: prepared-statement renaming, session-state pinning). The
// pooler works without a tap; a tap is installed per listener.
//
// Contract: the tap sees whole messages (type byte first; long pass-through messages such as
// CopyData or big Query strings are seen only by their first piece, with `last` false).
// Returning true means "I took care of this message" — the pooler neither forwards nor counts
// it, so a tap that injects or answers messages itself must keep the counts in step via
// `link.countSent(type)` for each message it sends to the server in the client's place.
import type { Severity } from './wire-messages.js';

export interface TapLink {
  readonly database: string;
  readonly user: string;
  readonly mode: 'session' | 'transaction' | 'statement';
  /** Id of the server the client holds now, undefined when none. */
  readonly serverId: number | undefined;
  /** ReadyForQuery replies the client is owed for requests already counted (not the one being seen). */
  readonly pendingSyncs: number;
  /**
   * Queues bytes[start..end) to the client in order with forwarded messages. Pass the received
   * buffer with offsets rather than a subarray: adjacent ranges of one buffer merge into one write.
   */
  toClient(bytes: Buffer, start?: number, end?: number): void;
  /** Queues bytes[start..end) to the server in order with forwarded messages (counting is the tap's job). */
  toServer(bytes: Buffer, start?: number, end?: number): void;
  /** Runs the pooler's reply counting for a message of this type the tap sent with toServer(). */
  countSent(type: number): void;
  /** Keeps the client on its server beyond the transaction (session state the pooler cannot replay). */
  pin(reason: string): void;
  /**
   * The session state that pinned the client is gone (`reason` says what ended it, for metrics):
   * the server goes back to the pool at the next ReadyForQuery that finds the client idle.
   */
  unpin(reason: string): void;
  /** Sends an error to the client. */
  error(severity: Severity, sqlstate: string, message: string): void;
}

export interface MessageTap {
  /** A client message on its way to the server. */
  fromClient?(link: TapLink, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean;
  /** A server message on its way to the client. */
  fromServer?(link: TapLink, type: number, buf: Buffer, start: number, end: number, last: boolean): boolean;
  /** The client was given a server (after parameter replay). */
  serverAssigned?(link: TapLink): void;
  /** The client gave its server back. */
  serverReleased?(link: TapLink): void;
  /**
   * Every message of one chunk from the client's server has been seen: replies the tap still owes
   * (e.g. a synthesised ParseComplete due after the last CommandComplete of a batch that ends with
   * Flush, which no later server message would push out) go to link.toClient now. Once per chunk.
   */
  serverChunkEnd?(link: TapLink): void;
  /** A server connection closed (whoever held it): per-server state kept under its id can go. */
  serverClosed?(serverId: number): void;
}
