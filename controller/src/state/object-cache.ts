/**
 * The controller's view of the desired state: every object of the store kept in
 * memory (the read path of list/get/watch and of the reconciler), fed by the store's
 * watch and written through to the store with compare-and-swap on resourceVersion.
 *
 * One way in: every replica, the leader included, changes its maps only from the
 * store's watch (a write waits until the watch has delivered its revision), so the
 * cache of every replica is the store at one revision, whoever wrote. A resync (the
 * watch's history was compacted, or the store was wiped under it) replaces the maps
 * and publishes the differences; a change of the store's identity is told to
 * onIdentityChange listeners. Writes carry the leader's fence (setWriteGuard); a write
 * without leadership, or one etcd fenced off, changes nothing.
 *
 * Observed status (link status, agent phase) is not kept here: the leader's fleet state
 * holds it (state/fleet-state.ts). Every change is published to subscribers.
 */
import { performance } from 'node:perf_hooks';

import { status as GrpcStatus } from '@grpc/grpc-js';

import {
  Agent,
  Link,
  LinkPolicy,
  LinkPolicySpec,
  AgentSpec,
  WatchEventType,
  type ObjectMeta,
} from '../../../lib/proto/types';
import { ServerError, staleResourceVersion } from '../../../lib/src/errors';
import { linkSpecEqual, protoEqual } from '../../../lib/src/proto-equal';
import type { Fence } from '../store/leader-election';
import {
  StoreConflictError,
  StoreFencedError,
  StoreIdentityError,
  StoreUnavailableError,
  type DesiredStateStore,
  type ObjectKind,
  type StoreIdentity,
  type StoreOp,
  type StoredObject,
  type StoreWatch,
  type WatchBatch,
} from '../store/store';
import type { ControllerMetrics } from '../metrics/controller-metrics';

export interface CacheEvent {
  readonly kind: ObjectKind;
  readonly type: WatchEventType;
  readonly name: string;
  readonly revision: bigint;
  /** Only observed status changed (no store write). */
  readonly statusOnly: boolean;
  /** For DELETED: the object as it was. */
  readonly last?: Link | LinkPolicy | Agent;
}

export type CacheListener = (ev: CacheEvent) => void;

interface Entry<T> {
  obj: T;
  revision: bigint;
}

/** Objects one commit carries at most (besides the store's own maxOpsPerCommit): bounds one SQLite transaction's stall. */
export const MAX_BATCH_OPS = 500;
/** Object bytes one commit carries at most (etcd refuses requests over --max-request-bytes, 1.5 MiB by default). */
export const MAX_BATCH_BYTES = 1024 * 1024;
/** How long a write waits for the watch to deliver its own revision before reporting it unseen. */
export const WATCH_DELIVERY_TIMEOUT_MS = 30_000;

const codec = {
  link: {
    encode: (o: Link) => Link.encode({ ...o, status: undefined }).finish(),
    decode: (b: Uint8Array) => Link.decode(b),
  },
  policy: {
    encode: (o: LinkPolicy) => LinkPolicy.encode({ ...o, status: undefined }).finish(),
    decode: (b: Uint8Array) => LinkPolicy.decode(b),
  },
  agent: { encode: (o: Agent) => Agent.encode(o).finish(), decode: (b: Uint8Array) => Agent.decode(b) },
};

export function emptyMeta(name: string): ObjectMeta {
  return {
    name,
    labels: {},
    annotations: {},
    generation: 0n,
    resourceVersion: '',
    createTime: undefined,
    updateTime: undefined,
    managedBy: '',
  };
}

function mapEqual(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  return ka.every((k) => b[k] === a[k]);
}

function withRv<T extends { meta: ObjectMeta | undefined }>(obj: T, rev: bigint): T {
  if (obj.meta) obj.meta.resourceVersion = String(rev);
  return obj;
}

export interface WriteResult<T> {
  readonly obj: T;
  readonly changed: boolean;
}

/** A planned write: the op to commit and the object it stores. */
export interface PlannedWrite<T> {
  readonly op: StoreOp;
  readonly next: T;
}

/** Returns the fence to write with, or throws (e.g. NOT_LEADER) when this replica may not write. */
export type WriteGuard = () => Fence | undefined;

interface Waiter {
  readonly ready: () => boolean;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class ObjectCache {
  readonly links = new Map<string, Entry<Link>>();
  readonly policies = new Map<string, Entry<LinkPolicy>>();
  readonly agents = new Map<string, Entry<Agent>>();
  private readonly listeners = new Set<CacheListener>();
  private readonly identityListeners = new Set<(id: StoreIdentity, previous: StoreIdentity) => void>();
  private seq = 0n;
  /** Every change up to this revision is in the maps. */
  private applied = 0n;
  private ident: StoreIdentity = { clusterId: '', generation: 0n };
  private watch: StoreWatch | undefined;
  private readonly waiters = new Set<Waiter>();
  private guard: WriteGuard = () => undefined;
  private onFenced: () => void = () => undefined;
  /** Agent records waiting to be committed together (registrations of many agents at once). */
  private agentBatch = new Map<string, { op: StoreOp; done: { resolve: () => void; reject: (e: Error) => void }[] }>();
  private agentFlush: NodeJS.Immediate | undefined;
  private readonly batchOps: number;

  constructor(
    private readonly store: DesiredStateStore,
    private readonly metrics: ControllerMetrics,
  ) {
    this.batchOps = Math.max(1, Math.min(store.maxOpsPerCommit, MAX_BATCH_OPS));
  }

  /** Reads the store (one snapshot) and follows its watch from there. */
  async load(): Promise<void> {
    const end = this.metrics.storeOps.startTimer({ operation: 'list' });
    const snap = await this.store.loadSnapshot();
    end();
    for (const o of snap.objects) this.set(o, false);
    this.ident = snap.identity;
    this.applied = snap.revision;
    this.seq = snap.revision;
    this.watch = this.store.watch(snap.revision, {
      onBatch: (b) => this.onBatch(b),
      onError: () => this.metrics.storeWatchErrors.inc(),
    });
  }

  /** Stops following the store; pending waits fail. */
  close(): void {
    this.watch?.close();
    this.watch = undefined;
    for (const w of [...this.waiters]) {
      clearTimeout(w.timer);
      this.waiters.delete(w);
      w.reject(new StoreUnavailableError('the object cache was closed', false));
    }
  }

  /** The store identity of the state in the maps. */
  identity(): StoreIdentity {
    return this.ident;
  }

  /** The store revision every change up to which is in the maps. */
  revision(): bigint {
    return this.applied;
  }

  /** Who may write, with which fence (the replica's leadership); `fenced` is told when the store refused a fence. */
  setWriteGuard(guard: WriteGuard, fenced: () => void): void {
    this.guard = guard;
    this.onFenced = fenced;
  }

  /** Called when the store under the cache turns out to be another one (a resync with a new cluster id). */
  onIdentityChange(l: (id: StoreIdentity, previous: StoreIdentity) => void): () => void {
    this.identityListeners.add(l);
    return () => this.identityListeners.delete(l);
  }

  /**
   * Waits until the maps hold everything the store held when this was called: the same cluster
   * id and at least its generation (every desired-state change). A new leader does this first.
   */
  async catchUp(
    readIdentity: () => Promise<StoreIdentity> = () => this.store.readIdentity(),
    timeoutMs = WATCH_DELIVERY_TIMEOUT_MS,
  ): Promise<{ readMs: number; waitMs: number }> {
    const t0 = performance.now();
    const want = await readIdentity();
    const t1 = performance.now();
    await this.waitUntil(
      () => this.ident.clusterId === want.clusterId && this.ident.generation >= want.generation,
      timeoutMs,
      `the store's generation ${want.generation}`,
    );
    // Where a slow takeover spends its time: the read of the store's identity, or the watch.
    return { readMs: Math.round(t1 - t0), waitMs: Math.round(performance.now() - t1) };
  }

  /** A version for watch events: the store revision, bumped for status-only changes. */
  currentVersion(): bigint {
    return this.seq;
  }

  subscribe(l: CacheListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  publish(
    kind: ObjectKind,
    type: WatchEventType,
    name: string,
    statusOnly = false,
    last?: Link | LinkPolicy | Agent,
  ): void {
    this.seq++;
    const ev: CacheEvent = last
      ? { kind, type, name, revision: this.seq, statusOnly, last }
      : { kind, type, name, revision: this.seq, statusOnly };
    for (const l of this.listeners) l(ev);
  }

  // ---- the watch ------------------------------------------------------------------------------

  private onBatch(b: WatchBatch): void {
    const previous = this.ident;
    if (b.revision > this.seq) this.seq = b.revision;
    if (b.type === 'events') {
      for (const e of b.events) {
        if (e.type === 'put') this.set(e, true);
        else this.remove(e.kind, e.name, e.revision);
      }
    } else if (b.type === 'resync') {
      this.replaceAll(b.objects, b.identity.clusterId === previous.clusterId);
    }
    this.ident = b.identity;
    if (b.revision > this.applied) this.applied = b.revision;
    for (const w of [...this.waiters]) {
      if (!w.ready()) continue;
      clearTimeout(w.timer);
      this.waiters.delete(w);
      w.resolve();
    }
    if (b.identity.clusterId !== previous.clusterId)
      for (const l of [...this.identityListeners]) l(b.identity, previous);
  }

  private mapOf(kind: ObjectKind): Map<string, Entry<Link | LinkPolicy | Agent>> {
    return kind === 'link' ? this.links : kind === 'policy' ? this.policies : this.agents;
  }

  /** Stores one object from the store (unless the map already holds it at that revision or later). */
  private set(o: { kind: ObjectKind; name: string; revision: bigint; data: Uint8Array }, publish: boolean): void {
    const map = this.mapOf(o.kind);
    const cur = map.get(o.name);
    if (cur && cur.revision >= o.revision) return;
    const obj = withRv(codec[o.kind].decode(o.data), o.revision);
    map.set(o.name, { obj, revision: o.revision });
    if (publish)
      this.publish(
        o.kind,
        cur ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED,
        o.name,
      );
  }

  private remove(kind: ObjectKind, name: string, revision: bigint): void {
    const map = this.mapOf(kind);
    const cur = map.get(name);
    if (!cur || cur.revision >= revision) return;
    map.delete(name);
    this.publish(kind, WatchEventType.WATCH_EVENT_TYPE_DELETED, name, false, cur.obj);
  }

  /**
   * A resync: the complete state replaces the maps; what differs is published (everything, when
   * it is another store: the same name at the same revision may hold anything there).
   */
  private replaceAll(objects: readonly StoredObject[], sameStore: boolean): void {
    const seen = new Map<ObjectKind, Set<string>>([
      ['link', new Set()],
      ['policy', new Set()],
      ['agent', new Set()],
    ]);
    for (const o of objects) {
      seen.get(o.kind)?.add(o.name);
      const map = this.mapOf(o.kind);
      const cur = map.get(o.name);
      if (sameStore && cur && cur.revision === o.revision) continue;
      const obj = withRv(codec[o.kind].decode(o.data), o.revision);
      map.set(o.name, { obj, revision: o.revision });
      this.publish(
        o.kind,
        cur ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED,
        o.name,
      );
    }
    for (const [kind, names] of seen) {
      const map = this.mapOf(kind);
      for (const [name, cur] of [...map]) {
        if (names.has(name)) continue;
        map.delete(name);
        this.publish(kind, WatchEventType.WATCH_EVENT_TYPE_DELETED, name, false, cur.obj);
      }
    }
  }

  private waitUntil(ready: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (ready()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        ready,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(w);
          reject(
            new StoreUnavailableError(
              `this replica's watch of the store has not delivered ${what} within ${timeoutMs} ms`,
              false,
            ),
          );
        }, timeoutMs),
      };
      this.waiters.add(w);
    });
  }

  /** Resolves once the watch has delivered `rev` (the maps show that write). */
  private waitApplied(rev: bigint): Promise<void> {
    return this.waitUntil(() => this.applied >= rev, WATCH_DELIVERY_TIMEOUT_MS, `revision ${rev}`);
  }

  // ---- writes ---------------------------------------------------------------------------------

  /** One commit (fenced with the replica's leadership); resolves once the maps show it. */
  private async commit(ops: readonly StoreOp[]): Promise<bigint> {
    const fence = this.guard();
    const end = this.metrics.storeOps.startTimer({
      operation: ops.length > 1 ? 'txn' : ops[0]?.op === 'delete' ? 'delete' : 'put',
    });
    let rev: bigint;
    try {
      rev = await this.store.commit(ops, fence ? { fence } : {});
    } catch (err) {
      throw this.storeError(err);
    } finally {
      end();
    }
    await this.waitApplied(rev);
    return rev;
  }

  /** The RPC-edge form of a store failure. */
  private storeError(err: unknown): unknown {
    if (err instanceof StoreConflictError) {
      this.metrics.storeConflicts.inc();
      return staleResourceVersion(err.kind, err.name, String(err.expected), String(err.actual));
    }
    if (err instanceof StoreFencedError) {
      this.onFenced();
      return new ServerError(GrpcStatus.UNAVAILABLE, `${err.message}: nothing was written; retry on the leader`, {
        reason: 'NOT_LEADER',
      });
    }
    if (err instanceof StoreIdentityError)
      return new ServerError(GrpcStatus.UNAVAILABLE, `${err.message}; nothing was written`, {
        reason: 'STORE_REPLACED',
      });
    if (err instanceof StoreUnavailableError)
      return new ServerError(
        GrpcStatus.UNAVAILABLE,
        `the store is unavailable${err.outcomeUnknown ? ' (the write may or may not have happened: re-read before retrying)' : ''}: ${err.message}`,
        { reason: err.outcomeUnknown ? 'STORE_OUTCOME_UNKNOWN' : 'STORE_UNAVAILABLE' },
      );
    return err;
  }

  /**
   * Commits planned ops in as few commits as the store takes (MAX_BATCH_OPS, MAX_BATCH_BYTES,
   * maxOpsPerCommit each): not atomic as a whole, each commit is. Resolves once the maps show them.
   */
  async commitMany(ops: readonly StoreOp[]): Promise<void> {
    let chunk: StoreOp[] = [];
    let bytes = 0;
    for (const op of ops) {
      const size = op.op === 'put' ? op.data.byteLength + op.name.length : op.name.length;
      if (chunk.length > 0 && (chunk.length >= this.batchOps || bytes + size > MAX_BATCH_BYTES)) {
        await this.commit(chunk);
        // The embedded store commits synchronously: let Sync streams and RPCs run between commits.
        await new Promise<void>((resolve) => setImmediate(resolve));
        chunk = [];
        bytes = 0;
      }
      chunk.push(op);
      bytes += size;
    }
    if (chunk.length > 0) await this.commit(chunk);
  }

  /** The CAS revision for a client-supplied resourceVersion ("" = the current one). */
  private expectedFor(kind: ObjectKind, name: string, rv: string, current: bigint | undefined): bigint {
    if (rv === '') return current ?? 0n;
    let want: bigint;
    try {
      want = BigInt(rv);
    } catch {
      throw staleResourceVersion(kind, name, rv, String(current ?? 0n));
    }
    if (want !== (current ?? 0n)) throw staleResourceVersion(kind, name, rv, String(current ?? 0n));
    return want;
  }

  /**
   * The write of a link's meta and spec, or undefined when nothing would change. Generation
   * bumps when the spec changes. `rv` = client resourceVersion ("" for last-writer-wins).
   */
  planLink(link: Link, rv: string, now = new Date()): PlannedWrite<Link> | undefined {
    const name = link.meta?.name ?? '';
    const cur = this.links.get(name);
    const expected = this.expectedFor('link', name, rv, cur?.revision);
    const old = cur?.obj;
    const meta = link.meta ?? emptyMeta(name);
    const specChanged = !old || !linkSpecEqual(old.spec, link.spec);
    const metaChanged =
      !old ||
      !mapEqual(old.meta?.labels ?? {}, meta.labels) ||
      !mapEqual(old.meta?.annotations ?? {}, meta.annotations) ||
      (old.meta?.managedBy ?? '') !== meta.managedBy;
    if (old && !specChanged && !metaChanged) return undefined;
    const next: Link = {
      meta: {
        ...meta,
        name,
        generation: (old?.meta?.generation ?? 0n) + (specChanged ? 1n : 0n),
        resourceVersion: '',
        createTime: old?.meta?.createTime ?? now,
        updateTime: now,
      },
      spec: link.spec,
      status: undefined,
    };
    return { op: { op: 'put', kind: 'link', name, data: codec.link.encode(next), expected }, next };
  }

  /** The delete of a link at `rv` ("" = its current revision), or undefined when it does not exist. */
  planLinkDelete(name: string, rv: string): StoreOp | undefined {
    const cur = this.links.get(name);
    if (!cur) return undefined;
    return { op: 'delete', kind: 'link', name, expected: this.expectedFor('link', name, rv, cur.revision) };
  }

  async putLink(link: Link, rv: string, opts: { dryRun?: boolean; now?: Date } = {}): Promise<WriteResult<Link>> {
    const name = link.meta?.name ?? '';
    const plan = this.planLink(link, rv, opts.now);
    if (!plan) return { obj: this.links.get(name)?.obj as Link, changed: false };
    if (opts.dryRun) return { obj: plan.next, changed: true };
    const rev = await this.commit([plan.op]);
    return { obj: withRv(plan.next, rev), changed: true };
  }

  async deleteLink(name: string, rv: string): Promise<Link | undefined> {
    const cur = this.links.get(name);
    const op = this.planLinkDelete(name, rv);
    if (!cur || !op) return undefined;
    await this.commit([op]);
    return cur.obj;
  }

  async putPolicy(policy: LinkPolicy, rv: string, opts: { dryRun?: boolean } = {}): Promise<WriteResult<LinkPolicy>> {
    const name = policy.meta?.name ?? '';
    const cur = this.policies.get(name);
    const expected = this.expectedFor('policy', name, rv, cur?.revision);
    const now = new Date();
    const old = cur?.obj;
    const meta = policy.meta ?? emptyMeta(name);
    const specChanged = !old || !protoEqual(LinkPolicySpec, old.spec, policy.spec);
    const metaChanged =
      !old ||
      !mapEqual(old.meta?.labels ?? {}, meta.labels) ||
      !mapEqual(old.meta?.annotations ?? {}, meta.annotations);
    if (old && !specChanged && !metaChanged) return { obj: old, changed: false };
    const next: LinkPolicy = {
      meta: {
        ...meta,
        name,
        generation: (old?.meta?.generation ?? 0n) + (specChanged ? 1n : 0n),
        resourceVersion: '',
        createTime: old?.meta?.createTime ?? now,
        updateTime: now,
        managedBy: meta.managedBy,
      },
      spec: policy.spec,
      status: undefined,
    };
    if (opts.dryRun) return { obj: next, changed: true };
    const rev = await this.commit([{ op: 'put', kind: 'policy', name, data: codec.policy.encode(next), expected }]);
    return { obj: withRv(next, rev), changed: true };
  }

  async deletePolicy(name: string, rv: string): Promise<LinkPolicy | undefined> {
    const cur = this.policies.get(name);
    if (!cur) return undefined;
    const expected = this.expectedFor('policy', name, rv, cur.revision);
    await this.commit([{ op: 'delete', kind: 'policy', name, expected }]);
    return cur.obj;
  }

  /**
   * Persists an agent record (registration data and spec); phase/heartbeat are not persisted.
   * Records written in the same tick go to the store together (a rack powering on registers
   * hundreds of agents at once); last writer wins for one agent.
   */
  async putAgent(agent: Agent): Promise<Agent> {
    const name = agent.meta?.name ?? '';
    const cur = this.agents.get(name);
    const now = new Date();
    const specChanged = !cur || !protoEqual(AgentSpec, cur.obj.spec, agent.spec);
    const persisted: Agent = {
      meta: {
        ...(agent.meta ?? emptyMeta(name)),
        generation: (cur?.obj.meta?.generation ?? 0n) + (specChanged ? 1n : 0n),
        resourceVersion: '',
        createTime: cur?.obj.meta?.createTime ?? now,
        updateTime: now,
      },
      spec: agent.spec,
      status: agent.status ? { ...agent.status, lastHeartbeatTime: undefined } : undefined,
    };
    this.guard(); // refuse at once without leadership
    await new Promise<void>((resolve, reject) => {
      const prev = this.agentBatch.get(name);
      const op: StoreOp = { op: 'put', kind: 'agent', name, data: codec.agent.encode(persisted) };
      this.agentBatch.set(name, { op, done: [...(prev?.done ?? []), { resolve, reject }] });
      if (this.agentBatch.size >= this.batchOps) this.flushAgents();
      else this.agentFlush ??= setImmediate(() => this.flushAgents());
    });
    return this.agents.get(name)?.obj ?? persisted;
  }

  private flushAgents(): void {
    if (this.agentFlush) clearImmediate(this.agentFlush);
    this.agentFlush = undefined;
    const batch = [...this.agentBatch.values()];
    this.agentBatch = new Map();
    if (batch.length === 0) return;
    this.commit(batch.map((b) => b.op)).then(
      () => batch.forEach((b) => b.done.forEach((d) => d.resolve())),
      (err: unknown) => {
        const e = err instanceof Error ? err : new Error(String(err));
        batch.forEach((b) => b.done.forEach((d) => d.reject(e)));
      },
    );
  }

  async deleteAgent(name: string): Promise<void> {
    if (!this.agents.has(name)) return;
    await this.commit([{ op: 'delete', kind: 'agent', name }]);
  }
}
