#!/usr/bin/env -S node --max-semi-space-size=2
// The `sluice` command: parse flags, load and check the config, run the process.
// Exit codes: 0 clean shutdown, 1 bad config or usage, 2 a listen address cannot be bound.
// With `workers` > 1 this process becomes the cluster primary, and the same file, forked with
// SLUICE_WORKER_INDEX set, runs each worker (proxy/cluster/); with 1 none of that is loaded.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_CONFIG_YAML, loadConfigFile, parseConfig } from '../config/load.js';
import { inlineSecretWarning } from '../config/secret-file-check.js';
import type { Config } from '../config/schema.js';
import { createLogger } from './log.js';
import { Sluice } from './sluice.js';

const USAGE = `usage: sluice [--config FILE] [--check] [--version]
  --config FILE   YAML config (default: $SLUICE_CONFIG, else the embedded default)
  --check         validate the config and exit: 0 valid, 1 with every problem listed
  --version       print the version`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number | undefined> {
  if (process.env.SLUICE_WORKER_INDEX !== undefined) {
    const { runWorker } = await import('./cluster/worker.js');
    runWorker();
    return undefined;
  }
  let flags: { config?: string; check?: boolean; version?: boolean; help?: boolean };
  try {
    flags = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, check: { type: 'boolean' }, version: { type: 'boolean', short: 'V' }, help: { type: 'boolean', short: 'h' } },
    }).values;
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    return 1;
  }
  if (flags.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (flags.version) {
    process.stdout.write(`sluice ${version()}\n`);
    return 0;
  }
  const configPath = flags.config ?? (process.env.SLUICE_CONFIG || undefined);
  let config: Config;
  try {
    config = configPath ? loadConfigFile(configPath) : parseConfig(DEFAULT_CONFIG_YAML, '(embedded default)');
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
  const secretWarning = configPath ? inlineSecretWarning(configPath) : undefined;
  if (flags.check) {
    if (secretWarning) process.stderr.write(`warning: ${secretWarning}\n`);
    process.stdout.write(`${configPath ?? '(embedded default)'}: ok\n`);
    return 0;
  }

  const log = createLogger(config.log.level);
  log.info({ version: version(), config: configPath ?? '(embedded default)', pid: process.pid, workers: config.workers }, 'sluice starting');
  if (secretWarning) log.warn({ config: configPath }, secretWarning);
  const options = { config, log, configPath, version: version(), exit: (code: number) => process.exit(code) };
  const sluice = config.workers > 1 ? new (await import('./cluster/primary.js')).ClusterPrimary(options) : new Sluice(options);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => sluice.onSignal(signal));
  try {
    await sluice.start();
  } catch (err) {
    // A SluiceError here, or a worker's start failure carrying its code.
    const errorCode = (err as { code?: string }).code;
    const code = errorCode === 'SLUICE_LISTEN_FAILED' ? 2 : 1;
    log.fatal({ err: { message: (err as Error).message, code: errorCode } }, (err as Error).message);
    process.stderr.write(`sluice: ${(err as Error).message}\n`);
    log.flush(() => process.exit(code));
    return undefined;
  }
  return undefined;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`sluice: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
