// The pub/sub bookkeeping against bytes: when a subscriber's connection has left pub/sub mode
// (nothing subscribed, nothing owed), and every case where it must not claim so.
import t from 'tap';
import { encodeValue, type RespValue, RespPush } from '../proxy/redis/resp-values.js';
import { Subscriptions } from '../proxy/redis/subscriptions.js';

/** A RESP2 pub/sub frame: `*3 $kind $channel :count` and the like. */
function frame(...items: RespValue[]): Buffer {
  return encodeValue(items, 2);
}

function push(...items: RespValue[]): Buffer {
  return encodeValue(new RespPush(items), 3);
}

t.test('SUBSCRIBE then UNSUBSCRIBE of the same channel ends pub/sub mode only once the 0 arrives', async (t) => {
  const subs = new Subscriptions();
  subs.sent('subscribe', 2);
  t.notOk(subs.ended, 'the subscribe confirmation is owed');
  subs.received(frame('subscribe', 'news', 1), true);
  t.notOk(subs.ended, 'subscribed to one channel');
  subs.received(frame('message', 'news', 'hello'), true);
  t.notOk(subs.ended, 'a message answers nothing');
  subs.sent('unsubscribe', 2);
  t.notOk(subs.ended, 'the unsubscribe confirmation is owed');
  subs.received(frame('unsubscribe', 'news', 0), true);
  t.ok(subs.ended, 'nothing subscribed, nothing owed');
});

t.test('an UNSUBSCRIBE without arguments is answered once its kind is gone, patterns still hold the mode', async (t) => {
  const subs = new Subscriptions();
  subs.sent('subscribe', 3);
  subs.sent('psubscribe', 2);
  subs.received(frame('subscribe', 'a', 1), true);
  subs.received(frame('subscribe', 'b', 2), true);
  subs.received(frame('psubscribe', 'p*', 3), true);
  t.same([subs.channels, subs.patterns], [2, 1]);
  subs.sent('unsubscribe', 1);
  subs.received(frame('unsubscribe', 'a', 2), true);
  t.notOk(subs.ended, 'one channel left');
  subs.received(frame('unsubscribe', 'b', 1), true);
  t.notOk(subs.ended, 'the pattern still holds the connection in pub/sub mode');
  subs.sent('punsubscribe', 1);
  subs.received(frame('punsubscribe', 'p*', 0), true);
  t.ok(subs.ended);
});

t.test('UNSUBSCRIBE a b with only a subscribed: the second 0 is still owed after the first', async (t) => {
  const subs = new Subscriptions();
  subs.sent('subscribe', 2);
  subs.received(frame('subscribe', 'a', 1), true);
  subs.sent('unsubscribe', 3);
  subs.received(frame('unsubscribe', 'a', 0), true);
  t.notOk(subs.ended, 'a reply of the same request is still to come');
  subs.received(frame('unsubscribe', 'b', 0), true);
  t.ok(subs.ended);
});

t.test('a SUBSCRIBE pipelined behind the last UNSUBSCRIBE keeps the mode', async (t) => {
  const subs = new Subscriptions();
  subs.sent('subscribe', 2);
  subs.received(frame('subscribe', 'a', 1), true);
  subs.sent('unsubscribe', 1);
  subs.sent('subscribe', 2);
  subs.received(frame('unsubscribe', 'a', 0), true);
  t.notOk(subs.ended, 'the SUBSCRIBE behind it is owed');
  subs.received(frame('subscribe', 'c', 1), true);
  t.notOk(subs.ended, 'subscribed again');
});

t.test('PING and refused commands are answered once each; shard channels count on their own', async (t) => {
  const subs = new Subscriptions();
  subs.sent('ssubscribe', 2);
  subs.received(frame('ssubscribe', 's', 1), true);
  subs.sent('ping', 1);
  subs.sent('get', 2);
  subs.received(frame('pong', ''), true);
  subs.received(Buffer.from("-ERR Can't execute 'get'\r\n"), true);
  subs.sent('sunsubscribe', 1);
  t.notOk(subs.ended);
  subs.received(frame('sunsubscribe', 's', 0), true);
  t.ok(subs.ended);
});

t.test('RESP3 confirmations are pushes and count the same way', async (t) => {
  const subs = new Subscriptions();
  subs.sent('subscribe', 2);
  subs.received(push('subscribe', 'r3', 1), true);
  subs.received(push('message', 'r3', 'x'), true);
  subs.sent('unsubscribe', 2);
  subs.received(push('unsubscribe', 'r3', 0), true);
  t.ok(subs.ended);
});

t.test('never claims the end when it cannot follow: an unreadable big frame, a state-changing command, a reply nobody asked for', async (t) => {
  const big = new Subscriptions();
  big.sent('subscribe', 2);
  big.received(frame('subscribe', 'a', 1), true);
  big.received(frame('message', 'a', 'x'.repeat(100)).subarray(0, 40), false);
  big.sent('unsubscribe', 1);
  big.received(frame('unsubscribe', 'a', 0), true);
  t.ok(big.ended, 'a big published message is skipped by its first bytes');
  const unknown = new Subscriptions();
  unknown.sent('subscribe', 2);
  unknown.received(frame('subscribe', 'a', 1), true);
  unknown.received(Buffer.from('*3\r\n$11\r\nunsubscribe\r\n'), false);
  unknown.sent('unsubscribe', 1);
  unknown.received(frame('unsubscribe', 'a', 0), true);
  t.notOk(unknown.ended, 'a big frame that is not a message');
  const hello = new Subscriptions();
  hello.sent('subscribe', 2);
  hello.received(frame('subscribe', 'a', 1), true);
  hello.sent('hello', 2);
  hello.received(frame('server', 'redis'), true);
  hello.sent('unsubscribe', 1);
  hello.received(frame('unsubscribe', 'a', 0), true);
  t.notOk(hello.ended, 'HELLO changed the connection behind sluice’s back');
  const stray = new Subscriptions();
  stray.sent('subscribe', 2);
  stray.received(frame('subscribe', 'a', 1), true);
  stray.received(frame('unsubscribe', 'a', 0), true);
  t.notOk(stray.ended, 'a confirmation nobody asked for');
});
