// Helpers for the Postgres pooler tests: an in-process listener over a real Postgres, a pg
// client factory, and running pgbench/psql/python against the listener.
import { execFile } from 'node:child_process';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pg from 'pg';
import { postgresListenerSchema, type PostgresListenerConfig } from '../config/schema.js';
import { Metrics } from '../metrics/metrics.js';
import type { Listener } from '../proxy/listener.js';
import { createLogger } from '../proxy/log.js';
import { createPostgresListener } from '../proxy/postgres/postgres-listener.js';
import { PG_USERS, type PostgresServer } from './harness/postgres-server.js';
import { freePort } from './harness/tools.js';

export const execFileAsync = promisify(execFile);

export interface RunningListener {
  port: number;
  listener: Listener;
  metrics: Metrics;
  config: PostgresListenerConfig;
  /** Config with overrides, parsed like the YAML would be (durations as strings). */
  reconfigure(overrides: Record<string, unknown>): PostgresListenerConfig;
  close(): Promise<void>;
}

const quiet = new Writable({ write: (_chunk, _enc, done) => done() });

/** A listener over the given Postgres; `overrides` uses YAML shapes (timeouts as "1s"). */
export async function startListener(server: PostgresServer, overrides: Record<string, unknown> = {}): Promise<RunningListener> {
  const port = await freePort();
  const build = (extra: Record<string, unknown>) =>
    postgresListenerSchema.parse({ name: 'pg', listen: `127.0.0.1:${port}`, server: { host: server.host, port: server.port }, ...extra });
  const config = build(overrides);
  const metrics = new Metrics();
  const log = createLogger(process.env.SLUICE_TEST_LOG ?? 'silent', process.env.SLUICE_TEST_LOG ? undefined : quiet);
  const listener = createPostgresListener(config, { log, metrics });
  await listener.start();
  return {
    port,
    listener,
    metrics,
    config,
    reconfigure: (extra) => build({ ...overrides, ...extra }),
    async close() {
      listener.close();
    },
  };
}

export type ClientOptions = Partial<pg.ClientConfig>;

/** A node-postgres client logged in through the listener as the SCRAM user by default. */
export async function connect(port: number, options: ClientOptions = {}): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port,
    user: PG_USERS.scram.name,
    password: PG_USERS.scram.password,
    database: 'postgres',
    ...options,
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** Resolves with the error a promise rejects with; fails the test if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await promise;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

/** Server connections open to a database, as pg_stat_activity sees them. */
export async function backendsIn(server: PostgresServer, database: string): Promise<number> {
  return Number(await server.psql(`select count(*) from pg_stat_activity where datname = '${database}' and backend_type = 'client backend'`));
}

let databases = 0;
/** A new database owned by the SCRAM user, so server counts of one test are not mixed with another's. */
export async function freshDatabase(server: PostgresServer, prefix = 'db'): Promise<string> {
  const name = `${prefix}_${++databases}`;
  await server.psql(`create database ${name} owner ${PG_USERS.scram.name}`);
  return name;
}

export async function psqlThrough(port: number, sql: string, env: NodeJS.ProcessEnv = {}, user: string = PG_USERS.scram.name, database = 'postgres'): Promise<string> {
  const { stdout } = await execFileAsync('psql', ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', user, '-d', database, '-c', sql], {
    env: { ...process.env, PGPASSWORD: PG_USERS.scram.password, PGCONNECT_TIMEOUT: '10', ...env },
    cwd: '/',
  });
  return stdout.trim();
}
