/**
 * Monotonic time for leases, deadlines and timeouts: it never steps when the wall
 * clock is set (NTP, an operator, a VM resumed). Date.now() is only for timestamps
 * shown to people and stored in objects.
 */
import { performance } from 'node:perf_hooks';

import type { Duration } from '../proto/google-protobuf';

/** Milliseconds on a monotonic clock (origin: process start); only differences mean anything. */
export function monotonicMs(): number {
  return performance.now();
}

/** The wall-clock time at which a monotonic instant happened (for display). */
export function wallTimeOf(monotonic: number): Date {
  return new Date(Date.now() - (monotonicMs() - monotonic));
}

/** A millisecond count as a google.protobuf.Duration (leases and intervals handed to clients). */
export function durationOfMs(ms: number): Duration {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}
