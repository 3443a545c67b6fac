/**
 * The level-triggered reconcile loop: three keyed work queues (work-queues.ts) and their
 * workers, the routing of desired-state changes to keys, a periodic resync and the lease timer.
 *
 *   policies  policy-pass.ts    render a policy, write the links it owns
 *   agents    desired-push.ts   deliver an agent's desired links to its Sync stream
 *   links     link-pass.ts      aggregate the two agents' reports into the link's status
 *
 * Every pass reads the current desired state (state/object-cache.ts) and the run-time fleet state
 * (state/fleet-state.ts) and computes its result from scratch; events only enqueue keys. A periodic
 * resync re-enqueues everything, so a missed event heals. What agents send on their Sync streams
 * enters through sync/sync-sessions.ts, which updates the fleet state and enqueues keys too.
 *
 * Only this loop and the sync sessions write on reconciliation's behalf, and every write goes through
 * the object cache: with several controller replicas, the leader runs them and the others serve views.
 */
import { WatchEventType } from '../../../lib/proto/types';
import { monotonicMs } from '../../../lib/src/clock';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import type { FleetState } from '../state/fleet-state';
import type { CacheEvent, ObjectCache } from '../state/object-cache';
import { DesiredPush } from './desired-push';
import { LinkPass } from './link-pass';
import { PolicyPass } from './policy-pass';
import { WorkQueue } from './work-queue';
import type { WorkQueues } from './work-queues';

/** Workers of the links and agents queues (the policies queue has one: passes over one policy's links never overlap). */
export const WORKERS = 4;
/** Every object is re-enqueued this often (catches anything an event missed). */
export const RESYNC_INTERVAL_MS = 5 * 60_000;
/** How often leases are checked. */
export const LEASE_CHECK_INTERVAL_MS = 1000;

export interface ReconcilerOptions {
  /** maxLinksPerAgent bounds the links a policy stamps on one agent. */
  readonly limits: Pick<Limits, 'maxLinksPerAgent'>;
}

export class Reconciler {
  readonly queues: WorkQueues;
  private readonly push: DesiredPush;
  private readonly linkPass: LinkPass;
  private readonly policyPass: PolicyPass;
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;

  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
    private readonly metrics: ControllerMetrics,
    private readonly log: Logger,
    opts: ReconcilerOptions,
  ) {
    this.queues = {
      links: new WorkQueue('links', log.child({ queue: 'links' }), metrics),
      agents: new WorkQueue('agents', log.child({ queue: 'agents' }), metrics),
      policies: new WorkQueue('policies', log.child({ queue: 'policies' }), metrics),
    };
    this.push = new DesiredPush(cache, fleet, this.queues, metrics);
    this.linkPass = new LinkPass(cache, fleet);
    this.policyPass = new PolicyPass(cache, fleet, opts.limits);
  }

  start(): void {
    const { links, agents, policies } = this.queues;
    this.fleet.loadAgents();
    for (const name of this.cache.links.keys()) for (const a of this.fleet.indexLink(name)) agents.add(a);
    this.unsubscribe = this.cache.subscribe((ev) => this.onCacheEvent(ev));
    links.run(WORKERS, (k) => this.linkPass.reconcile(k));
    agents.run(WORKERS, (k) => this.push.reconcile(k));
    policies.run(1, (k) => this.policyPass.reconcile(k));
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
    const { links, agents, policies } = this.queues;
    await Promise.all([links.stop(), agents.stop(), policies.stop()]);
  }

  /** True when every queue is empty and idle (tests and the benchmark use it). */
  idle(): boolean {
    const { links, agents, policies } = this.queues;
    return links.idle() && agents.idle() && policies.idle();
  }

  /** Called by writers after they change an agent's spec (cordon, drain). */
  agentSpecChanged(name: string): void {
    this.queues.agents.add(name);
    for (const p of this.cache.policies.keys()) this.queues.policies.add(p);
    for (const l of this.fleet.linksOf(name)) this.queues.links.add(l);
  }

  private resyncAll(): void {
    for (const n of this.cache.policies.keys()) this.queues.policies.add(n);
    for (const n of this.cache.links.keys()) this.queues.links.add(n);
    for (const n of this.fleet.runtimes.keys()) this.queues.agents.add(n);
  }

  /** Routes a desired-state change to the keys it affects. */
  private onCacheEvent(ev: CacheEvent): void {
    if (ev.statusOnly) return;
    const { links, agents, policies } = this.queues;
    if (ev.kind === 'link') {
      for (const a of this.fleet.indexLink(ev.name)) agents.add(a);
      links.add(ev.name);
      const mb = this.cache.links.get(ev.name)?.obj.meta?.managedBy ?? '';
      if (ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED) {
        this.fleet.linkStatus.delete(ev.name);
        // A deleted link a policy still wants comes back (level-triggered).
        for (const p of this.cache.policies.keys()) policies.add(p);
      } else if (mb.startsWith('policy/')) policies.add(mb.slice('policy/'.length));
    } else if (ev.kind === 'policy') {
      policies.add(ev.name);
    } else if (ev.kind === 'agent') {
      agents.add(ev.name);
      for (const p of this.cache.policies.keys()) policies.add(p);
    }
  }

  /** Expired leases: the agent goes NotReady and its links' status Unknown. */
  private checkLeases(): void {
    const now = monotonicMs();
    for (const rt of this.fleet.expireLeases(now)) {
      this.metrics.leaseExpirations.inc();
      this.log.warn(
        { code: 'LEASE_EXPIRED', agent: rt.name, lastHeartbeatMsAgo: now - rt.lastHeartbeat },
        'agent lease expired: NotReady, its links Unknown',
      );
      for (const l of this.fleet.linksOf(rt.name)) this.queues.links.add(l);
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, rt.name, true);
    }
  }
}
