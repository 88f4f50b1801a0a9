// A Metrics registry with every sluice series present: fake listener snapshots for one
// Postgres and one Redis pool, and one call of every recording handle. Catalogue and promtool
// tests use it so they see label sets that a placeholder listener would not yet produce.
import type { ListenerSnapshot, Protocol } from '../proxy/listener.js';
import { Metrics } from '../metrics/metrics.js';

function snapshot(protocol: Protocol, name: string, database: string, user: string): ListenerSnapshot {
  return {
    protocol,
    name,
    listen: '127.0.0.1:0',
    upstream: '127.0.0.1:1',
    clients: 7,
    accepting: true,
    upstreamReachable: true,
    totals: { bytesReceived: 1200, bytesSent: 3400, transactions: 5, queries: 9 },
    pools: [
      {
        database,
        user,
        stats: { size: 5, idle: 1, active: 3, opening: 1, waiting: 2, oldestWaitMs: 250, paused: false },
        clientsActive: 3,
        clientsWaiting: 2,
        clientsIdle: 2,
        pinned: 1,
        dedicated: protocol === 'redis' ? 1 : 0,
      },
    ],
  };
}

/** A registry that has recorded something in every sluice metric (process metrics included). */
export function populatedMetrics(): Metrics {
  const metrics = new Metrics();
  metrics.addSource(() => [snapshot('postgres', 'main', 'app', 'app'), snapshot('redis', 'cache', '0', 'default')]);
  for (const [protocol, pool, database, user] of [
    ['postgres', 'main', 'app', 'app'],
    ['redis', 'cache', '0', 'default'],
  ] as const) {
    const p = metrics.forPool(protocol, pool, database, user);
    p.waitSeconds.observe(0.002);
    p.transactionSeconds.observe(0.01);
    p.querySeconds.observe(0.004);
    p.serverOpened();
    p.serverClosed('idle');
    p.timeout('timeouts.acquire');
    p.error('57');
    p.pin('session');
    p.unpin('unlisten');
    const l = metrics.forListener(protocol, pool);
    l.accepted();
    l.refused('max_clients');
    l.authFailed(user);
    l.cancel('forwarded');
    l.timeout('timeouts.client_idle');
    l.error('08');
    l.command('string', 0.0003);
  }
  metrics.configReloaded('success');
  return metrics;
}
