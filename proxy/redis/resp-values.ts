// Decoding and encoding whole RESP values, for the few messages sluice reads or answers itself
// (AUTH, HELLO, SELECT, CLIENT …, the upstream handshake). The forwarding path never uses this.
import { ProtocolError } from '../errors.js';

export type RespVersion = 2 | 3;

export type RespValue = string | number | bigint | boolean | null | Buffer | RespError | RespValue[] | RespMap | RespPush;

export class RespError {
  constructor(readonly message: string) {}
}

export class RespMap {
  constructor(readonly entries: Array<[RespValue, RespValue]>) {}
}

export class RespPush {
  constructor(readonly items: RespValue[]) {}
}

/** The arguments of one complete request (RESP array or inline line), as raw bytes. */
export function requestArgs(raw: Buffer): Buffer[] {
  if (raw[0] !== 0x2a) return inlineArgs(raw);
  const args: Buffer[] = [];
  let pos = raw.indexOf(0x0a) + 1;
  while (pos < raw.length) {
    const lf = raw.indexOf(0x0a, pos);
    const len = Number.parseInt(raw.toString('latin1', pos + 1, lf - 1), 10);
    args.push(raw.subarray(lf + 1, lf + 1 + len));
    pos = lf + 1 + len + 2;
  }
  return args;
}

/** Inline commands split on blanks, with Redis's double and single quotes. */
function inlineArgs(raw: Buffer): Buffer[] {
  const line = raw.toString('latin1').replace(/\r?\n$/, '');
  const args: Buffer[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (let m = re.exec(line); m; m = re.exec(line)) {
    const text = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]);
    args.push(Buffer.from(text, 'latin1'));
  }
  return args;
}

/** Decodes one complete reply (handshakes and tests; small values only). */
export function parseReply(buf: Buffer, start = 0): { value: RespValue; end: number } {
  const lf = buf.indexOf(0x0a, start);
  if (lf < 0) throw new ProtocolError('Protocol error: incomplete reply');
  const type = String.fromCharCode(buf[start]);
  const line = buf.toString('latin1', start + 1, lf - 1);
  let pos = lf + 1;
  switch (type) {
    case '+':
      return { value: line, end: pos };
    case '-':
      return { value: new RespError(line), end: pos };
    case ':':
      return { value: Number(line), end: pos };
    case '(':
      return { value: BigInt(line), end: pos };
    case ',':
      return { value: Number(line.replace('inf', 'Infinity')), end: pos };
    case '#':
      return { value: line === 't', end: pos };
    case '_':
      return { value: null, end: pos };
    case '$':
    case '!':
    case '=': {
      const len = Number(line);
      if (len < 0) return { value: null, end: pos };
      const body = buf.subarray(pos, pos + len);
      const value = type === '!' ? new RespError(body.toString()) : type === '=' ? body.subarray(4) : body;
      return { value, end: pos + len + 2 };
    }
    case '*':
    case '~':
    case '>':
    case '%':
    case '|': {
      const count = Number(line);
      if (count < 0) return { value: null, end: pos };
      const items: RespValue[] = [];
      const n = type === '%' || type === '|' ? count * 2 : count;
      for (let i = 0; i < n; i++) {
        const item = parseReply(buf, pos);
        items.push(item.value);
        pos = item.end;
      }
      if (type === '|') return parseReply(buf, pos);
      if (type === '%') {
        const entries: Array<[RespValue, RespValue]> = [];
        for (let i = 0; i < items.length; i += 2) entries.push([items[i], items[i + 1]]);
        return { value: new RespMap(entries), end: pos };
      }
      return { value: type === '>' ? new RespPush(items) : items, end: pos };
    }
    default:
      throw new ProtocolError(`Protocol error: unexpected reply type byte '${type}'`);
  }
}

// Encoders for replies sluice writes itself.

export function simpleReply(text: string): Buffer {
  return Buffer.from(`+${text}\r\n`, 'latin1');
}

export function errorReply(text: string): Buffer {
  // An error line cannot hold a newline; keep the first line of a multi-line reason.
  return Buffer.from(`-${text.replace(/[\r\n]+/g, ' ')}\r\n`, 'utf8');
}

export function integerReply(n: number): Buffer {
  return Buffer.from(`:${n}\r\n`, 'latin1');
}

export function bulkReply(value: Buffer | string | null, resp: RespVersion): Buffer {
  if (value === null) return Buffer.from(resp === 3 ? '_\r\n' : '$-1\r\n', 'latin1');
  const body = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  return Buffer.concat([Buffer.from(`$${body.length}\r\n`, 'latin1'), body, Buffer.from('\r\n', 'latin1')]);
}

/** Encodes a small value as RESP2 or RESP3: strings as bulk, arrays, maps (flattened under RESP2). */
export function encodeValue(value: RespValue, resp: RespVersion): Buffer {
  if (value === null) return bulkReply(null, resp);
  if (typeof value === 'string' || Buffer.isBuffer(value)) return bulkReply(value, resp);
  if (typeof value === 'number') return integerReply(value);
  if (value instanceof RespError) return errorReply(value.message);
  if (Array.isArray(value)) return Buffer.concat([Buffer.from(`*${value.length}\r\n`, 'latin1'), ...value.map((v) => encodeValue(v, resp))]);
  if (value instanceof RespMap) {
    const head = resp === 3 ? `%${value.entries.length}\r\n` : `*${value.entries.length * 2}\r\n`;
    return Buffer.concat([Buffer.from(head, 'latin1'), ...value.entries.flatMap(([k, v]) => [encodeValue(k, resp), encodeValue(v, resp)])]);
  }
  if (value instanceof RespPush) {
    const head = resp === 3 ? `>${value.items.length}\r\n` : `*${value.items.length}\r\n`;
    return Buffer.concat([Buffer.from(head, 'latin1'), ...value.items.map((v) => encodeValue(v, resp))]);
  }
  return bulkReply(String(value), resp);
}

/** Encodes a request as a RESP array of bulk strings. */
export function encodeRequest(args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`, 'latin1')];
  for (const arg of args) {
    const body = typeof arg === 'string' ? Buffer.from(arg, 'utf8') : arg;
    parts.push(Buffer.from(`$${body.length}\r\n`, 'latin1'), body, Buffer.from('\r\n', 'latin1'));
  }
  return Buffer.concat(parts);
}
