/**
 * Agents, links and policies as the API returns them: the stored object (state/object-cache.ts)
 * with its observed status filled in from the fleet state (state/fleet-state.ts). Agent phase,
 * heartbeat and conditions are computed at read time from the lease; link and policy status are
 * what the reconcile passes last computed (a link no pass has seen yet gets its initial status).
 * Read-only: nothing here changes state.
 */
import {
  AgentPhase,
  ConditionStatus,
  LinkPhase,
  type Agent,
  type Condition,
  type Link,
  type LinkPolicy,
} from '../../../lib/proto/types';
import { durationOfMs, monotonicMs, wallTimeOf } from '../../../lib/src/clock';
import { redactSpec } from '../../../lib/src/redact';
import { endpointViews } from '../reconcile/link-pass';
import { aggregateLinkStatus } from '../reconcile/link-status';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import { ADDRESSES_VERIFIED } from '../sync/address-verification';

export class FleetViews {
  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
  ) {}

  /** The agent as returned by the API: persisted record plus run-time status. */
  agentView(name: string): Agent | undefined {
    const e = this.cache.agents.get(name);
    if (!e) return undefined;
    const leaseMs = this.fleet.opts.leaseMs;
    const rt = this.fleet.runtimes.get(name);
    const phase = this.fleet.agentPhase(name);
    const now = new Date();
    const hb = rt ? wallTimeOf(rt.lastHeartbeat) : undefined;
    const ready: Condition =
      phase === AgentPhase.AGENT_PHASE_NOT_READY
        ? {
            type: 'Ready',
            status: ConditionStatus.CONDITION_STATUS_UNKNOWN,
            reason: rt?.session ? 'LeaseExpired' : 'NotConnected',
            message: `no heartbeat for ${Math.round((monotonicMs() - (rt?.lastHeartbeat ?? this.fleet.startedAt)) / 1000)}s (lease ${leaseMs / 1000}s); check the agent process and its --controller address`,
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
        leaseDuration: durationOfMs(leaseMs),
        conditions,
        ackedVersion: rt?.ackedVersion ?? 0n,
      },
    };
  }

  /** Selector labels of an agent: its own plus the synthetic vop.dev/* ones once it registered. */
  agentLabels(a: Agent): Record<string, string> {
    return this.fleet.runtimes.get(a.meta?.name ?? '')?.labels ?? a.meta?.labels ?? {};
  }

  linkView(name: string): Link | undefined {
    const e = this.cache.links.get(name);
    if (!e) return undefined;
    return {
      ...e.obj,
      // Write-only fields (a stream link's secret) never leave the controller (lib/src/redact.ts).
      spec: redactSpec(e.obj.spec),
      status:
        this.fleet.linkStatus.get(name) ??
        aggregateLinkStatus(e.obj, endpointViews(this.cache, this.fleet, e.obj), undefined, new Date()),
    };
  }

  policyView(name: string): LinkPolicy | undefined {
    const e = this.cache.policies.get(name);
    if (!e) return undefined;
    const st = this.fleet.policyStatus.get(name);
    if (!st) return { ...e.obj, status: { observedGeneration: 0n, matchedPairs: 0, links: [], conditions: [] } };
    const ready = st.links.filter((ln) => this.fleet.linkStatus.get(ln)?.phase === LinkPhase.LINK_PHASE_READY).length;
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
}
