// Logins through the Postgres listener against a real Postgres: every client auth method
// (scram-sha-256 with plain and stored secrets, md5, trust, passthrough) with right, wrong and
// unknown credentials; every upstream method (SCRAM, md5, cleartext, trust); TLS to clients
// (psql sslmode=require) and to the server (require, verify-full with ca_file, prefer).
import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { PG_USERS, startPostgres } from './harness/postgres-server.js';
import { chownToPostgres, tempDir } from './harness/tools.js';
import { connect, execFileAsync, rejection, startListener } from './pg-support.js';

const certDir = tempDir('pgtls');
const cert = join(certDir, 'server.crt');
const key = join(certDir, 'server.key');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert], { stdio: 'pipe' });
chmodSync(key, 0o600);
chownToPostgres(certDir);
const otherCa = join(certDir, 'other.crt');
execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=other', '-keyout', join(certDir, 'other.key'), '-out', otherCa], { stdio: 'pipe' });
chownToPostgres(certDir);

const pg = await startPostgres({ conf: ['ssl = on', `ssl_cert_file = '${cert}'`, `ssl_key_file = '${key}'`] });
t.teardown(() => pg.destroy());

const wrongPassword = /password authentication failed for user "(\w+)"/;

async function selectOne(port: number, options: Parameters<typeof connect>[1]): Promise<number> {
  const client = await connect(port, options);
  try {
    return (await client.query('select 1 as n')).rows[0].n;
  } finally {
    await client.end();
  }
}

t.test('scram-sha-256: configured plain password logs in; wrong password and unknown user get the same 28P01', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'scram-sha-256', users: [{ name: 'app', password: 'app-secret' }] });
  t.teardown(() => sluice.close());
  t.equal(await selectOne(sluice.port, {}), 1, 'SCRAM login, then SCRAM upstream with the configured password');
  const wrong = await rejection(connect(sluice.port, { password: 'nope' }));
  t.equal(wrong.code, '28P01');
  t.match(wrong.message, wrongPassword);
  const unknown = await rejection(connect(sluice.port, { user: 'mallory', password: 'x' }));
  t.equal(unknown.code, '28P01', 'unknown user: same SQLSTATE');
  t.equal(unknown.message, 'password authentication failed for user "mallory"', 'unknown user: same message');
});

t.test('scram-sha-256 against a stored SCRAM secret (server.user/password for upstream)', async (t) => {
  const secret = await pg.psql("select rolpassword from pg_authid where rolname = 'app'");
  t.match(secret, /^SCRAM-SHA-256\$/);
  const sluice = await startListener(pg, {
    auth_method: 'scram-sha-256',
    users: [{ name: 'app', password: secret }],
    server: { host: pg.host, port: pg.port, user: 'app', password: 'app-secret' },
  });
  t.teardown(() => sluice.close());
  t.equal(await selectOne(sluice.port, {}), 1);
  t.equal((await rejection(connect(sluice.port, { password: 'wrong' }))).code, '28P01');
});

t.test('md5: plain and stored md5 secrets; upstream md5 login', async (t) => {
  const stored = await pg.psql("select rolpassword from pg_authid where rolname = 'md5user'");
  t.match(stored, /^md5[0-9a-f]{32}$/);
  const plain = await startListener(pg, { auth_method: 'md5', users: [{ name: PG_USERS.md5.name, password: PG_USERS.md5.password }] });
  t.teardown(() => plain.close());
  t.equal(await selectOne(plain.port, { user: PG_USERS.md5.name, password: PG_USERS.md5.password }), 1);
  t.equal((await rejection(connect(plain.port, { user: PG_USERS.md5.name, password: 'wrong' }))).code, '28P01');
  t.equal((await rejection(connect(plain.port, { user: 'nobody', password: 'x' }))).code, '28P01');
  const secret = await startListener(pg, {
    auth_method: 'md5',
    users: [{ name: PG_USERS.md5.name, password: stored }],
    server: { host: pg.host, port: pg.port, password: PG_USERS.md5.password },
  });
  t.teardown(() => secret.close());
  t.equal(await selectOne(secret.port, { user: PG_USERS.md5.name, password: PG_USERS.md5.password }), 1);
});

t.test('trust: no password asked; upstream trust login', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'trust' });
  t.teardown(() => sluice.close());
  t.equal(await selectOne(sluice.port, { user: PG_USERS.trust.name, password: undefined }), 1);
});

t.test('passthrough: learns from the upstream (SCRAM, md5, cleartext), rejects wrong passwords, re-checks a changed one', async (t) => {
  const sluice = await startListener(pg, { auth_method: 'passthrough' });
  t.teardown(() => sluice.close());
  for (const user of [PG_USERS.scram, PG_USERS.md5, PG_USERS.cleartext]) {
    t.equal(await selectOne(sluice.port, { user: user.name, password: user.password }), 1, `${user.name}: first login checked upstream`);
    t.equal(await selectOne(sluice.port, { user: user.name, password: user.password }), 1, `${user.name}: second login against the learned password`);
    const err = await rejection(connect(sluice.port, { user: user.name, password: 'wrong' }));
    t.equal(err.code, '28P01', `${user.name}: wrong password refused`);
    t.match(err.message, wrongPassword);
  }
  await pg.psql("create role rotating login password 'first-pw'");
  t.equal(await selectOne(sluice.port, { user: 'rotating', password: 'first-pw' }), 1);
  await pg.psql("alter role rotating password 'second-pw'");
  t.equal(await selectOne(sluice.port, { user: 'rotating', password: 'second-pw' }), 1, 'the new password is checked upstream and accepted');
  t.equal((await rejection(connect(sluice.port, { user: 'rotating', password: 'first-pw' }))).code, '28P01', 'the old one no longer works');
});

t.test('client TLS: psql sslmode=require gets TLS; without tls config SSLRequest is answered N', async (t) => {
  const sluice = await startListener(pg, { tls: { cert_file: cert, key_file: key } });
  t.teardown(() => sluice.close());
  const env = { ...process.env, PGPASSWORD: PG_USERS.scram.password };
  const { stdout } = await execFileAsync('psql', ['-X', '-At', `host=127.0.0.1 port=${sluice.port} user=app dbname=postgres sslmode=require`, '-c', 'select 7', '-c', '\\conninfo'], { env, cwd: '/' });
  t.match(stdout, /^7\n/);
  t.match(stdout, /SSL connection \(protocol: TLSv1\.[23]/, 'psql reports an SSL connection');
  const client = await connect(sluice.port, { ssl: { rejectUnauthorized: false } });
  t.equal((await client.query('select 1 as n')).rows[0].n, 1, 'node-postgres over TLS');
  await client.end();
  const plain = await startListener(pg, {});
  t.teardown(() => plain.close());
  const refused = await rejection(execFileAsync('psql', ['-X', '-At', `host=127.0.0.1 port=${plain.port} user=app dbname=postgres sslmode=require`, '-c', 'select 1'], { env, cwd: '/' }));
  t.match(String((refused as { stderr?: string }).stderr), /server does not support SSL/);
  const { stdout: preferred } = await execFileAsync('psql', ['-X', '-At', `host=127.0.0.1 port=${plain.port} user=app dbname=postgres sslmode=prefer`, '-c', 'select 8'], { env, cwd: '/' });
  t.equal(preferred.trim(), '8', 'sslmode=prefer falls back to plain');
});

t.test('server TLS: require and verify-full with ca_file connect over TLS; a wrong CA fails within connect', async (t) => {
  const sslQuery = 'select ssl from pg_stat_ssl where pid = pg_backend_pid()';
  for (const [tls, ca] of [['require', undefined], ['verify-full', cert], ['prefer', undefined]] as const) {
    const sluice = await startListener(pg, { server: { host: pg.host, port: pg.port, tls, ca_file: ca } });
    const client = await connect(sluice.port);
    t.equal((await client.query(sslQuery)).rows[0].ssl, true, `server.tls ${tls}: upstream connection is TLS`);
    await client.end();
    await sluice.close();
  }
  const plain = await startListener(pg, { server: { host: pg.host, port: pg.port, tls: 'disable' } });
  const client = await connect(plain.port);
  t.equal((await client.query(sslQuery)).rows[0].ssl, false, 'server.tls disable: plain');
  await client.end();
  await plain.close();
  const wrongCa = await startListener(pg, { server: { host: pg.host, port: pg.port, tls: 'verify-full', ca_file: otherCa }, timeouts: { connect: '3s' } });
  t.teardown(() => wrongCa.close());
  const err = await rejection(connect(wrongCa.port));
  t.equal(err.code, '08006', 'an unverifiable server is an upstream failure');
  t.match(err.message, /cannot connect to upstream/);
});
