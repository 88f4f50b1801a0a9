// The pool algorithm against a fake connector with fault switches: bounds, FIFO, timeouts,
// failures, retirement and resizing. No protocol, no sockets.
import t from 'tap';
import type { SluiceError } from '../proxy/errors.js';
import { ConnectError } from '../proxy/errors.js';
import { type CloseReason, type Connector, Pool, type PooledConnection, type PoolOptions, type Waiter } from '../proxy/pool/pool.js';

interface FakeConn extends PooledConnection {
  id: number;
}

/** A connector whose opens can be made to fail or hang, and which records closes. */
class FakeConnector implements Connector<FakeConn> {
  failing = false;
  hanging = false;
  opened = 0;
  closed: Array<{ id: number; reason: CloseReason }> = [];
  private pendingHangs: Array<() => void> = [];

  open(): Promise<FakeConn> {
    if (this.failing) return Promise.reject(new ConnectError('fake:1', 'connection refused'));
    const conn = (): FakeConn => ({ id: ++this.opened, poolState: 'opening', openedAtMs: Date.now(), idleSinceMs: 0, generation: 0 });
    if (this.hanging) return new Promise((resolve) => this.pendingHangs.push(() => resolve(conn())));
    return Promise.resolve(conn());
  }

  close(conn: FakeConn, reason: CloseReason): void {
    this.closed.push({ id: conn.id, reason });
  }

  unhang(): void {
    this.hanging = false;
    for (const go of this.pendingHangs.splice(0)) go();
  }
}

class Borrower implements Waiter<FakeConn> {
  conn: FakeConn | undefined;
  error: SluiceError | undefined;
  readonly settled: Promise<void>;
  private done!: () => void;
  constructor(readonly name = '') {
    this.settled = new Promise((resolve) => {
      this.done = resolve;
    });
  }
  grant(conn: FakeConn): void {
    this.conn = conn;
    this.done();
  }
  fail(err: SluiceError): void {
    this.error = err;
    this.done();
  }
}

function makePool(connector: FakeConnector, options: Partial<PoolOptions> = {}): Pool<FakeConn> {
  return new Pool<FakeConn>(
    { name: 'test', size: 2, minSize: 0, acquireTimeoutMs: 1000, connectTimeoutMs: 1000, idleTimeoutMs: 0, lifetimeMs: 0, maintenanceIntervalMs: 20, ...options },
    connector,
  );
}

t.test('never opens more than size connections and serves waiters FIFO', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 2 });
  t.teardown(() => pool.close());
  const borrowers = Array.from({ length: 6 }, (_, i) => new Borrower(String(i)));
  for (const b of borrowers) pool.acquire(b);
  await Promise.all(borrowers.slice(0, 2).map((b) => b.settled));
  t.equal(connector.opened, 2);
  t.equal(pool.stats().waiting, 4);
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const holder = borrowers.find((b) => b.conn && !order.includes(b.name) && b.conn.poolState === 'active') as Borrower;
    order.push(holder.name);
    pool.release(holder.conn as FakeConn);
  }
  await Promise.all(borrowers.map((b) => b.settled));
  t.same(borrowers.slice(2).map((b) => b.conn?.id !== undefined), [true, true, true, true]);
  t.equal(connector.opened, 2, 'served by reuse, never a third connection');
  t.ok(pool.total() <= 2);
});

t.test('an idle connection is granted synchronously and reused LIFO', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector);
  t.teardown(() => pool.close());
  const first = new Borrower();
  pool.acquire(first);
  await first.settled;
  pool.release(first.conn as FakeConn);
  t.equal(pool.stats().idle, 1);
  const second = new Borrower();
  pool.acquire(second);
  t.equal(second.conn, first.conn, 'granted before acquire() returned');
  t.equal(pool.stats().active, 1);
});

t.test('a waiter past acquireTimeoutMs fails with a code naming timeouts.acquire', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 1, acquireTimeoutMs: 50 });
  t.teardown(() => pool.close());
  const holder = new Borrower();
  pool.acquire(holder);
  await holder.settled;
  const waiter = new Borrower();
  pool.acquire(waiter);
  await waiter.settled;
  t.equal(waiter.error?.code, 'SLUICE_ACQUIRE_TIMEOUT');
  t.equal(waiter.error?.configKey, 'timeouts.acquire');
  t.match(waiter.error?.message, /pool "test".*50ms.*timeouts\.acquire/);
  t.equal(pool.stats().waiting, 0);
});

t.test('a cancelled waiter is never granted and its place goes to the next', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 1 });
  t.teardown(() => pool.close());
  const holder = new Borrower();
  pool.acquire(holder);
  await holder.settled;
  const gone = new Borrower();
  const next = new Borrower();
  pool.acquire(gone);
  pool.acquire(next);
  t.equal(pool.cancel(gone), true);
  t.equal(pool.cancel(gone), false);
  pool.release(holder.conn as FakeConn);
  await next.settled;
  t.equal(next.conn, holder.conn);
  t.equal(gone.conn, undefined);
});

t.test('with the upstream unreachable and nothing alive, waiters fail fast with the connect error', async (t) => {
  const connector = new FakeConnector();
  connector.failing = true;
  const pool = makePool(connector, { acquireTimeoutMs: 10_000 });
  t.teardown(() => pool.close());
  const waiter = new Borrower();
  pool.acquire(waiter);
  await waiter.settled;
  t.equal(waiter.error?.code, 'SLUICE_CONNECT_FAILED');
  connector.failing = false;
  const later = new Borrower();
  pool.acquire(later);
  await later.settled;
  t.ok(later.conn, 'the pool recovers once the upstream is back, without a restart');
});

t.test('a removed (broken) connection is replaced for the next waiter', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 1 });
  t.teardown(() => pool.close());
  const holder = new Borrower();
  pool.acquire(holder);
  await holder.settled;
  const waiter = new Borrower();
  pool.acquire(waiter);
  pool.remove(holder.conn as FakeConn, 'error');
  await waiter.settled;
  t.not(waiter.conn?.id, holder.conn?.id);
  t.same(connector.closed, [{ id: 1, reason: 'error' }]);
});

t.test('retireAll closes idle connections now and active ones when released', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector);
  t.teardown(() => pool.close());
  const a = new Borrower();
  const b = new Borrower();
  pool.acquire(a);
  pool.acquire(b);
  await Promise.all([a.settled, b.settled]);
  pool.release(a.conn as FakeConn);
  pool.retireAll();
  t.same(connector.closed.map((c) => c.reason), ['retired']);
  pool.release(b.conn as FakeConn);
  t.same(connector.closed.map((c) => c.reason), ['retired', 'retired']);
  t.equal(pool.total(), 0);
});

t.test('idle and lifetime limits close idle connections; min size is kept warm', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 3, minSize: 1, idleTimeoutMs: 30 });
  t.teardown(() => pool.close());
  const a = new Borrower();
  const b = new Borrower();
  pool.acquire(a);
  pool.acquire(b);
  await Promise.all([a.settled, b.settled]);
  pool.release(a.conn as FakeConn);
  pool.release(b.conn as FakeConn);
  await new Promise((r) => setTimeout(r, 120));
  t.equal(pool.total(), 1, 'idle ones beyond min_pool_size closed');
  t.ok(connector.closed.some((c) => c.reason === 'idle'));
  pool.reconfigure({ lifetimeMs: 10, idleTimeoutMs: 0 });
  await new Promise((r) => setTimeout(r, 120));
  t.ok(connector.closed.some((c) => c.reason === 'lifetime'));
  t.equal(pool.total(), 1, 'a retired one is replaced to keep min_pool_size');
});

t.test('shrinking the pool closes the surplus as it is released; growing serves more at once', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 3 });
  t.teardown(() => pool.close());
  const held = [new Borrower(), new Borrower(), new Borrower()];
  for (const b of held) pool.acquire(b);
  await Promise.all(held.map((b) => b.settled));
  pool.reconfigure({ size: 1 });
  for (const b of held) pool.release(b.conn as FakeConn);
  t.equal(pool.total(), 1);
  t.same(connector.closed.map((c) => c.reason), ['resize', 'resize']);
  pool.reconfigure({ size: 4 });
  const more = [new Borrower(), new Borrower(), new Borrower(), new Borrower()];
  for (const b of more) pool.acquire(b);
  await Promise.all(more.map((b) => b.settled));
  t.ok(more.every((b) => b.conn));
});

t.test('pause holds waiters; resume serves them', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector);
  t.teardown(() => pool.close());
  const first = new Borrower();
  pool.acquire(first);
  await first.settled;
  pool.release(first.conn as FakeConn);
  pool.pause();
  const waiter = new Borrower();
  pool.acquire(waiter);
  t.equal(waiter.conn, undefined);
  t.equal(pool.stats().paused, true);
  pool.resume();
  t.ok(waiter.conn);
});

t.test('close fails waiters, closes idle connections, and a connection opening then is closed', async (t) => {
  const connector = new FakeConnector();
  connector.hanging = true;
  const pool = makePool(connector, { size: 1 });
  const waiter = new Borrower();
  pool.acquire(waiter);
  pool.close();
  await waiter.settled;
  t.equal(waiter.error?.code, 'SLUICE_POOL_CLOSED');
  connector.unhang();
  await new Promise((r) => setTimeout(r, 10));
  t.same(connector.closed.map((c) => c.reason), ['shutdown']);
  const late = new Borrower();
  pool.acquire(late);
  t.equal(late.error?.code, 'SLUICE_POOL_CLOSED');
});

t.test('stats report the oldest wait', async (t) => {
  const connector = new FakeConnector();
  connector.hanging = true;
  const pool = makePool(connector, { size: 1 });
  t.teardown(() => {
    pool.close();
    connector.unhang();
  });
  pool.acquire(new Borrower());
  await new Promise((r) => setTimeout(r, 30));
  const stats = pool.stats();
  t.equal(stats.waiting, 1);
  t.equal(stats.opening, 1);
  t.ok(stats.oldestWaitMs >= 25);
});

t.test('taking idle connections one by one never loses another idle one', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 3 });
  t.teardown(() => pool.close());
  const first = [new Borrower('a'), new Borrower('b'), new Borrower('c')];
  for (const b of first) pool.acquire(b);
  await Promise.all(first.map((b) => b.settled));
  for (const b of first) pool.release(b.conn as FakeConn);
  t.equal(pool.stats().idle, 3);
  const again = [new Borrower('d'), new Borrower('e'), new Borrower('f')];
  for (const b of again) pool.acquire(b);
  await Promise.all(again.map((b) => b.settled));
  t.same(new Set(again.map((b) => b.conn?.id)).size, 3, 'three distinct connections');
  t.equal(pool.stats().idle, 0);
  t.equal(pool.stats().active, 3, 'all three are on the active list');
  t.equal(connector.opened, 3, 'no connection was opened to replace a lost one');
  for (const b of again) pool.release(b.conn as FakeConn);
  t.equal(pool.stats().idle, 3, 'all three come back');
});

t.test('adopt takes in a connection opened elsewhere: it serves the head waiter, and is refused when the pool is full', async (t) => {
  const connector = new FakeConnector();
  const pool = makePool(connector, { size: 1 });
  t.teardown(() => pool.close());
  connector.hanging = true;
  const waiter = new Borrower('w');
  pool.acquire(waiter);
  const outside: FakeConn = { id: 100, poolState: 'closed', openedAtMs: Date.now(), idleSinceMs: 0, generation: 0 };
  t.equal(pool.adopt(outside), false, 'refused: the pool is at size with one opening');
  connector.unhang();
  await waiter.settled;
  pool.release(waiter.conn as FakeConn);
  const roomy = makePool(new FakeConnector(), { size: 2 });
  t.teardown(() => roomy.close());
  const head = new Borrower('h');
  connector.hanging = false;
  t.equal(roomy.adopt({ ...outside, id: 101 }), true, 'accepted below size');
  t.equal(roomy.stats().idle, 1, 'idle when nobody waits');
  roomy.acquire(head);
  t.equal(head.conn?.id, 101, 'the adopted connection is lent like any other');
});
