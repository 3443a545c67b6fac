/**
 * The `links` pass: what the two endpoint agents report about a link (registered, lease, applied
 * generation, rejection, observed status) aggregated into the link's status (link-status.ts).
 * A status that changed in anything but timestamps is stored in the fleet state and published to
 * watchers; an unchanged one is not.
 */
import { WatchEventType, type Link } from '../../../lib/proto/types';
import { linkStatusEqual } from '../../../lib/src/status-equal';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import { aggregateLinkStatus, type EndpointView } from './link-status';

/** Each endpoint of a link as its agent reports it. */
export function endpointViews(cache: ObjectCache, fleet: FleetState, link: Link): EndpointView[] {
  const name = link.meta?.name ?? '';
  const gen = link.meta?.generation ?? 0n;
  return (link.spec?.endpoints ?? []).map((ep) => {
    const rt = fleet.runtimes.get(ep.agent);
    const registered = cache.agents.has(ep.agent) && rt !== undefined;
    return {
      agent: ep.agent,
      role: ep.role,
      registered,
      leaseValid: registered && fleet.leaseValid(ep.agent),
      applied: (rt?.applied.get(name) ?? -1n) >= gen,
      rejected: rt?.rejected.get(name),
      observed: rt?.observed.get(name),
    };
  });
}

export class LinkPass {
  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
  ) {}

  async reconcile(name: string): Promise<void> {
    const e = this.cache.links.get(name);
    if (!e) {
      this.fleet.linkStatus.delete(name);
      return;
    }
    const prev = this.fleet.linkStatus.get(name);
    const next = aggregateLinkStatus(e.obj, endpointViews(this.cache, this.fleet, e.obj), prev, new Date());
    if (!linkStatusEqual(prev, next)) {
      this.fleet.linkStatus.set(name, next);
      this.cache.publish('link', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    }
  }
}
