/**
 * Pure functions that turn a LinkPolicy and the registered agents into the links it
 * stamps out. Pairing rule: a card (role card or vm) pairs with the host whose node
 * name equals the card's identity.host_node, both matching the policy's selectors.
 * Link name: "<policy>-<card>", a DNS label (truncated + hashed when longer than 63).
 * A template of transport vhost_user stamps out a link with ONE endpoint, the host in the device
 * role (it serves the VM's QEMU over vhost-user); "{node}" in its socket_path becomes the card's
 * (VM's) node name, so each VM gets its own socket.
 */
import { createHash } from 'node:crypto';

import {
  NodeRole,
  Role,
  type Agent,
  type Link,
  type LinkPolicy,
  type PciBarAccess,
  type Transport,
} from '../../../lib/proto/types';
import { selectorMatches } from '../../../lib/src/selector';
import { LABEL_HOST, LABEL_NODE, LABEL_POLICY, LABEL_RACK } from '../state/agent-labels';

/** "<policy>-<card>" as a DNS label; names longer than 63 become a prefix plus an 8-hex hash. */
export function policyLinkName(policy: string, card: string): string {
  const full = `${policy}-${card}`;
  if (full.length <= 63) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  return `${full.slice(0, 54).replace(/-+$/, '')}-${hash}`;
}

export function managedByPolicy(policy: string): string {
  return `policy/${policy}`;
}

export interface RenderedLink {
  readonly name: string;
  readonly card: string;
  readonly host: string;
  readonly link: Link;
}

export interface RenderInput {
  readonly policy: LinkPolicy;
  /** Agents by name, with their selector labels. */
  readonly agents: ReadonlyMap<string, { readonly agent: Agent; readonly labels: Record<string, string> }>;
  /** Links that exist now (a cordoned agent keeps its existing links, gets no new ones). */
  readonly existing: (name: string) => boolean;
}

/**
 * The template's transport for one pair. A pci-bar template names per-card resources with
 * placeholders in its access paths: `{card}` (the card's node name), `{host}` and `{slot}` in
 * ivshmem_socket, bar_path and doorbell_path (e.g. one ivshmem server socket per card on the host).
 */
export function transportFor(
  t: Transport | undefined,
  vars: { card: string; host: string; slot: number },
): Transport | undefined {
  if (t?.kind?.$case !== 'pciBar') return t;
  const sub = (s: string): string =>
    s.replaceAll('{card}', vars.card).replaceAll('{host}', vars.host).replaceAll('{slot}', String(vars.slot));
  const access = (a: PciBarAccess | undefined): PciBarAccess | undefined =>
    a && { ...a, ivshmemSocket: sub(a.ivshmemSocket), barPath: sub(a.barPath), doorbellPath: sub(a.doorbellPath) };
  const v = t.kind.value;
  return {
    kind: {
      $case: 'pciBar',
      value: { ...v, deviceAccess: access(v.deviceAccess), driverAccess: access(v.driverAccess) },
    },
  };
}

/** The spec of one stamped-out link: two endpoints, or the host alone for vhost_user. */
function renderSpec(
  tpl: NonNullable<NonNullable<LinkPolicy['spec']>['template']>,
  host: string,
  card: string,
  hostRole: Role,
  cardRole: Role,
  slot: number,
): NonNullable<Link['spec']> {
  const t = tpl.transport?.kind;
  if (t?.$case === 'vhostUser')
    return {
      endpoints: [{ agent: host, role: Role.ROLE_DEVICE }],
      transport: {
        kind: { $case: 'vhostUser', value: { ...t.value, socketPath: t.value.socketPath.replaceAll('{node}', card) } },
      },
      devices: tpl.devices,
    };
  return {
    endpoints: [
      { agent: host, role: hostRole },
      { agent: card, role: cardRole },
    ],
    transport: transportFor(tpl.transport, { card, host, slot }),
    devices: tpl.devices,
  };
}

export function renderPolicy(input: RenderInput): RenderedLink[] {
  const { policy, agents } = input;
  const spec = policy.spec;
  const name = policy.meta?.name ?? '';
  const tpl = spec?.template;
  if (!spec || !tpl) return [];
  const cardRole = tpl.cardRole === Role.ROLE_UNSPECIFIED ? Role.ROLE_DRIVER : tpl.cardRole;
  const hostRole = cardRole === Role.ROLE_DEVICE ? Role.ROLE_DRIVER : Role.ROLE_DEVICE;
  const out: RenderedLink[] = [];
  for (const [cardName, card] of agents) {
    const id = card.agent.status?.identity;
    if (!id || (id.role !== NodeRole.NODE_ROLE_CARD && id.role !== NodeRole.NODE_ROLE_VM) || id.hostNode === '')
      continue;
    if (!selectorMatches(spec.cardSelector, card.labels)) continue;
    const host = agents.get(id.hostNode);
    const hid = host?.agent.status?.identity;
    if (!host || !hid || hid.role !== NodeRole.NODE_ROLE_HOST) continue;
    if (!selectorMatches(spec.hostSelector, host.labels)) continue;
    const linkName = policyLinkName(name, cardName);
    const cordoned = (card.agent.spec?.unschedulable ?? false) || (host.agent.spec?.unschedulable ?? false);
    if (cordoned && !input.existing(linkName)) continue;
    out.push({
      name: linkName,
      card: cardName,
      host: id.hostNode,
      link: {
        meta: {
          name: linkName,
          labels: {
            ...tpl.labels,
            [LABEL_POLICY]: name,
            [LABEL_RACK]: id.rack,
            [LABEL_NODE]: cardName,
            [LABEL_HOST]: id.hostNode,
          },
          annotations: {},
          generation: 0n,
          resourceVersion: '',
          createTime: undefined,
          updateTime: undefined,
          managedBy: managedByPolicy(name),
        },
        spec: renderSpec(tpl, id.hostNode, cardName, hostRole, cardRole, id.slot),
        status: undefined,
      },
    });
  }
  return out;
}
