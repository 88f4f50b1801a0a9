// The Postgres pooler against a real Postgres with real clients: psql, pgbench (simple and
// extended, TPC-B, 50 clients over a pool of 5), node-postgres with 200 concurrent clients and
// Debian's psycopg2 in every pool mode, COPY both ways, NOTIFY, and per-client settings that
// never leak between clients sharing a server.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { tempDir } from './harness/tools.js';
import { backendsIn, connect, execFileAsync, freshDatabase, psqlThrough, rejection, startListener } from './pg-support.js';

const pg = await startPostgres();
t.teardown(() => pg.destroy());
const modes = ['transaction', 'session', 'statement'] as const;

t.test('psql runs queries and COPY in and out through the listener', async (t) => {
  const sluice = await startListener(pg, { pool_size: 2 });
  t.teardown(() => sluice.close());
  t.equal(await psqlThrough(sluice.port, 'select 40 + 2'), '42');
  await psqlThrough(sluice.port, 'create table if not exists copy_t (id int, note text)');
  const rows = Array.from({ length: 5000 }, (_, i) => `${i}\trow ${i}`).join('\n');
  const { stdout } = await execFileAsync('sh', ['-c', `printf '%s\\n' "$ROWS" | psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p ${sluice.port} -U app -d postgres -c "\\copy copy_t from stdin" && psql -X -At -h 127.0.0.1 -p ${sluice.port} -U app -d postgres -c "\\copy (select sum(id) from copy_t) to stdout"`], {
    env: { ...process.env, ROWS: rows, PGPASSWORD: PG_USERS.scram.password },
    cwd: '/',
  });
  t.equal(stdout.trim(), String((4999 * 5000) / 2), 'COPY FROM STDIN streamed every row, COPY TO STDOUT read them back');
});

t.test('pgbench TPC-B, simple and extended protocol, 50 clients over a pool of 5: no failures, invariant holds, never more than 5 servers', async (t) => {
  const sluice = await startListener(pg, { pool_size: 5 });
  t.teardown(() => sluice.close());
  const database = await freshDatabase(pg, 'bench');
  const env = { ...process.env, PGPASSWORD: PG_USERS.scram.password };
  const common = ['-h', '127.0.0.1', '-p', String(sluice.port), '-U', PG_USERS.scram.name, database];
  await execFileAsync('pgbench', ['-i', '-q', '-s', '1', ...common], { env, cwd: '/' });
  let maxServers = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      maxServers = Math.max(maxServers, await backendsIn(pg, database));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  for (const protocol of ['simple', 'extended']) {
    const { stdout } = await execFileAsync('pgbench', ['-n', '-c', '50', '-j', '2', '-t', '20', '-M', protocol, ...common], { env, cwd: '/', timeout: 240_000 });
    t.match(stdout, /number of failed transactions: 0 /, `${protocol}: zero failed transactions`);
    t.match(stdout, /number of transactions actually processed: 1000\/1000/, `${protocol}: every transaction processed`);
  }
  // libpq pipeline mode: several Syncs in flight per client; only the last ReadyForQuery frees the server.
  const script = join(tempDir('pgbench'), 'pipeline.sql');
  writeFileSync(script, '\\set aid random(1, 100000)\n\\startpipeline\nselect abalance from pgbench_accounts where aid = :aid;\nselect :aid::int + 1;\nselect 2;\n\\endpipeline\n');
  const { stdout: piped } = await execFileAsync('pgbench', ['-n', '-c', '20', '-j', '2', '-t', '25', '-M', 'extended', '-f', script, ...common], { env, cwd: '/', timeout: 240_000 });
  t.match(piped, /number of failed transactions: 0 /, 'pipeline mode: zero failed transactions');
  t.match(piped, /number of transactions actually processed: 500\/500/, 'pipeline mode: every pipeline processed');
  sampling = false;
  await sampler;
  t.ok(maxServers > 0 && maxServers <= 5, `pg_stat_activity showed at most pool_size servers (max seen ${maxServers})`);
  const sums = await pg.psql(
    "select (select sum(abalance) from pgbench_accounts) || ',' || (select sum(tbalance) from pgbench_tellers) || ',' || (select sum(bbalance) from pgbench_branches) || ',' || (select sum(delta) from pgbench_history) || ',' || (select count(*) from pgbench_history)",
    database,
  );
  const [accounts, tellers, branches, history, count] = sums.split(',');
  t.equal(count, '2000', 'every transaction left its history row');
  t.equal(accounts, history, 'accounts balance equals history sum');
  t.equal(tellers, history, 'tellers balance equals history sum');
  t.equal(branches, history, 'branches balance equals history sum');
});

for (const mode of modes) {
  t.test(`node-postgres: 200 concurrent clients with parameterized queries over a pool of 5 (${mode} mode)`, async (t) => {
    const sluice = await startListener(pg, { pool_mode: mode, pool_size: 5, timeouts: { acquire: '120s' } });
    t.teardown(() => sluice.close());
    const database = await freshDatabase(pg, mode);
    let maxServers = 0;
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const client = await connect(sluice.port, { database });
        try {
          const sums: number[] = [];
          for (let q = 0; q < 3; q++) {
            const res = await client.query('select $1::int + $2::int as n, $3::text as tag', [i, q, `c${i}`]);
            if (res.rows[0].tag !== `c${i}`) throw new Error('reply for another client');
            sums.push(res.rows[0].n);
          }
          if (i % 50 === 0) maxServers = Math.max(maxServers, await backendsIn(pg, database));
          return sums.join(',');
        } finally {
          await client.end();
        }
      }),
    );
    t.same(results, Array.from({ length: 200 }, (_, i) => `${i},${i + 1},${i + 2}`), 'every client got its own answers');
    t.ok(maxServers <= 5, `never more than pool_size servers (max seen ${maxServers})`);
    const snapshot = sluice.listener.snapshot();
    t.ok(snapshot.totals.queries >= 600, 'queries counted in the snapshot');
    t.ok(snapshot.pools[0].stats.idle + snapshot.pools[0].stats.active <= 5);
  });

  t.test(`psycopg2 from Debian works in ${mode} mode`, async (t) => {
    const sluice = await startListener(pg, { pool_mode: mode, pool_size: 2 });
    t.teardown(() => sluice.close());
    const script = [
      'import psycopg2, sys',
      `conn = psycopg2.connect(host="127.0.0.1", port=${sluice.port}, user="app", password="app-secret", dbname="postgres", connect_timeout=10)`,
      'conn.autocommit = True',
      'cur = conn.cursor()',
      'cur.execute("create table if not exists py_t (id int, mode text)")',
      'cur.execute("select %s::int * 2, %s", (21, "psycopg2"))',
      'print(cur.fetchone())',
      `cur.execute("insert into py_t values (%s, %s)", (1, "${mode}"))`,
      `cur.execute("select count(*) from py_t where mode = %s", ("${mode}",))`,
      'print(cur.fetchone()[0] >= 1)',
      'conn.close()',
    ].join('\n');
    const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script], { cwd: '/' });
    t.equal(stdout.trim(), "(42, 'psycopg2')\nTrue");
  });
}

t.test('psycopg2 transactions (autocommit off) work in transaction mode', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'transaction', pool_size: 1 });
  t.teardown(() => sluice.close());
  const script = [
    'import psycopg2',
    `a = psycopg2.connect(host="127.0.0.1", port=${sluice.port}, user="app", password="app-secret", dbname="postgres")`,
    'cur = a.cursor()',
    'cur.execute("create table if not exists py_tx (v int)")',
    'a.commit()',
    'cur.execute("insert into py_tx values (7)")',
    'a.rollback()',
    'cur.execute("select count(*) from py_tx where v = 7")',
    'print(cur.fetchone()[0])',
    'a.commit()',
  ].join('\n');
  const { stdout } = await execFileAsync('/usr/bin/python3', ['-c', script], { cwd: '/' });
  t.equal(stdout.trim(), '0', 'a rolled-back insert is not visible');
});

t.test('settings never leak between clients sharing one server (transaction mode)', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'transaction', pool_size: 1 });
  t.teardown(() => sluice.close());
  await pg.psql('create schema if not exists s_alpha; create schema if not exists s_beta');
  const alpha = await connect(sluice.port, { application_name: 'alpha', options: '-c search_path=s_alpha -c statement_timeout=123s' });
  const beta = await connect(sluice.port, { application_name: 'beta' });
  t.teardown(() => Promise.all([alpha.end(), beta.end()]));
  await alpha.query("set TimeZone = 'Asia/Tokyo'");
  await beta.query("set DateStyle = 'SQL, DMY'");
  const show = "select current_setting('application_name') a, current_setting('TimeZone') tz, current_setting('search_path') sp, current_setting('DateStyle') ds, current_setting('statement_timeout') st";
  for (let round = 0; round < 3; round++) {
    const a = (await alpha.query(show)).rows[0];
    const b = (await beta.query(show)).rows[0];
    t.same([a.a, a.tz, a.sp, a.ds, a.st], ['alpha', 'Asia/Tokyo', 's_alpha', 'ISO, MDY', '123s'], `alpha sees its own settings (round ${round})`);
    t.equal(b.a, 'beta', 'beta sees its application_name');
    t.not(b.tz, 'Asia/Tokyo', "beta does not see alpha's TimeZone");
    t.not(b.sp, 's_alpha', "beta does not see alpha's search_path");
    t.equal(b.ds, 'SQL, DMY', 'beta sees its DateStyle');
    t.equal(b.st, '0', "beta does not see alpha's statement_timeout");
  }
});

t.test('a list setting from the startup options (search_path=a,b) is replayed whole on every server', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'transaction', pool_size: 1 });
  t.teardown(() => sluice.close());
  await pg.psql('create schema if not exists s_first; create schema if not exists s_second; create table if not exists s_second.only_in_second (v int)');
  const options = '-c search_path=s_first,s_second';
  const direct = await connect(pg.port, { options });
  const through = await connect(sluice.port, { options });
  const other = await connect(sluice.port, { application_name: 'other' });
  t.teardown(() => Promise.all([direct.end(), through.end(), other.end()]));
  const expected = (await direct.query("select current_setting('search_path') sp")).rows[0].sp;
  for (let round = 0; round < 3; round++) {
    // The other client takes the one server in between, so each round replays the settings.
    await other.query('select 1');
    t.equal((await through.query("select current_setting('search_path') sp")).rows[0].sp, expected, `search_path as a direct connection has it (round ${round})`);
    t.same((await through.query('select count(*)::int n from only_in_second')).rows[0], { n: 0 }, 'the second schema of the list is searched');
  }
});

t.test("a client's RESET of a startup setting does not take that setting from the next client with the same settings", async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'transaction', pool_size: 1 });
  t.teardown(() => sluice.close());
  const options = '-c statement_timeout=123s -c extra_float_digits=2';
  const resetter = await connect(sluice.port, { options });
  const next = await connect(sluice.port, { options });
  const plain = await connect(sluice.port);
  t.teardown(() => Promise.all([resetter.end(), next.end(), plain.end()]));
  const show = "select current_setting('statement_timeout') st, current_setting('extra_float_digits') efd";
  for (const reset of ['reset statement_timeout', 'reset all', 'set statement_timeout to default', 'discard all']) {
    await resetter.query(reset);
    // as on a direct connection, RESET goes back to the value the client started with
    t.same((await resetter.query(show)).rows[0], { st: '123s', efd: '2' }, `${reset}: the resetting client is back at its startup settings`);
    // the one server goes to a client whose startup settings are the same as the resetter's
    t.same((await next.query(show)).rows[0], { st: '123s', efd: '2' }, `${reset}: the next client still has its startup settings`);
    t.same((await plain.query(show)).rows[0], { st: '0', efd: '1' }, `${reset}: a client without them has none`);
  }
});

t.test('statement mode refuses a transaction block with a clear error; other clients carry on', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'statement', pool_size: 1 });
  t.teardown(() => sluice.close());
  const client = await connect(sluice.port);
  const err = await rejection(client.query('begin'));
  t.match(err.message, /transaction blocks are not allowed in pool_mode statement/);
  const other = await connect(sluice.port);
  t.equal((await other.query('select 1 as n')).rows[0].n, 1, 'the server was rolled back and reused');
  t.equal((await other.query("select current_setting('transaction_isolation') is not null as ok")).rows[0].ok, true);
  await other.end();
});

t.test('LISTEN/NOTIFY and NOTICE pass through in session mode', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'session', pool_size: 2 });
  t.teardown(() => sluice.close());
  const listener = await connect(sluice.port);
  const notices: string[] = [];
  listener.on('notice', (notice) => notices.push(notice.message ?? ''));
  await listener.query('listen sluice_chan');
  const got = new Promise<string>((resolve) => listener.on('notification', (n) => resolve(n.payload ?? '')));
  await psqlThrough(sluice.port, "notify sluice_chan, 'hello'");
  t.equal(await got, 'hello', 'the notification reached the listening client');
  await listener.query("do $$ begin raise notice 'from the server'; end $$");
  t.same(notices, ['from the server'], 'NoticeResponse passed through');
  await listener.end();
});

t.test('the real binary: psql through a YAML-configured listener, metrics count it, the admin console answers SHOW POOLS', async (t) => {
  const { startSluice } = await import('./harness/sluice-process.js');
  const { freePort } = await import('./harness/tools.js');
  const port = await freePort();
  const sluice = await startSluice(
    [
      'metrics: { listen: "{{METRICS}}" }',
      'log: { level: warn }',
      'postgres:',
      '  - name: yamlpg',
      `    listen: 127.0.0.1:${port}`,
      `    server: { host: 127.0.0.1, port: ${pg.port} }`,
      '    pool_size: 2',
      '    auth_method: scram-sha-256',
      `    users: [{ name: app, password: ${PG_USERS.scram.password} }]`,
      '    admin_users: [app]',
      '',
    ].join('\n'),
  );
  t.teardown(() => sluice.stop());
  t.equal(await psqlThrough(port, 'select 6 * 7'), '42');
  const metrics = await sluice.metrics();
  t.match(metrics, /sluice_server_connections_opened_total\{[^}]*pool="yamlpg"[^}]*\} [1-9]/, 'server opens are counted');
  t.match(metrics, /sluice_queries_total\{[^}]*pool="yamlpg"[^}]*\} [1-9]/, 'queries are counted');
  const pools = await psqlThrough(port, 'SHOW POOLS', {}, PG_USERS.scram.name, 'sluice');
  t.match(pools, /yamlpg/, 'the admin console lists the pool');
  const refused = await rejection(psqlThrough(port, 'SHOW POOLS', {}, PG_USERS.md5.name, 'sluice'));
  t.match(String((refused as { stderr?: string }).stderr), /password authentication failed|not in admin_users/);
  t.equal(await sluice.stop(), 0, 'SIGTERM drains and exits 0');
});

t.test('pipelined Syncs (postgres.js pipelines on one connection): every reply to its query, the server freed only after the last', async (t) => {
  const sluice = await startListener(pg, { pool_mode: 'transaction', pool_size: 2 });
  t.teardown(() => sluice.close());
  const makeSql = () =>
    postgres({ host: '127.0.0.1', port: sluice.port, user: PG_USERS.scram.name, password: PG_USERS.scram.password, database: 'postgres', max: 1, prepare: false, onnotice: () => {} });
  const a = makeSql();
  const b = makeSql();
  t.teardown(() => Promise.all([a.end({ timeout: 1 }), b.end({ timeout: 1 })]));
  for (let round = 0; round < 3; round++) {
    const [fromA, fromB] = await Promise.all([
      Promise.all(Array.from({ length: 50 }, (_, i) => a`select ${i}::int as n, 'a' as who`)),
      Promise.all(Array.from({ length: 50 }, (_, i) => b`select ${i}::int as n, 'b' as who`)),
    ]);
    t.same(fromA.map((rows) => `${rows[0].who}${rows[0].n}`), Array.from({ length: 50 }, (_, i) => `a${i}`), `round ${round}: client a got its 50 pipelined replies in order`);
    t.same(fromB.map((rows) => `${rows[0].who}${rows[0].n}`), Array.from({ length: 50 }, (_, i) => `b${i}`), `round ${round}: client b too`);
  }
  const inTx = await a.begin(async (tx) => {
    await tx`create temp table if not exists pipe_t (v int)`;
    const writes = await Promise.all(Array.from({ length: 20 }, (_, i) => tx`insert into pipe_t values (${i}) returning v`));
    return writes.length;
  });
  t.equal(inTx, 20, 'a pipelined transaction runs on one server');
});
