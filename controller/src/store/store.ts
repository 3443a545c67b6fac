/**
 * The desired-state store: one interface, two backends (embedded SQLite for one
 * machine, etcd for several controller replicas).
 *
 * Objects are opaque bytes keyed by (kind, name). Every write bumps one global,
 * monotonically increasing revision; an object's resourceVersion is the revision of
 * its last write (etcd's mod_revision). Writes are compare-and-swap: an op with
 * `expected` set fails the whole batch with StoreConflictError unless the object's
 * current revision equals it (0n: "must not exist").
 *
 * Beyond that (all optional for a caller that only loads and commits):
 * - a watch that keeps a replica's cache current, with a relist when the history it
 *   needs is gone (`resync`);
 * - an identity (cluster id, generation; docs/controller.md "Store identity");
 * - fenced commits: a commit carrying the leader's fence writes nothing once that
 *   leadership is gone (leader-election.ts).
 */
import type { Fence, LeaderElector, LeaderElectorOptions } from './leader-election';

export type ObjectKind = 'link' | 'policy' | 'agent';

export const OBJECT_KINDS: readonly ObjectKind[] = ['link', 'policy', 'agent'];

/** Links and policies are desired state; agent records are registrations. */
export function isDesiredKind(kind: ObjectKind): boolean {
  return kind === 'link' || kind === 'policy';
}

export interface StoredObject {
  readonly kind: ObjectKind;
  readonly name: string;
  /** Revision of the last write of this object. */
  readonly revision: bigint;
  readonly data: Uint8Array;
}

export type StoreOp =
  | {
      readonly op: 'put';
      readonly kind: ObjectKind;
      readonly name: string;
      readonly data: Uint8Array;
      readonly expected?: bigint;
    }
  | { readonly op: 'delete'; readonly kind: ObjectKind; readonly name: string; readonly expected?: bigint };

/**
 * Who the store is: `clusterId` is chosen at random when the store is created (an
 * empty SQLite file, an empty etcd prefix) and never changes; `generation` is the
 * revision of the latest commit that changed desired state (a put or delete of a link
 * or a policy; agent records do not count), 0 before the first. It only goes forward.
 * A wiped store or another etcd prefix shows another clusterId; a restored older backup
 * shows the same clusterId with an older generation.
 */
export interface StoreIdentity {
  readonly clusterId: string;
  readonly generation: bigint;
}

export interface StoreSnapshot {
  /** The revision the objects were read at (consistent across pages). */
  readonly revision: bigint;
  readonly identity: StoreIdentity;
  readonly objects: StoredObject[];
}

export type StoreEvent =
  | {
      readonly type: 'put';
      readonly kind: ObjectKind;
      readonly name: string;
      readonly revision: bigint;
      readonly data: Uint8Array;
    }
  | { readonly type: 'delete'; readonly kind: ObjectKind; readonly name: string; readonly revision: bigint };

/**
 * What a watch delivers, in order. `revision` is the watch's position: every change up
 * to it has been delivered (or is contained in a resync's objects).
 */
export type WatchBatch =
  /** The changes after the previous batch, in revision order (one commit's events together). */
  | {
      readonly type: 'events';
      readonly revision: bigint;
      readonly identity: StoreIdentity;
      readonly events: readonly StoreEvent[];
    }
  /** No change of an object up to `revision` (etcd's progress notification). */
  | { readonly type: 'progress'; readonly revision: bigint; readonly identity: StoreIdentity }
  /**
   * The history the watch needed is gone (compacted), or the store's identity changed
   * (the prefix was wiped): `objects` is the complete state at `revision`; replace the
   * cache with it, and compare `identity` with the one you had.
   */
  | {
      readonly type: 'resync';
      readonly revision: bigint;
      readonly identity: StoreIdentity;
      readonly objects: readonly StoredObject[];
      readonly reason: 'compacted' | 'identity-changed';
    };

export interface StoreWatch {
  /** Stops delivery; no batch is delivered after it returns. */
  close(): void;
}

export interface WatchHandlers {
  /** Called synchronously, in order; must not throw. */
  readonly onBatch: (batch: WatchBatch) => void;
  /** A transient failure (the watch retries on its own); for logs and metrics. */
  readonly onError?: (err: Error) => void;
}

export interface CommitOptions {
  /** Write only while this leadership holds (LeaderState 'leader'.fence); else StoreFencedError. */
  readonly fence?: Fence;
}

export class StoreConflictError extends Error {
  constructor(
    readonly kind: ObjectKind,
    readonly name: string,
    readonly expected: bigint,
    readonly actual: bigint,
  ) {
    // `name` stays the object's name (ObjectCache reads it); the class is told by instanceof.
    super(`${kind} "${name}": expected revision ${expected}, found ${actual}`);
  }
}

/** A fenced commit whose leadership is gone: nothing was written. */
export class StoreFencedError extends Error {
  constructor(readonly fence: Fence) {
    super(`not the leader any more (leadership key ${fence.key} at revision ${fence.revision} is gone)`);
    this.name = 'StoreFencedError';
  }
}

/** The store under the controller is another one than it opened (wiped or replaced): nothing was written. */
export class StoreIdentityError extends Error {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `the store's cluster id is ${actual === '' ? 'missing' : `"${actual}"`}, not "${expected}" (wiped or replaced under a running controller): reload`,
    );
    this.name = 'StoreIdentityError';
  }
}

/**
 * The store could not be reached, or a commit's outcome is unknown (the request was sent
 * and the connection or deadline failed before the answer). An unknown outcome may have
 * been written: the watch shows what happened.
 */
export class StoreUnavailableError extends Error {
  constructor(
    message: string,
    readonly outcomeUnknown: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'StoreUnavailableError';
  }
}

export interface DesiredStateStore {
  /** Every object, for the controller's in-memory cache at start-up. */
  loadAll(): Promise<StoredObject[]>;
  /** Every object with the revision they were read at and the store's identity (paged on etcd). */
  loadSnapshot(): Promise<StoreSnapshot>;
  /**
   * Applies the ops atomically (at most `maxOpsPerCommit`). Resolves with the revision
   * given to every written object; rejects with StoreConflictError, StoreFencedError or
   * StoreIdentityError (nothing written), or StoreUnavailableError.
   */
  commit(ops: readonly StoreOp[], options?: CommitOptions): Promise<bigint>;
  /** The largest number of ops one commit takes (etcd: --max-txn-ops minus 2). */
  readonly maxOpsPerCommit: number;
  /** Current global revision, as far as this process knows. */
  revision(): bigint;
  /** Cluster id and generation, as far as this process knows (loadSnapshot reads them first). */
  identity(): StoreIdentity;
  /**
   * Cluster id and generation as the store holds them now (etcd: a linearizable read), without
   * taking them as this handle's: a new leader waits until its watch has caught up with them.
   */
  readIdentity(): Promise<StoreIdentity>;
  /**
   * Delivers every change after `fromRevision` (usually the snapshot's revision), then
   * changes as they happen, through reconnects; a watch whose history is gone resyncs.
   */
  watch(fromRevision: bigint, handlers: WatchHandlers): StoreWatch;
  /** Forgets the history up to `revision` (watches from before it resync). */
  compact(revision: bigint): Promise<void>;
  /** A leader elector whose fence this store's commit() checks. `value` names the candidate (e.g. its address). */
  elector(value: string, options?: LeaderElectorOptions): LeaderElector;
  close(): Promise<void>;
}
