/**
 * The etcd backend of the desired-state store (keys: etcd-keys.ts): one key per
 * object, its mod_revision as the resourceVersion, a commit as one transaction.
 *
 * Every commit compares, in the same transaction: the cluster id (a controller never
 * writes into a store other than the one it loaded), the leader's fence when given
 * (leader-election.ts), and each op's expected mod_revision (0: must not exist). A
 * commit that changes desired state also rewrites meta/generation, so the generation
 * is that key's mod_revision. Listing is paged (DEFAULT_PAGE_SIZE objects per range)
 * at the first page's revision, so the pages are one consistent snapshot.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';

import { CompareResult, CompareTarget, type Etcd3, type ICompare, type IRequestOp } from 'etcd3';

import { ThreadedEtcdElector } from './etcd-election-thread';
import {
  compacted,
  createEtcdClient,
  DEFAULT_PAGE_SIZE,
  prefixEnd,
  withRetry,
  type EtcdStoreConfig,
} from './etcd-client';
import { readEtcdIdentity } from './etcd-identity';
import { EtcdKeys } from './etcd-keys';
import { EtcdStoreWatch, type EtcdWatchSource } from './etcd-watch';
import type { LeaderElector, LeaderElectorOptions } from './leader-election';
import {
  isDesiredKind,
  StoreConflictError,
  StoreFencedError,
  StoreIdentityError,
  type CommitOptions,
  type DesiredStateStore,
  type StoreIdentity,
  type StoreOp,
  type StoreSnapshot,
  type StoredObject,
  type StoreWatch,
  type WatchHandlers,
} from './store';

export type EtcdOperation = 'commit' | 'list' | 'identity' | 'compact';

export interface EtcdStoreOptions {
  /** Objects per range request when listing (default DEFAULT_PAGE_SIZE). */
  readonly pageSize?: number;
  /** Called after every store operation on etcd (retries included), e.g. for a latency histogram. */
  readonly onRequest?: (operation: EtcdOperation, seconds: number, outcome: 'ok' | 'refused' | 'error') => void;
}

function bytes(data: Uint8Array): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export class EtcdStore implements DesiredStateStore, EtcdWatchSource {
  readonly client: Etcd3;
  readonly keys: EtcdKeys;
  readonly maxOpsPerCommit: number;
  private readonly timeoutMs: number;
  private readonly pageSize: number;
  private readonly onRequest: EtcdStoreOptions['onRequest'];
  private rev = 0n;
  private gen = 0n;
  private clusterId = '';
  private ready: Promise<void> | null = null;
  private readonly watches = new Set<EtcdStoreWatch>();
  private readonly electors = new Set<ThreadedEtcdElector>();

  constructor(
    private readonly cfg: EtcdStoreConfig,
    opts: EtcdStoreOptions = {},
  ) {
    this.client = createEtcdClient(cfg);
    this.keys = new EtcdKeys(cfg.prefix);
    this.timeoutMs = cfg.requestTimeoutSeconds * 1000;
    this.pageSize = opts.pageSize ?? DEFAULT_PAGE_SIZE;
    this.onRequest = opts.onRequest;
    // Compares: the cluster id, the fence, one per op; success: the ops and meta/generation.
    this.maxOpsPerCommit = cfg.maxTxnOps - 2;
  }

  /** Before the first snapshot: reads (creating it in an empty prefix) the cluster id; commits wait for it. */
  private init(): Promise<void> {
    if (this.clusterId !== '') return Promise.resolve();
    this.ready ??= this.ensureIdentity().then(
      (id) => {
        if (this.clusterId === '') this.adopt(id);
      },
      (err: unknown) => {
        this.ready = null;
        throw err;
      },
    );
    return this.ready;
  }

  /** The identity under the prefix, the cluster id created at random when there is none. */
  private async ensureIdentity(): Promise<StoreIdentity> {
    const { keys } = this;
    const fresh = randomUUID();
    const generation: IRequestOp = { request_range: { key: keys.generation, keys_only: true } };
    // Idempotent (creates only if absent, else reads), so it may be sent again.
    const res = await withRetry('identity', this.timeoutMs, false, (deadline) =>
      this.client.kv.txn(
        {
          compare: [
            { key: keys.clusterId, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
          ],
          success: [{ request_put: { key: keys.clusterId, value: Buffer.from(fresh) } }, generation],
          failure: [{ request_range: { key: keys.clusterId } }, generation],
        },
        { deadline },
      ),
    );
    const clusterId = res.succeeded ? fresh : (res.responses[0]?.response_range.kvs[0]?.value.toString('utf8') ?? '');
    if (clusterId === '') throw new Error(`etcd: ${keys.clusterId.toString('utf8')} is empty`);
    const genKv = res.responses[1]?.response_range.kvs[0];
    this.noteRevision(BigInt(res.header.revision));
    return { clusterId, generation: genKv ? BigInt(genKv.mod_revision) : 0n };
  }

  /** From now on this handle is (and its commits require) the store `id`. */
  private adopt(id: StoreIdentity): void {
    if (id.clusterId !== this.clusterId) {
      this.clusterId = id.clusterId;
      this.gen = id.generation;
    } else {
      this.noteGeneration(id.generation);
    }
  }

  async loadAll(): Promise<StoredObject[]> {
    return (await this.loadSnapshot()).objects;
  }

  /** Runs `fn`, reporting its duration and outcome to onRequest. */
  private async measured<T>(op: EtcdOperation, fn: () => Promise<T>): Promise<T> {
    if (!this.onRequest) return fn();
    const t0 = performance.now();
    try {
      const v = await fn();
      this.onRequest(op, (performance.now() - t0) / 1000, 'ok');
      return v;
    } catch (err) {
      const refused =
        err instanceof StoreConflictError || err instanceof StoreFencedError || err instanceof StoreIdentityError;
      this.onRequest(op, (performance.now() - t0) / 1000, refused ? 'refused' : 'error');
      throw err;
    }
  }

  async loadSnapshot(): Promise<StoreSnapshot> {
    const snap = await this.measured('list', () => this.readSnapshot());
    this.adoptSnapshot(snap);
    return snap;
  }

  /** A snapshot (creating the identity if the prefix has none), not adopted yet. */
  async readSnapshot(): Promise<StoreSnapshot> {
    for (;;) {
      const { clusterId } = await this.ensureIdentity();
      try {
        const snap = await this.list();
        if (snap.identity.clusterId === clusterId) return snap;
        // Wiped or replaced between the two reads: again.
      } catch (err) {
        if (!compacted(err)) throw err;
        // Compacted between two pages: again, at a newer revision.
      }
    }
  }

  /** Takes the snapshot's identity and revision as this handle's (a watch does it as it delivers the resync). */
  adoptSnapshot(snap: StoreSnapshot): void {
    this.adopt(snap.identity);
    this.noteRevision(snap.revision);
  }

  /** All objects and the identity keys at one revision, in pages. */
  private async list(): Promise<StoreSnapshot> {
    const { keys } = this;
    const objects: StoredObject[] = [];
    let from = keys.objectsStart;
    let revision = 0n;
    for (;;) {
      const res = await withRetry('list', this.timeoutMs, false, (deadline) =>
        this.client.kv.range(
          {
            key: from,
            range_end: keys.objectsEnd,
            limit: this.pageSize,
            ...(revision > 0n ? { revision: revision.toString() } : {}),
          },
          { deadline },
        ),
      );
      if (revision === 0n) revision = BigInt(res.header.revision);
      for (const kv of res.kvs) {
        const k = keys.parse(kv.key);
        if (k.type === 'object')
          objects.push({ kind: k.kind, name: k.name, revision: BigInt(kv.mod_revision), data: kv.value });
      }
      const last = res.kvs[res.kvs.length - 1];
      if (!res.more || !last) break;
      from = Buffer.concat([last.key, Buffer.from([0])]);
    }
    const meta = await withRetry('identity', this.timeoutMs, false, (deadline) =>
      this.client.kv.range(
        { key: keys.watchStart, range_end: prefixEnd(keys.watchStart), revision: revision.toString() },
        { deadline },
      ),
    );
    let clusterId = '';
    let generation = 0n;
    for (const kv of meta.kvs) {
      const k = keys.parse(kv.key);
      if (k.type === 'cluster-id') clusterId = kv.value.toString('utf8');
      else if (k.type === 'generation') generation = BigInt(kv.mod_revision);
    }
    return { revision, identity: { clusterId, generation }, objects };
  }

  async commit(ops: readonly StoreOp[], options: CommitOptions = {}): Promise<bigint> {
    return this.measured('commit', () => this.commitOnce(ops, options));
  }

  private async commitOnce(ops: readonly StoreOp[], options: CommitOptions): Promise<bigint> {
    if (ops.length > this.maxOpsPerCommit)
      throw new RangeError(
        `a commit takes at most ${this.maxOpsPerCommit} ops on etcd (store.maxTxnOps ${this.cfg.maxTxnOps} minus 2; raise both with etcd's --max-txn-ops), got ${ops.length}`,
      );
    await this.init();
    const { keys } = this;
    const clusterId = this.clusterId;
    const { fence } = options;
    const compare: ICompare[] = [
      { key: keys.clusterId, target: CompareTarget.Value, result: CompareResult.Equal, value: Buffer.from(clusterId) },
    ];
    const failure: IRequestOp[] = [{ request_range: { key: keys.clusterId } }];
    if (fence) {
      const key = Buffer.from(fence.key);
      compare.push({
        key,
        target: CompareTarget.Create,
        result: CompareResult.Equal,
        create_revision: fence.revision.toString(),
      });
      failure.push({ request_range: { key, keys_only: true } });
    }
    const cas = ops.filter((op) => op.expected !== undefined);
    for (const op of cas) {
      const key = keys.object(op.kind, op.name);
      compare.push({
        key,
        target: CompareTarget.Mod,
        result: CompareResult.Equal,
        mod_revision: (op.expected ?? 0n).toString(),
      });
      failure.push({ request_range: { key, keys_only: true } });
    }
    const success: IRequestOp[] = ops.map((op) =>
      op.op === 'put'
        ? { request_put: { key: keys.object(op.kind, op.name), value: bytes(op.data) } }
        : { request_delete_range: { key: keys.object(op.kind, op.name) } },
    );
    const desired = ops.some((op) => isDesiredKind(op.kind));
    if (desired) success.push({ request_put: { key: keys.generation, value: Buffer.alloc(0) } });
    const res = await withRetry('commit', this.timeoutMs, true, (deadline) =>
      this.client.kv.txn({ compare, success, failure }, { deadline }),
    );
    const rev = BigInt(res.header.revision);
    this.noteRevision(rev);
    if (res.succeeded) {
      if (desired) this.noteGeneration(rev);
      return rev;
    }
    const kvOf = (i: number) => res.responses[i]?.response_range.kvs[0];
    const actualId = kvOf(0)?.value.toString('utf8') ?? '';
    if (actualId !== clusterId) throw new StoreIdentityError(clusterId, actualId);
    let i = 1;
    if (fence) {
      const kv = kvOf(i++);
      if (!kv || BigInt(kv.create_revision) !== fence.revision) throw new StoreFencedError(fence);
    }
    for (const op of cas) {
      const kv = kvOf(i++);
      const actual = kv ? BigInt(kv.mod_revision) : 0n;
      if (actual !== op.expected) throw new StoreConflictError(op.kind, op.name, op.expected ?? 0n, actual);
    }
    throw new Error('etcd refused the commit although every compare reads as holding (changed in between): retry');
  }

  revision(): bigint {
    return this.rev;
  }

  identity(): StoreIdentity {
    return { clusterId: this.clusterId, generation: this.gen };
  }

  async readIdentity(): Promise<StoreIdentity> {
    return this.measured('identity', () => readEtcdIdentity(this.client, this.keys, this.timeoutMs));
  }

  noteRevision(rev: bigint): void {
    if (rev > this.rev) this.rev = rev;
  }

  noteGeneration(rev: bigint): void {
    if (rev > this.gen) this.gen = rev;
  }

  watch(fromRevision: bigint, handlers: WatchHandlers): StoreWatch {
    const w: EtcdStoreWatch = new EtcdStoreWatch(this, fromRevision, handlers, () => this.watches.delete(w));
    this.watches.add(w);
    return w;
  }

  async compact(revision: bigint): Promise<void> {
    await this.measured('compact', () =>
      withRetry('compact', this.timeoutMs, false, (deadline) =>
        this.client.kv.compact({ revision: revision.toString(), physical: true }, { deadline }),
      ),
    );
  }

  elector(value: string, options: LeaderElectorOptions = {}): LeaderElector {
    // In a thread of its own, with its own etcd client: a busy main thread does not starve the lease.
    const e = new ThreadedEtcdElector(this.cfg, value, { ttlSeconds: this.cfg.leaderLeaseSeconds, ...options }, (x) =>
      this.electors.delete(x),
    );
    this.electors.add(e);
    return e;
  }

  async close(): Promise<void> {
    for (const w of [...this.watches]) w.close();
    await Promise.all([...this.electors].map((e) => e.close()));
    this.client.close();
  }
}
