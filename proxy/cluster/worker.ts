// One worker process of `workers` > 1. It waits for the primary's `start` (config, index,
// count), runs an ordinary Sluice on its share of every bound (config/worker-share.ts), and
// answers the primary: metrics, status and readiness for the HTTP side, configs after a reload,
// cancels other workers relay, drain and force. It never reads the config file on its own, so a
// restarted worker runs what its siblings run even if the file has changed since.
import { workerConfig } from '../../config/worker-share.js';
import { SluiceError } from '../errors.js';
import type { WorkerSeat } from '../listener.js';
import { createLogger, type Logger } from '../log.js';
import { Sluice } from '../sluice.js';
import { isMessage, type ToPrimary, type ToWorker } from './messages.js';

function send(message: ToPrimary): void {
  if (process.connected) process.send?.(message);
}

/** Waits for `start`; anything else before it is ignored. */
export function runWorker(): void {
  const onStart = (raw: unknown) => {
    if (!isMessage<ToWorker>(raw) || raw.type !== 'start') return;
    process.off('message', onStart);
    void serve(raw);
  };
  process.on('message', onStart);
  // A primary that is gone before it said start leaves nothing to serve.
  process.once('disconnect', () => process.exit(1));
  send({ type: 'hello' });
}

async function serve(start: Extract<ToWorker, { type: 'start' }>): Promise<void> {
  const { index, count } = start;
  process.removeAllListeners('disconnect');
  const log: Logger = createLogger(start.config.log.level).child({ worker: index });
  const cancelHandlers = new Map<string, (pid: number, secret: number) => void>();
  const seat: WorkerSeat = {
    index,
    count,
    forwardCancel: (owner, listener, pid, secret) => send({ type: 'cancel', owner, listener, pid, secret }),
    onForwardedCancel: (listener, handler) => cancelHandlers.set(listener, handler),
    requestReload: (trigger) => send({ type: 'reload', trigger }),
  };
  const sluice = new Sluice({
    config: workerConfig(start.config, index, count),
    log,
    configPath: start.configPath,
    version: start.version,
    worker: seat,
    exit: (code) => process.exit(code),
  });

  process.on('message', (raw: unknown) => {
    if (!isMessage<ToWorker>(raw)) return;
    switch (raw.type) {
      case 'request':
        void answer(sluice, raw.what).then(
          (body) => send({ type: 'reply', id: raw.id, body }),
          (err: Error) => log.warn({ err: err.message, what: raw.what }, 'cannot answer the primary'),
        );
        return;
      case 'config': {
        const extra = sluice.applyConfig(workerConfig(raw.config, index, count));
        log.debug({ needs_restart: extra }, 'config from the primary applied');
        return;
      }
      case 'cancel':
        cancelHandlers.get(raw.listener)?.(raw.pid, raw.secret);
        return;
      case 'shutdown':
        sluice.shutdown(raw.why);
        return;
      case 'force':
        sluice.stopNow(raw.why);
        return;
      default:
        return;
    }
  });
  // Kubernetes signals the primary (PID 1) only; a terminal's Ctrl-C reaches the whole process
  // group, so a worker reacts to SIGINT/SIGTERM as the primary would. SIGHUP is the primary's:
  // it re-reads the file and hands the result to every worker.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => sluice.onSignal(signal));
  process.on('SIGHUP', () => log.debug('SIGHUP: the primary reloads, not a worker'));
  process.on('disconnect', () => {
    log.error('the primary is gone: closing');
    sluice.stopNow('primary gone');
  });

  try {
    await sluice.start();
    send({ type: 'started' });
  } catch (err) {
    const code = err instanceof SluiceError ? err.code : undefined;
    log.fatal({ err: { message: (err as Error).message, code } }, (err as Error).message);
    send({ type: 'start-failed', code, message: (err as Error).message });
    log.flush(() => process.exit(code === 'SLUICE_LISTEN_FAILED' ? 2 : 1));
  }
}

async function answer(sluice: Sluice, what: 'metrics' | 'status' | 'readiness'): Promise<unknown> {
  switch (what) {
    case 'metrics':
      return sluice.metrics.json();
    case 'status':
      return sluice.metrics.snapshots();
    case 'readiness':
      return sluice.readiness();
  }
}
