// The Redis pooler end to end: the real sluice binary in front of a real redis-server, driven by
// redis-benchmark, ioredis, node-redis and a bare RESP socket. One redis-server and one sluice
// (with several listeners) serve the whole file.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { createClient } from 'redis';
import t from 'tap';
import { parseExposition } from '../metrics/exposition.js';
import { type RedisServer, startRedis } from './harness/redis-server.js';
import { type SluiceProcess, startSluice } from './harness/sluice-process.js';
import { freePort, waitFor } from './harness/tools.js';
import { text, WireClient } from './redis-wire.js';

const execFileAsync = promisify(execFile);
const POOL_SIZE = 4;

let redis: RedisServer;
let sluice: SluiceProcess;
const port = { main: 0, auth: 0, users: 0, few: 0 };

t.before(async () => {
  redis = await startRedis();
  await redis.cli('ACL', 'SETUSER', 'alice', 'on', '>alice-pw', '~alice:*', '+@all');
  port.main = await freePort();
  port.auth = await freePort();
  port.users = await freePort();
  port.few = await freePort();
  const server = `{ host: 127.0.0.1, port: ${redis.port} }`;
  sluice = await startSluice(`
metrics: { listen: '{{METRICS}}' }
log: { level: warn }
redis:
  - name: main
    listen: 127.0.0.1:${port.main}
    server: ${server}
    pool_size: ${POOL_SIZE}
    max_dedicated_connections: 64
    # Generous: the test machine is shared, and a slow login must not read as a failure here.
    timeouts: { acquire: 20s, connect: 15s }
  - name: auth
    listen: 127.0.0.1:${port.auth}
    server: ${server}
    password: sesame
  - name: users
    listen: 127.0.0.1:${port.users}
    server: ${server}
    users: [{ name: alice, password: alice-pw }]
  - name: few
    listen: 127.0.0.1:${port.few}
    server: ${server}
    max_client_connections: 2
`);
});

t.teardown(async () => {
  await sluice?.stop();
  await redis?.stop();
});

/**
 * Upstream connections sluice logged in on the server (other than the one asking). The readiness
 * probe's TCP checks (proxy/upstream-probe.ts) connect and close without a command: `cmd=NULL`.
 */
async function serverConnections(direct: Redis): Promise<number> {
  const list = (await direct.client('LIST')) as string;
  return list.split('\n').filter((line) => line.includes('id=') && !line.includes('cmd=client|list') && !line.includes('cmd=NULL')).length;
}

t.test('redis-benchmark with 200 clients pipelining 16 runs without errors on at most pool_size upstream connections', async (t) => {
  const direct = new Redis({ host: '127.0.0.1', port: redis.port });
  t.teardown(() => direct.disconnect());
  let most = 0;
  let running = true;
  const watcher = (async () => {
    while (running) {
      most = Math.max(most, await serverConnections(direct));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await execFileAsync('redis-benchmark', ['-h', '127.0.0.1', '-p', String(port.main), '-c', '200', '-P', '16', '-t', 'set,get,incr,lpush,lpop', '-n', '40000', '-q'], { maxBuffer: 16 * 1024 * 1024 }));
  } finally {
    running = false;
    await watcher;
  }
  const summary = stdout.split('\r').filter((s) => /requests per second/.test(s));
  t.equal(summary.length, 5, `five commands measured: ${summary.map((s) => s.trim().split(':')[0]).join(' ')}`);
  t.notMatch(stdout + stderr, /error|ERR/i, 'no error reported');
  // No dedicated connections are in use during the benchmark: only the shared ones may exist.
  t.ok(most <= POOL_SIZE, `at most ${POOL_SIZE} upstream connections seen (saw ${most})`);
  t.ok(most >= 1, 'the watcher saw the shared connections');
});

t.test('100 clients each running 100 MULTI/INCR/EXEC end at exactly 10000, and a WATCH conflict aborts', async (t) => {
  const clients = Array.from({ length: 100 }, () => new Redis({ port: port.main, host: '127.0.0.1', maxRetriesPerRequest: 0 }));
  t.teardown(() => clients.forEach((c) => {
    c.disconnect();
  }));
  await clients[0].del('tx:counter');
  await Promise.all(
    clients.map(async (client) => {
      for (let i = 0; i < 100; i++) {
        const result = await client.multi().incr('tx:counter').exec();
        if (result === null || result[0][0] !== null) throw new Error(`transaction failed: ${JSON.stringify(result)}`);
      }
    }),
  );
  t.equal(await clients[0].get('tx:counter'), '10000');

  const [a, b] = [clients[0], clients[1]];
  await a.set('tx:watched', 'before');
  await a.watch('tx:watched');
  await b.set('tx:watched', 'changed by b');
  const aborted = await a.multi().set('tx:watched', 'from a').exec();
  t.equal(aborted, null, 'EXEC after a conflicting write returns null');
  t.equal(await b.get('tx:watched'), 'changed by b');
  await a.watch('tx:watched');
  const applied = await a.multi().set('tx:watched', 'from a').exec();
  t.same(applied, [[null, 'OK']], 'without a conflict the transaction applies');
});

t.test('BLPOP waits on its own connection while 50 other clients keep being served, and LPUSH wakes it', async (t) => {
  const blocker = new Redis({ port: port.main, host: '127.0.0.1' });
  const pusher = new Redis({ port: port.main, host: '127.0.0.1' });
  const others = Array.from({ length: 50 }, () => new Redis({ port: port.main, host: '127.0.0.1' }));
  t.teardown(() => [blocker, pusher, ...others].forEach((c) => {
    c.disconnect();
  }));
  await pusher.del('bl:list');
  let popped = false;
  const pop = blocker.blpop('bl:list', 5).then((value) => {
    popped = true;
    return value;
  });
  await Promise.all(
    others.map(async (client, i) => {
      for (let j = 0; j < 10; j++) {
        await client.set(`bl:k${i}`, `${i}-${j}`);
        if ((await client.get(`bl:k${i}`)) !== `${i}-${j}`) throw new Error('wrong value');
      }
    }),
  );
  t.equal(popped, false, 'all 1000 GET and SET commands of the others completed while BLPOP still waited');
  const metrics = await sluice.metrics();
  t.match(metrics, /sluice_dedicated_connections\{protocol="redis",pool="main",database="0",user="default"\} [1-9]/, 'the dedicated connection is counted');
  t.match(metrics, /sluice_pinned_clients\{protocol="redis",pool="main",database="0",user="default"\} 1\b/, 'and the client holding it is pinned');
  await pusher.lpush('bl:list', 'wake-up');
  t.same(await pop, ['bl:list', 'wake-up'], 'LPUSH woke the BLPOP');
  t.same(await blocker.blpop('bl:list', 1), null, 'a BLPOP that times out answers null after its own timeout');
});

t.test('SUBSCRIBE/PUBLISH work under RESP2 and, after HELLO 3, as RESP3 pushes', async (t) => {
  const subscriber = new Redis({ port: port.main, host: '127.0.0.1' });
  const publisher = new Redis({ port: port.main, host: '127.0.0.1' });
  t.teardown(() => [subscriber, publisher].forEach((c) => {
    c.disconnect();
  }));
  const got = new Promise<[string, string]>((resolve) => subscriber.on('message', (channel, message) => resolve([channel, message])));
  await subscriber.subscribe('news');
  t.equal(await publisher.publish('news', 'resp2 hello'), 1, 'one subscriber counted');
  t.same(await got, ['news', 'resp2 hello']);

  const wire = await WireClient.connect(port.main);
  t.teardown(() => wire.close());
  const hello = text(await wire.command('HELLO', '3'));
  t.match(hello, /server:redis.*proto:3/, 'HELLO 3 answers a RESP3 map with proto 3');
  t.equal(text(await wire.command('SUBSCRIBE', 'r3')), '>[subscribe,r3,1]', 'the subscribe confirmation is a push');
  await publisher.publish('r3', 'pushed');
  t.equal(text(await wire.next()), '>[message,r3,pushed]', 'the message arrives as a push');
  t.equal(text(await wire.command('PING')), 'PONG', 'a RESP3 subscriber may still run commands');
  t.equal(text(await wire.command('UNSUBSCRIBE', 'r3')), '>[unsubscribe,r3,0]');
});

t.test('a RESP2 subscriber that unsubscribes from everything gives its dedicated connection back and is an ordinary client again', async (t) => {
  const pinned = async () => {
    const families = parseExposition(await sluice.metrics());
    return (families.get('sluice_pinned_clients')?.samples ?? []).filter((s) => s.labels.pool === 'main').reduce((sum, s) => sum + s.value, 0);
  };
  // Clients of earlier tests may still be on their way out: start from none pinned.
  await waitFor('no client of an earlier test pinned', async () => (await pinned()) === 0, 30_000);
  const before = 0;
  const wire = await WireClient.connect(port.main);
  t.teardown(() => wire.close());
  const publisher = new Redis({ port: port.main, host: '127.0.0.1' });
  t.teardown(() => publisher.disconnect());
  // Two channels, then a partial UNSUBSCRIBE: still subscribed, still dedicated.
  wire.send('SUBSCRIBE', 'release:a', 'release:b');
  t.equal(text(await wire.next()), '[subscribe,release:a,1]');
  t.equal(text(await wire.next()), '[subscribe,release:b,2]');
  t.equal(await pinned(), before + 1, 'the subscriber holds a dedicated connection');
  t.equal(text(await wire.command('UNSUBSCRIBE', 'release:a')), '[unsubscribe,release:a,1]');
  t.equal(await publisher.publish('release:b', 'still here'), 1);
  t.equal(text(await wire.next()), '[message,release:b,still here]', 'still subscribed to the other channel');
  t.equal(await pinned(), before + 1, 'one subscription left: still dedicated');
  // The last one goes with an argument-less UNSUBSCRIBE.
  t.equal(text(await wire.command('UNSUBSCRIBE')), '[unsubscribe,release:b,0]');
  await waitFor('the subscriber is no longer pinned', async () => (await pinned()) === before, 30_000);
  t.equal(await publisher.publish('release:b', 'nobody'), 0, 'nobody is subscribed any more');
  t.match(text(await wire.command('CLIENT', 'INFO')), /flags=N .*sub=0/, 'CLIENT INFO shows an ordinary client');
  t.equal(text(await wire.command('SET', 'release:key', 'v')), 'OK', 'normal commands work again');
  t.equal(text(await wire.command('GET', 'release:key')), 'v');
  t.equal(await pinned(), before, 'and run on the shared pool, not a dedicated connection');
  // And it can subscribe again.
  t.equal(text(await wire.command('SUBSCRIBE', 'release:c')), '[subscribe,release:c,1]');
  t.equal(await publisher.publish('release:c', 'again'), 1);
  t.equal(text(await wire.next()), '[message,release:c,again]');
  t.equal(text(await wire.command('UNSUBSCRIBE', 'release:c')), '[unsubscribe,release:c,0]');
  await waitFor('released a second time', async () => (await pinned()) === before, 30_000);

  const sub = new Redis({ port: port.main, host: '127.0.0.1' });
  t.teardown(() => sub.disconnect());
  await sub.subscribe('release:io');
  t.equal(await pinned(), before + 1, 'an ioredis subscriber is pinned');
  await sub.unsubscribe('release:io');
  await waitFor('the ioredis subscriber is released', async () => (await pinned()) === before, 30_000);
  t.equal(await sub.set('release:io-key', 'w'), 'OK', 'ioredis runs commands after unsubscribing');
  t.equal(await sub.get('release:io-key'), 'w');
});

t.test('SELECT in one client never changes the database of another', async (t) => {
  const one = await WireClient.connect(port.main);
  const zero = await WireClient.connect(port.main);
  t.teardown(() => [one, zero].forEach((c) => {
    c.close();
  }));
  t.equal(text(await one.command('SELECT', '1')), 'OK');
  t.equal(text(await one.command('SET', 'sel:k', 'in-db1')), 'OK');
  t.equal(text(await zero.command('SET', 'sel:k', 'in-db0')), 'OK');
  t.equal(text(await one.command('GET', 'sel:k')), 'in-db1');
  t.equal(text(await zero.command('GET', 'sel:k')), 'in-db0');
  t.equal(await redis.cli('-n', '1', 'GET', 'sel:k'), 'in-db1', 'the server has it in db 1');
  t.equal(await redis.cli('-n', '0', 'GET', 'sel:k'), 'in-db0', 'and in db 0');
  t.match(text(await one.command('SELECT', 'x')), /ERR value is not an integer/);
  t.match(text(await one.command('SELECT', '99')), /DB index is out of range/, 'a database the server does not have is refused');
  t.equal(text(await one.command('GET', 'sel:k')), 'in-db1', 'and the client stays where it was');
  // A transaction in db 1 runs in db 1; the dedicated connection is brought there first.
  t.equal(text(await one.command('MULTI')), 'OK');
  t.equal(text(await one.command('GET', 'sel:k')), 'QUEUED');
  t.equal(text(await one.command('EXEC')), '[in-db1]');
});

t.test('a 10 MiB value round-trips intact', async (t) => {
  const client = new Redis({ port: port.main, host: '127.0.0.1' });
  t.teardown(() => client.disconnect());
  const value = Buffer.alloc(10 * 1024 * 1024);
  for (let i = 0; i < value.length; i += 4) value.writeUInt32LE((i * 2654435761) >>> 0, i);
  await client.set('big:value', value);
  const back = await client.getBuffer('big:value');
  t.ok(back?.equals(value), 'the same 10 MiB came back');
  t.equal(await client.strlen('big:value'), value.length);
});

t.test('many clients pipelining unique keys never see a value that is not theirs', async (t) => {
  const clients = await Promise.all(Array.from({ length: 40 }, () => WireClient.connect(port.main)));
  t.teardown(() => clients.forEach((c) => {
    c.close();
  }));
  let wrong = 0;
  await Promise.all(
    clients.map(async (client, c) => {
      for (let round = 0; round < 10; round++) {
        const n = 30;
        for (let i = 0; i < n; i++) {
          client.send('SET', `tag:${c}:${i}`, `v:${c}:${round}:${i}`);
          client.send('GET', `tag:${c}:${i}`);
        }
        for (let i = 0; i < n; i++) {
          const set = text(await client.next());
          const got = text(await client.next());
          if (set !== 'OK' || got !== `v:${c}:${round}:${i}`) wrong++;
        }
      }
    }),
  );
  t.equal(wrong, 0, '40 clients × 10 rounds × 30 SET/GET pairs, every reply the client’s own');
});

t.test('ioredis pipelines, transactions and pub/sub work through sluice', async (t) => {
  const client = new Redis({ port: port.main, host: '127.0.0.1', db: 2, connectionName: 'ioredis-test' });
  const sub = new Redis({ port: port.main, host: '127.0.0.1' });
  t.teardown(() => [client, sub].forEach((c) => {
    c.disconnect();
  }));
  const results = await client.pipeline().set('io:a', '1').incr('io:a').get('io:a').exec();
  t.same(results, [
    [null, 'OK'],
    [null, 2],
    [null, '2'],
  ]);
  t.equal(await redis.cli('-n', '2', 'GET', 'io:a'), '2', 'db option honoured');
  t.same(await client.multi().set('io:b', 'x').get('io:b').exec(), [
    [null, 'OK'],
    [null, 'x'],
  ]);
  t.equal(await client.client('GETNAME'), 'ioredis-test', 'connectionName applied via CLIENT SETNAME');
  const message = new Promise<string>((resolve) => sub.on('pmessage', (_p, _c, m) => resolve(m)));
  await sub.psubscribe('io:*');
  await client.publish('io:chan', 'pattern hit');
  t.equal(await message, 'pattern hit');
});

t.test('node-redis pipelines, transactions and pub/sub work through sluice, RESP2 and RESP3', async (t) => {
  for (const RESP of [2, 3] as const) {
    const client = createClient({ url: `redis://127.0.0.1:${port.main}`, RESP });
    await client.connect();
    const sub = client.duplicate();
    await sub.connect();
    t.teardown(async () => {
      await client.quit().catch(() => {});
      await sub.quit().catch(() => {});
    });
    t.equal(await client.set(`nr${RESP}:a`, '1'), 'OK');
    const [set, incr, get] = await client.multi().set(`nr${RESP}:b`, '5').incr(`nr${RESP}:b`).get(`nr${RESP}:b`).exec();
    t.same([set, incr, get], ['OK', 6, '6'], `RESP${RESP} transaction`);
    const piped = await Promise.all([client.incr(`nr${RESP}:c`), client.incr(`nr${RESP}:c`), client.get(`nr${RESP}:c`)]);
    t.same(piped, [1, 2, '2'], `RESP${RESP} auto-pipelined commands`);
    let resolveGot: (message: string) => void = () => {};
    const got = new Promise<string>((resolve) => {
      resolveGot = resolve;
    });
    await sub.subscribe(`nr${RESP}:chan`, (message) => resolveGot(message));
    await client.publish(`nr${RESP}:chan`, `hello ${RESP}`);
    t.equal(await got, `hello ${RESP}`, `RESP${RESP} pub/sub`);
  }
});

t.test('garbage gets -ERR Protocol error and a close, and the proxy keeps serving', async (t) => {
  const bystander = await WireClient.connect(port.main);
  const bad = await WireClient.connect(port.main);
  t.teardown(() => [bystander, bad].forEach((c) => {
    c.close();
  }));
  t.equal(text(await bystander.command('SET', 'garbage:k', 'fine')), 'OK');
  bad.sendRaw(Buffer.from([0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a]));
  t.match(text(await bad.next()), /^ERR:ERR Protocol error: unexpected byte 0x00/);
  await bad.closed;
  t.pass('the offender was closed');
  const huge = await WireClient.connect(port.main);
  huge.sendRaw('*1\r\n$999999999999\r\n');
  t.match(text(await huge.next()), /Protocol error: invalid bulk length/);
  await huge.closed;
  t.equal(text(await bystander.command('GET', 'garbage:k')), 'fine', 'the other client is unaffected');
});

t.test('CLIENT commands act on sluice’s own clients; FLUSHALL, SCRIPT FLUSH and CLIENT KILL TYPE normal leave the caller working', async (t) => {
  const me = await WireClient.connect(port.main);
  const victim = await WireClient.connect(port.main);
  t.teardown(() => [me, victim].forEach((c) => {
    c.close();
  }));
  const id = Number(text(await me.command('CLIENT', 'ID')));
  t.ok(id > 0, 'CLIENT ID is a sluice client id');
  t.equal(text(await me.command('CLIENT', 'SETNAME', 'tester')), 'OK');
  t.equal(text(await me.command('CLIENT', 'GETNAME')), 'tester');
  t.equal(text(await me.command('CLIENT', 'SETINFO', 'LIB-NAME', 'wire')), 'OK');
  t.match(text(await me.command('CLIENT', 'INFO')), new RegExp(`^id=${id} .*name=tester .*lib-name=wire`));
  const list = text(await me.command('CLIENT', 'LIST'));
  t.match(list, new RegExp(`id=${id} `), 'CLIENT LIST shows this client');
  t.notMatch(list, new RegExp(`:${redis.port} `), 'and no upstream connection');
  t.equal(text(await me.command('FLUSHALL')), 'OK');
  t.equal(text(await me.command('SCRIPT', 'FLUSH')), 'OK');
  await victim.command('PING');
  const killed = Number(text(await me.command('CLIENT', 'KILL', 'TYPE', 'normal')));
  t.ok(killed >= 1, `CLIENT KILL TYPE normal killed ${killed} other client(s)`);
  await victim.closed;
  t.pass('the other client was closed');
  t.equal(text(await me.command('PING')), 'PONG', 'the caller survives');
  t.match(text(await me.command('CLIENT', 'TRACKING', 'on')), /ERR CLIENT TRACKING is not supported/, 'TRACKING refused by name');
  t.match(text(await me.command('MONITOR')), /ERR MONITOR is not supported/, 'MONITOR refused by name');
  t.match(text(await me.command('CLIENT', 'REPLY', 'OFF')), /ERR CLIENT REPLY is not supported/);
  t.equal(text(await me.command('RESET')), 'RESET');
  t.equal(text(await me.command('CLIENT', 'GETNAME')), '<null>', 'RESET cleared the name');
  t.equal(text(await me.command('PING')), 'PONG', 'and the connection is still open');
});

t.test('HELLO answers for RESP2 and RESP3, QUIT answers +OK after the pending replies', async (t) => {
  const wire = await WireClient.connect(port.main);
  t.teardown(() => wire.close());
  t.match(text(await wire.command('HELLO', '2')), /^\[server,redis,version,7\.\d+\.\d+,proto,2,id,\d+/);
  t.match(text(await wire.command('HELLO', '4')), /NOPROTO/);
  wire.sendRaw('*3\r\n$3\r\nSET\r\n$5\r\nq:key\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$5\r\nq:key\r\n*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n');
  t.equal(text(await wire.next()), 'OK');
  t.equal(text(await wire.next()), '2');
  t.equal(text(await wire.next()), 'OK', 'QUIT answered after the replies before it');
  t.equal(text(await wire.next()), '<closed>', 'and nothing after it');
});

t.test('listener password: -NOAUTH before AUTH, -WRONGPASS for a wrong one, then served', async (t) => {
  const wire = await WireClient.connect(port.auth);
  t.teardown(() => wire.close());
  t.equal(text(await wire.command('GET', 'x')), 'ERR:NOAUTH Authentication required.');
  t.equal(text(await wire.command('AUTH', 'wrong')), 'ERR:WRONGPASS invalid username-password pair or user is disabled.');
  t.equal(text(await wire.command('AUTH', 'sesame')), 'OK');
  t.equal(text(await wire.command('SET', 'auth:k', 'v')), 'OK');
  const ioredis = new Redis({ port: port.auth, host: '127.0.0.1', password: 'sesame' });
  t.teardown(() => ioredis.disconnect());
  t.equal(await ioredis.get('auth:k'), 'v', 'ioredis logs in with the password');
  const hello = await WireClient.connect(port.auth);
  t.teardown(() => hello.close());
  t.match(text(await hello.command('HELLO', '3')), /NOAUTH HELLO must be called/);
  t.match(text(await hello.command('HELLO', '3', 'AUTH', 'default', 'sesame')), /proto:3/, 'HELLO AUTH logs in');
});

t.test('listener users log in upstream as themselves, so each keeps its own ACL rights', async (t) => {
  const wire = await WireClient.connect(port.users);
  t.teardown(() => wire.close());
  t.equal(text(await wire.command('AUTH', 'alice', 'nope')), 'ERR:WRONGPASS invalid username-password pair or user is disabled.');
  t.equal(text(await wire.command('AUTH', 'alice', 'alice-pw')), 'OK');
  t.equal(text(await wire.command('SET', 'alice:k', '1')), 'OK');
  t.match(text(await wire.command('SET', 'bob:k', '1')), /NOPERM/, 'alice’s ACL applies upstream');
  t.equal(text(await wire.command('ACL', 'WHOAMI')), 'alice');
});

t.test('max_client_connections: the client over the limit gets -ERR max number of clients reached', async (t) => {
  const a = await WireClient.connect(port.few);
  const b = await WireClient.connect(port.few);
  t.teardown(() => [a, b].forEach((c) => {
    c.close();
  }));
  t.equal(text(await a.command('PING')), 'PONG');
  t.equal(text(await b.command('PING')), 'PONG');
  const c = await WireClient.connect(port.few);
  t.equal(text(await c.next()), 'ERR:ERR max number of clients reached');
  await c.closed;
  t.pass('and is closed');
});

t.test('drain on SIGTERM: idle clients close, a client waiting on BLPOP gets its reply, later requests a reason, then sluice exits', async (t) => {
  const observer = await WireClient.connect(port.main);
  const waiter = await WireClient.connect(port.main);
  const idle = await WireClient.connect(port.main);
  t.teardown(() => {
    for (const c of [observer, waiter, idle]) c.close();
  });
  t.equal(text(await waiter.command('CLIENT', 'SETNAME', 'drainee')), 'OK');
  t.equal(text(await idle.command('PING')), 'PONG');
  waiter.send('BLPOP', 'drain:list', '30');
  await waitFor('the BLPOP to be outstanding', async () => /name=drainee .*oll=1 /.test(text(await observer.command('CLIENT', 'LIST'))));
  sluice.signal('SIGTERM');
  await idle.closed;
  t.pass('an idle client is closed at once');
  waiter.send('GET', 'drain:other');
  await redis.cli('LPUSH', 'drain:list', 'last one');
  t.equal(text(await waiter.next()), '[drain:list,last one]', 'the waiting client still gets its reply');
  // The GET races the BLPOP reply: read before the reply is done it is refused with a reason;
  // read after, the connection has already closed cleanly behind the last reply due. Either way
  // it never gets a wrong reply or a reset.
  t.match(text(await waiter.next()), /^(ERR:ERR sluice is shutting down|<closed>)$/, 'a request sent during the drain is refused with a reason, or meets a clean close');
  await waiter.closed;
  t.equal(await sluice.exited, 0, 'sluice exits cleanly once its clients are gone');
});
