/**
 * AdoptAgents: after the store was lost (wiped, replaced, or restored from an older backup),
 * the agents keep running their links and apply nothing from the new store (the store identity
 * rule, lib/src/store-identity.ts). An operator adopts them: the links each agent runs, as it
 * reports them (AgentService.ListLinks at its verified address, with labels and annotations;
 * else what it registered), are written into the store, and the agent is told to accept this
 * store from now on. Losing the store thus costs no link.
 *
 * A link the store lacks is created with the agent's spec, labels and owner; a link the store
 * holds with another spec gets the agent's spec (what runs wins). Every adopted link is annotated
 * `vop.dev/adopted` (the agent it came from): a policy that is not in the store (yet) does not
 * delete the links it owned, and takes them over when it is applied again.
 */
import { Metadata } from '@grpc/grpc-js';

import type { AdoptAgentsRequest, AdoptAgentsResponse, AdoptedAgent } from '../../../lib/proto/controller';
import { WatchEventType, type Link, type LinkSpec } from '../../../lib/proto/types';
import { ViolationList } from '../../../lib/src/errors';
import type { Logger } from '../../../lib/src/logger';
import { linkSpecEqual } from '../../../lib/src/proto-equal';
import { redactSpec } from '../../../lib/src/redact';
import { checkName } from '../../../lib/src/validate';
import type { LeaderTerm } from '../replica/leader-term';
import { ADOPTED_ANNOTATION } from '../state/agent-labels';
import type { ObjectCache } from '../state/object-cache';
import type { StoreOp } from '../store/store';
import { usableAddress } from '../sync/address-verification';
import type { AgentClients } from './agent-clients';

const AGENT_CALL_TIMEOUT_MS = 5000;

export interface AdoptDeps {
  readonly cache: ObjectCache;
  readonly agentClients: AgentClients;
  readonly log: Logger;
}

/** The controller-managed links the agent runs: from its AgentService, else from its registration. */
async function runningLinks(deps: AdoptDeps, term: LeaderTerm, agent: string): Promise<Link[]> {
  const { address, problem } = usableAddress(deps.cache.agents.get(agent)?.obj, 'grpc');
  const reported = term.fleet.runtimes.get(agent)?.reported ?? [];
  if (problem !== null) return reported;
  const client = deps.agentClients.get(address);
  try {
    const res = await new Promise<{ links: Link[] }>((resolve, reject) =>
      client.listLinks(
        { labelSelector: '', pageSize: 0, pageToken: '' },
        new Metadata(),
        { deadline: Date.now() + AGENT_CALL_TIMEOUT_MS },
        (err, r) => (err ? reject(err) : resolve(r)),
      ),
    );
    return res.links;
  } catch (err) {
    deps.log.warn({ err, agent }, 'adopt: the agent did not list its links; using what it registered (no labels)');
    return reported;
  }
}

/**
 * The spec an adopted link is stored with. A stream link's secret comes back redacted, and the
 * controller cannot read it back: it keeps the store's secret for the link, else generates a new
 * one; both agents get it in their desired links, so the link rotates to it (a reset).
 */
function adoptedSpec(term: LeaderTerm, name: string, spec: LinkSpec, prev: LinkSpec | undefined): LinkSpec {
  try {
    const f = term.fleet.streamEndpoints.fill(name, spec, prev);
    f.release();
    return f.spec;
  } catch {
    return spec; // an address it cannot fill stays as the agent runs it
  }
}

export async function adoptAgents(
  req: AdoptAgentsRequest,
  term: LeaderTerm,
  deps: AdoptDeps,
): Promise<AdoptAgentsResponse> {
  const v = new ViolationList();
  req.agents.forEach((n, i) => checkName(v, `agents[${i}]`, n));
  v.throwIfAny();
  const { fleet } = term;
  const names = req.agents.length > 0 ? [...new Set(req.agents)] : fleet.storeConflicts().map((r) => r.name);
  const results: AdoptedAgent[] = [];
  const adopted: string[] = [];
  const planned = new Set<string>();
  const ops: StoreOp[] = [];
  const now = new Date();
  for (const agent of names.sort()) {
    const out: AdoptedAgent = { agent, linksCreated: [], linksUpdated: [], linksUnchanged: [], error: '' };
    results.push(out);
    const rt = fleet.runtimes.get(agent);
    if (!rt?.session) {
      out.error = 'not connected to this controller: adopt it once it is';
      continue;
    }
    if (!rt.storeConflict && !rt.adopted) {
      out.error = 'not in a store identity conflict: it applies this store already';
      continue;
    }
    for (const l of await runningLinks(deps, term, agent)) {
      const name = l.meta?.name ?? '';
      const managedBy = l.meta?.managedBy ?? '';
      if (name === '' || managedBy === '' || !l.spec) continue; // the agent's own links stay its own
      const cur = deps.cache.links.get(name)?.obj;
      // Agents report a stream link's secret redacted (write-only): equal but for it is unchanged.
      if (cur && linkSpecEqual(redactSpec(cur.spec), l.spec)) {
        out.linksUnchanged.push(name);
        continue;
      }
      if (planned.has(name)) {
        // The other endpoint of the same link reported it first.
        out.linksUnchanged.push(name);
        continue;
      }
      const plan = deps.cache.planLink(
        {
          meta: {
            name,
            labels: { ...(l.meta?.labels ?? {}) },
            annotations: { ...(l.meta?.annotations ?? {}), [ADOPTED_ANNOTATION]: agent },
            managedBy: managedBy === 'controller' ? '' : managedBy,
            generation: 0n,
            resourceVersion: '',
            createTime: undefined,
            updateTime: undefined,
          },
          spec: adoptedSpec(term, name, l.spec, cur?.spec),
          status: undefined,
        },
        '',
        now,
      );
      if (!plan) continue;
      planned.add(name);
      ops.push(plan.op);
      (cur ? out.linksUpdated : out.linksCreated).push(name);
    }
    adopted.push(agent);
  }
  if (req.dryRun) return { agents: results };
  await deps.cache.commitMany(ops);
  for (const agent of adopted) {
    const rt = fleet.runtimes.get(agent);
    if (!rt) continue;
    rt.storeConflict = undefined;
    rt.adopted = true;
    rt.reported = [];
    rt.needsFull = true;
    term.reconciler.queues.agents.add(agent);
    deps.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, agent, true);
  }
  const r = results.filter((x) => x.error === '');
  deps.log.info(
    {
      code: 'AGENTS_ADOPTED',
      agents: r.map((x) => x.agent),
      created: r.reduce((n, x) => n + x.linksCreated.length, 0),
      updated: r.reduce((n, x) => n + x.linksUpdated.length, 0),
    },
    'agents adopted: the links they run are in the store, and they accept it',
  );
  return { agents: results };
}
