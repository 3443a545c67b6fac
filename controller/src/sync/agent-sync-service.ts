/**
 * AgentSyncService.Sync: one long-lived stream per agent. The first message must be a
 * Register (within REGISTER_TIMEOUT_MS); the controller answers Registered (lease and
 * heartbeat interval) and then DesiredLinks (snapshot, then deltas). Heartbeats,
 * status changes and acks go to the sync sessions (sync-sessions.ts), which update the
 * controller's run-time view of the agent.
 */
import { status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';

import { AgentSyncServiceService, type SyncRequest, type SyncResponse } from '../../../lib/proto/controller';
import { peerName } from '../../../lib/src/auth';
import { invalidArgument, ServerError } from '../../../lib/src/errors';
import type { ServiceBinding } from '../../../lib/src/grpc-server';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import type { HandlerKit } from '../../../lib/src/rpc-handlers';
import { NAME_RE } from '../../../lib/src/validate';
import { validateRegistration } from '../../../lib/src/validate-registration';
import { peerEvidence, verifyAddress } from './address-verification';
import type { DesiredVersion, SyncSessionHandle } from '../state/agent-runtime';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import { chunkDesired } from './desired-chunks';
import { RetryPacer } from './registration-admission';
import type { SyncSessions } from './sync-sessions';

export const REGISTER_TIMEOUT_MS = 10_000;

let nextSessionId = 1;

export interface AgentSyncDeps {
  /**
   * The sessions of the current leader term; throws (UNAVAILABLE, NOT_LEADER, with the leader's
   * address) on a replica that does not lead: agents go to the leader.
   */
  readonly sessions: () => SyncSessions;
  readonly metrics: ControllerMetrics;
  readonly log: Logger;
  /** Certificate names allowed to register any node name (admins); others only their own. */
  readonly adminNames: readonly string[];
  readonly limits: Pick<Limits, 'maxLinksPerAgent'>;
  /** Largest DesiredLinks message; larger versions are split for agents that accept parts. */
  readonly chunkBytes: number;
  /**
   * A replica that does not lead (or is still taking over) hands refused agents retry times this
   * many a second apart (`retryAfterMs` with NOT_LEADER), so a fleet looking for its new leader
   * neither starves this replica nor arrives at it all at once when it leads; 0: none.
   */
  readonly refusalsPerSecond: number;
}

/** `err` with a paced retry time when it is a NOT_LEADER refusal (built without a stack: thousands a second). */
function pacedRefusal(err: unknown, pacer: RetryPacer | undefined): unknown {
  if (!pacer || !(err instanceof ServerError) || err.reason !== 'NOT_LEADER') return err;
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return new ServerError(err.code, err.message, {
      reason: err.reason,
      metadata: { ...err.metadata, retryAfterMs: String(pacer.next()) },
    });
  } finally {
    Error.stackTraceLimit = limit;
  }
}

export function agentSyncServiceBinding(kit: HandlerKit, deps: AgentSyncDeps): ServiceBinding {
  const { metrics } = deps;
  const log = deps.log;
  const pacer = deps.refusalsPerSecond > 0 ? new RetryPacer(deps.refusalsPerSecond) : undefined;
  const sync = kit.bidi('Sync', async (call: ServerDuplexStream<SyncRequest, SyncResponse>, signal: AbortSignal) => {
    // Only the leader serves Sync streams; the stream belongs to its term's sessions.
    let sessions: SyncSessions;
    try {
      sessions = deps.sessions();
    } catch (err) {
      throw pacedRefusal(err, pacer);
    }
    let agent: string | undefined;
    let closeReason: string | undefined;
    let chunked = false;
    const session: SyncSessionHandle = {
      id: nextSessionId++,
      sendDesired(d: DesiredVersion) {
        if (call.cancelled || call.destroyed || call.writableEnded) return;
        const { version, fullSnapshot, upserts, deletes, storeIdentity, adopt } = d;
        if (!chunked) {
          call.write({
            msg: {
              $case: 'desired',
              value: { version, fullSnapshot, upserts, deletes, more: false, storeIdentity, adopt },
            },
          });
          return;
        }
        const parts = chunkDesired(d, deps.chunkBytes);
        if (parts.length > 1)
          log.info(
            { agent, version: String(version), parts: parts.length, upserts: upserts.length },
            'desired links sent in parts',
          );
        for (const value of parts) call.write({ msg: { $case: 'desired', value } });
      },
      close(reason: string, err?: ServerError) {
        closeReason = reason;
        finish?.(err ?? new ServerError(GrpcStatus.ABORTED, reason, { reason: 'SESSION_REPLACED' }));
      },
    };
    let finish: ((err?: unknown) => void) | undefined;
    const done = new Promise<void>((resolve, reject) => {
      finish = (err?: unknown) =>
        err ? reject(err instanceof Error ? err : new Error('sync stream failed')) : resolve();
    });
    const registerTimer = setTimeout(
      () =>
        finish?.(
          new ServerError(GrpcStatus.DEADLINE_EXCEEDED, `no Register within ${REGISTER_TIMEOUT_MS} ms`, {
            reason: 'REGISTER_TIMEOUT',
          }),
        ),
      REGISTER_TIMEOUT_MS,
    );
    registerTimer.unref();
    const onAbort = (): void => finish?.();
    signal.addEventListener('abort', onAbort, { once: true });
    call.on('end', () => finish?.());
    call.on('data', (req: SyncRequest) => {
      try {
        const m = req.msg;
        if (!m) return;
        metrics.syncMessages.inc({
          type:
            m.$case === 'register'
              ? 'register'
              : m.$case === 'heartbeat'
                ? 'heartbeat'
                : m.$case === 'status'
                  ? 'status'
                  : 'ack',
        });
        if (m.$case === 'register') {
          if (agent !== undefined)
            throw invalidArgument([{ field: 'register', description: 'sent twice on one stream' }]);
          // Everything an agent registers is checked before anything is stored or indexed.
          validateRegistration(m.value, deps.limits);
          const name = m.value.identity?.nodeName ?? '';
          // With mutual TLS an agent registers under its own certificate name, so one
          // compromised card cannot impersonate another node.
          const peer = peerName(call.getAuthContext());
          if (peer !== null && peer !== name && !deps.adminNames.includes(peer)) {
            throw new ServerError(
              GrpcStatus.PERMISSION_DENIED,
              `certificate "${peer}" may not register as agent "${name}": an agent registers under its own certificate name`,
              {
                reason: 'AGENT_IDENTITY_MISMATCH',
                metadata: { agent: name, certificate: peer },
              },
            );
          }
          clearTimeout(registerTimer);
          agent = name;
          chunked = m.value.acceptsChunkedDesired;
          const evidence = peerEvidence(call);
          const addresses = {
            grpc: verifyAddress(m.value.addresses?.grpc ?? '', evidence),
            metrics: verifyAddress(m.value.addresses?.metrics ?? '', evidence),
          };
          for (const [which, c] of Object.entries(addresses))
            if (c.problem !== null)
              log.warn(
                { agent: name, code: 'AGENT_ADDRESS_UNVERIFIED', address: which, reason: c.problem },
                'registered address not verified: not dialled, not published',
              );
          const registered = sessions.register(session, m.value, addresses);
          call.write({ msg: { $case: 'registered', value: registered } });
          log.info(
            { agent: name, ackedVersion: String(m.value.ackedVersion), reportedLinks: m.value.links.length },
            'agent registered',
          );
          return;
        }
        if (agent === undefined)
          throw invalidArgument([{ field: 'msg', description: 'the first message of a Sync stream must be register' }]);
        if (m.$case === 'heartbeat') sessions.heartbeat(agent);
        else if (m.$case === 'status') {
          if (!NAME_RE.test(m.value.name))
            throw invalidArgument([{ field: 'status.name', description: 'must be a DNS-1123 label (a link name)' }]);
          sessions.linkStatusUpdate(agent, m.value);
        } else sessions.ack(agent, m.value);
      } catch (err) {
        finish?.(err);
      }
    });
    try {
      await done;
    } finally {
      clearTimeout(registerTimer);
      signal.removeEventListener('abort', onAbort);
      if (agent !== undefined) {
        sessions.streamClosed(agent, session);
        log.info({ agent, reason: closeReason ?? 'stream ended' }, 'agent sync stream closed');
      }
    }
  });
  return { name: 'vop.controller.v1.AgentSyncService', definition: AgentSyncServiceService, implementation: { sync } };
}
