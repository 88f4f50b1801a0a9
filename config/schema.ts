// The config schema: one zod source gives the TypeScript types, the runtime check and
// config/sluice.schema.json. Keys are snake_case as in the YAML; durations are parsed to ms.
import { z } from 'zod';
import { parseDurationMs } from './duration.js';

/** A duration string ("250ms", "5s", "10m", "1h") that parses to milliseconds. */
const duration = z
  .string()
  .meta({ description: 'A duration: a number with unit ms, s, m or h. 0s means off.' })
  .transform((text, ctx) => {
    const ms = parseDurationMs(text);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `must be a duration like 250ms, 5s, 10m or 1h, got ${JSON.stringify(text)}` });
      return z.NEVER;
    }
    return ms;
  });

/** "host:port" for a listener. */
const listenAddress = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/, 'must be host:port, like 127.0.0.1:6432')
  .meta({ description: 'Listen address, host:port.' });

const port = z.number().int().min(1).max(65535);
const poolSize = z.number().int().min(1).max(10_000);

/** TLS versions sluice will negotiate at least; older ones are refused (TLSv1.0/1.1 are broken). */
const tlsMinVersion = z.enum(['TLSv1.2', 'TLSv1.3']);
/** An OpenSSL cipher list (TLS 1.2 names and TLS 1.3 suite names); unset = Node's default list. */
const tlsCiphers = z.string().min(1);

const tlsListener = z.strictObject({
  cert_file: z.string().min(1).meta({ description: 'PEM certificate chain presented to clients.' }),
  key_file: z.string().min(1).meta({ description: 'PEM private key for cert_file.' }),
  min_version: tlsMinVersion.default('TLSv1.2').meta({ description: 'Oldest TLS version a client may use: TLSv1.2 or TLSv1.3.' }),
  ciphers: tlsCiphers.optional().meta({ description: 'OpenSSL cipher list offered to clients (e.g. ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_128_GCM_SHA256); unset = Node’s default.' }),
});

const pgUser = z.strictObject({
  name: z.string().min(1),
  password: z.string().meta({ description: 'Plain password, or a SCRAM-SHA-256$ / md5 secret as stored by Postgres.' }),
});

const pgTimeouts = z
  .strictObject({
    connect: duration.prefault('5s').meta({ description: 'Opening and logging in a server connection.' }),
    acquire: duration.prefault('30s').meta({ description: 'How long a client may wait for a server connection.' }),
    server_idle: duration.prefault('10m').meta({ description: 'An idle server connection older than this is closed.' }),
    server_lifetime: duration.prefault('1h').meta({ description: 'A server connection is retired, when idle, after this long.' }),
    client_idle: duration.prefault('0s').meta({ description: 'A client idle between transactions this long is closed.' }),
    idle_in_transaction: duration.prefault('0s').meta({ description: 'A client idle inside a transaction this long is closed.' }),
    query: duration.prefault('0s').meta({ description: 'A query running this long is cancelled.' }),
    client_login: duration.prefault('30s').meta({ description: 'A client must finish its login within this.' }),
    pool_idle: duration.prefault('1m').meta({ description: 'A pool with no clients and no server connections this long is removed, with its metric series (0s = never).' }),
  })
  .prefault({});

const pgPassthrough = z
  .strictObject({
    max_verifications: z.number().int().min(1).default(4).meta({ description: 'Upstream password checks (real logins) running at once for the listener.' }),
    max_user_verifications: z.number().int().min(1).default(2).meta({ description: 'Upstream password checks running at once for one user.' }),
    max_queued_verifications: z.number().int().min(0).default(100).meta({ description: 'Logins waiting for a check slot; past it a login is refused with 53300.' }),
    failure_delay: duration.prefault('500ms').meta({ description: 'After a wrong password, the next check for that (user, source address) waits this long; doubles per further failure.' }),
    max_failure_delay: duration.prefault('30s').meta({ description: 'The longest back-off wait; a source idle for 10 times this starts again.' }),
    recheck_interval: duration.prefault('5m').meta({ description: 'A learned password is checked upstream again once older than this (0s = never), so a rotated password stops working within it.' }),
    max_tracked: z.number().int().min(16).default(10_000).meta({ description: 'Entries kept in each of the learned-password and the failure maps; the oldest goes first.' }),
  })
  .prefault({});

const pgServer = z.strictObject({
  host: z.string().min(1),
  port: port.default(5432),
  tls: z.enum(['disable', 'prefer', 'require', 'verify-full']).default('disable'),
  ca_file: z.string().optional().meta({ description: 'CA bundle for server.tls verify-full.' }),
  tls_min_version: tlsMinVersion.default('TLSv1.2').meta({ description: 'Oldest TLS version sluice accepts from the server: TLSv1.2 or TLSv1.3.' }),
  tls_ciphers: tlsCiphers.optional().meta({ description: 'OpenSSL cipher list sluice offers the server; unset = Node’s default.' }),
  user: z.string().optional().meta({ description: 'Log in upstream as this user instead of the client’s.' }),
  password: z.string().optional().meta({ description: 'Password for server.user.' }),
  database: z.string().optional().meta({ description: 'Upstream database instead of the client’s.' }),
});

export const postgresListenerSchema = z.strictObject({
  name: z.string().min(1).regex(/^[A-Za-z0-9_.-]+$/, 'must be letters, digits, _ . -').meta({ description: 'The `pool` label in metrics.' }),
  listen: listenAddress,
  server: pgServer,
  pool_mode: z.enum(['session', 'transaction', 'statement']).default('transaction'),
  pool_size: poolSize.default(20),
  min_pool_size: z.number().int().min(0).default(0),
  max_client_connections: z.number().int().min(1).default(10_000),
  auth_method: z.enum(['scram-sha-256', 'md5', 'trust', 'passthrough']).default('passthrough'),
  passthrough: pgPassthrough.meta({ description: 'Limits of auth_method passthrough’s upstream password checks.' }),
  max_pools: z.number().int().min(1).default(100).meta({ description: 'Pools (one per database and user) a listener keeps at once; a login needing one more gets 53300.' }),
  users: z.array(pgUser).default([]),
  admin_users: z.array(z.string().min(1)).default([]).meta({ description: 'Users allowed into the admin console (database "sluice").' }),
  tls: tlsListener.optional(),
  max_message_size: z.number().int().min(1024).max(1024 * 1024 * 1024).default(256 * 1024 * 1024).meta({ description: 'Bytes; a longer client message is a protocol violation (08P01).' }),
  max_login_message_size: z
    .number()
    .int()
    .min(1024)
    .max(1024 * 1024)
    .default(64 * 1024)
    .meta({ description: 'Bytes; before authentication a longer client message (password, SASL) is a protocol violation (08P01). PostgreSQL allows 65535 for an auth token.' }),
  prepared_statements: z.boolean().default(true).meta({ description: 'Track protocol-level named prepared statements in transaction and statement mode.' }),
  max_prepared_statements: z.number().int().min(1).default(256).meta({ description: 'Per server connection; the least recently used is closed past this.' }),
  max_client_prepared_statements: z
    .number()
    .int()
    .min(1)
    .default(1000)
    .meta({ description: 'Per client (transaction and statement mode): named prepared statements one client may hold; a Parse of one more closes it with 53400. Needs a restart to change.' }),
  pin_on_session_state: z.boolean().default(true).meta({ description: 'Pin a client to its server when it creates session state (false = PgBouncer behaviour).' }),
  timeouts: pgTimeouts,
});

const redisUser = z.strictObject({ name: z.string().min(1), password: z.string() });

const redisTimeouts = z
  .strictObject({
    connect: duration.prefault('2s'),
    acquire: duration.prefault('5s').meta({ description: 'Waiting for a shared or dedicated connection.' }),
    command: duration.prefault('0s').meta({ description: 'A reply not received in time closes that upstream connection.' }),
    client_idle: duration.prefault('0s'),
  })
  .prefault({});

const redisLimits = z
  .strictObject({
    max_bulk_bytes: z.number().int().min(1).default(512 * 1024 * 1024),
    max_array_elements: z.number().int().min(1).default(1024 * 1024),
    max_inline_bytes: z.number().int().min(16).default(64 * 1024),
  })
  .prefault({});

export const redisListenerSchema = z.strictObject({
  name: z.string().min(1).regex(/^[A-Za-z0-9_.-]+$/, 'must be letters, digits, _ . -'),
  listen: listenAddress,
  server: z.strictObject({
    host: z.string().min(1),
    port: port.default(6379),
    username: z.string().optional(),
    password: z.string().optional(),
    db: z.number().int().min(0).default(0),
  }),
  pool_size: poolSize.default(4),
  max_dedicated_connections: z.number().int().min(0).default(64),
  max_client_connections: z.number().int().min(1).default(10_000),
  password: z.string().optional().meta({ description: 'Clients must AUTH with this.' }),
  users: z.array(redisUser).default([]).meta({ description: 'ACL-style AUTH user pass; each user gets its own pool.' }),
  limits: redisLimits,
  timeouts: redisTimeouts,
});

export const configSchema = z.strictObject({
  metrics: z
    .strictObject({
      listen: listenAddress.default('127.0.0.1:9898'),
      status_access: z
        .enum(['loopback', 'token', 'open'])
        .default('loopback')
        .meta({
          description:
            'Who GET /status shows database and user names and upstream addresses to (others get "(redacted)"): loopback = loopback callers and status_token holders; token = status_token holders only (in a pod, loopback is every container); open = everyone. Needs a restart to change.',
        }),
      status_token: z
        .string()
        .min(16)
        .optional()
        .meta({ description: 'A caller sending Authorization: Bearer <this> sees names in /status (status_access loopback or token).' }),
    })
    .prefault({}),
  log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace']).default('info') }).prefault({}),
  shutdown_timeout: duration.prefault('30s').meta({ description: 'Longest drain after SIGTERM before the rest is closed.' }),
  shutdown_delay: duration.prefault('0s').meta({ description: 'Keep serving this long after SIGTERM before draining.' }),
  workers: z
    .number()
    .int()
    .min(1)
    .max(64)
    .default(1)
    .meta({
      description:
        'Proxy processes. 1 (the default) is one process. N > 1 forks N workers behind a primary that proxies nothing; each pool_size, max_dedicated_connections and max_client_connections is split between them, so the sums stay the configured bounds. Needs a restart to change.',
    }),
  postgres: z.array(postgresListenerSchema).default([]),
  redis: z.array(redisListenerSchema).default([]),
});

export type Config = z.output<typeof configSchema>;
export type PostgresListenerConfig = z.output<typeof postgresListenerSchema>;
export type RedisListenerConfig = z.output<typeof redisListenerSchema>;
