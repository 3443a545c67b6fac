/**
 * The labels selectors see for an agent: its own labels plus the synthetic vop.dev/* ones derived
 * from its identity (node, rack, slot, role, host), and the vop.dev/* labels stamped on links.
 */
import { NodeRole, type AgentIdentity } from '../../../lib/proto/types';

export const LABEL_NODE = 'vop.dev/node';
export const LABEL_RACK = 'vop.dev/rack';
export const LABEL_SLOT = 'vop.dev/slot';
export const LABEL_ROLE = 'vop.dev/role';
export const LABEL_HOST = 'vop.dev/host';
/** Stamped on every link a policy creates. */
export const LABEL_POLICY = 'vop.dev/policy';
/** Stamped on a link of peer or agent_pairs pairing: its device side agent. */
export const LABEL_DEVICE_AGENT = 'vop.dev/device-agent';
/** Stamped on a link of peer or agent_pairs pairing: its driver side agent. */
export const LABEL_DRIVER_AGENT = 'vop.dev/driver-agent';
/** Annotation on a link adopted from an agent's report after the store was lost (api/adopt.ts): the agent. */
export const ADOPTED_ANNOTATION = 'vop.dev/adopted';

const ROLE_NAME: Record<number, string> = {
  [NodeRole.NODE_ROLE_HOST]: 'host',
  [NodeRole.NODE_ROLE_CARD]: 'card',
  [NodeRole.NODE_ROLE_VM]: 'vm',
};

/** Labels selectors see: the agent's own labels plus the synthetic vop.dev/* ones. */
export function agentLabels(id: AgentIdentity): Record<string, string> {
  const out: Record<string, string> = {
    ...id.labels,
    [LABEL_NODE]: id.nodeName,
    [LABEL_ROLE]: ROLE_NAME[id.role] ?? 'unspecified',
  };
  if (id.rack !== '') out[LABEL_RACK] = id.rack;
  out[LABEL_SLOT] = String(id.slot);
  if (id.hostNode !== '') out[LABEL_HOST] = id.hostNode;
  return out;
}
