// The admin console's commands (SHOW POOLS, PAUSE, RELOAD, …), PgBouncer-compatible where the
// concept is the same, so existing scripts and habits work. This file turns command text into
// result sets from the process's state; the Postgres listener carries them over the wire.
import type { Listener, ListenerSnapshot } from '../listener.js';

export type AdminColumnType = 'text' | 'int8' | 'numeric' | 'bool';

export interface AdminColumn {
  name: string;
  type: AdminColumnType;
}

export type AdminValue = string | number | boolean | null;

export type AdminResult =
  | { kind: 'rows'; columns: AdminColumn[]; rows: AdminValue[][]; tag: string }
  | { kind: 'command'; tag: string }
  | { kind: 'error'; sqlstate: string; message: string };

/** One client or server connection, as SHOW CLIENTS / SHOW SERVERS list it. */
export interface ConnectionInfo {
  protocol: 'postgres' | 'redis';
  pool: string;
  database: string;
  user: string;
  /** active | waiting | idle | pinned | used | opening … */
  state: string;
  addr: string;
  port: number;
  localAddr: string;
  localPort: number;
  connectTime: Date;
  requestTime: Date;
  /** Seconds waiting for a server now (clients), 0 otherwise. */
  waitSeconds: number;
  /** An id unique within the process, and the id of the connection it is linked to. */
  id: string;
  link: string;
  /** Why the client is pinned, when it is. */
  pinReason?: string;
}

/** What the admin console may read and do; the process supplies it. */
export interface AdminContext {
  version: string;
  listeners(): Listener[];
  /** Re-reads the config file; false when it was rejected or there is none. */
  reload(): boolean;
  /** `key = value` pairs of the running config, secrets left out. */
  configRows(): Array<[string, string]>;
}

/** Optional powers a listener offers the console. */
export interface AdminControls {
  pause(database?: string): number;
  resume(database?: string): number;
  reconnect(database?: string): number;
  clients(): ConnectionInfo[];
  servers(): ConnectionInfo[];
}

function hasControls(listener: Listener): listener is Listener & AdminControls {
  return typeof (listener as Partial<AdminControls>).pause === 'function';
}

const text = (name: string): AdminColumn => ({ name, type: 'text' });
const int = (name: string): AdminColumn => ({ name, type: 'int8' });

function rows(columns: AdminColumn[], data: AdminValue[][], tag = 'SHOW'): AdminResult {
  return { kind: 'rows', columns, rows: data, tag };
}

function showPools(snapshots: ListenerSnapshot[]): AdminResult {
  const columns = [
    text('database'), text('user'), int('cl_active'), int('cl_waiting'), int('cl_idle'), int('sv_active'), int('sv_idle'),
    int('sv_used'), int('sv_login'), int('maxwait'), int('maxwait_us'), text('pool_mode'), text('protocol'), text('pool'),
    int('pool_size'), int('pinned'), int('dedicated'), text('paused'),
  ];
  const data: AdminValue[][] = [];
  for (const snap of snapshots) {
    for (const p of snap.pools) {
      const waitUs = Math.round(p.stats.oldestWaitMs * 1000);
      data.push([
        p.database, p.user, p.clientsActive, p.clientsWaiting, p.clientsIdle, p.stats.active, p.stats.idle,
        0, p.stats.opening, Math.floor(waitUs / 1_000_000), waitUs % 1_000_000, snap.protocol === 'redis' ? 'pipelined' : snap.poolMode ?? '',
        snap.protocol, snap.name, p.stats.size, p.pinned, p.dedicated, p.stats.paused ? 'yes' : 'no',
      ]);
    }
  }
  return rows(columns, data);
}

function showStats(snapshots: ListenerSnapshot[]): AdminResult {
  const columns = [text('database'), text('protocol'), int('total_xact_count'), int('total_query_count'), int('total_received'), int('total_sent'), int('clients')];
  return rows(
    columns,
    snapshots.map((s) => [s.name, s.protocol, s.totals.transactions, s.totals.queries, s.totals.bytesReceived, s.totals.bytesSent, s.clients]),
  );
}

function showConnections(list: ConnectionInfo[], kind: 'C' | 'S'): AdminResult {
  const columns = [
    text('type'), text('user'), text('database'), text('state'), text('addr'), int('port'), text('local_addr'), int('local_port'),
    text('connect_time'), text('request_time'), int('wait'), int('wait_us'), text('ptr'), text('link'), text('protocol'), text('pool'), text('pin_reason'),
  ];
  return rows(
    columns,
    list.map((c) => {
      const waitUs = Math.round(c.waitSeconds * 1_000_000);
      return [
        kind, c.user, c.database, c.state, c.addr, c.port, c.localAddr, c.localPort, c.connectTime.toISOString(), c.requestTime.toISOString(),
        Math.floor(waitUs / 1_000_000), waitUs % 1_000_000, c.id, c.link, c.protocol, c.pool, c.pinReason ?? null,
      ];
    }),
  );
}

/** Strips comments, a trailing semicolon and case: `show  pools;` -> ['SHOW', 'POOLS']. */
function words(command: string): string[] {
  const cleaned = command.replace(/--[^\n]*/g, ' ').replace(/\/\*[\s\S]*?\*\//g, ' ').trim().replace(/;+\s*$/, '');
  return cleaned.split(/\s+/).filter((w) => w !== '');
}

/** Runs one console command. Unknown commands get 42601 with the list of what exists. */
export function runAdminCommand(command: string, ctx: AdminContext): AdminResult {
  const [verb = '', what = '', ...rest] = words(command);
  const arg = what.replace(/^"|"$/g, '');
  const listeners = ctx.listeners();
  const snapshots = () => listeners.map((l) => l.snapshot());
  const controlled = listeners.filter(hasControls);
  switch (verb.toUpperCase()) {
    case '':
      return { kind: 'command', tag: '' };
    case 'SHOW':
      switch (what.toUpperCase()) {
        case 'POOLS':
          return showPools(snapshots());
        case 'STATS':
          return showStats(snapshots());
        case 'CLIENTS':
          return showConnections(controlled.flatMap((l) => l.clients()), 'C');
        case 'SERVERS':
          return showConnections(controlled.flatMap((l) => l.servers()), 'S');
        case 'CONFIG':
          return rows([text('key'), text('value')], ctx.configRows());
        case 'VERSION':
          return rows([text('version')], [[`sluice ${ctx.version}`]]);
        case 'LISTS':
          return rows(
            [text('list'), int('items')],
            [
              ['listeners', listeners.length],
              ['pools', snapshots().reduce((n, s) => n + s.pools.length, 0)],
              ['used_clients', snapshots().reduce((n, s) => n + s.clients, 0)],
            ],
          );
        case 'HELP':
          return rows([text('command')], ADMIN_HELP.map((h) => [h]));
        default:
          return { kind: 'error', sqlstate: '42601', message: `unknown SHOW item ${JSON.stringify(what)}; try SHOW HELP` };
      }
    case 'PAUSE':
    case 'RESUME':
    case 'RECONNECT': {
      if (rest.length > 0) return { kind: 'error', sqlstate: '42601', message: `${verb.toUpperCase()} takes at most one database name` };
      const database = arg === '' ? undefined : arg;
      let touched = 0;
      for (const l of controlled) {
        if (verb.toUpperCase() === 'PAUSE') touched += l.pause(database);
        else if (verb.toUpperCase() === 'RESUME') touched += l.resume(database);
        else touched += l.reconnect(database);
      }
      if (database !== undefined && touched === 0) return { kind: 'error', sqlstate: '3D000', message: `no pool for database "${database}"` };
      return { kind: 'command', tag: verb.toUpperCase() };
    }
    case 'RELOAD':
      return ctx.reload()
        ? { kind: 'command', tag: 'RELOAD' }
        : { kind: 'error', sqlstate: '58000', message: 'reload failed: the config was rejected or sluice runs on the embedded default (see the log)' };
    default:
      return { kind: 'error', sqlstate: '42601', message: `unknown admin command ${JSON.stringify(verb)}; try SHOW HELP` };
  }
}

export const ADMIN_HELP = [
  'SHOW POOLS|STATS|CLIENTS|SERVERS|CONFIG|VERSION|LISTS|HELP',
  'PAUSE [db]    -- stop handing out servers (new and waiting clients queue)',
  'RESUME [db]   -- hand out servers again',
  'RECONNECT [db] -- retire every server connection; each closes when next idle',
  'RELOAD        -- re-read the config file',
];
