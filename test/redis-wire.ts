// A bare RESP client for the Redis tests: sends exact bytes and reads replies one by one, so a
// test can see precisely what sluice answered, in what order, and whether it closed the socket.
import { createConnection, type Socket } from 'node:net';
import { ReplyFramer } from '../proxy/redis/resp-framer.js';
import { encodeRequest, parseReply, type RespValue } from '../proxy/redis/resp-values.js';

export class WireClient {
  readonly closed: Promise<void>;
  private buffered: Buffer = Buffer.alloc(0);
  private readonly framer = new ReplyFramer(1024 * 1024 * 1024);
  private scanned = 0;
  private readonly replies: Buffer[] = [];
  private readonly waiters: Array<(reply: Buffer | null) => void> = [];
  private isClosed = false;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.isClosed = true;
        for (const waiter of this.waiters.splice(0)) waiter(null);
        resolve();
      });
    });
    socket.on('error', () => {});
  }

  static connect(port: number): Promise<WireClient> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: '127.0.0.1', port }, () => resolve(new WireClient(socket)));
      socket.once('error', reject);
    });
  }

  send(...args: Array<string | Buffer>): void {
    this.socket.write(encodeRequest(args));
  }

  sendRaw(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  /** The next reply's raw bytes; null when the connection closed first. */
  nextRaw(): Promise<Buffer | null> {
    const reply = this.replies.shift();
    if (reply !== undefined) return Promise.resolve(reply);
    if (this.isClosed) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  async next(): Promise<RespValue | undefined> {
    const raw = await this.nextRaw();
    return raw === null ? undefined : parseReply(raw).value;
  }

  async command(...args: Array<string | Buffer>): Promise<RespValue | undefined> {
    this.send(...args);
    return this.next();
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    let start = 0;
    for (;;) {
      const end = this.framer.next(this.buffered, this.scanned);
      if (end < 0) {
        this.scanned = this.buffered.length;
        break;
      }
      const reply = this.buffered.subarray(start, end);
      start = end;
      this.scanned = end;
      const waiter = this.waiters.shift();
      if (waiter) waiter(reply);
      else this.replies.push(reply);
    }
    this.buffered = this.buffered.subarray(start);
    this.scanned -= start;
  }
}

/** A string view of a reply value, for assertions. */
export function text(value: RespValue | undefined): string {
  if (value === undefined) return '<closed>';
  if (Buffer.isBuffer(value)) return value.toString();
  if (value === null) return '<null>';
  if (typeof value === 'object' && 'message' in value) return `ERR:${value.message}`;
  if (Array.isArray(value)) return `[${value.map((v) => text(v)).join(',')}]`;
  if (typeof value === 'object' && 'items' in value) return `>[${value.items.map((v) => text(v)).join(',')}]`;
  if (typeof value === 'object' && 'entries' in value) return `{${value.entries.map(([k, v]) => `${text(k)}:${text(v)}`).join(',')}}`;
  return String(value);
}
