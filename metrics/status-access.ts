// Who may read names in GET /status: database and user names and upstream addresses tell an
// attacker on the pod network what to aim at, so by default (status_access loopback) they are
// shown only to loopback callers (the pod itself, `kubectl port-forward`) and to callers
// presenting metrics.status_token; `token` drops the loopback exception (every container of a
// pod shares its loopback), `open` shows them to all. Everyone else gets the same document with
// those values replaced. Counts stay visible to all; /healthz, /readyz, /metrics are unaffected.
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

export const REDACTED = '(redacted)';

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** metrics.status_access and metrics.status_token. */
export interface StatusAccess {
  mode: 'loopback' | 'token' | 'open';
  token?: string;
}

/** open: anyone; loopback: a loopback peer or a token holder; token: a token holder only. */
export function statusCallerAllowed(req: IncomingMessage, access: StatusAccess): boolean {
  if (access.mode === 'open') return true;
  if (access.mode === 'loopback' && isLoopback(req.socket.remoteAddress)) return true;
  const token = access.token;
  if (token === undefined) return false;
  const header = req.headers.authorization ?? '';
  return header.startsWith('Bearer ') && sameToken(header.slice('Bearer '.length).trim(), token);
}

interface StatusShape {
  listeners?: Array<{ upstream?: unknown; pools?: Array<{ database?: unknown; user?: unknown }> }>;
}

/** The same document (same keys, same pools, same counts) without names and upstream addresses. */
export function redactStatus(status: unknown): unknown {
  const doc = status as StatusShape;
  if (!Array.isArray(doc?.listeners)) return status;
  return {
    ...doc,
    listeners: doc.listeners.map((listener) => ({
      ...listener,
      upstream: REDACTED,
      pools: (listener.pools ?? []).map((pool) => ({ ...pool, database: REDACTED, user: REDACTED })),
    })),
  };
}
