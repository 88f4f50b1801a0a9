// Pin decisions from SQL, and the issue-7 tap against a fake link: what pins and what does not,
// session mode untouched, and a server left mid-request has its statements closed before reuse.
import { serialize } from 'pg-protocol';
import t from 'tap';
import { postgresListenerSchema } from '../config/schema.js';
import { firstPinReason, pinReasonOf } from '../proxy/postgres/session-state.js';
import type { TapLink } from '../proxy/postgres/message-tap.js';
import { createSessionStateTap, type SessionStateTap } from '../proxy/postgres/session-state-tap.js';
import { scanSqlText } from '../proxy/postgres/sql-scan.js';
import { backend, describeBackend, describeFrontend, Sink } from './pg-prepared-helpers.js';

t.test('what pins in transaction mode, and what the pooler replays instead', async (t) => {
  const reason = (sql: string) => firstPinReason(scanSqlText(sql));
  t.equal(reason('LISTEN jobs'), 'listen');
  t.equal(reason('PREPARE p AS SELECT 1'), 'prepare');
  t.equal(reason('CREATE TEMP TABLE x (i int)'), 'temp-table');
  t.equal(reason('SELECT pg_advisory_lock(1)'), 'advisory-lock');
  t.equal(reason('DECLARE c CURSOR WITH HOLD FOR SELECT 1'), 'with-hold-cursor');
  t.equal(reason('SET search_path TO app'), 'set', 'search_path is not reported before PostgreSQL 18: pin');
  t.equal(reason('SET statement_timeout = 5'), 'set');
  t.equal(reason("SELECT set_config('app.user', '7', false)"), 'set-config');
  t.equal(reason("SET application_name = 'x'"), undefined, 'reported parameters are replayed, not pinned');
  t.equal(reason("SET TIME ZONE 'UTC'"), undefined);
  t.equal(reason('SET LOCAL statement_timeout = 5'), undefined);
  t.equal(reason('SELECT pg_advisory_xact_lock(1)'), undefined);
  t.equal(reason('UNLISTEN *'), undefined);
  t.equal(reason('SELECT 1'), undefined);
  t.equal(pinReasonOf({ kind: 'set', name: 'work_mem', value: '1MB' }, new Set(['work_mem'])), undefined, 'the replayed set is the caller’s');
});

class FakeLink implements TapLink {
  database = 'postgres';
  user = 'app';
  mode: 'session' | 'transaction' | 'statement' = 'transaction';
  serverId: number | undefined;
  readonly clientSink = new Sink();
  readonly serverSink = new Sink();
  pendingSyncs = 0;
  readonly pins: string[] = [];
  readonly unpins: string[] = [];
  readonly counted: string[] = [];
  readonly errors: string[] = [];
  toClient(bytes: Buffer): void {
    this.clientSink.addBuffer(bytes);
  }
  toServer(bytes: Buffer): void {
    this.serverSink.addBuffer(bytes);
  }
  countSent(type: number): void {
    this.counted.push(String.fromCharCode(type));
  }
  pin(reason: string): void {
    this.pins.push(reason);
  }
  unpin(reason: string): void {
    this.unpins.push(reason);
  }
  error(_severity: string, sqlstate: string): void {
    this.errors.push(sqlstate);
  }
}

function tapFor(overrides: Record<string, unknown> = {}): SessionStateTap {
  const config = postgresListenerSchema.parse({ name: 'pg', listen: '127.0.0.1:6432', server: { host: '127.0.0.1' }, ...overrides });
  const tap = createSessionStateTap(config);
  if (!tap) throw new Error('no tap');
  return tap;
}

const send = (tap: SessionStateTap, link: FakeLink, messages: Buffer[]) => {
  for (const m of messages) {
    if (!tap.fromClient(link, m[0], m, 0, m.length, true)) link.serverSink.addBuffer(m);
  }
  return link.serverSink.take().map(describeFrontend);
};
const reply = (tap: SessionStateTap, link: FakeLink, messages: Buffer[]) => {
  for (const m of messages) {
    if (!tap.fromServer(link, m[0], m, 0, m.length, true)) link.clientSink.addBuffer(m);
  }
  return link.clientSink.take().map(describeBackend);
};

t.test('the tap pins on session state and renames statements per server', async (t) => {
  const tap = tapFor();
  const link = new FakeLink();
  link.serverId = 1;
  t.same(send(tap, link, [serialize.query("SET application_name = 'a'")]), ['Q "SET application_name = \'a\'"']);
  t.same(link.pins, []);
  send(tap, link, [serialize.query('LISTEN jobs')]);
  t.same(link.pins, ['listen']);
  const sent = send(tap, link, [serialize.parse({ name: 's', text: 'select 1' }), serialize.sync()]);
  t.match(sent[0], /^P sluice_[0-9a-f]{8}_\d+ "select 1"$/);
  t.same(reply(tap, link, [backend.commandComplete('SET'), backend.readyForQuery('I'), backend.commandComplete('LISTEN'), backend.readyForQuery('I'), backend.parseComplete(), backend.readyForQuery('I')]), [
    'C SET',
    'Z I',
    'C LISTEN',
    'Z I',
    '1',
    'Z I',
  ]);
});

t.test('session mode and disabled features leave traffic alone', async (t) => {
  const session = createSessionStateTap(postgresListenerSchema.parse({ name: 'pg', listen: '127.0.0.1:6432', server: { host: 'h' }, pool_mode: 'session' }))!;
  const inSession = new FakeLink();
  inSession.mode = 'session';
  inSession.serverId = 9;
  const listen = serialize.query('LISTEN x');
  t.equal(session.fromClient(inSession, listen[0], listen, 0, listen.length, true), false, 'session mode: untouched');
  t.same(inSession.pins, [], 'and never pinned by the tap (the session is pinned already)');
  t.equal(createSessionStateTap(postgresListenerSchema.parse({ name: 'pg', listen: '127.0.0.1:6432', server: { host: 'h' }, prepared_statements: false, pin_on_session_state: false })), undefined);
  const tap = tapFor({ prepared_statements: false });
  const link = new FakeLink();
  link.serverId = 1;
  const parse = serialize.parse({ name: 's', text: 'LISTEN x' });
  t.equal(tap.fromClient(link, parse[0], parse, 0, parse.length, true), false, 'not rewritten');
  t.same(link.pins, ['listen'], 'but still pinned (a Parse text is scanned too)');
  const off = tapFor({ pin_on_session_state: false });
  const other = new FakeLink();
  other.serverId = 2;
  send(off, other, [serialize.query('LISTEN x')]);
  t.same(other.pins, [], 'pin_on_session_state: false never pins');
});

t.test('a server its client left mid-request gets every statement closed before it is used again', async (t) => {
  const tap = tapFor();
  const first = new FakeLink();
  first.serverId = 7;
  send(tap, first, [serialize.parse({ name: 'a', text: 'select 1' }), serialize.sync()]);
  reply(tap, first, [backend.parseComplete(), backend.readyForQuery('I')]);
  const name = tap.statementsOf(7)!.names()[0];
  send(tap, first, [serialize.parse({ name: 'b', text: 'select 2' }), serialize.bind({ statement: 'b' }), serialize.execute({}), serialize.sync()]);
  // the client leaves; the pooler rolls the server back and reads the replies without the tap
  const next = new FakeLink();
  next.serverId = 7;
  tap.serverAssigned(next);
  const sent = send(tap, next, [serialize.parse({ name: 'x', text: 'select 1' }), serialize.sync()]);
  t.equal(sent[0], `C S ${name}`, 'closed first');
  t.equal(sent.filter((m) => m.startsWith('C S')).length, 2, 'both statements, whatever became of the second');
  t.equal(sent.at(-2), `P ${name} "select 1"`, 'then prepared again');
});

t.test('messages that arrive before the client holds a server wait, then go out rewritten for the server it gets', async (t) => {
  const tap = tapFor();
  const link = new FakeLink();
  const messages = [serialize.parse({ name: 's', text: 'select 1' }), serialize.bind({ statement: 's' }), serialize.execute({}), serialize.sync()];
  t.same(send(tap, link, messages), [], 'nothing yet (a zero-length placeholder makes the session acquire)');
  t.same(link.counted, ['P', 'B', 'E', 'S'], 'counted as they arrive');
  link.serverId = 3;
  tap.serverAssigned(link);
  const sent = link.serverSink.take().map(describeFrontend);
  t.match(sent, [/^P sluice_\w+ "select 1"$/, /^B {2}sluice_\w+$/, 'E', 'S']);
  t.same(reply(tap, link, [backend.parseComplete(), backend.bindComplete(), backend.dataRow('1'), backend.commandComplete('SELECT 1'), backend.readyForQuery('I')]), ['1', '2', 'D 1', 'C SELECT 1', 'Z I']);
  tap.serverReleased(link);
  link.serverId = undefined;
  send(tap, link, [serialize.parse({ name: 't', text: 'select 1' }), serialize.bind({ statement: 't' }), serialize.execute({}), serialize.sync()]);
  link.serverId = 3;
  tap.serverAssigned(link);
  t.match(link.serverSink.take().map(describeFrontend), [/^B {2}sluice_\w+$/, 'E', 'S'], 'same server: the statement is already there');
  t.same(link.clientSink.take().map(describeBackend), ['1'], 'its ParseComplete answered at once');
});

t.test('pins are a set: a removal ends only older state, only once it took effect, and only at idle', async (t) => {
  const tap = tapFor();
  const link = new FakeLink();
  link.serverId = 4;
  const run = (sql: string, replies: Buffer[]) => {
    send(tap, link, [serialize.query(sql)]);
    link.pendingSyncs++;
    for (const r of replies) {
      if (r[0] === 0x5a) link.pendingSyncs--;
      if (!tap.fromServer(link, r[0], r, 0, r.length, true)) link.clientSink.addBuffer(r);
    }
    link.clientSink.take();
  };
  run('LISTEN a', [backend.commandComplete('LISTEN'), backend.readyForQuery('I')]);
  run('SELECT pg_advisory_lock(1)', [backend.dataRow('x'), backend.commandComplete('SELECT 1'), backend.readyForQuery('I')]);
  t.same(link.pins, ['listen', 'advisory-lock']);
  t.same(tap.pinReasons(link).sort(), ['advisory-lock', 'listen']);
  run('UNLISTEN *', [backend.commandComplete('UNLISTEN'), backend.readyForQuery('I')]);
  t.same(tap.pinReasons(link), ['advisory-lock'], 'the lock still pins');
  t.same(link.unpins, []);
  // pipelined: the removal's ReadyForQuery comes before the later LISTEN's
  send(tap, link, [serialize.query('SELECT pg_advisory_unlock_all()')]);
  link.pendingSyncs++;
  send(tap, link, [serialize.query('LISTEN b')]);
  link.pendingSyncs++;
  for (const r of [backend.commandComplete('SELECT 1'), backend.readyForQuery('I'), backend.commandComplete('LISTEN'), backend.readyForQuery('I')]) {
    if (r[0] === 0x5a) link.pendingSyncs--;
    tap.fromServer(link, r[0], r, 0, r.length, true);
  }
  t.same(tap.pinReasons(link), ['listen'], 'LISTEN b came after the unlock: it pins');
  t.same(link.unpins, []);
  run('BEGIN', [backend.commandComplete('BEGIN'), backend.readyForQuery('T')]);
  run('UNLISTEN b', [backend.commandComplete('UNLISTEN'), backend.readyForQuery('T')]);
  t.same(link.unpins, [], 'not before the transaction ends');
  run('COMMIT', [backend.commandComplete('COMMIT'), backend.readyForQuery('I')]);
  t.same(link.unpins, ['unlisten'], 'unpinned once it committed');
  t.same(tap.pinReasons(link), []);
  run('SET work_mem TO 64', [backend.commandComplete('SET'), backend.readyForQuery('I')]);
  run('SET work_mem TO DEFAULT', [backend.commandComplete('SET'), backend.readyForQuery('I')]);
  t.same(link.unpins, ['unlisten', 'reset'], 'SET … TO DEFAULT is a RESET');
  run("SET role TO 'x'", [backend.commandComplete('SET'), backend.readyForQuery('I')]);
  run('RESET ALL', [backend.commandComplete('RESET'), backend.readyForQuery('I')]);
  t.same(tap.pinReasons(link), ['set'], 'RESET ALL leaves the role alone, so it still pins');
});
