// How client sockets are read: every accepted socket reads into one buffer shared by all of them
// (net.Socket's `onread` mode), so a read allocates nothing and skips the Readable stream (no
// Buffer per read, no push into a BufferList, no 'data' event). Measured under redis-benchmark
// GET c50 P1 with a PING server (bench/README.md, "What the profile shows"): about 2 µs of user
// CPU per request less than 'data' events.
//
// Node offers `onread` only to sockets it creates for connect(); an accepted socket gets the
// same mode through the two fields that option sets and the handle's useUserBuffer(), found by
// feature test. Where they are missing (another Node version), the socket is read with 'data'
// events instead; callers cannot tell the difference.
//
// The chunk passed to the handler is a view of the shared buffer, valid only until the handler
// returns: whatever is kept past that (a partial request, input held while stalled, bytes queued
// for an upstream write) must be copied.
import type { Socket } from 'node:net';

/** Called with `this` = the socket, once per read; `chunk` is only valid during the call. */
export type InputHandler = (this: Socket, chunk: Buffer) => void;

/** The largest read: Node's default read size, so reads are no smaller than with 'data' events. */
const READ_BYTES = 64 * 1024;

interface OnreadFields {
  buffer: symbol;
  callback: symbol;
}

let shared: Buffer | null = null;
/** Undefined until the first socket is looked at; null when this Node has no onread fields. */
let fields: OnreadFields | null | undefined;
let onreadHandler: InputHandler | null = null;

function onreadFields(socket: Socket): OnreadFields | null {
  const symbols = Object.getOwnPropertySymbols(socket);
  const buffer = symbols.find((s) => s.description === 'kBuffer');
  const callback = symbols.find((s) => s.description === 'kBufferCb');
  const handle = (socket as unknown as { _handle?: { useUserBuffer?: unknown } })._handle;
  if (buffer === undefined || callback === undefined || typeof handle?.useUserBuffer !== 'function') return null;
  return { buffer, callback };
}

/** Node calls this as `socket[kBufferCb](nread, buffer)`. */
function onread(this: Socket, nread: number, buf: Buffer): void {
  (onreadHandler as InputHandler).call(this, buf.subarray(0, nread));
}

/** Starts reading `socket`, handing each read to `handler` (one function for every socket). */
export function readInto(socket: Socket, handler: InputHandler): void {
  if (fields === undefined) fields = onreadFields(socket);
  const handle = (socket as unknown as { _handle: { useUserBuffer?: (buf: Buffer) => void } | null })._handle;
  if (fields === null || handle === null || typeof handle.useUserBuffer !== 'function' || (onreadHandler !== null && onreadHandler !== handler)) {
    socket.on('data', handler);
    return;
  }
  onreadHandler = handler;
  shared ??= Buffer.allocUnsafeSlow(READ_BYTES);
  const target = socket as unknown as Record<symbol, unknown>;
  target[fields.buffer] = shared;
  target[fields.callback] = onread;
  handle.useUserBuffer(shared);
}

/** A copy of `view` that outlives the read it came from. */
export function keep(view: Buffer): Buffer {
  const copy = Buffer.allocUnsafe(view.length);
  view.copy(copy, 0);
  return copy;
}
