/**
 * ControllerService: links, policies and agents as desired state, list calls with
 * label selectors, filters and pagination, watches (snapshot, SYNCED marker, then
 * changes), stats and console proxied to the agents. Handlers throw ServerError only;
 * the handler kit is the one error boundary.
 */
import { status as GrpcStatus, Metadata, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';

import {
  ControllerServiceService,
  type AdoptAgentsRequest,
  type AttachConsoleRequest,
  type AttachConsoleResponse,
  type EndpointStats,
  type WatchAgentsRequest,
  type WatchAgentsResponse,
  type WatchLinksRequest,
  type WatchLinksResponse,
} from '../../../lib/proto/controller';
import {
  AgentPhase,
  LinkPhase,
  WatchEventType,
  type Agent,
  type LabelSelector,
  type Link,
  type LinkPolicy,
  type LinkSpec,
} from '../../../lib/proto/types';
import { failedPrecondition, invalidArgument, notFound, ServerError, ViolationList } from '../../../lib/src/errors';
import type { ServiceBinding } from '../../../lib/src/grpc-server';
import { assertConsoleCaller } from '../../../lib/src/console-access';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import { redactPolicy, redactSpec } from '../../../lib/src/redact';
import { writeWithBackpressure, type HandlerKit } from '../../../lib/src/rpc-handlers';
import { parseSelector, selectorMatches, SelectorSyntaxError } from '../../../lib/src/selector';
import { clientKey, StreamQuota } from '../../../lib/src/stream-quota';
import { checkName, validateLink, validatePolicy } from '../../../lib/src/validate';
import { WatchBacklog } from '../../../lib/src/watch-backlog';
import { usableAddress } from '../sync/address-verification';
import type { FleetViews } from '../views/fleet-views';
import type { FleetState } from '../state/fleet-state';
import { StreamFillError } from '../state/stream-endpoints';
import type { CacheEvent, ObjectCache } from '../state/object-cache';
import type { Replica } from '../replica/replica';
import { adoptAgents } from './adopt';
import type { AgentClients } from './agent-clients';
import { relayConsole } from './console-relay';
import { paginate } from './pagination';

const AGENT_CALL_TIMEOUT_MS = 5000;

export interface ControllerServiceDeps {
  readonly cache: ObjectCache;
  readonly views: FleetViews;
  /**
   * Leadership: every mutation (and a console attach, which needs the observed fleet) runs on the
   * leader's term; a replica that does not lead refuses it with UNAVAILABLE, NOT_LEADER and the
   * leader's address. Reads are served by every replica from its cache.
   */
  readonly replica: Pick<Replica, 'requireLeader' | 'current' | 'leaderAddress' | 'address'>;
  /** "sqlite" or "etcd" (GetControllerStatus). */
  readonly storeKind: string;
  readonly agentClients: AgentClients;
  readonly limits: Limits;
  readonly log: Logger;
}

function selector(text: string, field = 'label_selector'): LabelSelector | undefined {
  if (text.trim() === '') return undefined;
  try {
    return parseSelector(text);
  } catch (err) {
    if (err instanceof SelectorSyntaxError) throw invalidArgument([{ field, description: err.message }]);
    throw err;
  }
}

function requireName(name: string, field = 'name'): void {
  const v = new ViolationList();
  checkName(v, field, name);
  v.throwIfAny();
}

function linkMatches(l: Link, sel: LabelSelector | undefined, agent: string, phase: LinkPhase): boolean {
  if (!selectorMatches(sel, l.meta?.labels ?? {})) return false;
  if (agent !== '' && !(l.spec?.endpoints ?? []).some((e) => e.agent === agent)) return false;
  if (phase !== LinkPhase.LINK_PHASE_UNSPECIFIED && (l.status?.phase ?? LinkPhase.LINK_PHASE_PENDING) !== phase)
    return false;
  return true;
}

/** Runs a watch: subscribe first (into a bounded backlog), then snapshot, SYNCED, then changes in order. */
async function runWatch<T>(
  cache: ObjectCache,
  kind: 'link' | 'agent',
  outer: AbortSignal,
  backlogLimit: number,
  opts: {
    updatesOnly: boolean;
    snapshot: () => T[];
    view: (ev: CacheEvent) => T | undefined;
    matches: (obj: T) => boolean;
    write: (type: WatchEventType, obj: T | undefined, rv: string, signal: AbortSignal) => Promise<void>;
  },
): Promise<void> {
  const backlog = new WatchBacklog<CacheEvent>(backlogLimit, outer);
  const signal = backlog.signal;
  const unsubscribe = cache.subscribe((ev) => {
    if (ev.kind === kind) backlog.push(ev);
  });
  try {
    if (!opts.updatesOnly) {
      for (const obj of opts.snapshot())
        if (opts.matches(obj))
          await opts.write(WatchEventType.WATCH_EVENT_TYPE_ADDED, obj, String(cache.currentVersion()), signal);
    }
    await opts.write(WatchEventType.WATCH_EVENT_TYPE_SYNCED, undefined, String(cache.currentVersion()), signal);
    const seen = new Set<string>();
    while (!signal.aborted) {
      const ev = backlog.shift();
      if (!ev) {
        await backlog.wait();
        continue;
      }
      const obj = opts.view(ev);
      if (!obj || !opts.matches(obj)) continue;
      let type = ev.type;
      if (type === WatchEventType.WATCH_EVENT_TYPE_ADDED && seen.has(ev.name))
        type = WatchEventType.WATCH_EVENT_TYPE_MODIFIED;
      seen.add(ev.name);
      await opts.write(type, obj, String(ev.revision), signal);
    }
    backlog.throwIfOverflowed();
  } finally {
    unsubscribe();
    backlog.dispose();
  }
}

export function controllerServiceBinding(kit: HandlerKit, deps: ControllerServiceDeps): ServiceBinding {
  const { cache, views, replica, agentClients, limits } = deps;
  /** Watch and console streams per client identity (maxStreamsPerClient). */
  const streams = new StreamQuota(limits.maxStreamsPerClient, 'watch and console streams');

  const getLinkOrThrow = (name: string): Link => {
    requireName(name);
    const l = views.linkView(name);
    if (!l) throw notFound('link', name);
    return l;
  };
  const getAgentOrThrow = (name: string): Agent => {
    requireName(name);
    const a = views.agentView(name);
    if (!a) throw notFound('agent', name);
    return a;
  };

  const setAgentSpec = async (
    name: string,
    mutate: (spec: { unschedulable: boolean; drain: boolean }) => void,
  ): Promise<Agent> => {
    const term = replica.requireLeader();
    const a = cache.agents.get(name)?.obj;
    if (!a) throw notFound('agent', name);
    const spec = { unschedulable: a.spec?.unschedulable ?? false, drain: a.spec?.drain ?? false };
    mutate(spec);
    await cache.putAgent({ ...a, spec });
    term.reconciler.agentSpecChanged(name);
    return views.agentView(name) as Agent;
  };

  /** The spec with the controller's stream fill; StreamFillError becomes a gRPC error naming the field. */
  const fillStream = (
    fleet: FleetState,
    name: string,
    spec: LinkSpec,
    prev: LinkSpec | undefined,
  ): ReturnType<FleetState['streamEndpoints']['fill']> => {
    try {
      return fleet.streamEndpoints.fill(name, spec, prev);
    } catch (err) {
      if (!(err instanceof StreamFillError)) throw err;
      const exhausted = err.reason === 'DataPlanePortsExhausted';
      throw new ServerError(
        exhausted ? GrpcStatus.RESOURCE_EXHAUSTED : GrpcStatus.FAILED_PRECONDITION,
        `link.spec.transport.stream.address: ${err.message}`,
        {
          reason: exhausted ? 'DATA_PLANE_PORTS_EXHAUSTED' : 'NO_DATA_PLANE_ADDRESS',
          metadata: { agent: err.agent, field: 'link.spec.transport.stream.address' },
        },
      );
    }
  };

  const implementation = {
    applyLink: kit.unary('ApplyLink', async (req: { link: Link | undefined; dryRun: boolean }) => {
      validateLink(req.link, limits, 'link', true);
      const { fleet } = replica.requireLeader();
      const link = req.link as Link;
      const name = link.meta?.name ?? '';
      const cur = cache.links.get(name)?.obj;
      for (const ep of link.spec?.endpoints ?? []) {
        if (cur?.spec?.endpoints.some((e) => e.agent === ep.agent)) continue;
        const held = fleet.linksOf(ep.agent).size;
        if (held >= limits.maxLinksPerAgent)
          throw new ServerError(
            GrpcStatus.RESOURCE_EXHAUSTED,
            `agent "${ep.agent}" already holds ${held} links (limit maxLinksPerAgent = ${limits.maxLinksPerAgent}); delete one first`,
            {
              reason: 'LINK_LIMIT_EXCEEDED',
              metadata: { agent: ep.agent, limit: 'maxLinksPerAgent', max: String(limits.maxLinksPerAgent) },
            },
          );
      }
      const managedBy = cur?.meta?.managedBy ?? '';
      if (managedBy.startsWith('policy/')) {
        throw failedPrecondition(
          'LINK_MANAGED_BY_POLICY',
          `link "${name}" is managed by ${managedBy}; change the policy's template instead`,
          { link: name, managedBy },
        );
      }
      if (!cur) {
        for (const ep of link.spec?.endpoints ?? []) {
          if (cache.agents.get(ep.agent)?.obj.spec?.unschedulable) {
            throw failedPrecondition(
              'AGENT_CORDONED',
              `agent "${ep.agent}" is cordoned: no new links are placed on it; uncordon it first`,
              { agent: ep.agent },
            );
          }
        }
      }
      // A stream link's empty address and secret are filled by the controller (stream-endpoints.ts).
      const filled = fillStream(fleet, name, link.spec as LinkSpec, cur?.spec);
      const toWrite: Link = {
        meta: { ...(link.meta as NonNullable<Link['meta']>), managedBy: '' },
        spec: filled.spec,
        status: undefined,
      };
      const res = await cache
        .putLink(toWrite, link.meta?.resourceVersion ?? '', { dryRun: req.dryRun })
        .finally(filled.release);
      return {
        link: req.dryRun ? { ...res.obj, spec: redactSpec(res.obj.spec) } : views.linkView(name),
        changed: res.changed,
      };
    }),
    getLink: kit.unary('GetLink', async (req: { name: string }) => ({ link: getLinkOrThrow(req.name) })),
    listLinks: kit.unary(
      'ListLinks',
      async (req: { labelSelector: string; agent: string; phase: LinkPhase; pageSize: number; pageToken: string }) => {
        const sel = selector(req.labelSelector);
        const names = req.agent !== '' ? views.linksOf(req.agent) : [...cache.links.keys()];
        const items = names
          .map((n) => views.linkView(n))
          .filter((l): l is Link => l !== undefined && linkMatches(l, sel, req.agent, req.phase));
        const { page, next } = paginate('links', items, (l) => l.meta?.name ?? '', req.pageSize, req.pageToken);
        return { links: page, nextPageToken: next };
      },
    ),
    deleteLink: kit.unary('DeleteLink', async (req: { name: string; resourceVersion: string }) => {
      const l = getLinkOrThrow(req.name);
      replica.requireLeader();
      const managedBy = l.meta?.managedBy ?? '';
      // A link whose policy is not in the store (adopted after the store was lost) may be deleted directly.
      if (managedBy.startsWith('policy/') && cache.policies.has(managedBy.slice('policy/'.length))) {
        throw failedPrecondition(
          'LINK_MANAGED_BY_POLICY',
          `link "${req.name}" is managed by ${managedBy}; delete the policy or narrow its selectors`,
          { link: req.name, managedBy },
        );
      }
      await cache.deleteLink(req.name, req.resourceVersion);
      return {};
    }),
    watchLinks: kit.serverStream(
      'WatchLinks',
      async (call: ServerWritableStream<WatchLinksRequest, WatchLinksResponse>, signal) => {
        const sel = selector(call.request.labelSelector);
        const release = streams.acquire(clientKey(call));
        try {
          await runWatch<Link>(cache, 'link', signal, limits.watchBacklogEvents, {
            updatesOnly: call.request.updatesOnly,
            snapshot: () =>
              [...cache.links.keys()]
                .sort()
                .map((n) => views.linkView(n))
                .filter((l): l is Link => l !== undefined),
            view: (ev) =>
              ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED
                ? (ev.last as Link | undefined)
                : views.linkView(ev.name),
            matches: (l) => linkMatches(l, sel, call.request.agent, LinkPhase.LINK_PHASE_UNSPECIFIED),
            write: (type, link, resourceVersion, sig) =>
              writeWithBackpressure(call, { type, link, resourceVersion }, sig),
          });
        } finally {
          release();
        }
      },
    ),
    getLinkStats: kit.unary('GetLinkStats', async (req: { name: string }) => {
      const l = getLinkOrThrow(req.name);
      const endpoints: EndpointStats[] = await Promise.all(
        (l.spec?.endpoints ?? []).map(async (ep): Promise<EndpointStats> => {
          // Only a verified address is dialled (address-verification.ts).
          const { address: addr, problem } = usableAddress(cache.agents.get(ep.agent)?.obj, 'grpc');
          if (problem !== null)
            return {
              agent: ep.agent,
              role: ep.role,
              devices: [],
              error: `FAILED_PRECONDITION: agent "${ep.agent}" ${problem}`,
            };
          const client = agentClients.get(addr);
          return new Promise<EndpointStats>((resolve) => {
            client.getStats(
              { link: req.name },
              new Metadata(),
              { deadline: Date.now() + AGENT_CALL_TIMEOUT_MS },
              (err, res) => {
                if (err)
                  resolve({
                    agent: ep.agent,
                    role: ep.role,
                    devices: [],
                    error: `${GrpcStatus[err.code] ?? err.code}: ${err.details}`,
                  });
                else resolve({ agent: ep.agent, role: ep.role, devices: res?.devices ?? [], error: '' });
              },
            );
          });
        }),
      );
      return { name: req.name, endpoints, sampleTime: new Date() };
    }),
    attachConsole: kit.bidi(
      'AttachConsole',
      async (call: ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>, signal) => {
        assertConsoleCaller(call.metadata);
        // Only the leader knows which agent runs the link (the observed fleet).
        const { fleet } = replica.requireLeader();
        const release = streams.acquire(clientKey(call));
        try {
          await relayConsole(call, signal, { cache, fleet, views, agentClients, log: deps.log });
        } finally {
          release();
        }
      },
    ),

    applyPolicy: kit.unary('ApplyPolicy', async (req: { policy: LinkPolicy | undefined; dryRun: boolean }) => {
      validatePolicy(req.policy, limits);
      replica.requireLeader();
      const p = req.policy as LinkPolicy;
      const res = await cache.putPolicy(
        { ...p, meta: { ...(p.meta as NonNullable<LinkPolicy['meta']>), managedBy: '' }, status: undefined },
        p.meta?.resourceVersion ?? '',
        { dryRun: req.dryRun },
      );
      return {
        policy: req.dryRun ? redactPolicy(res.obj) : views.policyView(p.meta?.name ?? ''),
        changed: res.changed,
      };
    }),
    getPolicy: kit.unary('GetPolicy', async (req: { name: string }) => {
      requireName(req.name);
      const p = views.policyView(req.name);
      if (!p) throw notFound('policy', req.name);
      return { policy: p };
    }),
    listPolicies: kit.unary(
      'ListPolicies',
      async (req: { labelSelector: string; pageSize: number; pageToken: string }) => {
        const sel = selector(req.labelSelector);
        const items = [...cache.policies.keys()]
          .map((n) => views.policyView(n))
          .filter((p): p is LinkPolicy => p !== undefined && selectorMatches(sel, p.meta?.labels ?? {}));
        const { page, next } = paginate('policies', items, (p) => p.meta?.name ?? '', req.pageSize, req.pageToken);
        return { policies: page, nextPageToken: next };
      },
    ),
    deletePolicy: kit.unary('DeletePolicy', async (req: { name: string; resourceVersion: string }) => {
      requireName(req.name);
      if (!cache.policies.has(req.name)) throw notFound('policy', req.name);
      replica.requireLeader();
      await cache.deletePolicy(req.name, req.resourceVersion);
      return {};
    }),

    getAgent: kit.unary('GetAgent', async (req: { name: string }) => ({ agent: getAgentOrThrow(req.name) })),
    listAgents: kit.unary(
      'ListAgents',
      async (req: { labelSelector: string; rack: string; phase: AgentPhase; pageSize: number; pageToken: string }) => {
        const sel = selector(req.labelSelector);
        const items: Agent[] = [];
        for (const name of cache.agents.keys()) {
          const a = views.agentView(name);
          if (!a) continue;
          if (req.rack !== '' && a.status?.identity?.rack !== req.rack) continue;
          if (req.phase !== AgentPhase.AGENT_PHASE_UNSPECIFIED && a.status?.phase !== req.phase) continue;
          if (sel && !selectorMatches(sel, views.agentLabels(a))) continue;
          items.push(a);
        }
        const { page, next } = paginate('agents', items, (a) => a.meta?.name ?? '', req.pageSize, req.pageToken);
        return { agents: page, nextPageToken: next };
      },
    ),
    watchAgents: kit.serverStream(
      'WatchAgents',
      async (call: ServerWritableStream<WatchAgentsRequest, WatchAgentsResponse>, signal) => {
        const sel = selector(call.request.labelSelector);
        const release = streams.acquire(clientKey(call));
        try {
          await runWatch<Agent>(cache, 'agent', signal, limits.watchBacklogEvents, {
            updatesOnly: call.request.updatesOnly,
            snapshot: () =>
              [...cache.agents.keys()]
                .sort()
                .map((n) => views.agentView(n))
                .filter((a): a is Agent => a !== undefined),
            view: (ev) =>
              ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED
                ? (ev.last as Agent | undefined)
                : views.agentView(ev.name),
            matches: (a) => selectorMatches(sel, views.agentLabels(a)),
            write: (type, agent, resourceVersion, sig) =>
              writeWithBackpressure(call, { type, agent, resourceVersion }, sig),
          });
        } finally {
          release();
        }
      },
    ),
    cordonAgent: kit.unary('CordonAgent', async (req: { name: string }) => {
      getAgentOrThrow(req.name);
      return { agent: await setAgentSpec(req.name, (s) => (s.unschedulable = true)) };
    }),
    uncordonAgent: kit.unary('UncordonAgent', async (req: { name: string }) => {
      getAgentOrThrow(req.name);
      return { agent: await setAgentSpec(req.name, (s) => ((s.unschedulable = false), (s.drain = false))) };
    }),
    drainAgent: kit.unary('DrainAgent', async (req: { name: string }) => {
      getAgentOrThrow(req.name);
      const { fleet } = replica.requireLeader();
      // Driver sides first (their users see the device go away), then by name.
      const order = [...fleet.linksOf(req.name)].sort((a, b) => {
        const ra = cache.links.get(a)?.obj.spec?.endpoints.find((e) => e.agent === req.name)?.role ?? 0;
        const rb = cache.links.get(b)?.obj.spec?.endpoints.find((e) => e.agent === req.name)?.role ?? 0;
        return rb - ra || (a < b ? -1 : a > b ? 1 : 0);
      });
      await setAgentSpec(req.name, (s) => ((s.unschedulable = true), (s.drain = true)));
      // Cordoned first, so a policy does not stamp the links out again.
      for (const ln of order) await cache.deleteLink(ln, '');
      return { agent: views.agentView(req.name), links: order };
    }),
    deleteAgent: kit.unary('DeleteAgent', async (req: { name: string; force: boolean }) => {
      getAgentOrThrow(req.name);
      const held = replica.requireLeader().fleet.linksOf(req.name).size;
      if (held > 0 && !req.force) {
        throw failedPrecondition(
          'AGENT_HAS_LINKS',
          `agent "${req.name}" still holds ${held} link(s); drain it first or pass force`,
          { agent: req.name },
        );
      }
      await cache.deleteAgent(req.name);
      return {};
    }),
    adoptAgents: kit.unary('AdoptAgents', async (req: AdoptAgentsRequest) =>
      adoptAgents(req, replica.requireLeader(), { cache, agentClients, log: deps.log }),
    ),

    getControllerStatus: kit.unary('GetControllerStatus', async () => {
      const term = replica.current();
      const id = cache.identity();
      return {
        replica: replica.address,
        leader: term !== undefined,
        leaderAddress: replica.leaderAddress(),
        storeKind: deps.storeKind,
        storeIdentity: { clusterId: id.clusterId, generation: id.generation },
        revision: cache.revision(),
        agentsInConflict: term?.fleet.storeConflicts().length ?? 0,
      };
    }),
  };
  return { name: 'vop.controller.v1.ControllerService', definition: ControllerServiceService, implementation };
}
