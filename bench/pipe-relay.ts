// The floor: a plain Node TCP relay that pipe()s bytes both ways, one upstream socket per client.
// No pooling and no parsing, so any proxy written in Node should land between this and direct.
// Run as its own process (so its CPU is measured alone): node dist/bench/pipe-relay.js PORT HOST:PORT
import { createConnection, createServer, type Socket } from 'node:net';

function relay(listenPort: number, upstreamHost: string, upstreamPort: number): void {
  const server = createServer((client: Socket) => {
    const upstream = createConnection({ host: upstreamHost, port: upstreamPort });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    client.pipe(upstream);
    upstream.pipe(client);
    // Either side failing ends both; errors are expected when a benchmark tears clients down.
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
  });
  server.maxConnections = 100_000;
  server.listen({ host: '127.0.0.1', port: listenPort, backlog: 4096 }, () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => process.exit(0));
}

const [port, target] = process.argv.slice(2);
const [host, upstreamPort] = (target ?? '').split(':');
if (!port || !host || !upstreamPort) {
  process.stderr.write('usage: pipe-relay PORT HOST:PORT\n');
  process.exit(1);
}
relay(Number(port), host, Number(upstreamPort));
