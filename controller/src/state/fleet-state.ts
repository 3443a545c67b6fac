/**
 * The controller's run-time picture of the fleet (never persisted, rebuilt after a restart):
 *
 *   - one AgentRuntime per agent (Sync session, lease, what was sent, acknowledged and reported);
 *   - leases: which agents hold one, and the agent phase derived from it;
 *   - indexes over the desired state: the links of each agent, the links each policy owns;
 *   - observed status computed by the reconcile passes: link status, policy status.
 *
 * It holds state and answers questions; it never enqueues work, writes the store or talks to an
 * agent. The sync sessions (sync/sync-sessions.ts) and the reconcile passes (reconcile/) change it;
 * the views (views/) read it. A controller that becomes leader builds a fresh FleetState: every
 * agent's lease starts at construction, so a takeover never expires the fleet at once.
 */
import { AgentPhase, type LinkPolicyStatus, type LinkStatus } from '../../../lib/proto/types';
import { monotonicMs } from '../../../lib/src/clock';
import { agentLabels } from './agent-labels';
import { AgentRuntime } from './agent-runtime';
import type { ObjectCache } from './object-cache';
import { StreamEndpoints } from './stream-endpoints';

export interface FleetStateOptions {
  /** Lease length: an agent without a heartbeat for this long is NotReady. */
  readonly leaseMs: number;
}

const NO_LINKS: ReadonlySet<string> = new Set();

export class FleetState {
  /** Agent name -> its run-time record (created on first use, never removed). */
  readonly runtimes = new Map<string, AgentRuntime>();
  /** Observed status of each link, as the links pass last computed it. */
  readonly linkStatus = new Map<string, LinkStatus>();
  /** Status of each policy, as the policies pass last computed it. */
  readonly policyStatus = new Map<string, LinkPolicyStatus>();
  /** Agent name -> names of links with an endpoint there. */
  private readonly linksByAgent = new Map<string, Set<string>>();
  /** Link name -> its endpoint agents, as last indexed. */
  private readonly linkAgents = new Map<string, readonly string[]>();
  /** Policy name -> names of links it manages. */
  private readonly linksByPolicy = new Map<string, Set<string>>();
  /** Monotonic ms at construction: the lease origin of agents loaded from the store. */
  readonly startedAt = monotonicMs();
  /** Stream links' controller-filled addresses, ports and secrets (stream-endpoints.ts). */
  readonly streamEndpoints: StreamEndpoints;

  constructor(
    private readonly cache: ObjectCache,
    readonly opts: FleetStateOptions,
  ) {
    this.streamEndpoints = new StreamEndpoints(cache, (a) => this.linksOf(a));
  }

  /** Runtimes (with selector labels) for every stored agent; call once, before the first pass. */
  loadAgents(): void {
    for (const [name, e] of this.cache.agents) {
      const rt = this.runtime(name);
      const id = e.obj.status?.identity;
      if (id) rt.labels = agentLabels(id);
    }
  }

  /** The agent's run-time record, created (lease starting now-ish: at startedAt) on first use. */
  runtime(name: string): AgentRuntime {
    let rt = this.runtimes.get(name);
    if (!rt) {
      rt = new AgentRuntime(name, this.startedAt);
      this.runtimes.set(name, rt);
    }
    return rt;
  }

  // ---- indexes ----------------------------------------------------------------------------

  /** Names of the links with an endpoint on `agent`. */
  linksOf(agent: string): ReadonlySet<string> {
    return this.linksByAgent.get(agent) ?? NO_LINKS;
  }

  /** Names of the links `policy` manages (a copy: the policies pass changes the index while it runs). */
  linksOwnedBy(policy: string): Set<string> {
    return new Set(this.linksByPolicy.get(policy) ?? []);
  }

  /**
   * Re-indexes one link after it changed or was deleted. Returns the agents it had or now has an
   * endpoint on: their desired links may have changed.
   */
  indexLink(name: string): Set<string> {
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
    const mb = entry?.obj.meta?.managedBy ?? '';
    for (const [p, set] of this.linksByPolicy)
      if (set.delete(name) && set.size === 0 && !this.cache.policies.has(p)) this.linksByPolicy.delete(p);
    if (mb.startsWith('policy/')) {
      const p = mb.slice('policy/'.length);
      let s = this.linksByPolicy.get(p);
      if (!s) this.linksByPolicy.set(p, (s = new Set()));
      s.add(name);
    }
    return new Set([...old, ...now]);
  }

  // ---- leases and phase ----------------------------------------------------------------------

  /** True while the agent is registered here and heartbeating within its lease. */
  leaseValid(name: string): boolean {
    const rt = this.runtimes.get(name);
    return rt !== undefined && !rt.leaseExpired && monotonicMs() - rt.lastHeartbeat <= this.opts.leaseMs;
  }

  /**
   * Marks the leases that ran out since the last check as expired and returns those agents (each
   * once per expiry; a heartbeat renews the lease). Agents deleted from the store are skipped.
   */
  expireLeases(now: number): AgentRuntime[] {
    const expired: AgentRuntime[] = [];
    for (const rt of this.runtimes.values()) {
      if (rt.leaseExpired || now - rt.lastHeartbeat <= this.opts.leaseMs) continue;
      if (!this.cache.agents.has(rt.name)) continue;
      rt.leaseExpired = true;
      expired.push(rt);
    }
    return expired;
  }

  /** The agent's phase, derived from its lease, its drain flag and the links it still runs (see agent-runtime.ts). */
  agentPhase(name: string): AgentPhase {
    const rt = this.runtimes.get(name);
    const spec = this.cache.agents.get(name)?.obj.spec;
    if (!rt || rt.leaseExpired || (rt.session === undefined && monotonicMs() - rt.lastHeartbeat > this.opts.leaseMs))
      return AgentPhase.AGENT_PHASE_NOT_READY;
    if (spec?.drain) {
      const hasManaged = rt.observed.size > 0 || this.linksOf(name).size > 0 || rt.sent.size > 0;
      return hasManaged ? AgentPhase.AGENT_PHASE_DRAINING : AgentPhase.AGENT_PHASE_DRAINED;
    }
    return AgentPhase.AGENT_PHASE_READY;
  }

  /** Connected agents in a store identity conflict (they hold their links until adopted). */
  storeConflicts(): AgentRuntime[] {
    return [...this.runtimes.values()].filter((r) => r.session !== undefined && r.storeConflict !== undefined);
  }

  /** Open Sync streams. */
  sessionCount(): number {
    let n = 0;
    for (const r of this.runtimes.values()) if (r.session) n++;
    return n;
  }
}
