/**
 * Event-loop stalls of the controller's main thread, where the time goes at scale: a timer
 * that should fire every CHECK_MS notes how late it ran; a stall of at least STALL_LOG_MS is
 * logged (code EVENT_LOOP_STALL) and counted in vop_controller_event_loop_stalls_total. The
 * distribution of every delay is prom-client's nodejs_eventloop_lag_* (default metrics).
 */
import { monotonicMs } from '../../../lib/src/clock';
import type { Logger } from '../../../lib/src/logger';

const CHECK_MS = 100;
export const STALL_LOG_MS = 1000;

export function watchLoopStalls(log: Logger, onStall: (ms: number) => void): () => void {
  let last = monotonicMs();
  const timer = setInterval(() => {
    const now = monotonicMs();
    const late = now - last - CHECK_MS;
    last = now;
    if (late >= STALL_LOG_MS) {
      onStall(late);
      log.warn({ code: 'EVENT_LOOP_STALL', stallMs: Math.round(late) }, 'the event loop was blocked');
    }
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
