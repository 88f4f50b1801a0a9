// The config contract: the example loads, every problem is reported with its path, env vars
// substitute, and the committed JSON Schema matches the zod source.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { ConfigError, DEFAULT_CONFIG_YAML, loadConfigFile, parseConfig } from '../config/load.js';
import { configJsonSchema } from '../config/write-schema.js';
import { formatDuration, parseDurationMs } from '../config/duration.js';

const root = new URL('../../', import.meta.url);

function problemsOf(yaml: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(yaml, 'test', env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

t.test('the example config loads and documents every listener kind', async (t) => {
  const config = loadConfigFile(new URL('config/sluice.example.yaml', root).pathname, { APP_PASSWORD: 'x' });
  t.equal(config.postgres[0].pool_size, 20);
  t.equal(config.postgres[0].timeouts.acquire, 30_000);
  t.equal(config.redis[0].timeouts.connect, 2000);
  t.equal(config.postgres[0].users[0].password, 'x');
});

t.test('the embedded default forwards 6432->5432 and 6380->6379 with metrics on 9898', async (t) => {
  const config = parseConfig(DEFAULT_CONFIG_YAML, 'default', {});
  t.equal(config.postgres[0].listen, '127.0.0.1:6432');
  t.equal(config.postgres[0].server.port, 5432);
  t.equal(config.postgres[0].auth_method, 'passthrough');
  t.equal(config.redis[0].listen, '127.0.0.1:6380');
  t.equal(config.redis[0].server.port, 6379);
  t.equal(config.metrics.listen, '127.0.0.1:9898');
});

t.test('pool_size 0, an unknown key and a bad duration are all reported with their paths and values', async (t) => {
  const problems = problemsOf(`
postgres:
  - name: main
    listen: 127.0.0.1:6432
    server: { host: db }
    pool_size: 0
    pool_sise: 3
    timeouts: { acquire: 5 seconds }
`);
  t.ok(problems.includes('postgres[0].pool_size: must be >= 1, got 0'), problems.join('\n'));
  t.ok(problems.includes('postgres[0].pool_sise: unknown key'), problems.join('\n'));
  t.ok(problems.some((p) => p.startsWith('postgres[0].timeouts.acquire: must be a duration') && p.includes('"5 seconds"')), problems.join('\n'));
  t.equal(problems.length, 3);
});

t.test('env references with defaults read the environment; a missing variable is named', async (t) => {
  const yaml = `
redis:
  - name: cache
    listen: 127.0.0.1:\${PORT:-6380}
    server: { host: "\${REDIS_HOST}" }
    password: "\${SECRET}"
`;
  const config = parseConfig(yaml, 'test', { REDIS_HOST: 'redis.internal', SECRET: 's3' });
  t.equal(config.redis[0].listen, '127.0.0.1:6380');
  t.equal(config.redis[0].server.host, 'redis.internal');
  t.equal(config.redis[0].password, 's3');
  const problems = problemsOf(yaml, { SECRET: 'x' });
  t.same(problems.filter((p) => p.includes('REDIS_HOST')), ['redis[0].server.host: environment variable REDIS_HOST is not set']);
});

t.test('cross-key rules: duplicate names and addresses, min above max, users needed for scram', async (t) => {
  const problems = problemsOf(`
postgres:
  - { name: a, listen: 127.0.0.1:7000, server: { host: h }, pool_size: 2, min_pool_size: 3, auth_method: scram-sha-256 }
redis:
  - { name: a, listen: 127.0.0.1:7000, server: { host: h } }
`);
  t.match(problems.join('\n'), /postgres\[0\]\.min_pool_size: must be <= pool_size \(2\), got 3/);
  t.match(problems.join('\n'), /postgres\[0\]\.users: auth_method scram-sha-256 needs at least one user/);
  t.match(problems.join('\n'), /redis\[0\]\.name: name "a" is already used by postgres\[0\]\.name/);
  t.match(problems.join('\n'), /redis\[0\]\.listen: address "127\.0\.0\.1:7000" is already used/);
});

t.test('YAML syntax errors and wrong types are reported, not thrown raw', async (t) => {
  t.match(problemsOf('postgres: [\n')[0], /^\(yaml\)/);
  t.same(problemsOf('log: { level: loud }'), ['log.level: must be one of "fatal", "error", "warn", "info", "debug", "trace", got "loud"']);
  t.same(problemsOf('postgres: 3'), ['postgres: must be array, got 3']);
  t.match(problemsOf('metrics: { listen: nowhere }')[0], /^metrics\.listen: must be host:port/);
});

t.test('durations parse with units and print back exactly', async (t) => {
  t.equal(parseDurationMs('250ms'), 250);
  t.equal(parseDurationMs('1.5s'), 1500);
  t.equal(parseDurationMs('10m'), 600_000);
  t.equal(parseDurationMs('1h'), 3_600_000);
  t.equal(parseDurationMs('0s'), 0);
  t.equal(parseDurationMs('5'), undefined);
  t.equal(parseDurationMs('-1s'), undefined);
  for (const ms of [0, 250, 1000, 90_000, 3_600_000]) t.equal(parseDurationMs(formatDuration(ms)), ms);
});

t.test('config/sluice.schema.json is generated from the current schema (run npm run gen:schema)', async (t) => {
  const committed = readFileSync(new URL('config/sluice.schema.json', root), 'utf8');
  t.equal(committed, configJsonSchema(), 'stale schema: run `npm run gen:schema`');
  const schema = JSON.parse(committed);
  t.equal(schema.additionalProperties, false, 'unknown top-level keys are rejected by editors too');
  t.ok(schema.properties.postgres.items.properties.pool_size);
});
