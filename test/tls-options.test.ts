// TLS is what the operator configured, on both sides: tls.min_version / tls.ciphers for clients,
// server.tls_min_version / server.tls_ciphers upstream, and verify-full refuses a certificate
// issued for another host name. Certificates are made with openssl here; the upstream is a real
// Postgres that speaks only TLS 1.2 with one cipher, so each setting has something to refuse.
import { execFileSync } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import t from 'tap';
import { startPostgres } from './harness/postgres-server.js';
import { chownToPostgres, tempDir } from './harness/tools.js';
import { parseConfig } from '../config/load.js';
import { untaggedCode } from '../proxy/postgres/wire-messages.js';
import { StartupCode } from '../proxy/postgres/protocol-codes.js';
import { connect, rejection, startListener } from './pg-support.js';

const certDir = tempDir('tlsopt');
function selfSigned(name: string, subjectAltName: string): { cert: string; key: string } {
  const cert = join(certDir, `${name}.crt`);
  const key = join(certDir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${name}`, '-addext', `subjectAltName=${subjectAltName}`, '-keyout', key, '-out', cert], { stdio: 'pipe' });
  chmodSync(key, 0o600);
  return { cert, key };
}
const local = selfSigned('localhost', 'DNS:localhost,IP:127.0.0.1');
// The upstream's certificate names another host: verify-full to "localhost" must refuse it.
const other = selfSigned('other.example', 'DNS:other.example');
chownToPostgres(certDir);

const UPSTREAM_CIPHER = 'ECDHE-RSA-AES128-GCM-SHA256';
const pg = await startPostgres({
  conf: ['ssl = on', `ssl_cert_file = '${other.cert}'`, `ssl_key_file = '${other.key}'`, "ssl_max_protocol_version = 'TLSv1.2'", `ssl_ciphers = '${UPSTREAM_CIPHER}'`],
});
t.teardown(() => pg.destroy());

async function selectOne(port: number): Promise<number> {
  const client = await connect(port, { ssl: { rejectUnauthorized: false } });
  try {
    return (await client.query('select 1 as n')).rows[0].n;
  } finally {
    await client.end();
  }
}

/** SSLRequest on a raw socket, then a TLS handshake with the given options: resolves with the negotiated protocol or the error. */
function handshake(port: number, options: ConnectionOptions): Promise<{ protocol?: string | null; error?: string }> {
  return new Promise((resolve) => {
    const raw = netConnect(port, '127.0.0.1', () => raw.write(untaggedCode(StartupCode.sslRequest)));
    raw.on('error', (err) => resolve({ error: err.message }));
    raw.once('data', (answer: Buffer) => {
      if (answer[0] !== 0x53) return resolve({ error: `answer ${answer.toString()}` });
      const secure = tlsConnect({ socket: raw, rejectUnauthorized: false, ...options });
      secure.on('secureConnect', () => {
        resolve({ protocol: secure.getProtocol() });
        secure.destroy();
      });
      secure.on('error', (err) => resolve({ error: err.message }));
    });
  });
}

const upstream = (extra: Record<string, unknown>) => ({ host: 'localhost', port: pg.port, tls: 'require', ...extra });

t.test('client side: tls.min_version TLSv1.3 refuses a TLS 1.2 client; tls.ciphers refuses a client without a listed cipher', async (t) => {
  const strict = await startListener(pg, { tls: { cert_file: local.cert, key_file: local.key, min_version: 'TLSv1.3' }, server: upstream({}) });
  t.teardown(() => strict.close());
  t.equal(await selectOne(strict.port), 1, 'a TLS 1.3 client (node-postgres) works');
  const old = await handshake(strict.port, { maxVersion: 'TLSv1.2' });
  t.notOk(old.protocol, 'a client capped at TLS 1.2 gets no session');
  t.match(old.error, /version|alert/i);
  t.equal((await handshake(strict.port, {})).protocol, 'TLSv1.3');

  const picky = await startListener(pg, { tls: { cert_file: local.cert, key_file: local.key, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' }, server: upstream({}) });
  t.teardown(() => picky.close());
  const wrong = await handshake(picky.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' });
  t.notOk(wrong.protocol, 'a TLS 1.2 client offering only an unlisted cipher gets no session');
  t.equal((await handshake(picky.port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' })).protocol, 'TLSv1.2', 'one offering the listed cipher does');
  t.equal(await selectOne(strict.port), 1, 'well-behaved client still works');
});

t.test('server side: server.tls_min_version TLSv1.3 refuses a TLS 1.2 server; server.tls_ciphers must share a cipher with it', async (t) => {
  const ok = await startListener(pg, { server: upstream({ tls_ciphers: UPSTREAM_CIPHER }) });
  t.teardown(() => ok.close());
  const good = await connect(ok.port);
  t.teardown(() => good.end());
  t.equal((await good.query('select cipher from pg_stat_ssl where pid = pg_backend_pid()')).rows[0]?.cipher, UPSTREAM_CIPHER, 'the upstream link uses the listed cipher');

  const tooOld = await startListener(pg, { server: upstream({ tls_min_version: 'TLSv1.3' }) });
  t.teardown(() => tooOld.close());
  const refused = await rejection(connect(tooOld.port));
  t.equal(refused.code, '08006');
  t.match(refused.message, /version|alert/i);

  const noShared = await startListener(pg, { server: upstream({ tls_ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' }) });
  t.teardown(() => noShared.close());
  t.equal((await rejection(connect(noShared.port))).code, '08006', 'no cipher in common: no upstream connection');
  t.equal((await good.query('select 1 as n')).rows[0].n, 1, 'well-behaved client still works');
});

t.test('verify-full refuses a certificate issued for another host name, even from a trusted CA', async (t) => {
  const verified = await startListener(pg, { server: upstream({ tls: 'verify-full', ca_file: other.cert }) });
  t.teardown(() => verified.close());
  const refused = await rejection(connect(verified.port));
  t.equal(refused.code, '08006');
  t.match(refused.message, /does not match|altnames/i, 'the message says the name does not match');
  // the same CA with no name check (require) connects: only the host name was wrong
  const unchecked = await startListener(pg, { server: upstream({}) });
  t.teardown(() => unchecked.close());
  const good = await connect(unchecked.port);
  t.equal((await good.query('select 1 as n')).rows[0].n, 1);
  await good.end();
});

t.test('--check style validation: an unknown cipher list and an old min_version are config errors', async (t) => {
  const yaml = (extra: string) => `postgres:\n  - name: p\n    listen: 127.0.0.1:1\n    server: { host: h, tls: require${extra} }\n`;
  t.throws(() => parseConfig(yaml(', tls_ciphers: "no-such-cipher"'), 'x'), /server\.tls_ciphers: not a cipher list OpenSSL accepts/);
  t.throws(() => parseConfig(yaml(', tls_min_version: TLSv1.1'), 'x'), /server\.tls_min_version: must be one of "TLSv1.2", "TLSv1.3"/);
  t.equal(parseConfig(yaml(''), 'x').postgres[0].server.tls_min_version, 'TLSv1.2', 'TLSv1.2 by default');
});
