/**
 * ControllerService: links, policies and agents as desired state, list calls with
 * label selectors, filters and pagination, watches (snapshot, SYNCED marker, then
 * changes), stats and console proxied to the agents. Handlers throw ServerError only;
 * the handler kit is the one error boundary.
 */
import { status as GrpcStatus, Metadata, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';

import type {
  AttachConsoleRequest as AgentConsoleRequest,
  AttachConsoleResponse as AgentConsoleResponse,
} from '../../../lib/gen/vop/agent/v1/agent';
import {
  ControllerServiceService,
  type AttachConsoleRequest,
  type AttachConsoleResponse,
  type EndpointStats,
  type WatchAgentsRequest,
  type WatchAgentsResponse,
  type WatchLinksRequest,
  type WatchLinksResponse,
} from '../../../lib/gen/vop/controller/v1/controller';
import {
  AgentPhase,
  LinkPhase,
  Role,
  WatchEventType,
  type Agent,
  type LabelSelector,
  type Link,
  type LinkPolicy,
} from '../../../lib/gen/vop/types/v1/types';
import { assertConsoleWriteAllowed } from '../../../lib/src/auth';
import { failedPrecondition, invalidArgument, notFound, ServerError, ViolationList } from '../../../lib/src/errors';
import type { ServiceBinding } from '../../../lib/src/grpc-server';
import { writeWithBackpressure, type HandlerKit } from '../../../lib/src/rpc-handlers';
import { parseSelector, selectorMatches, SelectorSyntaxError } from '../../../lib/src/selector';
import { checkName, validateLink, validatePolicy } from '../../../lib/src/validate';
import type { CacheEvent, ObjectCache } from '../fleet/object-cache';
import type { Reconciler } from '../fleet/reconciler';
import type { AgentClients } from './agent-clients';
import { paginate } from './pagination';

const AGENT_CALL_TIMEOUT_MS = 5000;

export interface ControllerServiceDeps {
  readonly cache: ObjectCache;
  readonly reconciler: Reconciler;
  readonly agentClients: AgentClients;
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

/** Runs a watch: subscribe first (buffering), then snapshot, SYNCED, then changes in order. */
async function runWatch<T>(
  cache: ObjectCache,
  kind: 'link' | 'agent',
  signal: AbortSignal,
  opts: {
    updatesOnly: boolean;
    snapshot: () => T[];
    view: (ev: CacheEvent) => T | undefined;
    matches: (obj: T) => boolean;
    write: (type: WatchEventType, obj: T | undefined, rv: string) => Promise<void>;
  },
): Promise<void> {
  const pending: CacheEvent[] = [];
  let wake: (() => void) | undefined;
  const unsubscribe = cache.subscribe((ev) => {
    if (ev.kind !== kind) return;
    pending.push(ev);
    wake?.();
  });
  const onAbort = (): void => wake?.();
  signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (!opts.updatesOnly) {
      for (const obj of opts.snapshot())
        if (opts.matches(obj))
          await opts.write(WatchEventType.WATCH_EVENT_TYPE_ADDED, obj, String(cache.currentVersion()));
    }
    await opts.write(WatchEventType.WATCH_EVENT_TYPE_SYNCED, undefined, String(cache.currentVersion()));
    const seen = new Set<string>();
    while (!signal.aborted) {
      const ev = pending.shift();
      if (!ev) {
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      const obj = opts.view(ev);
      if (!obj || !opts.matches(obj)) continue;
      let type = ev.type;
      if (type === WatchEventType.WATCH_EVENT_TYPE_ADDED && seen.has(ev.name))
        type = WatchEventType.WATCH_EVENT_TYPE_MODIFIED;
      seen.add(ev.name);
      await opts.write(type, obj, String(ev.revision));
    }
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', onAbort);
  }
}

export function controllerServiceBinding(kit: HandlerKit, deps: ControllerServiceDeps): ServiceBinding {
  const { cache, reconciler, agentClients } = deps;

  const getLinkOrThrow = (name: string): Link => {
    requireName(name);
    const l = reconciler.linkView(name);
    if (!l) throw notFound('link', name);
    return l;
  };
  const getAgentOrThrow = (name: string): Agent => {
    requireName(name);
    const a = reconciler.agentView(name);
    if (!a) throw notFound('agent', name);
    return a;
  };

  const setAgentSpec = async (
    name: string,
    mutate: (spec: { unschedulable: boolean; drain: boolean }) => void,
  ): Promise<Agent> => {
    const a = cache.agents.get(name)?.obj;
    if (!a) throw notFound('agent', name);
    const spec = { unschedulable: a.spec?.unschedulable ?? false, drain: a.spec?.drain ?? false };
    mutate(spec);
    await cache.putAgent({ ...a, spec });
    reconciler.agentSpecChanged(name);
    return reconciler.agentView(name) as Agent;
  };

  const implementation = {
    applyLink: kit.unary('ApplyLink', async (req: { link: Link | undefined; dryRun: boolean }) => {
      validateLink(req.link);
      const link = req.link as Link;
      const name = link.meta?.name ?? '';
      const cur = cache.links.get(name)?.obj;
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
      const toWrite: Link = {
        meta: { ...(link.meta as NonNullable<Link['meta']>), managedBy: '' },
        spec: link.spec,
        status: undefined,
      };
      const res = await cache.putLink(toWrite, link.meta?.resourceVersion ?? '', { dryRun: req.dryRun });
      return { link: req.dryRun ? res.obj : reconciler.linkView(name), changed: res.changed };
    }),
    getLink: kit.unary('GetLink', async (req: { name: string }) => ({ link: getLinkOrThrow(req.name) })),
    listLinks: kit.unary(
      'ListLinks',
      async (req: { labelSelector: string; agent: string; phase: LinkPhase; pageSize: number; pageToken: string }) => {
        const sel = selector(req.labelSelector);
        const names = req.agent !== '' ? [...reconciler.linksOf(req.agent)] : [...cache.links.keys()];
        const items = names
          .map((n) => reconciler.linkView(n))
          .filter((l): l is Link => l !== undefined && linkMatches(l, sel, req.agent, req.phase));
        const { page, next } = paginate('links', items, (l) => l.meta?.name ?? '', req.pageSize, req.pageToken);
        return { links: page, nextPageToken: next };
      },
    ),
    deleteLink: kit.unary('DeleteLink', async (req: { name: string; resourceVersion: string }) => {
      const l = getLinkOrThrow(req.name);
      const managedBy = l.meta?.managedBy ?? '';
      if (managedBy.startsWith('policy/')) {
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
        await runWatch<Link>(cache, 'link', signal, {
          updatesOnly: call.request.updatesOnly,
          snapshot: () =>
            [...cache.links.keys()]
              .sort()
              .map((n) => reconciler.linkView(n))
              .filter((l): l is Link => l !== undefined),
          view: (ev) =>
            ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED
              ? (ev.last as Link | undefined)
              : reconciler.linkView(ev.name),
          matches: (l) => linkMatches(l, sel, call.request.agent, LinkPhase.LINK_PHASE_UNSPECIFIED),
          write: (type, link, resourceVersion) => writeWithBackpressure(call, { type, link, resourceVersion }, signal),
        });
      },
    ),
    getLinkStats: kit.unary('GetLinkStats', async (req: { name: string }) => {
      const l = getLinkOrThrow(req.name);
      const endpoints: EndpointStats[] = await Promise.all(
        (l.spec?.endpoints ?? []).map(async (ep): Promise<EndpointStats> => {
          const addr = cache.agents.get(ep.agent)?.obj.status?.addresses?.grpc ?? '';
          if (addr === '')
            return { agent: ep.agent, role: ep.role, devices: [], error: 'agent has not registered a gRPC address' };
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
        const first = await new Promise<AttachConsoleRequest | undefined>((resolve) => {
          call.once('data', resolve);
          call.once('end', () => resolve(undefined));
          signal.addEventListener('abort', () => resolve(undefined), { once: true });
        });
        if (!first) return;
        if (first.msg?.$case !== 'open')
          throw invalidArgument([{ field: 'msg', description: 'the first message must be open' }]);
        assertConsoleWriteAllowed(call.metadata, first.msg.value);
        const l = getLinkOrThrow(first.msg.value.link);
        // No device named: the link's first console.
        const open = {
          ...first.msg.value,
          device: first.msg.value.device || (l.spec?.devices.find((d) => d.kind?.$case === 'console')?.name ?? ''),
        };
        const ep = (l.spec?.endpoints ?? []).find((e) => e.role === Role.ROLE_DEVICE) ?? l.spec?.endpoints[0];
        const addr = ep ? (cache.agents.get(ep.agent)?.obj.status?.addresses?.grpc ?? '') : '';
        if (!ep || addr === '')
          throw failedPrecondition(
            'AGENT_UNREACHABLE',
            `the device-side agent of link "${open.link}" has no registered gRPC address`,
            { link: open.link },
          );
        const upstream = agentClients.get(addr).attachConsole();
        await new Promise<void>((resolve, reject) => {
          upstream.on('data', (m: AgentConsoleResponse) => {
            if (m.msg?.$case === 'attached')
              call.write({
                msg: { $case: 'attached', value: { ...m.msg.value, agent: m.msg.value.agent || ep.agent } },
              });
            else if (m.msg?.$case === 'output') call.write({ msg: { $case: 'output', value: m.msg.value } });
          });
          upstream.on('error', (err: { code?: number; details?: string }) => {
            if (signal.aborted) return resolve();
            reject(
              new ServerError(
                err.code ?? GrpcStatus.UNAVAILABLE,
                `agent ${ep.agent}: ${err.details ?? 'console failed'}`,
                { reason: 'AGENT_CONSOLE_FAILED', metadata: { agent: ep.agent } },
              ),
            );
          });
          upstream.on('end', () => resolve());
          call.on('data', (m: AttachConsoleRequest) => {
            if (m.msg?.$case === 'input')
              upstream.write({ msg: { $case: 'input', value: m.msg.value } } satisfies AgentConsoleRequest);
          });
          call.on('end', () => upstream.end());
          signal.addEventListener('abort', () => upstream.cancel(), { once: true });
          upstream.write({ msg: { $case: 'open', value: open } } satisfies AgentConsoleRequest);
        });
      },
    ),

    applyPolicy: kit.unary('ApplyPolicy', async (req: { policy: LinkPolicy | undefined; dryRun: boolean }) => {
      validatePolicy(req.policy);
      const p = req.policy as LinkPolicy;
      const res = await cache.putPolicy(
        { ...p, meta: { ...(p.meta as NonNullable<LinkPolicy['meta']>), managedBy: '' }, status: undefined },
        p.meta?.resourceVersion ?? '',
        { dryRun: req.dryRun },
      );
      return { policy: req.dryRun ? res.obj : reconciler.policyView(p.meta?.name ?? ''), changed: res.changed };
    }),
    getPolicy: kit.unary('GetPolicy', async (req: { name: string }) => {
      requireName(req.name);
      const p = reconciler.policyView(req.name);
      if (!p) throw notFound('policy', req.name);
      return { policy: p };
    }),
    listPolicies: kit.unary(
      'ListPolicies',
      async (req: { labelSelector: string; pageSize: number; pageToken: string }) => {
        const sel = selector(req.labelSelector);
        const items = [...cache.policies.keys()]
          .map((n) => reconciler.policyView(n))
          .filter((p): p is LinkPolicy => p !== undefined && selectorMatches(sel, p.meta?.labels ?? {}));
        const { page, next } = paginate('policies', items, (p) => p.meta?.name ?? '', req.pageSize, req.pageToken);
        return { policies: page, nextPageToken: next };
      },
    ),
    deletePolicy: kit.unary('DeletePolicy', async (req: { name: string; resourceVersion: string }) => {
      requireName(req.name);
      if (!cache.policies.has(req.name)) throw notFound('policy', req.name);
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
          const a = reconciler.agentView(name);
          if (!a) continue;
          if (req.rack !== '' && a.status?.identity?.rack !== req.rack) continue;
          if (req.phase !== AgentPhase.AGENT_PHASE_UNSPECIFIED && a.status?.phase !== req.phase) continue;
          if (sel && !selectorMatches(sel, reconciler.runtimes.get(name)?.labels ?? a.meta?.labels ?? {})) continue;
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
        await runWatch<Agent>(cache, 'agent', signal, {
          updatesOnly: call.request.updatesOnly,
          snapshot: () =>
            [...cache.agents.keys()]
              .sort()
              .map((n) => reconciler.agentView(n))
              .filter((a): a is Agent => a !== undefined),
          view: (ev) =>
            ev.type === WatchEventType.WATCH_EVENT_TYPE_DELETED
              ? (ev.last as Agent | undefined)
              : reconciler.agentView(ev.name),
          matches: (a) =>
            selectorMatches(sel, reconciler.runtimes.get(a.meta?.name ?? '')?.labels ?? a.meta?.labels ?? {}),
          write: (type, agent, resourceVersion) =>
            writeWithBackpressure(call, { type, agent, resourceVersion }, signal),
        });
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
      // Driver sides first (their users see the device go away), then by name.
      const order = [...reconciler.linksOf(req.name)].sort((a, b) => {
        const ra = cache.links.get(a)?.obj.spec?.endpoints.find((e) => e.agent === req.name)?.role ?? 0;
        const rb = cache.links.get(b)?.obj.spec?.endpoints.find((e) => e.agent === req.name)?.role ?? 0;
        return rb - ra || (a < b ? -1 : a > b ? 1 : 0);
      });
      await setAgentSpec(req.name, (s) => ((s.unschedulable = true), (s.drain = true)));
      // Cordoned first, so a policy does not stamp the links out again.
      for (const ln of order) await cache.deleteLink(ln, '');
      return { agent: reconciler.agentView(req.name), links: order };
    }),
    deleteAgent: kit.unary('DeleteAgent', async (req: { name: string; force: boolean }) => {
      getAgentOrThrow(req.name);
      const held = reconciler.linksOf(req.name).size;
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
  };
  return { name: 'vop.controller.v1.ControllerService', definition: ControllerServiceService, implementation };
}
