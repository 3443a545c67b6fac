/**
 * The desired-state store: one interface, an embedded SQLite backend today and an
 * etcd backend (several controller replicas) later.
 *
 * Objects are opaque bytes keyed by (kind, name). Every write bumps one global,
 * monotonically increasing revision; an object's resourceVersion is the revision of
 * its last write (as etcd's mod_revision). Writes are compare-and-swap: an op with
 * `expected` set fails the whole batch with StoreConflictError unless the object's
 * current revision equals it (0n: "must not exist").
 */
export type ObjectKind = 'link' | 'policy' | 'agent';

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

export class StoreConflictError extends Error {
  constructor(
    readonly kind: ObjectKind,
    readonly name: string,
    readonly expected: bigint,
    readonly actual: bigint,
  ) {
    super(`${kind} "${name}": expected revision ${expected}, found ${actual}`);
    this.name = 'StoreConflictError';
  }
}

export interface DesiredStateStore {
  /** Every object, for the controller's in-memory cache at start-up. */
  loadAll(): Promise<StoredObject[]>;
  /**
   * Applies the ops atomically. Resolves with the revision given to every written
   * object; rejects with StoreConflictError (nothing written) on a CAS mismatch.
   */
  commit(ops: readonly StoreOp[]): Promise<bigint>;
  /** Current global revision. */
  revision(): bigint;
  close(): Promise<void>;
}
