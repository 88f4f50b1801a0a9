// A throwaway redis-server for tests: started on a free loopback port with no persistence,
// stopped by PID. It can be killed and restarted on the same port for fault tests.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { promisify } from 'node:util';
import { findBinary, freePort, waitFor, GiveUp } from './tools.js';

const execFileAsync = promisify(execFile);
const INSTALL = 'apt-get install redis-server redis-tools';

export interface RedisServer {
  host: string;
  port: number;
  pid: number;
  /** Runs redis-cli against this server (not through sluice); returns trimmed stdout. */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
  kill(): Promise<void>;
  start(): Promise<void>;
}

export interface RedisOptions {
  /** Extra redis-server arguments, e.g. ['--requirepass', 'x']. */
  args?: string[];
  /** Password for cli() when the server requires one. */
  password?: string;
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => socket.write('PING\r\n'));
    socket.once('data', (data) => {
      socket.destroy();
      // -NOAUTH also proves the server is up.
      resolve(data.toString().startsWith('+PONG') || data.toString().startsWith('-NOAUTH'));
    });
    socket.once('error', () => resolve(false));
  });
}

export async function startRedis(options: RedisOptions = {}): Promise<RedisServer> {
  const redisBin = findBinary('redis-server', [], INSTALL);
  const cliBin = findBinary('redis-cli', [], INSTALL);
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const server: RedisServer = {
    host: '127.0.0.1',
    port,
    pid: 0,
    async cli(...args) {
      const auth = options.password ? ['--no-auth-warning', '-a', options.password] : [];
      const { stdout } = await execFileAsync(cliBin, ['-h', '127.0.0.1', '-p', String(port), ...auth, ...args]);
      return stdout.trim();
    },
    async start() {
      const proc = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning', '--maxclients', '20000', ...(options.args ?? [])], { stdio: 'ignore' });
      child = proc;
      exited = new Promise((resolve) => proc.once('exit', () => resolve()));
      server.pid = proc.pid ?? 0;
      await waitFor(`redis-server on port ${port}`, () => {
        if (proc.exitCode !== null) throw new GiveUp('redis-server exited');
        return ping(port);
      });
    },
    async stop() {
      if (child && child.exitCode === null && child.signalCode === null) {
        process.kill(server.pid, 'SIGTERM');
        await exited;
      }
    },
    async kill() {
      if (child && child.exitCode === null && child.signalCode === null) {
        process.kill(server.pid, 'SIGKILL');
        await exited;
      }
    },
  };
  await server.start();
  return server;
}
