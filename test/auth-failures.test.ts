// Auth failures are attributable but cannot mint metric series: sluice_auth_failures_total
// carries the user when the listener knows the name and `(unknown)` for any other, each failure
// is logged with the client's source address, and a non-admin refused by the admin console counts.
import { connect as netConnect } from 'node:net';
import { Redis } from 'ioredis';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startRedis } from './harness/redis-server.js';
import { startSluice } from './harness/sluice-process.js';
import { freePort } from './harness/tools.js';
import { connect, rejection } from './pg-support.js';

const pg = await startPostgres();
t.teardown(() => pg.destroy());
const redis = await startRedis();
t.teardown(() => redis.stop());
// listener users log in upstream as themselves
await redis.cli('ACL', 'SETUSER', 'alice', 'on', '>alice-secret', '~*', '&*', '+@all');

const pgPort = await freePort();
const redisPort = await freePort();
const sluice = await startSluice(`
metrics: { listen: "{{METRICS}}" }
postgres:
  - name: pg
    listen: 127.0.0.1:${pgPort}
    server: { host: 127.0.0.1, port: ${pg.port} }
    auth_method: scram-sha-256
    users: [{ name: app, password: app-secret }, { name: ops, password: ops-secret }]
    admin_users: [ops]
redis:
  - name: cache
    listen: 127.0.0.1:${redisPort}
    server: { host: 127.0.0.1, port: ${redis.port} }
    users: [{ name: alice, password: alice-secret }]
`);
t.teardown(() => sluice.stop());

function failures(metrics: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of metrics.matchAll(/^sluice_auth_failures_total\{([^}]*)\} (\d+)/gm)) out.set(m[1], Number(m[2]));
  return out;
}

t.test('postgres: failures by configured user, made-up names under one (unknown) series, admin refusals counted, source address logged', async (t) => {
  const good = await connect(pgPort, { user: PG_USERS.scram.name, password: PG_USERS.scram.password });
  t.teardown(() => good.end());
  t.equal((await rejection(connect(pgPort, { user: 'app', password: 'wrong' }))).code, '28P01');
  for (let i = 0; i < 25; i++) t.equal((await rejection(connect(pgPort, { user: `intruder${i}`, password: 'x' }))).code, '28P01');
  const admin = await rejection(connect(pgPort, { user: 'app', password: 'app-secret', database: 'sluice' }));
  t.equal(admin.code, '28000', 'a non-admin is refused by the admin console');
  const seen = failures(await sluice.metrics());
  t.equal(seen.get('protocol="postgres",pool="pg",user="app"'), 2, 'wrong password and admin refusal, under the user');
  t.equal(seen.get('protocol="postgres",pool="pg",user="(unknown)"'), 25, 'every made-up name in one series');
  t.notOk([...seen.keys()].some((labels) => labels.includes('intruder')), 'no series per made-up name');
  const logged = sluice.logs.filter((line) => line.msg === 'client authentication failed' && line.listener === 'pg');
  t.ok(logged.length >= 27 && logged.every((line) => line.addr === '127.0.0.1'), 'each failure logged with the source address');
  t.ok(logged.some((line) => line.reason === 'not in admin_users'), 'the admin refusal says why');
  t.equal((await good.query('select 1 as n')).rows[0].n, 1, 'well-behaved client still works');
});

t.test('redis: failures by configured user, others under (unknown), logged with the source address', async (t) => {
  const good = new Redis({ host: '127.0.0.1', port: redisPort, username: 'alice', password: 'alice-secret', maxRetriesPerRequest: 0 });
  t.teardown(() => good.disconnect());
  t.equal(await good.ping(), 'PONG');
  // a raw socket guessing: one wrong password for a real user, then ten made-up users
  const guesses = ['AUTH alice wrong', ...Array.from({ length: 10 }, (_, i) => `AUTH nobody${i} x`)];
  const replies = await new Promise<string>((resolve) => {
    let got = '';
    const socket = netConnect(redisPort, '127.0.0.1', () => socket.write(guesses.map((g) => `${g}\r\n`).join('')));
    socket.on('data', (chunk) => {
      got += chunk.toString();
      if (got.split('\r\n').length > guesses.length) socket.end();
    });
    socket.on('close', () => resolve(got));
  });
  t.equal(replies.match(/-WRONGPASS/g)?.length, 11, 'every guess refused');
  const seen = failures(await sluice.metrics());
  t.equal(seen.get('protocol="redis",pool="cache",user="alice"'), 1);
  t.equal(seen.get('protocol="redis",pool="cache",user="(unknown)"'), 10);
  t.notOk([...seen.keys()].some((labels) => labels.includes('nobody')), 'no series per made-up name');
  t.ok(sluice.logs.some((line) => line.msg === 'client authentication failed' && String(line.addr).startsWith('127.0.0.1:') && line.user === 'nobody3'), 'logged with the source address');
  t.equal(await good.ping(), 'PONG', 'well-behaved client still works');
});
