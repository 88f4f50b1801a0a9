// The harness itself: real PostgreSQL and real redis-server start on loopback ports, answer,
// and stop by PID.
import pg from 'pg';
import { Redis } from 'ioredis';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { startRedis } from './harness/redis-server.js';

t.test('a real PostgreSQL starts, accepts each auth method, and stops', async (t) => {
  const server = await startPostgres();
  t.teardown(() => server.destroy());
  for (const user of [PG_USERS.scram, PG_USERS.md5, PG_USERS.cleartext, PG_USERS.trust]) {
    const client = new pg.Client({ host: server.host, port: server.port, user: user.name, password: user.password, database: 'postgres' });
    await client.connect();
    const { rows } = await client.query('select current_user as who, 40 + 2 as answer');
    t.same(rows[0], { who: user.name, answer: 42 }, `logged in as ${user.name}`);
    await client.end();
  }
  t.equal(await server.psql('select count(*) from pg_roles where rolname = $$app$$'), '1');
});

t.test('a real redis-server starts, answers, and stops', async (t) => {
  const server = await startRedis();
  t.teardown(() => server.stop());
  const client = new Redis({ host: server.host, port: server.port, lazyConnect: true });
  await client.connect();
  await client.set('harness', 'works');
  t.equal(await client.get('harness'), 'works');
  t.equal(await server.cli('GET', 'harness'), 'works');
  client.disconnect();
});
