/**
 * Capped exponential backoff with jitter, the one implementation behind every retry in vop: the
 * agent's reconnect to the controller, the controller's work-queue retries, a link's reset-and-retry
 * and a device backend's restarts. Each caller names its policy as constants where it retries.
 *
 * The n-th retry (n = 0 for the first) waits min(maxMs, initialMs * 2^n), scaled by a random factor
 * in [jitter[0], jitter[1]): [0.8, 1.2] spreads retries both ways, [1, 1.2] never retries sooner
 * than the plain doubling. Delays are whole milliseconds.
 */

export interface BackoffPolicy {
  /** Delay before the first retry. */
  readonly initialMs: number;
  /** Cap of the doubling (before jitter). */
  readonly maxMs: number;
  /** Random multiplier range [low, high) applied to each delay. */
  readonly jitter: readonly [number, number];
}

/** The delay before retry `retry` (0-based) under `policy`. */
export function backoffDelayMs(policy: BackoffPolicy, retry: number): number {
  // 2^52 is still exact; beyond it the cap applies anyway.
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.max(0, retry), 52));
  const [low, high] = policy.jitter;
  return Math.round(base * (low + Math.random() * (high - low)));
}

/** A retry counter for one thing that retries: next() gives the delay and counts, reset() after a success. */
export class Backoff {
  private retry = 0;

  constructor(readonly policy: BackoffPolicy) {}

  /** Retries so far since the last reset. */
  get retries(): number {
    return this.retry;
  }

  next(): number {
    return backoffDelayMs(this.policy, this.retry++);
  }

  reset(): void {
    this.retry = 0;
  }
}
