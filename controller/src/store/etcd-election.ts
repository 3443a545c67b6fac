/**
 * Leader election on etcd, etcd's own recipe: every candidate holds a lease and puts a
 * key P election/NAME/LEASE bound to it; the key with the lowest create_revision
 * leads. The leader's fence is its key with that create_revision: a commit compares
 * them in its transaction, so once the lease is gone (expired, revoked, key deleted)
 * the old leader's writes fail, whatever it believes.
 *
 * A candidate also stops believing on its own: its lease runs out, at the latest,
 * TTL after the keepalive that last renewed it was *sent*, which is never later than
 * etcd's own expiry. A paused process (SIGSTOP, a long GC) that wakes up past that
 * reports 'candidate' from state() before any timer runs. Then it campaigns again
 * with a new lease.
 *
 * Written here rather than taken from etcd3's Election, which has had reports of two
 * leaders after etcd restarts (microsoft/etcd3#158, #176) and loses its lease only
 * 2 x TTL after the last renewal.
 */
import { performance } from 'node:perf_hooks';

import {
  SortOrder,
  SortTarget,
  CompareResult,
  CompareTarget,
  type Etcd3,
  type IDuplexStream,
  type ILeaseKeepAliveRequest,
  type ILeaseKeepAliveResponse,
} from 'etcd3';

import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';
import { prefixEnd, withRetry } from './etcd-client';
import type { EtcdKeys } from './etcd-keys';
import { RangeWatcher } from './etcd-range-watcher';
import {
  DEFAULT_LEADER_TTL_SECONDS,
  LeaderStateBox,
  type Fence,
  type LeaderElector,
  type LeaderElectorOptions,
  type LeaderState,
} from './leader-election';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Between campaigns after a lost or failed session: 200 ms doubling to 2 s; a session that ran resets it. */
const CAMPAIGN_BACKOFF: BackoffPolicy = { initialMs: 200, maxMs: 2000, jitter: [1, 1] };

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** One lease and one candidate key; ends when either is gone or on resign. */
class Session {
  leaseId = '';
  key = Buffer.alloc(0);
  createRevision = 0n;
  /** performance.now() after which the lease may have expired on etcd. */
  leaseDeadline = 0;
  private ended = false;
  private endedResolve: () => void = () => undefined;
  readonly endedPromise = new Promise<void>((r) => (this.endedResolve = r));
  private keepAlive: KeepAliveStream | null = null;
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private readonly sentAt: number[] = [];
  private watcher: RangeWatcher | null = null;
  private recomputing = false;
  private recomputeAgain = false;
  private released = false;

  constructor(
    private readonly client: Etcd3,
    private readonly prefix: Buffer,
    private readonly value: string,
    private readonly ttlSeconds: number,
    private readonly timeoutMs: number,
    private readonly box: LeaderStateBox,
    private readonly onError: (err: Error) => void,
    private readonly onRenewed: (leaseDeadline: number) => void = () => undefined,
  ) {}

  /** Resolves when the session has ended (lease lost, key gone, resign). */
  async run(): Promise<void> {
    const t0 = performance.now();
    const grant = await withRetry('lease grant', this.timeoutMs, false, (deadline) =>
      this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds }, { deadline }),
    );
    this.leaseId = grant.ID;
    if (this.ended) {
      // Resigned while the grant was in flight: release() found no lease to revoke.
      await this.revokeLease();
      return;
    }
    this.renewed(t0, Number(grant.TTL));
    this.startKeepAlive();
    this.key = Buffer.concat([this.prefix, Buffer.from(BigInt(grant.ID).toString(16))]);
    // Idempotent, so it may be sent again: the failure branch reads the key this lease already created.
    const res = await withRetry('campaign', this.timeoutMs, false, (deadline) =>
      this.client.kv.txn(
        {
          compare: [{ key: this.key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 }],
          success: [{ request_put: { key: this.key, value: Buffer.from(this.value), lease: this.leaseId } }],
          failure: [{ request_range: { key: this.key } }],
        },
        { deadline },
      ),
    );
    const created = res.succeeded ? res.header.revision : res.responses[0]?.response_range.kvs[0]?.create_revision;
    if (created === undefined) throw new Error('etcd: the candidate key vanished while campaigning');
    this.createRevision = BigInt(created);
    if (this.ended) return;
    this.watcher = new RangeWatcher(
      this.client,
      this.prefix,
      prefixEnd(this.prefix),
      BigInt(res.header.revision) + 1n,
      {
        onEvents: () => this.recompute(),
        onConnected: () => this.recompute(),
        // The history does not matter here, only who leads now.
        onCompacted: () => this.watcher?.restart(0n),
        onError: this.onError,
      },
    );
    this.recompute();
    await this.endedPromise;
  }

  /** True while the lease cannot have expired on etcd. */
  leaseValid(): boolean {
    return performance.now() < this.leaseDeadline;
  }

  lost(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    if (reason !== 'resigned') this.onError(new Error(`leadership session ended: ${reason}`));
    this.endedResolve();
  }

  /** Releases timers and streams; `revoke` deletes the key at once (resign). */
  async release(revoke: boolean): Promise<void> {
    this.lost('resigned');
    if (this.released) return;
    this.released = true;
    if (this.keepAliveTimer) clearInterval(this.keepAliveTimer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.keepAliveTimer = null;
    this.expiryTimer = null;
    const ka = this.keepAlive;
    this.keepAlive = null;
    ka?.cancel();
    this.watcher?.close();
    this.watcher = null;
    if (revoke) await this.revokeLease();
  }

  private async revokeLease(): Promise<void> {
    if (this.leaseId === '') return;
    try {
      await withRetry('lease revoke', this.timeoutMs, false, (deadline) =>
        this.client.leaseClient.leaseRevoke({ ID: this.leaseId }, { deadline }),
      );
    } catch (err) {
      // The lease then expires on its own after its TTL.
      if (!/lease not found/.test(String(err))) this.onError(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private renewed(sentAt: number, ttlSeconds: number): void {
    this.leaseDeadline = Math.max(this.leaseDeadline, sentAt + ttlSeconds * 1000);
    this.onRenewed(this.leaseDeadline);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(() => this.checkLease(), Math.max(0, this.leaseDeadline - performance.now()) + 1);
  }

  private checkLease(): void {
    if (this.ended) return;
    if (!this.leaseValid()) {
      this.box.set({ role: 'candidate' });
      this.lost('lease not renewed in time');
      return;
    }
    this.expiryTimer = setTimeout(() => this.checkLease(), Math.max(0, this.leaseDeadline - performance.now()) + 1);
  }

  private startKeepAlive(): void {
    if (this.ended || this.keepAliveTimer) return;
    const interval = (this.ttlSeconds * 1000) / 3;
    this.keepAliveTimer = setInterval(() => this.sendKeepAlive(), interval);
    void this.openKeepAlive();
  }

  private async openKeepAlive(): Promise<void> {
    if (this.ended || this.keepAlive) return;
    let stream: KeepAliveStream;
    try {
      stream = await this.client.leaseClient.leaseKeepAlive();
    } catch (err) {
      this.onError(err instanceof Error ? err : new Error(String(err)));
      return; // the next tick tries again
    }
    if (this.ended) {
      stream.on('error', () => undefined);
      stream.cancel();
      return;
    }
    this.keepAlive = stream;
    this.sentAt.length = 0;
    stream.on('data', (res: ILeaseKeepAliveResponse) => {
      const sent = this.sentAt.shift() ?? performance.now();
      if (res.TTL === '0' || Number(res.TTL) <= 0) {
        this.box.set({ role: 'candidate' });
        this.lost('lease expired or revoked');
        return;
      }
      this.renewed(sent, Number(res.TTL));
    });
    const drop = (err: Error): void => {
      if (this.keepAlive !== stream) return;
      this.keepAlive = null;
      stream.cancel();
      if (!this.ended) this.onError(err);
    };
    stream.on('error', drop);
    stream.on('end', () => drop(new Error('lease keepalive stream ended')));
    this.sendKeepAlive();
  }

  private sendKeepAlive(): void {
    if (this.ended) return;
    if (!this.keepAlive) {
      void this.openKeepAlive();
      return;
    }
    this.sentAt.push(performance.now());
    this.keepAlive.write({ ID: this.leaseId });
  }

  /** Who leads now: the lowest create_revision; and does my key still exist. Coalesced. */
  private recompute(): void {
    if (this.recomputing) {
      this.recomputeAgain = true;
      return;
    }
    this.recomputing = true;
    void (async () => {
      try {
        do {
          this.recomputeAgain = false;
          if (this.ended) return;
          const end = prefixEnd(this.prefix);
          const res = await withRetry('election state', this.timeoutMs, false, (deadline) =>
            this.client.kv.txn(
              {
                compare: [],
                success: [
                  {
                    request_range: {
                      key: this.prefix,
                      range_end: end,
                      sort_order: SortOrder.Ascend,
                      sort_target: SortTarget.Create,
                      limit: 1,
                    },
                  },
                  { request_range: { key: this.key, keys_only: true } },
                ],
                failure: [],
              },
              { deadline },
            ),
          );
          if (this.ended) return;
          const first = res.responses[0]?.response_range.kvs[0];
          const mine = res.responses[1]?.response_range.kvs[0];
          if (!mine || BigInt(mine.create_revision) !== this.createRevision) {
            this.box.set({ role: 'candidate' });
            this.lost('candidate key deleted');
            return;
          }
          if (first && first.key.equals(this.key)) {
            if (this.leaseValid())
              this.box.set({
                role: 'leader',
                fence: { key: this.key.toString('utf8'), revision: this.createRevision },
              });
          } else if (first) {
            this.box.set({ role: 'follower', leader: first.value.toString('utf8') });
          } else {
            this.box.set({ role: 'candidate' });
          }
        } while (this.recomputeAgain);
      } catch (err) {
        this.onError(err instanceof Error ? err : new Error(String(err)));
        // Unknown state: not a leader until etcd answers again.
        if (this.box.get().role === 'leader') this.box.set({ role: 'candidate' });
        setTimeout(() => this.recompute(), 500);
      } finally {
        this.recomputing = false;
      }
    })();
  }
}

export class EtcdElector implements LeaderElector {
  private readonly box = new LeaderStateBox();
  private running = false;
  private session: Session | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private readonly ttlSeconds: number;
  private readonly prefix: Buffer;
  /** Told every time the lease was renewed: performance.now() after which it may have expired. */
  onRenewed: (leaseDeadline: number) => void = () => undefined;

  constructor(
    private readonly client: Etcd3,
    keys: EtcdKeys,
    readonly value: string,
    private readonly opts: LeaderElectorOptions,
    private readonly timeoutMs: number,
    private readonly onClose: (e: EtcdElector) => void,
  ) {
    this.ttlSeconds = Math.max(1, Math.round(opts.ttlSeconds ?? DEFAULT_LEADER_TTL_SECONDS));
    this.prefix = keys.election(opts.name ?? 'controller');
  }

  campaign(): void {
    if (this.running) return;
    this.running = true;
    this.box.set({ role: 'candidate' });
    this.loopDone = this.loop();
  }

  private async loop(): Promise<void> {
    const backoff = new Backoff(CAMPAIGN_BACKOFF);
    while (this.running) {
      const s = new Session(
        this.client,
        this.prefix,
        this.value,
        this.ttlSeconds,
        this.timeoutMs,
        this.box,
        (err) => this.opts.onError?.(err),
        (deadline) => this.onRenewed(deadline),
      );
      this.session = s;
      try {
        await s.run();
        backoff.reset();
      } catch (err) {
        this.opts.onError?.(err instanceof Error ? err : new Error(String(err)));
      }
      if (this.session === s) this.session = null;
      // A lost session's lease may still live on etcd (a failed keepalive): revoke it, best effort.
      await s.release(true);
      if (!this.running) break;
      this.box.set({ role: 'candidate' });
      await sleep(backoff.next());
    }
  }

  state(): LeaderState {
    const st = this.box.get();
    if (st.role === 'leader' && !(this.session?.leaseValid() ?? false)) {
      this.box.set({ role: 'candidate' });
      this.session?.lost('lease not renewed in time');
      return this.box.get();
    }
    return st;
  }

  observe(listener: (state: LeaderState) => void): () => void {
    return this.box.observe(listener);
  }

  /** Ends the current session if it is the one of `fence` (another thread found its lease run out). */
  dropTerm(fence: Fence): void {
    const s = this.session;
    if (s && s.key.toString('utf8') === fence.key && s.createRevision === fence.revision) {
      this.box.set({ role: 'candidate' });
      s.lost('lease not renewed in time');
    }
  }

  async resign(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    const s = this.session;
    this.session = null;
    // Revoking the lease deletes the key: the next candidate leads without waiting for the TTL.
    if (s) await s.release(true);
    await this.loopDone;
    this.box.set({ role: 'stopped' });
  }

  async close(): Promise<void> {
    await this.resign();
    this.onClose(this);
  }
}
