// Metric values after known traffic through the real sluice binary and a real Postgres and
// Redis (issue 5's acceptance): 20 clients on a pool of 5 are seen waiting, a forced acquire
// timeout is counted under its config key, histogram counts equal the transactions and queries
// run, Redis commands and error replies are counted by family and prefix, and promtool accepts
// the scrape with every real label set present.
import { spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import pg from 'pg';
import t from 'tap';
import { type MetricFamily, parseExposition } from '../metrics/exposition.js';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startRedis } from './harness/redis-server.js';
import { type SluiceProcess, startSluice } from './harness/sluice-process.js';
import { findBinary, freePort, waitFor } from './harness/tools.js';

const pgServer = await startPostgres();
t.teardown(() => pgServer.destroy());
const redisServer = await startRedis();
t.teardown(() => redisServer.stop());

/** The sum of a family's samples whose labels include `match` (sampleName picks _count, _sum, …). */
function value(families: Map<string, MetricFamily>, family: string, match: Record<string, string>, sampleName = family): number {
  return (families.get(family)?.samples ?? [])
    .filter((s) => s.name === sampleName && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

async function scrape(sluice: SluiceProcess): Promise<Map<string, MetricFamily>> {
  return parseExposition(await sluice.metrics());
}

async function startWith(pgOptions: string): Promise<{ sluice: SluiceProcess; pgPort: number; redisPort: number }> {
  const pgPort = await freePort();
  const redisPort = await freePort();
  const sluice = await startSluice(`
metrics: { listen: "{{METRICS}}" }
log: { level: warn }
shutdown_timeout: 5s
postgres:
  - name: main
    listen: 127.0.0.1:${pgPort}
    server: { host: 127.0.0.1, port: ${pgServer.port} }
    ${pgOptions}
redis:
  - name: cache
    listen: 127.0.0.1:${redisPort}
    server: { host: 127.0.0.1, port: ${redisServer.port} }
    pool_size: 2
`);
  return { sluice, pgPort, redisPort };
}

async function pgClient(port: number): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: PG_USERS.scram.name, password: PG_USERS.scram.password, database: 'postgres' });
  await client.connect();
  return client;
}

const POOL = { protocol: 'postgres', pool: 'main', database: 'postgres', user: PG_USERS.scram.name };

t.test('20 clients on a pool of 5: clients are seen waiting, at most pool_size servers open, histogram counts equal the transactions and queries run', async (t) => {
  const { sluice, pgPort } = await startWith('pool_size: 5');
  t.teardown(() => sluice.stop());
  const clients = await Promise.all(Array.from({ length: 20 }, () => pgClient(pgPort)));
  t.teardown(() => Promise.all(clients.map((c) => c.end().catch(() => undefined))));
  const TRANSACTIONS_EACH = 3;
  // Each transaction holds its server for a while, so 15 of the 20 must queue.
  let running = true;
  const load = Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < TRANSACTIONS_EACH; i++) {
        await client.query('BEGIN');
        await client.query('SELECT pg_sleep(0.3)');
        await client.query('COMMIT');
      }
    }),
  ).finally(() => {
    running = false;
  });
  let waitingSeen = 0;
  await waitFor(
    'sluice_clients{state="waiting"} > 0 while the load runs',
    async () => {
      const m = await scrape(sluice);
      waitingSeen = Math.max(waitingSeen, value(m, 'sluice_clients', { ...POOL, state: 'waiting' }));
      if (!running && waitingSeen === 0) throw new Error('the load finished before any client was seen waiting');
      return waitingSeen > 0;
    },
    60_000,
  );
  await load;
  t.ok(waitingSeen > 0, `clients waited (saw ${waitingSeen} waiting at once)`);
  const m = await scrape(sluice);
  t.equal(value(m, 'sluice_pool_size', POOL), 5, 'sluice_pool_size is the configured pool_size');
  const transactions = clients.length * TRANSACTIONS_EACH;
  t.equal(value(m, 'sluice_transaction_duration_seconds', POOL, 'sluice_transaction_duration_seconds_count'), transactions, 'one transaction-duration observation per transaction');
  t.equal(value(m, 'sluice_transactions_total', { protocol: 'postgres', pool: 'main' }), transactions, 'sluice_transactions_total counts them');
  t.equal(value(m, 'sluice_query_duration_seconds', POOL, 'sluice_query_duration_seconds_count'), transactions * 3, 'one query-duration observation per query (BEGIN, SELECT, COMMIT)');
  t.equal(value(m, 'sluice_queries_total', { protocol: 'postgres', pool: 'main' }), transactions * 3, 'sluice_queries_total counts them');
  t.ok(value(m, 'sluice_pool_wait_seconds', POOL, 'sluice_pool_wait_seconds_count') >= transactions, 'every transaction acquired a server through the wait histogram');
  t.ok(value(m, 'sluice_pool_wait_seconds', POOL, 'sluice_pool_wait_seconds_sum') > 0, 'the waits add up to more than nothing');
  t.equal(value(m, 'sluice_client_connections_accepted_total', { protocol: 'postgres', pool: 'main' }), 20, 'every client connection counted once');
  t.equal(value(m, 'sluice_clients', { ...POOL, state: 'waiting' }), 0, 'nobody waits once the load is over');
  t.equal(value(m, 'sluice_clients', { ...POOL, state: 'idle' }), 20, 'the 20 clients are idle between transactions');
  t.ok(value(m, 'sluice_server_connections_opened_total', POOL) >= 1, 'server connections opened are counted');
  t.ok(value(m, 'sluice_server_connections_opened_total', POOL) <= 5, 'and no more than pool_size were opened');
});

t.test('a forced acquire timeout increments sluice_timeouts_total{config_key="timeouts.acquire"}', async (t) => {
  const { sluice, pgPort } = await startWith('pool_size: 1\n    timeouts: { acquire: 300ms }');
  t.teardown(() => sluice.stop());
  const holder = await pgClient(pgPort);
  const waiter = await pgClient(pgPort);
  // sluice may close the connection after the timeout error; that is not this test's concern.
  waiter.on('error', () => undefined);
  t.teardown(() => Promise.all([holder.end().catch(() => undefined), waiter.end().catch(() => undefined)]));
  const labels = { protocol: 'postgres', pool: 'main', config_key: 'timeouts.acquire' };
  t.equal(value(await scrape(sluice), 'sluice_timeouts_total', labels), 0, 'no timeout before');
  await holder.query('BEGIN');
  await holder.query('SELECT 1');
  const failure = await waiter.query('SELECT 1').then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(failure?.message, /timeouts\.acquire|acquire/, 'the second client got the acquire-timeout error, naming the config key');
  t.equal(value(await scrape(sluice), 'sluice_timeouts_total', labels), 1, 'the timeout is counted once, under its config key');
  await holder.query('COMMIT');
});

t.test('Redis pool gauges and connection counters after known traffic', async (t) => {
  const { sluice, redisPort } = await startWith('pool_size: 5');
  t.teardown(() => sluice.stop());
  const clients = Array.from({ length: 6 }, () => new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true, maxRetriesPerRequest: 0 }));
  t.teardown(() => {
    for (const c of clients) c.disconnect();
  });
  for (const [i, c] of clients.entries()) {
    await c.connect();
    await c.set(`metrics-traffic:${i}`, String(i));
    t.equal(await c.get(`metrics-traffic:${i}`), String(i));
  }
  const m = await scrape(sluice);
  const pool = { protocol: 'redis', pool: 'cache' };
  t.equal(value(m, 'sluice_client_connections_accepted_total', pool), 6, 'every client connection counted once');
  t.equal(value(m, 'sluice_listener_clients', pool), 6, 'six clients connected now');
  t.equal(value(m, 'sluice_pool_size', pool), 2, 'sluice_pool_size is the configured pool_size');
  t.ok(value(m, 'sluice_server_connections', pool) <= 2, 'no more shared upstream connections than pool_size');
  t.ok(value(m, 'sluice_client_received_bytes_total', pool) > 0 && value(m, 'sluice_client_sent_bytes_total', pool) > 0, 'bytes both ways are counted');
  t.equal(value(m, 'sluice_upstream_up', pool), 1, 'the upstream is up');
});

t.test('Redis commands are counted by family with one latency observation each; error replies by prefix, unknown prefixes as other', async (t) => {
  const { sluice, redisPort } = await startWith('pool_size: 2');
  t.teardown(() => sluice.stop());
  const redis = new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true, maxRetriesPerRequest: 0 });
  t.teardown(() => redis.disconnect());
  await redis.connect();
  // What the client sent at connect (ioredis's INFO ready check) is counted before this baseline.
  const before = await scrape(sluice);
  const pool = { protocol: 'redis', pool: 'cache' };
  const commands = (m: Map<string, MetricFamily>, family: string) => value(m, 'sluice_commands_total', { ...pool, family });
  const observations = (m: Map<string, MetricFamily>, family: string) => value(m, 'sluice_command_duration_seconds', { ...pool, family }, 'sluice_command_duration_seconds_count');
  const errors = (m: Map<string, MetricFamily>, kind: string) => value(m, 'sluice_errors_total', { ...pool, kind });
  const SETS = 25;
  const pipeline = redis.pipeline();
  for (let i = 0; i < SETS; i++) pipeline.set(`metrics-traffic:family:${i}`, String(i));
  const results = await pipeline.exec();
  t.equal(results?.filter(([err]) => err === null).length, SETS, 'the pipelined SETs all succeeded');
  await redis.hset('metrics-traffic:hash', 'field', 'value');
  await redis.set('metrics-traffic:wrongtype', 'a string');
  const wrongType = await redis.lpush('metrics-traffic:wrongtype', 'x').then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(wrongType?.message, /^WRONGTYPE/, 'LPUSH on a string gets -WRONGTYPE through sluice');
  const custom = await redis.eval("return redis.error_reply('CUSTOMCODE made up by a script')", 0).then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(custom?.message, /^CUSTOMCODE/, 'a script error with a made-up prefix passes through');
  // Answered by sluice itself: SELECT never reaches a shared connection.
  const local = await redis.call('SELECT', 'not-a-number').then(
    () => undefined,
    (err: Error) => err,
  );
  t.match(local?.message, /^ERR value is not an integer/, 'SELECT of a non-number is refused by sluice');
  const after = await scrape(sluice);
  const delta = (read: (m: Map<string, MetricFamily>, label: string) => number, label: string) => read(after, label) - read(before, label);
  t.equal(delta(commands, 'string'), SETS + 1, `${SETS} pipelined SETs and one more count under family="string"`);
  t.equal(delta(observations, 'string'), SETS + 1, 'and each has one latency observation');
  t.ok(value(after, 'sluice_command_duration_seconds', { ...pool, family: 'string' }, 'sluice_command_duration_seconds_sum') > 0, 'latencies add up to more than nothing');
  t.equal(delta(commands, 'hash'), 1, 'HSET counts under family="hash"');
  t.equal(delta(commands, 'list'), 1, 'the failed LPUSH was still answered: family="list"');
  t.equal(delta(commands, 'scripting'), 1, 'EVAL counts under family="scripting"');
  t.equal(delta(observations, 'list'), 1, 'one latency observation for the LPUSH');
  t.equal(delta(errors, 'WRONGTYPE'), 1, 'the -WRONGTYPE reply is counted under kind="WRONGTYPE"');
  t.equal(delta(errors, 'other'), 1, 'an unknown prefix is counted under kind="other", never as its own label');
  t.equal(delta(errors, 'ERR'), 1, 'the -ERR sluice answered itself is counted under kind="ERR"');
  t.notOk((after.get('sluice_errors_total')?.samples ?? []).some((s) => s.labels.kind === 'CUSTOMCODE'), 'no series for the made-up prefix');
});

t.test('promtool check metrics is clean on a scrape after real Postgres and Redis traffic', async (t) => {
  const { sluice, pgPort, redisPort } = await startWith('pool_size: 2');
  t.teardown(() => sluice.stop());
  const client = await pgClient(pgPort);
  await client.query('SELECT 1');
  await client.end();
  const redis = new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true });
  await redis.connect();
  await redis.ping();
  redis.disconnect();
  const text = await sluice.metrics();
  t.match(text, /sluice_transaction_duration_seconds_bucket\{le="0.0001",protocol="postgres",pool="main"/, 'real pool series are present');
  const own = text
    .split('\n')
    .filter((line) => !/^(# (HELP|TYPE) )?sluice_(process|nodejs)_/.test(line))
    .join('\n');
  const run = spawnSync(findBinary('promtool', [], 'apt-get install prometheus'), ['check', 'metrics'], { input: own, encoding: 'utf8' });
  t.equal(`${run.stdout}${run.stderr}`.trim(), '', 'no lint problems');
  t.equal(run.status, 0);
});
