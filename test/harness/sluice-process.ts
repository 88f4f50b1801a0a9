// Runs the real sluice binary (dist/proxy/main.js) with a config written to a temp file, the
// way an operator would, and collects its JSON log lines.
import { type ChildProcess, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, tempDir, waitFor, GiveUp } from './tools.js';

export const MAIN_JS = fileURLToPath(new URL('../../proxy/main.js', import.meta.url));

export interface SluiceProcess {
  pid: number;
  metricsPort: number;
  configPath: string;
  /** Parsed JSON log lines so far. */
  logs: Array<Record<string, unknown>>;
  stderr(): string;
  /** The metrics listen address given to `{{METRICS}}`. */
  metricsListen: string;
  /** Rewrites the config file (for reload tests). */
  writeConfig(yaml: string): void;
  signal(signal: NodeJS.Signals): void;
  /** Resolves with the exit code once the process exits. */
  exited: Promise<number | null>;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  metrics(): Promise<string>;
}

/** `yaml` may use `{{METRICS}}` for the metrics listen address; it is filled with a free port. */
export interface StartSluiceOptions {
  env?: NodeJS.ProcessEnv;
  /** Also wait for /readyz (every upstream reachable); by default only /healthz, which answers once the listeners are bound. */
  waitReady?: boolean;
  /** Run with this config path as it is (e.g. a ConfigMap-style symlink); `yaml` is then ignored. */
  configFile?: string;
  /** The metrics port the config file names (with configFile). */
  metricsPort?: number;
}

export async function startSluice(yaml: string, options: StartSluiceOptions = {}): Promise<SluiceProcess> {
  const metricsPort = options.metricsPort ?? (await freePort());
  const dir = tempDir('sluice');
  const configPath = options.configFile ?? join(dir, 'sluice.yaml');
  const fill = (text: string) => text.replaceAll('{{METRICS}}', `127.0.0.1:${metricsPort}`);
  if (!options.configFile) writeFileSync(configPath, fill(yaml));
  const child: ChildProcess = spawn(process.execPath, [MAIN_JS, '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  let partial = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ unparsed: line });
      }
    }
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const proc: SluiceProcess = {
    pid: child.pid ?? 0,
    metricsPort,
    metricsListen: `127.0.0.1:${metricsPort}`,
    configPath,
    logs,
    stderr: () => stderr,
    writeConfig: (text) => writeFileSync(configPath, fill(text)),
    signal: (signal) => {
      if (child.exitCode === null) child.kill(signal);
    },
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    async metrics() {
      const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
      return res.text();
    },
  };
  let gone = false;
  exited.then(() => {
    gone = true;
  });
  await waitFor(`sluice /healthz on ${metricsPort}`, async () => {
    if (gone) throw new GiveUp(`sluice exited early: ${stderr}`);
    const res = await fetch(`http://127.0.0.1:${metricsPort}/${options.waitReady === true ? 'readyz' : 'healthz'}`);
    return res.status === 200;
  });
  return proc;
}
