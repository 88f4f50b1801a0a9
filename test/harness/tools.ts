// Finding the real server binaries the tests run, and ports and temp dirs for them.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';


/** A binary from PATH or from the given extra directories; a missing one fails with how to install it. */
export function findBinary(name: string, extraDirs: string[] = [], install = 'apt-get install postgresql redis-server redis-tools'): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), ...extraDirs]) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  throw new Error(`${name} not found on PATH or in ${extraDirs.join(', ') || '(no extra dirs)'}: install it (${install}); .ci/run does this`);
}

/** PostgreSQL's server binaries live outside PATH on Debian. */
export function postgresBinDirs(): string[] {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .sort((a, b) => Number(b) - Number(a))
    .map((version) => join(root, version, 'bin'));
}

/**
 * Ports are drawn from below the kernel's ephemeral range (32768+ here), so an outgoing
 * connection's local port can never take one between this check and the real bind, and
 * each port is handed out once per process and claimed by an exclusive lock file across
 * processes: `listen(0)` alone gave two consecutive calls the same port (the demo's
 * Postgres and Redis listeners collided in CI).
 */
const FIRST_TEST_PORT = 20000;
const TEST_PORT_COUNT = 12000;
const PORT_LOCK_STALE_MS = 60 * 60 * 1000;
const handedOut = new Set<number>();

function claimAcrossProcesses(port: number): boolean {
  const dir = join(tmpdir(), 'sluice-test-ports');
  mkdirSync(dir, { recursive: true });
  const lock = join(dir, String(port));
  try {
    writeFileSync(lock, String(process.pid), { flag: 'wx' });
    return true;
  } catch {
    try {
      const owner = Number(readFileSync(lock, 'utf8'));
      const fresh = Date.now() - statSync(lock).mtimeMs < PORT_LOCK_STALE_MS;
      if (fresh && processAlive(owner)) return false;
      writeFileSync(lock, String(process.pid));
      return true;
    } catch {
      return false;
    }
  }
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = FIRST_TEST_PORT + Math.floor(Math.random() * TEST_PORT_COUNT);
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    if (!claimAcrossProcesses(port)) continue;
    if (await bindable(port)) return port;
  }
  throw new Error('no free loopback port found in the test range');
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `sluice-${prefix}-`));
}

/** Postgres refuses to run as root: run its binaries as the `postgres` user when we are root. */
export function asPostgresUser(binary: string, args: string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return [binary, args];
  return ['setpriv', ['--reuid=postgres', '--regid=postgres', '--init-groups', binary, ...args]];
}

export function chownToPostgres(path: string): void {
  if (process.getuid?.() === 0) execFileSync('chown', ['-R', 'postgres:postgres', path]);
}

/** Thrown from a waitFor check to stop waiting at once (the thing waited for died). */
export class GiveUp extends Error {}

export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 20_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      if (err instanceof GiveUp) throw err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
