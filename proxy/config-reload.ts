// The two halves of a config reload that the single process (sluice.ts) and the cluster primary
// (cluster/primary.ts) share: reading and checking the file, and recording the outcome. What
// happens in between (apply to the listeners, or hand to the workers) is each one's own.
import { type ConfigError, loadConfigFile } from '../config/load.js';
import type { Config } from '../config/schema.js';
import type { Metrics } from '../metrics/metrics.js';
import type { Logger } from './log.js';

/**
 * The re-read config, or undefined when there is nothing to re-read or it is rejected (logged and
 * counted; the running config stays). `extraProblems` adds checks beyond the file's own.
 */
export function readReloadedConfig(
  path: string | undefined,
  trigger: string,
  log: Logger,
  metrics: Metrics,
  extraProblems?: (next: Config) => string[],
): Config | undefined {
  if (!path) {
    log.warn({ trigger }, 'reload asked, but sluice runs on the embedded default config: nothing to re-read');
    return undefined;
  }
  try {
    const next = loadConfigFile(path);
    const problems = extraProblems?.(next) ?? [];
    if (problems.length > 0) throw Object.assign(new Error('config rejected'), { problems });
    return next;
  } catch (err) {
    metrics.configReloaded('failure');
    log.error({ trigger, path, problems: (err as ConfigError).problems ?? [String(err)] }, 'config reload rejected: keeping the running config');
    return undefined;
  }
}

/** Counts and logs an applied reload, then takes its log level. */
export function recordReload(next: Config, trigger: string, needsRestart: string[], log: Logger, metrics: Metrics): void {
  metrics.configReloaded('success');
  // Logged before the new level applies, so a reload that quiets the log is still recorded.
  if (needsRestart.length > 0) log.warn({ trigger, needs_restart: needsRestart }, 'config reloaded; these changes need a restart and were not applied');
  else log.info({ trigger, log_level: next.log.level }, 'config reloaded');
  log.level = next.log.level;
}
