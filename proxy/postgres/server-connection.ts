// One upstream Postgres connection: connect within timeouts.connect, optional TLS, login
// (trust, cleartext, md5, SCRAM-SHA-256), then byte forwarding state for whoever holds it.
// The pooling decisions live in client-session.ts; this file owns the upstream socket.
import { readFileSync } from 'node:fs';
import { isIP, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { ConnectError, ProtocolError } from '../errors.js';
import { ReadSlab } from '../read-slab.js';
import type { PooledConnection } from '../pool/pool.js';
import { md5Hex, md5Response, ScramClient } from './auth.js';
import { Framer, type FrameSink } from './framer.js';
import { Outbox } from './outbox.js';
import { AuthCode, BACKEND_TYPES, BackendCode, byteSet, StartupCode, TxStatus } from './protocol-codes.js';
import {
  cancelRequest,
  parseErrorFields,
  parseParameterStatus,
  passwordMessage,
  readCString,
  saslInitialResponse,
  startupMessage,
  TERMINATE,
  typed,
  untaggedCode,
} from './wire-messages.js';

export type ServerTls = 'disable' | 'prefer' | 'require' | 'verify-full';

export interface UpstreamTarget {
  host: string;
  port: number;
  tls: ServerTls;
  caFile?: string;
  /** server.tls_min_version; Node's default (TLSv1.2) when unset. */
  tlsMinVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** server.tls_ciphers: an OpenSSL cipher list. */
  tlsCiphers?: string;
}

export interface LoginParams {
  user: string;
  database: string;
  /** Undefined when the server is not expected to ask (trust). */
  password?: string;
}

/** What the client-side code does with a logged-in server's traffic. */
export interface ServerHandler {
  onServerFrame(server: ServerConnection, type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void;
  /** All frames of one received chunk have been delivered. */
  onServerChunkEnd(server: ServerConnection): void;
  onServerClosed(server: ServerConnection, reason: string): void;
}

/** Largest server message sluice reassembles or accepts (Postgres' own limit is 1 GiB). */
const MAX_SERVER_MESSAGE_BYTES = 1024 * 1024 * 1024 + 64;
/** Server messages sluice decodes are always delivered whole. */
const SERVER_WHOLE = byteSet(
  BackendCode.authentication,
  BackendCode.backendKeyData,
  BackendCode.errorResponse,
  BackendCode.parameterStatus,
  BackendCode.readyForQuery,
  BackendCode.commandComplete,
  BackendCode.copyInResponse,
  BackendCode.copyOutResponse,
  BackendCode.copyBothResponse,
  BackendCode.negotiateProtocolVersion,
);

let nextServerId = 1;

export class ServerConnection implements PooledConnection, FrameSink {
  readonly id = nextServerId++;
  poolState: PooledConnection['poolState'] = 'opening';
  openedAtMs = Date.now();
  idleSinceMs = Date.now();
  generation = 0;

  /** The server's real cancel key. */
  pid = 0;
  secret: Buffer = Buffer.alloc(0);
  /** Reported (GUC_REPORT) parameters as this server has them now. */
  readonly params = new Map<string, string>();
  /** Non-reported settings applied on behalf of clients (from startup `options` etc.), as they stand now. */
  readonly applied = new Map<string, string>();
  /**
   * The param-set id (param-set.ts) of the client settings this server is known to carry, 0 when
   * unknown. Any change to `params` or `applied` resets it.
   */
  paramsId = 0;
  /** ReadyForQuery replies still owed: one per Sync or Query sent. */
  pendingSyncs = 0;
  /** Extended-protocol messages sent since the last Sync (their replies come before no ReadyForQuery). */
  unsynced = 0;
  /** Status byte of the last ReadyForQuery. */
  txStatus: number = TxStatus.idle;
  /** Inside COPY FROM STDIN: the server expects CopyData/CopyDone/CopyFail. */
  copyIn = false;
  /** Cancel requests sent for this server and not yet finished; it must not change hands meanwhile. */
  cancelsInFlight = 0;
  /** Called when the last cancel in flight finishes. */
  afterCancel: (() => void) | undefined;
  /** Whoever holds it; set by client-session.ts. */
  holder: unknown;
  readonly out = new Outbox();
  closed = false;

  private readonly framer: Framer;
  private handler: ServerHandler | undefined;
  private login: LoginRun | undefined;

  constructor(
    readonly socket: Socket,
    readonly label: string,
    private readonly target: UpstreamTarget,
    /** Set when the socket reads through `onread` (plain TCP); TLS sockets emit 'data'. */
    private readonly readSlab?: ReadSlab,
  ) {
    this.framer = new Framer(this, {
      maxMessageBytes: MAX_SERVER_MESSAGE_BYTES,
      validTypes: BACKEND_TYPES,
      whole: SERVER_WHOLE,
      wholeUpToBytes: 64 * 1024,
      peer: `server ${label}`,
    });
  }

  /**
   * A client's RESET, SET or DISCARD ALL may have changed settings sluice applied here: the
   * values are no longer known, so the next client re-applies (or resets) every one of them.
   * NUL cannot occur in a setting's value, so no client's value equals the marker.
   */
  forgetApplied(): void {
    for (const name of this.applied.keys()) this.applied.set(name, '\0');
    this.paramsId = 0;
  }

  /** Records a reported parameter; a changed value forgets which client settings the server carries. */
  setParam(name: string, value: string): void {
    if (this.params.get(name) === value) return;
    this.params.set(name, value);
    this.paramsId = 0;
  }

  /** Hands the logged-in server's traffic to the pooling code. */
  attach(handler: ServerHandler): void {
    this.handler = handler;
  }

  /** Sends queued bytes now. */
  flush(): boolean {
    return this.out.flushTo(this.socket);
  }

  /** Polite close: Terminate, then end. */
  terminate(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.socket.destroyed) {
      this.socket.end(TERMINATE);
      this.socket.setTimeout(5000, () => this.socket.destroy());
    }
  }

  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  /** Opens a fresh connection to this server and sends its real cancel key. */
  sendCancel(timeoutMs: number): void {
    if (this.pid === 0) return;
    this.cancelsInFlight++;
    const done = () => {
      this.cancelsInFlight--;
      if (this.cancelsInFlight === 0 && this.afterCancel) {
        const next = this.afterCancel;
        this.afterCancel = undefined;
        next();
      }
    };
    connectUpstream(this.target, timeoutMs, this.label).then(
      (socket) => {
        socket.once('close', done);
        socket.setTimeout(timeoutMs, () => socket.destroy());
        socket.end(cancelRequest(this.pid, this.secret));
      },
      () => done(),
    );
  }

  onFrame(type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void {
    if (this.login) {
      this.login.frame(type, buf, start, end);
      return;
    }
    this.handler?.onServerFrame(this, type, buf, start, end, first, last);
  }

  onFrameError(err: ProtocolError): void {
    if (this.login) this.login.fail(err.message);
    this.socket.destroy();
    this.closed = true;
    this.handler?.onServerClosed(this, err.message);
  }

  /** Wires socket events; called once the TCP/TLS connection is up. */
  listen(): void {
    if (this.readSlab) this.readSlab.setHandler((chunk, length) => this.onChunk(chunk, length));
    else this.socket.on('data', (chunk: Buffer) => this.onChunk(chunk, chunk.length));
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      const wasClosed = this.closed;
      this.closed = true;
      if (this.login) this.login.fail('connection closed during login');
      else if (!wasClosed || this.holder) this.handler?.onServerClosed(this, 'connection closed');
      else this.handler?.onServerClosed(this, 'closed');
    });
  }

  private onChunk(chunk: Buffer, length: number): void {
    this.framer.push(chunk, length);
    if (!this.login) this.handler?.onServerChunkEnd(this);
  }

  /** Logs in; resolves once ReadyForQuery arrives. */
  runLogin(params: LoginParams): Promise<void> {
    return new Promise((resolve, reject) => {
      this.login = new LoginRun(this, params, (err) => {
        this.login = undefined;
        if (err) reject(err);
        else resolve();
      });
      this.socket.write(startupMessage({ user: params.user, database: params.database }));
    });
  }
}

/** The upstream login conversation, message by message. */
class LoginRun {
  private scram: ScramClient | undefined;
  private finished = false;

  constructor(
    private readonly server: ServerConnection,
    private readonly params: LoginParams,
    private readonly done: (err?: Error) => void,
  ) {}

  fail(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.done(new ConnectError(this.server.label, reason));
  }

  frame(type: number, buf: Buffer, start: number, end: number): void {
    if (this.finished) return;
    try {
      this.handle(type, buf, start, end);
    } catch (err) {
      this.fail(`login failed: ${(err as Error).message}`);
      this.server.destroy();
    }
  }

  private handle(type: number, buf: Buffer, start: number, end: number): void {
    const server = this.server;
    switch (type) {
      case BackendCode.authentication:
        this.auth(buf, start, end);
        return;
      case BackendCode.parameterStatus: {
        const [name, value] = parseParameterStatus(buf, start, end);
        server.setParam(name, value);
        return;
      }
      case BackendCode.backendKeyData:
        if (end - start < 13 || end - start > 5 + 4 + 256) throw new ProtocolError('bad BackendKeyData');
        server.pid = buf.readInt32BE(start + 5);
        server.secret = Buffer.from(buf.subarray(start + 9, end));
        return;
      case BackendCode.errorResponse: {
        const fields = parseErrorFields(buf, start, end);
        this.fail(`${fields.get('C') ?? 'no SQLSTATE'} ${fields.get('M') ?? 'error'}`);
        server.destroy();
        return;
      }
      case BackendCode.readyForQuery:
        this.finished = true;
        server.txStatus = buf[start + 5];
        this.done();
        return;
      case BackendCode.noticeResponse:
      case BackendCode.negotiateProtocolVersion:
        return;
      default:
        throw new ProtocolError(`unexpected message 0x${type.toString(16)} during login`);
    }
  }

  private auth(buf: Buffer, start: number, end: number): void {
    const code = buf.readInt32BE(start + 5);
    const password = this.params.password;
    const need = () => {
      if (password === undefined) throw new Error(`server asks for a password and none is known for user "${this.params.user}"`);
      return password;
    };
    switch (code) {
      case AuthCode.ok:
        return;
      case AuthCode.cleartextPassword:
        this.server.socket.write(passwordMessage(need()));
        return;
      case AuthCode.md5Password: {
        if (end - start < 13) throw new ProtocolError('short md5 request');
        const salt = buf.subarray(start + 9, start + 13);
        this.server.socket.write(passwordMessage(md5Response(md5Hex(need() + this.params.user), salt)));
        return;
      }
      case AuthCode.sasl: {
        const mechanisms: string[] = [];
        let at = start + 9;
        while (at < end && buf[at] !== 0) {
          const [name, next] = readCString(buf, at, end);
          mechanisms.push(name);
          at = next;
        }
        if (!mechanisms.includes('SCRAM-SHA-256')) throw new Error(`no supported SASL mechanism in ${mechanisms.join(', ')}`);
        this.scram = new ScramClient(need());
        this.server.socket.write(saslInitialResponse('SCRAM-SHA-256', Buffer.from(this.scram.first())));
        return;
      }
      case AuthCode.saslContinue: {
        if (!this.scram) throw new ProtocolError('SASLContinue without SASL');
        const reply = this.scram.final(buf.toString('utf8', start + 9, end));
        this.server.socket.write(typed(0x70, Buffer.from(reply)));
        return;
      }
      case AuthCode.saslFinal:
        if (!this.scram?.verify(buf.toString('utf8', start + 9, end))) throw new Error('server SCRAM signature does not match');
        return;
      default:
        throw new Error(`unsupported authentication method ${code}`);
    }
  }
}

/** TCP connect (plus TLS negotiation per server.tls), settled within timeoutMs. */
export function connectUpstream(target: UpstreamTarget, timeoutMs: number, label: string, readSlab?: ReadSlab): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let current: Socket = netConnect(readSlab ? { host: target.host, port: target.port, onread: readSlab.options } : { host: target.host, port: target.port });
    const timer = setTimeout(() => finish(new ConnectError(label, `no connection within ${timeoutMs}ms (timeouts.connect)`)), timeoutMs);
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      current.removeListener('error', onError);
      current.removeListener('close', onClose);
      if (err) {
        current.destroy();
        reject(err);
      } else {
        current.setNoDelay(true);
        current.setKeepAlive(true, 60_000);
        resolve(current);
      }
    };
    const onError = (err: Error) => finish(new ConnectError(label, err.message, { cause: err }));
    const onClose = () => finish(new ConnectError(label, 'connection closed'));
    current.once('error', onError);
    current.once('close', onClose);
    current.once('connect', () => {
      if (target.tls === 'disable') {
        finish();
        return;
      }
      current.write(untaggedCode(StartupCode.sslRequest));
      current.once('data', (answer: Buffer) => {
        if (answer.length !== 1) return finish(new ConnectError(label, 'unexpected reply to SSLRequest'));
        if (answer[0] === 0x4e) {
          if (target.tls === 'prefer') return finish();
          return finish(new ConnectError(label, `server does not support TLS (server.tls: ${target.tls})`));
        }
        if (answer[0] !== 0x53) return finish(new ConnectError(label, 'unexpected reply to SSLRequest'));
        const raw = current;
        raw.removeListener('error', onError);
        raw.removeListener('close', onClose);
        const verify = target.tls === 'verify-full';
        let ca: Buffer | undefined;
        try {
          ca = target.caFile ? readFileSync(target.caFile) : undefined;
        } catch (err) {
          return finish(new ConnectError(label, `cannot read server.ca_file: ${(err as Error).message}`));
        }
        current = tlsConnect({
          socket: raw,
          host: target.host,
          servername: isIP(target.host) ? undefined : target.host,
          rejectUnauthorized: verify,
          ca,
          minVersion: target.tlsMinVersion,
          ciphers: target.tlsCiphers,
        });
        current.once('error', onError);
        current.once('close', onClose);
        current.once('secureConnect', () => finish());
      });
    });
  });
}

/** Connect + login; the result is ready for traffic. */
export async function openServer(target: UpstreamTarget, login: LoginParams, timeoutMs: number): Promise<ServerConnection> {
  const label = `${target.host}:${target.port}`;
  const deadline = Date.now() + timeoutMs;
  // TLS needs the socket's 'data' events (the SSLRequest answer, then the TLS layer): plain TCP only.
  const readSlab = target.tls === 'disable' ? new ReadSlab() : undefined;
  const socket = await connectUpstream(target, timeoutMs, label, readSlab);
  const server = new ServerConnection(socket, label, target, readSlab);
  server.listen();
  const remainingMs = Math.max(1, deadline - Date.now());
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      server.runLogin(login),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ConnectError(label, `login not finished within ${timeoutMs}ms (timeouts.connect)`)), remainingMs);
      }),
    ]);
  } catch (err) {
    server.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return server;
}
