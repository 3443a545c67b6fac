/**
 * ControllerService.AttachConsole: relays a console session to the agent that holds the
 * console, on the caller's behalf and with no more than the caller's rights.
 *
 *   - Only admins and readers attach; a reader never gets the writer slot (the open the
 *     agent sees asks for write only when the caller is an admin who asked for it).
 *   - The session goes only to the device-side agent of the link (the one that runs
 *     the console's backend), only when that agent reports the link, and only to its
 *     verified gRPC address; an agent answering under another name is cut off.
 *   - Backpressure both ways: when the client does not drain its stream the relay stops
 *     reading from the agent (whose own per-session backlog then ends the session), and
 *     when the agent does not drain, the relay stops reading the client's input. Nothing
 *     is buffered beyond the streams' own flow-control windows.
 */
import { status as GrpcStatus, type ClientDuplexStream, type ServerDuplexStream } from '@grpc/grpc-js';

import type {
  AttachConsoleRequest as AgentConsoleRequest,
  AttachConsoleResponse as AgentConsoleResponse,
} from '../../../lib/proto/agent';
import type { AttachConsoleRequest, AttachConsoleResponse } from '../../../lib/proto/controller';
import { Role, type ConsoleOpen, type Link } from '../../../lib/proto/types';
import { assertConsoleWriteAllowed, callerRole } from '../../../lib/src/auth';
import { assertConsoleCaller } from '../../../lib/src/console-access';
import { failedPrecondition, invalidArgument, notFound, ServerError, ViolationList } from '../../../lib/src/errors';
import type { Logger } from '../../../lib/src/logger';
import { checkName } from '../../../lib/src/validate';
import { usableAddress } from '../sync/address-verification';
import type { FleetViews } from '../views/fleet-views';
import type { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import type { AgentClients } from './agent-clients';

export interface ConsoleRelayDeps {
  readonly cache: ObjectCache;
  readonly fleet: FleetState;
  readonly views: FleetViews;
  readonly agentClients: AgentClients;
  readonly log: Logger;
}

type Downstream = ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>;
type Upstream = ClientDuplexStream<AgentConsoleRequest, AgentConsoleResponse>;

function firstMessage(call: Downstream, signal: AbortSignal): Promise<AttachConsoleRequest | undefined> {
  return new Promise((resolve) => {
    const done = (m: AttachConsoleRequest | undefined): void => {
      call.off('data', onData);
      call.off('end', onEnd);
      signal.removeEventListener('abort', onEnd);
      resolve(m);
    };
    const onData = (m: AttachConsoleRequest): void => done(m);
    const onEnd = (): void => done(undefined);
    call.on('data', onData);
    call.on('end', onEnd);
    signal.addEventListener('abort', onEnd, { once: true });
  });
}

/** The console device the open names (or the link's first console) and the agent that serves it. */
function target(link: Link, open: ConsoleOpen): { device: string; agent: string } {
  const devices = link.spec?.devices ?? [];
  const device = open.device || (devices.find((d) => d.kind?.$case === 'console')?.name ?? '');
  const d = devices.find((x) => x.name === device);
  if (!d) throw notFound('device', device === '' ? '(a console)' : device);
  if (d.kind?.$case !== 'console')
    throw failedPrecondition('NOT_A_CONSOLE', `device "${device}" of link "${open.link}" is not a console`, {
      link: open.link,
      device,
    });
  const ep = (link.spec?.endpoints ?? []).find((e) => e.role === Role.ROLE_DEVICE);
  if (!ep)
    throw failedPrecondition('NO_DEVICE_SIDE', `link "${open.link}" has no device-side endpoint`, { link: open.link });
  return { device, agent: ep.agent };
}

export async function relayConsole(call: Downstream, signal: AbortSignal, deps: ConsoleRelayDeps): Promise<void> {
  assertConsoleCaller(call.metadata);
  const first = await firstMessage(call, signal);
  if (!first) return;
  if (first.msg?.$case !== 'open')
    throw invalidArgument([{ field: 'msg', description: 'the first message must be open' }]);
  const open = first.msg.value;
  const v = new ViolationList();
  checkName(v, 'open.link', open.link);
  if (open.device !== '') checkName(v, 'open.device', open.device);
  v.throwIfAny();
  assertConsoleWriteAllowed(call.metadata, open);
  const link = deps.views.linkView(open.link);
  if (!link) throw notFound('link', open.link);
  const { device, agent } = target(link, open);
  if (!deps.fleet.runtimes.get(agent)?.observed.has(open.link))
    throw failedPrecondition(
      'LINK_NOT_ON_AGENT',
      `agent "${agent}" (the device side of link "${open.link}") does not report running it; the console is not relayed`,
      { link: open.link, agent },
    );
  const { address, problem } = usableAddress(deps.cache.agents.get(agent)?.obj, 'grpc');
  if (problem !== null)
    throw failedPrecondition('AGENT_ADDRESS_UNVERIFIED', `agent "${agent}" is not dialled: it ${problem}`, {
      link: open.link,
      agent,
    });
  // Readers asked for write were refused above; the agent sees write only for an admin who asked.
  const writer = open.write && callerRole(call.metadata) === 'admin';
  const upstream: Upstream = deps.agentClients.get(address).attachConsole();
  deps.log.info(
    { link: open.link, device, agent, writer, role: callerRole(call.metadata), peer: call.getPeer() },
    'console relay opened',
  );
  await new Promise<void>((resolve, reject) => {
    const fail = (err: ServerError): void => {
      upstream.cancel();
      reject(err);
    };
    upstream.on('data', (m: AgentConsoleResponse) => {
      let out: AttachConsoleResponse | undefined;
      if (m.msg?.$case === 'attached') {
        if (m.msg.value.agent !== '' && m.msg.value.agent !== agent) {
          fail(
            failedPrecondition(
              'AGENT_IDENTITY_MISMATCH',
              `the agent at ${address} answered as "${m.msg.value.agent}", not "${agent}"; the console is not relayed`,
              { link: open.link, agent },
            ),
          );
          return;
        }
        out = { msg: { $case: 'attached', value: { ...m.msg.value, agent } } };
      } else if (m.msg?.$case === 'output') out = { msg: { $case: 'output', value: m.msg.value } };
      if (!out || signal.aborted) return;
      // Backpressure: stop reading the agent until the client drains.
      if (!call.write(out)) {
        upstream.pause();
        call.once('drain', () => upstream.resume());
      }
    });
    upstream.on('error', (err: { code?: number; details?: string }) => {
      if (signal.aborted) return resolve();
      reject(
        new ServerError(err.code ?? GrpcStatus.UNAVAILABLE, `agent ${agent}: ${err.details ?? 'console failed'}`, {
          reason: 'AGENT_CONSOLE_FAILED',
          metadata: { agent },
        }),
      );
    });
    upstream.on('end', () => resolve());
    call.on('data', (m: AttachConsoleRequest) => {
      if (m.msg?.$case !== 'input') return;
      if (!writer) {
        fail(
          failedPrecondition('NOT_CONSOLE_WRITER', 'this session did not ask for the writer slot (open.write)', {
            link: open.link,
            device,
          }),
        );
        return;
      }
      // Backpressure: stop reading the client until the agent drains.
      if (!upstream.write({ msg: { $case: 'input', value: m.msg.value } })) {
        call.pause();
        upstream.once('drain', () => call.resume());
      }
    });
    call.on('end', () => upstream.end());
    signal.addEventListener('abort', () => upstream.cancel(), { once: true });
    upstream.write({
      msg: { $case: 'open', value: { link: open.link, device, write: writer, replayBytes: open.replayBytes } },
    });
  });
}
