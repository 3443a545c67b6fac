/**
 * AgentService handlers. Each handler validates its request, delegates to the link
 * manager and returns; errors go through the one boundary in lib/src/rpc-handlers.
 */
import type { UntypedServiceImplementation } from '@grpc/grpc-js';

import { AgentServiceService, type GetInfoResponse, type WatchLinksResponse } from '../../../lib/gen/vop/agent/v1/agent';
import { WatchEventType, type AgentAddresses, type AgentIdentity, type Capabilities } from '../../../lib/gen/vop/types/v1/types';
import { unimplemented } from '../../../lib/src/errors';
import { writeWithBackpressure, type HandlerKit } from '../../../lib/src/rpc-handlers';
import { validateLink } from '../../../lib/src/validate';
import type { ServiceBinding } from '../../../lib/src/grpc-server';

export interface AgentInfoSource {
  identity(): AgentIdentity;
  capabilities(): Capabilities;
  addresses(): AgentAddresses;
  readonly version: string;
  readonly nativeVersion: string;
  readonly startTime: Date;
}

function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

export function agentServiceBinding(kit: HandlerKit, info: AgentInfoSource): ServiceBinding {
  const implementation: UntypedServiceImplementation = {
    getInfo: kit.unary('GetInfo', async (): Promise<GetInfoResponse> => ({
      identity: info.identity(),
      capabilities: info.capabilities(),
      version: info.version,
      nativeVersion: info.nativeVersion,
      startTime: info.startTime,
      addresses: info.addresses(),
    })),
    applyLink: kit.unary('ApplyLink', async (req: { link: Parameters<typeof validateLink>[0] }) => {
      validateLink(req.link);
      throw unimplemented('ApplyLink');
    }),
    getLink: kit.unary('GetLink', async () => {
      throw unimplemented('GetLink');
    }),
    listLinks: kit.unary('ListLinks', async () => ({ links: [], nextPageToken: '' })),
    deleteLink: kit.unary('DeleteLink', async () => {
      throw unimplemented('DeleteLink');
    }),
    resetLink: kit.unary('ResetLink', async () => {
      throw unimplemented('ResetLink');
    }),
    addDevice: kit.unary('AddDevice', async () => {
      throw unimplemented('AddDevice');
    }),
    removeDevice: kit.unary('RemoveDevice', async () => {
      throw unimplemented('RemoveDevice');
    }),
    watchLinks: kit.serverStream('WatchLinks', async (call, signal) => {
      const synced: WatchLinksResponse = { type: WatchEventType.WATCH_EVENT_TYPE_SYNCED, link: undefined, event: undefined, resourceVersion: '0' };
      await writeWithBackpressure(call, synced, signal);
      await waitForAbort(signal);
    }),
    getStats: kit.unary('GetStats', async () => {
      throw unimplemented('GetStats');
    }),
    attachConsole: kit.bidi('AttachConsole', async () => {
      throw unimplemented('AttachConsole');
    }),
  };
  return { name: 'vop.agent.v1.AgentService', definition: AgentServiceService, implementation };
}
