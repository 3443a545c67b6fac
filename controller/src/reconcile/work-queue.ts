/**
 * A keyed, deduplicating work queue in the manner of client-go's workqueue:
 *
 * - dedupe: a key added N times while waiting is processed once;
 * - stingy: a key is never processed by two workers at once; a key re-added while it
 *   is being processed is marked dirty and queued again when its worker finishes;
 * - retries: a failed key comes back after a per-key exponential backoff
 *   (RETRY_BACKOFF, lib/src/backoff.ts); success forgets it.
 *
 * Handlers are level-triggered: a key names an object, never an event.
 */
import { backoffDelayMs, type BackoffPolicy } from '../../../lib/src/backoff';
import { monotonicMs } from '../../../lib/src/clock';
import type { Logger } from '../../../lib/src/logger';
import type { ControllerMetrics, QueueName } from '../metrics/controller-metrics';

/** Per-key retry delay: 5 ms doubling to 30 s, plus up to 20 % at random so retries of many keys spread out. */
export const RETRY_BACKOFF: BackoffPolicy = { initialMs: 5, maxMs: 30_000, jitter: [1, 1.2] };

export type Handler = (key: string) => Promise<void>;

export class WorkQueue {
  /** Keys waiting for a worker, FIFO (head index avoids O(n) shifts). */
  private items: string[] = [];
  private head = 0;
  /** Keys in `items` (waiting), with the time they were added. */
  private readonly waiting = new Map<string, number>();
  /** Keys a worker holds, with the time it started. */
  private readonly processing = new Map<string, number>();
  /** Keys re-added while processing; queued again on done. */
  private readonly dirty = new Set<string>();
  /** Consecutive failures per key; deleted on success. */
  private readonly failures = new Map<string, number>();
  /** Pending backoff timers per key. */
  private readonly delayed = new Map<string, NodeJS.Timeout>();
  private wakeups: (() => void)[] = [];
  private stopped = false;
  private readonly workersDone: Promise<void>[] = [];

  constructor(
    readonly name: QueueName,
    private readonly log: Logger,
    private readonly metrics: ControllerMetrics,
  ) {
    metrics.registerQueue(name, {
      depth: () => this.waiting.size,
      unfinishedSeconds: () => {
        const now = monotonicMs();
        let s = 0;
        for (const t of this.processing.values()) s += (now - t) / 1000;
        return s;
      },
      longestRunningSeconds: () => {
        const now = monotonicMs();
        let m = 0;
        for (const t of this.processing.values()) m = Math.max(m, (now - t) / 1000);
        return m;
      },
    });
  }

  get length(): number {
    return this.waiting.size;
  }

  /** True when nothing waits, runs or is delayed. */
  idle(): boolean {
    return this.waiting.size === 0 && this.processing.size === 0 && this.delayed.size === 0 && this.dirty.size === 0;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.processing.has(key)) {
      if (!this.dirty.has(key)) this.metrics.queueAdds.inc({ name: this.name });
      this.dirty.add(key);
      return;
    }
    if (this.waiting.has(key)) return;
    this.metrics.queueAdds.inc({ name: this.name });
    this.waiting.set(key, monotonicMs());
    this.items.push(key);
    const w = this.wakeups.shift();
    if (w) w();
  }

  /** Re-adds the key after its backoff; the delay doubles with each consecutive failure. */
  addRateLimited(key: string): void {
    if (this.stopped || this.delayed.has(key)) return;
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    this.metrics.queueRetries.inc({ name: this.name });
    const delay = backoffDelayMs(RETRY_BACKOFF, n);
    const t = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delay);
    t.unref();
    this.delayed.set(key, t);
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  retries(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  private async next(): Promise<string | undefined> {
    for (;;) {
      if (this.stopped) return undefined;
      if (this.head < this.items.length) {
        const key = this.items[this.head++] as string;
        if (this.head > 4096 && this.head * 2 > this.items.length) {
          this.items = this.items.slice(this.head);
          this.head = 0;
        }
        return key;
      }
      await new Promise<void>((resolve) => this.wakeups.push(resolve));
    }
  }

  /** Starts `workers` concurrent workers running `handler`. */
  run(workers: number, handler: Handler): void {
    for (let i = 0; i < workers; i++) this.workersDone.push(this.worker(handler));
  }

  private async worker(handler: Handler): Promise<void> {
    for (;;) {
      const key = await this.next();
      if (key === undefined) return;
      const addedAt = this.waiting.get(key) ?? monotonicMs();
      this.waiting.delete(key);
      const start = monotonicMs();
      this.metrics.queueDuration.observe({ name: this.name }, (start - addedAt) / 1000);
      this.processing.set(key, start);
      try {
        await handler(key);
        this.forget(key);
        this.metrics.reconcileTotal.inc({ result: 'success' });
      } catch (err) {
        this.metrics.reconcileTotal.inc({ result: 'error' });
        this.log.warn(
          { err, code: 'RECONCILE_FAILED', key, retries: this.retries(key) },
          'reconcile failed; retrying with backoff',
        );
        this.addRateLimited(key);
      } finally {
        this.processing.delete(key);
        const secs = (monotonicMs() - start) / 1000;
        this.metrics.workDuration.observe({ name: this.name }, secs);
        this.metrics.reconcileDuration.observe(secs);
        if (this.dirty.delete(key)) this.add(key);
      }
      // Let I/O (sync streams, RPCs) run between keys.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.delayed.values()) clearTimeout(t);
    this.delayed.clear();
    for (const w of this.wakeups.splice(0)) w();
    await Promise.all(this.workersDone);
  }
}
