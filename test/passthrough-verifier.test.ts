// The passthrough verifier's algorithm against a fake upstream check with switches: it never runs
// more checks than its listener and user limits, refuses past its queue, skips checks nobody
// waits for, shares one check between identical logins, and trusts a learned password only for
// recheck_interval.
import t from 'tap';
import { safeEqual } from '../proxy/postgres/auth.js';
import { type PassthroughLimits, PassthroughVerifier } from '../proxy/postgres/passthrough-verifier.js';

const limits: PassthroughLimits = { maxConcurrent: 3, maxPerUser: 2, maxQueued: 5, failureDelayMs: 0, maxFailureDelayMs: 0, recheckMs: 1000, maxTracked: 16 };

/** An upstream whose checks stay open until released; counts what runs at once. */
function fakeUpstream(accept: (password: string) => boolean) {
  const open: Array<() => void> = [];
  const state = { running: 0, peak: 0, perUser: new Map<string, number>(), peakPerUser: 0, calls: 0 };
  const check = (_db: string, user: string, password: string) =>
    new Promise<boolean>((resolve) => {
      state.calls++;
      state.running++;
      state.peak = Math.max(state.peak, state.running);
      state.perUser.set(user, (state.perUser.get(user) ?? 0) + 1);
      state.peakPerUser = Math.max(state.peakPerUser, state.perUser.get(user) ?? 0);
      open.push(() => {
        state.running--;
        state.perUser.set(user, (state.perUser.get(user) ?? 1) - 1);
        resolve(accept(password));
      });
    });
  const releaseAll = async () => {
    while (open.length > 0 || state.running > 0) {
      for (const release of open.splice(0)) release();
      await new Promise((r) => setImmediate(r));
    }
  };
  return { check, state, releaseAll };
}

const client = (addr = '10.0.0.1') => ({ addr, gone: () => false });

t.test('never more than maxConcurrent at once, nor maxPerUser for one user; past the queue a login is refused', async (t) => {
  const up = fakeUpstream(() => false);
  const v = new PassthroughVerifier(limits, up.check);
  const results = Array.from({ length: 8 }, (_, i) => v.verify('db', i % 2 === 0 ? 'a' : 'b', `p${i}`, client(`10.0.0.${i}`)).catch((err: Error) => err));
  await new Promise((r) => setImmediate(r));
  t.equal(up.state.running, 3, 'three run');
  t.equal(v.tracked.queued, 5, 'five wait');
  const refused = await v.verify('db', 'c', 'x', client()).catch((err: { code?: string }) => err.code);
  t.equal(refused, 'SLUICE_AUTH_THROTTLED');
  await up.releaseAll();
  t.same(await Promise.all(results), Array(8).fill(false));
  t.equal(up.state.peak, 3);
  t.equal(up.state.peakPerUser, 2);
});

t.test('a queued check nobody waits for any more is not run', async (t) => {
  const up = fakeUpstream(() => false);
  const v = new PassthroughVerifier({ ...limits, maxConcurrent: 1 }, up.check);
  const first = v.verify('db', 'a', 'p1', client());
  let left = false;
  const second = v.verify('db', 'b', 'p2', { addr: 'x', gone: () => left });
  await new Promise((r) => setImmediate(r));
  left = true;
  await up.releaseAll();
  t.equal(await first, false);
  t.equal(await second, false);
  t.equal(up.state.calls, 1, 'only the wanted check reached the upstream');
});

t.test('identical concurrent logins share one check; a learned password is trusted for recheckMs, then checked again', async (t) => {
  const up = fakeUpstream((password) => password === 'right');
  const v = new PassthroughVerifier(limits, up.check);
  const both = Promise.all([v.verify('db', 'a', 'right', client()), v.verify('db', 'a', 'right', client('10.0.0.2'))]);
  await up.releaseAll();
  t.same(await both, [true, true]);
  t.equal(up.state.calls, 1, 'one upstream login for both');
  const now = Date.now();
  t.ok(v.acceptsLocally('a', 'right', safeEqual, now), 'fresh: accepted locally');
  t.notOk(v.acceptsLocally('a', 'wrong', safeEqual, now));
  t.notOk(v.acceptsLocally('a', 'right', safeEqual, now + 1001), 'stale: must be checked again');
  const again = v.verify('db', 'a', 'right', client());
  await up.releaseAll();
  t.equal(await again, true);
  v.forget('a');
  t.notOk(v.acceptsLocally('a', 'right', safeEqual), 'forgotten after the server rejected it');
});

t.test('the learned and failure maps stay within maxTracked', async (t) => {
  const up = fakeUpstream((password) => password.startsWith('ok'));
  const v = new PassthroughVerifier({ ...limits, maxConcurrent: 100, maxPerUser: 100, maxQueued: 1000 }, up.check);
  const all = Promise.all(Array.from({ length: 100 }, (_, i) => v.verify('db', `u${i}`, i % 2 === 0 ? 'ok' : 'bad', client(`10.1.0.${i}`))));
  await up.releaseAll();
  await all;
  t.ok(v.tracked.learned <= 16 && v.tracked.failures <= 16, `learned ${v.tracked.learned}, failures ${v.tracked.failures}`);
});
