/**
 * One process of the fleet simulator: N lightweight agents that speak the real agent
 * protocol (AgentSyncService.Sync: register, heartbeat, desired links, acks, status)
 * to a real vop-controller. A simulated agent "runs" a link by acknowledging it and
 * reporting it READY at once. Controlled by fleet-bench.ts over IPC.
 */
import { credentials, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';

import {
  nextAddressDelayMs,
  notLeaderDelayMs,
  retryAfterDelayMs,
  throttledDelayMs,
} from '../../agent/src/sync/sync-client';
import { errorInfoOf } from '../../lib/src/errors';

import { AgentSyncServiceClient, type SyncRequest, type SyncResponse } from '../../lib/proto/controller';
import { ConditionStatus, LinkPhase, type NodeRole, type AgentIdentity } from '../../lib/proto/types';

export interface WorkerInit {
  /** The controller replicas (admin sockets); an agent streams to `leader` first, and on to the next on any error. */
  readonly controllers: readonly string[];
  readonly leader: number;
  /** Agents this worker simulates. */
  readonly agents: readonly AgentIdentity[];
  /** Streams per gRPC connection. */
  readonly streamsPerChannel: number;
}

export type WorkerReport =
  | { type: 'registered'; count: number }
  | { type: 'stats'; links: number; acks: number; errors: number; throttled: number };

interface SimAgent {
  readonly id: AgentIdentity;
  call: ClientDuplexStream<SyncRequest, SyncResponse> | undefined;
  registered: boolean;
  /** Index into controllers. */
  target: number;
  /** NOT_LEADER answers in a row. */
  notLeader: number;
  readonly links: Map<string, bigint>;
  seq: bigint;
}

function run(init: WorkerInit): void {
  const clients = new Map<string, AgentSyncServiceClient>();
  const client = (i: number, target: number): AgentSyncServiceClient => {
    const k = Math.floor(i / init.streamsPerChannel);
    const key = `${target}/${k}`;
    let c = clients.get(key);
    // A distinct channel option gives each group of streams its own HTTP/2 connection.
    if (!c)
      clients.set(
        key,
        (c = new AgentSyncServiceClient(init.controllers[target] ?? '', credentials.createInsecure(), {
          'vop.sim.shard': k,
          'grpc.max_receive_message_length': 64 << 20,
        })),
      );
    return c;
  };
  const agents: SimAgent[] = init.agents.map((id) => ({
    id,
    call: undefined,
    registered: false,
    target: init.leader,
    notLeader: 0,
    links: new Map(),
    seq: 0n,
  }));
  let registered = 0;
  let acks = 0;
  let errors = 0;
  let throttledN = 0;
  let heartbeatMs = 5000;

  const connect = (a: SimAgent, i: number): void => {
    const call = client(i, a.target).sync();
    a.call = call;
    call.on('data', (res: SyncResponse) => {
      const m = res.msg;
      if (!m) return;
      if (m.$case === 'registered') {
        if (!a.registered) {
          a.registered = true;
          a.notLeader = 0;
          registered++;
        }
        const hb = m.value.heartbeatInterval;
        if (hb) heartbeatMs = Number(hb.seconds) * 1000 + Math.floor(hb.nanos / 1e6);
        return;
      }
      const d = m.value;
      if (d.fullSnapshot) a.links.clear();
      for (const l of d.upserts) a.links.set(l.meta?.name ?? '', l.meta?.generation ?? 0n);
      for (const n of d.deletes) a.links.delete(n);
      call.write({ msg: { $case: 'ack', value: { version: d.version, rejected: {}, held: '' } } });
      acks++;
      for (const l of d.upserts) {
        call.write({
          msg: {
            $case: 'status',
            value: {
              name: l.meta?.name ?? '',
              deleted: false,
              status: {
                phase: LinkPhase.LINK_PHASE_READY,
                observedGeneration: l.meta?.generation ?? 0n,
                conditions: [
                  {
                    type: 'Ready',
                    status: ConditionStatus.CONDITION_STATUS_TRUE,
                    reason: 'Simulated',
                    message: '',
                    observedGeneration: l.meta?.generation ?? 0n,
                    lastTransitionTime: undefined,
                  },
                ],
                stream: undefined,
                devices: [],
                epoch: 1n,
                resetCount: 0,
                lastTransitionTime: undefined,
                endpointPhases: {},
                transport: undefined,
              },
            },
          },
        });
      }
    });
    call.on('error', (err: ServiceError) => {
      errors++;
      if (a.registered) registered--;
      a.registered = false;
      // Another replica may lead now. A real agent follows NOT_LEADER's address (these dial admin
      // sockets, so they take the next one) with the agent's own delays (sync-client.ts).
      const info = errorInfoOf(err);
      // Throttled by the leader (REGISTRATIONS_THROTTLED): back to it at the time it named.
      const throttled = throttledDelayMs(info);
      if (throttled !== undefined) {
        throttledN++;
        setTimeout(() => connect(a, i), throttled).unref();
        return;
      }
      a.target = (a.target + 1) % init.controllers.length;
      const notLeader = info?.reason === 'NOT_LEADER';
      // As the agent's count: only a registration resets it (an unreachable replica in between does not).
      if (notLeader) a.notLeader++;
      const delay = notLeader ? (retryAfterDelayMs(info) ?? notLeaderDelayMs(a.notLeader)) : nextAddressDelayMs();
      setTimeout(() => connect(a, i), delay).unref();
    });
    call.write({
      msg: {
        $case: 'register',
        value: {
          identity: a.id,
          addresses: { grpc: '', metrics: `127.0.0.1:${9000 + (i % 1000)}`, dataPlane: '', dataPlanePorts: undefined },
          capabilities: { transports: [1], deviceKinds: [1, 2, 3], netAdmin: false },
          version: 'sim',
          ackedVersion: 0n,
          links: [],
          acceptsChunkedDesired: false,
          appliedIdentity: undefined,
        },
      },
    });
  };

  // Open streams in small batches so the registration storm is paced like a rack power-on.
  let next = 0;
  const opener = setInterval(() => {
    for (let k = 0; k < 200 && next < agents.length; k++, next++) connect(agents[next] as SimAgent, next);
    if (next >= agents.length) clearInterval(opener);
  }, 20);

  // One timer heartbeats every agent, spread over the interval.
  let cursor = 0;
  setInterval(() => {
    const perTick = Math.ceil(agents.length / Math.max(1, heartbeatMs / 100));
    for (let k = 0; k < perTick; k++) {
      const a = agents[cursor++ % agents.length];
      if (a?.registered) a.call?.write({ msg: { $case: 'heartbeat', value: { sequence: ++a.seq } } });
    }
  }, 100);

  setInterval(() => {
    process.send?.({ type: 'registered', count: registered } satisfies WorkerReport);
    let links = 0;
    for (const a of agents) links += a.links.size;
    process.send?.({ type: 'stats', links, acks, errors, throttled: throttledN } satisfies WorkerReport);
  }, 500);
}

process.on(
  'message',
  (msg: { init?: { controllers: string[]; leader: number; agents: unknown[]; streamsPerChannel: number } }) => {
    if (!msg.init) return;
    const agents = msg.init.agents.map((a) => {
      const x = a as { nodeName: string; rack: string; slot: number; role: NodeRole; hostNode: string };
      return { nodeName: x.nodeName, rack: x.rack, slot: x.slot, role: x.role, hostNode: x.hostNode, labels: {} };
    });
    run({
      controllers: msg.init.controllers,
      leader: msg.init.leader,
      agents,
      streamsPerChannel: msg.init.streamsPerChannel,
    });
  },
);
process.on('disconnect', () => process.exit(0));
