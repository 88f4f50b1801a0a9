// The arithmetic of `workers` > 1, without processes: the config rule that every split bound
// is at least the worker count, the split itself (shares sum to exactly the configured bound),
// and the merge of per-worker snapshots that GET /status serves.
import t from 'tap';
import fc from 'fast-check';
import { ConfigError, parseConfig } from '../config/load.js';
import { shareOf, workerConfig } from '../config/worker-share.js';
import { mergeSnapshots } from '../metrics/cluster-aggregate.js';
import type { ListenerSnapshot } from '../proxy/listener.js';

function problemsOf(yaml: string): string[] {
  try {
    parseConfig(yaml, 'test', {});
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

t.test('workers defaults to 1, and must be a whole number from 1', async (t) => {
  t.equal(parseConfig('{}', 'test', {}).workers, 1);
  t.same(problemsOf('workers: 0'), ['workers: must be >= 1, got 0']);
  t.match(problemsOf('workers: 1.5')[0], /^workers: /);
});

t.test('every bound that is split must be at least workers, each named by its path', async (t) => {
  const problems = problemsOf(`
workers: 3
postgres:
  - { name: a, listen: 127.0.0.1:7000, server: { host: h }, pool_size: 2, max_client_connections: 2 }
  - { name: b, listen: 127.0.0.1:7001, server: { host: h }, pool_size: 3 }
redis:
  - { name: c, listen: 127.0.0.1:7002, server: { host: h }, pool_size: 1, max_dedicated_connections: 2, max_client_connections: 1 }
  - { name: d, listen: 127.0.0.1:7003, server: { host: h }, pool_size: 3, max_dedicated_connections: 0 }
`);
  t.same(problems.sort(), [
    'postgres[0].max_client_connections: must be >= workers (3) so every worker gets a share, got 2',
    'postgres[0].pool_size: must be >= workers (3) so every worker gets a share, got 2',
    'redis[0].max_client_connections: must be >= workers (3) so every worker gets a share, got 1',
    'redis[0].max_dedicated_connections: must be >= workers (3) so every worker gets a share, got 2',
    'redis[0].pool_size: must be >= workers (3) so every worker gets a share, got 1',
  ]);
  t.same(problemsOf('workers: 1\npostgres:\n  - { name: a, listen: 127.0.0.1:7000, server: { host: h }, pool_size: 1 }'), [], 'one worker: no split, no rule');
});

t.test('the shares of any bound sum to exactly that bound, and differ by at most one', async (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 0, max: 10_000 }), (count, total) => {
      const shares = Array.from({ length: count }, (_, i) => shareOf(total, i, count));
      return shares.reduce((a, b) => a + b, 0) === total && Math.max(...shares) - Math.min(...shares) <= 1;
    }),
  );
  t.same([0, 1, 2, 3].map((i) => shareOf(10, i, 4)), [3, 3, 2, 2], 'the extra ones go to the lowest indexes');
});

t.test('a worker config carries its share of pool_size, min_pool_size, client and dedicated limits; the rest is unchanged', async (t) => {
  const config = parseConfig(
    `
workers: 2
postgres:
  - { name: a, listen: 127.0.0.1:7000, server: { host: h }, pool_size: 5, min_pool_size: 3, max_client_connections: 101 }
redis:
  - { name: c, listen: 127.0.0.1:7002, server: { host: h }, pool_size: 3, max_dedicated_connections: 0, max_client_connections: 10 }
`,
    'test',
    {},
  );
  const [w0, w1] = [workerConfig(config, 0, 2), workerConfig(config, 1, 2)];
  t.same([w0.postgres[0].pool_size, w1.postgres[0].pool_size], [3, 2]);
  t.same([w0.postgres[0].min_pool_size, w1.postgres[0].min_pool_size], [2, 1]);
  t.same([w0.postgres[0].max_client_connections, w1.postgres[0].max_client_connections], [51, 50]);
  t.same([w0.redis[0].pool_size, w1.redis[0].pool_size], [2, 1]);
  t.same([w0.redis[0].max_dedicated_connections, w1.redis[0].max_dedicated_connections], [0, 0]);
  t.equal(w0.postgres[0].timeouts.acquire, config.postgres[0].timeouts.acquire);
  t.equal(workerConfig(config, 0, 1), config, 'one worker runs the config as it is');
});

function snapshot(clients: number, active: number, waitMs: number, accepting = true): ListenerSnapshot {
  return {
    protocol: 'postgres',
    name: 'main',
    listen: '127.0.0.1:6432',
    upstream: '127.0.0.1:5432',
    poolMode: 'transaction',
    clients,
    pools: [
      {
        database: 'app',
        user: 'app',
        stats: { size: 2, idle: 2 - active, active, opening: 0, waiting: 0, oldestWaitMs: waitMs, paused: false },
        clientsActive: active,
        clientsWaiting: 0,
        clientsIdle: clients - active,
        pinned: 0,
        dedicated: 0,
      },
    ],
    totals: { bytesReceived: 10, bytesSent: 20, transactions: clients, queries: clients },
    upstreamReachable: true,
    accepting,
  };
}

t.test('/status merges workers: counts and sizes add up, the longest wait wins, accepting only if every worker accepts', async (t) => {
  const [merged] = mergeSnapshots([[snapshot(5, 1, 10)], [snapshot(7, 2, 40, false)]]);
  t.equal(merged.clients, 12);
  t.equal(merged.totals.transactions, 12);
  t.equal(merged.totals.bytesSent, 40);
  t.equal(merged.pools.length, 1);
  t.equal(merged.pools[0].stats.size, 4, 'the pool_size shares add back up to the configured size');
  t.equal(merged.pools[0].stats.active, 3);
  t.equal(merged.pools[0].clientsIdle, 9);
  t.equal(merged.pools[0].stats.oldestWaitMs, 40);
  t.equal(merged.accepting, false);
  const other = { ...snapshot(1, 0, 0), pools: [{ ...snapshot(1, 0, 0).pools[0], database: 'other' }] };
  t.equal(mergeSnapshots([[snapshot(1, 0, 0)], [other]])[0].pools.length, 2, 'a pool only one worker has opened is listed once');
});
