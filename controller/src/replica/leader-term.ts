/**
 * One term of leadership: what only the leader runs. A replica that becomes leader builds a
 * fresh term (a new FleetState: every agent's lease starts now, so a takeover never expires the
 * fleet at once), starts its reconcile loop and serves the agents' Sync streams through its
 * sessions. When leadership ends, the term closes every Sync stream (agents go to the new
 * leader) and stops its loop; its fence makes any write still in flight fail.
 */
import type { ServerError } from '../../../lib/src/errors';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import { Reconciler } from '../reconcile/reconciler';
import { FleetState } from '../state/fleet-state';
import type { ObjectCache } from '../state/object-cache';
import type { Fence } from '../store/leader-election';
import type { RegistrationAdmissionOptions } from '../sync/registration-admission';
import { SyncSessions } from '../sync/sync-sessions';

export interface LeaderTermOptions {
  readonly leaseMs: number;
  readonly limits: Limits;
  /** Registrations admitted per second on this term's Sync streams (sync/registration-admission.ts). */
  readonly admission: RegistrationAdmissionOptions;
}

export class LeaderTerm {
  readonly fleet: FleetState;
  readonly reconciler: Reconciler;
  readonly sessions: SyncSessions;
  private stopped: Promise<void> | undefined;

  constructor(
    readonly fence: Fence,
    cache: ObjectCache,
    metrics: ControllerMetrics,
    log: Logger,
    opts: LeaderTermOptions,
  ) {
    this.fleet = new FleetState(cache, { leaseMs: opts.leaseMs });
    this.reconciler = new Reconciler(cache, this.fleet, metrics, log.child({ component: 'reconciler' }), {
      limits: opts.limits,
    });
    this.sessions = new SyncSessions(
      cache,
      this.fleet,
      this.reconciler.queues,
      metrics,
      log.child({ component: 'sync' }),
      {
        leaseMs: opts.leaseMs,
        limits: opts.limits,
        admission: opts.admission,
      },
    );
  }

  start(): void {
    this.reconciler.start();
  }

  /** Ends the term: every Sync stream ends with `err`, the loop stops (idempotent). */
  stop(err: ServerError): Promise<void> {
    this.stopped ??= (async () => {
      this.sessions.closeAll(err);
      await this.reconciler.stop();
    })();
    return this.stopped;
  }

  get ended(): boolean {
    return this.stopped !== undefined;
  }
}
