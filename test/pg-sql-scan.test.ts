// The session-state scan of SQL text and CommandComplete tags: what pins, what does not, and
// the literal/comment traps a keyword grep would fall into.
import fc from 'fast-check';
import t from 'tap';
import {
  commandTagEffect,
  isTransactionExitStatement,
  type SessionStateEffect,
  scanParseMessage,
  scanQueryMessage,
  scanSqlText,
} from '../proxy/postgres/sql-scan.js';
import { serialize } from 'pg-protocol';

const kinds = (sql: string) => (scanSqlText(sql) ?? []).map((e) => e.kind);
const only = (sql: string): SessionStateEffect => {
  const effects = scanSqlText(sql) ?? [];
  if (effects.length !== 1) throw new Error(`expected one effect from ${sql}, got ${JSON.stringify(effects)}`);
  return effects[0];
};

t.test('ordinary statements report nothing', async (t) => {
  for (const sql of [
    'SELECT 1',
    'select * from accounts where id = $1',
    "INSERT INTO t VALUES (1, 'x')",
    'UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2',
    'BEGIN',
    'COMMIT',
    'SET LOCAL search_path TO app',
    'set local statement_timeout = 5',
    'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE',
    'SET CONSTRAINTS ALL DEFERRED',
    'select pg_advisory_xact_lock(1)',
    'select pg_try_advisory_xact_lock_shared(1, 2)',
    "select set_config('request.jwt', $1, true)",
    'PREPARE TRANSACTION \'gid-1\'',
    'CREATE TABLE temp (id int)',
    'CREATE TEMP TABLE scratch (id int) ON COMMIT DROP',
    'INSERT INTO temp VALUES (1)',
    'with x as (select 1) insert into temp select * from x',
    '',
    ';;',
  ]) {
    t.equal(scanSqlText(sql), undefined, sql);
  }
});

t.test('keywords inside literals, quoted identifiers and comments are not statements', async (t) => {
  for (const sql of [
    "SELECT 'LISTEN x'",
    "SELECT 'it''s; LISTEN x'",
    "SELECT E'\\'; LISTEN x'",
    "SELECT E'a\\\\'; SELECT 1",
    'SELECT $$; LISTEN x; $$',
    'SELECT $tag$ $$; PREPARE p AS SELECT 1; $$ $tag$',
    'SELECT "LISTEN; x" FROM t',
    '-- PREPARE p AS SELECT 1\nSELECT 1',
    '/* LISTEN x; /* nested */ SET search_path = a; */ SELECT 1',
    "SELECT 'pg_advisory_lock(1)'",
    "SELECT U&'d\\0061t; LISTEN x'",
    'SELECT a$b$ FROM t',
  ]) {
    t.equal(scanSqlText(sql), undefined, sql);
  }
  // and the statement after the literal is still seen
  t.same(kinds("SELECT 'x;'; LISTEN jobs"), ['listen']);
  t.same(kinds('SELECT $$ $$; LISTEN jobs'), ['listen']);
  t.same(kinds('/* a /* b */ c */ LISTEN jobs'), ['listen']);
  t.same(kinds('SELECT $1; LISTEN jobs'), ['listen']);
});

t.test('backslash escapes plain literals only when standard_conforming_strings is off', async (t) => {
  const sql = "SELECT 'a\\'; LISTEN x; SELECT '";
  t.same(kinds(sql), ['listen'], 'conforming: the literal ends at the second quote');
  t.equal(scanSqlText(sql, { standardConformingStrings: false }), undefined, 'non-conforming: \\\' is inside the literal');
});

t.test('PREPARE, LISTEN, UNLISTEN, DEALLOCATE, DISCARD, RESET, CLOSE name their object', async (t) => {
  t.same(only('PREPARE fetch_user (int) AS SELECT $1'), { kind: 'prepare', name: 'fetch_user' });
  t.same(only('prepare "Q1" AS SELECT 1'), { kind: 'prepare', name: 'Q1' });
  t.same(only('LISTEN Jobs'), { kind: 'listen', name: 'jobs' });
  t.same(only('UNLISTEN *'), { kind: 'unlisten', name: '*' });
  t.same(only('unlisten jobs'), { kind: 'unlisten', name: 'jobs' });
  t.same(only('DEALLOCATE ALL'), { kind: 'deallocate', name: 'all' });
  t.same(only('DEALLOCATE PREPARE q'), { kind: 'deallocate', name: 'q' });
  t.same(only('DISCARD ALL'), { kind: 'discard', name: 'all' });
  t.same(only('DISCARD TEMPORARY'), { kind: 'discard', name: 'temp' });
  t.same(only('RESET ALL'), { kind: 'reset', name: 'all' });
  t.same(only('RESET search_path'), { kind: 'reset', name: 'search_path' });
  t.same(only('RESET TIME ZONE'), { kind: 'reset', name: 'timezone' });
  t.same(only('CLOSE ALL'), { kind: 'close-cursor', name: 'all' });
});

t.test('temporary objects pin, except ON COMMIT DROP', async (t) => {
  for (const sql of [
    'CREATE TEMP TABLE scratch (id int)',
    'create temporary table scratch as select 1',
    'CREATE LOCAL TEMPORARY TABLE s (id int)',
    'CREATE GLOBAL TEMP TABLE s (id int)',
    'CREATE OR REPLACE TEMP VIEW v AS SELECT 1',
    'CREATE TEMP SEQUENCE s',
    'CREATE TEMP TABLE s (id int) ON COMMIT DELETE ROWS',
    'CREATE TABLE pg_temp.s (id int)',
    'SELECT * INTO TEMP TABLE s FROM t',
    'select 1 as x into temporary s',
    'SELECT 1 INTO LOCAL TEMP s',
  ]) {
    t.same(kinds(sql), ['temp-table'], sql);
  }
});

t.test('session advisory locks pin; transaction-scoped ones do not; unlock_all is reported', async (t) => {
  t.same(only('SELECT pg_advisory_lock(42)'), { kind: 'advisory-lock', name: 'pg_advisory_lock' });
  t.same(only('select pg_try_advisory_lock(1,2)'), { kind: 'advisory-lock', name: 'pg_try_advisory_lock' });
  t.same(only('SELECT pg_catalog.pg_advisory_lock_shared(7)'), { kind: 'advisory-lock', name: 'pg_advisory_lock_shared' });
  t.same(only('SELECT PG_TRY_ADVISORY_LOCK_SHARED(7)'), { kind: 'advisory-lock', name: 'pg_try_advisory_lock_shared' });
  t.same(kinds('insert into t select 1 where pg_try_advisory_lock(3)'), ['advisory-lock']);
  t.same(only('SELECT pg_advisory_unlock_all()'), { kind: 'advisory-unlock-all', name: '' });
  t.equal(scanSqlText('select pg_advisory_lock from t'), undefined, 'a column of that name is not a call');
});

t.test('DECLARE … WITH HOLD pins; a cursor without hold does not', async (t) => {
  t.same(only('DECLARE c CURSOR WITH HOLD FOR SELECT 1'), { kind: 'with-hold-cursor', name: 'c' });
  t.same(only('declare "Big" no scroll cursor with hold for select 1'), { kind: 'with-hold-cursor', name: 'Big' });
  t.equal(scanSqlText('DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1'), undefined);
  t.equal(scanSqlText('DECLARE c CURSOR FOR SELECT 1 WITH HOLD'), undefined, 'WITH HOLD after FOR is not the option');
});

t.test('SET and SET SESSION report the parameter and the value to replay', async (t) => {
  t.same(only('SET search_path TO app, public'), { kind: 'set', name: 'search_path', value: 'app, public' });
  t.same(only("set SESSION DateStyle = 'ISO, MDY'"), { kind: 'set', name: 'datestyle', value: "'ISO, MDY'" });
  t.same(only("SET TIME ZONE 'UTC'"), { kind: 'set', name: 'timezone', value: "'UTC'" });
  t.same(only("SET NAMES 'UTF8'"), { kind: 'set', name: 'client_encoding', value: "'UTF8'" });
  t.same(only("SET SCHEMA 'app'"), { kind: 'set', name: 'search_path', value: "'app'" });
  t.same(only('SET ROLE admin'), { kind: 'set', name: 'role', value: 'admin' });
  t.same(only('SET SESSION AUTHORIZATION bob'), { kind: 'set', name: 'session_authorization', value: 'bob' });
  t.same(only('SET myapp.tenant = 7'), { kind: 'set', name: 'myapp.tenant', value: '7' });
  t.same(only('SET "Weird" = 1'), { kind: 'set', name: 'Weird', value: '1' });
  t.same(only('SET work_mem FROM CURRENT'), { kind: 'set', name: 'work_mem' });
  t.same(only('SET statement_timeout = 0 -- trailing comment'), { kind: 'set', name: 'statement_timeout', value: '0' });
  t.same(only("select set_config('search_path', 'app', false)"), { kind: 'set-config', name: 'search_path' });
  t.same(only('select set_config($1, $2, $3)'), { kind: 'set-config', name: '' });
});

t.test('every statement of a multi-statement Query is scanned', async (t) => {
  const effects = scanSqlText("SET application_name = 'a'; SELECT 1; LISTEN x; CREATE TEMP TABLE t (i int); SET LOCAL work_mem = '1MB'; SELECT pg_advisory_lock(1)");
  t.same(
    effects?.map((e) => `${e.kind}:${e.name}`),
    ['set:application_name', 'listen:x', 'temp-table:', 'advisory-lock:pg_advisory_lock'],
  );
});

t.test('Query and Parse messages are scanned in place', async (t) => {
  const q = Buffer.concat([Buffer.from('junk'), serialize.query('LISTEN jobs'), Buffer.from('more')]);
  t.same(scanQueryMessage(q, 4, q.length - 4), [{ kind: 'listen', name: 'jobs' }]);
  const p = serialize.parse({ name: 's1', text: 'SELECT pg_advisory_lock($1)', types: [20] });
  t.same(scanParseMessage(p, 0, p.length), [{ kind: 'advisory-lock', name: 'pg_advisory_lock' }]);
  const plain = serialize.parse({ name: '', text: 'SELECT 1' });
  t.equal(scanParseMessage(plain, 0, plain.length), undefined);
});

t.test('transaction-exit statements are recognised (what an aborted transaction still accepts)', async (t) => {
  const exit = (sql: string) => isTransactionExitStatement(Buffer.from(sql), 0, Buffer.byteLength(sql));
  for (const sql of ['COMMIT', 'rollback', ' /* c */ END', 'ABORT', 'ROLLBACK TO SAVEPOINT a', "PREPARE TRANSACTION 'x'"]) t.ok(exit(sql), sql);
  for (const sql of ['SELECT 1', 'BEGIN', 'PREPARE p AS SELECT 1', "SELECT 'COMMIT'"]) t.notOk(exit(sql), sql);
});

t.test('CommandComplete tags that clear or create state are recognised, others are not', async (t) => {
  const tag = (text: string) => {
    const body = Buffer.from(`${text}\0`);
    const msg = Buffer.alloc(5 + body.length);
    msg[0] = 0x43;
    msg.writeInt32BE(4 + body.length, 1);
    body.copy(msg, 5);
    return commandTagEffect(msg, 0, msg.length);
  };
  t.equal(tag('DISCARD ALL'), 'discard-all');
  t.equal(tag('DEALLOCATE ALL'), 'deallocate-all');
  t.equal(tag('DEALLOCATE'), 'deallocate');
  t.equal(tag('LISTEN'), 'listen');
  t.equal(tag('UNLISTEN'), 'unlisten');
  t.equal(tag('SET'), 'set');
  t.equal(tag('RESET'), 'reset');
  t.equal(tag('PREPARE'), 'prepare');
  t.equal(tag('CLOSE CURSOR ALL'), 'close-cursor-all');
  for (const other of ['SELECT 1', 'INSERT 0 1', 'UPDATE 3', 'DELETE 0', 'COMMIT', 'SETX', 'DISCARD', 'CREATE TABLE']) t.equal(tag(other), undefined, other);
});

t.test('property: text hidden in a literal or comment never changes the result', async (t) => {
  const statements = ['LISTEN ch', 'SELECT 1', 'SET search_path TO a', 'PREPARE p AS SELECT 1', 'SELECT pg_advisory_lock(1)', 'CREATE TEMP TABLE x (i int)'];
  const hidden = fc.constantFrom(...statements, "'", '$$', '*/', '--', ';', '"');
  t.doesNotThrow(() =>
    fc.assert(
    fc.property(fc.constantFrom(...statements), fc.array(hidden, { maxLength: 4 }), fc.constantFrom('literal', 'dollar', 'comment', 'block'), (stmt, junk, wrap) => {
      const inner = junk.join(' ');
      const wrapped =
        wrap === 'literal'
          ? `'${inner.replaceAll("'", "''")}'`
          : wrap === 'dollar'
            ? `$q$${inner}$q$`
            : wrap === 'comment'
              ? `-- ${inner.replaceAll('\n', ' ')}\n`
              : `/* ${inner.replaceAll('*/', '* /').replaceAll('/*', '/ *')} */`;
      const sql = wrap === 'literal' || wrap === 'dollar' ? `SELECT ${wrapped}; ${stmt}` : `${wrapped} ${stmt}`;
      return JSON.stringify(kinds(sql)) === JSON.stringify(kinds(stmt));
    }),
  ),
  );
});
