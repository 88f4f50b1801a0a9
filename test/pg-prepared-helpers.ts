// Test helpers for the prepared-statement tests: wire bytes in both directions, a sink that
// records what was written, and FakeBackend, a model of how PostgreSQL answers the extended
// protocol (named statements, 42P05/26000, skip-until-Sync after an error, DEALLOCATE ALL).

/** Splits a byte stream of typed messages into messages. */
export function frames(bytes: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  while (at < bytes.length) {
    const total = bytes.readInt32BE(at + 1) + 1;
    out.push(bytes.subarray(at, at + total));
    at += total;
  }
  return out;
}

/** Records what is written, like the core's Outbox. */
export class Sink {
  readonly chunks: Buffer[] = [];
  add(buf: Buffer, start: number, end: number): void {
    this.chunks.push(Buffer.from(buf.subarray(start, end)));
  }
  addBuffer(buf: Buffer): void {
    this.chunks.push(Buffer.from(buf));
  }
  /** Everything written so far, as messages, and clears. */
  take(): Buffer[] {
    const all = frames(Buffer.concat(this.chunks));
    this.chunks.length = 0;
    return all;
  }
}

function cstr(buf: Buffer, at: number): [string, number] {
  const nul = buf.indexOf(0, at);
  return [buf.toString('utf8', at, nul), nul + 1];
}

/** A frontend message as a short string: `P name "text" [types]`, `B portal stmt`, `D S name`, `C S name`, `E`, `S`, `Q "sql"`. */
export function describeFrontend(msg: Buffer): string {
  const type = String.fromCharCode(msg[0]);
  switch (type) {
    case 'P': {
      const [name, at] = cstr(msg, 5);
      const [text, at2] = cstr(msg, at);
      const count = msg.readInt16BE(at2);
      const types = Array.from({ length: count }, (_, i) => msg.readInt32BE(at2 + 2 + 4 * i));
      return `P ${name} "${text}"${count ? ` [${types.join(',')}]` : ''}`;
    }
    case 'B': {
      const [portal, at] = cstr(msg, 5);
      const [statement] = cstr(msg, at);
      return `B ${portal} ${statement}`;
    }
    case 'D':
    case 'C':
      return `${type} ${String.fromCharCode(msg[5])} ${cstr(msg, 6)[0]}`;
    case 'Q':
      return `Q "${cstr(msg, 5)[0]}"`;
    default:
      return type;
  }
}

function typed(type: string, body: Buffer): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out[0] = type.charCodeAt(0);
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}

export const backend = {
  parseComplete: () => typed('1', Buffer.alloc(0)),
  bindComplete: () => typed('2', Buffer.alloc(0)),
  closeComplete: () => typed('3', Buffer.alloc(0)),
  noData: () => typed('n', Buffer.alloc(0)),
  parameterDescription: () => typed('t', Buffer.from([0, 0])),
  rowDescription: (label: string) => typed('T', Buffer.from(`${label}\0`)),
  dataRow: (value: string) => typed('D', Buffer.from(value)),
  commandComplete: (tag: string) => typed('C', Buffer.from(`${tag}\0`)),
  readyForQuery: (status: 'I' | 'T' | 'E') => typed('Z', Buffer.from(status)),
  notice: (text: string) => typed('N', Buffer.from(`SNOTICE\0M${text}\0\0`)),
  error: (sqlstate: string, message: string) => typed('E', Buffer.from(`SERROR\0VERROR\0C${sqlstate}\0M${message}\0\0`)),
};

/** A backend message as a short string: its type, and for errors `E <sqlstate> <message>`, for T/D/C their text. */
export function describeBackend(msg: Buffer): string {
  const type = String.fromCharCode(msg[0]);
  if (type === 'E') {
    const fields = new Map<string, string>();
    let at = 5;
    while (msg[at] !== 0) {
      const code = String.fromCharCode(msg[at]);
      const [value, next] = cstr(msg, at + 1);
      fields.set(code, value);
      at = next;
    }
    return `E ${fields.get('C')} ${fields.get('M')}`;
  }
  if (type === 'T' || type === 'C') return `${type} ${cstr(msg, 5)[0]}`;
  if (type === 'D') return `D ${msg.toString('utf8', 5)}`;
  if (type === 'Z') return `Z ${String.fromCharCode(msg[5])}`;
  return type;
}

/**
 * How PostgreSQL answers the extended protocol, reduced to what prepared statements touch.
 * Texts containing BAD fail to parse (42601); `Q "DEALLOCATE ALL"` drops every statement.
 * Results: Describe answers `T <text>`, Execute answers `D <text>` and `C SELECT 1`, so a client
 * can see which text a statement really runs.
 */
export class FakeBackend {
  readonly statements = new Map<string, string>();
  private readonly portals = new Map<string, string>();
  private skipping = false;

  /** Answers every message in `bytes`. */
  handle(bytes: Buffer): Buffer[] {
    const replies: Buffer[] = [];
    for (const msg of frames(bytes)) this.one(msg, replies);
    return replies;
  }

  private fail(replies: Buffer[], sqlstate: string, message: string): void {
    replies.push(backend.error(sqlstate, message));
    this.skipping = true;
  }

  private one(msg: Buffer, replies: Buffer[]): void {
    const type = String.fromCharCode(msg[0]);
    if (type === 'S') {
      this.skipping = false;
      replies.push(backend.readyForQuery('I'));
      return;
    }
    if (this.skipping) return;
    switch (type) {
      case 'P': {
        const [name, at] = cstr(msg, 5);
        const [text] = cstr(msg, at);
        if (text.includes('BAD')) {
          this.fail(replies, '42601', `syntax error at or near "BAD"`);
          return;
        }
        if (name !== '' && this.statements.has(name)) {
          this.fail(replies, '42P05', `prepared statement "${name}" already exists`);
          return;
        }
        this.statements.set(name, text);
        replies.push(backend.parseComplete());
        return;
      }
      case 'B': {
        const [portal, at] = cstr(msg, 5);
        const [statement] = cstr(msg, at);
        const text = this.statements.get(statement);
        if (text === undefined) {
          this.fail(replies, '26000', `prepared statement "${statement}" does not exist`);
          return;
        }
        this.portals.set(portal, text);
        replies.push(backend.bindComplete());
        return;
      }
      case 'D': {
        const [name] = cstr(msg, 6);
        const text = msg[5] === 0x53 ? this.statements.get(name) : this.portals.get(name);
        if (text === undefined) {
          if (msg[5] === 0x53) this.fail(replies, '26000', `prepared statement "${name}" does not exist`);
          else this.fail(replies, '34000', `portal "${name}" does not exist`);
          return;
        }
        if (msg[5] === 0x53) replies.push(backend.parameterDescription());
        replies.push(backend.rowDescription(text));
        return;
      }
      case 'E': {
        const [portal] = cstr(msg, 5);
        const text = this.portals.get(portal);
        if (text === undefined) {
          this.fail(replies, '34000', `portal "${portal}" does not exist`);
          return;
        }
        replies.push(backend.dataRow(text), backend.commandComplete('SELECT 1'));
        return;
      }
      case 'C': {
        const [name] = cstr(msg, 6);
        if (msg[5] === 0x53) this.statements.delete(name);
        else this.portals.delete(name);
        replies.push(backend.closeComplete());
        return;
      }
      case 'Q': {
        const [sql] = cstr(msg, 5);
        if (sql === 'DEALLOCATE ALL') {
          this.statements.clear();
          replies.push(backend.commandComplete('DEALLOCATE ALL'));
        } else replies.push(backend.commandComplete('SELECT 1'));
        replies.push(backend.readyForQuery('I'));
        return;
      }
      case 'H':
        return;
      default:
        throw new Error(`FakeBackend: unexpected message ${type}`);
    }
  }
}
