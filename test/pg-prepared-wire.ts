// A client speaking raw protocol bytes to sluice, for the real-Postgres prepared-statement tests:
// exact message sequences on the wire, replies described as short strings.
import { connect as netConnect, type Socket } from 'node:net';
import { serialize } from 'pg-protocol';
import { PG_USERS } from './harness/postgres-server.js';

/** A client speaking raw protocol bytes, to put exact message sequences on the wire. */
export class RawClient {
  private buffered = Buffer.alloc(0);
  private readonly messages: Buffer[] = [];
  private wake: (() => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      while (this.buffered.length >= 5) {
        const total = this.buffered.readInt32BE(1) + 1;
        if (this.buffered.length < total) break;
        this.messages.push(this.buffered.subarray(0, total));
        this.buffered = this.buffered.subarray(total);
      }
      this.wake?.();
    });
  }

  static async connect(port: number, database = 'postgres'): Promise<RawClient> {
    const socket = netConnect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const client = new RawClient(socket);
    socket.write(serialize.startup({ user: PG_USERS.scram.name, database }));
    for (;;) {
      const msg = await client.next();
      if (msg[0] === 0x52 && msg.readInt32BE(5) === 3) socket.write(serialize.password(PG_USERS.scram.password));
      else if (msg[0] === 0x52 && msg.readInt32BE(5) === 10) throw new Error('raw client speaks cleartext only (passthrough)');
      else if (msg[0] === 0x5a) return client;
      else if (msg[0] === 0x45) throw new Error(describe(msg));
    }
  }

  private async next(): Promise<Buffer> {
    while (this.messages.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
    return this.messages.shift()!;
  }

  /** Sends the messages and collects the replies up to the `syncs`-th ReadyForQuery, described. */
  async run(messages: Buffer[], syncs = 1): Promise<string[]> {
    this.socket.write(Buffer.concat(messages));
    const got: string[] = [];
    let seen = 0;
    while (seen < syncs) {
      const msg = await this.next();
      const text = describe(msg);
      if (msg[0] === 0x5a) seen++;
      if (msg[0] !== 0x4e && msg[0] !== 0x53) got.push(text);
    }
    return got;
  }

  /** Sends the messages and collects the next `count` replies (notices and ParameterStatus left out), described. */
  async take(messages: Buffer[], count: number): Promise<string[]> {
    this.socket.write(Buffer.concat(messages));
    const got: string[] = [];
    while (got.length < count) {
      const msg = await this.next();
      if (msg[0] !== 0x4e && msg[0] !== 0x53) got.push(describe(msg));
    }
    return got;
  }

  end(): void {
    this.socket.end(serialize.end());
  }
}

/** Short text for a backend message: T with column names, D with values, E with SQLSTATE. */
export function describe(msg: Buffer): string {
  const type = String.fromCharCode(msg[0]);
  const cstr = (at: number): [string, number] => {
    const nul = msg.indexOf(0, at);
    return [msg.toString('utf8', at, nul), nul + 1];
  };
  switch (type) {
    case 'T': {
      const names: string[] = [];
      let at = 7;
      for (let i = 0; i < msg.readInt16BE(5); i++) {
        const [name, next] = cstr(at);
        names.push(name);
        at = next + 18;
      }
      return `T ${names.join(',')}`;
    }
    case 'D': {
      const values: string[] = [];
      let at = 7;
      for (let i = 0; i < msg.readInt16BE(5); i++) {
        const length = msg.readInt32BE(at);
        values.push(length < 0 ? 'NULL' : msg.toString('utf8', at + 4, at + 4 + length));
        at += 4 + Math.max(0, length);
      }
      return `D ${values.join(',')}`;
    }
    case 'E': {
      let at = 5;
      const fields = new Map<string, string>();
      while (msg[at] !== 0) {
        const [value, next] = cstr(at + 1);
        fields.set(String.fromCharCode(msg[at]), value);
        at = next;
      }
      return `E ${fields.get('C')}`;
    }
    case 'C':
      return `C ${cstr(5)[0]}`;
    case 'Z':
      return `Z ${String.fromCharCode(msg[5])}`;
    default:
      return type;
  }
}

