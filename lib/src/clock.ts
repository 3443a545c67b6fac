/**
 * Monotonic time for leases, deadlines and timeouts: it never steps when the wall
 * clock is set (NTP, an operator, a VM resumed). Date.now() is only for timestamps
 * shown to people and stored in objects.
 */
import { performance } from 'node:perf_hooks';

/** Milliseconds on a monotonic clock (origin: process start); only differences mean anything. */
export function monotonicMs(): number {
  return performance.now();
}

/** The wall-clock time at which a monotonic instant happened (for display). */
export function wallTimeOf(monotonic: number): Date {
  return new Date(Date.now() - (monotonicMs() - monotonic));
}
