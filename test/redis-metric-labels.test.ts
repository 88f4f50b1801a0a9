// The Redis label values against bytes and names: a fixed set whatever the traffic.
import t from 'tap';
import { COMMAND_FAMILIES, commandFamily, errorKind } from '../proxy/redis/metric-labels.js';

const family = (name: string) => COMMAND_FAMILIES[commandFamily(name)];

t.test('commands map to their family; unknown and module commands to other', async (t) => {
  t.equal(family('set'), 'string');
  t.equal(family('pfadd'), 'string', 'HyperLogLogs are strings');
  t.equal(family('hset'), 'hash');
  t.equal(family('lpush'), 'list');
  t.equal(family('geoadd'), 'zset', 'geo sets are sorted sets');
  t.equal(family('blpop'), 'blocking');
  t.equal(family('xreadgroup'), 'stream');
  t.equal(family('evalsha'), 'scripting');
  t.equal(family('flushall'), 'server');
  t.equal(family('del'), 'keyspace');
  t.equal(family('json.set'), 'other');
  t.equal(family(''), 'other', 'a name too long to keep is other');
});

t.test('error replies count by prefix; unknown, cut-off or overlong prefixes as other; non-errors not at all', async (t) => {
  const kind = (s: string) => errorKind(Buffer.from(s), 0, Buffer.byteLength(s));
  t.equal(kind('-WRONGTYPE Operation against a key holding the wrong kind of value\r\n'), 'WRONGTYPE');
  t.equal(kind('-ERR unknown command\r\n'), 'ERR');
  t.equal(kind('-MOVED 3999 127.0.0.1:6381\r\n'), 'MOVED');
  t.equal(kind('-LOADING Redis is loading the dataset in memory\r\n'), 'LOADING');
  t.equal(kind('-NOAUTH\r\n'), 'NOAUTH', 'a prefix with no message');
  t.equal(kind('-CUSTOMCODE from a script\r\n'), 'other');
  t.equal(kind('-AVERYLONGPREFIXINDEED x\r\n'), 'other', 'not read past a dozen bytes');
  t.equal(kind('-WRONG'), 'other', 'a prefix cut off by the end of the read');
  t.equal(kind('- leading space\r\n'), 'other');
  t.equal(kind('+OK\r\n'), null);
  t.equal(kind('$3\r\n-ER\r\n'), null);
  const buf = Buffer.from('+OK\r\n-BUSY running a script\r\n');
  t.equal(errorKind(buf, 5, buf.length), 'BUSY', 'read at an offset in a bigger buffer');
});
