// The readiness check of upstreams: every few seconds, a plain TCP connect to each listener's
// upstream. /readyz reports what the last check saw, so a pod whose database is down leaves the
// Service, and comes back once it is up, without waiting for client traffic to find out.
import { connect } from 'node:net';
import { parseHostPort } from './address.js';

export interface ProbeResult {
  reachable: boolean;
  /** Why the last check failed, e.g. "connect ECONNREFUSED 127.0.0.1:5432". */
  reason?: string;
}

const PROBE_TIMEOUT_MS = 2000;

export class UpstreamProbe {
  private readonly results = new Map<string, ProbeResult>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly upstreams: () => string[],
    private readonly intervalMs = 2000,
  ) {}

  /** The last result for "host:port"; undefined before the first check finished. */
  result(upstream: string): ProbeResult | undefined {
    return this.results.get(upstream);
  }

  /** Checks now, then every intervalMs. */
  async start(): Promise<void> {
    await this.checkAll();
    this.timer = setInterval(() => void this.checkAll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async checkAll(): Promise<void> {
    await Promise.all([...new Set(this.upstreams())].map(async (upstream) => this.results.set(upstream, await check(upstream))));
  }
}

function check(upstream: string): Promise<ProbeResult> {
  const { host, port } = parseHostPort(upstream);
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (result: ProbeResult) => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done({ reachable: false, reason: `no answer within ${PROBE_TIMEOUT_MS}ms` }));
    socket.once('connect', () => done({ reachable: true }));
    socket.once('error', (err) => done({ reachable: false, reason: err.message }));
  });
}
