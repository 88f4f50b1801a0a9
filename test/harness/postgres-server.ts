// A throwaway PostgreSQL for tests: initdb into a temp dir, start `postgres` on a free loopback
// port, stop it by PID. Roles for every upstream auth method are created up front.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { asPostgresUser, chownToPostgres, findBinary, freePort, postgresBinDirs, tempDir, waitFor, GiveUp } from './tools.js';

const execFileAsync = promisify(execFile);

/** Roles the harness creates, one per upstream auth method (pg_hba.conf below). */
export const PG_USERS = {
  superuser: { name: 'postgres', password: '' },
  scram: { name: 'app', password: 'app-secret' },
  md5: { name: 'md5user', password: 'md5-secret' },
  cleartext: { name: 'plainuser', password: 'plain-secret' },
  trust: { name: 'trustuser', password: '' },
} as const;

export interface PostgresServer {
  host: string;
  port: number;
  dataDir: string;
  pid: number;
  /** Runs SQL as the superuser through psql; returns stdout (unaligned, tuples only). */
  psql(sql: string, database?: string): Promise<string>;
  /** Stops the server (fast shutdown) and waits for it. */
  stop(): Promise<void>;
  /** Kills the postmaster hard (SIGKILL) — for "server died" tests; restart() brings it back. */
  kill(): Promise<void>;
  start(): Promise<void>;
  /** Removes the data directory; the server must be stopped. */
  destroy(): Promise<void>;
}

export interface PostgresOptions {
  /** Extra postgresql.conf lines. */
  conf?: string[];
  maxConnections?: number;
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresServer> {
  const dirs = postgresBinDirs();
  const install = 'apt-get install postgresql';
  const initdb = findBinary('initdb', dirs, install);
  const postgresBin = findBinary('postgres', dirs, install);
  const psqlBin = findBinary('psql', dirs, install);
  const dataDir = tempDir('pg');
  chownToPostgres(dataDir);
  const [initCmd, initArgs] = asPostgresUser(initdb, ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C']);
  execFileSync(initCmd, initArgs, { stdio: 'pipe' });
  const port = await freePort();
  appendFileSync(
    join(dataDir, 'postgresql.conf'),
    [
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${dataDir}'`,
      `max_connections = ${options.maxConnections ?? 300}`,
      'fsync = off',
      'synchronous_commit = off',
      'full_page_writes = off',
      'shared_buffers = 32MB',
      "password_encryption = 'scram-sha-256'",
      ...(options.conf ?? []),
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dataDir, 'pg_hba.conf'),
    [
      'local all all trust',
      `host all ${PG_USERS.superuser.name} 127.0.0.1/32 trust`,
      `host all ${PG_USERS.trust.name} 127.0.0.1/32 trust`,
      `host all ${PG_USERS.md5.name} 127.0.0.1/32 md5`,
      `host all ${PG_USERS.cleartext.name} 127.0.0.1/32 password`,
      'host all all 127.0.0.1/32 scram-sha-256',
      '',
    ].join('\n'),
  );
  chownToPostgres(dataDir);

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const server: PostgresServer = {
    host: '127.0.0.1',
    port,
    dataDir,
    pid: 0,
    async psql(sql, database = 'postgres') {
      const [cmd, args] = asPostgresUser(psqlBin, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-At', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-c', sql]);
      const { stdout } = await execFileAsync(cmd, args, { cwd: '/' });
      return stdout.trim();
    },
    async start() {
      const [cmd, args] = asPostgresUser(postgresBin, ['-D', dataDir]);
      const proc = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], cwd: '/' });
      child = proc;
      let stderr = '';
      proc.stderr?.on('data', (chunk: Buffer) => {
        stderr = (stderr + chunk.toString()).slice(-4000);
      });
      exited = new Promise((resolve) => proc.once('exit', () => resolve()));
      server.pid = proc.pid ?? 0;
      await waitFor(`postgres on port ${port} (stderr: ${stderr})`, async () => {
        if (proc.exitCode !== null) throw new GiveUp(`postgres exited: ${stderr}`);
        return (await server.psql('select 1')) === '1';
      });
    },
    async stop() {
      if (child && child.exitCode === null && child.signalCode === null) {
        process.kill(server.pid, 'SIGINT');
        await exited;
      }
    },
    async kill() {
      if (child && child.exitCode === null && child.signalCode === null) {
        process.kill(server.pid, 'SIGKILL');
        await exited;
        // Backends outlive a SIGKILLed postmaster briefly; wait until the port is free again.
        execFileSync('sh', ['-c', `pkill -9 -u postgres -f -- "-D ${dataDir}" >/dev/null 2>&1 || true`]);
        rmSync(join(dataDir, 'postmaster.pid'), { force: true });
      }
    },
    async destroy() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
  await server.start();
  const role = (name: string, password: string) => `CREATE ROLE ${name} LOGIN PASSWORD '${password}' SUPERUSER;`;
  await server.psql(
    [
      role(PG_USERS.scram.name, PG_USERS.scram.password),
      "SET password_encryption = 'md5';",
      role(PG_USERS.md5.name, PG_USERS.md5.password),
      "SET password_encryption = 'scram-sha-256';",
      role(PG_USERS.cleartext.name, PG_USERS.cleartext.password),
      `CREATE ROLE ${PG_USERS.trust.name} LOGIN SUPERUSER;`,
    ].join(' '),
  );
  return server;
}
