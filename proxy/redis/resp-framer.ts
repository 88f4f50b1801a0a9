// Incremental RESP framers: they find where each request and each reply ends, and never rebuild
// a value they only forward. Both keep their state between chunks, so a frame may be split at
// any byte; a big bulk string is skipped by counting, never copied.
//
//   request:  *<n>\r\n ($<len>\r\n<bytes>\r\n){n}      or an inline line  PING\r\n
//   reply:    any RESP2/RESP3 value, aggregates nested on a stack of remaining-element counts
//
// `next(buf, pos)` returns the offset just past the frame that ends in `buf` at or after `pos`,
// or -1 when all of buf[pos..] belongs to a frame that is not finished yet.
import { ProtocolError } from '../errors.js';

export interface RespLimits {
  maxBulkBytes: number;
  maxArrayElements: number;
  maxInlineBytes: number;
}

/** Type bytes, client → server. Anything else starting a request is an inline command or garbage. */
export const REQUEST_BYTE = { array: 0x2a /* * */, bulk: 0x24 /* $ */ } as const;

/** Type bytes, server → client (RESP2 and RESP3). */
export const REPLY_BYTE = {
  simpleString: 0x2b, // +
  error: 0x2d, // -
  integer: 0x3a, // :
  bulk: 0x24, // $
  array: 0x2a, // *
  null: 0x5f, // _
  double: 0x2c, // ,
  boolean: 0x23, // #
  bigNumber: 0x28, // (
  blobError: 0x21, // !
  verbatim: 0x3d, // =
  map: 0x25, // %
  set: 0x7e, // ~
  attribute: 0x7c, // |
  push: 0x3e, // >
  streamChunk: 0x3b, // ;
  streamEnd: 0x2e, // .
} as const;

const CR = 0x0d;
const LF = 0x0a;
const MINUS = 0x2d;
const QUESTION = 0x3f;
const NAME_CAPACITY = 32;
/** Digits beyond this in a length cannot be under any limit: stop reading before overflow. */
const MAX_LENGTH_DIGITS = 12;

type RequestState = 'start' | 'array-length' | 'bulk-type' | 'bulk-length' | 'bulk-body' | 'inline' | 'line-end';

export type RequestKind = 'array' | 'inline' | 'empty';

/**
 * Frames client requests. After `next()` returns an end offset: `kind` says whether it was a RESP
 * array, an inline line, or something Redis ignores without a reply (`*0`, `*-1`, a blank line:
 * never forward those, they would desynchronise the reply FIFO); `name` is the lower-cased command
 * name of an array request ('' when longer than 32 bytes); `argc` the element count.
 */
export class RequestFramer {
  kind: RequestKind = 'empty';
  argc = 0;
  private state: RequestState = 'start';
  private after: RequestState = 'start';
  private number = 0;
  private digits = 0;
  private negative = false;
  private remainingArgs = 0;
  private remainingBytes = 0;
  private argIndex = 0;
  private inlineBytes = 0;
  private readonly nameBytes = Buffer.allocUnsafe(NAME_CAPACITY);
  private nameLength = 0;
  private nameTooLong = false;
  private readonly lastNameBytes = Buffer.allocUnsafe(NAME_CAPACITY);
  private lastNameLength = -1;
  private lastName = '';

  constructor(public limits: RespLimits) {}

  /** Lower-cased command name of the last array request. */
  get name(): string {
    if (this.nameTooLong) return '';
    // Pipelines repeat the same command: reuse the last string instead of allocating one per request.
    const n = this.nameLength;
    if (n === this.lastNameLength) {
      let same = true;
      for (let i = 0; i < n; i++) {
        if (this.nameBytes[i] !== this.lastNameBytes[i]) {
          same = false;
          break;
        }
      }
      if (same) return this.lastName;
    }
    this.nameBytes.copy(this.lastNameBytes, 0, 0, n);
    this.lastNameLength = n;
    this.lastName = this.nameBytes.toString('latin1', 0, n);
    return this.lastName;
  }

  /** True between frames: no partial request is held. */
  get atBoundary(): boolean {
    return this.state === 'start';
  }

  next(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      switch (this.state) {
        case 'start': {
          const byte = buf[pos];
          if (byte === REQUEST_BYTE.array) {
            this.kind = 'array';
            this.beginNumber('array-length');
            pos++;
          } else if (byte === CR || byte === LF) {
            // A blank line: Redis skips it without a reply.
            this.kind = 'empty';
            this.inlineBytes = 0;
            this.state = 'inline';
          } else if ((byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)) {
            this.kind = 'inline';
            this.inlineBytes = 0;
            this.state = 'inline';
          } else {
            throw new ProtocolError(`Protocol error: unexpected byte 0x${byte.toString(16).padStart(2, '0')} at the start of a request`);
          }
          break;
        }
        case 'inline': {
          const lf = buf.indexOf(LF, pos);
          const stop = lf < 0 ? len : lf;
          this.inlineBytes += stop - pos;
          if (this.inlineBytes > this.limits.maxInlineBytes) throw new ProtocolError('Protocol error: too big inline request');
          if (lf < 0) return -1;
          if (this.kind === 'empty' && !isBlank(buf, pos, lf)) this.kind = 'inline';
          this.argc = 0;
          this.state = 'start';
          return lf + 1;
        }
        case 'array-length':
        case 'bulk-length': {
          pos = this.readNumber(buf, pos);
          break;
        }
        case 'line-end': {
          // Reached after the CR of a length line: the LF must follow.
          if (buf[pos] !== LF) throw new ProtocolError('Protocol error: expected \\n after \\r');
          pos++;
          const end = this.lengthDone(pos);
          if (end >= 0) return end;
          break;
        }
        case 'bulk-type': {
          const byte = buf[pos];
          if (byte !== REQUEST_BYTE.bulk) throw new ProtocolError(`Protocol error: expected '$', got '${printable(byte)}'`);
          this.beginNumber('bulk-length');
          pos++;
          break;
        }
        case 'bulk-body': {
          const take = Math.min(this.remainingBytes, len - pos);
          if (this.argIndex === 0) this.captureName(buf, pos, take);
          this.remainingBytes -= take;
          pos += take;
          if (this.remainingBytes === 0) {
            this.argIndex++;
            if (--this.remainingArgs === 0) {
              this.state = 'start';
              return pos;
            }
            this.state = 'bulk-type';
          }
          break;
        }
      }
    }
    return -1;
  }

  private beginNumber(after: RequestState): void {
    this.state = after;
    this.after = after;
    this.number = 0;
    this.digits = 0;
    this.negative = false;
  }

  private readNumber(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      const byte = buf[pos++];
      if (byte >= 0x30 && byte <= 0x39) {
        if (++this.digits > MAX_LENGTH_DIGITS) throw this.lengthError();
        this.number = this.number * 10 + (byte - 0x30);
      } else if (byte === MINUS && this.digits === 0 && !this.negative) {
        this.negative = true;
      } else if (byte === CR && this.digits > 0) {
        this.state = 'line-end';
        return pos;
      } else {
        throw this.lengthError();
      }
    }
    return pos;
  }

  private lengthError(): ProtocolError {
    return new ProtocolError(this.after === 'array-length' ? 'Protocol error: invalid multibulk length' : 'Protocol error: invalid bulk length');
  }

  /** A length line ended at `pos`; returns the frame end when the request is complete there. */
  private lengthDone(pos: number): number {
    const value = this.negative ? -this.number : this.number;
    if (this.after === 'array-length') {
      if (value > this.limits.maxArrayElements) throw this.lengthError();
      if (value <= 0) {
        // `*0` and `*-1` are ignored by Redis: no reply comes, so they must not be forwarded.
        this.kind = 'empty';
        this.argc = 0;
        this.state = 'start';
        return pos;
      }
      this.argc = value;
      this.remainingArgs = value;
      this.argIndex = 0;
      this.nameLength = 0;
      this.nameTooLong = false;
      this.state = 'bulk-type';
      return -1;
    }
    if (value < 0 || value > this.limits.maxBulkBytes) throw this.lengthError();
    this.remainingBytes = value + 2;
    this.state = 'bulk-body';
    return -1;
  }

  private captureName(buf: Buffer, pos: number, take: number): void {
    // The last two bytes of the body are its CRLF; only the name itself is kept.
    const bodyLeft = this.remainingBytes - 2;
    const n = Math.min(take, Math.max(0, bodyLeft));
    for (let i = 0; i < n; i++) {
      if (this.nameLength >= NAME_CAPACITY) {
        this.nameTooLong = true;
        return;
      }
      const byte = buf[pos + i];
      this.nameBytes[this.nameLength++] = byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte;
    }
  }
}

function isBlank(buf: Buffer, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const b = buf[i];
    if (b !== CR && b !== 0x20 && b !== 0x09) return false;
  }
  return true;
}

function printable(byte: number): string {
  return byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, '0')}`;
}

type ReplyState = 'type' | 'line' | 'line-lf' | 'length' | 'length-lf' | 'body';

/** Marks a streamed aggregate (`*?`): it ends with `.\r\n`, not by count. */
const STREAMED = -1;
const MAX_DEPTH = 1024;
/** Replies are trusted more than requests (KEYS can return millions), but a count must still be bounded. */
const MAX_REPLY_ELEMENTS = 2 ** 32;

/**
 * Frames server replies of every RESP2/RESP3 type, nested aggregates included. `topType` is the
 * type byte of the frame in progress or just finished (a push `>` is not the answer to a request).
 */
export class ReplyFramer {
  topType = 0;
  private state: ReplyState = 'type';
  private lengthType = 0;
  private number = 0;
  private digits = 0;
  private negative = false;
  private streamed = false;
  private remainingBytes = 0;
  /** Remaining elements per open aggregate, innermost last; STREAMED for `*?` aggregates. */
  private readonly remaining: number[] = [];
  private readonly attribute: boolean[] = [];
  private depth = 0;
  /** Inside `$?`: the next thing is a `;<len>` chunk header. */
  private inStreamedString = false;

  constructor(public maxBulkBytes: number) {}

  /** True between frames. */
  get atBoundary(): boolean {
    return this.state === 'type' && this.depth === 0 && !this.inStreamedString;
  }

  next(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      switch (this.state) {
        case 'type': {
          const byte = buf[pos++];
          if (this.depth === 0 && !this.inStreamedString) this.topType = byte;
          if (this.inStreamedString) {
            if (byte !== REPLY_BYTE.streamChunk) throw new ProtocolError(`Protocol error: expected ';' in a streamed string, got '${printable(byte)}'`);
            this.beginLength(byte);
            break;
          }
          switch (byte) {
            case REPLY_BYTE.simpleString:
            case REPLY_BYTE.error:
            case REPLY_BYTE.integer:
            case REPLY_BYTE.null:
            case REPLY_BYTE.double:
            case REPLY_BYTE.boolean:
            case REPLY_BYTE.bigNumber:
              this.state = 'line';
              break;
            case REPLY_BYTE.streamEnd:
              if (this.depth === 0 || this.remaining[this.depth - 1] !== STREAMED) throw new ProtocolError("Protocol error: '.' outside a streamed aggregate");
              this.state = 'line';
              this.lengthType = byte;
              break;
            case REPLY_BYTE.bulk:
            case REPLY_BYTE.blobError:
            case REPLY_BYTE.verbatim:
            case REPLY_BYTE.array:
            case REPLY_BYTE.map:
            case REPLY_BYTE.set:
            case REPLY_BYTE.attribute:
            case REPLY_BYTE.push:
              this.beginLength(byte);
              break;
            default:
              throw new ProtocolError(`Protocol error: unexpected reply type byte '${printable(byte)}'`);
          }
          if (byte !== REPLY_BYTE.streamEnd) this.lengthTypeForLine(byte);
          break;
        }
        case 'line': {
          const cr = buf.indexOf(CR, pos);
          if (cr < 0) return -1;
          pos = cr + 1;
          this.state = 'line-lf';
          break;
        }
        case 'line-lf': {
          if (buf[pos++] !== LF) throw new ProtocolError('Protocol error: expected \\n after \\r');
          this.state = 'type';
          if (this.lengthType === REPLY_BYTE.streamEnd) {
            this.lengthType = 0;
            this.depth--;
            if (this.valueDone()) return pos;
          } else if (this.valueDone()) return pos;
          break;
        }
        case 'length': {
          pos = this.readNumber(buf, pos);
          break;
        }
        case 'length-lf': {
          if (buf[pos++] !== LF) throw new ProtocolError('Protocol error: expected \\n after \\r');
          this.state = 'type';
          if (this.lengthDone()) return pos;
          break;
        }
        case 'body': {
          const take = Math.min(this.remainingBytes, len - pos);
          this.remainingBytes -= take;
          pos += take;
          if (this.remainingBytes === 0) {
            this.state = 'type';
            // A chunk of a streamed string is not a value; the `;0` chunk ends it.
            if (!this.inStreamedString && this.valueDone()) return pos;
          }
          break;
        }
      }
    }
    return -1;
  }

  private lengthTypeForLine(byte: number): void {
    if (this.state === 'line') this.lengthType = byte;
  }

  private beginLength(type: number): void {
    this.state = 'length';
    this.lengthType = type;
    this.number = 0;
    this.digits = 0;
    this.negative = false;
    this.streamed = false;
  }

  private readNumber(buf: Buffer, pos: number): number {
    const len = buf.length;
    while (pos < len) {
      const byte = buf[pos++];
      if (byte >= 0x30 && byte <= 0x39) {
        if (++this.digits > MAX_LENGTH_DIGITS || this.streamed) throw new ProtocolError('Protocol error: invalid length in reply');
        this.number = this.number * 10 + (byte - 0x30);
      } else if (byte === MINUS && this.digits === 0 && !this.negative && !this.streamed) {
        this.negative = true;
      } else if (byte === QUESTION && this.digits === 0 && !this.negative && !this.streamed && this.lengthType !== REPLY_BYTE.streamChunk) {
        this.streamed = true;
      } else if (byte === CR && (this.digits > 0 || this.streamed)) {
        this.state = 'length-lf';
        return pos;
      } else {
        throw new ProtocolError('Protocol error: invalid length in reply');
      }
    }
    return pos;
  }

  /** A length line ended; returns true when that completes the top-level frame. */
  private lengthDone(): boolean {
    const type = this.lengthType;
    const value = this.negative ? -this.number : this.number;
    if (type === REPLY_BYTE.streamChunk) {
      if (value === 0) {
        this.inStreamedString = false;
        return this.valueDone();
      }
      if (value < 0 || value > this.maxBulkBytes) throw new ProtocolError('Protocol error: invalid streamed chunk length');
      this.remainingBytes = value + 2;
      this.state = 'body';
      return false;
    }
    if (type === REPLY_BYTE.bulk || type === REPLY_BYTE.blobError || type === REPLY_BYTE.verbatim) {
      if (this.streamed) {
        if (type !== REPLY_BYTE.bulk) throw new ProtocolError('Protocol error: only bulk strings may be streamed');
        this.inStreamedString = true;
        return false;
      }
      if (value === -1) return this.valueDone();
      if (value < 0 || value > this.maxBulkBytes) throw new ProtocolError('Protocol error: invalid bulk length in reply');
      this.remainingBytes = value + 2;
      this.state = 'body';
      return false;
    }
    // An aggregate.
    if (this.streamed) return this.open(STREAMED, type === REPLY_BYTE.attribute);
    if (value > MAX_REPLY_ELEMENTS || value < -1) throw new ProtocolError('Protocol error: invalid aggregate length in reply');
    const elements = type === REPLY_BYTE.map || type === REPLY_BYTE.attribute ? value * 2 : value;
    if (elements <= 0) {
      // An empty attribute annotates the value that follows; an empty or null aggregate is a value.
      return type === REPLY_BYTE.attribute ? false : this.valueDone();
    }
    return this.open(elements, type === REPLY_BYTE.attribute);
  }

  private open(elements: number, isAttribute: boolean): boolean {
    if (this.depth >= MAX_DEPTH) throw new ProtocolError('Protocol error: reply nested too deeply');
    this.remaining[this.depth] = elements;
    this.attribute[this.depth] = isAttribute;
    this.depth++;
    return false;
  }

  /** One value finished; returns true when that completes the top-level frame. */
  private valueDone(): boolean {
    for (;;) {
      if (this.depth === 0) return true;
      const d = this.depth - 1;
      if (this.remaining[d] === STREAMED) return false;
      if (--this.remaining[d] > 0) return false;
      this.depth--;
      // An attribute is not a value: it annotates the one that follows.
      if (this.attribute[d]) return false;
    }
  }
}
