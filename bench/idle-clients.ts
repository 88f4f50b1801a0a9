// Many clients that log in and then sit idle, to measure what an idle client costs a proxy.
// Postgres clients speak just enough protocol to finish a trust login (StartupMessage ->
// AuthenticationOk ... ReadyForQuery); Redis clients send one PING and wait for +PONG
// (as a RESP array: twemproxy does not parse inline commands).
import { createConnection, type Socket } from 'node:net';

export interface IdleClients {
  opened: number;
  failed: number;
  firstError?: string;
  close(): Promise<void>;
}

/** StartupMessage v3.0 with user and database (Postgres protocol, "Message Formats"). */
function startupMessage(user: string, database: string): Buffer {
  const body = Buffer.from(`user\0${user}\0database\0${database}\0application_name\0sluice-bench-idle\0\0`);
  const message = Buffer.alloc(8 + body.length);
  message.writeInt32BE(message.length, 0);
  message.writeInt32BE(196608, 4);
  body.copy(message, 8);
  return message;
}

/** Resolves once a login reaches ReadyForQuery ('Z'); rejects on ErrorResponse or a password request. */
function postgresLogin(host: string, port: number, user: string, database: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port });
    let pending: Buffer = Buffer.alloc(0);
    const fail = (message: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(message));
    };
    const timer = setTimeout(() => fail(`login timed out after ${timeoutMs}ms`), timeoutMs);
    socket.once('connect', () => socket.write(startupMessage(user, database)));
    const onData = (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5) {
        const type = pending[0];
        const length = pending.readInt32BE(1);
        if (pending.length < 1 + length) return;
        if (type === 0x45 /* E */) {
          const text = pending.subarray(5, 1 + length).toString('utf8').split('\0').find((f) => f.startsWith('M'));
          return fail(`ErrorResponse: ${text?.slice(1) ?? 'unknown'}`);
        }
        if (type === 0x52 /* R */ && pending.readInt32BE(5) !== 0) return fail(`server asked for a password (auth code ${pending.readInt32BE(5)})`);
        if (type === 0x5a /* Z */) {
          clearTimeout(timer);
          socket.off('data', onData);
          socket.off('close', onClose);
          // Idle from here: nothing is read until the benchmark closes the socket.
          resolve(socket);
          return;
        }
        pending = pending.subarray(1 + length);
      }
    };
    const onClose = () => fail('connection closed during login');
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', (err) => fail(err.message));
  });
}

function redisPing(host: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host, port }, () => socket.write('*1\r\n$4\r\nPING\r\n'));
    let text = '';
    const fail = (message: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(message));
    };
    const timer = setTimeout(() => fail(`PING timed out after ${timeoutMs}ms`), timeoutMs);
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.startsWith('+PONG\r\n')) {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('close', onClose);
        resolve(socket);
      } else if (text.includes('\r\n')) fail(`PING answered ${JSON.stringify(text.slice(0, 80))}`);
    };
    const onClose = () => fail('connection closed before +PONG');
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', (err) => fail(err.message));
  });
}

/** Opens n clients, at most `concurrency` logging in at once so listen backlogs are not the limit. */
async function openMany(n: number, concurrency: number, open: () => Promise<Socket>): Promise<IdleClients> {
  const sockets: Socket[] = [];
  let failed = 0;
  let firstError: string | undefined;
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      try {
        const socket = await open();
        // Errors after login (e.g. the proxy closing idle clients) must not crash the bench.
        socket.on('error', () => {});
        sockets.push(socket);
      } catch (err) {
        failed++;
        firstError ??= (err as Error).message;
        // A target that refuses everything fails fast; stop hammering it after many failures.
        if (failed >= 200 && sockets.length === 0) next = n;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return {
    opened: sockets.length,
    failed,
    firstError,
    close: async () => {
      await Promise.all(
        sockets.map(
          (s) =>
            new Promise<void>((resolve) => {
              if (s.destroyed) return resolve();
              s.once('close', () => resolve());
              s.destroy();
            }),
        ),
      );
    },
  };
}

export function openIdlePostgresClients(host: string, port: number, n: number): Promise<IdleClients> {
  return openMany(n, 64, () => postgresLogin(host, port, 'postgres', 'postgres', 30_000));
}

export function openIdleRedisClients(host: string, port: number, n: number): Promise<IdleClients> {
  return openMany(n, 64, () => redisPing(host, port, 30_000));
}
