// One admin console connection (database "sluice"), after its login: answers the simple and
// the extended query protocol with the result sets of proxy/admin/admin-console.ts. Nothing
// here touches a server; the console reads the process's state and drives its listeners.
import { type AdminColumn, type AdminContext, type AdminResult, type AdminValue, runAdminCommand } from '../admin/admin-console.js';
import { BackendCode, FrontendCode, TxStatus } from './protocol-codes.js';
import { errorResponse, readCString, readyForQuery, typed } from './wire-messages.js';

const TYPE_OID: Record<AdminColumn['type'], [oid: number, size: number]> = {
  text: [25, -1],
  int8: [20, 8],
  numeric: [1700, -1],
  bool: [16, 1],
};

function cstring(text: string): Buffer {
  return Buffer.from(`${text}\0`, 'utf8');
}

function rowDescription(columns: AdminColumn[]): Buffer {
  const parts: Buffer[] = [Buffer.from([columns.length >> 8, columns.length & 0xff])];
  for (const column of columns) {
    const [oid, size] = TYPE_OID[column.type];
    const field = Buffer.allocUnsafe(18);
    field.writeInt32BE(0, 0); // table oid
    field.writeInt16BE(0, 4); // column number
    field.writeInt32BE(oid, 6);
    field.writeInt16BE(size, 10);
    field.writeInt32BE(-1, 12); // type modifier
    field.writeInt16BE(0, 16); // text format
    parts.push(cstring(column.name), field);
  }
  return typed(BackendCode.rowDescription, Buffer.concat(parts));
}

function dataRow(values: AdminValue[]): Buffer {
  const parts: Buffer[] = [Buffer.from([values.length >> 8, values.length & 0xff])];
  for (const value of values) {
    const length = Buffer.allocUnsafe(4);
    if (value === null) {
      length.writeInt32BE(-1, 0);
      parts.push(length);
      continue;
    }
    const text = Buffer.from(typeof value === 'boolean' ? (value ? 't' : 'f') : String(value), 'utf8');
    length.writeInt32BE(text.length, 0);
    parts.push(length, text);
  }
  return typed(BackendCode.dataRow, Buffer.concat(parts));
}

const PARSE_COMPLETE = typed(BackendCode.parseComplete, Buffer.alloc(0));
const BIND_COMPLETE = typed(BackendCode.bindComplete, Buffer.alloc(0));
const CLOSE_COMPLETE = typed(BackendCode.closeComplete, Buffer.alloc(0));
const NO_DATA = typed(BackendCode.noData, Buffer.alloc(0));
const EMPTY_QUERY = typed(BackendCode.emptyQueryResponse, Buffer.alloc(0));
const NO_PARAMETERS = typed(BackendCode.parameterDescription, Buffer.from([0, 0]));

export class AdminSession {
  /** Prepared statement name -> command text. */
  private readonly statements = new Map<string, string>();
  /** Portal name -> its result, run at Bind so Describe can tell the columns. */
  private readonly portals = new Map<string, AdminResult>();
  /** After an error in extended protocol, messages are skipped until Sync. */
  private skipping = false;

  constructor(
    private readonly ctx: AdminContext,
    private readonly send: (buf: Buffer) => void,
    /** Called for Terminate. */
    private readonly end: () => void,
  ) {}

  /** One whole client message: type byte at `start`, body up to `end`. */
  onMessage(type: number, buf: Buffer, start: number, end: number): void {
    const bodyAt = start + 5;
    if (type === FrontendCode.terminate) {
      this.end();
      return;
    }
    if (type === FrontendCode.query) {
      const [text] = readCString(buf, bodyAt, end);
      this.simpleQuery(text);
      this.send(readyForQuery(TxStatus.idle));
      return;
    }
    if (type === FrontendCode.sync) {
      this.skipping = false;
      this.send(readyForQuery(TxStatus.idle));
      return;
    }
    if (this.skipping || type === FrontendCode.flush) return;
    switch (type) {
      case FrontendCode.parse: {
        const [name, at] = readCString(buf, bodyAt, end);
        const [text] = readCString(buf, at, end);
        this.statements.set(name, text);
        this.send(PARSE_COMPLETE);
        return;
      }
      case FrontendCode.bind: {
        const [portal, at] = readCString(buf, bodyAt, end);
        const [statement] = readCString(buf, at, end);
        const text = this.statements.get(statement);
        if (text === undefined) {
          this.extendedError('26000', `prepared statement "${statement}" does not exist`);
          return;
        }
        this.portals.set(portal, runAdminCommand(text, this.ctx));
        this.send(BIND_COMPLETE);
        return;
      }
      case FrontendCode.describe: {
        const kind = buf[bodyAt];
        const [name] = readCString(buf, bodyAt + 1, end);
        const result = kind === 0x53 /* S */ ? this.describeStatement(name) : this.portals.get(name);
        if (kind === 0x53) this.send(NO_PARAMETERS);
        if (result === undefined) this.extendedError(kind === 0x53 ? '26000' : '34000', `${kind === 0x53 ? 'prepared statement' : 'portal'} "${name}" does not exist`);
        else this.send(result.kind === 'rows' ? rowDescription(result.columns) : NO_DATA);
        return;
      }
      case FrontendCode.execute: {
        const [portal] = readCString(buf, bodyAt, end);
        const result = this.portals.get(portal);
        if (result === undefined) this.extendedError('34000', `portal "${portal}" does not exist`);
        else if (result.kind === 'error') this.extendedError(result.sqlstate, result.message);
        else this.sendResult(result, false);
        return;
      }
      case FrontendCode.close: {
        const kind = buf[bodyAt];
        const [name] = readCString(buf, bodyAt + 1, end);
        if (kind === 0x53) this.statements.delete(name);
        else this.portals.delete(name);
        this.send(CLOSE_COMPLETE);
        return;
      }
      default:
        this.extendedError('0A000', `the admin console does not support message type ${String.fromCharCode(type)}`);
    }
  }

  private describeStatement(name: string): AdminResult | undefined {
    const text = this.statements.get(name);
    // SHOW commands have fixed columns; running one to learn them has no side effects, others have no rows.
    if (text === undefined) return undefined;
    return /^\s*show\b/i.test(text) ? runAdminCommand(text, this.ctx) : { kind: 'command', tag: '' };
  }

  private extendedError(sqlstate: string, message: string): void {
    this.send(errorResponse('ERROR', sqlstate, message));
    this.skipping = true;
  }

  private simpleQuery(text: string): void {
    const commands = text.split(';').filter((c) => c.trim() !== '');
    if (commands.length === 0) {
      this.send(EMPTY_QUERY);
      return;
    }
    for (const command of commands) {
      const result = runAdminCommand(command, this.ctx);
      if (result.kind === 'error') {
        this.send(errorResponse('ERROR', result.sqlstate, result.message));
        return;
      }
      this.sendResult(result, true);
    }
  }

  private sendResult(result: AdminResult, withDescription: boolean): void {
    if (result.kind === 'rows') {
      if (withDescription) this.send(rowDescription(result.columns));
      for (const row of result.rows) this.send(dataRow(row));
    }
    if (result.kind !== 'error') this.send(typed(BackendCode.commandComplete, cstring(result.tag)));
  }
}
