/**
 * The controller's view of the desired state: every object of the store kept in
 * memory (the read path of list/get/watch and of the reconciler), written through to
 * the store with compare-and-swap on resourceVersion. Observed status (link status,
 * agent phase) lives here too but is not persisted: it is rebuilt from the agents'
 * reports after a restart. Every change is published to watchers.
 */
import {
  Agent,
  Link,
  LinkPolicy,
  LinkPolicySpec,
  AgentSpec,
  WatchEventType,
  type ObjectMeta,
} from '../../../lib/proto/types';
import { staleResourceVersion } from '../../../lib/src/errors';
import { linkSpecEqual, protoEqual } from '../../../lib/src/proto-equal';
import { StoreConflictError, type DesiredStateStore, type ObjectKind, type StoreOp } from '../store/store';
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

export interface WriteResult<T> {
  readonly obj: T;
  readonly changed: boolean;
}

export class ObjectCache {
  readonly links = new Map<string, Entry<Link>>();
  readonly policies = new Map<string, Entry<LinkPolicy>>();
  readonly agents = new Map<string, Entry<Agent>>();
  private readonly listeners = new Set<CacheListener>();
  private seq = 0n;

  constructor(
    private readonly store: DesiredStateStore,
    private readonly metrics: ControllerMetrics,
  ) {}

  async load(): Promise<void> {
    const end = this.metrics.storeOps.startTimer({ operation: 'list' });
    const all = await this.store.loadAll();
    end();
    const withRv = <T extends { meta: ObjectMeta | undefined }>(obj: T, rev: bigint): T => {
      if (obj.meta) obj.meta.resourceVersion = String(rev);
      return obj;
    };
    for (const o of all) {
      if (o.kind === 'link')
        this.links.set(o.name, { obj: withRv(codec.link.decode(o.data), o.revision), revision: o.revision });
      else if (o.kind === 'policy')
        this.policies.set(o.name, { obj: withRv(codec.policy.decode(o.data), o.revision), revision: o.revision });
      else this.agents.set(o.name, { obj: withRv(codec.agent.decode(o.data), o.revision), revision: o.revision });
    }
    this.seq = this.store.revision();
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

  private async commit(ops: StoreOp[]): Promise<bigint> {
    const end = this.metrics.storeOps.startTimer({
      operation: ops.length > 1 ? 'txn' : ops[0]?.op === 'delete' ? 'delete' : 'put',
    });
    try {
      const rev = await this.store.commit(ops);
      if (rev > this.seq) this.seq = rev;
      return rev;
    } catch (err) {
      if (err instanceof StoreConflictError) {
        this.metrics.storeConflicts.inc();
        throw staleResourceVersion(err.kind, err.name, String(err.expected), String(err.actual));
      }
      throw err;
    } finally {
      end();
    }
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
   * Creates or updates a link's meta and spec. Generation bumps when the spec
   * changes. `rv` = client resourceVersion ("" for last-writer-wins).
   */
  async putLink(link: Link, rv: string, opts: { dryRun?: boolean; now?: Date } = {}): Promise<WriteResult<Link>> {
    const name = link.meta?.name ?? '';
    const cur = this.links.get(name);
    const expected = this.expectedFor('link', name, rv, cur?.revision);
    const now = opts.now ?? new Date();
    const old = cur?.obj;
    const meta = link.meta ?? emptyMeta(name);
    const specChanged = !old || !linkSpecEqual(old.spec, link.spec);
    const metaChanged =
      !old ||
      !mapEqual(old.meta?.labels ?? {}, meta.labels) ||
      !mapEqual(old.meta?.annotations ?? {}, meta.annotations) ||
      (old.meta?.managedBy ?? '') !== meta.managedBy;
    if (old && !specChanged && !metaChanged) return { obj: old, changed: false };
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
    if (opts.dryRun) return { obj: next, changed: true };
    const rev = await this.commit([{ op: 'put', kind: 'link', name, data: codec.link.encode(next), expected }]);
    next.meta = { ...(next.meta as ObjectMeta), resourceVersion: String(rev) };
    this.links.set(name, { obj: next, revision: rev });
    this.publish('link', old ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED, name);
    return { obj: next, changed: true };
  }

  async deleteLink(name: string, rv: string): Promise<Link | undefined> {
    const cur = this.links.get(name);
    if (!cur) return undefined;
    const expected = this.expectedFor('link', name, rv, cur.revision);
    await this.commit([{ op: 'delete', kind: 'link', name, expected }]);
    this.links.delete(name);
    this.publish('link', WatchEventType.WATCH_EVENT_TYPE_DELETED, name, false, cur.obj);
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
      status: old?.status,
    };
    if (opts.dryRun) return { obj: next, changed: true };
    const rev = await this.commit([{ op: 'put', kind: 'policy', name, data: codec.policy.encode(next), expected }]);
    next.meta = { ...(next.meta as ObjectMeta), resourceVersion: String(rev) };
    this.policies.set(name, { obj: next, revision: rev });
    this.publish(
      'policy',
      old ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED,
      name,
    );
    return { obj: next, changed: true };
  }

  async deletePolicy(name: string, rv: string): Promise<LinkPolicy | undefined> {
    const cur = this.policies.get(name);
    if (!cur) return undefined;
    const expected = this.expectedFor('policy', name, rv, cur.revision);
    await this.commit([{ op: 'delete', kind: 'policy', name, expected }]);
    this.policies.delete(name);
    this.publish('policy', WatchEventType.WATCH_EVENT_TYPE_DELETED, name, false, cur.obj);
    return cur.obj;
  }

  /** Persists an agent record (registration data and spec); phase/heartbeat are not persisted. */
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
    const rev = await this.commit([{ op: 'put', kind: 'agent', name, data: codec.agent.encode(persisted) }]);
    persisted.meta = { ...(persisted.meta as ObjectMeta), resourceVersion: String(rev) };
    this.agents.set(name, { obj: persisted, revision: rev });
    this.publish('agent', cur ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED, name);
    return persisted;
  }

  async deleteAgent(name: string): Promise<void> {
    const cur = this.agents.get(name);
    if (!cur) return;
    await this.commit([{ op: 'delete', kind: 'agent', name }]);
    this.agents.delete(name);
    this.publish('agent', WatchEventType.WATCH_EVENT_TYPE_DELETED, name, false, cur.obj);
  }
}
