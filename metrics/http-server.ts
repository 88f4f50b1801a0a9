// The HTTP side: GET /metrics, /healthz, /readyz, /status on metrics.listen. It stays up while
// the process drains, so Kubernetes and Prometheus can still see sluice until it exits.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { ListenerSnapshot } from '../proxy/listener.js';
import { redactStatus, type StatusAccess, statusCallerAllowed } from './status-access.js';

export interface Readiness {
  ready: boolean;
  reason?: string;
}

/** The Prometheus text of GET /metrics: a process's own Metrics, or a cluster primary's sum over its workers. */
export interface MetricsSource {
  render(): Promise<string>;
  readonly contentType: string;
}

/** With workers > 1 the answers come from the workers over IPC, hence the promises. */
export interface HttpDeps {
  metrics: MetricsSource;
  readiness(): Readiness | Promise<Readiness>;
  status(): unknown;
  /** metrics.status_access and status_token: who may read names in /status. */
  statusAccess?: StatusAccess;
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function createHttpServer(deps: HttpDeps): Server {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain', 'method not allowed\n');
      return;
    }
    switch (path) {
      case '/metrics':
        deps.metrics.render().then(
          (text) => send(res, 200, deps.metrics.contentType, text),
          (err: Error) => send(res, 500, 'text/plain', `metrics failed: ${err.message}\n`),
        );
        return;
      case '/healthz':
        send(res, 200, 'text/plain', 'ok\n');
        return;
      case '/readyz':
        Promise.resolve(deps.readiness()).then(
          (readiness) => send(res, readiness.ready ? 200 : 503, 'application/json', `${JSON.stringify(readiness)}\n`),
          (err: Error) => send(res, 503, 'application/json', `${JSON.stringify({ ready: false, reason: err.message })}\n`),
        );
        return;
      case '/status':
        Promise.resolve(deps.status()).then(
          (status) => {
            const shown = statusCallerAllowed(req, deps.statusAccess ?? { mode: 'loopback' }) ? status : redactStatus(status);
            send(res, 200, 'application/json', `${JSON.stringify(shown, null, 2)}\n`);
          },
          (err: Error) => send(res, 500, 'text/plain', `status failed: ${err.message}\n`),
        );
        return;
      default:
        send(res, 404, 'text/plain', 'not found: try /metrics, /healthz, /readyz, /status\n');
    }
  });
  server.keepAliveTimeout = 5000;
  return server;
}

/** The JSON of GET /status: what SHOW POOLS shows, per listener. */
export function statusDocument(snapshots: ListenerSnapshot[]): unknown {
  return {
    listeners: snapshots.map((s) => ({
      protocol: s.protocol,
      name: s.name,
      listen: s.listen,
      upstream: s.upstream,
      accepting: s.accepting,
      upstream_reachable: s.upstreamReachable,
      clients: s.clients,
      pools: s.pools.map((p) => ({
        database: p.database,
        user: p.user,
        cl_active: p.clientsActive,
        cl_waiting: p.clientsWaiting,
        cl_idle: p.clientsIdle,
        sv_active: p.stats.active,
        sv_idle: p.stats.idle,
        sv_opening: p.stats.opening,
        pinned: p.pinned,
        dedicated: p.dedicated,
        pool_size: p.stats.size,
        maxwait_seconds: p.stats.oldestWaitMs / 1000,
        paused: p.stats.paused,
      })),
    })),
  };
}
