/**
 * The `policies` pass: renders a LinkPolicy against the registered agents (policy-render.ts),
 * creates and updates the links it stamps out, deletes the ones it no longer wants, and records
 * the policy's status (Applied condition; the views add Ready). A link name held by a link the
 * policy does not manage is a conflict, and a new link on an agent already at maxLinksPerAgent is
 * not stamped; both show in the Applied condition.
 */
import {
  ConditionStatus,
  WatchEventType,
  type Agent,
  type Condition,
  type Link,
  type LinkPolicy,
} from '../../../lib/proto/types';
import type { Limits } from '../../../lib/src/limits';
import { ADOPTED_ANNOTATION } from '../state/agent-labels';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import type { StoreOp } from '../store/store';
import { StreamFillError } from '../state/stream-endpoints';
import { managedByPolicy, renderPolicyPlan } from './policy-render';

/** How the Applied message names a policy's pairs. */
function pairWord(p: LinkPolicy): string {
  const c = p.spec?.pairing?.$case;
  return c === 'peer' ? 'driver/device' : c === 'agentPairs' ? 'listed' : 'host/card';
}

export class PolicyPass {
  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
    /** maxLinksPerAgent bounds the links a policy stamps on one agent. */
    private readonly limits: Pick<Limits, 'maxLinksPerAgent'>,
  ) {}

  async reconcile(name: string): Promise<void> {
    const pe = this.cache.policies.get(name);
    const owned = this.fleet.linksOwnedBy(name);
    const want = new Map<string, Link>();
    let unpaired: readonly string[] = [];
    let waiting = 0;
    if (pe) {
      const agents = new Map<string, { agent: Agent; labels: Record<string, string> }>();
      for (const [an, ae] of this.cache.agents)
        agents.set(an, { agent: ae.obj, labels: this.fleet.runtimes.get(an)?.labels ?? {} });
      const ownedLinks = [...owned].flatMap((ln) => {
        const l = this.cache.links.get(ln)?.obj;
        return l ? [l] : [];
      });
      const plan = renderPolicyPlan({
        policy: pe.obj,
        agents,
        existing: (ln) => this.cache.links.has(ln),
        owned: ownedLinks,
        // Peer pairing places a new driver on a device agent with room (`planned` new links in this render).
        full: (a, planned) => this.fleet.linksOf(a).size + planned > this.limits.maxLinksPerAgent,
      });
      for (const r of plan.links) want.set(r.name, r.link);
      ({ unpaired, waiting } = plan);
    }
    let conflicts = 0;
    let overLimit = 0;
    /** Stream links the controller could not fill (no data-plane address, ports exhausted): the first reason. */
    let unfilled = 0;
    let unfilledWhy: StreamFillError | undefined;
    const releases: (() => void)[] = [];
    /** New links per agent planned in this pass, not yet in FleetState's index. */
    const pendingNew = new Map<string, number>();
    const max = this.limits.maxLinksPerAgent;
    // Every write of the pass goes to the store in as few commits as it takes (ObjectCache.commitMany).
    const ops: StoreOp[] = [];
    const now = new Date();
    for (const [ln, l] of want) {
      const cur = this.cache.links.get(ln);
      if (cur && (cur.obj.meta?.managedBy ?? '') !== managedByPolicy(name)) {
        conflicts++;
        continue;
      }
      const agentsOf = (l.spec?.endpoints ?? []).map((ep) => ep.agent);
      // A new link on an agent that already holds maxLinksPerAgent links is not stamped.
      if (!cur && agentsOf.some((a) => this.fleet.linksOf(a).size + (pendingNew.get(a) ?? 0) >= max)) {
        overLimit++;
        want.delete(ln);
        continue;
      }
      // A stream link's address, port and secret: kept from the stored link, else filled.
      let spec = l.spec;
      if (spec) {
        try {
          const f = this.fleet.streamEndpoints.fill(ln, spec, cur?.obj.spec);
          releases.push(f.release);
          spec = f.spec;
        } catch (err) {
          if (!(err instanceof StreamFillError)) throw err;
          unfilled++;
          unfilledWhy ??= err;
          // An existing link keeps what it has; a new one is not stamped.
          if (!cur) want.delete(ln);
          continue;
        }
      }
      if (!cur) for (const a of agentsOf) pendingNew.set(a, (pendingNew.get(a) ?? 0) + 1);
      const plan = this.cache.planLink({ ...l, spec }, '', now);
      if (plan) ops.push(plan.op);
    }
    for (const ln of owned) {
      if (want.has(ln)) continue;
      // Links adopted after the store was lost stay until their policy is applied again (it takes them over).
      if (!pe && this.cache.links.get(ln)?.obj.meta?.annotations[ADOPTED_ANNOTATION] !== undefined) continue;
      const op = this.cache.planLinkDelete(ln, '');
      if (op) ops.push(op);
    }
    try {
      await this.cache.commitMany(ops);
    } finally {
      for (const r of releases) r();
    }
    if (!pe) {
      this.fleet.policyStatus.delete(name);
      return;
    }
    const gen = pe.obj.meta?.generation ?? 0n;
    const names = [...want.keys()].sort();
    const prev = this.fleet.policyStatus.get(name);
    const applied: Condition =
      unfilledWhy && conflicts === 0 && overLimit === 0
        ? {
            type: 'Applied',
            status: ConditionStatus.CONDITION_STATUS_FALSE,
            reason: unfilledWhy.reason,
            message: `${unfilled} stream link(s) not stamped or not updated: ${unfilledWhy.message}`,
            observedGeneration: gen,
            lastTransitionTime: new Date(),
          }
        : overLimit > 0 && conflicts === 0
          ? {
              type: 'Applied',
              status: ConditionStatus.CONDITION_STATUS_FALSE,
              reason: 'LinkLimitReached',
              message: `${overLimit} link(s) not stamped: their agents already hold maxLinksPerAgent (${max}) links`,
              observedGeneration: gen,
              lastTransitionTime: new Date(),
            }
          : conflicts > 0
            ? {
                type: 'Applied',
                status: ConditionStatus.CONDITION_STATUS_FALSE,
                reason: 'NameConflict',
                message: `${conflicts} link name(s) are already used by links this policy does not manage; rename the policy or delete those links`,
                observedGeneration: gen,
                lastTransitionTime: new Date(),
              }
            : unpaired.length > 0
              ? {
                  type: 'Applied',
                  status: ConditionStatus.CONDITION_STATUS_FALSE,
                  reason: 'NoDeviceAgent',
                  message: `${names.length} link(s); ${unpaired.length} driver agent(s) got none, no registered uncordoned agent of peer.device_selector with room under maxLinksPerAgent is left for them (${unpaired.slice(0, 5).join(', ')}${unpaired.length > 5 ? ', ...' : ''})`,
                  observedGeneration: gen,
                  lastTransitionTime: new Date(),
                }
              : {
                  type: 'Applied',
                  status: ConditionStatus.CONDITION_STATUS_TRUE,
                  reason: 'LinksStamped',
                  message: `${names.length} link(s) for ${names.length} matching ${pairWord(pe.obj)} pair(s)${waiting > 0 ? `; ${waiting} listed pair(s) wait for their agents to register` : ''}`,
                  observedGeneration: gen,
                  lastTransitionTime: new Date(),
                };
    const old = prev?.conditions.find((c) => c.type === 'Applied');
    if (old && old.status === applied.status) applied.lastTransitionTime = old.lastTransitionTime;
    const changed =
      !prev ||
      prev.observedGeneration !== gen ||
      prev.links.join(',') !== names.join(',') ||
      old?.message !== applied.message;
    this.fleet.policyStatus.set(name, {
      observedGeneration: gen,
      matchedPairs: names.length,
      links: names,
      conditions: [applied],
    });
    if (changed) this.cache.publish('policy', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
  }
}
