/**
 * The store's watch on etcd: one RangeWatcher over the identity keys and the objects,
 * turned into WatchBatches. A compacted revision, or a change of the cluster id (the
 * prefix was wiped or replaced), makes it relist through the store and
 * deliver a resync before events continue from the relist's revision.
 */
import type { Etcd3 } from 'etcd3';

import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';
import type { EtcdKeys } from './etcd-keys';
import { RangeWatcher, type RawEvent } from './etcd-range-watcher';
import type { StoreEvent, StoreIdentity, StoreSnapshot, StoreWatch, WatchHandlers } from './store';

/** What the watch needs of its store. */
export interface EtcdWatchSource {
  readonly client: Etcd3;
  readonly keys: EtcdKeys;
  identity(): StoreIdentity;
  /** A complete snapshot (identity created if missing), not yet the store handle's. */
  readSnapshot(): Promise<StoreSnapshot>;
  /** Makes the snapshot's identity the handle's: done in the same tick as delivering the resync. */
  adoptSnapshot(snap: StoreSnapshot): void;
  /** A revision seen on the watch (the store's revision() follows it). */
  noteRevision(rev: bigint): void;
  /** A desired-state commit seen on the watch. */
  noteGeneration(rev: bigint): void;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Between failed snapshot reads of a resync: 100 ms doubling to 2 s. */
const RESYNC_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 2000, jitter: [1, 1] };

export class EtcdStoreWatch implements StoreWatch {
  private readonly rw: RangeWatcher;
  private closed = false;

  constructor(
    private readonly source: EtcdWatchSource,
    fromRevision: bigint,
    private readonly handlers: WatchHandlers,
    private readonly onClose: () => void,
  ) {
    this.rw = new RangeWatcher(source.client, source.keys.watchStart, source.keys.watchEnd, fromRevision + 1n, {
      onEvents: (events, revision) => this.onEvents(events, revision),
      onProgress: (revision) => {
        source.noteRevision(revision);
        this.deliverProgress(revision);
      },
      onCompacted: () => void this.resync('compacted'),
      onError: (err) => handlers.onError?.(err),
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.rw.close();
    this.onClose();
  }

  private deliverProgress(revision: bigint): void {
    if (!this.closed) this.handlers.onBatch({ type: 'progress', revision, identity: this.source.identity() });
  }

  private onEvents(raw: readonly RawEvent[], revision: bigint): void {
    const { keys } = this.source;
    const events: StoreEvent[] = [];
    let identityChanged = false;
    for (const ev of raw) {
      const k = keys.parse(ev.kv.key);
      if (k.type === 'object') {
        events.push(
          ev.type === 'put'
            ? { type: 'put', kind: k.kind, name: k.name, revision: ev.revision, data: ev.kv.value }
            : { type: 'delete', kind: k.kind, name: k.name, revision: ev.revision },
        );
      } else if (k.type === 'cluster-id') {
        if (ev.type === 'delete' || ev.kv.value.toString('utf8') !== this.source.identity().clusterId)
          identityChanged = true;
      } else if (k.type === 'generation' && ev.type === 'put') {
        this.source.noteGeneration(ev.revision);
      }
    }
    this.source.noteRevision(revision);
    if (identityChanged) {
      // Another store under the same prefix: what these events did is in the relist.
      this.rw.stop();
      void this.resync('identity-changed');
      return;
    }
    if (this.closed) return;
    if (events.length === 0) this.deliverProgress(revision);
    else this.handlers.onBatch({ type: 'events', revision, identity: this.source.identity(), events });
  }

  private async resync(reason: 'compacted' | 'identity-changed'): Promise<void> {
    const backoff = new Backoff(RESYNC_BACKOFF);
    let snap: StoreSnapshot;
    for (;;) {
      if (this.closed) return;
      try {
        snap = await this.source.readSnapshot();
        break;
      } catch (err) {
        this.handlers.onError?.(err instanceof Error ? err : new Error(String(err)));
        await sleep(backoff.next());
      }
    }
    if (this.closed) return;
    // Same tick: no commit can run between the handle taking the new identity and the consumer getting the state.
    this.source.adoptSnapshot(snap);
    this.handlers.onBatch({
      type: 'resync',
      revision: snap.revision,
      identity: snap.identity,
      objects: snap.objects,
      reason,
    });
    this.rw.restart(snap.revision + 1n);
  }
}
