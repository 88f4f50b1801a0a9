// What the primary serves when `workers` > 1: one view summed over the workers. Metrics go
// through prom-client's aggregate (each metric's `aggregator`: sum unless it says otherwise);
// listener snapshots (GET /status) are merged here, pool by pool, the same way.
import { AggregatorRegistry } from 'prom-client';
import type { ListenerSnapshot, PoolSnapshot } from '../proxy/listener.js';
import type { MetricsJson } from './metrics.js';

/** Prometheus text of several registries' JSON, summed series by series. */
export async function aggregateMetrics(parts: MetricsJson[]): Promise<{ text: string; contentType: string }> {
  const registry = AggregatorRegistry.aggregate(parts);
  return { text: await registry.metrics(), contentType: registry.contentType };
}

function mergePools(a: PoolSnapshot, b: PoolSnapshot): PoolSnapshot {
  return {
    database: a.database,
    user: a.user,
    stats: {
      size: a.stats.size + b.stats.size,
      idle: a.stats.idle + b.stats.idle,
      active: a.stats.active + b.stats.active,
      opening: a.stats.opening + b.stats.opening,
      waiting: a.stats.waiting + b.stats.waiting,
      oldestWaitMs: Math.max(a.stats.oldestWaitMs, b.stats.oldestWaitMs),
      paused: a.stats.paused || b.stats.paused,
    },
    clientsActive: a.clientsActive + b.clientsActive,
    clientsWaiting: a.clientsWaiting + b.clientsWaiting,
    clientsIdle: a.clientsIdle + b.clientsIdle,
    pinned: a.pinned + b.pinned,
    dedicated: a.dedicated + b.dedicated,
  };
}

/**
 * One snapshot per listener from every worker's: counts and sizes add up, the longest wait is
 * the longest anywhere, a listener accepts (and its upstream is reachable) only if it does on
 * every worker. A pool some worker has not opened yet appears with the others' numbers.
 */
export function mergeSnapshots(perWorker: ListenerSnapshot[][]): ListenerSnapshot[] {
  const merged = new Map<string, ListenerSnapshot>();
  for (const snapshots of perWorker) {
    for (const snap of snapshots) {
      const key = `${snap.protocol}\0${snap.name}`;
      const seen = merged.get(key);
      if (!seen) {
        merged.set(key, { ...snap, totals: { ...snap.totals }, pools: [...snap.pools] });
        continue;
      }
      seen.clients += snap.clients;
      seen.totals.bytesReceived += snap.totals.bytesReceived;
      seen.totals.bytesSent += snap.totals.bytesSent;
      seen.totals.transactions += snap.totals.transactions;
      seen.totals.queries += snap.totals.queries;
      seen.accepting &&= snap.accepting;
      seen.upstreamReachable &&= snap.upstreamReachable;
      for (const pool of snap.pools) {
        const i = seen.pools.findIndex((p) => p.database === pool.database && p.user === pool.user);
        if (i < 0) seen.pools.push(pool);
        else seen.pools[i] = mergePools(seen.pools[i], pool);
      }
    }
  }
  return [...merged.values()];
}
