// Named prepared statements in transaction mode, against bytes: rewriting to sluice names,
// injected and synthesised replies in order, LRU eviction, failed-Parse rollback, DEALLOCATE
// ALL, unnamed pass-through, self-healing, and a model check that many clients sharing a few
// servers see exactly what a direct connection would show them.
import fc from 'fast-check';
import { serialize } from 'pg-protocol';
import t from 'tap';
import { ClientStatements, ClientStream, fromClient, ServerStatements, StatementRegistry } from '../proxy/postgres/prepared-statements.js';
import { backend, describeBackend, describeFrontend, FakeBackend, Sink } from './pg-prepared-helpers.js';

interface Client {
  statements: ClientStatements;
  stream: ClientStream;
  received: Sink;
}
interface Server {
  statements: ServerStatements;
  backend: FakeBackend;
}

function world(maxPrepared = 8) {
  const registry = new StatementRegistry();
  const client = (): Client => ({ statements: new ClientStatements(registry), stream: new ClientStream(), received: new Sink() });
  const server = (): Server => ({ statements: new ServerStatements(registry, maxPrepared), backend: new FakeBackend() });
  return { registry, client, server };
}

/** The client's messages through sluice; returns the bytes the server gets. */
function send(client: Client, server: Server, messages: Buffer[]): Buffer {
  const out = new Sink();
  for (const m of messages) fromClient(client.statements, client.stream, server.statements, m[0], m, 0, m.length, true, true, out, client.received);
  return Buffer.concat(out.chunks);
}

/** Server replies through sluice to the client. */
function deliver(client: Client, server: Server, replies: Buffer[]): void {
  for (const r of replies) server.statements.replies.onServerMessage(r[0], r, 0, r.length, true, client.received);
}

/** A whole round trip; returns [what the server got, what the client got], described. */
function roundTrip(client: Client, server: Server, messages: Buffer[]): [string[], string[]] {
  const toServer = send(client, server, messages);
  const sent = frameList(toServer).map(describeFrontend);
  deliver(client, server, server.backend.handle(toServer));
  return [sent, client.received.take().map(describeBackend)];
}

function frameList(bytes: Buffer): Buffer[] {
  const sink = new Sink();
  sink.addBuffer(bytes);
  return sink.take();
}

const P = (name: string, text: string, types: number[] = []) => serialize.parse({ name, text, types });
const B = (statement: string, portal = '') => serialize.bind({ statement, portal, values: [] });
const E = (portal = '') => serialize.execute({ portal });
const DS = (name: string) => serialize.describe({ type: 'S', name });
const CS = (name: string) => serialize.close({ type: 'S', name });
const S = () => serialize.sync();
const Q = (sql: string) => serialize.query(sql);

t.test('a named Parse goes to the server under a sluice name and the client sees its own replies', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  const [sent, got] = roundTrip(c, s, [P('s1', 'SELECT 1'), B('s1'), E(), S()]);
  const name = c.statements.sluiceName('s1')!;
  t.match(name, /^sluice_[0-9a-f]{8}_\d+$/);
  t.same(sent, [`P ${name} "SELECT 1"`, `B  ${name}`, 'E', 'S']);
  t.same(got, ['1', '2', 'D SELECT 1', 'C SELECT 1', 'Z I']);
  t.same(s.statements.names(), [name]);
  t.ok(s.statements.replies.idle);
});

t.test('a second client with the same text and types shares the statement: ParseComplete is synthesised in order', async (t) => {
  const w = world();
  const a = w.client();
  const b = w.client();
  const s = w.server();
  roundTrip(a, s, [P('a1', 'SELECT $1', [23]), S()]);
  const [sent, got] = roundTrip(b, s, [P('other_name', 'SELECT $1', [23]), B('other_name'), E(), S()]);
  const name = a.statements.sluiceName('a1')!;
  t.equal(b.statements.sluiceName('other_name'), name, 'same sluice name for the same text and types');
  t.same(sent, [`B  ${name}`, 'E', 'S'], 'no Parse reaches the server');
  t.same(got, ['1', '2', 'D SELECT $1', 'C SELECT 1', 'Z I'], 'ParseComplete first, as if the server had sent it');
});

t.test('a synthesised ParseComplete waits for the replies the server still owes before it', async (t) => {
  const w = world();
  const a = w.client();
  const s = w.server();
  roundTrip(a, s, [P('x', 'SELECT 7'), S()]);
  // a pipeline: Bind/Execute of another statement, then a Parse sluice answers itself
  const toServer = send(a, s, [P('y', 'SELECT 8'), B('y'), E(), P('z', 'SELECT 7'), S()]);
  t.same(a.received.take(), [], 'nothing written before the server answers');
  deliver(a, s, s.backend.handle(toServer));
  t.same(a.received.take().map(describeBackend), ['1', '2', 'D SELECT 8', 'C SELECT 1', '1', 'Z I']);
});

t.test('different parameter types are different statements', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('a', 'SELECT $1', [23]), P('b', 'SELECT $1', [20]), P('c', 'SELECT $1'), S()]);
  const names = new Set(['a', 'b', 'c'].map((n) => c.statements.sluiceName(n)));
  t.equal(names.size, 3);
  t.equal(w.registry.size, 3);
});

t.test('a Bind on a server lacking the statement injects its Parse and swallows the ParseComplete', async (t) => {
  const w = world();
  const c = w.client();
  const s1 = w.server();
  const s2 = w.server();
  roundTrip(c, s1, [P('q', 'SELECT 42'), S()]);
  const name = c.statements.sluiceName('q')!;
  const [sent, got] = roundTrip(c, s2, [B('q'), E(), S()]);
  t.same(sent, [`P ${name} "SELECT 42"`, `B  ${name}`, 'E', 'S']);
  t.same(got, ['2', 'D SELECT 42', 'C SELECT 1', 'Z I'], 'the client never sees the injected ParseComplete');
  t.ok(s2.statements.has(name));
});

t.test('a standalone Describe of a statement works on a server that never saw it (supavisor #1174)', async (t) => {
  const w = world();
  const c = w.client();
  const s1 = w.server();
  const s2 = w.server();
  roundTrip(c, s1, [P('d', 'SELECT 9'), S()]);
  const [sent, got] = roundTrip(c, s2, [DS('d'), S()]);
  const name = c.statements.sluiceName('d')!;
  t.same(sent, [`P ${name} "SELECT 9"`, `D S ${name}`, 'S']);
  t.same(got, ['t', 'T SELECT 9', 'Z I']);
});

t.test('unnamed statements, portals and unknown names pass through byte for byte', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  const messages = [P('', 'SELECT 1'), B('', 'p1'), serialize.describe({ type: 'P', name: 'p1' }), E('p1'), serialize.close({ type: 'P', name: 'p1' }), DS(''), S()];
  t.same(send(c, s, messages), Buffer.concat(messages));
  const unknown = [B('never_parsed'), E(), S()];
  const toServer = send(c, s, unknown);
  t.same(toServer, Buffer.concat(unknown), 'an unknown name is left for the server to reject');
  deliver(c, s, s.backend.handle(toServer));
  t.same(c.received.take().map(describeBackend).slice(-2), ['E 26000 prepared statement "never_parsed" does not exist', 'Z I']);
});

t.test('past max_prepared_statements the least recently used is closed at the next batch boundary', async (t) => {
  const w = world(2);
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('a', 'SELECT 1'), P('b', 'SELECT 2'), S()]);
  const [a, b] = [c.statements.sluiceName('a')!, c.statements.sluiceName('b')!];
  roundTrip(c, s, [B('a'), E(), S()]); // a is now the most recently used
  const [sent, got] = roundTrip(c, s, [P('c', 'SELECT 3'), S()]);
  const cName = c.statements.sluiceName('c')!;
  t.same(sent, [`C S ${b}`, `P ${cName} "SELECT 3"`, 'S'], 'b evicted; its Close goes first in the batch');
  t.same(got, ['1', 'Z I'], 'the CloseComplete is swallowed');
  t.same(s.statements.names(), [a, cName]);
  t.same([...s.backend.statements.keys()].sort(), [a, cName].sort(), "sluice's view matches the server's");
  // evicted mid-batch: the Close waits for the next batch
  const [sent2] = roundTrip(c, s, [B('a'), E(), P('d', 'SELECT 4'), S()]);
  const dName = c.statements.sluiceName('d')!;
  t.same(sent2, [`B  ${a}`, 'E', `P ${dName} "SELECT 4"`, 'S']);
  t.same(s.statements.closesOwed.map((x) => x.statement.name), [cName]);
  const [sent3] = roundTrip(c, s, [B('b'), E(), S()]);
  t.same(sent3.slice(0, 2), [`C S ${cName}`, `C S ${a}`], 'owed Close first; then b needs room again');
  t.same(sent3.slice(2), [`P ${b} "SELECT 2"`, `B  ${b}`, 'E', 'S']);
  t.same([...s.backend.statements.keys()].sort(), s.statements.names().sort());
});

t.test('a statement evicted and wanted again before its Close went out is simply kept', async (t) => {
  const w = world(1);
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('a', 'SELECT 1'), S()]);
  const a = c.statements.sluiceName('a')!;
  const [sent] = roundTrip(c, s, [B('a'), E(), P('b', 'SELECT 2'), B('a'), E(), S()]);
  const b = c.statements.sluiceName('b')!;
  t.same(sent, [`B  ${a}`, 'E', `P ${b} "SELECT 2"`, `B  ${a}`, 'E', 'S'], 'no Parse of a: the server still has it');
  t.same([...s.backend.statements.keys()].sort(), [a, b].sort());
  t.same(s.statements.closesOwed.map((x) => x.statement.name), [b]);
});

t.test('a failed Parse leaves no mapping behind, and the name can be parsed again (supavisor #1175, odyssey #1361)', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  const [, got] = roundTrip(c, s, [P('s1', 'SELECT BAD'), B('s1'), E(), S()]);
  t.same(got, ['E 42601 syntax error at or near "BAD"', 'Z I']);
  t.equal(c.statements.sluiceName('s1'), undefined);
  t.same(s.statements.names(), []);
  const [, again] = roundTrip(c, s, [P('s1', 'SELECT 1'), B('s1'), E(), S()]);
  t.same(again, ['1', '2', 'D SELECT 1', 'C SELECT 1', 'Z I']);
  t.equal(w.registry.size, 1, 'the failed text is not kept');
});

t.test('after an error the server skips to Sync: a synthesised ParseComplete there is never written and its mapping is undone', async (t) => {
  const w = world();
  const a = w.client();
  const s = w.server();
  roundTrip(a, s, [P('x', 'SELECT 5'), S()]);
  const [, got] = roundTrip(a, s, [B('missing'), P('y', 'SELECT 5'), S()]);
  t.same(got, ['E 26000 prepared statement "missing" does not exist', 'Z I']);
  t.equal(a.statements.sluiceName('y'), undefined, 'y was skipped, as on a direct connection');
});

t.test('Close of a statement is answered locally, the server keeps it, and the name can be re-parsed with other text', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('n', 'SELECT 1'), S()]);
  const first = c.statements.sluiceName('n')!;
  const [sent, got] = roundTrip(c, s, [CS('n'), P('n', 'SELECT 2'), B('n'), E(), S()]);
  const second = c.statements.sluiceName('n')!;
  t.not(second, first);
  t.same(sent, [`P ${second} "SELECT 2"`, `B  ${second}`, 'E', 'S'], 'no Close reaches the server');
  t.same(got, ['3', '1', '2', 'D SELECT 2', 'C SELECT 1', 'Z I']);
  t.ok(s.statements.has(first), 'the server keeps the first for other clients');
});

t.test('DEALLOCATE ALL clears the client map and the server cache', async (t) => {
  const w = world();
  const c = w.client();
  const other = w.client();
  const s = w.server();
  roundTrip(c, s, [P('a', 'SELECT 1'), P('b', 'SELECT 2'), S()]);
  roundTrip(other, s, [P('o', 'SELECT 3'), S()]);
  const [, got] = roundTrip(c, s, [Q('DEALLOCATE ALL')]);
  t.same(got, ['C DEALLOCATE ALL', 'Z I']);
  t.equal(c.statements.names.size, 0);
  t.same(s.statements.names(), [], "every statement on that server is gone, other clients' too");
  const [, bind] = roundTrip(c, s, [B('a'), E(), S()]);
  t.same(bind, ['E 26000 prepared statement "a" does not exist', 'Z I'], 'as on a direct connection');
  const [sent, again] = roundTrip(other, s, [B('o'), E(), S()]);
  t.equal(sent[0], `P ${other.statements.sluiceName('o')} "SELECT 3"`, "the other client's statement is prepared again");
  t.same(again, ['2', 'D SELECT 3', 'C SELECT 1', 'Z I']);
});

t.test('Parses pipelined after DEALLOCATE ALL survive it', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('old', 'SELECT 1'), S()]);
  const toServer = send(c, s, [Q('DEALLOCATE ALL'), P('new', 'SELECT 2'), S()]);
  deliver(c, s, s.backend.handle(toServer));
  t.same([...c.statements.names.keys()], ['new']);
  t.same(s.statements.names(), [c.statements.sluiceName('new')]);
});

t.test('a second Parse of a name in use fails with 42P05 naming the client name', async (t) => {
  const w = world();
  const c = w.client();
  const s1 = w.server();
  const s2 = w.server();
  roundTrip(c, s1, [P('dup', 'SELECT 1'), S()]);
  const [, got] = roundTrip(c, s2, [P('dup', 'SELECT 2'), S()]);
  t.same(got, ['E 42P05 prepared statement "dup" already exists', 'Z I']);
  const [, run] = roundTrip(c, s2, [B('dup'), E(), S()]);
  t.same(run, ['2', 'D SELECT 1', 'C SELECT 1', 'Z I'], 'the first statement is still the one that runs');
});

t.test('in an aborted transaction a Parse goes to the server (25P02), except COMMIT/ROLLBACK text', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('sel', 'SELECT 1'), P('rb', 'ROLLBACK'), S()]);
  const other = w.client();
  // the server is now in a failed transaction block
  send(other, s, [S()]);
  deliver(other, s, [backend.readyForQuery('E')]);
  other.received.take();
  const toServer = frameList(send(other, s, [P('o', 'SELECT 1'), S()])).map(describeFrontend);
  t.same(toServer, [`P ${c.statements.sluiceName('sel')} "SELECT 1"`, 'S'], 'sent for the server to refuse');
  deliver(other, s, [backend.error('25P02', 'current transaction is aborted, commands ignored until end of transaction block'), backend.readyForQuery('E')]);
  t.same(other.received.take().map(describeBackend), ['E 25P02 current transaction is aborted, commands ignored until end of transaction block', 'Z E']);
  t.equal(other.statements.sluiceName('o'), undefined, 'no mapping left');
  t.ok(s.statements.has(c.statements.sluiceName('sel')!), 'the server still has the statement');
  const exit = frameList(send(other, s, [P('r', 'ROLLBACK'), S()])).map(describeFrontend);
  t.same(exit, ['S'], 'ROLLBACK is accepted in an aborted transaction: answered locally');
  deliver(other, s, [backend.readyForQuery('E')]);
  t.same(other.received.take().map(describeBackend), ['1', 'Z E']);
});

t.test('cached plan must not change result type (0A000): the name is retired and the next use prepares a fresh one', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('q', 'SELECT * FROM t'), S()]);
  const stale = c.statements.sluiceName('q')!;
  send(c, s, [B('q'), E(), S()]);
  deliver(c, s, [backend.error('0A000', 'cached plan must not change result type'), backend.readyForQuery('I')]);
  t.same(c.received.take().map(describeBackend), ['E 0A000 cached plan must not change result type', 'Z I'], 'passed through');
  t.same(s.statements.lastHeal, { sqlstate: '0A000', statement: stale, clientName: 'q', retrySafe: true });
  t.notOk(s.statements.has(stale));
  const sent = frameList(send(c, s, [B('q'), E(), S()])).map(describeFrontend);
  const fresh = c.statements.sluiceName('q')!;
  t.not(fresh, stale);
  t.same(sent, [`C S ${stale}`, `P ${fresh} "SELECT * FROM t"`, `B  ${fresh}`, 'E', 'S'], 'the stale one is closed, the text prepared anew');
  const other = w.client();
  roundTrip(other, s, [S()]);
  send(other, s, [P('q2', 'SELECT * FROM t'), S()]);
  t.equal(other.statements.sluiceName('q2'), fresh, 'new clients get the fresh name too');
});

t.test('26000 on a sluice name (the server lost it) drops it from the cache and names the client statement', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('q', 'SELECT 1'), S()]);
  const name = c.statements.sluiceName('q')!;
  s.backend.statements.clear(); // someone deallocated it behind sluice's back
  const [, got] = roundTrip(c, s, [B('q'), E(), S()]);
  t.same(got, ['E 26000 prepared statement "q" does not exist', 'Z I']);
  t.notOk(s.statements.has(name));
  const [sent, again] = roundTrip(c, s, [B('q'), E(), S()]);
  t.equal(sent[0], `P ${name} "SELECT 1"`, 'prepared again on the next try');
  t.same(again, ['2', 'D SELECT 1', 'C SELECT 1', 'Z I']);
});

t.test('retry is reported unsafe once a result reached the client or inside a transaction block', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('q', 'SELECT 1'), S()]);
  send(c, s, [B('q'), E(), B('q'), E(), S()]);
  deliver(c, s, [backend.bindComplete(), backend.dataRow('x'), backend.commandComplete('SELECT 1'), backend.error('0A000', 'cached plan must not change result type'), backend.readyForQuery('I')]);
  t.equal(s.statements.lastHeal?.retrySafe, false);
});

t.test('a Bind arriving in pieces is rewritten once its names are in, the rest streams through', async (t) => {
  const w = world();
  const c = w.client();
  const s = w.server();
  roundTrip(c, s, [P('big', 'SELECT $1::bytea', [17])]);
  roundTrip(c, s, [S()]);
  const bind = serialize.bind({ statement: 'big', values: [Buffer.alloc(3000, 7)] });
  const out = new Sink();
  // pieces: header only, then a few bytes, then the rest
  const cuts = [0, 5, 8, bind.length];
  for (let i = 0; i < cuts.length - 1; i++) {
    fromClient(c.statements, c.stream, s.statements, bind[0], bind, cuts[i], cuts[i + 1], i === 0, i === cuts.length - 2, out, c.received);
  }
  const rewritten = Buffer.concat(out.chunks);
  const name = c.statements.sluiceName('big')!;
  const expected = serialize.bind({ statement: name, values: [Buffer.alloc(3000, 7)] });
  t.same(rewritten, expected);
});

t.test('property: a rewritten Bind maps back to the original bytes', async (t) => {
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 20 }).filter((x) => !x.includes('\0')), fc.string({ maxLength: 10 }).filter((x) => !x.includes('\0')), fc.array(fc.string(), { maxLength: 3 }), (name, portal, values) => {
        const w = world();
        const c = w.client();
        const s = w.server();
        send(c, s, [P(name, 'SELECT 1')]);
        const original = serialize.bind({ statement: name, portal, values });
        const sink = new Sink();
        fromClient(c.statements, c.stream, s.statements, original[0], original, 0, original.length, true, true, sink, c.received);
        const rewritten = Buffer.concat(sink.chunks);
        const sluice = c.statements.sluiceName(name)!;
        const back = serialize.bind({ statement: name, portal, values });
        return rewritten.equals(serialize.bind({ statement: sluice, portal, values })) && back.equals(original);
      }),
    ),
  );
});

t.test('property: many clients over few small-cache servers see exactly what direct connections show them', async (t) => {
  const names = ['a', 'b', 'c'];
  const texts = ['SELECT 1', 'SELECT 2', 'SELECT 3', 'SELECT BAD'];
  const op = fc.oneof(
    fc.record({ k: fc.constant('parse' as const), name: fc.constantFrom(...names), text: fc.constantFrom(...texts) }),
    fc.record({ k: fc.constant('bind' as const), name: fc.constantFrom(...names, '') }),
    fc.record({ k: fc.constant('describe' as const), name: fc.constantFrom(...names) }),
    fc.record({ k: fc.constant('close' as const), name: fc.constantFrom(...names) }),
    fc.record({ k: fc.constant('deallocate' as const) }),
    // a Sync inside the batch: a pipeline of several Sync-terminated batches on one server
    fc.record({ k: fc.constant('sync' as const) }),
  );
  const batch = fc.record({ client: fc.nat(2), server: fc.nat(1), ops: fc.array(op, { minLength: 1, maxLength: 8 }) });
  const toMessages = (ops: { k: string; name?: string; text?: string }[]) =>
    ops.flatMap((o) => {
      switch (o.k) {
        case 'parse':
          return [P(o.name!, o.text!)];
        case 'bind':
          return [B(o.name!), E()];
        case 'describe':
          return [DS(o.name!)];
        case 'close':
          return [CS(o.name!)];
        case 'sync':
          return [S()];
        default:
          return [Q('DEALLOCATE ALL')];
      }
    });
  t.doesNotThrow(() =>
    fc.assert(
      fc.property(fc.array(batch, { minLength: 1, maxLength: 25 }), fc.integer({ min: 1, max: 3 }), (batches, maxPrepared) => {
        const w = world(maxPrepared);
        const clients = [w.client(), w.client(), w.client()];
        const direct = [new FakeBackend(), new FakeBackend(), new FakeBackend()];
        const servers = [w.server(), w.server()];
        for (const { client, server, ops } of batches) {
          const messages = [...toMessages(ops), S()];
          const expected = direct[client].handle(Buffer.concat(messages)).map(describeBackend);
          // Known limit: when a batch fails, batches pipelined behind it were rewritten before the
          // error was seen, and may fail differently (another error) than on a direct connection.
          const firstError = expected.findIndex((r) => r.startsWith('E'));
          if (firstError >= 0 && expected.slice(firstError).filter((r) => r.startsWith('Z')).length > 1) break;
          const [, got] = roundTrip(clients[client], servers[server], messages);
          if (JSON.stringify(got) !== JSON.stringify(expected)) throw new Error(`client ${client} on server ${server}: ${JSON.stringify(ops)}\n got ${JSON.stringify(got)}\nwant ${JSON.stringify(expected)}`);
          for (const s of servers) {
            const view = [...s.statements.names(), ...s.statements.closesOwed.map((x) => x.statement.name)].sort();
            const real = [...s.backend.statements.keys()].filter((n) => n.startsWith('sluice_')).sort();
            if (JSON.stringify(view) !== JSON.stringify(real)) throw new Error(`cache ${view} != server ${real}`);
            if (s.statements.names().length > maxPrepared) throw new Error('cache over its bound');
          }
        }
        // every client name resolves to one sluice name per text
        const byText = new Map<string, string>();
        for (const c of clients) {
          for (const entry of c.statements.names.values()) {
            const text = entry.statement.key;
            if (byText.has(text) && byText.get(text) !== entry.statement.name) throw new Error('two sluice names for one text');
            byText.set(text, entry.statement.name);
          }
        }
        for (const c of clients) c.statements.close();
        for (const s of servers) s.statements.close();
        if (w.registry.size !== 0) throw new Error(`registry keeps ${w.registry.size} statements nobody uses`);
        return true;
      }),
      { numRuns: Number(process.env.SLUICE_FC_RUNS ?? 300) },
    ),
  );
});
