/**
 * Lifecycle of one link endpoint on this agent.
 *
 *   Pending      accepted and persisted; nothing opened yet.
 *   Connecting   window being created (device role) or waited for (driver role);
 *                the peer has not attached yet. PeerConnected=False says why.
 *   Negotiating  both sides are on the window; devices are being bound.
 *   Ready        every device runs and every queue is healthy.
 *   Degraded     the link is up but a device is not ready or a queue is broken;
 *                a device reset is scheduled.
 *   Resetting    the data plane is being torn down for a retry (peer restarted or
 *                went away, a reset was requested, a spec change needs a new window).
 *   Failed       the retry budget is spent or the link cannot be served here; only
 *                ResetLink or a new spec moves it on.
 *   Terminating  DeleteLink is tearing it down; the terminal state.
 *
 * Transitions (anything else is a bug and is refused):
 *   Pending     -> Connecting | Failed | Terminating
 *   Connecting  -> Negotiating | Resetting | Failed | Terminating
 *   Negotiating -> Ready | Degraded | Resetting | Failed | Terminating
 *   Ready       -> Degraded | Resetting | Terminating
 *   Degraded    -> Ready | Resetting | Failed | Terminating
 *   Resetting   -> Connecting | Failed | Terminating
 *   Failed      -> Connecting | Terminating
 */
import { ConditionStatus, LinkPhase, type Condition } from '../../../lib/proto/types';
import { conditionEqual } from '../../../lib/src/status-equal';

export type LinkState =
  'Pending' | 'Connecting' | 'Negotiating' | 'Ready' | 'Degraded' | 'Resetting' | 'Failed' | 'Terminating';

export const ALLOWED_TRANSITIONS: Readonly<Record<LinkState, readonly LinkState[]>> = {
  Pending: ['Connecting', 'Failed', 'Terminating'],
  Connecting: ['Negotiating', 'Resetting', 'Failed', 'Terminating'],
  Negotiating: ['Ready', 'Degraded', 'Resetting', 'Failed', 'Terminating'],
  Ready: ['Degraded', 'Resetting', 'Terminating'],
  Degraded: ['Ready', 'Resetting', 'Failed', 'Terminating'],
  Resetting: ['Connecting', 'Failed', 'Terminating'],
  Failed: ['Connecting', 'Terminating'],
  Terminating: [],
};

export const PHASE_OF: Readonly<Record<LinkState, LinkPhase>> = {
  Pending: LinkPhase.LINK_PHASE_PENDING,
  Connecting: LinkPhase.LINK_PHASE_CONNECTING,
  Negotiating: LinkPhase.LINK_PHASE_NEGOTIATING,
  Ready: LinkPhase.LINK_PHASE_READY,
  Degraded: LinkPhase.LINK_PHASE_DEGRADED,
  Resetting: LinkPhase.LINK_PHASE_RESETTING,
  Failed: LinkPhase.LINK_PHASE_FAILED,
  Terminating: LinkPhase.LINK_PHASE_TERMINATING,
};

export const LINK_STATES: readonly LinkState[] = Object.keys(ALLOWED_TRANSITIONS) as LinkState[];

/** Condition types a link reports. */
export type ConditionType = 'Ready' | 'PeerConnected' | 'DevicesReady' | 'QueueHealthy';
export const CONDITION_TYPES: readonly ConditionType[] = ['Ready', 'PeerConnected', 'DevicesReady', 'QueueHealthy'];

/** Conditions of one link, keeping lastTransitionTime across same-status updates. */
export class ConditionSet {
  private readonly items = new Map<ConditionType, Condition>();

  constructor(generation: number) {
    for (const t of CONDITION_TYPES) this.set(t, 'Unknown', 'Initializing', 'not evaluated yet', generation);
  }

  set(
    type: ConditionType,
    value: 'True' | 'False' | 'Unknown',
    reason: string,
    message: string,
    generation: number,
  ): boolean {
    const status =
      value === 'True'
        ? ConditionStatus.CONDITION_STATUS_TRUE
        : value === 'False'
          ? ConditionStatus.CONDITION_STATUS_FALSE
          : ConditionStatus.CONDITION_STATUS_UNKNOWN;
    const prev = this.items.get(type);
    const next: Condition = {
      type,
      status,
      reason,
      message,
      observedGeneration: BigInt(generation),
      lastTransitionTime: prev && prev.status === status ? prev.lastTransitionTime : new Date(),
    };
    if (prev && conditionEqual(prev, next)) return false;
    this.items.set(type, next);
    return true;
  }

  get(type: ConditionType): Condition | undefined {
    return this.items.get(type);
  }

  isTrue(type: ConditionType): boolean {
    return this.items.get(type)?.status === ConditionStatus.CONDITION_STATUS_TRUE;
  }

  list(): Condition[] {
    return CONDITION_TYPES.map((t) => this.items.get(t)).filter((c): c is Condition => c !== undefined);
  }
}
