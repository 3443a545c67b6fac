/**
 * The process's one pino root logger. Components take child loggers with fixed,
 * trusted bindings (`{ component: 'link-manager' }`); untrusted data is nested under
 * an app-chosen key, never spread at the top level.
 */
import pino, { type Logger, type LevelWithSilent } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS: readonly LevelWithSilent[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function createRootLogger(name: string, level: LevelWithSilent, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'metadata.authorization',
          'config.tls.key',
          'tls.key',
          '*.password',
          '*.token',
          // A stream link's secret, wherever a link, spec or transport is logged (write-only).
          '*.secret',
          '*.*.secret',
          'spec.transport.kind.value.secret',
          'link.spec.transport.kind.value.secret',
          '*.link.spec.transport.kind.value.secret',
        ],
        censor: '[Redacted]',
      },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
