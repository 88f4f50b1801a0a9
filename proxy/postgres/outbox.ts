// Bytes queued for one socket during an event-loop turn, written once: consecutive slices of
// the same received buffer are merged into one range, so forwarding a chunk full of messages
// costs one write (or one corked writev), not one per message.
import type { Socket } from 'node:net';

/** Several pieces up to this many bytes in all are copied into one buffer and written once. */
const COALESCE_BYTES = 4096;

export class Outbox {
  private readonly chunks: Buffer[] = [];
  private buf: Buffer | undefined;
  private start = 0;
  private end = 0;
  /** Bytes queued since the last flush. */
  bytes = 0;
  /** Bytes in `chunks` (sealed, not yet written). */
  private pendingBytes = 0;
  /** An empty add() was made: the box counts as non-empty but there is nothing to write. */
  private marked = false;

  add(buf: Buffer, start: number, end: number): void {
    if (end === start) {
      // A tap holding messages for a server marks the box with no bytes (so the client acquires
      // one); a zero-length chunk would only turn a plain write into a corked writev.
      this.marked = true;
      return;
    }
    this.bytes += end - start;
    if (buf === this.buf && start === this.end) {
      this.end = end;
      return;
    }
    this.seal();
    this.buf = buf;
    this.start = start;
    this.end = end;
  }

  addBuffer(buf: Buffer): void {
    this.add(buf, 0, buf.length);
  }

  get empty(): boolean {
    return this.buf === undefined && this.chunks.length === 0 && !this.marked;
  }

  /** Drops everything queued (the destination went away). */
  clear(): void {
    this.chunks.length = 0;
    this.pendingBytes = 0;
    this.buf = undefined;
    this.bytes = 0;
    this.marked = false;
  }

  /** Writes everything queued; returns false when the socket asks the writer to wait for 'drain'. */
  flushTo(socket: Socket): boolean {
    this.seal();
    const count = this.chunks.length;
    this.bytes = 0;
    this.marked = false;
    if (count === 0) return true;
    if (socket.destroyed) {
      this.chunks.length = 0;
      this.pendingBytes = 0;
      return true;
    }
    let ok: boolean;
    if (count === 1) ok = socket.write(this.chunks[0]);
    else if (this.pendingBytes <= COALESCE_BYTES) {
      // A few small pieces (a login welcome, a synthesised reply between forwarded slices):
      // copying them into one buffer costs less than the Writable's cork/uncork/writev path.
      const joined = Buffer.allocUnsafe(this.pendingBytes);
      let at = 0;
      for (let i = 0; i < count; i++) {
        const chunk = this.chunks[i];
        chunk.copy(joined, at);
        at += chunk.length;
      }
      ok = socket.write(joined);
    } else {
      socket.cork();
      for (let i = 0; i < count; i++) socket.write(this.chunks[i]);
      socket.uncork();
      ok = socket.writableLength < socket.writableHighWaterMark;
    }
    this.chunks.length = 0;
    this.pendingBytes = 0;
    return ok;
  }

  private seal(): void {
    const buf = this.buf;
    if (buf === undefined) return;
    this.chunks.push(this.start === 0 && this.end === buf.length ? buf : buf.subarray(this.start, this.end));
    this.pendingBytes += this.end - this.start;
    this.buf = undefined;
  }
}
