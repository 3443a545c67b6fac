/**
 * Prometheus HTTP service discovery (http_sd_configs): every registered agent's
 * metrics address as a target group, with its identity as __meta_vop_* labels so
 * that one scrape config finds the fleet as it grows. Served at /sd/agents on the
 * controller's metrics port. Agents without a verified metrics address are skipped: a
 * registered address is published only when it matches the agent's certificate or the
 * address its Sync stream comes from (fleet/address-verification.ts), so a card cannot
 * point Prometheus at another host's port.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import { AgentPhase, NodeRole, type Agent } from '../../../lib/proto/types';
import type { RouteHandler } from '../../../lib/src/metrics';
import { usableAddress } from '../sync/address-verification';

export const HTTP_SD_PATH = '/sd/agents';

export interface TargetGroup {
  readonly targets: string[];
  readonly labels: Record<string, string>;
}

const ROLE_NAMES: Record<NodeRole, string> = {
  [NodeRole.NODE_ROLE_UNSPECIFIED]: '',
  [NodeRole.NODE_ROLE_HOST]: 'host',
  [NodeRole.NODE_ROLE_CARD]: 'card',
  [NodeRole.NODE_ROLE_VM]: 'vm',
  [NodeRole.UNRECOGNIZED]: '',
};

const PHASE_NAMES: Record<AgentPhase, string> = {
  [AgentPhase.AGENT_PHASE_UNSPECIFIED]: 'Unknown',
  [AgentPhase.AGENT_PHASE_READY]: 'Ready',
  [AgentPhase.AGENT_PHASE_NOT_READY]: 'NotReady',
  [AgentPhase.AGENT_PHASE_DRAINING]: 'Draining',
  [AgentPhase.AGENT_PHASE_DRAINED]: 'Drained',
  [AgentPhase.UNRECOGNIZED]: 'Unknown',
};

/** One target group per agent, sorted by node name for stable output. */
export function targetGroups(agents: Iterable<Agent>): TargetGroup[] {
  const groups: TargetGroup[] = [];
  for (const a of agents) {
    const st = a.status;
    const { address: addr, problem } = usableAddress(a, 'metrics');
    if (!st || problem !== null || addr === '') continue;
    const id = st.identity;
    const name = a.meta?.name ?? id?.nodeName ?? '';
    const labels: Record<string, string> = {
      __meta_vop_node: name,
      __meta_vop_rack: id?.rack ?? '',
      __meta_vop_slot: String(id?.slot ?? 0),
      __meta_vop_role: id ? ROLE_NAMES[id.role] : '',
      __meta_vop_phase: PHASE_NAMES[st.phase],
      __meta_vop_cordoned: String(a.spec?.unschedulable ?? false),
    };
    if (id?.hostNode) labels.__meta_vop_host = id.hostNode;
    groups.push({ targets: [addr], labels });
  }
  return groups.sort((x, y) => (x.labels.__meta_vop_node ?? '').localeCompare(y.labels.__meta_vop_node ?? ''));
}

export function httpSdRoute(agents: () => Iterable<Agent>): RouteHandler {
  return (_req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(targetGroups(agents()));
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(body);
  };
}
