/**
 * One etcd watch of a key range that survives member failures: its own Watch stream
 * (through the client's pool, so a reconnect goes to another member), resumed after a
 * failure from the first revision it has not delivered.
 *
 * The position moves only on proof: past the last event of a response (etcd never
 * splits one revision's events without `fragment`), or to the header revision of a
 * progress notification (sent only to watchers that are caught up). Never to the header
 * revision of a response with events: while catching up, etcd sends events of older
 * revisions under the current header revision, and resuming from that header would
 * skip the rest.
 *
 * When the revision it needs is compacted, it stops and says so; the owner relists and
 * restart()s from the relist's revision.
 */
import type { Etcd3, IDuplexStream, IKeyValue, IWatchRequest, IWatchResponse } from 'etcd3';

import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';

export interface RawEvent {
  readonly type: 'put' | 'delete';
  readonly kv: IKeyValue;
  readonly revision: bigint;
}

export interface RangeWatcherHandlers {
  /** Events of one response, in order; `revision` = the last one's. */
  onEvents(events: readonly RawEvent[], revision: bigint): void;
  /** Nothing changed in the range up to `revision`. */
  onProgress?(revision: bigint): void;
  /** The stream is (re)established and etcd accepted the watch. */
  onConnected?(): void;
  /** The revision to resume from is compacted: the watcher has stopped; restart() it after a relist. */
  onCompacted(compactRevision: bigint): void;
  onError?(err: Error): void;
}

/**
 * A member that accepted the TCP connection but does not answer (paused, overloaded)
 * never confirms the watch: give up on it after this long and reconnect (gRPC keepalive
 * covers a member that stops answering later).
 */
export const WATCH_CREATE_TIMEOUT_MS = 5000;

/** Between reconnects of a lost watch: 100 ms doubling to 2 s; a confirmed watch resets it. */
const RECONNECT_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 2000, jitter: [1, 1] };

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

export class RangeWatcher {
  private next: bigint;
  private stream: WatchStream | null = null;
  private closed = false;
  private stopped = false;
  private readonly backoff = new Backoff(RECONNECT_BACKOFF);
  private timer: NodeJS.Timeout | null = null;
  private createTimer: NodeJS.Timeout | null = null;

  /** Watches [start, end) from revision `from` (inclusive). */
  constructor(
    private readonly client: Etcd3,
    private readonly start: Buffer,
    private readonly end: Buffer,
    from: bigint,
    private readonly handlers: RangeWatcherHandlers,
    private readonly createTimeoutMs = WATCH_CREATE_TIMEOUT_MS,
  ) {
    this.next = from;
    void this.connect();
  }

  /** The first revision not delivered yet. */
  position(): bigint {
    return this.next;
  }

  /** Resumes (after onCompacted) from revision `from`. */
  restart(from: bigint): void {
    if (this.closed) return;
    this.drop();
    this.stopped = false;
    this.next = from;
    void this.connect();
  }

  /** Stops until restart(). */
  stop(): void {
    this.stopped = true;
    this.drop();
  }

  close(): void {
    this.closed = true;
    this.drop();
  }

  private drop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.createTimer) clearTimeout(this.createTimer);
    this.createTimer = null;
    const s = this.stream;
    this.stream = null;
    s?.cancel();
  }

  private async connect(): Promise<void> {
    if (this.closed || this.stopped || this.stream) return;
    let stream: WatchStream;
    try {
      stream = await this.client.watchClient.watch();
    } catch (err) {
      this.retryLater(err);
      return;
    }
    if (this.closed || this.stopped || this.stream) {
      stream.on('error', () => undefined);
      stream.cancel();
      return;
    }
    this.stream = stream;
    stream.on('data', (res: IWatchResponse) => this.onResponse(stream, res));
    stream.on('error', (err: Error) => this.lost(stream, err));
    stream.on('end', () => this.lost(stream, new Error('etcd watch stream ended')));
    stream.write({
      create_request: {
        key: this.start,
        range_end: this.end,
        start_revision: this.next.toString(),
        progress_notify: true,
      },
    });
    this.createTimer = setTimeout(() => {
      this.createTimer = null;
      this.lost(stream, new Error(`etcd did not confirm the watch within ${this.createTimeoutMs} ms`));
    }, this.createTimeoutMs);
  }

  private lost(stream: WatchStream, err: unknown): void {
    if (stream !== this.stream) return;
    this.stream = null;
    if (this.createTimer) clearTimeout(this.createTimer);
    this.createTimer = null;
    stream.cancel();
    this.retryLater(err);
  }

  private retryLater(err: unknown): void {
    if (this.closed || this.stopped) return;
    this.handlers.onError?.(err instanceof Error ? err : new Error(String(err)));
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connect();
    }, this.backoff.next());
  }

  private onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (stream !== this.stream || this.closed) return;
    const compactRev = BigInt(res.compact_revision || '0');
    if (compactRev > 0n) {
      this.stopped = true;
      this.drop();
      this.handlers.onCompacted(compactRev);
      return;
    }
    if (res.canceled) {
      this.lost(stream, new Error(`etcd canceled the watch: ${res.cancel_reason || 'no reason given'}`));
      return;
    }
    if (res.created) {
      if (this.createTimer) clearTimeout(this.createTimer);
      this.createTimer = null;
      this.backoff.reset();
      this.handlers.onConnected?.();
      return;
    }
    if (res.events.length === 0) {
      const rev = BigInt(res.header.revision);
      if (rev >= this.next) {
        this.next = rev + 1n;
        this.handlers.onProgress?.(rev);
      }
      return;
    }
    const events: RawEvent[] = res.events.map((ev) => ({
      // The proto enum's name at run time ("PUT", "DELETE"), whatever etcd3's typings say.
      type: String(ev.type).toUpperCase() === 'DELETE' ? 'delete' : 'put',
      kv: ev.kv,
      revision: BigInt(ev.kv.mod_revision),
    }));
    const last = events[events.length - 1]?.revision ?? this.next - 1n;
    this.next = last + 1n;
    this.handlers.onEvents(events, last);
  }
}
