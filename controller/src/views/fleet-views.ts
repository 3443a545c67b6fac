/**
 * Agents, links and policies as the API returns them: the stored object (state/object-cache.ts)
 * with its observed status filled in from the fleet state (state/fleet-state.ts). Agent phase,
 * heartbeat and conditions are computed at read time from the lease; link and policy status are
 * what the reconcile passes last computed (a link no pass has seen yet gets its initial status).
 * Read-only: nothing here changes state.
 *
 * Only the leader observes the fleet (agents stream to it). A replica that does not lead serves
 * the stored objects as they are, with a status that says so: phase unspecified and one condition
 * `Observed=Unknown`, reason `NotObservedHere`, naming the leader to ask.
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
import { redactPolicy, redactSpec } from '../../../lib/src/redact';
import { endpointViews } from '../reconcile/link-pass';
import { aggregateLinkStatus } from '../reconcile/link-status';
import { agentLabels } from '../state/agent-labels';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import { ADDRESSES_VERIFIED } from '../sync/address-verification';

/** Which fleet state is current (the leader term's), and who leads. */
export interface Observer {
  /** The leader's fleet state; undefined on a replica that does not lead. */
  fleet(): FleetState | undefined;
  /** The leader's address as this replica knows it ("" while none is known). */
  leaderAddress(): string;
}

/** The agent condition of the store identity rule (lib/src/store-identity.ts). */
export const STORE_IDENTITY = 'StoreIdentity';

export class FleetViews {
  constructor(
    private readonly cache: ObjectCache,
    private readonly observer: Observer,
  ) {}

  private notObserved(what: string, generation: bigint): Condition {
    const leader = this.observer.leaderAddress();
    return {
      type: 'Observed',
      status: ConditionStatus.CONDITION_STATUS_UNKNOWN,
      reason: 'NotObservedHere',
      message: `this controller replica does not lead, and only the leader observes ${what}; ${leader !== '' ? `ask the leader at ${leader}` : 'no leader is elected right now'}`,
      observedGeneration: generation,
      lastTransitionTime: undefined,
    };
  }

  /** Names of the links with an endpoint on `agent` (the leader's index, else a scan). */
  linksOf(agent: string): string[] {
    const fleet = this.observer.fleet();
    if (fleet) return [...fleet.linksOf(agent)];
    const out: string[] = [];
    for (const [n, e] of this.cache.links) if (e.obj.spec?.endpoints.some((ep) => ep.agent === agent)) out.push(n);
    return out;
  }

  /** The agent as returned by the API: persisted record plus run-time status. */
  agentView(name: string): Agent | undefined {
    const e = this.cache.agents.get(name);
    if (!e) return undefined;
    const fleet = this.observer.fleet();
    if (!fleet) {
      const conditions: Condition[] = [this.notObserved('agents', e.obj.meta?.generation ?? 0n)];
      const addrs = e.obj.status?.conditions.find((c) => c.type === ADDRESSES_VERIFIED);
      if (addrs) conditions.push(addrs);
      return {
        meta: e.obj.meta,
        spec: e.obj.spec,
        status: {
          phase: AgentPhase.AGENT_PHASE_UNSPECIFIED,
          identity: e.obj.status?.identity,
          addresses: e.obj.status?.addresses,
          capabilities: e.obj.status?.capabilities,
          version: e.obj.status?.version ?? '',
          lastHeartbeatTime: undefined,
          leaseDuration: undefined,
          conditions,
          ackedVersion: 0n,
        },
      };
    }
    const leaseMs = fleet.opts.leaseMs;
    const rt = fleet.runtimes.get(name);
    const phase = fleet.agentPhase(name);
    const now = new Date();
    const hb = rt ? wallTimeOf(rt.lastHeartbeat) : undefined;
    const ready: Condition =
      phase === AgentPhase.AGENT_PHASE_NOT_READY
        ? {
            type: 'Ready',
            status: ConditionStatus.CONDITION_STATUS_UNKNOWN,
            reason: rt?.session ? 'LeaseExpired' : 'NotConnected',
            message: `no heartbeat for ${Math.round((monotonicMs() - (rt?.lastHeartbeat ?? fleet.startedAt)) / 1000)}s (lease ${leaseMs / 1000}s); check the agent process and its --controller address`,
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
    if (rt?.session && (rt.storeConflict || rt.adopted)) {
      conditions.push(
        rt.storeConflict
          ? {
              type: STORE_IDENTITY,
              status: ConditionStatus.CONDITION_STATUS_FALSE,
              reason: rt.storeConflict.reason,
              message: `${rt.storeConflict.message}; the agent keeps every link it runs and applies nothing from this store until an operator adopts it (vopctl adopt ${name})`,
              observedGeneration: e.obj.meta?.generation ?? 0n,
              lastTransitionTime: undefined,
            }
          : {
              type: STORE_IDENTITY,
              status: ConditionStatus.CONDITION_STATUS_TRUE,
              reason: 'Adopted',
              message: 'an operator adopted this agent: it accepts this store',
              observedGeneration: e.obj.meta?.generation ?? 0n,
              lastTransitionTime: undefined,
            },
      );
    }
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
    const fleetLabels = this.observer.fleet()?.runtimes.get(a.meta?.name ?? '')?.labels;
    if (fleetLabels) return fleetLabels;
    const id = a.status?.identity;
    return id ? agentLabels(id) : (a.meta?.labels ?? {});
  }

  linkView(name: string): Link | undefined {
    const e = this.cache.links.get(name);
    if (!e) return undefined;
    const fleet = this.observer.fleet();
    if (!fleet)
      return {
        ...e.obj,
        // Write-only fields never leave the controller, from a follower either (lib/src/redact.ts).
        spec: redactSpec(e.obj.spec),
        status: {
          phase: LinkPhase.LINK_PHASE_UNSPECIFIED,
          observedGeneration: 0n,
          conditions: [this.notObserved('link status', e.obj.meta?.generation ?? 0n)],
          devices: [],
          epoch: 0n,
          resetCount: 0,
          lastTransitionTime: undefined,
          endpointPhases: {},
          stream: undefined,
          transport: undefined,
        },
      };
    return {
      ...e.obj,
      // Write-only fields (a stream link's secret) never leave the controller (lib/src/redact.ts).
      spec: redactSpec(e.obj.spec),
      status:
        fleet.linkStatus.get(name) ??
        aggregateLinkStatus(e.obj, endpointViews(this.cache, fleet, e.obj), undefined, new Date()),
    };
  }

  policyView(name: string): LinkPolicy | undefined {
    const stored = this.cache.policies.get(name);
    if (!stored) return undefined;
    // Write-only: a template's stream secret never leaves the controller (lib/src/redact.ts).
    const e = { obj: redactPolicy(stored.obj) };
    const fleet = this.observer.fleet();
    if (!fleet)
      return {
        ...e.obj,
        status: {
          observedGeneration: 0n,
          matchedPairs: 0,
          links: [],
          conditions: [this.notObserved('policy status', e.obj.meta?.generation ?? 0n)],
        },
      };
    const st = fleet.policyStatus.get(name);
    if (!st) return { ...e.obj, status: { observedGeneration: 0n, matchedPairs: 0, links: [], conditions: [] } };
    const ready = st.links.filter((ln) => fleet.linkStatus.get(ln)?.phase === LinkPhase.LINK_PHASE_READY).length;
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
