// The admin console's command engine: PgBouncer-named columns, PAUSE/RESUME/RECONNECT reaching
// listeners, clear errors for unknown commands. (The wire side is tested through psql.)
import t from 'tap';
import { type AdminContext, type AdminControls, type ConnectionInfo, runAdminCommand } from '../proxy/admin/admin-console.js';
import type { Listener, ListenerSnapshot } from '../proxy/listener.js';

function fakeListener(calls: string[]): Listener & AdminControls {
  const snapshot: ListenerSnapshot = {
    protocol: 'postgres',
    name: 'main',
    listen: '127.0.0.1:6432',
    upstream: '127.0.0.1:5432',
    poolMode: 'transaction',
    clients: 7,
    pools: [
      {
        database: 'app',
        user: 'alice',
        stats: { size: 5, idle: 1, active: 4, opening: 0, waiting: 2, oldestWaitMs: 1500.25, paused: false },
        clientsActive: 4,
        clientsWaiting: 2,
        clientsIdle: 1,
        pinned: 1,
        dedicated: 0,
      },
    ],
    totals: { bytesReceived: 100, bytesSent: 200, transactions: 30, queries: 40 },
    upstreamReachable: true,
    accepting: true,
  };
  const client: ConnectionInfo = {
    protocol: 'postgres', pool: 'main', database: 'app', user: 'alice', state: 'active', addr: '127.0.0.1', port: 50000,
    localAddr: '127.0.0.1', localPort: 6432, connectTime: new Date(0), requestTime: new Date(0), waitSeconds: 0, id: 'c1', link: 's1', pinReason: 'temp-table',
  };
  /** Records the call; answers how many pools it touched (only database "app" exists). */
  const record = (call: string, db: string | undefined) => {
    calls.push(call);
    return db === undefined || db === 'app' ? 1 : 0;
  };
  return {
    protocol: 'postgres',
    name: 'main',
    start: async () => {},
    drain: () => {},
    clientCount: () => 7,
    close: () => {},
    reload: () => ({ needsRestart: [] }),
    snapshot: () => snapshot,
    pause: (db) => record(`pause ${db ?? '*'}`, db),
    resume: (db) => record(`resume ${db ?? '*'}`, db),
    reconnect: (db) => record(`reconnect ${db ?? '*'}`, undefined),
    clients: () => [client],
    servers: () => [],
  };
}

function context(calls: string[], reloadOk = true): AdminContext {
  const listener = fakeListener(calls);
  return { version: '9.9.9', listeners: () => [listener], reload: () => reloadOk, configRows: () => [['pool_size', '5']] };
}

t.test('SHOW POOLS names its columns as PgBouncer does and splits maxwait into seconds and microseconds', async (t) => {
  const result = runAdminCommand('show pools;', context([]));
  if (result.kind !== 'rows') throw new Error('expected rows');
  const names = result.columns.map((c) => c.name);
  for (const pgbouncerColumn of ['database', 'user', 'cl_active', 'cl_waiting', 'sv_active', 'sv_idle', 'sv_used', 'sv_login', 'maxwait', 'maxwait_us', 'pool_mode']) {
    t.ok(names.includes(pgbouncerColumn), pgbouncerColumn);
  }
  const row = Object.fromEntries(names.map((n, i) => [n, result.rows[0][i]]));
  t.match(row, { database: 'app', user: 'alice', cl_active: 4, cl_waiting: 2, sv_active: 4, sv_idle: 1, maxwait: 1, maxwait_us: 500250, pool_mode: 'transaction', pinned: 1 });
});

t.test('SHOW STATS, CLIENTS, CONFIG, VERSION and HELP answer rows', async (t) => {
  const ctx = context([]);
  const stats = runAdminCommand('SHOW STATS', ctx);
  t.match(stats, { kind: 'rows', rows: [['main', 'postgres', 30, 40, 100, 200, 7]] });
  const clients = runAdminCommand('SHOW CLIENTS', ctx);
  if (clients.kind !== 'rows') throw new Error('expected rows');
  t.equal(clients.rows.length, 1);
  t.equal(clients.rows[0][0], 'C');
  t.ok(clients.rows[0].includes('temp-table'), 'the pin reason is shown');
  t.match(runAdminCommand('SHOW CONFIG', ctx), { kind: 'rows', rows: [['pool_size', '5']] });
  t.match(runAdminCommand('SHOW VERSION', ctx), { kind: 'rows', rows: [['sluice 9.9.9']] });
  t.match(runAdminCommand('/* hi */ SHOW HELP -- there', ctx), { kind: 'rows' });
});

t.test('PAUSE, RESUME and RECONNECT reach the listeners, with or without a database', async (t) => {
  const calls: string[] = [];
  const ctx = context(calls);
  t.match(runAdminCommand('PAUSE app', ctx), { kind: 'command', tag: 'PAUSE' });
  t.match(runAdminCommand('RESUME', ctx), { kind: 'command', tag: 'RESUME' });
  t.match(runAdminCommand('RECONNECT "app"', ctx), { kind: 'command', tag: 'RECONNECT' });
  t.same(calls, ['pause app', 'resume *', 'reconnect app']);
  t.match(runAdminCommand('PAUSE nosuchdb', ctx), { kind: 'error', sqlstate: '3D000' });
  t.match(runAdminCommand('PAUSE a b', ctx), { kind: 'error', sqlstate: '42601' });
});

t.test('RELOAD reports a rejected config as an error; unknown commands get 42601', async (t) => {
  t.match(runAdminCommand('RELOAD', context([])), { kind: 'command', tag: 'RELOAD' });
  t.match(runAdminCommand('RELOAD', context([], false)), { kind: 'error', sqlstate: '58000' });
  t.match(runAdminCommand('DROP TABLE x', context([])), { kind: 'error', sqlstate: '42601', message: /unknown admin command "DROP"/ });
  t.match(runAdminCommand('SHOW TABLES', context([])), { kind: 'error', sqlstate: '42601' });
  t.match(runAdminCommand(';', context([])), { kind: 'command', tag: '' });
});
