/**
 * Aggregates what the two agents of a link report into the controller's LinkStatus:
 * phase, per-endpoint phases, devices (from the device side), and three conditions
 * an operator can act on:
 *
 *   AgentsReady  True when both agents hold a valid lease; Unknown when a lease expired
 *                (AgentLeaseExpired); False when an agent never registered (AgentNotRegistered).
 *   Synced       True when both agents acknowledged the current generation; False while
 *                waiting (AwaitingAck) or when an agent rejected it (RejectedByAgent).
 *   Ready        True when Synced and both endpoints report LINK_PHASE_READY; Unknown when
 *                an agent's lease expired; False otherwise (EndpointNotReady, ...).
 *
 * Conditions keep lastTransitionTime while their status does not change.
 */
import { ConditionStatus, LinkPhase, Role, type Condition, type Link, type LinkStatus } from '../../../lib/proto/types';

export interface EndpointView {
  readonly agent: string;
  readonly role: Role;
  readonly registered: boolean;
  readonly leaseValid: boolean;
  /** The agent acknowledged the link's current generation. */
  readonly applied: boolean;
  /** Reason the agent gave for rejecting the link, if it did. */
  readonly rejected: string | undefined;
  /** What the agent last reported for the link (undefined: nothing yet). */
  readonly observed: LinkStatus | undefined;
}

const PHASE_ORDER: readonly LinkPhase[] = [
  LinkPhase.LINK_PHASE_FAILED,
  LinkPhase.LINK_PHASE_TERMINATING,
  LinkPhase.LINK_PHASE_PENDING,
  LinkPhase.LINK_PHASE_UNSPECIFIED,
  LinkPhase.LINK_PHASE_RESETTING,
  LinkPhase.LINK_PHASE_CONNECTING,
  LinkPhase.LINK_PHASE_NEGOTIATING,
  LinkPhase.LINK_PHASE_DEGRADED,
  LinkPhase.LINK_PHASE_READY,
];

function worst(a: LinkPhase, b: LinkPhase): LinkPhase {
  return PHASE_ORDER.indexOf(a) <= PHASE_ORDER.indexOf(b) ? a : b;
}

export function phaseName(p: LinkPhase): string {
  return (LinkPhase[p] ?? String(p)).replace(/^LINK_PHASE_/, '');
}

function cond(
  prev: readonly Condition[] | undefined,
  type: string,
  status: ConditionStatus,
  reason: string,
  message: string,
  generation: bigint,
  now: Date,
): Condition {
  const old = prev?.find((c) => c.type === type);
  const same = old !== undefined && old.status === status;
  return {
    type,
    status,
    reason,
    message,
    observedGeneration: generation,
    lastTransitionTime: same ? old.lastTransitionTime : now,
  };
}

export function aggregateLinkStatus(
  link: Link,
  eps: readonly EndpointView[],
  prev: LinkStatus | undefined,
  now: Date,
): LinkStatus {
  const gen = link.meta?.generation ?? 0n;
  const pc = prev?.conditions;
  const endpointPhases: Record<string, LinkPhase> = {};
  let phase = LinkPhase.LINK_PHASE_READY;
  for (const e of eps) {
    const p = e.observed?.phase ?? LinkPhase.LINK_PHASE_PENDING;
    endpointPhases[e.agent] = p;
    phase = worst(phase, p);
  }
  if (eps.length === 0) phase = LinkPhase.LINK_PHASE_PENDING;

  const unregistered = eps.filter((e) => !e.registered).map((e) => e.agent);
  const expired = eps.filter((e) => e.registered && !e.leaseValid).map((e) => e.agent);
  const agentsReady =
    unregistered.length > 0
      ? cond(
          pc,
          'AgentsReady',
          ConditionStatus.CONDITION_STATUS_FALSE,
          'AgentNotRegistered',
          `agent ${unregistered.join(', ')} has not registered with the controller; start it with --controller pointing here`,
          gen,
          now,
        )
      : expired.length > 0
        ? cond(
            pc,
            'AgentsReady',
            ConditionStatus.CONDITION_STATUS_UNKNOWN,
            'AgentLeaseExpired',
            `agent ${expired.join(', ')} missed its lease; the link state there is unknown until it reconnects`,
            gen,
            now,
          )
        : cond(
            pc,
            'AgentsReady',
            ConditionStatus.CONDITION_STATUS_TRUE,
            'AgentsHeartbeating',
            'both agents hold a valid lease',
            gen,
            now,
          );

  const rejected = eps.filter((e) => e.rejected !== undefined);
  const waiting = eps.filter((e) => !e.applied && e.rejected === undefined).map((e) => e.agent);
  const synced =
    rejected.length > 0
      ? cond(
          pc,
          'Synced',
          ConditionStatus.CONDITION_STATUS_FALSE,
          'RejectedByAgent',
          rejected.map((e) => `agent ${e.agent} rejected generation ${gen}: ${e.rejected ?? ''}`).join('; '),
          gen,
          now,
        )
      : waiting.length > 0
        ? cond(
            pc,
            'Synced',
            ConditionStatus.CONDITION_STATUS_FALSE,
            'AwaitingAck',
            `waiting for agent ${waiting.join(', ')} to apply generation ${gen}`,
            gen,
            now,
          )
        : cond(
            pc,
            'Synced',
            ConditionStatus.CONDITION_STATUS_TRUE,
            'Applied',
            `both agents run generation ${gen}`,
            gen,
            now,
          );

  let ready: Condition;
  if (
    expired.length > 0 ||
    (unregistered.length === 0 && agentsReady.status === ConditionStatus.CONDITION_STATUS_UNKNOWN)
  ) {
    ready = cond(
      pc,
      'Ready',
      ConditionStatus.CONDITION_STATUS_UNKNOWN,
      'AgentLeaseExpired',
      `agent ${expired.join(', ')} is not reporting; last known phase ${phaseName(phase)}`,
      gen,
      now,
    );
  } else if (agentsReady.status !== ConditionStatus.CONDITION_STATUS_TRUE) {
    ready = cond(
      pc,
      'Ready',
      ConditionStatus.CONDITION_STATUS_FALSE,
      agentsReady.reason,
      agentsReady.message,
      gen,
      now,
    );
  } else if (synced.status !== ConditionStatus.CONDITION_STATUS_TRUE) {
    ready = cond(pc, 'Ready', ConditionStatus.CONDITION_STATUS_FALSE, synced.reason, synced.message, gen, now);
  } else {
    const notReady = eps.filter((e) => e.observed?.phase !== LinkPhase.LINK_PHASE_READY);
    if (notReady.length === 0)
      ready = cond(
        pc,
        'Ready',
        ConditionStatus.CONDITION_STATUS_TRUE,
        'LinkReady',
        'both endpoints report READY',
        gen,
        now,
      );
    else {
      const why = notReady.map((e) => {
        const r = e.observed?.conditions.find(
          (c) => c.type === 'Ready' && c.status !== ConditionStatus.CONDITION_STATUS_TRUE,
        );
        return `agent ${e.agent} reports ${phaseName(e.observed?.phase ?? LinkPhase.LINK_PHASE_PENDING)}${r ? ` (${r.reason}: ${r.message})` : ''}`;
      });
      ready = cond(pc, 'Ready', ConditionStatus.CONDITION_STATUS_FALSE, 'EndpointNotReady', why.join('; '), gen, now);
    }
  }
  if (
    expired.length === 0 &&
    unregistered.length === 0 &&
    phase === LinkPhase.LINK_PHASE_READY &&
    ready.status !== ConditionStatus.CONDITION_STATUS_TRUE
  ) {
    phase = LinkPhase.LINK_PHASE_PENDING;
  }

  const deviceSide = eps.find((e) => e.role === Role.ROLE_DEVICE) ?? eps[0];
  const samePhase = prev?.phase === phase;
  return {
    phase,
    observedGeneration: gen,
    conditions: [ready, agentsReady, synced],
    devices: deviceSide?.observed?.devices ?? [],
    epoch: deviceSide?.observed?.epoch ?? 0n,
    resetCount: eps.reduce((n, e) => n + (e.observed?.resetCount ?? 0), 0),
    lastTransitionTime: samePhase ? prev.lastTransitionTime : now,
    endpointPhases,
    stream: deviceSide?.observed?.stream,
    // The device side's window and doorbells (each agent reports its own; GetLink on an agent has both).
    transport: deviceSide?.observed?.transport,
  };
}
