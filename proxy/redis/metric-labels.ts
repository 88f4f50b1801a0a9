// The bounded label values the Redis listener reports: the family a command counts under
// (sluice_commands_total, sluice_command_duration_seconds) and the prefix an error reply counts
// under (sluice_errors_total). Both are small fixed sets: a command or error Redis adds later, or
// a module's, lands in `other` and can never create a series of its own.

/** Families in label order; a command's family is its index here (the FIFO stores the number). */
export const COMMAND_FAMILIES = [
  'string',
  'hash',
  'list',
  'set',
  'zset',
  'stream',
  'pubsub',
  'transaction',
  'blocking',
  'scripting',
  'connection',
  'server',
  'keyspace',
  'other',
] as const;

export type CommandFamily = (typeof COMMAND_FAMILIES)[number];

const OTHER = COMMAND_FAMILIES.indexOf('other');

// Bitmaps and HyperLogLogs are strings to Redis, geo sets are sorted sets: they count there.
// Blocking commands count as `blocking` whatever type they pop, because their latency is the
// wait, not the work; XREAD … BLOCK counts under `stream` (the family is the name's alone).
const MEMBERS: Record<CommandFamily, string> = {
  string:
    'append decr decrby get getdel getex getrange getset incr incrby incrbyfloat lcs mget mset msetnx psetex set setex setnx setrange strlen substr ' +
    'bitcount bitfield bitfield_ro bitop bitpos getbit setbit pfadd pfcount pfdebug pfmerge pfselftest',
  hash: 'hdel hexists hexpire hexpireat hexpiretime hget hgetall hgetdel hgetex hincrby hincrbyfloat hkeys hlen hmget hmset hpersist hpexpire hpexpireat hpexpiretime hpttl hrandfield hscan hset hsetex hsetnx hstrlen httl hvals',
  list: 'lindex linsert llen lmove lmpop lpop lpos lpush lpushx lrange lrem lset ltrim rpop rpoplpush rpush rpushx',
  set: 'sadd scard sdiff sdiffstore sinter sintercard sinterstore sismember smembers smismember smove spop srandmember srem sscan sunion sunionstore',
  zset:
    'zadd zcard zcount zdiff zdiffstore zincrby zinter zintercard zinterstore zlexcount zmpop zmscore zpopmax zpopmin zrandmember zrange zrangebylex zrangebyscore zrangestore zrank zrem zremrangebylex zremrangebyrank zremrangebyscore zrevrange zrevrangebylex zrevrangebyscore zrevrank zscan zscore zunion zunionstore ' +
    'geoadd geodist geohash geopos georadius georadius_ro georadiusbymember georadiusbymember_ro geosearch geosearchstore',
  stream: 'xack xackdel xadd xautoclaim xclaim xdel xdelex xgroup xinfo xlen xpending xrange xread xreadgroup xrevrange xsetid xtrim',
  pubsub: 'publish pubsub spublish subscribe psubscribe ssubscribe unsubscribe punsubscribe sunsubscribe',
  transaction: 'multi exec discard watch unwatch',
  blocking: 'blpop brpop blmove brpoplpush blmpop bzpopmin bzpopmax bzmpop wait waitaof',
  scripting: 'eval eval_ro evalsha evalsha_ro fcall fcall_ro function script',
  connection: 'auth client echo hello ping quit reset select',
  server: 'acl bgrewriteaof bgsave command config dbsize debug failover flushall flushdb info lastsave latency lolwut memory module monitor psync replconf replicaof role save shutdown slaveof slowlog swapdb sync time',
  keyspace: 'copy del dump exists expire expireat expiretime keys migrate move object persist pexpire pexpireat pexpiretime pttl randomkey rename renamenx restore scan sort sort_ro touch ttl type unlink',
  other: '',
};

const FAMILY_OF = new Map<string, number>();
for (const [i, family] of COMMAND_FAMILIES.entries()) {
  for (const name of MEMBERS[family].split(' ')) if (name !== '') FAMILY_OF.set(name, i);
}

/** The family index of a lower-cased command name; `other` for anything not listed. */
export function commandFamily(name: string): number {
  return FAMILY_OF.get(name) ?? OTHER;
}

/**
 * Error prefixes counted by name; any other prefix counts as `other`. The server's own (Redis 7/8
 * `-<CODE> message`), plus those sluice answers itself (NOAUTH, WRONGPASS, NOPROTO).
 */
export const ERROR_KINDS = new Set([
  'ERR',
  'WRONGTYPE',
  'NOAUTH',
  'WRONGPASS',
  'NOPERM',
  'NOPROTO',
  'NOSCRIPT',
  'BUSY',
  'BUSYKEY',
  'BUSYGROUP',
  'LOADING',
  'MOVED',
  'ASK',
  'TRYAGAIN',
  'CROSSSLOT',
  'CLUSTERDOWN',
  'MASTERDOWN',
  'READONLY',
  'OOM',
  'EXECABORT',
  'NOREPLICAS',
  'MISCONF',
  'NOGROUP',
  'UNBLOCKED',
  'UNKILLABLE',
  'NOTBUSY',
]);

const MINUS = 0x2d;
const SPACE = 0x20;
const CR = 0x0d;
/** No known prefix is longer; a longer word is `other` without being read. */
const MAX_PREFIX_BYTES = 12;

/**
 * The `sluice_errors_total` kind of the reply starting at buf[start] when it is a simple error
 * (`-PREFIX message\r\n`), else null. Reads at most a dozen bytes; a word cut off by the end of
 * the buffer counts as `other`.
 */
export function errorKind(buf: Buffer, start: number, end: number): string | null {
  if (buf[start] !== MINUS) return null;
  const limit = Math.min(end, start + 1 + MAX_PREFIX_BYTES + 1);
  let i = start + 1;
  while (i < limit && buf[i] !== SPACE && buf[i] !== CR) i++;
  if (i === limit || i === start + 1) return 'other';
  const word = buf.toString('latin1', start + 1, i);
  return ERROR_KINDS.has(word) ? word : 'other';
}
