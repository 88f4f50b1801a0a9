// Helpers for the abuse tests: a raw Postgres wire client that can misbehave (declare huge
// messages, pipeline without reading), and sluice's resident memory read from /proc.
import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { parseErrorFields, startupMessage, typed } from '../proxy/postgres/wire-messages.js';

/** Resident memory of a process in bytes (VmRSS in /proc/<pid>/status). */
export function residentBytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  if (line === undefined) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(line.replace(/\D+/g, '')) * 1024;
}

export const MiB = 1024 * 1024;

export interface BackendMessage {
  type: string;
  body: Buffer;
}

/** A Postgres wire connection driven by hand: it sends what it is told and collects what comes back. */
export class RawPg {
  readonly socket: Socket;
  private pending = Buffer.alloc(0);
  private readonly messages: BackendMessage[] = [];
  private wake: (() => void) | undefined;
  closed = false;
  readonly done: Promise<void>;

  constructor(port: number) {
    this.socket = netConnect(port, '127.0.0.1');
    this.socket.on('error', () => {});
    this.socket.on('data', (chunk: Buffer) => {
      this.pending = Buffer.concat([this.pending, chunk]);
      while (this.pending.length >= 5) {
        const length = this.pending.readInt32BE(1);
        if (this.pending.length < length + 1) break;
        this.messages.push({ type: String.fromCharCode(this.pending[0]), body: this.pending.subarray(5, length + 1) });
        this.pending = this.pending.subarray(length + 1);
      }
      this.wake?.();
    });
    this.done = new Promise((resolve) =>
      this.socket.on('close', () => {
        this.closed = true;
        this.wake?.();
        resolve();
      }),
    );
  }

  startup(params: Record<string, string>): void {
    this.socket.write(startupMessage(params));
  }

  /** The next message of one of `types` (others are skipped); undefined when the connection closed first. */
  async next(...types: string[]): Promise<BackendMessage | undefined> {
    for (;;) {
      const at = this.messages.findIndex((m) => types.length === 0 || types.includes(m.type));
      if (at >= 0) {
        const [message] = this.messages.splice(0, at + 1).slice(-1);
        return message;
      }
      if (this.closed) return undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }

  /** Writes, waiting for drain; false once the peer closed or reset the connection. */
  async write(bytes: Buffer): Promise<boolean> {
    if (this.closed || this.socket.destroyed) return false;
    const flushed = this.socket.write(bytes);
    if (flushed) return true;
    await Promise.race([new Promise((resolve) => this.socket.once('drain', resolve)), this.done]);
    return !this.closed && !this.socket.destroyed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** SQLSTATE and message of an ErrorResponse body. */
export function errorFields(message: BackendMessage | undefined): { code?: string; message?: string } {
  if (message === undefined || message.type !== 'E') return {};
  const whole = typed(0x45, message.body);
  const fields = parseErrorFields(whole, 0, whole.length);
  return { code: fields.get('C'), message: fields.get('M') };
}

/** Parse (named) then Sync. */
export function parseAndSync(name: string, sql: string): Buffer {
  const body = Buffer.concat([Buffer.from(`${name}\0${sql}\0`), Buffer.from([0, 0])]);
  return Buffer.concat([typed(0x50, body), typed(0x53, Buffer.alloc(0))]);
}
