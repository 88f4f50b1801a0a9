// The incremental, callback-driven message framer for both directions. It finds message
// boundaries in the byte stream and hands the consumer slices of the buffers it received:
//
//   chunk:  | msg A (whole) | msg B (whole) | msg C ...      |   next chunk:  | ... msg C | ...
//            onFrame(A, first+last)          onFrame(C, first)                onFrame(C, last)
//
// A message wholly inside one chunk is delivered as a slice of that chunk (no copy). A message
// split across chunks is reassembled into one buffer when it is short, or when the consumer
// must decode it (the `whole` table); a long pass-through message (CopyData, DataRow, a big
// Query) is delivered in pieces as it arrives, so COPY streams without buffering payloads.
// Client startup packets have no type byte; while `startup` is true they are framed by length
// alone and delivered with type 0.
import { ProtocolError } from '../errors.js';
import { MAX_STARTUP_PACKET_BYTES } from './protocol-codes.js';

export interface FrameSink {
  /**
   * One message, or one piece of a long one. `buf[start..end)` are the bytes, header included
   * in the first piece. first && last means a whole message.
   */
  onFrame(type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void;
  /** The stream broke the protocol; the framer delivers nothing more. */
  onFrameError(err: ProtocolError): void;
}

export interface FramerOptions {
  /** Largest message accepted, header included; longer is a protocol violation. */
  maxMessageBytes: number;
  /** Types that may legally appear (after startup). */
  validTypes: Uint8Array;
  /** Types always delivered whole, however long (up to maxMessageBytes). */
  whole: Uint8Array;
  /** Other messages up to this size are reassembled whole when split; longer ones stream. */
  wholeUpToBytes: number;
  /** Start in the untagged startup phase (client side). */
  startup?: boolean;
  /** Used in error messages: "client" or "server". */
  peer: string;
  /** The config key that sets maxMessageBytes, named in the error; max_message_size when unset. */
  limitKey?: string;
}

export class Framer {
  /** While true, packets are untagged (StartupMessage, SSLRequest, CancelRequest, ...). The consumer clears it. */
  startup: boolean;
  private failed = false;
  // A header split across chunks is collected here.
  private readonly header = Buffer.alloc(5);
  private headerHave = 0;
  // A short (or must-decode) message split across chunks is reassembled here.
  private assembly: Buffer | undefined;
  private assemblyHave = 0;
  private assemblyType = 0;
  // Bytes still to come of a long message being streamed in pieces.
  private streamRemaining = 0;
  private streamType = 0;

  constructor(private readonly sink: FrameSink, private options: FramerOptions) {
    this.startup = options.startup ?? false;
  }

  setMaxMessageBytes(bytes: number, limitKey = 'max_message_size'): void {
    this.options = { ...this.options, maxMessageBytes: bytes, limitKey };
  }

  /** True when no message is half-received (nothing buffered, nothing streaming). */
  get atBoundary(): boolean {
    return this.headerHave === 0 && this.assembly === undefined && this.streamRemaining === 0;
  }

  /** Frames chunk[0..length): `length` is less than chunk.length when reads land in a larger region (read-slab.ts). */
  push(chunk: Buffer, length = chunk.length): void {
    let pos = 0;
    while (pos < length && !this.failed) {
      if (this.streamRemaining > 0) {
        const take = Math.min(this.streamRemaining, length - pos);
        this.streamRemaining -= take;
        this.sink.onFrame(this.streamType, chunk, pos, pos + take, false, this.streamRemaining === 0);
        pos += take;
        continue;
      }
      if (this.assembly !== undefined) {
        const take = Math.min(this.assembly.length - this.assemblyHave, length - pos);
        chunk.copy(this.assembly, this.assemblyHave, pos, pos + take);
        this.assemblyHave += take;
        pos += take;
        if (this.assemblyHave === this.assembly.length) {
          const message = this.assembly;
          this.assembly = undefined;
          this.sink.onFrame(this.assemblyType, message, 0, message.length, true, true);
        }
        continue;
      }
      const headerBytes = this.startup ? 4 : 5;
      if (this.headerHave > 0 || length - pos < headerBytes) {
        const take = Math.min(headerBytes - this.headerHave, length - pos);
        chunk.copy(this.header, this.headerHave, pos, pos + take);
        this.headerHave += take;
        pos += take;
        if (this.headerHave < headerBytes) continue;
        this.headerHave = 0;
        const type = this.startup ? 0 : this.header[0];
        const total = this.checkHeader(type, this.header, 0);
        if (total < 0) return;
        if (total === headerBytes) {
          this.sink.onFrame(type, Buffer.from(this.header.subarray(0, headerBytes)), 0, headerBytes, true, true);
        } else if (this.mustBeWhole(type, total)) {
          this.assembly = Buffer.allocUnsafe(total);
          this.header.copy(this.assembly, 0, 0, headerBytes);
          this.assemblyHave = headerBytes;
          this.assemblyType = type;
        } else {
          this.streamType = type;
          this.streamRemaining = total - headerBytes;
          this.sink.onFrame(type, Buffer.from(this.header.subarray(0, headerBytes)), 0, headerBytes, true, false);
        }
        continue;
      }
      // At a message start with the whole header in this chunk: the hot path.
      const type = this.startup ? 0 : chunk[pos];
      const total = this.checkHeader(type, chunk, pos);
      if (total < 0) return;
      if (length - pos >= total) {
        this.sink.onFrame(type, chunk, pos, pos + total, true, true);
        pos += total;
      } else if (this.mustBeWhole(type, total)) {
        this.assembly = Buffer.allocUnsafe(total);
        chunk.copy(this.assembly, 0, pos, length);
        this.assemblyHave = length - pos;
        this.assemblyType = type;
        pos = length;
      } else {
        this.streamType = type;
        this.streamRemaining = total - (length - pos);
        this.sink.onFrame(type, chunk, pos, length, true, false);
        pos = length;
      }
    }
  }

  /** Validates a header at buf[at]; returns the message's total length, or -1 after reporting. */
  private checkHeader(type: number, buf: Buffer, at: number): number {
    if (this.startup) {
      const total = buf.readInt32BE(at);
      if (total < 8 || total > MAX_STARTUP_PACKET_BYTES) {
        return this.fail(`invalid startup packet length ${total} from ${this.options.peer}`);
      }
      return total;
    }
    if (this.options.validTypes[type] !== 1) {
      return this.fail(`invalid message type 0x${type.toString(16).padStart(2, '0')} from ${this.options.peer}`);
    }
    const bodyLength = buf.readInt32BE(at + 1);
    if (bodyLength < 4) return this.fail(`invalid message length ${bodyLength} from ${this.options.peer}`);
    if (bodyLength + 1 > this.options.maxMessageBytes) {
      return this.fail(`message of ${bodyLength + 1} bytes from ${this.options.peer} exceeds ${this.options.limitKey ?? 'max_message_size'} ${this.options.maxMessageBytes}`);
    }
    return bodyLength + 1;
  }

  private mustBeWhole(type: number, total: number): boolean {
    return this.startup || total <= this.options.wholeUpToBytes || this.options.whole[type] === 1;
  }

  private fail(message: string): -1 {
    this.failed = true;
    this.sink.onFrameError(new ProtocolError(message));
    return -1;
  }
}
