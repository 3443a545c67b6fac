/**
 * ControllerService and AgentSyncService handlers.
 */
import type { UntypedServiceImplementation } from '@grpc/grpc-js';

import { AgentSyncServiceService, ControllerServiceService, type WatchLinksResponse } from '../../../lib/gen/vop/controller/v1/controller';
import { WatchEventType } from '../../../lib/gen/vop/types/v1/types';
import { unimplemented } from '../../../lib/src/errors';
import type { ServiceBinding } from '../../../lib/src/grpc-server';
import { writeWithBackpressure, type HandlerKit } from '../../../lib/src/rpc-handlers';
import { validateLink, validatePolicy } from '../../../lib/src/validate';

function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

export function controllerServiceBinding(kit: HandlerKit): ServiceBinding {
  const notYet = (name: string) =>
    kit.unary(name, async () => {
      throw unimplemented(name);
    });
  const implementation: UntypedServiceImplementation = {
    applyLink: kit.unary('ApplyLink', async (req: { link: Parameters<typeof validateLink>[0] }) => {
      validateLink(req.link);
      throw unimplemented('ApplyLink');
    }),
    getLink: notYet('GetLink'),
    listLinks: notYet('ListLinks'),
    deleteLink: notYet('DeleteLink'),
    watchLinks: kit.serverStream('WatchLinks', async (call, signal) => {
      const synced: WatchLinksResponse = { type: WatchEventType.WATCH_EVENT_TYPE_SYNCED, link: undefined, resourceVersion: '0' };
      await writeWithBackpressure(call, synced, signal);
      await waitForAbort(signal);
    }),
    getLinkStats: notYet('GetLinkStats'),
    attachConsole: kit.bidi('AttachConsole', async () => {
      throw unimplemented('AttachConsole');
    }),
    applyPolicy: kit.unary('ApplyPolicy', async (req: { policy: Parameters<typeof validatePolicy>[0] }) => {
      validatePolicy(req.policy);
      throw unimplemented('ApplyPolicy');
    }),
    getPolicy: notYet('GetPolicy'),
    listPolicies: notYet('ListPolicies'),
    deletePolicy: notYet('DeletePolicy'),
    getAgent: notYet('GetAgent'),
    listAgents: notYet('ListAgents'),
    watchAgents: kit.serverStream('WatchAgents', async () => {
      throw unimplemented('WatchAgents');
    }),
    cordonAgent: notYet('CordonAgent'),
    uncordonAgent: notYet('UncordonAgent'),
    drainAgent: notYet('DrainAgent'),
    deleteAgent: notYet('DeleteAgent'),
  };
  return { name: 'vop.controller.v1.ControllerService', definition: ControllerServiceService, implementation };
}

export function agentSyncServiceBinding(kit: HandlerKit): ServiceBinding {
  const implementation: UntypedServiceImplementation = {
    sync: kit.bidi('Sync', async () => {
      throw unimplemented('Sync');
    }),
  };
  return { name: 'vop.controller.v1.AgentSyncService', definition: AgentSyncServiceService, implementation };
}
