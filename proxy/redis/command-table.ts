// Which commands can share a pipelined upstream connection, and which need sluice's attention:
// a dedicated connection (transactions, blocking, pub/sub), a local answer (connection state that
// must not leak to other clients), or a refusal naming the command.
//
// Anything not listed is 'shared': forwarded on a shared connection as bytes.

export type CommandClass =
  | 'shared'
  /** MULTI, WATCH: pin a dedicated connection until EXEC/DISCARD/UNWATCH. */
  | 'transaction-start'
  /** EXEC, DISCARD, UNWATCH, possibly ending the pin. */
  | 'transaction-end'
  /** Always blocks (BLPOP …): dedicated connection, exempt from timeouts.command. */
  | 'blocking'
  /** XREAD/XREADGROUP: blocking only with a BLOCK argument. */
  | 'maybe-blocking'
  /** SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE: dedicated connection while subscribed. */
  | 'subscribe'
  /** UNSUBSCRIBE family while not subscribed: answered locally (under RESP3 the answer is a push). */
  | 'unsubscribe'
  | 'auth'
  | 'hello'
  | 'select'
  | 'client'
  | 'quit'
  | 'reset'
  /** Makes a connection modal or its replies unmatched: refused with an error naming it. */
  | 'refused';

const TABLE = new Map<string, CommandClass>([
  ['multi', 'transaction-start'],
  ['watch', 'transaction-start'],
  ['exec', 'transaction-end'],
  ['discard', 'transaction-end'],
  ['unwatch', 'transaction-end'],
  ['blpop', 'blocking'],
  ['brpop', 'blocking'],
  ['blmove', 'blocking'],
  ['brpoplpush', 'blocking'],
  ['bzpopmin', 'blocking'],
  ['bzpopmax', 'blocking'],
  ['blmpop', 'blocking'],
  ['bzmpop', 'blocking'],
  ['wait', 'blocking'],
  ['waitaof', 'blocking'],
  ['xread', 'maybe-blocking'],
  ['xreadgroup', 'maybe-blocking'],
  ['subscribe', 'subscribe'],
  ['psubscribe', 'subscribe'],
  ['ssubscribe', 'subscribe'],
  ['unsubscribe', 'unsubscribe'],
  ['punsubscribe', 'unsubscribe'],
  ['sunsubscribe', 'unsubscribe'],
  ['auth', 'auth'],
  ['hello', 'hello'],
  ['select', 'select'],
  ['client', 'client'],
  ['quit', 'quit'],
  ['reset', 'reset'],
  ['monitor', 'refused'],
  ['sync', 'refused'],
  ['psync', 'refused'],
  ['replconf', 'refused'],
]);

export function classify(name: string): CommandClass {
  return TABLE.get(name) ?? 'shared';
}

/** CLIENT subcommands that would change or read the state of a shared upstream connection. */
export const REFUSED_CLIENT_SUBCOMMANDS = new Set(['tracking', 'trackinginfo', 'caching', 'getredir', 'reply', 'no-evict', 'no-touch', 'unblock']);

/** CLIENT subcommands that are server-wide and safe to forward. */
export const FORWARDED_CLIENT_SUBCOMMANDS = new Set(['pause', 'unpause', 'help']);
