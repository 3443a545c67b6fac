/**
 * A link this agent knows of but cannot run after a restart: its state file could not be
 * read back (truncated, corrupt, another format; the file was kept aside), or the stored
 * spec is refused by this agent's checks now (say a host path outside the roots after a
 * config change). It never disappears silently: it stays in ListLinks, GetLink, WatchLinks
 * and /metrics in phase Failed with the condition StateUnreadable=True and no data plane,
 * until it is applied again (which replaces it) or deleted.
 */
import { ConditionStatus, type Condition, type Link, type LinkSpec, type ObjectMeta } from '../../../lib/proto/types';
import { redactSpec } from '../../../lib/src/redact';
import { PHASE_OF, type LinkState } from './link-lifecycle';

/** Condition type of a quarantined link, and its reasons. */
export const STATE_UNREADABLE = 'StateUnreadable';
export type QuarantineReason = 'StateFileUnreadable' | 'StoredSpecRefused';

export class QuarantinedLink {
  readonly meta: ObjectMeta;
  private readonly spec: LinkSpec | undefined;
  private readonly since = new Date();

  constructor(
    readonly name: string,
    readonly reason: QuarantineReason,
    readonly message: string,
    /** The stored link when its file was readable (StoredSpecRefused). */
    stored?: Link,
  ) {
    this.meta = stored?.meta ?? {
      name,
      labels: {},
      annotations: {},
      generation: 0n,
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: '',
    };
    this.spec = stored?.spec;
  }

  private conditions(): Condition[] {
    const generation = this.meta.generation;
    const at = this.since;
    return [
      {
        type: 'Ready',
        status: ConditionStatus.CONDITION_STATUS_FALSE,
        reason: this.reason,
        message: this.message,
        observedGeneration: generation,
        lastTransitionTime: at,
      },
      {
        type: STATE_UNREADABLE,
        status: ConditionStatus.CONDITION_STATUS_TRUE,
        reason: this.reason,
        message: this.message,
        observedGeneration: generation,
        lastTransitionTime: at,
      },
    ];
  }

  toLink(): Link {
    return {
      meta: this.meta,
      spec: redactSpec(this.spec),
      status: {
        phase: PHASE_OF.Failed,
        observedGeneration: this.meta.generation,
        conditions: this.conditions(),
        devices: [],
        epoch: 0n,
        resetCount: 0,
        lastTransitionTime: this.since,
        stream: undefined,
        transport: undefined,
        endpointPhases: {},
      },
    };
  }

  /** Same shape as LinkRuntime.metricsView(). */
  metricsView(): {
    state: LinkState;
    conditions: Condition[];
    resets: number;
    lastTransition: Date;
    pollNs: bigint;
    sleepNs: bigint;
    doorbells: null;
  } {
    return {
      doorbells: null,
      state: 'Failed',
      conditions: this.conditions(),
      resets: 0,
      lastTransition: this.since,
      pollNs: 0n,
      sleepNs: 0n,
    };
  }
}
