// The Postgres framer against bytes: every message sequence split at every byte offset (and
// into single bytes) must come out as the same messages; bad headers are refused with 08P01-class errors.
import t from 'tap';
import type { ProtocolError } from '../proxy/errors.js';
import { Framer, type FramerOptions, type FrameSink } from '../proxy/postgres/framer.js';
import { BACKEND_TYPES, byteSet, FRONTEND_TYPES, FrontendCode, StartupCode } from '../proxy/postgres/protocol-codes.js';
import { parseStartupParams, query, startupMessage, SYNC, typed, untaggedCode } from '../proxy/postgres/wire-messages.js';

interface Collected {
  messages: Array<{ type: number; bytes: Buffer; pieces: number }>;
  errors: string[];
}

/** A sink that glues pieces back together and records how many pieces each message came in. */
function collector(framer: () => Framer, leaveStartupAfter = 1): { sink: FrameSink; out: Collected } {
  const out: Collected = { messages: [], errors: [] };
  let current: Buffer[] = [];
  let startups = 0;
  const sink: FrameSink = {
    onFrame(type, buf, start, end, first, last) {
      if (first) current = [];
      current.push(Buffer.from(buf.subarray(start, end)));
      if (last) {
        out.messages.push({ type, bytes: Buffer.concat(current), pieces: current.length });
        if (type === 0 && ++startups >= leaveStartupAfter) framer().startup = false;
      }
    },
    onFrameError(err: ProtocolError) {
      out.errors.push(err.message);
    },
  };
  return { sink, out };
}

function run(chunks: Buffer[], options: Partial<FramerOptions> = {}, leaveStartupAfter = 1): Collected {
  let framer: Framer | undefined;
  const { sink, out } = collector(() => framer as Framer, leaveStartupAfter);
  framer = new Framer(sink, {
    maxMessageBytes: 1024 * 1024,
    validTypes: FRONTEND_TYPES,
    whole: byteSet(FrontendCode.parse),
    wholeUpToBytes: 64,
    peer: 'client',
    startup: true,
    ...options,
  });
  for (const chunk of chunks) framer.push(chunk);
  return out;
}

const parse = typed(FrontendCode.parse, Buffer.concat([Buffer.from('s1\0select $1::int + 1 /* long enough to exceed the 64 byte whole limit */\0'), Buffer.from([0, 0])]));
const longQuery = query(`select '${'x'.repeat(300)}'`);
const copyData = typed(FrontendCode.copyData, Buffer.alloc(200, 7));
const stream = [untaggedCode(StartupCode.sslRequest), startupMessage({ user: 'app', database: 'db', application_name: 'x' }), query('select 1'), parse, SYNC, longQuery, copyData, typed(FrontendCode.terminate, Buffer.alloc(0))];
const whole = Buffer.concat(stream);

t.test('a message sequence split at every byte offset frames identically', async (t) => {
  const expected = run([whole], {}, 2);
  t.equal(expected.messages.length, stream.length);
  t.same(expected.errors, []);
  for (let i = 0; i < stream.length; i++) t.same(expected.messages[i].bytes, stream[i], `message ${i} intact`);
  let failures = 0;
  for (let cut = 1; cut < whole.length; cut++) {
    const got = run([whole.subarray(0, cut), whole.subarray(cut)], {}, 2);
    const same = got.errors.length === 0 && got.messages.length === stream.length && got.messages.every((m, i) => m.bytes.equals(stream[i]));
    if (!same) failures++;
  }
  t.equal(failures, 0, 'every two-piece split gives the same messages');
  for (let a = 1; a < whole.length; a += 7) {
    for (let b = a + 1; b < whole.length; b += 11) {
      const got = run([whole.subarray(0, a), whole.subarray(a, b), whole.subarray(b)], {}, 2);
      if (!(got.messages.length === stream.length && got.messages.every((m, i) => m.bytes.equals(stream[i])))) failures++;
    }
  }
  t.equal(failures, 0, 'three-piece splits too');
  const bytewise = run([...whole].map((byte) => Buffer.from([byte])), {}, 2);
  t.ok(bytewise.messages.every((m, i) => m.bytes.equals(stream[i])), 'one byte at a time');
});

t.test('long pass-through messages stream in pieces; must-decode ones arrive whole', async (t) => {
  const cut = whole.indexOf(longQuery) + 10;
  const got = run([whole.subarray(0, cut), whole.subarray(cut)], {}, 2);
  const q = got.messages.find((m) => m.bytes.equals(longQuery));
  t.equal(q?.pieces, 2, 'a long Query split in two arrives as two pieces, not reassembled');
  const parseCut = whole.indexOf(parse) + 3;
  const got2 = run([whole.subarray(0, parseCut), whole.subarray(parseCut)], {}, 2);
  t.equal(got2.messages.find((m) => m.type === FrontendCode.parse)?.pieces, 1, 'Parse is reassembled whole');
  const small = run([whole.subarray(0, whole.indexOf(SYNC) + 2), whole.subarray(whole.indexOf(SYNC) + 2)], {}, 2);
  t.equal(small.messages.find((m) => m.type === FrontendCode.sync)?.pieces, 1, 'a short message is reassembled whole');
});

t.test('the startup packet is decoded to its parameters', async (t) => {
  const packet = startupMessage({ user: 'app', database: 'db', options: '-c search_path=a' });
  const params = parseStartupParams(packet, 0, packet.length);
  t.equal(params.get('user'), 'app');
  t.equal(params.get('options'), '-c search_path=a');
});

t.test('bad headers are refused and nothing after them is delivered', async (t) => {
  const garbage = run([Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]);
  t.equal(garbage.errors.length, 1, 'an HTTP request is not a startup packet');
  const afterStartup = run([startupMessage({ user: 'a' }), Buffer.from([0x01, 0, 0, 0, 4])]);
  t.match(afterStartup.errors[0], /invalid message type 0x01/);
  const oversized = Buffer.alloc(5);
  oversized[0] = FrontendCode.query;
  oversized.writeInt32BE(0x7fffffff, 1);
  const big = run([startupMessage({ user: 'a' }), oversized, query('select 1')]);
  t.match(big.errors[0], /exceeds max_message_size/);
  t.equal(big.messages.length, 1, 'only the startup packet came through');
  const short = Buffer.from([FrontendCode.query, 0, 0, 0, 3]);
  t.match(run([startupMessage({ user: 'a' }), short]).errors[0], /invalid message length 3/);
  const hugeStartup = Buffer.alloc(8);
  hugeStartup.writeInt32BE(1_000_000, 0);
  t.match(run([hugeStartup]).errors[0], /invalid startup packet length/);
});

t.test('server messages: backend table, large DataRow streams', async (t) => {
  const row = typed(0x44, Buffer.alloc(1000, 1));
  const z = typed(0x5a, Buffer.from('I'));
  const all = Buffer.concat([row, z]);
  const badCuts: number[] = [];
  for (let cut = 1; cut < all.length; cut += 1) {
    const got = run([all.subarray(0, cut), all.subarray(cut)], { validTypes: BACKEND_TYPES, whole: byteSet(0x5a), startup: false });
    if (got.messages.length !== 2 || !got.messages[0].bytes.equals(row) || !got.messages[1].bytes.equals(z)) badCuts.push(cut);
  }
  t.same(badCuts, [], 'DataRow + ReadyForQuery framed whole at every split offset');
});
