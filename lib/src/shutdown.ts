/**
 * SIGTERM/SIGINT handling: the first signal runs the shutdown sequence once; a second
 * signal, or a sequence that overruns its deadline, exits at once with code 1.
 */
import type { Logger } from './logger';

export function onShutdownSignal(
  log: Logger,
  deadlineMs: number,
  shutdown: (signal: string) => Promise<void>,
): () => void {
  let started = false;
  const handler = (signal: NodeJS.Signals): void => {
    if (started) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    started = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error({ deadlineMs }, 'shutdown overran its deadline; exiting');
      process.exit(1);
    }, deadlineMs);
    force.unref();
    shutdown(signal).then(
      () => {
        clearTimeout(force);
        log.info('shutdown complete');
        log.flush();
        process.exitCode = 0;
        // Native worker threads and sockets are closed by then; exit promptly anyway.
        setImmediate(() => process.exit(0));
      },
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        log.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}
