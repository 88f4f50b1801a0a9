// One client connection: its login (TLS, protocol negotiation, auth), then the link to a
// server of its pool, moved by pool mode. Client→server traffic is framed, counted and
// forwarded as slices of the received buffers; server→client likewise. The server goes back
// to the pool only when ReadyForQuery says idle AND no request is outstanding.
//
//   client bytes ─▶ Framer ─▶ onFrame: count Sync/Query/extended msgs ─▶ toServer ─▶ server socket
//   server bytes ─▶ Framer ─▶ onServerFrame: Z/S/E/C/G ─▶ out ─▶ client socket   (one write per chunk)
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import type { PostgresListenerConfig } from '../../config/schema.js';
import type { AdminContext, ConnectionInfo } from '../admin/admin-console.js';
import type { ListenerMetrics } from '../../metrics/metrics.js';
import { AcquireTimeoutError, ConnectError, PoolClosedError, type ProtocolError, type SluiceError } from '../errors.js';
import type { ListenerTotals } from '../listener.js';
import type { Logger } from '../log.js';
import type { Waiter } from '../pool/pool.js';
import { md5Hex, md5Response, type PasswordKnowledge, safeEqual, ScramServer, type ScramSecret } from './auth.js';
import { AdminSession } from './admin-session.js';
import type { ClientState, DatabasePool, PoolClient } from './database-pool.js';
import { Framer, type FrameSink } from './framer.js';
import type { MessageTap, TapLink } from './message-tap.js';
import { Outbox } from './outbox.js';
import { paramSetId } from './param-set.js';
import type { VerifyingClient } from './passthrough-verifier.js';
import { AuthCode, BackendCode, byteSet, FRONTEND_TYPES, FrontendCode, StartupCode, TxStatus } from './protocol-codes.js';
import type { ServerConnection, ServerHandler } from './server-connection.js';
import { commandTagEffect } from './sql-scan.js';
import {
  authRequest,
  authSasl,
  backendKeyData,
  copyFail,
  errorResponse,
  negotiateProtocolVersion,
  parameterStatus,
  parseErrorFields,
  parseOptionsParam,
  parseParameterStatus,
  parseStartupParams,
  query,
  readCString,
  readyForQuery,
  type Severity,
  SYNC,
  sqlIdentifier,
  sqlLiteral,
} from './wire-messages.js';

/** What a session needs from its listener. */
export interface SessionContext {
  readonly config: PostgresListenerConfig;
  readonly log: Logger;
  readonly metrics: ListenerMetrics;
  readonly totals: ListenerTotals;
  readonly tlsContext: SecureContext | undefined;
  readonly tap: MessageTap | undefined;
  readonly draining: boolean;
  poolFor(database: string, user: string): DatabasePool;
  /** The configured password of a user (auth_method scram-sha-256 / md5). */
  userPassword(user: string): PasswordKnowledge | undefined;
  /** A SCRAM secret for a user; a decoy for unknown users so they cannot be told apart. */
  scramSecret(user: string): { secret: ScramSecret; real: boolean };
  /** The `user` label of an auth failure: the name when configured (or verified upstream), else UNKNOWN_USER_LABEL. */
  authFailureLabel(user: string): string;
  /** passthrough: the upstream accepted this password for the user recently enough (passthrough.recheck_interval). */
  acceptsLearnedPassword(user: string, password: string): boolean;
  /**
   * passthrough: logs in upstream with this password within passthrough's limits; resolves
   * true/false, rejects when the upstream cannot tell or too many logins wait (AuthThrottledError).
   */
  verifyUpstream(database: string, user: string, password: string, client: VerifyingClient): Promise<boolean>;
  issueKey(client: ClientSession, pid: number | undefined): { pid: number; secret: number };
  dropKey(client: ClientSession): void;
  cancel(pid: number, secret: number): void;
  loggedIn(client: ClientSession): void;
  gone(client: ClientSession): void;
  /** The admin console's view of the process, when the process offers one (database "sluice"). */
  readonly admin: AdminContext | undefined;
}

/** The database name that reaches the admin console instead of a pool. */
export const ADMIN_DATABASE = 'sluice';

export type PoolMode = 'session' | 'transaction' | 'statement';

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(['user', 'database', 'replication', 'options']);
/** Reported parameters a client cannot SET; never replayed. */
const READ_ONLY_PARAMS = new Set(['server_version', 'server_encoding', 'integer_datetimes', 'is_superuser', 'in_hot_standby', 'session_authorization', 'default_transaction_read_only', 'scram_iterations']);
/** Client messages always delivered whole (the tap and the counts need them). */
const CLIENT_WHOLE = byteSet(
  FrontendCode.parse,
  FrontendCode.bind,
  FrontendCode.describe,
  FrontendCode.close,
  FrontendCode.execute,
  FrontendCode.sync,
  FrontendCode.flush,
  FrontendCode.terminate,
  FrontendCode.password,
);
/** Extended-protocol messages whose replies come before the next Sync's ReadyForQuery. */
const EXTENDED = byteSet(FrontendCode.parse, FrontendCode.bind, FrontendCode.describe, FrontendCode.close, FrontendCode.execute);
const DRAIN_RESUME_BYTES = 1024 * 1024;

type LoginStep = 'startup' | 'password' | 'sasl-initial' | 'sasl-response' | 'verifying' | 'welcome' | 'done';

let nextClientId = 1;

export class ClientSession implements FrameSink, Waiter<ServerConnection>, ServerHandler, PoolClient, TapLink {
  readonly id = nextClientId++;
  state: ClientState = 'login';
  mode: PoolMode;
  database = '';
  user = '';
  entry: DatabasePool | undefined;
  server: ServerConnection | undefined;
  /** The server has had this client's settings applied and may receive its messages. */
  private linkReady = false;
  /** Replies still to swallow on the server before the link is ready (the settings batch). */
  private swallowReadyForQuery = 0;
  private replayError: string | undefined;
  /** ReadyForQuery replies owed to this client: one per Sync, Query or FunctionCall sent. */
  pendingSyncs = 0;
  /** Extended messages sent since the last Sync. */
  unsynced = 0;
  /** Kept on its server beyond transactions (session mode, or session state). */
  pinned = false;
  draining = false;
  readonly acceptedAtMs = Date.now();
  lastActiveMs = Date.now();
  /** When the oldest outstanding request was sent; 0 when none. */
  requestSinceMs = 0;
  transactionSinceMs = 0;
  queryCancelled = false;
  key = { pid: 0, secret: 0 };

  /** Reported parameters as this client believes them (welcome values plus what it SET). */
  readonly sessionParams = new Map<string, string>();
  /** Startup settings that are not reported parameters (extra_float_digits, options -c ...). */
  readonly extraParams = new Map<string, string>();
  /** param-set.ts id of sessionParams + extraParams; 0 after either changes (recomputed on the next link). */
  private paramsId = 0;
  private startupParams = new Map<string, string>();

  private socket: Socket;
  private readonly framer: Framer;
  /** Bytes for the client, written once per turn. */
  private readonly out = new Outbox();
  /** Bytes for the server; written once the link is ready. */
  private readonly toServerBox = new Outbox();
  private releaseAfterFlush = false;
  private step: LoginStep = 'startup';
  private scram: ScramServer | undefined;
  private md5Salt: Buffer | undefined;
  private negotiate: Buffer | undefined;
  private pausedForServer = false;

  constructor(
    socket: Socket,
    private readonly ctx: SessionContext,
  ) {
    this.socket = socket;
    this.mode = ctx.config.pool_mode;
    // Before authentication a client gets only what a login needs (a password or SASL message);
    // max_message_size applies once it is authenticated, so no unknown peer can make sluice hold MiBs.
    this.framer = new Framer(this, {
      maxMessageBytes: Math.min(ctx.config.max_login_message_size, ctx.config.max_message_size),
      limitKey: 'max_login_message_size',
      validTypes: FRONTEND_TYPES,
      whole: CLIENT_WHOLE,
      wholeUpToBytes: 64 * 1024,
      startup: true,
      peer: 'client',
    });
    socket.setNoDelay(true);
    this.wire(socket);
  }

  private wire(socket: Socket): void {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => {});
    socket.on('close', () => this.close());
  }

  private onData(chunk: Buffer): void {
    this.ctx.totals.bytesReceived += chunk.length;
    this.lastActiveMs = Date.now();
    this.framer.push(chunk);
    this.flushClient();
    this.flushServer();
  }

  // ───────────────────────────── login ─────────────────────────────

  onFrame(type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void {
    if (this.state === 'closed') return;
    if (this.adminSession) {
      if (first && last) this.adminSession.onMessage(type, buf, start, end);
      else this.fatal('54000', 'sluice: admin console commands are limited to 64 KiB');
      return;
    }
    // Messages pipelined behind the login wait in order until the welcome is sent.
    if (this.step === 'done' || this.step === 'welcome') {
      this.fromClient(type, buf, start, end, first, last);
      return;
    }
    try {
      if (this.step === 'startup') this.onStartupPacket(buf, start, end);
      else this.onLoginMessage(type, buf, start, end);
    } catch (err) {
      this.fatal('08P01', `invalid login message: ${(err as Error).message}`, 'SLUICE_PROTOCOL_VIOLATION');
    }
  }

  onFrameError(err: ProtocolError): void {
    this.ctx.metrics.error('08');
    this.ctx.log.info({ client: this.id, err: err.message }, 'protocol violation from client');
    this.fatal('08P01', err.message);
  }

  private onStartupPacket(buf: Buffer, start: number, end: number): void {
    const code = buf.readInt32BE(start + 4);
    if (code === StartupCode.sslRequest || code === StartupCode.gssEncRequest) {
      // Bytes after an SSLRequest in the same packet would be read as if encrypted (CVE-2021-23214).
      if (end !== buf.length || this.socket instanceof TLSSocket) throw new Error('unexpected data around SSLRequest');
      if (code === StartupCode.sslRequest && this.ctx.tlsContext) {
        this.socket.write(Buffer.from('S'));
        this.upgradeToTls(this.ctx.tlsContext);
      } else this.socket.write(Buffer.from('N'));
      return;
    }
    if (code === StartupCode.cancelRequest) {
      if (end - start < 16) throw new Error('short CancelRequest');
      this.ctx.cancel(buf.readInt32BE(start + 8), buf.readInt32BE(start + 12));
      this.state = 'closed';
      this.socket.destroy();
      this.ctx.gone(this);
      return;
    }
    const major = code >>> 16;
    const minor = code & 0xffff;
    if (major !== 3) {
      this.fatal('0A000', `unsupported frontend protocol ${major}.${minor}: sluice speaks protocol 3.0`);
      return;
    }
    const params = parseStartupParams(buf, start, end);
    const user = params.get('user');
    if (!user) {
      this.fatal('28000', 'no PostgreSQL user name specified in startup packet');
      return;
    }
    if (params.get('replication') && params.get('replication') !== 'false') {
      this.fatal('08P01', 'sluice does not pool replication connections');
      return;
    }
    const unknownOptions = [...params.keys()].filter((key) => key.startsWith('_pq_.'));
    if (minor > 0 || unknownOptions.length > 0) this.negotiate = negotiateProtocolVersion(StartupCode.protocol3, unknownOptions);
    this.user = user;
    this.database = params.get('database') || user;
    this.startupParams = params;
    this.framer.startup = false;
    if (this.negotiate) this.out.addBuffer(this.negotiate);
    this.askPassword();
  }

  private upgradeToTls(context: SecureContext): void {
    const raw = this.socket;
    raw.removeAllListeners('data');
    raw.removeAllListeners('close');
    const tls = new TLSSocket(raw, { isServer: true, secureContext: context });
    this.socket = tls;
    tls.setNoDelay?.(true);
    this.wire(tls);
  }

  private askPassword(): void {
    const method = this.ctx.config.auth_method;
    if (method === 'trust') {
      this.authenticated();
    } else if (method === 'passthrough') {
      this.step = 'password';
      this.out.addBuffer(authRequest(AuthCode.cleartextPassword));
    } else if (method === 'md5') {
      this.step = 'password';
      this.md5Salt = randomBytes(4);
      this.out.addBuffer(authRequest(AuthCode.md5Password, this.md5Salt));
    } else {
      this.step = 'sasl-initial';
      this.out.addBuffer(authSasl(['SCRAM-SHA-256']));
    }
  }

  private onLoginMessage(type: number, buf: Buffer, start: number, end: number): void {
    if (type !== FrontendCode.password || (this.step !== 'password' && this.step !== 'sasl-initial' && this.step !== 'sasl-response')) {
      if (type === FrontendCode.terminate) {
        this.close();
        return;
      }
      throw new Error(`expected a password message, got 0x${type.toString(16)}`);
    }
    if (this.step === 'sasl-initial') {
      const [mechanism, at] = readCString(buf, start + 5, end);
      if (mechanism !== 'SCRAM-SHA-256') throw new Error(`unsupported SASL mechanism ${mechanism}`);
      if (at + 4 > end) throw new Error('short SASLInitialResponse');
      const length = buf.readInt32BE(at);
      if (length < 0 || at + 4 + length > end) throw new Error('bad SASLInitialResponse length');
      const { secret, real } = this.ctx.scramSecret(this.user);
      this.scram = new ScramServer(secret);
      const serverFirst = this.scram.first(buf.toString('utf8', at + 4, at + 4 + length));
      (this.scram as ScramServer & { real?: boolean }).real = real;
      this.step = 'sasl-response';
      this.out.addBuffer(authRequest(AuthCode.saslContinue, Buffer.from(serverFirst)));
      return;
    }
    if (this.step === 'sasl-response') {
      const scram = this.scram as ScramServer & { real?: boolean };
      const serverFinal = scram.final(buf.toString('utf8', start + 5, end));
      if (!serverFinal || !scram.real) {
        this.authFailed();
        return;
      }
      this.out.addBuffer(authRequest(AuthCode.saslFinal, Buffer.from(serverFinal)));
      this.authenticated();
      return;
    }
    const [password] = readCString(buf, start + 5, end);
    if (this.ctx.config.auth_method === 'md5') {
      const known = this.ctx.userPassword(this.user);
      const inner = known?.kind === 'plain' ? md5Hex(known.password + this.user) : known?.kind === 'md5' ? known.hash : undefined;
      const expected = md5Response(inner ?? md5Hex(randomBytes(16)), this.md5Salt as Buffer);
      if (!safeEqual(password, expected) || !inner) {
        this.authFailed();
        return;
      }
      this.authenticated();
      return;
    }
    // passthrough: check against what the upstream accepted before; anything else is asked upstream.
    if (this.ctx.acceptsLearnedPassword(this.user, password)) {
      this.authenticated();
      return;
    }
    this.step = 'verifying';
    // A client that leaves while held back by passthrough's back-off frees its timer at once.
    const left = new AbortController();
    this.socket.once('close', () => left.abort());
    const verifying = { addr: this.socket.remoteAddress ?? '', gone: () => this.state === 'closed', signal: left.signal };
    this.ctx.verifyUpstream(this.database, this.user, password, verifying).then(
      (ok) => {
        if (this.state === 'closed') return;
        if (ok) this.authenticated();
        else this.authFailed();
        this.flushClient();
      },
      (err: SluiceError) => {
        this.fatal(err.code === 'SLUICE_AUTH_THROTTLED' ? '53300' : '08006', err.message);
      },
    );
  }

  private authFailed(): void {
    this.countAuthFailure('wrong password or unknown user');
    this.fatal('28P01', `password authentication failed for user "${this.user}"`);
  }

  /** Counted under the user's name only when the listener vouches for it, so clients cannot mint series. */
  private countAuthFailure(reason: string): void {
    this.ctx.metrics.authFailed(this.ctx.authFailureLabel(this.user));
    this.ctx.log.info({ client: this.id, user: this.user, addr: this.socket.remoteAddress, port: this.socket.remotePort, reason }, 'client authentication failed');
  }

  private authenticated(): void {
    this.framer.setMaxMessageBytes(this.ctx.config.max_message_size);
    this.out.addBuffer(authRequest(AuthCode.ok));
    if (this.database === ADMIN_DATABASE && this.ctx.admin) {
      this.startAdmin(this.ctx.admin);
      return;
    }
    this.step = 'welcome';
    try {
      this.entry = this.ctx.poolFor(this.database, this.user);
    } catch (err) {
      this.fatal('53300', `sluice: ${(err as SluiceError).message}`);
      return;
    }
    this.ctx.loggedIn(this);
    this.entry.moveClient(this, 'idle');
    // Settings from the startup packet: reported ones become session parameters at welcome,
    // the rest are replayed on every server this client gets.
    for (const [key, value] of this.startupParams) {
      if (NOT_SETTINGS.has(key) || key.startsWith('_pq_.')) continue;
      this.extraParams.set(key, value);
    }
    const options = this.startupParams.get('options');
    if (options) for (const [key, value] of parseOptionsParam(options)) this.extraParams.set(key, value);
    if (this.mode === 'session' || !this.entry.welcomeParams) this.acquire();
    else this.welcome();
  }

  /** The admin console: no pool, no server; only users in admin_users. */
  private startAdmin(admin: AdminContext): void {
    if (!this.ctx.config.admin_users.includes(this.user)) {
      this.countAuthFailure('not in admin_users');
      this.fatal('28000', `sluice: user "${this.user}" is not in admin_users`);
      return;
    }
    this.ctx.loggedIn(this);
    this.state = 'idle';
    this.step = 'done';
    const version = `sluice ${admin.version}`;
    for (const [name, value] of [['server_version', version], ['server_encoding', 'UTF8'], ['client_encoding', 'UTF8'], ['DateStyle', 'ISO, MDY'], ['integer_datetimes', 'on'], ['standard_conforming_strings', 'on'], ['application_name', this.startupParams.get('application_name') ?? '']]) {
      this.out.addBuffer(parameterStatus(name, value));
    }
    this.key = this.ctx.issueKey(this, undefined);
    this.out.addBuffer(backendKeyData(this.key.pid, this.key.secret));
    this.out.addBuffer(readyForQuery(TxStatus.idle));
    this.adminSession = new AdminSession(
      admin,
      (bytes) => this.out.addBuffer(bytes),
      () => this.close(),
    );
  }

  private adminSession: AdminSession | undefined;

  /** What SHOW CLIENTS lists for this connection. */
  describe(pool: string): ConnectionInfo {
    const socket = this.socket;
    return {
      protocol: 'postgres',
      pool,
      database: this.database,
      user: this.user,
      state: this.adminSession ? 'admin' : this.pinned && this.state === 'active' ? 'pinned' : this.state,
      addr: socket.remoteAddress ?? '',
      port: socket.remotePort ?? 0,
      localAddr: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
      connectTime: new Date(this.acceptedAtMs),
      requestTime: new Date(this.lastActiveMs),
      waitSeconds: this.state === 'waiting' ? (Date.now() - this.lastActiveMs) / 1000 : 0,
      id: `pg-c${this.id}`,
      link: this.server ? `pg-s${this.server.id}` : '',
      pinReason: this.pinned ? this.pinReason : undefined,
    };
  }

  private pinReason = '';

  /** ParameterStatus from a server of the pool with this client's values, BackendKeyData, ReadyForQuery. */
  private welcome(): void {
    const entry = this.entry as DatabasePool;
    const lower = new Map<string, string>();
    for (const [name, value] of entry.welcomeParams ?? []) {
      this.sessionParams.set(name, value);
      lower.set(name.toLowerCase(), name);
    }
    for (const [key, value] of this.extraParams) {
      const reported = lower.get(key.toLowerCase());
      if (reported && !READ_ONLY_PARAMS.has(reported)) {
        this.sessionParams.set(reported, value);
        this.extraParams.delete(key);
      }
    }
    this.paramsId = paramSetId(this.sessionParams, this.extraParams);
    this.out.addBuffer(welcomeStatus(this.paramsId, this.sessionParams));
    this.key = this.ctx.issueKey(this, this.mode === 'session' ? this.server?.pid : undefined);
    this.out.addBuffer(backendKeyData(this.key.pid, this.key.secret));
    this.out.addBuffer(readyForQuery(TxStatus.idle));
    this.step = 'done';
    if (this.mode === 'session') {
      this.pinned = true;
      this.pinReason = 'session';
      entry.pinned.add(this);
      entry.metrics.pin('session');
    }
    if (this.server) this.beginReplay(this.server);
  }

  // ───────────────────────────── linking ─────────────────────────────

  private acquire(): void {
    const entry = this.entry as DatabasePool;
    entry.moveClient(this, 'waiting');
    entry.pool.acquire(this);
  }

  /** Waiter: the pool lends a server (possibly synchronously inside acquire()). */
  grant(server: ServerConnection): void {
    const entry = this.entry as DatabasePool;
    if (this.state === 'closed') {
      entry.pool.release(server);
      return;
    }
    entry.moveClient(this, 'active');
    entry.learnWelcome(server);
    server.holder = this;
    server.attach(this);
    this.server = server;
    this.transactionSinceMs = Date.now();
    if (this.step === 'welcome') {
      if (this.mode === 'session') {
        this.welcome();
      } else {
        // The first client of a pool borrowed a server only to learn the welcome values.
        this.detachServer();
        entry.pool.release(server);
        entry.moveClient(this, 'idle');
        this.welcome();
        if (!this.toServerBox.empty) this.acquire();
      }
      this.flushClient();
      this.flushServer();
      return;
    }
    this.beginReplay(server);
    this.flushServer();
    // replies a tap answered at once for messages that waited for this server
    this.flushClient();
  }

  /** Waiter: no server (acquire timeout, upstream unreachable, pool closed). */
  fail(err: SluiceError): void {
    if (this.state === 'closed') return;
    if (err instanceof AcquireTimeoutError) {
      this.entry?.metrics.timeout('timeouts.acquire');
      this.fatal('53300', `sluice: ${err.message}`);
    } else if (err instanceof PoolClosedError) this.fatal('57P01', 'sluice is shutting down');
    else if (err instanceof ConnectError) this.fatal('08006', `sluice: ${err.message}`);
    else this.fatal('08006', `sluice: ${err.message}`);
  }

  /**
   * Applies this client's settings to a server that may carry another's: one batch, replies
   * swallowed. Values go through set_config(), not `SET name TO 'value'`: set_config takes the
   * whole string as the startup packet and postgresql.conf give it, while SET reads one quoted
   * literal of a list setting as a single element (search_path 'a,b' would become one schema
   * named "a,b").
   */
  private beginReplay(server: ServerConnection): void {
    if (this.paramsId === 0) this.paramsId = paramSetId(this.sessionParams, this.extraParams);
    if (server.paramsId === this.paramsId) {
      this.linkUp();
      return;
    }
    const settings: string[] = [];
    for (const [name, value] of this.sessionParams) {
      if (READ_ONLY_PARAMS.has(name) || server.params.get(name) === value) continue;
      settings.push(`pg_catalog.set_config(${sqlLiteral(name)}, ${sqlLiteral(value)}, false)`);
    }
    for (const [name, value] of this.extraParams) {
      if (server.applied.get(name) === value) continue;
      settings.push(`pg_catalog.set_config(${sqlLiteral(name)}, ${sqlLiteral(value)}, false)`);
      server.applied.set(name, value);
    }
    const statements = settings.length > 0 ? [`SELECT ${settings.join(', ')}`] : [];
    for (const name of server.applied.keys()) {
      if (this.extraParams.has(name)) continue;
      statements.push(`RESET ${sqlIdentifier(name)}`);
      server.applied.delete(name);
    }
    if (statements.length === 0) {
      this.linkUp();
      return;
    }
    this.linkReady = false;
    this.swallowReadyForQuery = 1;
    this.replayError = undefined;
    server.out.addBuffer(query(statements.join('; ')));
    server.flush();
  }

  private linkUp(): void {
    this.linkReady = true;
    // The server now carries exactly this client's settings (compared, or SET and acknowledged).
    (this.server as ServerConnection).paramsId = this.paramsId;
    // timeouts.query and the query histogram measure time on the server, not time queued for it.
    if (this.requestSinceMs > 0) this.requestSinceMs = Date.now();
    if (this.ctx.tap?.serverAssigned) this.ctx.tap.serverAssigned(this);
    if (this.pausedForServer) {
      this.pausedForServer = false;
      this.socket.resume();
    }
  }

  private detachServer(): ServerConnection | undefined {
    const server = this.server;
    if (!server) return undefined;
    server.holder = undefined;
    if (this.entry) server.attach(this.entry);
    this.server = undefined;
    this.linkReady = false;
    server.socket.resume();
    return server;
  }

  // ─────────────────────── client → server ───────────────────────

  private fromClient(type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void {
    if (!first) {
      this.toServerBox.add(buf, start, end);
      return;
    }
    if (type === FrontendCode.terminate) {
      // Requests sent before the Terminate still run to completion, as on a direct connection.
      if (this.pendingSyncs > 0 || this.unsynced > 0 || !this.toServerBox.empty) this.terminating = true;
      else this.close();
      return;
    }
    const tap = this.ctx.tap;
    if (tap?.fromClient?.(this, type, buf, start, end, last)) {
      if (!this.server && this.state === 'idle' && !this.toServerBox.empty) this.acquire();
      return;
    }
    this.countSent(type);
    this.toServerBox.add(buf, start, end);
    if (!this.server && this.state === 'idle') this.acquire();
  }

  /** Counts what a client message owes: a ReadyForQuery per Sync/Query/FunctionCall; extended messages until the next Sync. */
  countSent(type: number): void {
    if (type === FrontendCode.query || type === FrontendCode.functionCall || type === FrontendCode.sync) {
      if (this.pendingSyncs === 0) this.requestStarted();
      this.pendingSyncs++;
      this.unsynced = 0;
    } else if (EXTENDED[type] === 1) {
      if (this.pendingSyncs === 0 && this.unsynced === 0) this.requestStarted();
      this.unsynced++;
    }
  }

  private requestStarted(): void {
    this.requestSinceMs = this.lastActiveMs;
    this.queryCancelled = false;
  }

  private flushServer(): void {
    const server = this.server;
    if (this.toServerBox.empty) return;
    if (!server || !this.linkReady) {
      // Waiting for a server: stop reading so a waiting client cannot buffer without bound.
      if (!this.pausedForServer && this.toServerBox.bytes > DRAIN_RESUME_BYTES) {
        this.pausedForServer = true;
        this.socket.pause();
      }
      return;
    }
    const bytes = this.toServerBox.bytes;
    if (!this.toServerBox.flushTo(server.socket)) this.backpressure(this.socket, server.socket);
    void bytes;
  }

  private flushClient(): void {
    if (this.out.empty) return;
    this.ctx.totals.bytesSent += this.out.bytes;
    if (!this.out.flushTo(this.socket) && this.server) this.backpressure(this.server.socket, this.socket);
  }

  /** The destination is full: stop reading the source until it drains. */
  private backpressure(source: Socket, destination: Socket): void {
    source.pause();
    destination.once('drain', () => {
      if (this.state !== 'closed') source.resume();
    });
  }

  // ─────────────────────── server → client ───────────────────────

  onServerFrame(server: ServerConnection, type: number, buf: Buffer, start: number, end: number, first: boolean, last: boolean): void {
    if (server !== this.server) return;
    if (this.swallowReadyForQuery > 0) {
      this.swallow(server, type, buf, start, end);
      return;
    }
    if (!first) {
      this.out.add(buf, start, end);
      return;
    }
    const tap = this.ctx.tap;
    if (tap?.fromServer?.(this, type, buf, start, end, last)) return;
    switch (type) {
      case BackendCode.readyForQuery:
        if (!this.readyForQuery(server, buf[start + 5])) return;
        break;
      case BackendCode.commandComplete:
        this.ctx.totals.queries++;
        server.copyIn = false;
        // RESET [ALL], SET … TO DEFAULT and DISCARD ALL put settings back to the server's login
        // values, not to this client's startup ones that sluice applied; the next link re-applies
        // them (a direct connection's RESET returns to its startup values too).
        if (server.applied.size > 0 && changesSettings(buf, start, end)) server.forgetApplied();
        break;
      case BackendCode.parameterStatus: {
        const [name, value] = parseParameterStatus(buf, start, end);
        server.setParam(name, value);
        if (this.sessionParams.get(name) !== value) {
          this.sessionParams.set(name, value);
          this.paramsId = 0;
        }
        break;
      }
      case BackendCode.copyInResponse:
        server.copyIn = true;
        break;
      case BackendCode.errorResponse:
        server.copyIn = false;
        this.countError(buf, start, end);
        break;
    }
    this.out.add(buf, start, end);
  }

  private countError(buf: Buffer, start: number, end: number): void {
    try {
      const sqlstate = parseErrorFields(buf, start, end).get('C');
      this.entry?.metrics.error(sqlstate ? sqlstate.slice(0, 2) : 'unknown');
    } catch {
      this.entry?.metrics.error('unknown');
    }
  }

  /** Decides what a ReadyForQuery means for the link; false when it must not reach the client. */
  private readyForQuery(server: ServerConnection, status: number): boolean {
    server.txStatus = status;
    if (this.pendingSyncs > 0) this.pendingSyncs--;
    const now = Date.now();
    this.lastActiveMs = now;
    const idle = status === TxStatus.idle && this.pendingSyncs === 0 && this.unsynced === 0;
    if (this.pendingSyncs === 0 && this.requestSinceMs > 0) {
      this.entry?.metrics.querySeconds.observe((now - this.requestSinceMs) / 1000);
      this.requestSinceMs = 0;
    }
    if (status === TxStatus.idle) {
      this.ctx.totals.transactions++;
      if (idle && this.transactionSinceMs > 0) {
        this.entry?.metrics.transactionSeconds.observe((now - this.transactionSinceMs) / 1000);
        this.transactionSinceMs = 0;
      }
    } else if (this.mode === 'statement' && this.pendingSyncs === 0) {
      // Statement mode cannot keep a server for a transaction block: refuse it (the close rolls it back).
      this.out.addBuffer(errorResponse('FATAL', '0A000', 'sluice: transaction blocks are not allowed in pool_mode statement'));
      this.ctx.metrics.error('0A');
      this.closeAfterFlush = true;
      return false;
    }
    if (idle && (this.draining || this.terminating)) this.closeAfterFlush = true;
    else if (idle && !this.pinned) this.releaseAfterFlush = true;
    return true;
  }

  private closeAfterFlush = false;
  /** The client sent Terminate behind requests still running. */
  private terminating = false;

  /** Replies to the settings batch: kept from the client, but they update what the server has. */
  private swallow(server: ServerConnection, type: number, buf: Buffer, start: number, end: number): void {
    if (type === BackendCode.parameterStatus) {
      const [name, value] = parseParameterStatus(buf, start, end);
      server.setParam(name, value);
    } else if (type === BackendCode.errorResponse) {
      this.replayError = parseErrorFields(buf, start, end).get('M') ?? 'error';
    } else if (type === BackendCode.readyForQuery) {
      server.txStatus = buf[start + 5];
      this.swallowReadyForQuery--;
      if (this.swallowReadyForQuery === 0) {
        if (this.replayError) {
          this.fatal('22023', `sluice: cannot apply this client's settings on a new server: ${this.replayError}`);
          return;
        }
        this.linkUp();
        this.flushServer();
      }
    }
  }

  onServerChunkEnd(server: ServerConnection): void {
    if (server !== this.server) return;
    const tap = this.ctx.tap;
    if (tap?.serverChunkEnd) {
      tap.serverChunkEnd(this);
      // a tap may answer a server reply with a request of its own (a prepared-statement retry)
      if (!this.toServerBox.empty) this.flushServer();
    }
    this.flushClient();
    if (this.closeAfterFlush) {
      this.closeAfterFlush = false;
      if (this.draining) this.fatal('57P01', 'sluice is shutting down');
      else this.close();
      return;
    }
    if (this.releaseAfterFlush) {
      this.releaseAfterFlush = false;
      this.release();
    }
  }

  /** Gives the server back between transactions (transaction and statement mode). */
  private release(): void {
    const entry = this.entry as DatabasePool;
    const server = this.detachServer();
    if (!server) return;
    if (this.ctx.tap?.serverReleased) this.ctx.tap.serverReleased(this);
    entry.moveClient(this, 'idle');
    returnServer(entry, server);
    // Messages that arrived after the ReadyForQuery belong to the next transaction.
    if (!this.toServerBox.empty) this.acquire();
  }

  onServerClosed(server: ServerConnection, reason: string): void {
    if (server !== this.server) return;
    this.detachServer();
    this.entry?.pool.remove(server, 'error');
    this.entry?.metrics.error('08');
    this.ctx.log.warn({ client: this.id, upstream: server.label, reason }, 'server connection lost while in use');
    this.fatal('08006', `sluice: server connection to ${server.label} lost (${reason})`);
  }

  // ─────────────────────── timeouts and shutdown ───────────────────────

  /** Called by the listener's janitor. */
  checkTimeouts(nowMs: number): void {
    const t = this.ctx.config.timeouts;
    if (this.state === 'login') {
      if (t.client_login > 0 && nowMs - this.acceptedAtMs > t.client_login) this.timedOut('timeouts.client_login', t.client_login, '08P01', 'login not finished');
      return;
    }
    const server = this.server;
    const busy = this.pendingSyncs > 0 || this.unsynced > 0;
    if (busy) {
      if (t.query > 0 && server && this.linkReady && !this.queryCancelled && this.requestSinceMs > 0 && nowMs - this.requestSinceMs > t.query) {
        this.queryCancelled = true;
        this.entry?.metrics.timeout('timeouts.query');
        this.out.addBuffer(errorResponse('WARNING', '57014', `sluice: cancelling query after ${t.query}ms (timeouts.query)`, true));
        this.flushClient();
        server.sendCancel(this.ctx.config.timeouts.connect);
      }
      return;
    }
    if (server && server.txStatus !== TxStatus.idle) {
      if (t.idle_in_transaction > 0 && nowMs - this.lastActiveMs > t.idle_in_transaction) {
        this.timedOut('timeouts.idle_in_transaction', t.idle_in_transaction, '25P03', 'idle in transaction');
      }
      return;
    }
    if (t.client_idle > 0 && nowMs - this.lastActiveMs > t.client_idle && this.state !== 'waiting') {
      this.timedOut('timeouts.client_idle', t.client_idle, '57P05', 'client idle');
    }
  }

  private timedOut(configKey: string, timeoutMs: number, sqlstate: string, what: string): void {
    this.ctx.metrics.timeout(configKey);
    this.fatal(sqlstate, `sluice: ${what} for more than ${timeoutMs}ms (${configKey})`);
  }

  /** Drain: leave now if between transactions, else at the end of the transaction. */
  drain(): void {
    this.draining = true;
    if (this.state === 'login' || this.state === 'idle' || this.state === 'waiting') {
      this.fatal('57P01', 'sluice is shutting down');
      return;
    }
    const server = this.server;
    if (server && this.linkReady && server.txStatus === TxStatus.idle && this.pendingSyncs === 0 && this.unsynced === 0) {
      this.fatal('57P01', 'sluice is shutting down');
    }
  }

  // ─────────────────────── closing ───────────────────────

  /** Sends an error (FATAL closes the connection) to the client. */
  error(severity: Severity, sqlstate: string, message: string): void {
    this.out.addBuffer(errorResponse(severity, sqlstate, message));
    if (severity === 'FATAL') {
      this.flushClient();
      this.close();
    }
  }

  fatal(sqlstate: string, message: string, _code?: string): void {
    if (this.state === 'closed') return;
    this.out.addBuffer(errorResponse('FATAL', sqlstate, message));
    this.flushClient();
    this.close();
  }

  /** Ends the session; its server is cleaned (cancel, rollback) before anyone else gets it. */
  close(): void {
    if (this.state === 'closed') return;
    const entry = this.entry;
    if (this.state === 'waiting') entry?.pool.cancel(this);
    const wasReady = this.linkReady;
    const server = this.detachServer();
    if (server && entry) this.cleanupServer(server, wasReady);
    if (entry) entry.moveClient(this, 'closed');
    else this.state = 'closed';
    this.ctx.dropKey(this);
    this.toServerBox.clear();
    this.flushClient();
    if (!this.socket.destroyed) {
      this.socket.end();
      this.socket.setTimeout(2000, () => this.socket.destroy());
    }
    this.ctx.gone(this);
  }

  /**
   * A server leaves this client: cancel what runs, end COPY, roll back, reset in session mode,
   * and read every reply; it returns to the pool only if the last ReadyForQuery says idle.
   */
  private cleanupServer(server: ServerConnection, linkWasReady: boolean): void {
    const entry = this.entry as DatabasePool;
    if (this.pinned && this.mode !== 'session') {
      // pinned by session state (temp tables, advisory locks, LISTEN, settings): none of it may
      // reach the next client, and no reset removes all of it without also dropping the
      // statements sluice prepared there, so the connection goes
      entry.pool.remove(server, 'session-state');
      return;
    }
    if (!linkWasReady) {
      // Nothing of the client's reached the server: only the settings batch's replies are owed.
      this.pendingSyncs = 0;
      this.unsynced = 0;
      this.requestSinceMs = 0;
    }
    const busy = this.pendingSyncs > 0 || this.unsynced > 0;
    const needsRollback = busy || server.txStatus !== TxStatus.idle;
    const needsReset = this.mode === 'session';
    if (!needsRollback && !needsReset && this.swallowReadyForQuery === 0) {
      returnServer(entry, server);
      return;
    }
    const cleanup = new ServerCleanup(entry, server, this.pendingSyncs + this.swallowReadyForQuery);
    this.swallowReadyForQuery = 0;
    const messages: Buffer[] = [];
    if (server.copyIn) messages.push(copyFail('client disconnected'));
    if (this.unsynced > 0) {
      messages.push(SYNC);
      cleanup.expect++;
    }
    if (needsRollback) {
      messages.push(query('ROLLBACK'));
      cleanup.expect++;
    }
    if (needsReset) {
      messages.push(query('DISCARD ALL'));
      cleanup.expect++;
      server.applied.clear();
      server.paramsId = 0;
    }
    this.pendingSyncs = 0;
    this.unsynced = 0;
    const send = () => {
      for (const message of messages) server.out.addBuffer(message);
      server.flush();
    };
    if (busy || server.copyIn) {
      // Something runs: cancel it first, then roll back once the cancel is delivered.
      server.sendCancel(this.ctx.config.timeouts.connect);
      server.afterCancel = send;
    } else send();
  }

  /** The server a cancel for this client may go to: only one running this client's own requests (not its settings batch). */
  get cancelTarget(): ServerConnection | undefined {
    return this.linkReady ? this.server : undefined;
  }

  // TapLink
  get serverId(): number | undefined {
    return this.server?.id;
  }

  toClient(bytes: Buffer, start = 0, end = bytes.length): void {
    this.out.add(bytes, start, end);
  }

  toServer(bytes: Buffer, start = 0, end = bytes.length): void {
    this.toServerBox.add(bytes, start, end);
  }

  pin(reason: string): void {
    if (this.pinned) return;
    this.pinned = true;
    this.pinReason = reason;
    this.entry?.pinned.add(this);
    this.entry?.metrics.pin(reason);
  }

  unpin(reason: string): void {
    if (!this.pinned || this.mode === 'session') return;
    this.pinned = false;
    this.pinReason = '';
    this.entry?.pinned.delete(this);
    this.entry?.metrics.unpin(reason);
  }
}

function changesSettings(buf: Buffer, start: number, end: number): boolean {
  const effect = commandTagEffect(buf, start, end);
  return effect === 'reset' || effect === 'set' || effect === 'discard-all';
}

/** Encoded ParameterStatus messages of a welcome, per param-set id: new clients of a pool mostly share one. */
const welcomeBlocks = new Map<number, Buffer>();

function welcomeStatus(paramsId: number, params: ReadonlyMap<string, string>): Buffer {
  let block = welcomeBlocks.get(paramsId);
  if (block === undefined) {
    if (welcomeBlocks.size >= 1024) welcomeBlocks.clear();
    block = Buffer.concat([...params].map(([name, value]) => parameterStatus(name, value)));
    welcomeBlocks.set(paramsId, block);
  }
  return block;
}

/** Puts a clean server back, after any cancel in flight for it is done (pgbouncer #223). */
function returnServer(entry: DatabasePool, server: ServerConnection): void {
  if (server.cancelsInFlight > 0) server.afterCancel = () => entry.pool.release(server);
  else entry.pool.release(server);
}

/** Reads a detached server's replies to the end; releases it if idle, else closes it. */
class ServerCleanup implements ServerHandler {
  private status: number = TxStatus.idle;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly entry: DatabasePool,
    private readonly server: ServerConnection,
    public expect: number,
  ) {
    server.attach(this);
    server.holder = this;
    this.timer = setTimeout(() => this.finish(false), 10_000);
    this.timer.unref();
  }

  onServerFrame(server: ServerConnection, type: number, buf: Buffer, start: number, end: number, first: boolean): void {
    if (!first) return;
    if (type === BackendCode.parameterStatus) {
      const [name, value] = parseParameterStatus(buf, start, end);
      server.setParam(name, value);
    } else if (type === BackendCode.copyInResponse) {
      // A COPY started by a request we could not cancel in time: end it.
      server.out.addBuffer(copyFail('client disconnected'));
      server.flush();
    } else if (type === BackendCode.readyForQuery) {
      this.status = buf[start + 5];
      server.txStatus = this.status;
      this.expect--;
      if (this.expect <= 0) this.finish(this.status === TxStatus.idle);
    }
  }

  onServerChunkEnd(): void {}

  onServerClosed(): void {
    this.finish(false);
  }

  private finish(clean: boolean): void {
    clearTimeout(this.timer);
    if (this.server.holder !== this) return;
    this.server.holder = undefined;
    this.server.attach(this.entry);
    if (clean && !this.server.closed) returnServer(this.entry, this.server);
    else this.entry.pool.remove(this.server, 'reset-failed');
  }
}
