/**
 * One process of the fleet simulator: N lightweight agents that speak the real agent
 * protocol (AgentSyncService.Sync: register, heartbeat, desired links, acks, status)
 * to a real vop-controller. A simulated agent "runs" a link by acknowledging it and
 * reporting it READY at once. Controlled by fleet-bench.ts over IPC.
 */
import { credentials, type ClientDuplexStream } from '@grpc/grpc-js';

import { AgentSyncServiceClient, type SyncRequest, type SyncResponse } from '../../lib/proto/controller';
import { ConditionStatus, LinkPhase, type NodeRole, type AgentIdentity } from '../../lib/proto/types';

export interface WorkerInit {
  readonly controller: string;
  /** Agents this worker simulates. */
  readonly agents: readonly AgentIdentity[];
  /** Streams per gRPC connection. */
  readonly streamsPerChannel: number;
}

export type WorkerReport =
  { type: 'registered'; count: number } | { type: 'stats'; links: number; acks: number; errors: number };

interface SimAgent {
  readonly id: AgentIdentity;
  call: ClientDuplexStream<SyncRequest, SyncResponse> | undefined;
  registered: boolean;
  readonly links: Map<string, bigint>;
  seq: bigint;
}

function run(init: WorkerInit): void {
  const clients: AgentSyncServiceClient[] = [];
  const client = (i: number): AgentSyncServiceClient => {
    const k = Math.floor(i / init.streamsPerChannel);
    // A distinct channel option gives each group of streams its own HTTP/2 connection.
    clients[k] ??= new AgentSyncServiceClient(init.controller, credentials.createInsecure(), {
      'vop.sim.shard': k,
      'grpc.max_receive_message_length': 64 << 20,
    });
    return clients[k];
  };
  const agents: SimAgent[] = init.agents.map((id) => ({
    id,
    call: undefined,
    registered: false,
    links: new Map(),
    seq: 0n,
  }));
  let registered = 0;
  let acks = 0;
  let errors = 0;
  let heartbeatMs = 5000;

  const connect = (a: SimAgent, i: number): void => {
    const call = client(i).sync();
    a.call = call;
    call.on('data', (res: SyncResponse) => {
      const m = res.msg;
      if (!m) return;
      if (m.$case === 'registered') {
        if (!a.registered) {
          a.registered = true;
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
      call.write({ msg: { $case: 'ack', value: { version: d.version, rejected: {} } } });
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
    call.on('error', () => {
      errors++;
      a.registered = false;
      registered--;
      setTimeout(() => connect(a, i), 1000 + Math.random() * 1000).unref();
    });
    call.write({
      msg: {
        $case: 'register',
        value: {
          identity: a.id,
          addresses: { grpc: '', metrics: `127.0.0.1:${9000 + (i % 1000)}` },
          capabilities: { transports: [1], deviceKinds: [1, 2, 3], netAdmin: false },
          version: 'sim',
          ackedVersion: 0n,
          links: [],
          acceptsChunkedDesired: false,
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
    process.send?.({ type: 'stats', links, acks, errors } satisfies WorkerReport);
  }, 500);
}

process.on('message', (msg: { init?: { controller: string; agents: unknown[]; streamsPerChannel: number } }) => {
  if (!msg.init) return;
  const agents = msg.init.agents.map((a) => {
    const x = a as { nodeName: string; rack: string; slot: number; role: NodeRole; hostNode: string };
    return { nodeName: x.nodeName, rack: x.rack, slot: x.slot, role: x.role, hostNode: x.hostNode, labels: {} };
  });
  run({ controller: msg.init.controller, agents, streamsPerChannel: msg.init.streamsPerChannel });
});
process.on('disconnect', () => process.exit(0));
