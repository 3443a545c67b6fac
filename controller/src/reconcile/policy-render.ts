/**
 * Pure functions that turn a LinkPolicy, the registered agents and the links the policy has now
 * into the links it stamps out. Pairing (LinkPolicySpec.pairing, docs/controller.md "Policies"):
 *   - host_node (the default): a card (role card or vm) pairs with the host whose node name equals
 *     the card's identity.host_node, both matching the policy's selectors. Link name
 *     "<policy>-<card>", a DNS label (truncated + hashed when longer than 63).
 *   - peer: every driver agent (peer.driver_selector) gets one stream link to one device agent
 *     (peer.device_selector): the one its stored link has, else the least loaded, rendezvous
 *     hashing breaking ties (peerPairs). Link name "<policy>-<driver>-<device>".
 *   - agent_pairs: one stream link per listed (device, driver) pair, same names.
 * A template of transport vhost_user stamps out a link with ONE endpoint, the host in the device
 * role (it serves the VM's QEMU over vhost-user); "{node}" in its socket_path becomes the card's
 * (VM's) node name, so each VM gets its own socket.
 */
import { createHash } from 'node:crypto';

import {
  NodeRole,
  Role,
  type Agent,
  type ExplicitPairing,
  type Link,
  type LinkPolicy,
  type PciBarAccess,
  type PeerPairing,
  type Transport,
} from '../../../lib/proto/types';
import { selectorMatches } from '../../../lib/src/selector';
import {
  LABEL_DEVICE_AGENT,
  LABEL_DRIVER_AGENT,
  LABEL_HOST,
  LABEL_NODE,
  LABEL_POLICY,
  LABEL_RACK,
} from '../state/agent-labels';

/** Code-unit order (names are ASCII DNS labels): the same on every controller, whatever its locale. */
const byCodeUnit = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

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
  /** The card (host_node pairing) or the driver side agent (peer, agent_pairs). */
  readonly card: string;
  /** The host (host_node pairing) or the device side agent (peer, agent_pairs). */
  readonly host: string;
  readonly link: Link;
}

export interface RenderInput {
  readonly policy: LinkPolicy;
  /** Agents by name, with their selector labels. */
  readonly agents: ReadonlyMap<string, { readonly agent: Agent; readonly labels: Record<string, string> }>;
  /** Links that exist now (a cordoned agent keeps its existing links, gets no new ones). */
  readonly existing: (name: string) => boolean;
  /** The links this policy manages now (peer and agent_pairs keep their pairs and names). */
  readonly owned?: readonly Link[];
  /**
   * Peer pairing: true for an agent that takes no more links (it holds maxLinksPerAgent). A new
   * driver is placed on another device agent instead of being refused there.
   */
  readonly full?: (agent: string, planned: number) => boolean;
}

/** What a render stamps out, and what it could not place (for the policy's Applied condition). */
export interface RenderPlan {
  readonly links: RenderedLink[];
  /** Peer pairing: selected driver agents (not cordoned) for which no device agent was eligible. */
  readonly unpaired: readonly string[];
  /** agent_pairs: listed pairs with an agent that has not registered. */
  readonly waiting: number;
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
  // A template carries no secret (validatePolicy refuses it; a policy stored before that rule
  // may hold one): each link keeps its own or gets a generated one (stream-endpoints.ts).
  if (t?.kind?.$case === 'stream' && t.kind.value.secret !== '')
    return { kind: { $case: 'stream', value: { ...t.kind.value, secret: '' } } };
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
  return renderPolicyPlan(input).links;
}

export function renderPolicyPlan(input: RenderInput): RenderPlan {
  const pairing = input.policy.spec?.pairing;
  if (pairing?.$case === 'peer' || pairing?.$case === 'agentPairs') return renderPairs(input);
  return { links: renderHostNode(input), unpaired: [], waiting: 0 };
}

/** The stamped-out links of a peer or agent_pairs policy. */
function renderPairs(input: RenderInput): RenderPlan {
  const { policy, agents } = input;
  const name = policy.meta?.name ?? '';
  const tpl = policy.spec?.template;
  const pairing = policy.spec?.pairing;
  if (!tpl || !pairing) return { links: [], unpaired: [], waiting: 0 };
  const owned = input.owned ?? [];
  let pairs: [string, string][];
  let unpaired: readonly string[] = [];
  let waiting = 0;
  if (pairing.$case === 'peer')
    ({ pairs, unpaired } = peerPairs(name, pairing.value, agents, owned, input.full ?? (() => false)));
  else if (pairing.$case === 'agentPairs') ({ pairs, waiting } = explicitPairs(pairing.value, agents, owned));
  else return { links: [], unpaired: [], waiting: 0 };
  const names = nameLinks(name, pairs, owned);
  const links = pairs.map(([dev, drv]): RenderedLink => {
    const linkName = names.get(`${dev}/${drv}`) as string;
    return {
      name: linkName,
      card: drv,
      host: dev,
      link: {
        meta: {
          name: linkName,
          labels: { ...tpl.labels, [LABEL_POLICY]: name, [LABEL_DEVICE_AGENT]: dev, [LABEL_DRIVER_AGENT]: drv },
          annotations: {},
          generation: 0n,
          resourceVersion: '',
          createTime: undefined,
          updateTime: undefined,
          managedBy: managedByPolicy(name),
        },
        spec: {
          endpoints: [
            { agent: dev, role: Role.ROLE_DEVICE },
            { agent: drv, role: Role.ROLE_DRIVER },
          ],
          transport: transportFor(tpl.transport, { card: drv, host: dev, slot: 0 }),
          devices: tpl.devices,
        },
        status: undefined,
      },
    };
  });
  links.sort((a, b) => byCodeUnit(a.name, b.name));
  return { links, unpaired, waiting };
}

/**
 * The name of a peer or explicit pairing's link: "<policy>-<driver>-<device>" (a DNS label,
 * truncated + hashed like policyLinkName). `disambiguate`: the form for a pair whose plain name
 * another pair of the same policy already has ("a-b" + "c" and "a" + "b-c"): a prefix plus a hash
 * of policy/driver/device, which no other pair shares.
 */
export function pairLinkName(policy: string, driver: string, device: string, disambiguate = false): string {
  if (!disambiguate) return policyLinkName(policy, `${driver}-${device}`);
  const hash = createHash('sha256').update(`${policy}/${driver}/${device}`).digest('hex').slice(0, 8);
  return `${`${policy}-${driver}-${device}`.slice(0, 54).replace(/-+$/, '')}-${hash}`;
}

/** Rendezvous (highest random weight) score of a device agent for a driver agent in a policy. */
function hrw(policy: string, driver: string, device: string): string {
  return createHash('sha256').update(`${policy}/${driver}/${device}`).digest('hex');
}

type AgentEntry = RenderInput['agents'] extends ReadonlyMap<string, infer E> ? E : never;

const cordoned = (e: AgentEntry): boolean => e.agent.spec?.unschedulable ?? false;

/** [device, driver] of a two-endpoint link. */
function pairOf(l: Link): [string, string] | undefined {
  const eps = l.spec?.endpoints ?? [];
  const dev = eps.find((e) => e.role === Role.ROLE_DEVICE)?.agent;
  const drv = eps.find((e) => e.role === Role.ROLE_DRIVER)?.agent;
  return eps.length === 2 && dev !== undefined && drv !== undefined ? [dev, drv] : undefined;
}

/**
 * Peer pairing: every selected driver agent with one selected device agent. A driver keeps the
 * device its link has (still selected and registered, not itself); a driver without one gets the
 * uncordoned device (with room under maxLinksPerAgent) holding the fewest links of this policy,
 * ties broken by rendezvous hashing.
 * Drivers are placed in name order, so the result depends only on the agents and the stored links.
 */
function peerPairs(
  policy: string,
  peer: PeerPairing,
  agents: RenderInput['agents'],
  owned: readonly Link[],
  full: (agent: string, planned: number) => boolean,
): { pairs: [string, string][]; unpaired: string[] } {
  const sel = (s: PeerPairing['deviceSelector']): string[] =>
    [...agents]
      .filter(([, e]) => e.agent.status?.identity !== undefined && selectorMatches(s, e.labels))
      .map(([n]) => n)
      .sort();
  const devices = sel(peer.deviceSelector);
  const drivers = sel(peer.driverSelector);
  const deviceSet = new Set(devices);
  const load = new Map<string, number>(devices.map((d) => [d, 0]));
  // The device each driver's stored link has (the first by link name when there are several).
  const current = new Map<string, string>();
  for (const l of [...owned].sort((x, y) => byCodeUnit(x.meta?.name ?? '', y.meta?.name ?? ''))) {
    const p = pairOf(l);
    if (p && deviceSet.has(p[0]) && p[0] !== p[1] && !current.has(p[1])) current.set(p[1], p[0]);
  }
  const pairs: [string, string][] = [];
  const open: string[] = [];
  for (const drv of drivers) {
    const dev = current.get(drv);
    if (dev === undefined) open.push(drv);
    else {
      pairs.push([dev, drv]);
      load.set(dev, (load.get(dev) ?? 0) + 1);
    }
  }
  const unpaired: string[] = [];
  /** New links placed on each device agent in this render. */
  const planned = new Map<string, number>();
  for (const drv of open) {
    const de = agents.get(drv);
    if (!de || cordoned(de)) continue; // a cordoned agent gets no new link (not a failure)
    let best: string | undefined;
    let bestLoad = 0;
    let bestScore = '';
    for (const d of devices) {
      const e = agents.get(d);
      if (d === drv || !e || cordoned(e) || full(d, (planned.get(d) ?? 0) + 1)) continue;
      const n = load.get(d) ?? 0;
      const score = hrw(policy, drv, d);
      if (best === undefined || n < bestLoad || (n === bestLoad && score > bestScore)) {
        best = d;
        bestLoad = n;
        bestScore = score;
      }
    }
    if (best === undefined) {
      unpaired.push(drv);
      continue;
    }
    pairs.push([best, drv]);
    load.set(best, bestLoad + 1);
    planned.set(best, (planned.get(best) ?? 0) + 1);
  }
  return { pairs, unpaired };
}

/** Explicit pairing: the listed pairs whose agents are both registered (a cordoned one: no new link). */
function explicitPairs(
  list: ExplicitPairing,
  agents: RenderInput['agents'],
  owned: readonly Link[],
): { pairs: [string, string][]; waiting: number } {
  const have = new Set(owned.map((l) => pairOf(l)).map((p) => (p ? `${p[0]}/${p[1]}` : '')));
  const pairs: [string, string][] = [];
  let waiting = 0;
  for (const p of list.pairs) {
    const dev = agents.get(p.device);
    const drv = agents.get(p.driver);
    if (!dev?.agent.status?.identity || !drv?.agent.status?.identity) {
      waiting++;
      continue;
    }
    if ((cordoned(dev) || cordoned(drv)) && !have.has(`${p.device}/${p.driver}`)) continue;
    pairs.push([p.device, p.driver]);
  }
  return { pairs, waiting };
}

/** Names for [device, driver] pairs: a stored link keeps its name; a clash gets the hashed form. */
function nameLinks(policy: string, pairs: readonly [string, string][], owned: readonly Link[]): Map<string, string> {
  const ownedName = new Map<string, string>();
  for (const l of owned) {
    const p = pairOf(l);
    const n = l.meta?.name ?? '';
    if (p && (n === pairLinkName(policy, p[1], p[0]) || n === pairLinkName(policy, p[1], p[0], true)))
      ownedName.set(`${p[0]}/${p[1]}`, n);
  }
  const out = new Map<string, string>();
  const taken = new Set<string>();
  for (const [dev, drv] of pairs) {
    const n = ownedName.get(`${dev}/${drv}`);
    if (n !== undefined && !taken.has(n)) {
      out.set(`${dev}/${drv}`, n);
      taken.add(n);
    }
  }
  const rest = pairs
    .filter(([dev, drv]) => !out.has(`${dev}/${drv}`))
    .sort((a, b) => byCodeUnit(`${a[1]}/${a[0]}`, `${b[1]}/${b[0]}`));
  for (const [dev, drv] of rest) {
    let n = pairLinkName(policy, drv, dev);
    if (taken.has(n)) n = pairLinkName(policy, drv, dev, true);
    out.set(`${dev}/${drv}`, n);
    taken.add(n);
  }
  return out;
}

function renderHostNode(input: RenderInput): RenderedLink[] {
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
