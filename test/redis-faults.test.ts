// The Redis pooler under faults, through the real sluice and a real redis-server that is paused,
// kept busy, killed and restarted: nothing lost, nothing misdelivered, every client answered.
import { Redis } from 'ioredis';
import t from 'tap';
import { type RedisServer, startRedis } from './harness/redis-server.js';
import { type SluiceProcess, startSluice } from './harness/sluice-process.js';
import { freePort, waitFor } from './harness/tools.js';
import { text, WireClient } from './redis-wire.js';

let redis: RedisServer;
let sluice: SluiceProcess;
const port = { main: 0, slow: 0, single: 0, tight: 0, nowhere: 0 };
let deadPort = 0;

function config(extra = ''): string {
  const server = `{ host: 127.0.0.1, port: ${redis.port} }`;
  return `
metrics: { listen: '{{METRICS}}' }
log: { level: warn }
redis:
  - name: main
    listen: 127.0.0.1:${port.main}
    server: ${server}
    pool_size: 2
    timeouts: { connect: 1s, acquire: 10s }
  - name: slow
    listen: 127.0.0.1:${port.slow}
    server: ${server}
    pool_size: 1
    timeouts: { command: 1s }
  - name: single
    listen: 127.0.0.1:${port.single}
    server: ${server}
    pool_size: 1
  - name: tight
    listen: 127.0.0.1:${port.tight}
    server: { host: 127.0.0.1, port: ${redis.port}, db: 3 }
    max_dedicated_connections: 1
    timeouts: { acquire: 300ms, client_idle: 2s }
  - name: nowhere
    listen: 127.0.0.1:${port.nowhere}
    server: { host: 127.0.0.1, port: ${deadPort} }
    timeouts: { connect: 500ms }
${extra}`;
}

t.before(async () => {
  redis = await startRedis({ args: ['--busy-reply-threshold', '50'] });
  port.main = await freePort();
  port.slow = await freePort();
  port.single = await freePort();
  port.tight = await freePort();
  port.nowhere = await freePort();
  deadPort = await freePort();
  sluice = await startSluice(config());
});

t.teardown(async () => {
  await sluice?.stop();
  await redis?.stop();
});

/** Waits until sluice's own CLIENT LIST shows a client with this many replies outstanding. */
async function untilOutstanding(observer: WireClient, name: string, count: number): Promise<void> {
  await waitFor(`client ${name} with ${count} outstanding`, async () => {
    const list = text(await observer.command('CLIENT', 'LIST'));
    return list.split('\n').some((line) => line.includes(`name=${name} `) && line.includes(`oll=${count} `));
  });
}

t.test('a client that leaves with requests in flight costs the others nothing: its replies are read and dropped', async (t) => {
  const leaver = await WireClient.connect(port.single);
  for (let i = 0; i < 2000; i++) {
    leaver.send('SET', `leave:${i}`, 'x'.repeat(100));
    leaver.send('GET', `leave:${i}`);
  }
  leaver.close();
  const stayer = await WireClient.connect(port.single);
  t.teardown(() => stayer.close());
  let wrong = 0;
  for (let i = 0; i < 200; i++) {
    stayer.send('SET', `stay:${i}`, `mine:${i}`);
    stayer.send('GET', `stay:${i}`);
  }
  for (let i = 0; i < 200; i++) {
    if (text(await stayer.next()) !== 'OK' || text(await stayer.next()) !== `mine:${i}`) wrong++;
  }
  t.equal(wrong, 0, 'all 200 pairs on the same upstream connection answered with the stayer’s own values');
});

t.test('timeouts.command closes a stalled upstream connection and fails what was in flight, naming the key; blocking commands are exempt', async (t) => {
  const client = await WireClient.connect(port.slow);
  t.teardown(() => client.close());
  t.equal(text(await client.command('SET', 'slow:k', 'v')), 'OK');
  await redis.cli('CLIENT', 'PAUSE', '2500', 'ALL');
  t.match(text(await client.command('GET', 'slow:k')), /ERR no reply from upstream after 1000ms \(timeouts\.command\)/);
  await waitFor('the pause to end', async () => text(await client.command('GET', 'slow:k')) === 'v');
  t.pass('a fresh connection serves the client afterwards');
  t.equal(text(await client.command('BLPOP', 'slow:empty', '1')), '<null>', 'BLPOP 1 waits its own second and answers null, not a timeout');
});

t.test('-BUSY from a server running a long script passes through as a reply, not a failure', async (t) => {
  const runner = new Redis({ port: port.main, host: '127.0.0.1', maxRetriesPerRequest: 0 });
  const other = await WireClient.connect(port.main);
  t.teardown(() => {
    runner.disconnect();
    other.close();
  });
  t.equal(text(await other.command('PING')), 'PONG');
  const script = runner.eval('local i = 0 while true do i = i + 1 end', 0).then(
    () => 'finished',
    (err: Error) => err.message,
  );
  await waitFor('the server to report BUSY', async () => /^ERR:BUSY/.test(text(await other.command('GET', 'busy:k'))));
  t.pass('another client got -BUSY through sluice');
  await redis.cli('SCRIPT', 'KILL');
  t.match(await script, /Script killed by user/, 'the script’s own client got the server’s error');
  t.equal(text(await other.command('PING')), 'PONG', 'and both connections keep working');
});

t.test('server.db applies to every upstream connection; the dedicated bound and timeouts.acquire hold; timeouts.client_idle closes idle clients only', async (t) => {
  const holder = await WireClient.connect(port.tight);
  t.teardown(() => holder.close());
  t.equal(text(await holder.command('SET', 'tight:k', 'in-db3')), 'OK');
  holder.send('BLPOP', 'tight:list', '30');
  t.equal(await redis.cli('-n', '3', 'GET', 'tight:k'), 'in-db3', 'the configured database is selected at login');
  const second = await WireClient.connect(port.tight);
  t.teardown(() => second.close());
  const refused = text(await second.command('BLPOP', 'tight:list', '3'));
  t.match(refused, /ERR no server connection in pool "tight\/default" within 300ms \(timeouts\.acquire\)/, 'the second blocking client waits at most timeouts.acquire');
  await second.closed;
  t.pass('a client idle for timeouts.client_idle is closed');
  await redis.cli('-n', '3', 'LPUSH', 'tight:list', 'x');
  t.equal(text(await holder.next()), '[tight:list,x]', 'the holder, waiting on BLPOP longer than client_idle, was not closed as idle');
});

t.test('a client that leaves during BLPOP 0 frees its dedicated connection: the server-side wait is cut, the bound is not leaked', async (t) => {
  const leaver = await WireClient.connect(port.tight);
  leaver.send('BLPOP', 'tight:forever', '0');
  // flags=b: a connection blocked in a command, on the server.
  await waitFor('the BLPOP to reach the server', async () => /flags=b /.test(await redis.cli('CLIENT', 'LIST')));
  leaver.close();
  await waitFor('the server-side BLPOP to be cut', async () => !/flags=b /.test(await redis.cli('CLIENT', 'LIST')));
  const next = await WireClient.connect(port.tight);
  t.teardown(() => next.close());
  t.equal(text(await next.command('BLPOP', 'tight:forever', '1')), '<null>', 'the only dedicated slot (max_dedicated_connections: 1) serves the next client');
});

t.test('an unreachable upstream answers -ERR naming it, within timeouts.connect', async (t) => {
  const client = await WireClient.connect(port.nowhere);
  t.teardown(() => client.close());
  t.match(text(await client.command('GET', 'k')), /ERR cannot connect to upstream 127\.0\.0\.1:\d+: ECONNREFUSED/);
  t.match(text(await client.command('GET', 'k')), /ERR cannot connect to upstream/, 'again after back-off, and the client stays connected');
});

t.test('requests in flight when the upstream dies each get -ERR upstream connection lost, in order; the pool reconnects', async (t) => {
  const observer = await WireClient.connect(port.main);
  const victim = await WireClient.connect(port.main);
  t.teardown(() => {
    observer.close();
    victim.close();
  });
  t.equal(text(await victim.command('CLIENT', 'SETNAME', 'victim')), 'OK');
  t.equal(text(await victim.command('SET', 'lost:k', 'v')), 'OK');
  await redis.cli('CLIENT', 'PAUSE', '20000', 'ALL');
  victim.send('GET', 'lost:k');
  victim.send('INCR', 'lost:n');
  victim.send('GET', 'lost:k');
  await untilOutstanding(observer, 'victim', 3);
  await redis.kill();
  const replies = [text(await victim.next()), text(await victim.next()), text(await victim.next())];
  for (const reply of replies) t.match(reply, /^ERR:ERR upstream connection lost \(127\.0\.0\.1:\d+: /, reply);
  await redis.start();
  await waitFor('sluice to reconnect', async () => text(await victim.command('SET', 'lost:k', 'again')) === 'OK');
  t.equal(text(await victim.command('GET', 'lost:k')), 'again', 'the same client is served by a fresh connection');
});

t.test('clients pipelining unique values never see another’s value, also while the upstream is killed and restarted', async (t) => {
  const clients = await Promise.all(Array.from({ length: 20 }, () => WireClient.connect(port.main)));
  t.teardown(() => {
    for (const c of clients) c.close();
  });
  let foreign = 0;
  let errors = 0;
  let good = 0;
  const unexpectedErrors: string[] = [];
  let restarted = false;
  const run = Promise.all(
    clients.map(async (client, c) => {
      for (let round = 0; round < 40; round++) {
        const n = 20;
        for (let i = 0; i < n; i++) {
          client.send('SET', `tag:${c}:${i}`, `v:${c}:${i}:${round}`);
          client.send('GET', `tag:${c}:${i}`);
        }
        for (let i = 0; i < n * 2; i++) {
          const reply = text(await client.next());
          if (reply === '<closed>') throw new Error('sluice closed a client');
          if (reply.startsWith('ERR:')) {
            errors++;
            if (!/upstream connection lost|cannot connect to upstream/.test(reply)) unexpectedErrors.push(reply);
          } else if (reply === 'OK' || reply === '<null>') good++;
          else if (reply.startsWith(`v:${c}:${i >> 1}:`)) good++;
          else foreign++;
        }
        if (c === 0 && round === 10) {
          await redis.kill();
          await redis.start();
          restarted = true;
        }
      }
    }),
  );
  await run;
  t.ok(restarted, 'the upstream was killed and restarted mid-run');
  t.equal(foreign, 0, `no reply carried a value that was not the client’s own (${good} good, ${errors} errors)`);
  t.same(unexpectedErrors.slice(0, 5), [], 'errors during the outage name the lost or refused upstream');
  t.ok(good > 0, 'replies were served');
});

t.test('a reload applies pool_size and a new password without dropping connected clients', async (t) => {
  const before = await WireClient.connect(port.main);
  t.teardown(() => before.close());
  t.equal(text(await before.command('SET', 'reload:k', '1')), 'OK');
  sluice.writeConfig(config().replace('    pool_size: 2\n', '    pool_size: 1\n    password: newpass\n'));
  sluice.signal('SIGHUP');
  await waitFor('the new password to apply', async () => {
    const probe = await WireClient.connect(port.main);
    const reply = text(await probe.command('GET', 'reload:k'));
    probe.close();
    return /NOAUTH/.test(reply);
  });
  t.pass('a new client must now AUTH');
  t.equal(text(await before.command('INCR', 'reload:k')), '2', 'the client connected before the reload is still served');
});
