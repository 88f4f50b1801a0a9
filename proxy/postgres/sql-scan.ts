// A cheap scan of SQL text (Query and Parse bodies) for statements whose effects outlive the
// transaction, and of CommandComplete tags for the ones that clear state. Not a SQL parser:
// a byte lexer that knows where string literals ('…', E'…', $tag$…$tag$), quoted identifiers
// and comments (--, nested /* */) are, so `SELECT 'LISTEN x'` or `-- PREPARE` never match,
// plus a keyword state machine per statement. It reads UTF-8 bytes in place (every non-ASCII
// byte counts as an identifier letter) and allocates nothing unless it finds something.
//
// What it cannot see: statements inside function bodies, DO blocks or dynamic SQL
// (`EXECUTE format(…)`), which are string literals to it.

/** What a statement does to session state. */
export type SessionStateKind =
  | 'prepare' // SQL PREPARE name (not PREPARE TRANSACTION); name = statement
  | 'listen' // name = channel
  | 'unlisten' // name = channel or '*'
  | 'temp-table' // CREATE TEMP TABLE/VIEW/SEQUENCE, CREATE … pg_temp.x, SELECT … INTO TEMP
  | 'advisory-lock' // a session-level pg_advisory_lock / pg_try_advisory_lock (shared too); name = function
  | 'advisory-unlock-all' // pg_advisory_unlock_all()
  | 'with-hold-cursor' // DECLARE … WITH HOLD; name = cursor
  | 'close-cursor' // CLOSE name | ALL
  | 'set' // SET / SET SESSION (not LOCAL); name = parameter (lower case unless quoted), value = raw text
  | 'set-config' // set_config(name, value, is_local) with is_local not literally true
  | 'reset' // RESET name | ALL
  | 'discard' // DISCARD ALL | PLANS | SEQUENCES | TEMP; name = what
  | 'deallocate'; // DEALLOCATE [PREPARE] name | ALL

export interface SessionStateEffect {
  readonly kind: SessionStateKind;
  /** The object the statement names (see SessionStateKind), '' when there is none. */
  readonly name: string;
  /** For 'set': the value text as written (quotes included), to replay with `SET name TO value`; undefined for FROM CURRENT. */
  readonly value?: string;
}

export interface ScanOptions {
  /** With standard_conforming_strings off, a backslash escapes the next byte in every '…' literal. */
  standardConformingStrings?: boolean;
}

type Token = 'word' | 'quoted-ident' | 'string' | 'param' | 'punct' | 'semicolon' | 'end';

// Byte classes: 1 = may start an identifier, 2 = may continue one (letters, digits, _, $, non-ASCII).
const IDENT = new Uint8Array(256);
for (let b = 0; b < 256; b++) {
  const letter = (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x5f || b >= 0x80;
  const digit = b >= 0x30 && b <= 0x39;
  IDENT[b] = letter ? 3 : digit || b === 0x24 ? 2 : 0;
}
const SPACE = new Uint8Array(256);
for (const b of [0x20, 0x09, 0x0a, 0x0d, 0x0c, 0x0b]) SPACE[b] = 1;

/**
 * The lexer, reused across calls (JavaScript runs one scan at a time), so a scan allocates no
 * objects. `start`/`end` bound the current token; for 'punct' `start` is its one byte.
 */
class Lexer {
  buf: Buffer = Buffer.alloc(0);
  pos = 0;
  limit = 0;
  start = 0;
  end = 0;
  conforming = true;

  reset(buf: Buffer, start: number, end: number, conforming: boolean): void {
    this.buf = buf;
    this.pos = start;
    this.limit = end;
    this.conforming = conforming;
  }

  next(): Token {
    const buf = this.buf;
    const limit = this.limit;
    let pos = this.pos;
    for (;;) {
      while (pos < limit && SPACE[buf[pos]] === 1) pos++;
      if (pos >= limit) {
        this.pos = this.start = this.end = limit;
        return 'end';
      }
      const c = buf[pos];
      if (c === 0x2d && buf[pos + 1] === 0x2d && pos + 1 < limit) {
        // -- comment to end of line
        pos += 2;
        while (pos < limit && buf[pos] !== 0x0a) pos++;
        continue;
      }
      if (c === 0x2f && buf[pos + 1] === 0x2a && pos + 1 < limit) {
        // /* comment */, nested as PostgreSQL nests them
        pos += 2;
        let depth = 1;
        while (pos < limit && depth > 0) {
          if (buf[pos] === 0x2f && buf[pos + 1] === 0x2a && pos + 1 < limit) {
            depth++;
            pos += 2;
          } else if (buf[pos] === 0x2a && buf[pos + 1] === 0x2f && pos + 1 < limit) {
            depth--;
            pos += 2;
          } else pos++;
        }
        continue;
      }
      break;
    }
    this.start = pos;
    const c = buf[pos];
    if (c === 0x27) {
      this.pos = this.end = this.skipString(pos + 1, !this.conforming);
      return 'string';
    }
    if (c === 0x22) {
      // "quoted identifier", "" inside
      pos++;
      while (pos < limit) {
        if (buf[pos] === 0x22) {
          if (buf[pos + 1] === 0x22 && pos + 1 < limit) pos += 2;
          else {
            pos++;
            break;
          }
        } else pos++;
      }
      this.pos = this.end = pos;
      return 'quoted-ident';
    }
    if (c === 0x24) {
      // $tag$…$tag$ or $$…$$; otherwise a $1 parameter
      let p = pos + 1;
      if (p < limit && IDENT[buf[p]] === 3) {
        p++;
        while (p < limit && IDENT[buf[p]] !== 0 && buf[p] !== 0x24) p++;
      }
      if (p < limit && buf[p] === 0x24) {
        const tagStart = pos;
        const tagEnd = p + 1; // the opening delimiter is buf[tagStart..tagEnd)
        const close = this.findDelimiter(tagStart, tagEnd, tagEnd);
        this.pos = this.end = close;
        return 'string';
      }
      p = pos + 1;
      while (p < limit && buf[p] >= 0x30 && buf[p] <= 0x39) p++;
      this.pos = this.end = p;
      return 'param';
    }
    if (IDENT[c] === 3) {
      let p = pos + 1;
      while (p < limit && IDENT[buf[p]] !== 0) p++;
      // E'…' (backslash escapes); B'…', X'…', N'…' are ordinary literals
      if (p < limit && buf[p] === 0x27 && p === pos + 1) {
        const escapes = c === 0x45 || c === 0x65 || !this.conforming;
        this.pos = this.end = this.skipString(p + 1, escapes);
        return 'string';
      }
      // U&'…' and U&"…": the & binds them into one literal
      if ((c === 0x55 || c === 0x75) && p === pos + 1 && buf[p] === 0x26 && p + 1 < limit && (buf[p + 1] === 0x27 || buf[p + 1] === 0x22)) {
        this.pos = p + 1;
        const kind = this.next();
        this.start = pos;
        return kind;
      }
      this.pos = this.end = p;
      return 'word';
    }
    if (c >= 0x30 && c <= 0x39) {
      // a number; letters glued to it (1e5, 0x1F) belong to it
      let p = pos + 1;
      while (p < limit && (IDENT[buf[p]] !== 0 || buf[p] === 0x2e)) p++;
      this.pos = this.end = p;
      return 'punct';
    }
    this.pos = this.end = pos + 1;
    return c === 0x3b ? 'semicolon' : 'punct';
  }

  /** From just after an opening quote, the position after the closing one ('' doubles; \ escapes when asked). */
  private skipString(pos: number, escapes: boolean): number {
    const buf = this.buf;
    const limit = this.limit;
    while (pos < limit) {
      const c = buf[pos];
      if (c === 0x5c && escapes) pos += 2;
      else if (c === 0x27) {
        if (pos + 1 < limit && buf[pos + 1] === 0x27) pos += 2;
        else return pos + 1;
      } else pos++;
    }
    return limit;
  }

  /** The position after the first copy of buf[tagStart..tagEnd) at or after `from`; the limit when absent. */
  private findDelimiter(tagStart: number, tagEnd: number, from: number): number {
    const buf = this.buf;
    const limit = this.limit;
    const length = tagEnd - tagStart;
    for (let p = from; p + length <= limit; p++) {
      if (buf[p] !== 0x24) continue;
      let same = true;
      for (let i = 1; i < length; i++) {
        if (buf[p + i] !== buf[tagStart + i]) {
          same = false;
          break;
        }
      }
      if (same) return p + length;
    }
    return limit;
  }

  /** Whether the current word is `lower` (ASCII, case-insensitive). */
  is(lower: string): boolean {
    const length = this.end - this.start;
    if (length !== lower.length) return false;
    const buf = this.buf;
    for (let i = 0; i < length; i++) {
      const b = buf[this.start + i];
      if ((b >= 0x41 && b <= 0x5a ? b | 0x20 : b) !== lower.charCodeAt(i)) return false;
    }
    return true;
  }

  /** The current punct byte. */
  get byte(): number {
    return this.buf[this.start];
  }

  /** The current word or quoted identifier as PostgreSQL folds it (lower case unless quoted). */
  identifier(kind: Token): string {
    if (kind === 'quoted-ident') return this.buf.toString('utf8', this.start + 1, this.end - 1).replaceAll('""', '"');
    if (kind === 'string') return stringLiteralValue(this.buf, this.start, this.end);
    return this.buf.toString('utf8', this.start, this.end).toLowerCase();
  }
}

/** The contents of a simple '…' literal ('' undoubled); other literal forms come back as written. */
function stringLiteralValue(buf: Buffer, start: number, end: number): string {
  if (buf[start] !== 0x27) return buf.toString('utf8', start, end);
  return buf.toString('utf8', start + 1, Math.max(start + 1, end - 1)).replaceAll("''", "'");
}

const lexer = new Lexer();

// The effects found by the scan in progress; module-level so the common case allocates nothing.
let found: SessionStateEffect[] | undefined;

function add(effect: SessionStateEffect): void {
  found ??= [];
  found.push(effect);
}

// Session-level advisory lock functions; the _xact_ ones end with the transaction and do not count.
const ADVISORY_LOCKS = ['pg_advisory_lock', 'pg_advisory_lock_shared', 'pg_try_advisory_lock', 'pg_try_advisory_lock_shared'];

/** Statement states of the keyword machine. */
type Statement = 'start' | 'create' | 'declare' | 'query' | 'other' | 'done';

/**
 * Scans SQL text at buf[start..end) — every statement of a multi-statement Query — and returns
 * what it does to session state, or undefined (the common case, with nothing allocated).
 */
export function scanSql(buf: Buffer, start: number, end: number, options?: ScanOptions): SessionStateEffect[] | undefined {
  const lx = lexer;
  lx.reset(buf, start, end, options?.standardConformingStrings ?? true);
  found = undefined;
  let state: Statement = 'start';
  // create: saw TEMP; the statement is then temp unless it says ON COMMIT DROP
  let createTemp = false;
  let createPrefix = false; // still among CREATE [OR REPLACE] [GLOBAL|LOCAL] [TEMP] [UNLOGGED]
  let onCommitDropSeen = 0; // 1 after ON, 2 after ON COMMIT
  let prevWordInsertOrMerge = false;
  let prevInto = false;
  let prevWasWith = false;
  let declareName = '';
  let pendingFunction = -1; // index into ADVISORY_LOCKS, 4 for unlock_all, 5 for set_config
  for (;;) {
    const kind = lx.next();
    if (kind === 'end' || kind === 'semicolon') {
      if (state === 'create' && createTemp && onCommitDropSeen !== 3) add({ kind: 'temp-table', name: '' });
      if (kind === 'end') return found;
      state = 'start';
      createTemp = false;
      onCommitDropSeen = 0;
      prevWordInsertOrMerge = prevInto = prevWasWith = false;
      pendingFunction = -1;
      continue;
    }
    if (pendingFunction >= 0) {
      const fn = pendingFunction;
      pendingFunction = -1;
      if (kind === 'punct' && lx.byte === 0x28) {
        if (fn < 4) add({ kind: 'advisory-lock', name: ADVISORY_LOCKS[fn] });
        else if (fn === 4) add({ kind: 'advisory-unlock-all', name: '' });
        else {
          const found = scanSetConfig();
          if (found) add(found);
        }
        continue;
      }
    }
    if (state === 'start') {
      state = 'other';
      if (kind === 'punct' && lx.byte === 0x28) state = 'query';
      if (kind !== 'word') continue;
      if (lx.is('select') || lx.is('with') || lx.is('values')) state = 'query';
      else if (lx.is('create')) {
        state = 'create';
        createPrefix = true;
      }
      else if (lx.is('declare')) state = 'declare';
      else if (lx.is('set')) {
        const found = scanSet();
        if (found) add(found);
        state = 'done';
      } else if (lx.is('prepare')) {
        const k = lx.next();
        if ((k === 'word' && !lx.is('transaction')) || k === 'quoted-ident') add({ kind: 'prepare', name: lx.identifier(k) });
        state = 'other';
      } else if (lx.is('listen') || lx.is('unlisten') || lx.is('reset') || lx.is('discard') || lx.is('close') || lx.is('deallocate')) {
        const what: SessionStateKind = lx.is('listen')
          ? 'listen'
          : lx.is('unlisten')
            ? 'unlisten'
            : lx.is('reset')
              ? 'reset'
              : lx.is('discard')
                ? 'discard'
                : lx.is('close')
                  ? 'close-cursor'
                  : 'deallocate';
        let k = lx.next();
        if (what === 'deallocate' && k === 'word' && lx.is('prepare')) k = lx.next();
        if (what === 'discard' && k === 'word' && lx.is('temporary')) add({ kind: 'discard', name: 'temp' });
        else if (what === 'reset' && k === 'word' && (lx.is('session') || lx.is('time'))) {
          // RESET SESSION AUTHORIZATION, RESET TIME ZONE
          const name = lx.is('session') ? 'session_authorization' : 'timezone';
          add({ kind: 'reset', name });
        } else if (what === 'unlisten' && k === 'punct' && lx.byte === 0x2a) add({ kind: 'unlisten', name: '*' });
        else if (k === 'word' || k === 'quoted-ident') add({ kind: what, name: lx.identifier(k) });
        state = 'other';
      }
      continue;
    }
    if (state === 'done') continue;
    if (kind === 'word') {
      const length = lx.end - lx.start;
      const first = buf[lx.start] | 0x20;
      if (first === 0x70 && length >= 16 && length <= 27) {
        for (let i = 0; i < ADVISORY_LOCKS.length; i++) if (lx.is(ADVISORY_LOCKS[i])) pendingFunction = i;
        if (lx.is('pg_advisory_unlock_all')) pendingFunction = 4;
      } else if (first === 0x73 && length === 10 && lx.is('set_config')) pendingFunction = 5;
      if (state === 'create') {
        if (createPrefix && (lx.is('temp') || lx.is('temporary'))) createTemp = true;
        else if (createPrefix && !(lx.is('or') || lx.is('replace') || lx.is('global') || lx.is('local') || lx.is('unlogged'))) createPrefix = false;
        else if (lx.is('pg_temp')) {
          const save = lx.pos;
          if (lx.next() === 'punct' && lx.byte === 0x2e) createTemp = true;
          lx.pos = save;
        }
        // ON COMMIT DROP: the object goes with the transaction
        if (lx.is('on')) onCommitDropSeen = 1;
        else if (onCommitDropSeen === 1 && lx.is('commit')) onCommitDropSeen = 2;
        else if (onCommitDropSeen === 2 && lx.is('drop')) onCommitDropSeen = 3;
        else if (onCommitDropSeen !== 3) onCommitDropSeen = 0;
      } else if (state === 'declare') {
        if (lx.is('for')) {
          state = 'other';
        } else if (prevWasWith && lx.is('hold')) {
          add({ kind: 'with-hold-cursor', name: declareName });
          state = 'other';
        } else if (declareName === '') declareName = lx.identifier(kind);
        prevWasWith = lx.is('with');
      } else if (state === 'query') {
        // SELECT … INTO [GLOBAL|LOCAL] TEMP[ORARY] [TABLE] name; not INSERT/MERGE INTO temp
        if (prevInto && (lx.is('temp') || lx.is('temporary'))) add({ kind: 'temp-table', name: '' });
        if (!(prevInto && (lx.is('local') || lx.is('global')))) prevInto = lx.is('into') && !prevWordInsertOrMerge;
        prevWordInsertOrMerge = lx.is('insert') || lx.is('merge');
      }
    } else if (state === 'declare' && kind === 'quoted-ident' && declareName === '') {
      declareName = lx.identifier(kind);
    } else {
      prevInto = prevWordInsertOrMerge = prevWasWith = false;
    }
  }
}

/** SET already read: SET [SESSION] name {TO|=} value | SET LOCAL … | SET TRANSACTION … */
function scanSet(): SessionStateEffect | undefined {
  const lx = lexer;
  let kind = lx.next();
  if (kind !== 'word' && kind !== 'quoted-ident') return undefined;
  if (kind === 'word') {
    // transaction-scoped forms leave nothing behind
    if (lx.is('local') || lx.is('transaction') || lx.is('constraints')) return undefined;
    if (lx.is('session')) {
      kind = lx.next();
      if (kind === 'word' && lx.is('authorization')) return setValue('session_authorization');
      if (kind === 'word' && lx.is('characteristics')) return { kind: 'set', name: 'session_characteristics', value: restOfStatement() };
      if (kind !== 'word' && kind !== 'quoted-ident') return undefined;
    }
  }
  if (kind === 'word') {
    if (lx.is('time')) {
      lx.next(); // ZONE
      return setValue('timezone');
    }
    if (lx.is('names')) return setValue('client_encoding');
    if (lx.is('schema')) return setValue('search_path');
    if (lx.is('role')) return setValue('role');
    if (lx.is('xml')) {
      lx.next(); // OPTION
      return setValue('xmloption');
    }
  }
  // name, possibly dotted (myapp.tenant), then TO / = / FROM CURRENT
  let name = lx.identifier(kind);
  for (;;) {
    const save = lx.pos;
    const k = lx.next();
    if (k === 'punct' && lx.byte === 0x2e) {
      const part = lx.next();
      name += `.${lx.identifier(part)}`;
      continue;
    }
    if ((k === 'word' && lx.is('to')) || (k === 'punct' && lx.byte === 0x3d)) return { kind: 'set', name, value: restOfStatement() };
    if (k === 'word' && lx.is('from')) return { kind: 'set', name };
    lx.pos = save;
    return { kind: 'set', name, value: restOfStatement() };
  }
}

function setValue(name: string): SessionStateEffect {
  return { kind: 'set', name, value: restOfStatement() };
}

/** The raw text from the next token to the end of the statement, trimmed; the lexer stops at the ';'. */
function restOfStatement(): string {
  const lx = lexer;
  let first = -1;
  let last = -1;
  for (;;) {
    const save = lx.pos;
    const k = lx.next();
    if (k === 'end' || k === 'semicolon') {
      lx.pos = save; // let the caller see the ';'
      break;
    }
    if (first < 0) first = lx.start;
    last = lx.end;
  }
  return first < 0 ? '' : lx.buf.toString('utf8', first, last);
}

/** set_config( already read: a session-level set unless the third argument is literally true. */
function scanSetConfig(): SessionStateEffect | undefined {
  const lx = lexer;
  let depth = 1;
  let arg = 0;
  let name = '';
  let argTokens = 0;
  let local = false;
  for (;;) {
    const save = lx.pos;
    const k = lx.next();
    if (k === 'end' || k === 'semicolon') {
      lx.pos = save;
      break;
    }
    if (k === 'punct' && lx.byte === 0x28) depth++;
    else if (k === 'punct' && lx.byte === 0x29) {
      if (--depth === 0) break;
    } else if (k === 'punct' && lx.byte === 0x2c && depth === 1) {
      arg++;
      argTokens = 0;
      continue;
    }
    argTokens++;
    if (arg === 0 && argTokens === 1 && k === 'string') name = lx.identifier(k);
    if (arg === 2) local = argTokens === 1 && k === 'word' && lx.is('true');
  }
  return local ? undefined : { kind: 'set-config', name };
}

/** Convenience for tests and callers that hold a string. */
export function scanSqlText(sql: string, options?: ScanOptions): SessionStateEffect[] | undefined {
  const buf = Buffer.from(sql, 'utf8');
  return scanSql(buf, 0, buf.length, options);
}

/** The effects of a Query ('Q') message at buf[start..end). */
export function scanQueryMessage(buf: Buffer, start: number, end: number, options?: ScanOptions): SessionStateEffect[] | undefined {
  // 'Q', int32 length, then the query as a C string
  const stop = buf[end - 1] === 0 ? end - 1 : end;
  return scanSql(buf, start + 5, stop, options);
}

/** The effects of a Parse ('P') message's query text at buf[start..end). */
export function scanParseMessage(buf: Buffer, start: number, end: number, options?: ScanOptions): SessionStateEffect[] | undefined {
  const nameEnd = buf.indexOf(0, start + 5);
  if (nameEnd < 0 || nameEnd >= end) return undefined;
  const textEnd = buf.indexOf(0, nameEnd + 1);
  if (textEnd < 0 || textEnd >= end) return undefined;
  return scanSql(buf, nameEnd + 1, textEnd, options);
}

/**
 * Whether the first statement of buf[start..end) ends a transaction block (COMMIT, END, ROLLBACK,
 * ABORT, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED). PostgreSQL accepts only those in an
 * aborted transaction (postgres.c IsTransactionExitStmt); everything else gets 25P02.
 */
export function isTransactionExitStatement(buf: Buffer, start: number, end: number): boolean {
  const lx = lexer;
  lx.reset(buf, start, end, true);
  if (lx.next() !== 'word') return false;
  if (lx.is('commit') || lx.is('end') || lx.is('rollback') || lx.is('abort')) return true;
  if (lx.is('prepare')) return lx.next() === 'word' && lx.is('transaction');
  return false;
}

/** What a CommandComplete tag says about session state; undefined for ordinary commands. */
export type CommandTagEffect =
  | 'discard-all'
  | 'discard-temp'
  | 'discard-plans'
  | 'discard-sequences'
  | 'deallocate-all'
  | 'deallocate'
  | 'listen'
  | 'unlisten'
  | 'set'
  | 'reset'
  | 'prepare'
  | 'declare-cursor'
  | 'close-cursor'
  | 'close-cursor-all'
  | 'rollback';

const TAGS: [Buffer, CommandTagEffect][] = (
  [
    ['DISCARD ALL', 'discard-all'],
    ['DISCARD TEMP', 'discard-temp'],
    ['DISCARD PLANS', 'discard-plans'],
    ['DISCARD SEQUENCES', 'discard-sequences'],
    ['DEALLOCATE ALL', 'deallocate-all'],
    ['DEALLOCATE', 'deallocate'],
    ['LISTEN', 'listen'],
    ['UNLISTEN', 'unlisten'],
    ['SET', 'set'],
    ['RESET', 'reset'],
    ['PREPARE', 'prepare'],
    ['DECLARE CURSOR', 'declare-cursor'],
    ['CLOSE CURSOR', 'close-cursor'],
    ['CLOSE CURSOR ALL', 'close-cursor-all'],
    // also ROLLBACK TO SAVEPOINT, and COMMIT of a failed transaction
    ['ROLLBACK', 'rollback'],
  ] as const
).map(([tag, effect]) => [Buffer.from(`${tag}\0`, 'latin1'), effect]);
const TAG_FIRST_BYTES = new Uint8Array(256);
for (const [tag] of TAGS) TAG_FIRST_BYTES[tag[0]] = 1;

/** Classifies a CommandComplete ('C') message at buf[start..end) by its tag, without allocating. */
export function commandTagEffect(buf: Buffer, start: number, end: number): CommandTagEffect | undefined {
  const at = start + 5;
  if (at >= end || TAG_FIRST_BYTES[buf[at]] !== 1) return undefined;
  const length = end - at;
  for (const [tag, effect] of TAGS) {
    if (tag.length === length && buf.compare(tag, 0, tag.length, at, end) === 0) return effect;
  }
  return undefined;
}
