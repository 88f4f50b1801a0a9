// The RESP framers against bytes: every request and reply type found at the right boundary
// however the stream is split (every byte offset, and random splits of random values), and
// limits and garbage rejected with a protocol error instead of a stall.
import fc from 'fast-check';
import t from 'tap';
import { ProtocolError } from '../proxy/errors.js';
import { ReplyFramer, RequestFramer, type RespLimits } from '../proxy/redis/resp-framer.js';

const LIMITS: RespLimits = { maxBulkBytes: 512 * 1024 * 1024, maxArrayElements: 1024 * 1024, maxInlineBytes: 64 * 1024 };

interface Found {
  end: number;
  kind?: string;
  name?: string;
  top?: string;
}

/** Feeds `chunks` to a request framer; returns each frame's end as an offset in the whole stream. */
function frameRequests(chunks: Buffer[], limits = LIMITS): Found[] {
  const framer = new RequestFramer(limits);
  const found: Found[] = [];
  let base = 0;
  for (const chunk of chunks) {
    let pos = 0;
    while (pos < chunk.length) {
      const end = framer.next(chunk, pos);
      if (end < 0) break;
      found.push({ end: base + end, kind: framer.kind, name: framer.kind === 'array' ? framer.name : undefined });
      pos = end;
    }
    base += chunk.length;
  }
  return found;
}

function frameReplies(chunks: Buffer[]): Found[] {
  const framer = new ReplyFramer(LIMITS.maxBulkBytes);
  const found: Found[] = [];
  let base = 0;
  for (const chunk of chunks) {
    let pos = 0;
    while (pos < chunk.length) {
      const end = framer.next(chunk, pos);
      if (end < 0) break;
      found.push({ end: base + end, top: String.fromCharCode(framer.topType) });
      pos = end;
    }
    base += chunk.length;
  }
  return found;
}

function splitAt(buf: Buffer, at: number): Buffer[] {
  return [buf.subarray(0, at), buf.subarray(at)].filter((b) => b.length > 0);
}

function bytewise(buf: Buffer): Buffer[] {
  return [...buf].map((b) => Buffer.from([b]));
}

const REQUESTS: Array<{ text: string; kind: string; name?: string }> = [
  { text: '*1\r\n$4\r\nPING\r\n', kind: 'array', name: 'ping' },
  { text: '*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n', kind: 'array', name: 'set' },
  { text: '*2\r\n$3\r\nGET\r\n$0\r\n\r\n', kind: 'array', name: 'get' },
  { text: '*3\r\n$3\r\nset\r\n$1\r\nk\r\n$10\r\n\r\n*1\r\n$1\r\n\r\n', kind: 'array', name: 'set' },
  { text: 'PING\r\n', kind: 'inline' },
  { text: 'set a "b c"\n', kind: 'inline' },
  { text: '\r\n', kind: 'empty' },
  { text: '*0\r\n', kind: 'empty' },
  { text: '*-1\r\n', kind: 'empty' },
  { text: `*2\r\n$${40}\r\n${'X'.repeat(40)}\r\n$1\r\na\r\n`, kind: 'array', name: '' },
];

t.test('every request type is framed at its boundary wherever the stream is split', async (t) => {
  const stream = Buffer.from(REQUESTS.map((r) => r.text).join(''), 'latin1');
  const expected: Found[] = [];
  let offset = 0;
  for (const r of REQUESTS) {
    offset += Buffer.byteLength(r.text, 'latin1');
    expected.push({ end: offset, kind: r.kind, name: r.kind === 'array' ? r.name : undefined });
  }
  t.same(frameRequests([stream]), expected, 'whole stream');
  t.same(frameRequests(bytewise(stream)), expected, 'one byte at a time');
  let mismatches = 0;
  for (let at = 1; at < stream.length; at++) {
    if (JSON.stringify(frameRequests(splitAt(stream, at))) !== JSON.stringify(expected)) mismatches++;
  }
  t.equal(mismatches, 0, `split at each of ${stream.length - 1} offsets`);
});

const REPLIES: Array<{ text: string; top: string }> = [
  { text: '+OK\r\n', top: '+' },
  { text: '-ERR unknown command\r\n', top: '-' },
  { text: ':12345\r\n', top: ':' },
  { text: '$5\r\nhello\r\n', top: '$' },
  { text: '$-1\r\n', top: '$' },
  { text: '$0\r\n\r\n', top: '$' },
  { text: '$4\r\n\r\n\r\n\r\n', top: '$' },
  { text: '*-1\r\n', top: '*' },
  { text: '*0\r\n', top: '*' },
  { text: '*2\r\n$1\r\na\r\n*2\r\n:1\r\n*1\r\n+x\r\n', top: '*' },
  { text: '_\r\n', top: '_' },
  { text: ',3.14\r\n', top: ',' },
  { text: ',inf\r\n', top: ',' },
  { text: '#t\r\n', top: '#' },
  { text: '(3492890328409238509324850943850943825024385\r\n', top: '(' },
  { text: '!21\r\nSYNTAX invalid syntax\r\n', top: '!' },
  { text: '=15\r\ntxt:Some string\r\n', top: '=' },
  { text: '%2\r\n+first\r\n:1\r\n+second\r\n%1\r\n$1\r\nk\r\n~2\r\n:1\r\n:2\r\n', top: '%' },
  { text: '~3\r\n+a\r\n+b\r\n+c\r\n', top: '~' },
  { text: '|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.01\r\n*2\r\n:2039123\r\n:9543892\r\n', top: '*' },
  { text: '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n', top: '>' },
  { text: '$?\r\n;4\r\nHell\r\n;6\r\no worl\r\n;1\r\nd\r\n;0\r\n', top: '$' },
  { text: '*?\r\n:1\r\n*?\r\n+a\r\n.\r\n$1\r\nz\r\n.\r\n', top: '*' },
  { text: '%?\r\n+a\r\n:1\r\n.\r\n', top: '%' },
];

t.test('every RESP2 and RESP3 reply type is framed at its boundary wherever the stream is split', async (t) => {
  const stream = Buffer.from(REPLIES.map((r) => r.text).join(''), 'latin1');
  const expected: Found[] = [];
  let offset = 0;
  for (const r of REPLIES) {
    offset += Buffer.byteLength(r.text, 'latin1');
    expected.push({ end: offset, top: r.top });
  }
  t.same(frameReplies([stream]), expected, 'whole stream');
  t.same(frameReplies(bytewise(stream)), expected, 'one byte at a time');
  let mismatches = 0;
  for (let at = 1; at < stream.length; at++) {
    if (JSON.stringify(frameReplies(splitAt(stream, at))) !== JSON.stringify(expected)) mismatches++;
  }
  t.equal(mismatches, 0, `split at each of ${stream.length - 1} offsets`);
});

// Random RESP3 values, encoded, concatenated and cut at random places.
const leaf: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 10 }).map((s) => `+${s.replace(/[\r\n]/g, '')}\r\n`),
  fc.string({ maxLength: 10 }).map((s) => `-ERR ${s.replace(/[\r\n]/g, '')}\r\n`),
  fc.integer().map((n) => `:${n}\r\n`),
  fc.uint8Array({ maxLength: 40 }).map((b) => `$${b.length}\r\n${Buffer.from(b).toString('latin1')}\r\n`),
  fc.constant('$-1\r\n'),
  fc.constant('_\r\n'),
  fc.double({ noNaN: true }).map((d) => `,${d}\r\n`),
  fc.boolean().map((b) => `#${b ? 't' : 'f'}\r\n`),
);
const value: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `*${items.length}\r\n${items.join('')}`),
    fc.array(fc.tuple(tie('value'), tie('value')), { maxLength: 3 }).map((pairs) => `%${pairs.length}\r\n${pairs.map(([k, v]) => k + v).join('')}`),
    fc.array(tie('value'), { maxLength: 3 }).map((items) => `>${items.length}\r\n${items.join('')}`),
    fc.array(tie('value'), { maxLength: 3 }).map((items) => `*?\r\n${items.join('')}.\r\n`),
  ),
})).value;

t.test('random nested replies split at random offsets are framed exactly', async (t) => {
  fc.assert(
    fc.property(fc.array(value, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 6 }), (values, cuts) => {
      const stream = Buffer.from(values.join(''), 'latin1');
      const ends: number[] = [];
      let offset = 0;
      for (const v of values) {
        offset += Buffer.byteLength(v, 'latin1');
        ends.push(offset);
      }
      const points = [...new Set(cuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const chunks: Buffer[] = [];
      let last = 0;
      for (const p of points) {
        chunks.push(stream.subarray(last, p));
        last = p;
      }
      chunks.push(stream.subarray(last));
      const found = frameReplies(chunks.filter((c) => c.length > 0)).map((f) => f.end);
      return JSON.stringify(found) === JSON.stringify(ends);
    }),
    { numRuns: 500 },
  );
  t.pass('500 random streams framed exactly');
});

t.test('a big bulk string is skipped across reads without being buffered', async (t) => {
  const size = 10 * 1024 * 1024;
  const head = Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${size}\r\n`);
  const framer = new RequestFramer(LIMITS);
  t.equal(framer.next(head, 0), -1);
  const piece = Buffer.alloc(64 * 1024, 0x61);
  let fed = 0;
  while (fed + piece.length <= size) {
    if (framer.next(piece, 0) !== -1) t.fail("a piece of the value ended the frame");
    fed += piece.length;
    if (fed > 1024 * 1024) break;
  }
  const rest = Buffer.alloc(size - fed + 2, 0x61);
  rest.write('\r\n', rest.length - 2);
  t.equal(framer.next(rest, 0), rest.length, 'ends exactly after the trailing CRLF');
  t.equal(framer.name, 'set');
  const replies = new ReplyFramer(LIMITS.maxBulkBytes);
  t.equal(replies.next(Buffer.from(`$${size}\r\n`), 0), -1);
  t.equal(replies.next(Buffer.alloc(size), 0), -1);
  t.equal(replies.next(Buffer.from('\r\n'), 0), 2);
});

t.test('lengths over the configured limits and garbage are protocol errors, never a stall', async (t) => {
  const small: RespLimits = { maxBulkBytes: 100, maxArrayElements: 10, maxInlineBytes: 16 };
  const reject = (text: string, pattern: RegExp, what: string) => {
    let caught: unknown;
    try {
      frameRequests([Buffer.from(text, 'latin1')], small);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof ProtocolError && pattern.test(caught.message), `${what}: ${String(caught)}`);
  };
  reject('*1\r\n$101\r\n', /invalid bulk length/, 'bulk over max_bulk_bytes');
  reject('*11\r\n', /invalid multibulk length/, 'array over max_array_elements');
  reject('GETX aaaaaaaaaaaaaaaaaaaaaaaaaaaaa', /too big inline request/, 'inline over max_inline_bytes without a newline');
  reject('*1\r\n:5\r\n', /expected '\$', got ':'/, 'a non-bulk element');
  reject('*99999999999999999999\r\n', /invalid multibulk length/, 'a length with too many digits');
  reject('*1x\r\n', /invalid multibulk length/, 'a non-digit in a length');
  reject('\x00\x01garbage\r\n', /unexpected byte 0x00/, 'a byte that starts no RESP type');
  reject('*1\r\n$-1\r\n', /invalid bulk length/, 'a null bulk string in a request');
  t.throws(() => frameReplies([Buffer.from('?what\r\n')]), { name: 'ProtocolError' }, 'a reply starting with an unknown type byte');
  t.throws(() => frameReplies([Buffer.from('$abc\r\n')]), { name: 'ProtocolError' }, 'a reply with a bad length');
});
