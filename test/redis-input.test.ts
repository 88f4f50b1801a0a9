// Client input through sluice against Redis itself: random command streams, split at random
// offsets and sent by several clients at once, get byte for byte the replies Redis gives the same
// streams directly. This guards the read path of client-input.ts and client.ts: every read is a
// view of one buffer the next read reuses (so whatever sluice keeps must be a copy), the framer
// is shared between clients and handed to one whose read ends mid-request, and requests are
// copied into each upstream connection's output buffer.
import fc from 'fast-check';
import t from 'tap';
import { encodeRequest } from '../proxy/redis/resp-values.js';
import { type RedisServer, startRedis } from './harness/redis-server.js';
import { type SluiceProcess, startSluice } from './harness/sluice-process.js';
import { freePort } from './harness/tools.js';
import { WireClient } from './redis-wire.js';

let redis: RedisServer;
let sluice: SluiceProcess;
let port = 0;

t.before(async () => {
  redis = await startRedis();
  port = await freePort();
  sluice = await startSluice(`
metrics: { listen: '{{METRICS}}' }
log: { level: warn }
redis:
  - name: main
    listen: 127.0.0.1:${port}
    server: { host: 127.0.0.1, port: ${redis.port} }
    pool_size: 2
    max_dedicated_connections: 8
    timeouts: { acquire: 20s, connect: 15s }
`);
});

t.teardown(async () => {
  await sluice?.stop();
  await redis?.stop();
});

/** One request of a stream: its bytes given the client's key prefix, and whether Redis answers it. */
interface Step {
  bytes(prefix: string): Buffer;
  replies: number;
}

const value = fc.oneof(
  { weight: 8, arbitrary: fc.uint8Array({ maxLength: 300 }) },
  // Longer than one 64 KiB read: the request spans reads whatever the split.
  { weight: 1, arbitrary: fc.integer({ min: 64 * 1024, max: 200 * 1024 }).map((n) => new Uint8Array(n).fill(0x61 + (n % 26))) },
);
const key = fc.constantFrom('a', 'b', 'c');

const step: fc.Arbitrary<Step> = fc.oneof(
  key.chain((k) => value.map((v): Step => ({ bytes: (p) => encodeRequest(['SET', p + k, Buffer.from(v)]), replies: 1 }))),
  key.map((k): Step => ({ bytes: (p) => encodeRequest(['GET', p + k]), replies: 1 })),
  key.chain((k) => value.map((v): Step => ({ bytes: (p) => encodeRequest(['APPEND', p + k, Buffer.from(v)]), replies: 1 }))),
  key.map((k): Step => ({ bytes: (p) => encodeRequest(['STRLEN', p + k]), replies: 1 })),
  fc.constant<Step>({ bytes: (p) => encodeRequest(['INCR', `${p}n`]), replies: 1 }),
  fc.uint8Array({ maxLength: 100 }).map((v): Step => ({ bytes: () => encodeRequest(['ECHO', Buffer.from(v)]), replies: 1 })),
  // Inline commands and requests Redis ignores without a reply.
  fc.constant<Step>({ bytes: () => Buffer.from('PING\r\n'), replies: 1 }),
  fc.constant<Step>({ bytes: () => Buffer.from('\r\n'), replies: 0 }),
  fc.constant<Step>({ bytes: () => Buffer.from('*0\r\n'), replies: 0 }),
  // Answered by sluice after the replies before it are in: the client stalls and holds its input.
  fc.constantFrom('x', 'yy', '').map((name): Step => ({ bytes: () => encodeRequest(['CLIENT', 'SETNAME', name]), replies: 1 })),
  fc.constant<Step>({ bytes: () => encodeRequest(['CLIENT', 'GETNAME']), replies: 1 }),
  // A dedicated connection for the transaction: the client stalls until it is lent.
  fc.constant<Step>({ bytes: (p) => Buffer.concat([encodeRequest(['MULTI']), encodeRequest(['INCR', `${p}n`]), encodeRequest(['EXEC'])]), replies: 3 }),
);

/** A stream of requests and the offsets (fractions of its length) where it is cut into writes. */
const stream = fc.record({ steps: fc.array(step, { minLength: 1, maxLength: 25 }), cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 }) });

/** Sends the stream in pieces, letting each piece reach the proxy before the next, and reads every reply. */
async function run(client: WireClient, steps: Step[], cuts: number[], prefix: string): Promise<Buffer[]> {
  const bytes = Buffer.concat(steps.map((s) => s.bytes(prefix)));
  const offsets = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b);
  let from = 0;
  for (const at of [...offsets, bytes.length]) {
    if (at <= from) continue;
    client.sendRaw(bytes.subarray(from, at));
    from = at;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  const replies: Buffer[] = [];
  const expected = steps.reduce((n, s) => n + s.replies, 0);
  for (let i = 0; i < expected; i++) {
    const reply = await client.nextRaw();
    if (reply === null) throw new Error(`connection closed after ${i} of ${expected} replies`);
    replies.push(Buffer.from(reply));
  }
  return replies;
}

t.test('random command streams from three clients at once, split at random offsets, get the replies Redis gives them directly', async (t) => {
  let round = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(stream, { minLength: 3, maxLength: 3 }), async (streams) => {
      round++;
      const direct = await Promise.all(streams.map(() => WireClient.connect(redis.port)));
      const proxied = await Promise.all(streams.map(() => WireClient.connect(port)));
      try {
        const want = await Promise.all(streams.map((s, i) => run(direct[i], s.steps, [], `d${round}:${i}:`)));
        const got = await Promise.all(streams.map((s, i) => run(proxied[i], s.steps, s.cuts, `s${round}:${i}:`)));
        for (let i = 0; i < streams.length; i++) {
          if (got[i].length !== want[i].length || got[i].some((reply, j) => !reply.equals(want[i][j]))) {
            const j = got[i].findIndex((reply, k) => !reply.equals(want[i][k]));
            throw new Error(`client ${i}, reply ${j}: sluice ${JSON.stringify(got[i][j]?.toString('latin1').slice(0, 80))}, Redis ${JSON.stringify(want[i][j]?.toString('latin1').slice(0, 80))}`);
          }
        }
      } finally {
        for (const c of [...direct, ...proxied]) c.close();
      }
    }),
    { numRuns: 40 },
  );
  t.ok(round >= 40, `${round} rounds of three streams matched Redis reply for reply`);
});
