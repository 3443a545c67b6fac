/**
 * Capped exponential backoff with jitter for reconnecting to the controller:
 * INITIAL_MS doubling up to MAX_MS, each delay scaled by 1 +/- JITTER.
 */
export const INITIAL_MS = 250;
export const MAX_MS = 15_000;
export const JITTER = 0.2;

export class Backoff {
  private attempt = 0;

  next(): number {
    const base = Math.min(MAX_MS, INITIAL_MS * 2 ** Math.min(this.attempt, 20));
    this.attempt++;
    return Math.round(base * (1 - JITTER + Math.random() * 2 * JITTER));
  }

  reset(): void {
    this.attempt = 0;
  }
}
