// Placeholder until the Redis pooler lands: binds the address, accepts and closes.
import { createServer, type Server } from 'node:net';
import type { RedisListenerConfig } from '../../config/schema.js';
import { bindServer, type Listener, type ListenerDeps, type ListenerSnapshot } from '../listener.js';

export function createRedisListener(config: RedisListenerConfig, _deps: ListenerDeps): Listener {
  let server: Server | undefined;
  let accepting = false;
  return {
    protocol: 'redis',
    name: config.name,
    async start() {
      server = createServer((socket) => socket.destroy());
      await bindServer(server, config.listen);
      accepting = true;
    },
    drain() {
      accepting = false;
      server?.close();
    },
    clientCount: () => 0,
    close() {
      accepting = false;
      server?.close();
    },
    reload: () => ({ needsRestart: [] }),
    snapshot: (): ListenerSnapshot => ({
      protocol: 'redis',
      name: config.name,
      listen: config.listen,
      upstream: `${config.server.host}:${config.server.port}`,
      clients: 0,
      pools: [],
      totals: { bytesReceived: 0, bytesSent: 0, transactions: 0, queries: 0 },
      upstreamReachable: true,
      accepting,
    }),
  };
}
