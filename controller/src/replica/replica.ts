/**
 * This controller as one replica of several: it campaigns for leadership on the store and runs
 * a leader term (leader-term.ts) while it leads.
 *
 * Every replica keeps the whole desired state in its object cache, current through the store's
 * watch, and serves reads from it. Only the leader writes, runs the reconcile loop and serves
 * the agents' Sync streams: a replica that does not lead refuses mutations, Sync streams and
 * console attaches with UNAVAILABLE, reason NOT_LEADER and the leader's address in the
 * ErrorInfo metadata (`leader`), so agents and vopctl go there (docs/controller.md, "Replicas").
 *
 * Leadership is checked, not believed: every write carries the term's fence, and the elector's
 * state() reports a lease that may have run out before any timer fires (a paused process that
 * wakes up stops at once). A new leader first waits until its cache holds the store's current
 * generation, then builds its term. A store that turns out to be another one (its identity
 * changed under the watch) restarts the term, so every agent registers again against it.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

import { ServerError } from '../../../lib/src/errors';
import type { Logger } from '../../../lib/src/logger';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import type { ObjectCache } from '../state/object-cache';
import type { Fence, LeaderElector, LeaderState } from '../store/leader-election';
import { LeaderTerm, type LeaderTermOptions } from './leader-term';

/** Between attempts of a new leader to catch up with the store. */
const CATCH_UP_RETRY_MS = 500;

function sameFence(a: Fence, b: Fence): boolean {
  return a.key === b.key && a.revision === b.revision;
}

export interface ReplicaOptions extends LeaderTermOptions {
  /** The address agents and clients reach this replica at (the elector's value). */
  readonly address: string;
}

export class Replica {
  private term: LeaderTerm | undefined;
  /** Bumped on every change of leadership: a catch-up that finishes late sees it moved on. */
  private epoch = 0;
  private unobserve: (() => void) | undefined;
  private unwatchIdentity: (() => void) | undefined;
  private closed = false;
  private refusal: { readonly leader: string; readonly err: ServerError } | undefined;

  constructor(
    private readonly cache: ObjectCache,
    readonly elector: LeaderElector,
    private readonly metrics: ControllerMetrics,
    private readonly log: Logger,
    private readonly opts: ReplicaOptions,
  ) {}

  get address(): string {
    return this.opts.address;
  }

  start(): void {
    this.cache.setWriteGuard(
      () => this.requireLeader().fence,
      () => this.fenced(),
    );
    this.unwatchIdentity = this.cache.onIdentityChange((id, previous) => {
      this.log.warn(
        { code: 'STORE_REPLACED', clusterId: id.clusterId, previous: previous.clusterId },
        'the store under this replica is another one (wiped or replaced): every agent registers again',
      );
      this.restartTerm();
    });
    this.unobserve = this.elector.observe((s) => this.onState(s));
    this.elector.campaign();
  }

  /** Steps down (the next replica takes over at once) and stops leader work. */
  async stop(): Promise<void> {
    this.closed = true;
    this.unobserve?.();
    this.unwatchIdentity?.();
    this.epoch++;
    const t = this.term;
    this.term = undefined;
    await Promise.all([t?.stop(this.notLeaderError('this replica is shutting down')), this.elector.resign()]);
    this.metrics.setLeadership(false, '');
  }

  /** The leader's address as this replica knows it; "" while none is known. */
  leaderAddress(): string {
    const s = this.elector.state();
    return s.role === 'leader' ? this.opts.address : s.role === 'follower' ? s.leader : '';
  }

  /** The current term when this replica leads (its lease still valid), else undefined. */
  current(): LeaderTerm | undefined {
    const t = this.term;
    if (!t || t.ended) return undefined;
    const s = this.elector.state();
    if (s.role !== 'leader' || !sameFence(s.fence, t.fence)) return undefined;
    return t;
  }

  /** The current term, or UNAVAILABLE (NOT_LEADER, the leader's address in `leader`). */
  requireLeader(): LeaderTerm {
    const t = this.current();
    if (t) return t;
    throw this.notLeaderError();
  }

  notLeaderError(why?: string): ServerError {
    const leader = this.leaderAddress();
    // Refusals come by the thousand a second while a fleet looks for a new leader: one error per
    // leader address (an Error captures a stack trace when built; the error is never changed).
    const cached = this.refusal;
    if (why === undefined && cached?.leader === leader) return cached.err;
    const err = this.buildNotLeaderError(leader, why);
    if (why === undefined) this.refusal = { leader, err };
    return err;
  }

  private buildNotLeaderError(leader: string, why: string | undefined): ServerError {
    const message =
      why ??
      (leader === this.opts.address
        ? `this replica (${this.opts.address}) is taking over leadership; retry in a moment`
        : leader !== ''
          ? `this replica (${this.opts.address}) does not lead; the leader is ${leader}`
          : `this replica (${this.opts.address}) does not lead and no leader is elected yet; retry in a moment`);
    return new ServerError(GrpcStatus.UNAVAILABLE, message, {
      reason: 'NOT_LEADER',
      metadata: { leader, replica: this.opts.address },
    });
  }

  private onState(s: LeaderState): void {
    this.metrics.setLeadership(s.role === 'leader', this.leaderAddressOf(s));
    if (s.role === 'leader') {
      if (this.term && !this.term.ended && sameFence(this.term.fence, s.fence)) return;
      this.endTerm('leadership moved to a new term');
      this.log.info(
        { fence: s.fence.key, revision: String(s.fence.revision) },
        'elected leader; catching up with the store',
      );
      void this.beginTerm(s.fence, ++this.epoch);
      return;
    }
    this.epoch++;
    if (this.term) {
      this.log.warn({ role: s.role, leader: s.role === 'follower' ? s.leader : '' }, 'lost leadership: stepping down');
      this.endTerm('this replica lost leadership');
    }
  }

  private leaderAddressOf(s: LeaderState): string {
    return s.role === 'leader' ? this.opts.address : s.role === 'follower' ? s.leader : '';
  }

  /** Catches up with the store, then starts a term, unless leadership moved on meanwhile. */
  private async beginTerm(fence: Fence, epoch: number): Promise<void> {
    let caughtUp = { readMs: 0, waitMs: 0 };
    for (;;) {
      if (epoch !== this.epoch || this.closed) return;
      try {
        // Over the elector's own connection when it has one: a new leader's main thread is busy
        // refusing the fleet, and a read behind that traffic took up to 13 s at 10,000 agents.
        caughtUp = await this.cache.catchUp(this.elector.readIdentity);
        break;
      } catch (err) {
        this.log.warn({ err }, 'new leader could not catch up with the store yet; retrying');
        await new Promise((r) => setTimeout(r, CATCH_UP_RETRY_MS));
      }
    }
    const s = this.elector.state();
    if (epoch !== this.epoch || this.closed || s.role !== 'leader' || !sameFence(s.fence, fence)) return;
    const term = new LeaderTerm(fence, this.cache, this.metrics, this.log, this.opts);
    this.term = term;
    term.start();
    this.log.info(
      {
        generation: String(this.cache.identity().generation),
        revision: String(this.cache.revision()),
        identityReadMs: caughtUp.readMs,
        watchWaitMs: caughtUp.waitMs,
      },
      'leading: reconciling and serving agents',
    );
  }

  private endTerm(why: string): void {
    const t = this.term;
    this.term = undefined;
    if (t) void t.stop(this.notLeaderError(`${why}; reconnect to the leader`));
  }

  /** The store refused this term's fence: leadership is gone whatever the elector believes yet. */
  private fenced(): void {
    if (!this.term) return;
    this.log.warn({ code: 'FENCED' }, 'the store refused this leader term (its leadership is gone): stepping down');
    this.epoch++;
    this.endTerm('the store fenced this leader term');
  }

  /** Same leadership, another store: a new term, so every agent registers again against it. */
  private restartTerm(): void {
    const s = this.elector.state();
    if (!this.term || s.role !== 'leader') return;
    this.endTerm('the store was replaced');
    void this.beginTerm(s.fence, ++this.epoch);
  }
}
