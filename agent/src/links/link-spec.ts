/**
 * Spec comparison and the checks that only this agent can make (on top of the shared
 * validateLink): the link must name this agent, use a transport it serves, carry devices
 * it has backends for, and name host paths only under the roots its operator allowed.
 */
import { LinkSpec, type Link } from '../../../lib/gen/vop/types/v1/types';
import { failedPrecondition, ViolationList } from '../../../lib/src/errors';
import { devIdOf, deviceKindName, roleName, type BackendRegistry } from './device-backend';
import type { HostPathPolicy } from './path-policy';

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  }
  return v;
}

/** Canonical JSON of a spec: equal strings mean equal desired state. */
export function specKey(spec: LinkSpec | undefined): string {
  return JSON.stringify(canonical(LinkSpec.toJSON(spec ?? { endpoints: [], transport: undefined, devices: [] })));
}

export function specEqual(a: LinkSpec | undefined, b: LinkSpec | undefined): boolean {
  return specKey(a) === specKey(b);
}

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
  if (link.spec.transport?.kind && link.spec.transport.kind.$case !== 'shm') {
    v.add(
      `${field}.spec.transport`,
      `transport ${link.spec.transport.kind.$case} is not supported by this agent; it serves shm`,
    );
  }
  const ids = new Map<number, string>();
  link.spec.devices.forEach((d, i) => {
    const kind = deviceKindName(d);
    if (kind && !backends.get(kind))
      v.add(`${field}.spec.devices[${i}]`, `device kind ${kind} has no backend on this agent`);
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
