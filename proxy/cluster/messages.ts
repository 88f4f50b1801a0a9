// The IPC vocabulary between the cluster primary and its workers (`workers` > 1), one union per
// direction. Everything is plain JSON: the config crosses as its parsed form (durations in ms).
//
//   primary                                   worker i
//                               ◀─────────── hello            (its message handler is in place)
//   start {index, count, config} ───────────▶ runs Sluice with its share of every bound
//                               ◀─────────── started | start-failed {code, message}
//   request {id, what} ─────────────────────▶ metrics | status | readiness
//                               ◀─────────── reply {id, body}
//   config {config} ────────────────────────▶ applies its share (after SIGHUP / file change)
//                               ◀─────────── reload {trigger}   (admin RELOAD on a worker)
//   cancel {listener, pid, secret} ◀──────▶ cancel {owner, …}   (relayed to the key's owner)
//   shutdown {why} / force ─────────────────▶ drain as after SIGTERM / close everything now
import type { Config } from '../../config/schema.js';

export type Question = 'metrics' | 'status' | 'readiness';

export type ToWorker =
  | { type: 'start'; index: number; count: number; config: Config; configPath?: string; version: string }
  | { type: 'request'; id: number; what: Question }
  | { type: 'config'; config: Config }
  | { type: 'cancel'; listener: string; pid: number; secret: number }
  | { type: 'shutdown'; why: string }
  | { type: 'force'; why: string };

export type ToPrimary =
  | { type: 'hello' }
  | { type: 'started' }
  | { type: 'start-failed'; code: string | undefined; message: string }
  | { type: 'reply'; id: number; body: unknown }
  | { type: 'reload'; trigger: string }
  | { type: 'cancel'; owner: number; listener: string; pid: number; secret: number };

/** The environment variable that tells a forked process it is worker N (set by the primary). */
export const WORKER_INDEX_ENV = 'SLUICE_WORKER_INDEX';

export function isMessage<T extends { type: string }>(value: unknown): value is T {
  return value !== null && typeof value === 'object' && typeof (value as { type?: unknown }).type === 'string';
}
