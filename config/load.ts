// Reading a config: YAML text -> ${VAR} substitution -> schema check -> cross-key checks.
// Every problem is collected (not just the first) and reported with its YAML path and value,
// so `sluice --check` tells an operator everything that is wrong in one go.
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { type Config, configSchema } from './schema.js';

export class ConfigError extends Error {
  readonly code = 'SLUICE_CONFIG_INVALID';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`invalid config ${source}:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** `postgres[0].pool_size` from ['postgres', 0, 'pool_size']. */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(top level)' : out;
}

const ENV_REF = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

/** Replaces ${VAR} and ${VAR:-default} in every string of the parsed tree; a missing VAR is a problem. */
function substituteEnv(node: unknown, path: PropertyKey[], env: NodeJS.ProcessEnv, problems: string[]): unknown {
  if (typeof node === 'string') {
    return node.replace(ENV_REF, (_whole, name: string, fallback: string | undefined) => {
      const value = env[name];
      if (value !== undefined) return value;
      if (fallback !== undefined) return fallback;
      problems.push(`${formatPath(path)}: environment variable ${name} is not set`);
      return '';
    });
  }
  if (Array.isArray(node)) return node.map((item, i) => substituteEnv(item, [...path, i], env, problems));
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(node)) out[key] = substituteEnv(value, [...path, key], env, problems);
    return out;
  }
  return node;
}

function valueAt(root: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[part];
  }
  return node;
}

function describeIssue(issue: z.core.$ZodIssue, input: unknown): string[] {
  const got = valueAt(input, issue.path);
  const shown = got === undefined ? 'nothing' : JSON.stringify(got);
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => `${formatPath([...issue.path, key])}: unknown key`);
    case 'too_small':
      return [`${formatPath(issue.path)}: must be >= ${issue.minimum}, got ${shown}`];
    case 'too_big':
      return [`${formatPath(issue.path)}: must be <= ${issue.maximum}, got ${shown}`];
    case 'invalid_type':
      return [`${formatPath(issue.path)}: must be ${issue.expected}, got ${got === undefined ? 'nothing' : shown}`];
    case 'invalid_value':
      return [`${formatPath(issue.path)}: must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${shown}`];
    case 'custom':
      return [`${formatPath(issue.path)}: ${issue.message}`];
    default:
      return [`${formatPath(issue.path)}: ${issue.message}, got ${shown}`];
  }
}

/** Checks that span keys, which the per-key schema cannot express. */
function crossCheck(config: Config): string[] {
  const problems: string[] = [];
  const names = new Map<string, string>();
  const listens = new Map<string, string>();
  const claim = (map: Map<string, string>, key: string, path: string, what: string) => {
    const earlier = map.get(key);
    if (earlier) problems.push(`${path}: ${what} ${JSON.stringify(key)} is already used by ${earlier}`);
    else map.set(key, path);
  };
  claim(listens, config.metrics.listen, 'metrics.listen', 'address');
  if (config.metrics.status_access === 'token' && config.metrics.status_token === undefined) {
    problems.push('metrics.status_token: needed when metrics.status_access is token');
  }
  config.postgres.forEach((pg, i) => {
    claim(names, pg.name, `postgres[${i}].name`, 'name');
    claim(listens, pg.listen, `postgres[${i}].listen`, 'address');
    if (pg.min_pool_size > pg.pool_size) {
      problems.push(`postgres[${i}].min_pool_size: must be <= pool_size (${pg.pool_size}), got ${pg.min_pool_size}`);
    }
    if ((pg.auth_method === 'scram-sha-256' || pg.auth_method === 'md5') && pg.users.length === 0) {
      problems.push(`postgres[${i}].users: auth_method ${pg.auth_method} needs at least one user`);
    }
    if (pg.server.tls === 'verify-full' && !pg.server.ca_file) {
      problems.push(`postgres[${i}].server.ca_file: needed when server.tls is verify-full`);
    }
    const cipherProblem = (path: string, ciphers: string | undefined) => {
      if (ciphers === undefined) return;
      try {
        createSecureContext({ ciphers });
      } catch (err) {
        problems.push(`${path}: not a cipher list OpenSSL accepts (${(err as Error).message}), got ${JSON.stringify(ciphers)}`);
      }
    };
    cipherProblem(`postgres[${i}].server.tls_ciphers`, pg.server.tls_ciphers);
    cipherProblem(`postgres[${i}].tls.ciphers`, pg.tls?.ciphers);
  });
  config.redis.forEach((rd, i) => {
    claim(names, rd.name, `redis[${i}].name`, 'name');
    claim(listens, rd.listen, `redis[${i}].listen`, 'address');
  });
  problems.push(...workerBudgetProblems(config, config.workers));
  return problems;
}

/**
 * With N workers every per-process bound is split N ways (config/worker-share.ts); a bound
 * smaller than N would leave some worker with none, so it is refused rather than rounded up,
 * which would break the global bound. max_dedicated_connections may stay 0 (none anywhere).
 */
export function workerBudgetProblems(config: Config, workers: number): string[] {
  if (workers <= 1) return [];
  const problems: string[] = [];
  const atLeast = (path: string, value: number) => {
    if (value < workers) problems.push(`${path}: must be >= workers (${workers}) so every worker gets a share, got ${value}`);
  };
  config.postgres.forEach((pg, i) => {
    atLeast(`postgres[${i}].pool_size`, pg.pool_size);
    atLeast(`postgres[${i}].max_client_connections`, pg.max_client_connections);
  });
  config.redis.forEach((rd, i) => {
    atLeast(`redis[${i}].pool_size`, rd.pool_size);
    atLeast(`redis[${i}].max_client_connections`, rd.max_client_connections);
    if (rd.max_dedicated_connections > 0) atLeast(`redis[${i}].max_dedicated_connections`, rd.max_dedicated_connections);
  });
  return problems;
}

/** Parses and checks YAML text; throws ConfigError listing every problem. */
export function parseConfig(text: string, source: string, env: NodeJS.ProcessEnv = process.env): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true, uniqueKeys: true }) ?? {};
  } catch (err) {
    const message = err instanceof YAMLParseError ? err.message : String(err);
    throw new ConfigError(source, [`(yaml) ${message.split('\n')[0]}`]);
  }
  const problems: string[] = [];
  const substituted = substituteEnv(raw, [], env, problems);
  const result = configSchema.safeParse(substituted);
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(...describeIssue(issue, substituted));
  } else {
    problems.push(...crossCheck(result.data));
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return result.data as Config;
}

export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [`cannot read file: ${(err as Error).message}`]);
  }
  return parseConfig(text, path, env);
}

/** The embedded default: what `sluice` runs with no config at all. */
export const DEFAULT_CONFIG_YAML = `
metrics: { listen: 127.0.0.1:9898 }
postgres:
  - name: postgres
    listen: 127.0.0.1:6432
    server: { host: 127.0.0.1, port: 5432 }
    auth_method: passthrough
redis:
  - name: redis
    listen: 127.0.0.1:6380
    server: { host: 127.0.0.1, port: 6379 }
`;
