/**
 * Admission of agent registrations on the leader: at most `ratePerSecond` a second, with bursts
 * of `burst` (a token bucket). A refused registration gets RESOURCE_EXHAUSTED, reason
 * REGISTRATIONS_THROTTLED, and `retryAfterMs` in its ErrorInfo metadata: the time of a slot
 * reserved for it, so a herd of refused agents (a failover sends the whole fleet at once) comes
 * back spread over the time the leader needs to take them, instead of all retrying together.
 * Agents wait that long, scaled by 1-1.5 at random (agent/src/sync/sync-client.ts).
 *
 * Heartbeats, acks and status updates of registered agents are never throttled.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

import { monotonicMs } from '../../../lib/src/clock';
import { ServerError } from '../../../lib/src/errors';

export interface RegistrationAdmissionOptions {
  /** Registrations admitted per second, sustained; 0: unlimited. */
  readonly ratePerSecond: number;
  /** Registrations admitted at once after a quiet period. */
  readonly burst: number;
}

/** Agents are asked to wait at least this long. */
export const MIN_RETRY_AFTER_MS = 200;
/** ... and at most this long (a reservation further out is cut to it). */
export const MAX_RETRY_AFTER_MS = 30_000;

/**
 * Retry slots `ratePerSecond` apart: each refused agent is told to come back at the next free one
 * (at least MIN_RETRY_AFTER_MS, at most MAX_RETRY_AFTER_MS from now), so refused agents return at
 * that rate instead of together.
 */
export class RetryPacer {
  /** Monotonic ms up to which retry slots are handed out. */
  private reservedUntil = 0;

  constructor(
    private readonly ratePerSecond: number,
    private readonly now: () => number = monotonicMs,
  ) {}

  /** Reserves the next slot; milliseconds until it. */
  next(): number {
    const now = this.now();
    this.reservedUntil = Math.max(this.reservedUntil, now) + 1000 / Math.max(1, this.ratePerSecond);
    return Math.round(Math.min(MAX_RETRY_AFTER_MS, Math.max(MIN_RETRY_AFTER_MS, this.reservedUntil - now)));
  }
}

export class RegistrationAdmission {
  private tokens: number;
  private last: number;
  private readonly pacer: RetryPacer;
  admitted = 0;
  refused = 0;

  constructor(
    private readonly opts: RegistrationAdmissionOptions,
    private readonly now: () => number = monotonicMs,
  ) {
    this.tokens = opts.burst;
    this.last = now();
    this.pacer = new RetryPacer(opts.ratePerSecond, now);
  }

  /** Takes a token, or throws RESOURCE_EXHAUSTED with a reserved retry time. */
  admit(agent: string): void {
    const { ratePerSecond, burst } = this.opts;
    if (ratePerSecond <= 0) return;
    const now = this.now();
    this.tokens = Math.min(burst, this.tokens + ((now - this.last) * ratePerSecond) / 1000);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      this.admitted++;
      return;
    }
    this.refused++;
    // The next free slot after those already handed out, one token's time apart.
    const retryAfterMs = this.pacer.next();
    throw new ServerError(
      GrpcStatus.RESOURCE_EXHAUSTED,
      `the controller admits at most ${ratePerSecond} registrations a second (syncAdmission.registrationsPerSecond): agent "${agent}" is asked to retry in ${retryAfterMs} ms`,
      { reason: 'REGISTRATIONS_THROTTLED', metadata: { retryAfterMs: String(retryAfterMs), agent } },
    );
  }
}
