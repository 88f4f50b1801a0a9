// Passthrough authentication's upstream password checks, bounded so that wrong passwords cannot
// be turned into upstream logins without limit (each check is a real login on the server and
// holds one of its max_connections slots while it runs):
//
//   login ─▶ learned & fresh? ──yes──▶ accepted locally
//              │ no
//              ▼
//   back-off for (user, source address) after failures: wait until notBeforeMs
//              ▼
//   same (database, user, password) already being checked? ──▶ share that check
//              ▼
//   slot free (listener: max_verifications, user: max_user_verifications)? ──▶ run
//              │ no: queue FIFO (max_queued_verifications; past it: refused, AuthThrottledError)
//              ▼
//   accepted ─▶ learned (password, verifiedAtMs), failures of (user, address) forgotten
//   rejected ─▶ failures++ (the next try waits failure_delay × 2^(failures-1), up to
//               max_failure_delay); a learned password equal to it is dropped
//
// A learned password is trusted for recheck_interval, then checked upstream again on the next
// login that uses it: a password rotated with ALTER ROLE stops working through sluice within
// that interval (and at once when a pool login with it is rejected: `forget`). Both maps hold
// at most max_tracked entries; the oldest goes first.
import { setTimeout as sleep } from 'node:timers/promises';
import { AuthThrottledError } from '../errors.js';

export interface PassthroughLimits {
  /** Upstream checks running at once for the listener. */
  maxConcurrent: number;
  /** Upstream checks running at once for one user. */
  maxPerUser: number;
  /** Logins waiting for a slot; past this they are refused. */
  maxQueued: number;
  /** The wait after the first failure of a (user, address); doubles per further failure. */
  failureDelayMs: number;
  maxFailureDelayMs: number;
  /** A learned password is checked upstream again once it is older than this; 0 = never. */
  recheckMs: number;
  /** Entries in the learned and the failure maps, each. */
  maxTracked: number;
}

/** Logs in upstream: true when the server accepted the password, false when it rejected it; rejects when it could not tell. */
export type UpstreamCheck = (database: string, user: string, password: string) => Promise<boolean>;

/** The client a check is for: its source address (the back-off key) and whether it is still there. */
export interface VerifyingClient {
  addr: string;
  gone(): boolean;
  /** Aborted when the client's connection closes: a back-off wait ends then. */
  signal?: AbortSignal;
}

interface Learned {
  password: string;
  verifiedAtMs: number;
}

interface Failures {
  count: number;
  lastMs: number;
  notBeforeMs: number;
}

interface QueuedCheck {
  user: string;
  start: () => void;
  /** Some client still waits for this check's answer. */
  wanted: () => boolean;
  /** Nobody does: the check is not run (no upstream login for nobody). */
  drop: () => void;
}

/** A check shared by the clients that asked for it. */
interface SharedCheck {
  result: Promise<boolean | undefined>;
  clients: VerifyingClient[];
}

/** A failure record older than this many max_failure_delays is forgotten: the source starts again at failure_delay. */
const FAILURE_MEMORY_FACTOR = 10;

export class PassthroughVerifier {
  private readonly learned = new Map<string, Learned>();
  private readonly failures = new Map<string, Failures>();
  /** Concurrent logins of one user with one password share one upstream check. */
  private readonly sharing = new Map<string, SharedCheck>();
  private running = 0;
  private readonly runningPerUser = new Map<string, number>();
  private readonly queue: QueuedCheck[] = [];

  constructor(
    private limits: PassthroughLimits,
    private readonly check: UpstreamCheck,
  ) {}

  reconfigure(limits: PassthroughLimits): void {
    this.limits = limits;
    this.pump();
  }

  /** The password to log in upstream with for a pool of this user, when one was accepted. */
  learnedPassword(user: string): string | undefined {
    return this.learned.get(user)?.password;
  }

  /** A password that the upstream accepted recently enough to accept locally. */
  acceptsLocally(user: string, password: string, safeEqual: (a: string, b: string) => boolean, nowMs = Date.now()): boolean {
    const known = this.learned.get(user);
    if (known === undefined || !safeEqual(known.password, password)) return false;
    return this.limits.recheckMs === 0 || nowMs - known.verifiedAtMs < this.limits.recheckMs;
  }

  /** The upstream accepted a login of this user once (its name may be a metric label). */
  knowsUser(user: string): boolean {
    return this.learned.has(user);
  }

  /** The server rejected a login with the learned password (rotated): the next login is checked upstream. */
  forget(user: string): void {
    this.learned.delete(user);
  }

  forgetAll(): void {
    this.learned.clear();
  }

  /** Sizes, for tests and snapshots. */
  get tracked(): { learned: number; failures: number; queued: number; running: number } {
    return { learned: this.learned.size, failures: this.failures.size, queued: this.queue.length, running: this.running };
  }

  /** Checks a password upstream within the limits; see the diagram at the top. */
  async verify(database: string, user: string, password: string, client: VerifyingClient): Promise<boolean> {
    const key = `${user}\0${client.addr}`;
    const waitMs = this.backoffMs(key);
    if (waitMs > 0) {
      try {
        await sleep(waitMs, undefined, { signal: client.signal, ref: false });
      } catch {
        return false; // the client left while it waited
      }
      if (client.gone()) return false;
    }
    const shareKey = `${database}\0${user}\0${password}`;
    let shared = this.sharing.get(shareKey);
    if (shared === undefined) {
      const clients: VerifyingClient[] = [];
      const wanted = () => clients.some((c) => !c.gone());
      const result = this.limited(user, wanted, () => this.check(database, user, password)).finally(() => this.sharing.delete(shareKey));
      shared = { result, clients };
      this.sharing.set(shareKey, shared);
    }
    shared.clients.push(client);
    const ok = await shared.result;
    if (ok === undefined) return false; // not checked: every client that asked had left
    if (ok) {
      this.failures.delete(key);
      this.remember(this.learned, user, { password, verifiedAtMs: Date.now() });
    } else {
      this.failed(key);
      if (this.learned.get(user)?.password === password) this.learned.delete(user);
    }
    return ok;
  }

  /** How long a (user, address) must still wait after its failures; 0 when it need not. */
  private backoffMs(key: string): number {
    const record = this.failures.get(key);
    if (record === undefined) return 0;
    const now = Date.now();
    if (now - record.lastMs > this.limits.maxFailureDelayMs * FAILURE_MEMORY_FACTOR) {
      this.failures.delete(key);
      return 0;
    }
    return Math.max(0, record.notBeforeMs - now);
  }

  private failed(key: string): void {
    const now = Date.now();
    const previous = this.failures.get(key);
    const count = previous === undefined || now - previous.lastMs > this.limits.maxFailureDelayMs * FAILURE_MEMORY_FACTOR ? 1 : previous.count + 1;
    // 2^(count-1) capped before it can overflow
    const delayMs = Math.min(this.limits.maxFailureDelayMs, this.limits.failureDelayMs * 2 ** Math.min(count - 1, 30));
    this.remember(this.failures, key, { count, lastMs: now, notBeforeMs: now + delayMs });
  }

  /** Sets a map entry as the newest, evicting the oldest past max_tracked. */
  private remember<V>(map: Map<string, V>, key: string, value: V): void {
    map.delete(key);
    while (map.size >= this.limits.maxTracked) {
      const oldest = map.keys().next().value as string;
      map.delete(oldest);
    }
    map.set(key, value);
  }

  /** Runs `work` once a listener slot and a user slot are free; undefined when it was dropped unwanted. */
  private limited(user: string, wanted: () => boolean, work: () => Promise<boolean>): Promise<boolean | undefined> {
    return new Promise<boolean | undefined>((resolve, reject) => {
      const start = () => {
        this.running++;
        this.runningPerUser.set(user, (this.runningPerUser.get(user) ?? 0) + 1);
        work()
          .then(resolve, reject)
          .finally(() => {
            this.running--;
            const left = (this.runningPerUser.get(user) ?? 1) - 1;
            if (left > 0) this.runningPerUser.set(user, left);
            else this.runningPerUser.delete(user);
            this.pump();
          });
      };
      if (this.queue.length === 0 && this.hasSlot(user)) start();
      else if (this.queue.length >= this.limits.maxQueued && this.dropUnwanted() === 0) reject(new AuthThrottledError(this.queue.length));
      else this.queue.push({ user, start, wanted, drop: () => resolve(undefined) });
    });
  }

  private hasSlot(user: string): boolean {
    return this.running < this.limits.maxConcurrent && (this.runningPerUser.get(user) ?? 0) < this.limits.maxPerUser;
  }

  /** Removes queued checks nobody waits for any more; returns how many went. */
  private dropUnwanted(): number {
    const before = this.queue.length;
    for (let i = this.queue.length - 1; i >= 0; i--) {
      const queued = this.queue[i];
      if (!queued.wanted()) {
        this.queue.splice(i, 1);
        queued.drop();
      }
    }
    return before - this.queue.length;
  }

  /** Starts queued checks in order, skipping users whose slots are taken and dropping unwanted ones. */
  private pump(): void {
    for (let i = 0; i < this.queue.length && this.running < this.limits.maxConcurrent; ) {
      const next = this.queue[i];
      if (!next.wanted()) {
        this.queue.splice(i, 1);
        next.drop();
      } else if (this.hasSlot(next.user)) {
        this.queue.splice(i, 1);
        next.start();
      } else i++;
    }
  }
}
