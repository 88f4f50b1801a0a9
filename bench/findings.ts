// What explains each kind of issue-8 target when a run misses it, and what would close it.
// Written from the profiles recorded in bench/README.md; RESULTS.md quotes the entry for every
// kind of target the run missed, next to that run's own numbers.
export type FindingKey = 'pg-throughput' | 'pg-cpu' | 'pg-prepared' | 'redis-throughput' | 'idle-postgres' | 'idle-redis' | 'tail-postgres' | 'tail-redis';

export const FINDINGS: Record<FindingKey, { title: string; text: string }> = {
  'pg-throughput': {
    title: 'Postgres TPS below PgBouncer',
    text:
      "On two shared cores pgbench, Postgres and the proxy compete for CPU, so TPS follows the proxy's CPU per transaction (next entry): where sluice spends more CPU than PgBouncer, Postgres gets less. TPC-B is hit hardest: each transaction is seven statements (BEGIN, three UPDATEs, SELECT, INSERT, END), each a round trip of two reads and two writes through the proxy. Done because of the profile: settings comparison skipped when the server already carries the client's set (interned param-set ids), upstream reads through `onread` into a slab (no per-read malloc and Readable push), no corked multi-chunk writes for tap-written replies or the login welcome, one acquire timer per queue. Would close it: fewer JavaScript steps per socket operation on the client side too (client reads into a shared buffer as the Redis side now does, with copy-on-retain for held messages), writes that bypass the Writable stream (only reachable through the deprecated `process.binding`), or a native byte path. `workers: N` helps only where cores are idle; on this 2-core machine it measured slower (bench/README.md, workers).",
  },
  'pg-cpu': {
    title: 'Postgres CPU per 1000 transactions above PgBouncer',
    text:
      "System time per transaction is PgBouncer's to within noise (the same 2 reads + 2 writes per round trip, counted with strace -c); the whole difference is user time. Node's own floor is above PgBouncer's total: the pipe-relay rows (a bare `pipe()` both ways, no parsing, no pooling) spend more CPU per 1000 `-S` transactions than PgBouncer does, and sluice now spends less than the relay. Each read costs a libuv→JavaScript callback and each write the Writable stream path, a few microseconds each, against PgBouncer's few hundred nanoseconds of C. What would close it is the list in the entry above; within Node, CPU per transaction at or below PgBouncer's is not reachable without a native byte path.",
  },
  'pg-prepared': {
    title: '-M prepared below 0.9 × direct',
    text:
      "Every renamed statement is prepared once per server connection and reused; a miss here means the run failed (see the row's notes), not a ratio.",
  },
  'redis-throughput': {
    title: 'Redis ops/s below twemproxy',
    text:
      "At pipeline 1 every reply is one write(2) to its client, which no proxy can batch; twemproxy pays the same system time. sluice's user time per op (7–10 µs) is above twemproxy's (4–5 µs): Node's Writable path per client write plus garbage collection. A Node server that only answers PING costs ~7 µs user per op here, so sluice is at Node's per-socket floor. Done: client reads into one shared buffer (`onread`), one copied output buffer per upstream per turn, one clock read per client read (bench/README.md, Redis). Would close it: writing to the socket handle without the Writable (~0.5 µs/op measured, needs the deprecated `process.binding`), or spreading clients over cores with `workers: N` on a machine with idle cores. Ratios near 1.0 swing by ±0.1 between rounds on this shared machine.",
  },
  'idle-postgres': {
    title: 'Memory per idle Postgres client above 4 KiB',
    text:
      "An idle authenticated client is its socket, a ClientSession and a framer; most of the figure is Node's own per-socket cost (~3.4 KiB for a bare socket measured the same way).",
  },
  'idle-redis': {
    title: 'Memory per idle Redis client above 3 KiB',
    text:
      "The figure is the RSS growth over the second half of the clients on a freshly started proxy, read after a full collection. Since sluice runs with --max-semi-space-size=2 (Dockerfile, npm start, the sluice command), it measured 1.5–1.8 KiB: ~1.1 KiB of objects in the old space and ~0.5 KiB of native socket. Above 3 KiB means either the young-generation cap is not in effect (check the process's flags) or something per client grew: compare the retained heap per client with v8.getHeapSpaceStatistics() as bench/README.md (\"Idle memory: the young generation\") does.",
  },
  'tail-postgres': {
    title: 'Postgres p99 above 3 × p50 at 2 000 clients',
    text:
      'With 2 000 clients on a pool of 16, the spread is the FIFO queue for a server; a miss under load comes with the same spread for PgBouncer (compare its row).',
  },
  'tail-redis': {
    title: 'Redis p99 above 3 × p50 at 2 000 clients',
    text:
      "On a quiet machine sluice measured 1.4–1.7×. Under load redis-benchmark itself spreads with 2 000 connections on two shared cores: compare the direct and twemproxy rows of the same run. Less CPU per op is what shortens sluice's turns under load.",
  },
};
