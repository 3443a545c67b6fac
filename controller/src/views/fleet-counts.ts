/**
 * Point-in-time counts of the fleet for /metrics (vop_controller_agents, _links, _policies,
 * _sync_streams), read at scrape time (metrics/controller-metrics.ts calls them in collect()).
 */
import { AgentPhase, ConditionStatus, NodeRole, type Link } from '../../../lib/proto/types';
import type { FleetCounts } from '../metrics/controller-metrics';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';

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

/** Rack of the card (or VM) endpoint of a link, else of its first endpoint. */
function linkRack(cache: ObjectCache, l: Link): string {
  let rack: string | undefined;
  for (const ep of l.spec?.endpoints ?? []) {
    const id = cache.agents.get(ep.agent)?.obj.status?.identity;
    if (!id) continue;
    if (id.role === NodeRole.NODE_ROLE_CARD || id.role === NodeRole.NODE_ROLE_VM) return id.rack;
    rack ??= id.rack;
  }
  return rack ?? '';
}

/**
 * `fleet` is the leader's fleet state; a replica that does not lead observes no agent and no link
 * status, so it exports no agent or link counts (the leader's are the fleet's).
 */
export function fleetCounts(cache: ObjectCache, current: () => FleetState | undefined): FleetCounts {
  return {
    agents: () => {
      const fleet = current();
      if (!fleet) return [];
      const counts = new Map<string, number>();
      for (const [name, e] of cache.agents) {
        const k = `${e.obj.status?.identity?.rack ?? ''}\0${AGENT_PHASE_LABEL[fleet.agentPhase(name)] ?? 'NotReady'}`;
        counts.set(k, (counts.get(k) ?? 0) + 1);
      }
      return [...counts].map(([k, n]) => {
        const [rack, phase] = k.split('\0') as [string, string];
        return [rack, phase, n] as const;
      });
    },
    links: () => {
      const fleet = current();
      if (!fleet) return [];
      const counts = new Map<string, number>();
      for (const [name, e] of cache.links) {
        const rack = linkRack(cache, e.obj);
        const st = fleet.linkStatus.get(name);
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
    policies: () => cache.policies.size,
    syncStreams: () => current()?.sessionCount() ?? 0,
    storeConflicts: () => current()?.storeConflicts().length ?? 0,
  };
}
