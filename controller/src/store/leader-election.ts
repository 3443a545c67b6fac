/**
 * Leader election among controller replicas, and the fence that makes a deposed
 * leader's writes fail. The contract here; the etcd implementation (a lease and a key
 * per candidate) is etcd-election.ts, the one-process one (SQLite) is local-election.ts.
 *
 * Leadership is not trusted, it is checked: a leader passes `fence` to every commit
 * (`commit(ops, { fence })`), and the store writes only while that leadership still
 * exists, in the same transaction (etcd: the candidate key's create_revision). A
 * leader paused past its lease, or cut off from etcd, that wakes up and writes gets
 * StoreFencedError and changes nothing.
 */

import type { StoreIdentity } from './store';

/** Proof of one term of leadership: the leader's key and the revision that created it. */
export interface Fence {
  readonly key: string;
  readonly revision: bigint;
}

export type LeaderState =
  /** Campaigning; no leader is known right now (between leaders, or the store is unreachable). */
  | { readonly role: 'candidate' }
  /** Campaigning; another candidate leads. `leader` is its value (e.g. its address). */
  | { readonly role: 'follower'; readonly leader: string }
  /** This candidate leads; pass `fence` to every commit made as leader. */
  | { readonly role: 'leader'; readonly fence: Fence }
  /** Not campaigning (before campaign(), after resign() or close()). */
  | { readonly role: 'stopped' };

export interface LeaderElectorOptions {
  /** Lease of the leader: a leader that stops renewing loses leadership this long after its last renewal (etcd). */
  readonly ttlSeconds?: number;
  /** Election name: candidates with the same name compete (default "controller"). */
  readonly name?: string;
  /** Transient failures (the elector keeps campaigning); for logs and metrics. */
  readonly onError?: (err: Error) => void;
}

export const DEFAULT_LEADER_TTL_SECONDS = 6;

export interface LeaderElector {
  /** The candidate's value, shown to followers as `leader`. */
  readonly value: string;
  /** Starts campaigning (idempotent). Leadership lost for any reason is campaigned for again. */
  campaign(): void;
  /** Stops campaigning and steps down at once (the next candidate takes over without waiting for a lease). */
  resign(): Promise<void>;
  /** The current state; a leader whose lease may have run out reports 'candidate' without waiting for etcd. */
  state(): LeaderState;
  /** Calls `listener` now and on every change of state; returns the unsubscribe function. */
  observe(listener: (state: LeaderState) => void): () => void;
  /** resign() and release everything. */
  close(): Promise<void>;
  /**
   * The store's identity read over the elector's own connection, when it has one that a busy main
   * thread does not hold up (etcd: the election thread's client); a new leader catches up with it.
   */
  readonly readIdentity?: () => Promise<StoreIdentity>;
}

/** Listener bookkeeping shared by the implementations. */
export class LeaderStateBox {
  private current: LeaderState = { role: 'stopped' };
  private readonly listeners = new Set<(s: LeaderState) => void>();

  get(): LeaderState {
    return this.current;
  }

  set(next: LeaderState): void {
    if (sameState(this.current, next)) return;
    this.current = next;
    for (const l of [...this.listeners]) l(next);
  }

  observe(listener: (s: LeaderState) => void): () => void {
    this.listeners.add(listener);
    listener(this.current);
    return () => this.listeners.delete(listener);
  }
}

function sameState(a: LeaderState, b: LeaderState): boolean {
  if (a.role !== b.role) return false;
  if (a.role === 'follower' && b.role === 'follower') return a.leader === b.leader;
  if (a.role === 'leader' && b.role === 'leader')
    return a.fence.key === b.fence.key && a.fence.revision === b.fence.revision;
  return true;
}
