/**
 * What the controller sends each agent. The `agents` pass: the links an agent should run (every
 * link with an endpoint on it; none once it is drained), in the form the agent receives them, and
 * delivered to its Sync stream as one DesiredLinks version: a full snapshot after a (re)connect or
 * drift, else a delta of what changed since the last version. Idempotent: a pass that finds
 * nothing to send sends nothing.
 */
import type { Link } from '../../../lib/proto/types';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import type { FleetState } from '../state/fleet-state';
import { emptyMeta, type ObjectCache } from '../state/object-cache';
import type { WorkQueues } from './work-queues';

/** Links the agent should run now, by name. A drained agent should run none. */
export function desiredLinksFor(cache: ObjectCache, fleet: FleetState, agent: string): Map<string, Link> {
  const out = new Map<string, Link>();
  if (cache.agents.get(agent)?.obj.spec?.drain) return out;
  for (const ln of fleet.linksOf(agent)) {
    const e = cache.links.get(ln);
    if (e) out.set(ln, e.obj);
  }
  return out;
}

/** A link as an agent receives it: meta and spec, managed by its owner, without store bookkeeping. */
export function agentLink(l: Link): Link {
  return {
    meta: {
      ...(l.meta ?? emptyMeta('')),
      managedBy: l.meta?.managedBy || 'controller',
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
    },
    spec: l.spec,
    status: undefined,
  };
}

export class DesiredPush {
  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
    private readonly queues: WorkQueues,
    private readonly metrics: ControllerMetrics,
  ) {}

  /** The agents pass for one agent: sends what changed since the last version (or everything). */
  async reconcile(name: string): Promise<void> {
    const rt = this.fleet.runtimes.get(name);
    if (!rt?.session) return;
    // The agent applied desired state from another store (or a newer copy of this one): it holds
    // its links; nothing is sent until an operator adopts it (and it would apply nothing anyway).
    if (rt.storeConflict) return;
    const desired = desiredLinksFor(this.cache, this.fleet, name);
    const upserts: Link[] = [];
    const deletes: string[] = [];
    const carried = new Map<string, bigint>();
    const full = rt.needsFull;
    for (const [ln, l] of desired) {
      const gen = l.meta?.generation ?? 0n;
      if (full || rt.sent.get(ln) !== gen) {
        upserts.push(agentLink(l));
        carried.set(ln, gen);
      }
    }
    if (!full) for (const ln of rt.sent.keys()) if (!desired.has(ln)) deletes.push(ln);
    // The agent removes links in this order: where it is the driver side first (its
    // users see the device go away before the backend does), then by name (drain order).
    const role = (ln: string): number => rt.sentRoles.get(ln) ?? 0;
    deletes.sort((a, b) => role(b) - role(a) || (a < b ? -1 : a > b ? 1 : 0));
    if (!full && upserts.length === 0 && deletes.length === 0) return;
    const version = rt.sentVersion + 1n;
    rt.sentVersion = version;
    rt.needsFull = false;
    rt.sent.clear();
    for (const [ln, l] of desired) {
      rt.sent.set(ln, l.meta?.generation ?? 0n);
      const r = l.spec?.endpoints.find((e) => e.agent === name)?.role;
      if (r !== undefined) rt.sentRoles.set(ln, r);
    }
    for (const ln of deletes) rt.sentRoles.delete(ln);
    rt.inflight.set(version, carried);
    for (const ln of deletes) {
      rt.applied.delete(ln);
      rt.rejected.delete(ln);
    }
    const id = this.cache.identity();
    rt.session.sendDesired({
      version,
      fullSnapshot: full,
      upserts,
      deletes,
      storeIdentity: { clusterId: id.clusterId, generation: id.generation },
      adopt: rt.adopted,
    });
    this.metrics.desiredPushes.inc({ kind: full ? 'snapshot' : 'delta' });
    for (const ln of carried.keys()) this.queues.links.add(ln);
  }
}
