// The process logger: pino, one JSON object per line on stdout. Anything that could carry a
// secret is redacted by key, so a password never reaches a log line even by accident.
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACTED_KEYS = ['password', '*.password', '*.*.password', 'users[*].password', 'secret', '*.secret'];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'sluice' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACTED_KEYS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
