/**
 * The level-triggered reconciler. Three keyed work queues:
 *
 *   policies  "NAME": render the policy against the registered agents, create, update
 *             and delete the links it owns.
 *   agents    "NAME": deliver the agent's desired links to its Sync stream (a full
 *             snapshot after (re)connect or drift, else a delta), idempotently.
 *   links     "NAME": aggregate the two agents' reports into the link's status.
 *
 * Every pass reads the current desired state (ObjectCache) and observed state
 * (AgentRuntime) and computes the result from scratch; events only enqueue keys. A
 * periodic resync re-enqueues everything, so a missed event heals.
 */
import { Duration } from '../../../lib/proto/google-protobuf';
import type { DesiredAck, LinkStatusUpdate, Register, Registered } from '../../../lib/proto/controller';
import {
  AgentPhase,
  ConditionStatus,
  LinkPhase,
  NodeRole,
  WatchEventType,
  type Agent,
  type Condition,
  type Link,
  type LinkPolicy,
  type LinkPolicyStatus,
  type LinkStatus,
} from '../../../lib/proto/types';
import { monotonicMs, wallTimeOf } from '../../../lib/src/clock';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import { linkSpecEqual } from '../../../lib/src/proto-equal';
import { linkStatusEqual } from '../../../lib/src/status-equal';
import { addressesCondition, ADDRESSES_VERIFIED, type AddressCheck } from './address-verification';
import { AgentRuntime, type SyncSessionHandle } from './agent-runtime';
import type { ControllerMetrics } from './controller-metrics';
import { aggregateLinkStatus, type EndpointView } from './link-status';
import { emptyMeta, type CacheEvent, type ObjectCache } from './object-cache';
import { agentLabels, managedByPolicy, renderPolicy } from './policy-render';
import { WorkQueue } from './work-queue';

/** Workers per queue. */
export const WORKERS = 4;
/** Every object is re-enqueued this often (catches anything an event missed). */
export const RESYNC_INTERVAL_MS = 5 * 60_000;
/** A policy pass lets I/O run after this many link writes. */
export const YIELD_EVERY_WRITES = 500;
/** How often leases are checked. */
export const LEASE_CHECK_INTERVAL_MS = 1000;
/** Heartbeat interval handed to agents, as a fraction of the lease. */
export const HEARTBEAT_FRACTION = 1 / 3;
/** An agent's reason for rejecting a link is kept up to this many characters. */
export const MAX_REJECT_REASON_LENGTH = 1024;

const AGENT_PHASE_LABEL: Partial<Record<AgentPhase, string>> = {
  [AgentPhase.AGENT_PHASE_READY]: 'Ready',
  [AgentPhase.AGENT_PHASE_NOT_READY]: 'NotReady',
  [AgentPhase.AGENT_PHASE_DRAINING]: 'Draining',
  [AgentPhase.AGENT_PHASE_DRAINED]: 'Drained',
};

const CONDITION_STATUS_LABEL: Partial<Record<ConditionStatus, string>> = {
  [ConditionStatus.CONDITION_STATUS_TRUE]: 'True',
  [ConditionStatus.CONDITION_STATUS_FALSE]: 'False',
  [ConditionStatus.CONDITION_STATUS_UNKNOWN]: 'Unknown',
};

export interface ReconcilerOptions {
  readonly leaseMs: number;
  /** maxLinksPerAgent bounds the links a policy stamps on one agent. */
  readonly limits: Pick<Limits, 'maxLinksPerAgent'>;
}

/** An agent's registered addresses as checked against its connection (address-verification.ts). */
export interface CheckedAddresses {
  readonly grpc: AddressCheck;
  readonly metrics: AddressCheck;
}

export class Reconciler {
  readonly runtimes = new Map<string, AgentRuntime>();
  /** agent name -> names of links with an endpoint there. */
  private readonly linksByAgent = new Map<string, Set<string>>();
  /** link name -> its endpoint agents, as last indexed. */
  private readonly linkAgents = new Map<string, readonly string[]>();
  /** policy name -> names of links it manages. */
  private readonly linksByPolicy = new Map<string, Set<string>>();
  readonly linkStatus = new Map<string, LinkStatus>();
  readonly policyStatus = new Map<string, LinkPolicyStatus>();
  /** "agent/link" -> the agent's role in the link as last sent (orders deletes). */
  private readonly lastRole = new Map<string, number>();
  readonly links: WorkQueue;
  readonly agents: WorkQueue;
  readonly policies: WorkQueue;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;
  /** Monotonic ms at construction (the lease origin of agents loaded from the store). */
  private readonly startedAt = monotonicMs();

  constructor(
    private readonly cache: ObjectCache,
    private readonly metrics: ControllerMetrics,
    private readonly log: Logger,
    private readonly opts: ReconcilerOptions,
  ) {
    this.links = new WorkQueue('links', log.child({ queue: 'links' }), metrics);
    this.agents = new WorkQueue('agents', log.child({ queue: 'agents' }), metrics);
    this.policies = new WorkQueue('policies', log.child({ queue: 'policies' }), metrics);
    metrics.setCounts({
      agents: () => {
        const counts = new Map<string, number>();
        for (const [name, e] of this.cache.agents) {
          const k = `${e.obj.status?.identity?.rack ?? ''}\0${AGENT_PHASE_LABEL[this.agentPhase(name)] ?? 'NotReady'}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }
        return [...counts].map(([k, n]) => {
          const [rack, phase] = k.split('\0') as [string, string];
          return [rack, phase, n] as const;
        });
      },
      links: () => {
        const counts = new Map<string, number>();
        for (const [name, e] of this.cache.links) {
          const rack = this.linkRack(e.obj);
          const st = this.linkStatus.get(name);
          for (const type of ['Ready', 'Synced']) {
            const c = st?.conditions.find((x) => x.type === type);
            const k = `${rack}\0${type}\0${CONDITION_STATUS_LABEL[c?.status ?? ConditionStatus.CONDITION_STATUS_UNKNOWN] ?? 'Unknown'}`;
            counts.set(k, (counts.get(k) ?? 0) + 1);
          }
        }
        return [...counts].map(([k, n]) => {
          const [rack, condition, status] = k.split('\0') as [string, string, string];
          return [rack, condition, status, n] as const;
        });
      },
      policies: () => this.cache.policies.size,
      syncStreams: () => {
        let n = 0;
        for (const r of this.runtimes.values()) if (r.session) n++;
        return n;
      },
    });
  }

  /** Rack of the card (or VM) endpoint of a link, else of its first endpoint. */
  private linkRack(l: Link): string {
    let rack: string | undefined;
    for (const ep of l.spec?.endpoints ?? []) {
      const id = this.cache.agents.get(ep.agent)?.obj.status?.identity;
      if (!id) continue;
      if (id.role === NodeRole.NODE_ROLE_CARD || id.role === NodeRole.NODE_ROLE_VM) return id.rack;
      rack ??= id.rack;
    }
    return rack ?? '';
  }

  start(): void {
    for (const [name, e] of this.cache.agents) {
      const rt = this.runtime(name);
      const id = e.obj.status?.identity;
      if (id) rt.labels = agentLabels(id);
    }
    for (const name of this.cache.links.keys()) this.indexLink(name);
    this.unsubscribe = this.cache.subscribe((ev) => this.onCacheEvent(ev));
    this.links.run(WORKERS, (k) => this.reconcileLink(k));
    this.agents.run(WORKERS, (k) => this.reconcileAgent(k));
    this.policies.run(1, (k) => this.reconcilePolicy(k));
    this.resyncAll();
    const lease = setInterval(() => this.checkLeases(), LEASE_CHECK_INTERVAL_MS);
    const resync = setInterval(() => this.resyncAll(), RESYNC_INTERVAL_MS);
    lease.unref();
    resync.unref();
    this.timers = [lease, resync];
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe?.();
    await Promise.all([this.links.stop(), this.agents.stop(), this.policies.stop()]);
  }

  private resyncAll(): void {
    for (const n of this.cache.policies.keys()) this.policies.add(n);
    for (const n of this.cache.links.keys()) this.links.add(n);
    for (const n of this.runtimes.keys()) this.agents.add(n);
  }

  /** True when every queue is empty and idle (tests and the benchmark use it). */
  idle(): boolean {
    return this.links.idle() && this.agents.idle() && this.policies.idle();
  }

  runtime(name: string): AgentRuntime {
    let rt = this.runtimes.get(name);
    if (!rt) {
      rt = new AgentRuntime(name, this.startedAt);
      this.runtimes.set(name, rt);
    }
    return rt;
  }

  linksOf(agent: string): ReadonlySet<string> {
    return this.linksByAgent.get(agent) ?? new Set();
  }

  // ---- indexes and events -------------------------------------------------------

  private indexLink(name: string): void {
    const old = this.linkAgents.get(name) ?? [];
    const entry = this.cache.links.get(name);
    const now = entry ? (entry.obj.spec?.endpoints ?? []).map((e) => e.agent) : [];
    for (const a of old) this.linksByAgent.get(a)?.delete(name);
    for (const a of now) {
      let s = this.linksByAgent.get(a);
      if (!s) this.linksByAgent.set(a, (s = new Set()));
      s.add(name);
    }
    if (entry) this.linkAgents.set(name, now);
    else this.linkAgents.delete(name);
    for (const a of new Set([...old, ...now])) this.agents.add(a);
    const mb = entry?.obj.meta?.managedBy ?? '';
    for (const [p, set] of this.linksByPolicy)
      if (set.delete(name) && set.size === 0 && !this.cache.policies.has(p)) this.linksByPolicy.delete(p);
    if (mb.startsWith('policy/')) {
      const p = mb.slice('policy/'.length);
      let s = this.linksByPolicy.get(p);
      if (!s) this.linksByPolicy.set(p, (s = new Set()));
      s.add(name);
    }
  }

  private onCacheEvent(ev: CacheEvent): void {
    if (ev.statusOnly) return;
    if (ev.kind === 'link') {
      this.indexLink(ev.name);
      this.links.add(ev.name);
      const mb = this.cache.links.get(ev.name)?.obj.meta?.managedBy ?? '';
      if (ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED) {
        this.linkStatus.delete(ev.name);
        // A deleted link a policy still wants comes back (level-triggered).
        for (const p of this.cache.policies.keys()) this.policies.add(p);
      } else if (mb.startsWith('policy/')) this.policies.add(mb.slice('policy/'.length));
    } else if (ev.kind === 'policy') {
      this.policies.add(ev.name);
    } else if (ev.kind === 'agent') {
      this.agents.add(ev.name);
      for (const p of this.cache.policies.keys()) this.policies.add(p);
    }
  }

  /** Called by writers after they change an agent's spec (cordon, drain). */
  agentSpecChanged(name: string): void {
    this.agents.add(name);
    for (const p of this.cache.policies.keys()) this.policies.add(p);
    for (const l of this.linksOf(name)) this.links.add(l);
  }

  // ---- agent phase ----------------------------------------------------------------

  agentPhase(name: string): AgentPhase {
    const rt = this.runtimes.get(name);
    const spec = this.cache.agents.get(name)?.obj.spec;
    if (!rt || rt.leaseExpired || (rt.session === undefined && monotonicMs() - rt.lastHeartbeat > this.opts.leaseMs))
      return AgentPhase.AGENT_PHASE_NOT_READY;
    if (spec?.drain) {
      const hasManaged = [...rt.observed.keys()].length > 0 || this.linksOf(name).size > 0 || rt.sent.size > 0;
      return hasManaged ? AgentPhase.AGENT_PHASE_DRAINING : AgentPhase.AGENT_PHASE_DRAINED;
    }
    return AgentPhase.AGENT_PHASE_READY;
  }

  private leaseValid(name: string): boolean {
    const rt = this.runtimes.get(name);
    return rt !== undefined && !rt.leaseExpired && monotonicMs() - rt.lastHeartbeat <= this.opts.leaseMs;
  }

  /** The agent as returned by the API: persisted record plus run-time status. */
  agentView(name: string): Agent | undefined {
    const e = this.cache.agents.get(name);
    if (!e) return undefined;
    const rt = this.runtimes.get(name);
    const phase = this.agentPhase(name);
    const now = new Date();
    const hb = rt ? wallTimeOf(rt.lastHeartbeat) : undefined;
    const ready: Condition =
      phase === AgentPhase.AGENT_PHASE_NOT_READY
        ? {
            type: 'Ready',
            status: ConditionStatus.CONDITION_STATUS_UNKNOWN,
            reason: rt?.session ? 'LeaseExpired' : 'NotConnected',
            message: `no heartbeat for ${Math.round((monotonicMs() - (rt?.lastHeartbeat ?? this.startedAt)) / 1000)}s (lease ${this.opts.leaseMs / 1000}s); check the agent process and its --controller address`,
            observedGeneration: e.obj.meta?.generation ?? 0n,
            lastTransitionTime: now,
          }
        : {
            type: 'Ready',
            status: ConditionStatus.CONDITION_STATUS_TRUE,
            reason: 'Heartbeating',
            message: 'agent holds a valid lease',
            observedGeneration: e.obj.meta?.generation ?? 0n,
            lastTransitionTime: hb,
          };
    const conditions: Condition[] = [ready];
    const addrs = e.obj.status?.conditions.find((c) => c.type === ADDRESSES_VERIFIED);
    if (addrs) conditions.push(addrs);
    if (e.obj.spec?.unschedulable) {
      conditions.push({
        type: 'Schedulable',
        status: ConditionStatus.CONDITION_STATUS_FALSE,
        reason: e.obj.spec.drain ? 'Drained' : 'Cordoned',
        message: 'no new links are placed on this agent; uncordon to allow them',
        observedGeneration: e.obj.meta?.generation ?? 0n,
        lastTransitionTime: undefined,
      });
    }
    return {
      meta: e.obj.meta,
      spec: e.obj.spec,
      status: {
        phase,
        identity: e.obj.status?.identity,
        addresses: e.obj.status?.addresses,
        capabilities: e.obj.status?.capabilities,
        version: e.obj.status?.version ?? '',
        lastHeartbeatTime: hb,
        leaseDuration: Duration.fromPartial(msToDuration(this.opts.leaseMs)),
        conditions,
        ackedVersion: rt?.ackedVersion ?? 0n,
      },
    };
  }

  linkView(name: string): Link | undefined {
    const e = this.cache.links.get(name);
    if (!e) return undefined;
    return { ...e.obj, status: this.linkStatus.get(name) ?? this.initialStatus(e.obj) };
  }

  private initialStatus(link: Link): LinkStatus {
    return aggregateLinkStatus(link, this.endpointViews(link), undefined, new Date());
  }

  policyView(name: string): LinkPolicy | undefined {
    const e = this.cache.policies.get(name);
    if (!e) return undefined;
    const st = this.policyStatus.get(name);
    if (!st) return { ...e.obj, status: { observedGeneration: 0n, matchedPairs: 0, links: [], conditions: [] } };
    const ready = st.links.filter((ln) => this.linkStatus.get(ln)?.phase === LinkPhase.LINK_PHASE_READY).length;
    const all = ready === st.links.length;
    const readyCond: Condition = {
      type: 'Ready',
      status: all ? ConditionStatus.CONDITION_STATUS_TRUE : ConditionStatus.CONDITION_STATUS_FALSE,
      reason: all ? 'AllLinksReady' : 'LinksNotReady',
      message: `${ready}/${st.links.length} links Ready`,
      observedGeneration: st.observedGeneration,
      lastTransitionTime: undefined,
    };
    return { ...e.obj, status: { ...st, conditions: [...st.conditions, readyCond] } };
  }

  // ---- Sync stream events ---------------------------------------------------------

  /** A validated registration (lib/src/validate-registration.ts) with its checked addresses. */
  register(session: SyncSessionHandle, reg: Register, addresses: CheckedAddresses): Registered {
    const id = reg.identity;
    const name = id?.nodeName ?? '';
    const rt = this.runtime(name);
    if (rt.session && rt.session.id !== session.id)
      rt.session.close('replaced by a newer Sync stream of the same agent');
    rt.session = session;
    rt.lastHeartbeat = monotonicMs();
    rt.leaseExpired = false;
    rt.labels = id ? agentLabels(id) : {};
    // Resume: same controller process, the agent has everything we sent, and what it
    // reports matches the desired state. Anything else gets a full snapshot.
    rt.needsFull = !(
      reg.ackedVersion !== 0n &&
      reg.ackedVersion === rt.sentVersion &&
      rt.ackedVersion === rt.sentVersion
    );
    if (reg.ackedVersion > rt.sentVersion) rt.sentVersion = reg.ackedVersion;
    rt.ackedVersion = reg.ackedVersion;
    rt.observed.clear();
    const desired = this.desiredFor(name);
    const reported = new Set<string>();
    for (const l of reg.links) {
      const ln = l.meta?.name ?? '';
      reported.add(ln);
      if (l.status) rt.observed.set(ln, l.status);
      const want = desired.get(ln);
      if (!want) {
        if ((l.meta?.managedBy ?? '') !== '') {
          rt.needsFull = true;
          this.metrics.drift.inc({ direction: 'extra_on_agent' });
        }
      } else if (!linkSpecEqual(want.spec, l.spec)) {
        rt.needsFull = true;
        this.metrics.drift.inc({ direction: 'spec_differs' });
      } else {
        rt.applied.set(ln, want.meta?.generation ?? 0n);
      }
      this.links.add(ln);
    }
    for (const ln of desired.keys()) {
      if (!reported.has(ln)) {
        if (!rt.needsFull && rt.sent.has(ln)) this.metrics.drift.inc({ direction: 'missing_on_agent' });
        if (rt.sent.has(ln) || rt.applied.has(ln)) rt.needsFull = true;
        rt.applied.delete(ln);
      }
      this.links.add(ln);
    }
    if (desired.size > 0 && reported.size === 0 && rt.sentVersion === 0n) rt.needsFull = true;
    void this.persistRegistration(name, reg, addresses).catch((err: unknown) =>
      this.log.error({ err, agent: name }, 'persisting registration failed'),
    );
    this.agents.add(name);
    this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    return {
      leaseDuration: Duration.fromPartial(msToDuration(this.opts.leaseMs)),
      heartbeatInterval: Duration.fromPartial(
        msToDuration(Math.max(200, Math.floor(this.opts.leaseMs * HEARTBEAT_FRACTION))),
      ),
      serverTime: new Date(),
    };
  }

  private async persistRegistration(name: string, reg: Register, checked: CheckedAddresses): Promise<void> {
    const cur = this.cache.agents.get(name)?.obj;
    const s = cur?.status;
    // Only verified addresses are stored; the condition says what was refused and why.
    const addresses = { grpc: checked.grpc.address, metrics: checked.metrics.address };
    const prevCond = s?.conditions.find((c) => c.type === ADDRESSES_VERIFIED);
    let cond = addressesCondition(checked, cur?.meta?.generation ?? 0n, new Date());
    if (prevCond && prevCond.status === cond.status && prevCond.message === cond.message) cond = prevCond;
    const same =
      s !== undefined &&
      cond === prevCond &&
      JSON.stringify([s.identity, s.addresses, s.capabilities, s.version]) ===
        JSON.stringify([reg.identity, addresses, reg.capabilities, reg.version]);
    if (same) return;
    const isNew = cur === undefined;
    await this.cache.putAgent({
      meta: cur?.meta ?? { ...emptyMeta(name), labels: { ...(reg.identity?.labels ?? {}) } },
      spec: cur?.spec ?? { unschedulable: false, drain: false },
      status: {
        phase: AgentPhase.AGENT_PHASE_READY,
        identity: reg.identity,
        addresses,
        capabilities: reg.capabilities,
        version: reg.version,
        lastHeartbeatTime: undefined,
        leaseDuration: undefined,
        conditions: [cond],
        ackedVersion: 0n,
      },
    });
    if (!isNew) for (const p of this.cache.policies.keys()) this.policies.add(p);
  }

  heartbeat(name: string): void {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    if (rt.leaseExpired) {
      rt.leaseExpired = false;
      this.log.info({ agent: name }, 'agent lease renewed');
      for (const l of this.linksOf(name)) this.links.add(l);
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    }
  }

  linkStatusUpdate(name: string, u: LinkStatusUpdate): void {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    const desired = this.linksOf(name).has(u.name);
    if (u.deleted) {
      const inflight = this.isInflight(rt, u.name);
      rt.observed.delete(u.name);
      rt.applied.delete(u.name);
      if (desired && !inflight) {
        this.metrics.drift.inc({ direction: 'missing_on_agent' });
        rt.needsFull = true;
        this.agents.add(name);
      }
    } else {
      // The agent names the link: keep at most maxLinksPerAgent statuses of links it was not sent.
      const known = desired || rt.sent.has(u.name) || rt.observed.has(u.name);
      if (u.status && (known || rt.observed.size < this.opts.limits.maxLinksPerAgent))
        rt.observed.set(u.name, u.status);
      if (!desired && !rt.sent.has(u.name) && this.cache.links.get(u.name) === undefined && rt.session) {
        // A link we do not want is running there: a snapshot removes it (if managed).
        this.metrics.drift.inc({ direction: 'extra_on_agent' });
        rt.needsFull = true;
        this.agents.add(name);
      }
    }
    this.links.add(u.name);
    if (this.cache.agents.get(name)?.obj.spec?.drain)
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
  }

  private isInflight(rt: AgentRuntime, link: string): boolean {
    if (rt.sent.has(link) && !rt.applied.has(link)) return true;
    for (const m of rt.inflight.values()) if (m.has(link)) return true;
    return false;
  }

  ack(name: string, a: DesiredAck): void {
    const rt = this.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    if (a.version > rt.ackedVersion) rt.ackedVersion = a.version;
    const rejectedNames = Object.keys(a.rejected);
    if (rejectedNames.length > 0) this.metrics.rejections.inc(rejectedNames.length);
    for (const [v, upserts] of rt.inflight) {
      if (v > a.version) continue;
      rt.inflight.delete(v);
      for (const [ln, gen] of upserts) {
        const reason = a.rejected[ln];
        if (v === a.version && reason !== undefined) {
          rt.rejected.set(ln, reason.slice(0, MAX_REJECT_REASON_LENGTH));
        } else {
          rt.rejected.delete(ln);
          rt.applied.set(ln, gen);
        }
        this.links.add(ln);
      }
    }
    for (const ln of rejectedNames) {
      // Only links this agent was sent: an agent cannot make the controller hold other names.
      if (!rt.sent.has(ln)) continue;
      rt.rejected.set(ln, (a.rejected[ln] ?? '').slice(0, MAX_REJECT_REASON_LENGTH));
      this.links.add(ln);
    }
    if (this.cache.agents.get(name)?.obj.spec?.drain)
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
  }

  streamClosed(name: string, session: SyncSessionHandle): void {
    const rt = this.runtimes.get(name);
    if (!rt || rt.session?.id !== session.id) return;
    rt.session = undefined;
    rt.inflight.clear();
    // The lease, not the stream, decides readiness (the agent is expected back soon).
  }

  private checkLeases(): void {
    const now = monotonicMs();
    for (const rt of this.runtimes.values()) {
      if (rt.leaseExpired || now - rt.lastHeartbeat <= this.opts.leaseMs) continue;
      if (!this.cache.agents.has(rt.name)) continue;
      rt.leaseExpired = true;
      this.metrics.leaseExpirations.inc();
      this.log.warn(
        { code: 'LEASE_EXPIRED', agent: rt.name, lastHeartbeatMsAgo: now - rt.lastHeartbeat },
        'agent lease expired: NotReady, its links Unknown',
      );
      for (const l of this.linksOf(rt.name)) this.links.add(l);
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, rt.name, true);
    }
  }

  // ---- reconcile passes -------------------------------------------------------------

  /** Links the agent should run now, by name. A drained agent should run none. */
  desiredFor(agent: string): Map<string, Link> {
    const out = new Map<string, Link>();
    if (this.cache.agents.get(agent)?.obj.spec?.drain) return out;
    for (const ln of this.linksOf(agent)) {
      const e = this.cache.links.get(ln);
      if (e) out.set(ln, e.obj);
    }
    return out;
  }

  private toAgentLink(l: Link): Link {
    return {
      meta: {
        ...(l.meta ?? emptyMeta('')),
        managedBy: l.meta?.managedBy || 'controller',
        resourceVersion: '',
        createTime: undefined,
        updateTime: undefined,
      },
      spec: l.spec,
      status: undefined,
    };
  }

  private async reconcileAgent(name: string): Promise<void> {
    const rt = this.runtimes.get(name);
    if (!rt?.session) {
      return;
    }
    const desired = this.desiredFor(name);
    const upserts: Link[] = [];
    const deletes: string[] = [];
    const carried = new Map<string, bigint>();
    const full = rt.needsFull;
    for (const [ln, l] of desired) {
      const gen = l.meta?.generation ?? 0n;
      if (full || rt.sent.get(ln) !== gen) {
        upserts.push(this.toAgentLink(l));
        carried.set(ln, gen);
      }
    }
    if (!full) for (const ln of rt.sent.keys()) if (!desired.has(ln)) deletes.push(ln);
    // The agent removes links in this order: where it is the driver side first (its
    // users see the device go away before the backend does), then by name (drain order).
    const role = (ln: string): number => this.lastRole.get(`${name}/${ln}`) ?? 0;
    deletes.sort((a, b) => role(b) - role(a) || (a < b ? -1 : a > b ? 1 : 0));
    if (!full && upserts.length === 0 && deletes.length === 0) {
      return;
    }
    const version = rt.sentVersion + 1n;
    rt.sentVersion = version;
    rt.needsFull = false;
    rt.sent.clear();
    for (const [ln, l] of desired) {
      rt.sent.set(ln, l.meta?.generation ?? 0n);
      const r = l.spec?.endpoints.find((e) => e.agent === name)?.role;
      if (r !== undefined) this.lastRole.set(`${name}/${ln}`, r);
    }
    for (const ln of deletes) this.lastRole.delete(`${name}/${ln}`);
    rt.inflight.set(version, carried);
    for (const ln of deletes) {
      rt.applied.delete(ln);
      rt.rejected.delete(ln);
    }
    rt.session.sendDesired(version, full, upserts, deletes);
    this.metrics.desiredPushes.inc({ kind: full ? 'snapshot' : 'delta' });
    for (const ln of carried.keys()) this.links.add(ln);
  }

  endpointViews(link: Link): EndpointView[] {
    const name = link.meta?.name ?? '';
    const gen = link.meta?.generation ?? 0n;
    return (link.spec?.endpoints ?? []).map((ep) => {
      const rt = this.runtimes.get(ep.agent);
      const registered = this.cache.agents.has(ep.agent) && rt !== undefined;
      return {
        agent: ep.agent,
        role: ep.role,
        registered,
        leaseValid: registered && this.leaseValid(ep.agent),
        applied: (rt?.applied.get(name) ?? -1n) >= gen,
        rejected: rt?.rejected.get(name),
        observed: rt?.observed.get(name),
      };
    });
  }

  private async reconcileLink(name: string): Promise<void> {
    const e = this.cache.links.get(name);
    if (!e) {
      this.linkStatus.delete(name);
      return;
    }
    const prev = this.linkStatus.get(name);
    const next = aggregateLinkStatus(e.obj, this.endpointViews(e.obj), prev, new Date());
    if (!linkStatusEqual(prev, next)) {
      this.linkStatus.set(name, next);
      this.cache.publish('link', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    }
  }

  /**
   * The embedded store commits synchronously, so a pass writing thousands of links
   * would never yield; let Sync streams and RPCs run every YIELD_EVERY_WRITES writes.
   */
  private async yieldEvery(writes: number): Promise<void> {
    if (writes % YIELD_EVERY_WRITES === 0) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  private async reconcilePolicy(name: string): Promise<void> {
    const pe = this.cache.policies.get(name);
    const owned = new Set(this.linksByPolicy.get(name) ?? []);
    {
      const want = new Map<string, Link>();
      if (pe) {
        const agents = new Map<string, { agent: Agent; labels: Record<string, string> }>();
        for (const [an, ae] of this.cache.agents)
          agents.set(an, { agent: ae.obj, labels: this.runtimes.get(an)?.labels ?? {} });
        for (const r of renderPolicy({ policy: pe.obj, agents, existing: (ln) => this.cache.links.has(ln) }))
          want.set(r.name, r.link);
      }
      let conflicts = 0;
      let overLimit = 0;
      let writes = 0;
      const max = this.opts.limits.maxLinksPerAgent;
      for (const [ln, l] of want) {
        const cur = this.cache.links.get(ln);
        if (cur && (cur.obj.meta?.managedBy ?? '') !== managedByPolicy(name)) {
          conflicts++;
          continue;
        }
        // A new link on an agent that already holds maxLinksPerAgent links is not stamped.
        if (!cur && (l.spec?.endpoints ?? []).some((ep) => this.linksOf(ep.agent).size >= max)) {
          overLimit++;
          want.delete(ln);
          continue;
        }
        if ((await this.cache.putLink(l, '')).changed) await this.yieldEvery(++writes);
      }
      for (const ln of owned) {
        if (want.has(ln)) continue;
        await this.cache.deleteLink(ln, '');
        await this.yieldEvery(++writes);
      }
      if (pe) {
        const gen = pe.obj.meta?.generation ?? 0n;
        const names = [...want.keys()].sort();
        const prev = this.policyStatus.get(name);
        const applied: Condition =
          overLimit > 0 && conflicts === 0
            ? {
                type: 'Applied',
                status: ConditionStatus.CONDITION_STATUS_FALSE,
                reason: 'LinkLimitReached',
                message: `${overLimit} link(s) not stamped: their agents already hold maxLinksPerAgent (${max}) links`,
                observedGeneration: gen,
                lastTransitionTime: new Date(),
              }
            : conflicts > 0
              ? {
                  type: 'Applied',
                  status: ConditionStatus.CONDITION_STATUS_FALSE,
                  reason: 'NameConflict',
                  message: `${conflicts} link name(s) are already used by links this policy does not manage; rename the policy or delete those links`,
                  observedGeneration: gen,
                  lastTransitionTime: new Date(),
                }
              : {
                  type: 'Applied',
                  status: ConditionStatus.CONDITION_STATUS_TRUE,
                  reason: 'LinksStamped',
                  message: `${names.length} link(s) for ${names.length} matching host/card pair(s)`,
                  observedGeneration: gen,
                  lastTransitionTime: new Date(),
                };
        const old = prev?.conditions.find((c) => c.type === 'Applied');
        if (old && old.status === applied.status) applied.lastTransitionTime = old.lastTransitionTime;
        const changed =
          !prev ||
          prev.observedGeneration !== gen ||
          prev.links.join(',') !== names.join(',') ||
          old?.message !== applied.message;
        this.policyStatus.set(name, {
          observedGeneration: gen,
          matchedPairs: names.length,
          links: names,
          conditions: [applied],
        });
        if (changed) this.cache.publish('policy', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
      } else {
        this.policyStatus.delete(name);
      }
    }
  }
}

function msToDuration(ms: number): { seconds: bigint; nanos: number } {
  return { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 };
}
