// Which session state a client has created that outlives its transaction, judged from the SQL
// it sends (sql-scan.ts): in transaction mode such a client is pinned to its server, because
// another client must never see its temp tables, locks, LISTENs or settings, and it must not
// lose them. Settings the pooler replays itself on every server do not pin.
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
      return replayed.has(effect.name) ? undefined : 'set';
    case 'set-config':
      return effect.name !== '' && replayed.has(effect.name) ? undefined : 'set-config';
    default:
      // UNLISTEN, RESET, DISCARD, DEALLOCATE, CLOSE, pg_advisory_unlock_all end state; the pin
      // stays until the client leaves (sluice cannot always tell that all of it is gone)
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
