/**
 * Capped exponential backoff with jitter, the one implementation behind every retry in vop: the
 * agent's reconnect to the controller, a link's reset-and-retry, a device backend's restarts and the
 * controller's work-queue retries. Each caller names its policy as a constant where it retries.
 *
 * Attempt n (1 = the first retry) waits min(maxMs, baseMs * 2^(n-1)), scaled at random by
 * 1 - jitter .. 1 + jitter (spreads retries both ways), or by 1 .. 1 + jitter with jitterUpOnly
 * (never sooner than the plain doubling). Delays are whole milliseconds.
 */

export interface BackoffPolicy {
  /** Delay before the first retry. */
  readonly baseMs: number;
  /** Cap of the doubling (before jitter). */
  readonly maxMs: number;
  /** Fraction each delay may be scaled by at random (0.2: 0.8x .. 1.2x). */
  readonly jitter: number;
  /** Scale only upward (1x .. 1 + jitter). */
  readonly jitterUpOnly?: boolean;
}

/** The delay before attempt `attempt` (1 = the first retry) under `policy`. */
export function backoffDelay(attempt: number, policy: BackoffPolicy): number {
  // 2^52 is still exact; beyond it the cap applies anyway.
  const base = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(Math.max(0, attempt - 1), 52));
  const low = policy.jitterUpOnly ? 1 : 1 - policy.jitter;
  return Math.round(base * (low + Math.random() * (1 + policy.jitter - low)));
}

/** Consecutive attempts of one thing that retries: next() counts one and gives its delay, reset() after a success. */
export class Backoff {
  private attempt = 0;

  constructor(readonly policy: BackoffPolicy) {}

  /** Attempts since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  next(): number {
    this.attempt += 1;
    return backoffDelay(this.attempt, this.policy);
  }

  reset(): void {
    this.attempt = 0;
  }
}
