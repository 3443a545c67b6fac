/**
 * Leader election on etcd in a worker thread of its own (etcd-election-worker.ts, with its own
 * etcd client): the lease keepalives and the campaign keep running while the main thread is
 * busy for seconds (a takeover of 10,000 agents), so a busy leader does not lose its lease and
 * a busy follower still takes over.
 *
 * Fencing is unchanged: the leader's writes compare its key's create_revision in etcd, whatever
 * any thread believes. The main thread trusts a 'leader' state only while the worker's shared
 * memory says that term is still led and its lease cannot have expired (state() reads both
 * synchronously, so a process woken from SIGSTOP reports 'candidate' before any message or timer
 * runs, and tells the worker to drop that term).
 */
import path from 'node:path';
import { Worker } from 'node:worker_threads';

import type { EtcdStoreConfig } from './etcd-client';
import {
  hrNowUs,
  SHARED_DEADLINE_US,
  SHARED_TERM,
  type ElectionWorkerData,
  type FromElectionWorker,
  type ToElectionWorker,
} from './etcd-election-worker';
import {
  DEFAULT_LEADER_TTL_SECONDS,
  LeaderStateBox,
  type LeaderElector,
  type LeaderElectorOptions,
  type LeaderState,
} from './leader-election';
import { StoreUnavailableError, type StoreIdentity } from './store';

export class ThreadedEtcdElector implements LeaderElector {
  private readonly box = new LeaderStateBox();
  private readonly shared = new BigInt64Array(new SharedArrayBuffer(16));
  private readonly worker: Worker;
  /** The worker's term of the 'leader' state in the box. */
  private term = 0n;
  private running = false;
  private exited = false;
  private nextId = 1;
  private readonly pending = new Map<number, (m?: FromElectionWorker & { type: 'done' }) => void>();

  constructor(
    cfg: EtcdStoreConfig,
    readonly value: string,
    private readonly opts: LeaderElectorOptions,
    private readonly onClose: (e: ThreadedEtcdElector) => void,
  ) {
    const data: ElectionWorkerData = {
      vopElectionWorker: true,
      cfg: {
        endpoints: [...cfg.endpoints],
        prefix: cfg.prefix,
        ...(cfg.tls ? { tls: { ...cfg.tls } } : {}),
        requestTimeoutSeconds: cfg.requestTimeoutSeconds,
        maxTxnOps: cfg.maxTxnOps,
        leaderLeaseSeconds: cfg.leaderLeaseSeconds,
      },
      value,
      ttlSeconds: Math.max(1, Math.round(opts.ttlSeconds ?? DEFAULT_LEADER_TTL_SECONDS)),
      name: opts.name ?? 'controller',
      shared: this.shared.buffer,
    };
    this.worker = new Worker(path.join(__dirname, 'etcd-election-worker.js'), { workerData: data });
    // The process lives as long as its main thread wants (the controller, a test).
    this.worker.unref();
    this.worker.on('message', (m: FromElectionWorker) => this.onMessage(m));
    this.worker.on('error', (err) => this.opts.onError?.(err));
    this.worker.on('exit', (code) => {
      this.exited = true;
      for (const done of this.pending.values()) done();
      this.pending.clear();
      if (this.running) {
        this.opts.onError?.(new Error(`the leader election thread exited (code ${code}): not campaigning any more`));
        this.box.set({ role: 'candidate' });
      }
    });
  }

  private onMessage(m: FromElectionWorker): void {
    if (m.type === 'error') {
      this.opts.onError?.(new Error(m.message));
      return;
    }
    if (m.type === 'done') {
      const done = this.pending.get(m.id);
      this.pending.delete(m.id);
      done?.(m);
      return;
    }
    if (!this.running && m.state.role !== 'stopped') return;
    if (m.state.role === 'leader') {
      this.term = m.term;
      // A term that already ended (the message waited while the thread was busy) is not taken.
      if (!this.leaseHeld()) return;
    }
    this.box.set(m.state);
  }

  /** The box's leader term is still the worker's, and its lease cannot have expired. */
  private leaseHeld(): boolean {
    return (
      Atomics.load(this.shared, SHARED_TERM) === this.term && hrNowUs() < Atomics.load(this.shared, SHARED_DEADLINE_US)
    );
  }

  private send(m: ToElectionWorker): void {
    if (!this.exited) this.worker.postMessage(m);
  }

  private request(op: 'resign' | 'close'): Promise<void> {
    if (this.exited) return Promise.resolve();
    const id = this.nextId++;
    return new Promise<void>((resolve) => {
      this.pending.set(id, () => resolve());
      this.send({ op, id });
    });
  }

  /** The store's identity, read by the election thread's etcd client (not behind this thread's traffic). */
  readonly readIdentity = (): Promise<StoreIdentity> => {
    if (this.exited) return Promise.reject(new Error('the leader election thread has exited'));
    const id = this.nextId++;
    return new Promise<StoreIdentity>((resolve, reject) => {
      this.pending.set(id, (m) => {
        if (m?.identity) resolve(m.identity);
        else
          reject(new StoreUnavailableError(`etcd identity (election thread): ${m?.error ?? 'thread exited'}`, false));
      });
      this.send({ op: 'identity', id });
    });
  };

  campaign(): void {
    if (this.running) return;
    this.running = true;
    this.box.set({ role: 'candidate' });
    this.send({ op: 'campaign' });
  }

  state(): LeaderState {
    const st = this.box.get();
    if (st.role === 'leader' && !this.leaseHeld()) {
      this.box.set({ role: 'candidate' });
      this.send({ op: 'drop', fence: st.fence });
      return this.box.get();
    }
    return st;
  }

  observe(listener: (state: LeaderState) => void): () => void {
    return this.box.observe(listener);
  }

  async resign(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    // Revoking the lease (in the worker) deletes the key: the next candidate leads at once.
    await this.request('resign');
    this.box.set({ role: 'stopped' });
  }

  async close(): Promise<void> {
    await this.resign();
    await this.request('close');
    await this.worker.terminate();
    this.onClose(this);
  }
}
