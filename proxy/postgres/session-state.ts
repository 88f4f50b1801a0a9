// Which session state a client has created that outlives its transaction, judged from the SQL
// it sends (sql-scan.ts): in transaction mode such a client is pinned to its server, because
// another client must never see its temp tables, locks, LISTENs or settings, and it must not
// lose them. Settings the pooler replays itself on every server do not pin. The pin ends when
// the client's own SQL provably removed all of that state (SessionPins).
import { TxStatus } from './protocol-codes.js';
import type { SessionStateEffect } from './sql-scan.js';

/** Why a client was pinned; also the label of the pin-reasons counter. */
export type PinReason = 'prepare' | 'listen' | 'temp-table' | 'advisory-lock' | 'with-hold-cursor' | 'set' | 'set-config';

/**
 * Parameters the pooler re-applies when a client gets another server, so SET of them needs no
 * pin: the ones PostgreSQL reports with ParameterStatus (GUC_REPORT), which client-session.ts
 * tracks. Lower case. search_path is reported only from PostgreSQL 18, so it pins before that.
 */
export const REPLAYED_PARAMETERS: ReadonlySet<string> = new Set(['application_name', 'client_encoding', 'datestyle', 'intervalstyle', 'timezone', 'standard_conforming_strings']);

/** The pin reason of one effect, or undefined when it leaves nothing behind that needs the same server. */
export function pinReasonOf(effect: SessionStateEffect, replayed: ReadonlySet<string> = REPLAYED_PARAMETERS): PinReason | undefined {
  switch (effect.kind) {
    case 'prepare':
    case 'listen':
    case 'temp-table':
    case 'advisory-lock':
    case 'with-hold-cursor':
      return effect.kind;
    case 'set':
      return replayed.has(effect.name) || isDefault(effect) ? undefined : 'set';
    case 'set-config':
      return effect.name !== '' && replayed.has(effect.name) ? undefined : 'set-config';
    default:
      // UNLISTEN, RESET, DISCARD, DEALLOCATE, CLOSE, pg_advisory_unlock_all end state (SessionPins)
      return undefined;
  }
}

/** The first effect in `effects` that pins, as its reason. */
export function firstPinReason(effects: readonly SessionStateEffect[] | undefined, replayed?: ReadonlySet<string>): PinReason | undefined {
  if (effects === undefined) return undefined;
  for (const effect of effects) {
    const reason = pinReasonOf(effect, replayed);
    if (reason) return reason;
  }
  return undefined;
}

/** `SET name TO DEFAULT` (the keyword, not the string 'default'): a RESET in disguise. */
function isDefault(effect: SessionStateEffect): boolean {
  return effect.kind === 'set' && effect.value !== undefined && effect.value.length === 7 && effect.value.toLowerCase() === 'default';
}

/** Settings RESET ALL leaves alone (GUC_NO_RESET_ALL); only DISCARD ALL or their own RESET end them. */
const NOT_RESET_BY_RESET_ALL: ReadonlySet<string> = new Set(['role', 'session_authorization', '']);

/** One piece of session state that keeps a client pinned, and when it was created. */
interface HeldState {
  reason: PinReason;
  /** Channel, statement, cursor or parameter name; '' for temp tables and advisory locks. */
  name: string;
  seq: number;
}

/** A statement that removes state, sent but not yet known to have taken effect. */
interface PendingRelease {
  effect: SessionStateEffect;
  seq: number;
  /** Which ReadyForQuery (counted from this object's creation) ends the Query it is in. */
  ready: number;
}

/**
 * What keeps one client pinned, as a set of pieces of state rather than a single reason, so the
 * pin can end once the client's own SQL removed the last of them (UNLISTEN *, DISCARD ALL,
 * DEALLOCATE ALL, pg_advisory_unlock_all(), DISCARD TEMP, CLOSE ALL, RESET …).
 *
 * A removal counts only when it certainly took effect: it comes from a simple Query (its text is
 * exactly what runs; an extended-protocol statement may be executed later, twice or never), and
 * the transaction it ran in ended without an ErrorResponse or a ROLLBACK tag on the way, at a
 * ReadyForQuery that says idle. Anything else keeps the client pinned: the safe side.
 *
 *   sent("LISTEN a")        held {listen a#1}
 *   sent("UNLISTEN *")      pending [unlisten * #2, ends at ReadyForQuery n]
 *   ready('I') (n-th)       held {}  → unpin
 *
 * State created after a removal in the same pipeline (`UNLISTEN *; LISTEN b`) survives it: a
 * removal only takes pieces older than itself (seq order is send order).
 */
export class SessionPins {
  private readonly held = new Map<string, HeldState>();
  private pending: PendingRelease[] = [];
  private seq = 0;
  /** ReadyForQuery messages the client received since this object exists. */
  private readySeen = 0;

  constructor(private readonly replayed: ReadonlySet<string> = REPLAYED_PARAMETERS) {}

  get pinned(): boolean {
    return this.held.size > 0;
  }

  /** The reasons held now, each once (SHOW, tests). */
  reasons(): PinReason[] {
    return [...new Set([...this.held.values()].map((h) => h.reason))];
  }

  /**
   * The effects of one client message sent now: a Query (`removals` true) or a Parse (its text may
   * pin; removals are not trusted). `owedBefore` is how many ReadyForQuery replies the client is
   * owed for earlier requests. Returns the first pin reason it adds, if any.
   */
  sent(effects: readonly SessionStateEffect[], owedBefore: number, removals: boolean): PinReason | undefined {
    let added: PinReason | undefined;
    for (const effect of effects) {
      const seq = ++this.seq;
      const reason = pinReasonOf(effect, this.replayed);
      if (reason) {
        const name = reason === 'temp-table' || reason === 'advisory-lock' ? '' : effect.name;
        this.held.set(`${reason}\0${name}`, { reason, name, seq });
        added ??= reason;
      } else if (removals && this.held.size > 0 && releaseLabel(effect) !== undefined) {
        this.pending.push({ effect, seq, ready: this.readySeen + owedBefore + 1 });
      }
    }
    return added;
  }

  /**
   * An ErrorResponse, or a ROLLBACK tag: removals in the request running now, and those waiting for
   * the open transaction to end, did not (or may not) take effect.
   */
  failed(): void {
    if (this.pending.length === 0) return;
    const running = this.readySeen + 1;
    this.pending = this.pending.filter((p) => p.ready > running);
  }

  /**
   * A ReadyForQuery reached the client. At idle, removals whose Query has ended apply; returns
   * what removed the last piece of state when this emptied the set (the client may be unpinned).
   */
  ready(status: number): string | undefined {
    this.readySeen++;
    if (status !== TxStatus.idle || this.pending.length === 0) return undefined;
    const wasPinned = this.held.size > 0;
    let last: string | undefined;
    const later: PendingRelease[] = [];
    for (const p of this.pending) {
      if (p.ready > this.readySeen) later.push(p);
      else if (this.release(p)) last = releaseLabel(p.effect);
    }
    this.pending = later;
    return wasPinned && this.held.size === 0 ? last : undefined;
  }

  /** Drops the held state `p` removes; true when it removed any. */
  private release(p: PendingRelease): boolean {
    const { kind, name } = p.effect;
    let removed = false;
    for (const [key, h] of this.held) {
      if (h.seq > p.seq || !removes(kind, name, h)) continue;
      this.held.delete(key);
      removed = true;
    }
    return removed;
  }
}

/** Whether a removal statement (kind, name) ends the held state `h`. */
function removes(kind: SessionStateEffect['kind'], name: string, h: HeldState): boolean {
  switch (kind) {
    case 'discard':
      // DISCARD ALL = CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL;
      // UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES
      return name === 'all' || (name === 'temp' && h.reason === 'temp-table');
    case 'unlisten':
      return h.reason === 'listen' && (name === '*' || name === h.name);
    case 'deallocate':
      return h.reason === 'prepare' && (name === 'all' || name === h.name);
    case 'advisory-unlock-all':
      return h.reason === 'advisory-lock';
    case 'close-cursor':
      return h.reason === 'with-hold-cursor' && (name === 'all' || name === h.name);
    case 'reset':
    case 'set':
      if (h.reason !== 'set' && h.reason !== 'set-config') return false;
      return name === 'all' ? !NOT_RESET_BY_RESET_ALL.has(h.name) : name === h.name;
    default:
      return false;
  }
}

/** The unpin label of a statement that removes session state; undefined for any other. */
function releaseLabel(effect: SessionStateEffect): string | undefined {
  const all = effect.name === 'all' || effect.name === '*';
  switch (effect.kind) {
    case 'unlisten':
      return 'unlisten';
    case 'discard':
      return effect.name === 'all' ? 'discard-all' : effect.name === 'temp' ? 'discard-temp' : undefined;
    case 'deallocate':
      return all ? 'deallocate-all' : 'deallocate';
    case 'advisory-unlock-all':
      return 'advisory-unlock-all';
    case 'close-cursor':
      return all ? 'close-all' : 'close';
    case 'reset':
      return all ? 'reset-all' : 'reset';
    case 'set':
      return isDefault(effect) ? 'reset' : undefined;
    default:
      return undefined;
  }
}
