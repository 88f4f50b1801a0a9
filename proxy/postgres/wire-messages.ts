// Building the few messages sluice writes itself (errors, welcome, auth requests, login and
// cancel packets) and decoding the few it reads (startup parameters, ErrorResponse fields,
// ParameterStatus). Everything forwarded is never built or decoded here.
import { ProtocolError } from '../errors.js';
import { AuthCode, BackendCode, FrontendCode, StartupCode } from './protocol-codes.js';

/** A typed message: type byte, int32 length, then the body. */
export function typed(type: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(5 + body.length);
  out[0] = type;
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

function cstrings(...parts: string[]): Buffer {
  return Buffer.from(parts.map((part) => `${part}\0`).join(''), 'utf8');
}

export type Severity = 'ERROR' | 'FATAL' | 'WARNING' | 'NOTICE';

/** ErrorResponse (or NoticeResponse) with severity, SQLSTATE and message. */
export function errorResponse(severity: Severity, sqlstate: string, message: string, notice = false): Buffer {
  const body = Buffer.concat([
    cstrings(`S${severity}`, `V${severity}`, `C${sqlstate}`, `M${message}`),
    Buffer.from([0]),
  ]);
  return typed(notice ? BackendCode.noticeResponse : BackendCode.errorResponse, body);
}

export function parameterStatus(name: string, value: string): Buffer {
  return typed(BackendCode.parameterStatus, cstrings(name, value));
}

export function backendKeyData(pid: number, secret: number): Buffer {
  const body = Buffer.allocUnsafe(8);
  body.writeInt32BE(pid | 0, 0);
  body.writeInt32BE(secret | 0, 4);
  return typed(BackendCode.backendKeyData, body);
}

export function readyForQuery(status: number): Buffer {
  return typed(BackendCode.readyForQuery, Buffer.from([status]));
}

export function authRequest(code: number, extra?: Buffer): Buffer {
  const head = Buffer.allocUnsafe(4);
  head.writeInt32BE(code, 0);
  return typed(BackendCode.authentication, extra ? Buffer.concat([head, extra]) : head);
}

export function authSasl(mechanisms: string[]): Buffer {
  return authRequest(AuthCode.sasl, Buffer.concat([cstrings(...mechanisms), Buffer.from([0])]));
}

/** NegotiateProtocolVersion: the newest version we speak (full code, as PostgreSQL sends it) and the options we did not recognise. */
export function negotiateProtocolVersion(version: number, unrecognised: string[]): Buffer {
  const head = Buffer.allocUnsafe(8);
  head.writeInt32BE(version, 0);
  head.writeInt32BE(unrecognised.length, 4);
  return typed(BackendCode.negotiateProtocolVersion, Buffer.concat([head, cstrings(...unrecognised)]));
}

export function query(sql: string): Buffer {
  return typed(FrontendCode.query, cstrings(sql));
}

export const SYNC = Buffer.from([FrontendCode.sync, 0, 0, 0, 4]);
export const TERMINATE = Buffer.from([FrontendCode.terminate, 0, 0, 0, 4]);

export function copyFail(message: string): Buffer {
  return typed(FrontendCode.copyFail, cstrings(message));
}

/** The untagged StartupMessage sluice sends upstream. */
export function startupMessage(params: Record<string, string>): Buffer {
  const pairs = Object.entries(params).flat();
  const body = Buffer.concat([cstrings(...pairs), Buffer.from([0])]);
  const out = Buffer.allocUnsafe(8 + body.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(StartupCode.protocol3, 4);
  body.copy(out, 8);
  return out;
}

export function untaggedCode(code: number): Buffer {
  const out = Buffer.allocUnsafe(8);
  out.writeInt32BE(8, 0);
  out.writeInt32BE(code, 4);
  return out;
}

export function cancelRequest(pid: number, secret: Buffer): Buffer {
  const out = Buffer.allocUnsafe(12 + secret.length);
  out.writeInt32BE(out.length, 0);
  out.writeInt32BE(StartupCode.cancelRequest, 4);
  out.writeInt32BE(pid | 0, 8);
  secret.copy(out, 12);
  return out;
}

export function passwordMessage(payload: Buffer | string): Buffer {
  return typed(FrontendCode.password, typeof payload === 'string' ? cstrings(payload) : payload);
}

export function saslInitialResponse(mechanism: string, data: Buffer): Buffer {
  const len = Buffer.allocUnsafe(4);
  len.writeInt32BE(data.length, 0);
  return typed(FrontendCode.password, Buffer.concat([cstrings(mechanism), len, data]));
}

/** Reads a NUL-terminated string at `at`, bounded by `end`; throws ProtocolError if unterminated. */
export function readCString(buf: Buffer, at: number, end: number): [string, number] {
  const nul = buf.indexOf(0, at);
  if (nul < 0 || nul >= end) throw new ProtocolError('unterminated string in message');
  return [buf.toString('utf8', at, nul), nul + 1];
}

/** The key/value pairs of a StartupMessage body (after length and version). */
export function parseStartupParams(buf: Buffer, start: number, end: number): Map<string, string> {
  const params = new Map<string, string>();
  let at = start + 8;
  while (at < end && buf[at] !== 0) {
    const [key, afterKey] = readCString(buf, at, end);
    const [value, afterValue] = readCString(buf, afterKey, end);
    params.set(key, value);
    at = afterValue;
  }
  return params;
}

/** Fields of an ErrorResponse/NoticeResponse by their one-letter code (S, C, M, ...). */
export function parseErrorFields(buf: Buffer, start: number, end: number): Map<string, string> {
  const fields = new Map<string, string>();
  let at = start + 5;
  while (at < end && buf[at] !== 0) {
    const code = String.fromCharCode(buf[at]);
    const [value, next] = readCString(buf, at + 1, end);
    fields.set(code, value);
    at = next;
  }
  return fields;
}

/** ParameterStatus name and value. */
export function parseParameterStatus(buf: Buffer, start: number, end: number): [string, string] {
  const [name, next] = readCString(buf, start + 5, end);
  const [value] = readCString(buf, next, end);
  return [name, value];
}

/** Quotes a value as an SQL string literal (standard_conforming_strings on or off). */
export function sqlLiteral(value: string): string {
  return value.includes('\\') ? `E'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'` : `'${value.replaceAll("'", "''")}'`;
}

/** Quotes an identifier (a GUC name from a client's startup packet). */
export function sqlIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * `options` startup parameter → GUC settings: "-c key=value", "-ckey=value" and "--key=value",
 * separated by spaces, with backslash escaping a space (libpq's rules).
 */
export function parseOptionsParam(options: string): Map<string, string> {
  const words: string[] = [];
  let word = '';
  let escaped = false;
  for (const ch of options) {
    if (escaped) {
      word += ch;
      escaped = false;
    } else if (ch === '\\') escaped = true;
    else if (ch === ' ' || ch === '\t') {
      if (word) words.push(word);
      word = '';
    } else word += ch;
  }
  if (word) words.push(word);
  const settings = new Map<string, string>();
  for (let i = 0; i < words.length; i++) {
    let setting: string | undefined;
    if (words[i] === '-c') setting = words[++i];
    else if (words[i].startsWith('-c')) setting = words[i].slice(2);
    else if (words[i].startsWith('--')) setting = words[i].slice(2);
    if (!setting) continue;
    const eq = setting.indexOf('=');
    if (eq <= 0) continue;
    settings.set(setting.slice(0, eq).replaceAll('-', '_'), setting.slice(eq + 1));
  }
  return settings;
}
