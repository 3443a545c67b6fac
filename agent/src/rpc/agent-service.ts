/**
 * AgentService handlers. Each handler validates its request, delegates to the link
 * manager and returns; errors go through the one boundary in lib/src/rpc-handlers.
 */
import type { UntypedServiceImplementation } from '@grpc/grpc-js';

import {
  AgentServiceService,
  type AddDeviceRequest,
  type ApplyLinkRequest,
  type DeleteLinkRequest,
  type GetInfoResponse,
  type GetLinkRequest,
  type GetStatsRequest,
  type ListLinksRequest,
  type RemoveDeviceRequest,
  type ResetLinkRequest,
  type WatchLinksRequest,
} from '../../../lib/proto/agent';
import { type AgentAddresses, type AgentIdentity, type Capabilities, type Condition } from '../../../lib/proto/types';
import { alreadyExists, failedPrecondition, invalidArgument, notFound, ViolationList } from '../../../lib/src/errors';
import { DEFAULT_LIMITS, type Limits } from '../../../lib/src/limits';
import { type HandlerKit } from '../../../lib/src/rpc-handlers';
import { parseSelector, selectorMatches, SelectorSyntaxError } from '../../../lib/src/selector';
import { clientKey, StreamQuota } from '../../../lib/src/stream-quota';
import { checkDevice, checkName } from '../../../lib/src/validate';
import type { ServiceBinding } from '../../../lib/src/grpc-server';
import type { LinkManager } from '../links/link-manager';
import type { LinkOwner } from '../links/link-manager-api';
import { attachConsole, ConsoleSessions } from './console-attach';
import { watchLinks } from './watch-links';

export interface AgentInfoSource {
  identity(): AgentIdentity;
  capabilities(): Capabilities;
  addresses(): AgentAddresses;
  readonly version: string;
  readonly nativeVersion: string;
  readonly startTime: Date;
  /** The agent's own conditions (the controller sync's store identity rule); none when standalone. */
  conditions?(): Condition[];
}

const DIRECT: LinkOwner = { kind: 'direct' };

function requireName(field: string, value: string): void {
  const v = new ViolationList();
  checkName(v, field, value);
  v.throwIfAny();
}

export function parseLabelSelector(text: string, field = 'label_selector'): ReturnType<typeof parseSelector> {
  try {
    return parseSelector(text);
  } catch (err) {
    if (err instanceof SelectorSyntaxError) throw invalidArgument([{ field, description: err.message }]);
    throw err;
  }
}

/** The spec of a listed link; a link whose state file was unreadable has none (StateUnreadable). */
function specOf(link: NonNullable<ReturnType<LinkManager['get']>>, name: string): NonNullable<typeof link.spec> {
  if (!link.spec)
    throw failedPrecondition(
      'STATE_UNREADABLE',
      `link "${name}" could not be restored from its state file; apply it again or delete it`,
      { link: name },
    );
  return link.spec;
}

export function agentServiceBinding(
  kit: HandlerKit,
  info: AgentInfoSource,
  links: LinkManager,
  limits: Limits = DEFAULT_LIMITS,
): ServiceBinding {
  const consoles = new ConsoleSessions();
  /** Watch and console streams per client identity (maxStreamsPerClient). */
  const streams = new StreamQuota(limits.maxStreamsPerClient, 'watch and console streams');
  const withStreamSlot = async (call: Parameters<typeof clientKey>[0], fn: () => Promise<void>): Promise<void> => {
    const release = streams.acquire(clientKey(call));
    try {
      await fn();
    } finally {
      release();
    }
  };

  function existing(name: string, field: string): NonNullable<ReturnType<LinkManager['get']>> {
    requireName(field, name);
    const link = links.get(name);
    if (!link) throw notFound('link', name);
    return link;
  }

  const implementation: UntypedServiceImplementation = {
    getInfo: kit.unary('GetInfo', async (): Promise<GetInfoResponse> => ({
      identity: info.identity(),
      capabilities: info.capabilities(),
      version: info.version,
      nativeVersion: info.nativeVersion,
      startTime: info.startTime,
      addresses: info.addresses(),
      conditions: info.conditions?.() ?? [],
    })),

    applyLink: kit.unary('ApplyLink', async (req: ApplyLinkRequest) =>
      links.apply(req.link as NonNullable<ApplyLinkRequest['link']>, {
        owner: DIRECT,
        force: req.force,
        dryRun: req.dryRun,
      }),
    ),

    getLink: kit.unary('GetLink', async (req: GetLinkRequest) => ({ link: existing(req.name, 'name') })),

    listLinks: kit.unary('ListLinks', async (req: ListLinksRequest) => {
      const sel = parseLabelSelector(req.labelSelector);
      const all = links.list().filter((l) => selectorMatches(sel, l.meta?.labels ?? {}));
      const start = req.pageToken === '' ? 0 : all.findIndex((l) => (l.meta?.name ?? '') > req.pageToken);
      const from = start < 0 ? all.length : start;
      const page = req.pageSize === 0 ? all.slice(from) : all.slice(from, from + req.pageSize);
      const last = page[page.length - 1];
      const more = req.pageSize !== 0 && from + page.length < all.length;
      return { links: page, nextPageToken: more && last ? (last.meta?.name ?? '') : '' };
    }),

    deleteLink: kit.unary('DeleteLink', async (req: DeleteLinkRequest) => {
      requireName('name', req.name);
      await links.delete(req.name, { owner: DIRECT, force: req.force, resourceVersion: req.resourceVersion });
      return {};
    }),

    resetLink: kit.unary('ResetLink', async (req: ResetLinkRequest) => {
      requireName('name', req.name);
      return { link: await links.reset(req.name, req.reason) };
    }),

    addDevice: kit.unary('AddDevice', async (req: AddDeviceRequest) => {
      const v = new ViolationList();
      checkName(v, 'link', req.link);
      if (!req.device) v.add('device', 'is required');
      else checkDevice(v, 'device', req.device, limits);
      v.throwIfAny();
      const device = req.device as NonNullable<AddDeviceRequest['device']>;
      const link = existing(req.link, 'link');
      const spec = specOf(link, req.link);
      if (spec.devices.some((d) => d.name === device.name))
        throw alreadyExists('device', device.name, `link "${req.link}" already carries it`);
      const meta = { ...(link.meta as NonNullable<typeof link.meta>), resourceVersion: req.resourceVersion };
      const res = await links.apply(
        { meta, spec: { ...spec, devices: [...spec.devices, device] }, status: undefined },
        { owner: DIRECT, force: req.force, dryRun: false },
      );
      return { link: res.link };
    }),

    removeDevice: kit.unary('RemoveDevice', async (req: RemoveDeviceRequest) => {
      const v = new ViolationList();
      checkName(v, 'link', req.link);
      checkName(v, 'device', req.device);
      v.throwIfAny();
      const link = existing(req.link, 'link');
      const spec = specOf(link, req.link);
      if (!spec.devices.some((d) => d.name === req.device)) throw notFound('device', req.device);
      if (spec.devices.length === 1) {
        throw failedPrecondition(
          'LAST_DEVICE',
          `device "${req.device}" is the last device of link "${req.link}"; delete the link instead`,
          { link: req.link, device: req.device },
        );
      }
      const meta = { ...(link.meta as NonNullable<typeof link.meta>), resourceVersion: req.resourceVersion };
      const res = await links.apply(
        { meta, spec: { ...spec, devices: spec.devices.filter((d) => d.name !== req.device) }, status: undefined },
        { owner: DIRECT, force: req.force, dryRun: false },
      );
      return { link: res.link };
    }),

    watchLinks: kit.serverStream('WatchLinks', async (call, signal) => {
      const req = call.request as WatchLinksRequest;
      const selector = parseLabelSelector(req.labelSelector);
      await withStreamSlot(call, () =>
        watchLinks(links, selector, req.updatesOnly, call, signal, limits.watchBacklogEvents),
      );
    }),

    getStats: kit.unary('GetStats', async (req: GetStatsRequest) => {
      requireName('link', req.link);
      return { link: req.link, devices: links.stats(req.link), sampleTime: new Date() };
    }),

    attachConsole: kit.bidi('AttachConsole', async (call, signal) =>
      withStreamSlot(call, () =>
        attachConsole(links, consoles, info.identity().nodeName, call, signal, limits.consoleBacklogBytes),
      ),
    ),
  };
  return { name: 'vop.agent.v1.AgentService', definition: AgentServiceService, implementation };
}
