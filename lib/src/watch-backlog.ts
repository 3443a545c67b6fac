/**
 * The queue between a change feed and one watch stream. Changes arrive whether or not
 * the watcher reads; a watcher that does not drain its stream would make the server
 * hold every change for it. The backlog holds at most `limit` items; one more ends
 * the watch with RESOURCE_EXHAUSTED naming the limit (the client watches again and
 * gets a fresh snapshot), and `signal` aborts at once so that a write blocked on the
 * stream's flow control gives up too.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

import { ServerError } from './errors';

export class WatchBacklog<T> {
  private items: T[] = [];
  private head = 0;
  private wake: (() => void) | undefined;
  private readonly ac = new AbortController();
  private readonly onOuterAbort: () => void;

  constructor(
    private readonly limit: number,
    private readonly outer: AbortSignal,
  ) {
    this.onOuterAbort = () => {
      this.ac.abort(outer.reason);
      this.wake?.();
    };
    if (outer.aborted) this.ac.abort(outer.reason);
    else outer.addEventListener('abort', this.onOuterAbort, { once: true });
  }

  /** Aborts when the watch must end: the outer signal aborted, or the backlog overflowed. */
  get signal(): AbortSignal {
    return this.ac.signal;
  }

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    if (this.ac.signal.aborted) return;
    if (this.length >= this.limit) {
      this.items = [];
      this.head = 0;
      this.ac.abort(
        new ServerError(
          GrpcStatus.RESOURCE_EXHAUSTED,
          `watch backlog exceeded ${this.limit} events (limit watchBacklogEvents): the watcher did not read its stream; watch again`,
          { reason: 'WATCH_BACKLOG_EXCEEDED', metadata: { limit: 'watchBacklogEvents', max: String(this.limit) } },
        ),
      );
      this.wake?.();
      return;
    }
    this.items.push(item);
    this.wake?.();
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined as T;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  /** Resolves when an item is queued or the watch must end. */
  async wait(): Promise<void> {
    if (this.length > 0 || this.ac.signal.aborted) return;
    await new Promise<void>((resolve) => (this.wake = resolve));
    this.wake = undefined;
  }

  /** Throws the overflow error (a ServerError) if the backlog overflowed. */
  throwIfOverflowed(): void {
    const r: unknown = this.ac.signal.reason;
    if (this.ac.signal.aborted && r instanceof ServerError) throw r;
  }

  dispose(): void {
    this.outer.removeEventListener('abort', this.onOuterAbort);
    this.items = [];
    this.head = 0;
  }
}
