/**
 * Event-loop stalls of the controller's main thread, where the time goes at scale: a timer
 * that should fire every CHECK_MS notes how late it ran; a stall of at least STALL_LOG_MS is
 * logged (code EVENT_LOOP_STALL, with the garbage collection time inside it, `gcMs`) and counted
 * in vop_controller_event_loop_stalls_total. The distribution of every delay is prom-client's
 * nodejs_eventloop_lag_* (default metrics).
 */
import { PerformanceObserver } from 'node:perf_hooks';

import { monotonicMs } from '../../../lib/src/clock';
import type { Logger } from '../../../lib/src/logger';

const CHECK_MS = 100;
export const STALL_LOG_MS = 1000;

export function watchLoopStalls(log: Logger, onStall: (ms: number) => void): () => void {
  let last = monotonicMs();
  /** Recent collections (start, duration; performance.now() milliseconds, as monotonicMs). */
  let gcs: { start: number; ms: number }[] = [];
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcs.push({ start: e.startTime, ms: e.duration });
  });
  gc.observe({ entryTypes: ['gc'] });
  const timer = setInterval(() => {
    const now = monotonicMs();
    const from = last;
    const late = now - last - CHECK_MS;
    last = now;
    gcs = gcs.filter((g) => g.start >= now - 60_000);
    if (late < STALL_LOG_MS) return;
    onStall(late);
    // The observer reports a collection a little later: count those inside the stall then.
    setTimeout(() => {
      const gcMs = gcs.filter((g) => g.start >= from && g.start < now).reduce((a, g) => a + g.ms, 0);
      log.warn(
        { code: 'EVENT_LOOP_STALL', stallMs: Math.round(late), gcMs: Math.round(gcMs) },
        'the event loop was blocked',
      );
    }, CHECK_MS).unref();
  }, CHECK_MS);
  timer.unref();
  return () => {
    clearInterval(timer);
    gc.disconnect();
  };
}
