// `workers: 2` end to end, against the real binary, a real Postgres and a real redis-server:
// traffic through both workers, pool_size as a hard bound across them (pg_stat_activity), a
// cancel that reaches the worker owning the session whichever worker it lands on, /metrics and
// /status summed by the primary, reload and worker restart, SIGTERM draining every worker to
// exit 0, and the config and listen errors a primary reports.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { connect as tcpConnect, createServer } from 'node:net';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import pg from 'pg';
import t from 'tap';
import { type MetricFamily, parseExposition } from '../metrics/exposition.js';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startRedis } from './harness/redis-server.js';
import { MAIN_JS, type SluiceProcess, startSluice } from './harness/sluice-process.js';
import { freePort, tempDir, waitFor } from './harness/tools.js';
import { backendsIn, freshDatabase, psqlThrough } from './pg-support.js';

const run = promisify(execFile);
const pgServer = await startPostgres();
const redisServer = await startRedis();
t.teardown(async () => {
  await pgServer.destroy();
  await redisServer.stop();
});

const pgPort = await freePort();
const redisPort = await freePort();
const database = await freshDatabase(pgServer, 'workers');

function config(poolSize: number): string {
  return `
metrics: { listen: "{{METRICS}}" }
log: { level: info }
workers: 2
shutdown_timeout: 20s
postgres:
  - name: main
    listen: 127.0.0.1:${pgPort}
    server: { host: 127.0.0.1, port: ${pgServer.port} }
    pool_mode: transaction
    pool_size: ${poolSize}
    auth_method: trust
    admin_users: [${PG_USERS.superuser.name}]
redis:
  - name: cache
    listen: 127.0.0.1:${redisPort}
    server: { host: 127.0.0.1, port: ${redisServer.port} }
    pool_size: 2
`;
}

/** The sum of a family's samples whose labels include `match`. */
function value(families: Map<string, MetricFamily>, family: string, match: Record<string, string>, sampleName = family): number {
  return (families.get(family)?.samples ?? [])
    .filter((s) => s.name === sampleName && Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

interface StatusDocument {
  listeners: Array<{ name: string; clients: number; pools: Array<{ database: string; pool_size: number }> }>;
  workers: Array<{ index: number; state: string; pid: number | null }>;
}

async function status(sluice: SluiceProcess): Promise<StatusDocument> {
  return (await fetch(`http://127.0.0.1:${sluice.metricsPort}/status`)).json() as Promise<StatusDocument>;
}

async function pgClient(extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new pg.Client({ host: '127.0.0.1', port: pgPort, user: PG_USERS.superuser.name, database, ...extra });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** A CancelRequest on a new connection, as libpq sends it; resolves when sluice closes it. */
function sendCancel(pid: number, secret: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: '127.0.0.1', port: pgPort }, () => {
      const packet = Buffer.alloc(16);
      packet.writeInt32BE(16, 0);
      packet.writeInt32BE(80877102, 4);
      packet.writeInt32BE(pid, 8);
      packet.writeInt32BE(secret, 12);
      socket.write(packet);
    });
    socket.on('error', reject);
    socket.on('close', () => resolve());
  });
}

const sluice = await startSluice(config(4), { waitReady: true });
t.teardown(() => sluice.stop());

t.test('workers: 2 runs a primary and two workers, each listening', async (t) => {
  const doc = await status(sluice);
  t.same(
    doc.workers.map((w) => w.state),
    ['running', 'running'],
    '/status lists both workers, running',
  );
  t.not(doc.workers[0].pid, doc.workers[1].pid, 'two worker processes');
  t.not(doc.workers[0].pid, sluice.pid, 'the primary proxies nothing: the workers are other processes');
  t.equal(await psqlThrough(pgPort, 'select 40 + 2', {}, PG_USERS.superuser.name, database), '42', 'psql through a worker');
});

t.test('50 concurrent clients over pool_size 4: pg_stat_activity never shows more than 4 servers; /metrics sums both workers', async (t) => {
  const before = parseExposition(await sluice.metrics());
  const sentBefore = value(before, 'sluice_transactions_total', { protocol: 'postgres', pool: 'main' });
  const clients = await Promise.all(Array.from({ length: 50 }, () => pgClient()));
  t.teardown(() => Promise.all(clients.map((c) => c.end().catch(() => undefined))));
  let sampling = true;
  let maxServers = 0;
  const sampler = (async () => {
    while (sampling) {
      maxServers = Math.max(maxServers, await backendsIn(pgServer, database));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  const EACH = 4;
  const answers = await Promise.all(
    clients.map(async (client, i) => {
      let sum = 0;
      for (let q = 0; q < EACH; q++) {
        // The sleep keeps each server busy a moment, so 50 clients really do contend for 4.
        const { rows } = await client.query('select $1::int as n, pg_sleep(0.02)', [i]);
        sum += Number(rows[0].n);
      }
      return sum;
    }),
  );
  sampling = false;
  await sampler;
  t.same(answers, clients.map((_, i) => i * EACH), 'every client got its own answers');
  t.ok(maxServers > 0 && maxServers <= 4, `at most pool_size servers across both workers (max seen ${maxServers})`);

  const doc = await status(sluice);
  const pool = doc.listeners.find((l) => l.name === 'main')?.pools.find((p) => p.database === database);
  t.equal(pool?.pool_size, 4, '/status: the two workers’ shares (2 + 2) add up to pool_size');
  t.equal(doc.listeners.find((l) => l.name === 'main')?.clients, 50, '/status counts the clients of both workers');
  const m = parseExposition(await sluice.metrics());
  t.equal(value(m, 'sluice_transactions_total', { protocol: 'postgres', pool: 'main' }) - sentBefore, 50 * EACH, 'sluice_transactions_total is the transactions sent, summed over the workers');
  t.equal(value(m, 'sluice_pool_size', { protocol: 'postgres', pool: 'main', database }), 4, 'sluice_pool_size sums to the configured pool_size');
  t.equal(value(m, 'sluice_upstream_up', { protocol: 'postgres', pool: 'main' }), 1, 'sluice_upstream_up is 1, not summed to 2');
  t.equal(value(m, 'sluice_listener_clients', { protocol: 'postgres', pool: 'main' }), 50, 'sluice_listener_clients sums both workers’ clients');
});

t.test('ioredis through two workers: commands, pipelines and MULTI; commands summed in /metrics', async (t) => {
  const clients = Array.from({ length: 4 }, () => new Redis({ host: '127.0.0.1', port: redisPort, lazyConnect: true, maxRetriesPerRequest: 0 }));
  t.teardown(() => Promise.all(clients.map((c) => c.quit().catch(() => undefined))));
  for (const c of clients) await c.connect();
  const before = value(parseExposition(await sluice.metrics()), 'sluice_commands_total', { protocol: 'redis', pool: 'cache' });
  await Promise.all(clients.map((c, i) => c.set(`w:${i}`, String(i))));
  const values = await Promise.all(clients.map((c, i) => c.get(`w:${i}`)));
  t.same(values, ['0', '1', '2', '3'], 'each client reads what it wrote');
  const piped = await clients[0].pipeline().incr('w:n').incr('w:n').get('w:n').exec();
  t.same(piped?.map(([, v]) => v), [1, 2, '2'], 'a pipeline answers in order');
  const multi = await clients[1].multi().incr('w:m').incr('w:m').exec();
  t.same(multi?.map(([, v]) => v), [1, 2], 'MULTI/EXEC on a dedicated connection of one worker');
  const counted = value(parseExposition(await sluice.metrics()), 'sluice_commands_total', { protocol: 'redis', pool: 'cache' }) - before;
  t.ok(counted >= 4 + 4 + 3 + 2, `every command counted, whichever worker ran it (${counted})`);
});

t.test('a cancel reaches the worker that owns the session, whichever worker the CancelRequest lands on', async (t) => {
  const m0 = parseExposition(await sluice.metrics());
  const counted = (m: Map<string, MetricFamily>, result: string) => value(m, 'sluice_cancel_requests_total', { protocol: 'postgres', pool: 'main', result });
  // The secret names the worker that issued it (secret % workers); find two sessions of one worker.
  const clients: pg.Client[] = [];
  t.teardown(() => Promise.all(clients.map((c) => c.end().catch(() => undefined))));
  const owner = (c: pg.Client) => ((c as unknown as { secretKey: number }).secretKey % 2 + 2) % 2;
  let pair: pg.Client[] = [];
  while (pair.length < 2) {
    clients.push(await pgClient({ application_name: 'cancel-me' }));
    const byOwner = [0, 1].map((w) => clients.filter((c) => owner(c) === w));
    pair = byOwner.find((list) => list.length >= 2) ?? [];
  }
  const running = pair.map((c) => c.query('SELECT pg_sleep(30)').then(() => undefined, (err: Error & { code?: string }) => err));
  await waitFor('both sleeps running upstream', async () => Number(await pgServer.psql(`select count(*) from pg_stat_activity where datname = '${database}' and state = 'active' and query = 'SELECT pg_sleep(30)'`)) === 2);
  // Consecutive connections alternate between workers (cluster round-robin), so of two cancels
  // for sessions of one worker, one lands on it and one on the other worker, which relays it.
  for (const [i, client] of pair.entries()) {
    const { processID, secretKey } = client as unknown as { processID: number; secretKey: number };
    await sendCancel(processID, secretKey);
    const err = await running[i];
    t.equal(err?.code, '57014', `sleep ${i + 1} was cancelled (57014)`);
  }
  const m1 = parseExposition(await sluice.metrics());
  t.equal(counted(m1, 'forwarded') - counted(m0, 'forwarded'), 2, 'both cancels reached the owning worker and were forwarded upstream');
  t.equal(counted(m1, 'relayed') - counted(m0, 'relayed'), 1, 'one of them arrived at the other worker and was relayed through the primary');
  t.equal(counted(m1, 'dropped') - counted(m0, 'dropped'), 0, 'none dropped');
});

t.test('SIGHUP re-reads the config in the primary and every worker applies its share', async (t) => {
  sluice.writeConfig(config(6));
  sluice.signal('SIGHUP');
  await waitFor('pool_size 6 summed over the workers', async () => value(parseExposition(await sluice.metrics()), 'sluice_pool_size', { protocol: 'postgres', pool: 'main', database }) === 6);
  // The rewrite may also trigger the config-directory watch: one or two reloads, each counted once.
  await waitFor('the SIGHUP reload logged', () => sluice.logs.some((l) => l.msg === 'config reloaded' && l.trigger === 'SIGHUP'));
  let reloads = 0;
  let logged: Array<Record<string, unknown>> = [];
  // Were every worker counting too, the sum would be three times the primary's log lines, never equal.
  await waitFor('reload count = reloads logged', async () => {
    reloads = value(parseExposition(await sluice.metrics()), 'sluice_config_reload_total', { result: 'success' });
    logged = sluice.logs.filter((l) => l.msg === 'config reloaded');
    return reloads === logged.length;
  });
  t.equal(reloads, logged.length, 'each reload counted once, by the primary, not once per worker');
  t.ok(logged.every((l) => l.worker === undefined), 'workers apply the pushed config without re-reading or re-logging it');
});

t.test('the admin console shows the worker it landed on (its share of pool_size); RELOAD there reloads through the primary', async (t) => {
  const rows = (await psqlThrough(pgPort, 'SHOW POOLS', {}, PG_USERS.superuser.name, 'sluice')).split('\n').map((line) => line.split('|'));
  const mine = rows.find((row) => row[0] === database);
  t.equal(mine?.[14], '3', 'pool_size 6 over two workers: this worker’s share is 3');
  t.equal(await psqlThrough(pgPort, 'RELOAD', {}, PG_USERS.superuser.name, 'sluice'), '', 'RELOAD answered with its command tag');
  await waitFor('the primary reloading for the worker', () => sluice.logs.some((l) => l.msg === 'config reloaded' && l.trigger === 'admin RELOAD' && l.worker === undefined));
  t.ok(sluice.logs.some((l) => l.msg === 'config reloaded' && l.trigger === 'admin RELOAD'), 'the reload ran in the primary, which hands it to every worker');
});

t.test('a worker that dies is forked again in its slot; /readyz comes back once it runs', async (t) => {
  const before = await status(sluice);
  const victim = before.workers[1].pid as number;
  process.kill(victim, 'SIGKILL');
  await waitFor('worker 1 running again with a new pid', async () => {
    const doc = await status(sluice);
    return doc.workers[1].state === 'running' && doc.workers[1].pid !== victim;
  });
  t.ok(sluice.logs.some((l) => l.worker === 1 && l.signal === 'SIGKILL' && String(l.msg).includes('exited unexpectedly; restarting it')), 'the death and the restart are logged');
  await waitFor('/readyz 200', async () => (await fetch(`http://127.0.0.1:${sluice.metricsPort}/readyz`)).status === 200);
  for (let i = 0; i < 4; i++) t.equal(await psqlThrough(pgPort, `select ${i}`, {}, PG_USERS.superuser.name, database), String(i), `connection ${i + 1} served`);
});

t.test('SIGTERM to the primary drains every worker: an open transaction finishes, then exit 0', async (t) => {
  const inTx = await pgClient();
  const idle = await pgClient();
  let idleClosed = false;
  idle.on('end', () => {
    idleClosed = true;
  });
  await inTx.query('BEGIN');
  await inTx.query('select 1');
  sluice.signal('SIGTERM');
  await waitFor('both workers draining', () => [0, 1].every((w) => sluice.logs.some((l) => l.worker === w && l.msg === 'shutting down: readiness off')));
  t.equal((await fetch(`http://127.0.0.1:${sluice.metricsPort}/readyz`)).status, 503, 'readiness off while draining');
  const { rows } = await inTx.query('select 2 as n');
  t.equal(rows[0].n, 2, 'the open transaction goes on during the drain');
  await inTx.query('COMMIT');
  t.equal(await sluice.exited, 0, 'the primary exits 0 once every worker has drained');
  t.ok(idleClosed, 'the idle client was closed by the drain');
  t.same(
    [0, 1].map((w) => sluice.logs.some((l) => l.worker === w && l.msg === 'drained: every client has left')),
    [true, true],
    'each worker drained, none hit shutdown_timeout',
  );
});

t.test('pool_size below workers is a config error naming the path; a taken listen address exits 2', async (t) => {
  const dir = tempDir('workers-cli');
  const bad = `${dir}/bad.yaml`;
  writeFileSync(bad, `workers: 4\npostgres:\n  - { name: m, listen: "127.0.0.1:${await freePort()}", server: { host: h }, pool_size: 3 }\n`);
  const checked = await run(process.execPath, [MAIN_JS, '--check', '--config', bad]).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => err,
  );
  t.equal(checked.code, 1, '--check exits 1');
  t.match(checked.stderr, 'postgres[0].pool_size: must be >= workers (4) so every worker gets a share, got 3');

  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const busy = `${dir}/busy.yaml`;
  writeFileSync(busy, `metrics: { listen: "127.0.0.1:${await freePort()}" }\nworkers: 2\nredis:\n  - { name: c, listen: "127.0.0.1:${port}", server: { host: 127.0.0.1 }, pool_size: 2 }\n`);
  const started = await run(process.execPath, [MAIN_JS, '--config', busy]).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => err,
  );
  t.equal(started.code, 2, 'exit 2, as a single process');
  t.match(started.stderr, `cannot listen on 127.0.0.1:${port}: address already in use`, 'the message names the address');
});

t.test('a second signal during the drain makes every worker close at once; exit 0', async (t) => {
  const second = await startSluice(`
metrics: { listen: "{{METRICS}}" }
workers: 2
shutdown_delay: 60s
redis:
  - { name: c, listen: "127.0.0.1:${await freePort()}", server: { host: 127.0.0.1, port: ${redisServer.port} }, pool_size: 2 }
`);
  second.signal('SIGTERM');
  await waitFor('both workers delaying', () => [0, 1].every((w) => second.logs.some((l) => l.worker === w && l.msg === 'shutting down: readiness off')));
  second.signal('SIGINT');
  t.equal(await second.exited, 0, 'exit 0 without waiting out shutdown_delay');
  t.ok(second.logs.some((l) => l.worker === undefined && l.msg === 'second signal: closing everything now'), 'the primary logs the forced stop');
  t.same(
    [0, 1].map((w) => second.logs.some((l) => l.worker === w && l.msg === 'stopped')),
    [true, true],
    'both workers stopped',
  );
});
