/**
 * Spec comparison and the checks that only this agent can make (on top of the shared
 * validateLink): the link must name this agent, use a transport it serves, carry devices
 * it has backends for, and name host paths only under the roots its operator allowed.
 */
import type { Link, LinkSpec } from '../../../lib/proto/types';
import { failedPrecondition, ViolationList } from '../../../lib/src/errors';
import { linkSpecEqual } from '../../../lib/src/proto-equal';
import { devIdOf, deviceKindName, roleName, type BackendRegistry } from '../backends/device-backend';
import { BLK_ENTRIES_PER_REQUEST } from '../native/device-config';
import type { HostPathPolicy } from './path-policy';

/** Same desired state: the one definition agent and controller share (lib/src/proto-equal.ts). */
export const specEqual = linkSpecEqual;

export function mapEqual(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/**
 * INVALID_ARGUMENT for what this agent cannot carry (host paths outside their roots
 * included: a lexical check, see HostPathPolicy.checkFilesystem for the rest);
 * FAILED_PRECONDITION when the link is not ours.
 */
export function checkLinkForAgent(
  link: Link & { spec: LinkSpec },
  nodeName: string,
  backends: BackendRegistry,
  paths: HostPathPolicy,
  field = 'link',
): void {
  const mine = link.spec.endpoints.filter((e) => e.agent === nodeName);
  if (mine.length === 0) {
    throw failedPrecondition(
      'LINK_NOT_FOR_THIS_AGENT',
      `link "${link.meta?.name ?? ''}" names agents ${link.spec.endpoints.map((e) => `"${e.agent}"`).join(' and ')}, not this agent "${nodeName}"`,
      {
        link: link.meta?.name ?? '',
        agent: nodeName,
      },
    );
  }
  const v = new ViolationList();
  const tk = link.spec.transport?.kind?.$case;
  if (tk && tk !== 'shm' && tk !== 'vhostUser' && tk !== 'stream' && tk !== 'pciBar') {
    v.add(
      `${field}.spec.transport`,
      `transport ${tk} is not supported by this agent; it serves shm, pci_bar, vhost_user and stream`,
    );
  }
  const ids = new Map<number, string>();
  link.spec.devices.forEach((d, i) => {
    const kind = deviceKindName(d);
    if (kind && !backends.get(kind))
      v.add(`${field}.spec.devices[${i}]`, `device kind ${kind} has no backend on this agent`);
    // A blk request takes up to 4 ring entries: a smaller queue could not carry one.
    if (kind === 'blk' && d.queueSize !== 0 && d.queueSize < BLK_ENTRIES_PER_REQUEST)
      v.add(
        `${field}.spec.devices[${i}].queue_size`,
        `${d.queueSize} is too small for a blk device: a request takes up to ${BLK_ENTRIES_PER_REQUEST} entries, so at least ${BLK_ENTRIES_PER_REQUEST}`,
      );
    const id = devIdOf(d.name);
    const other = ids.get(id);
    if (other !== undefined && other !== d.name)
      v.add(
        `${field}.spec.devices[${i}].name`,
        `device name "${d.name}" collides with "${other}" in the device table; rename one`,
      );
    ids.set(id, d.name);
  });
  const role = mine[0]?.role;
  if (role !== undefined) paths.checkSpec(v, link.spec, roleName(role), link.meta?.name ?? '', `${field}.spec`);
  v.throwIfAny();
  // This agent's own policy for the roles it plays (FAILED_PRECONDITION, e.g. NBD over TCP without TLS).
  const roles = new Set(mine.map((e) => roleName(e.role)));
  link.spec.devices.forEach((d, i) => {
    const kind = deviceKindName(d);
    const backend = kind ? backends.get(kind) : undefined;
    for (const r of roles) backend?.admit?.(d, r, `${field}.spec.devices[${i}]`);
  });
}
