/**
 * One conformance suite for every desired-state store backend: the embedded SQLite
 * store and the etcd store against a real etcd (Debian's etcd-server, one member).
 * Compare-and-swap, pagination, watch order, compaction (relist), identity and fencing
 * behave the same; what differs is said in the test.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import Database from 'better-sqlite3';

import { ETCD_DEFAULTS } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import type { LeaderElector, LeaderState } from '../../controller/src/store/leader-election';
import { SQLITE_FILE, SqliteStore } from '../../controller/src/store/sqlite-store';
import {
  StoreConflictError,
  StoreFencedError,
  type DesiredStateStore,
  type StoreOp,
  type WatchBatch,
} from '../../controller/src/store/store';
import { startEtcd, type EtcdCluster } from '../helpers/etcd';
import { tempDir } from '../helpers/servers';

/** A fresh store per test, and a second handle on the same store (a restart or another replica). */
interface Backend {
  readonly name: string;
  /** Objects per page when listing (etcd); the suite writes more than this. */
  readonly pageSize: number;
  fresh(): Promise<{ store: DesiredStateStore; reopen: () => DesiredStateStore }>;
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const put = (name: string, data: string, expected?: bigint): StoreOp =>
  expected === undefined
    ? { op: 'put', kind: 'link', name, data: bytes(data) }
    : { op: 'put', kind: 'link', name, data: bytes(data), expected };

async function until<T>(what: string, fn: () => T | undefined, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function collect(store: DesiredStateStore, from: bigint): { batches: WatchBatch[]; close: () => void } {
  const batches: WatchBatch[] = [];
  const w = store.watch(from, { onBatch: (b) => batches.push(b) });
  return { batches, close: () => w.close() };
}

/** Changes only (etcd may send progress notifications). */
const changes = (bs: readonly WatchBatch[]): WatchBatch[] => bs.filter((b) => b.type !== 'progress');

function conformance(backend: Backend): void {
  const open: DesiredStateStore[] = [];
  const fresh = async (): Promise<{ store: DesiredStateStore; reopen: () => DesiredStateStore }> => {
    const f = await backend.fresh();
    open.push(f.store);
    return {
      store: f.store,
      reopen: () => {
        const s = f.reopen();
        open.push(s);
        return s;
      },
    };
  };
  after(async () => {
    for (const s of open) await s.close().catch(() => undefined);
  });

  it('creates an object only when it must not exist, and names the revision it found on a conflict', async () => {
    const { store } = await fresh();
    await store.loadSnapshot();
    const r1 = await store.commit([put('a', 'one', 0n)]);
    assert.ok(r1 > 0n);
    await assert.rejects(store.commit([put('a', 'two', 0n)]), (err: unknown) => {
      assert.ok(err instanceof StoreConflictError);
      assert.equal(err.kind, 'link');
      assert.equal(err.name, 'a');
      assert.equal(err.expected, 0n);
      assert.equal(err.actual, r1);
      return true;
    });
    const all = await store.loadAll();
    assert.deepEqual(
      all.map((o) => [o.kind, o.name, o.revision, text(o.data)]),
      [['link', 'a', r1, 'one']],
    );
  });

  it('updates at the current revision, refuses a stale one, and writes nothing of a batch with one conflict', async () => {
    const { store } = await fresh();
    const r1 = await store.commit([put('a', 'one'), put('b', 'one')]);
    const r2 = await store.commit([put('a', 'two', r1)]);
    assert.ok(r2 > r1);
    await assert.rejects(store.commit([put('b', 'three', r1), put('a', 'three', r1)]), StoreConflictError);
    const before = store.revision();
    const all = new Map((await store.loadAll()).map((o) => [o.name, o]));
    assert.equal(text(all.get('a')?.data ?? bytes('')), 'two');
    assert.equal(all.get('a')?.revision, r2);
    assert.equal(text(all.get('b')?.data ?? bytes('')), 'one', 'the batch wrote nothing');
    assert.equal(all.get('b')?.revision, r1);
    // An op without `expected` is last-writer-wins.
    const r3 = await store.commit([put('b', 'four')]);
    assert.ok(r3 > before);
  });

  it('runs commits asked for together: each its own revision, a conflict fails only its own', async () => {
    const { store } = await fresh();
    const r0 = await store.commit([put('a', 'zero', 0n)]);
    const w = collect(store, r0);
    // Asked for in one turn of the event loop: the embedded store runs them in one transaction.
    const outcomes = await Promise.allSettled([
      store.commit([put('a', 'one', r0)]),
      store.commit([put('a', 'stale', r0)]),
      store.commit([put('b', 'one', 0n)]),
    ]);
    const [first, second, third] = outcomes;
    assert.equal(first?.status, 'fulfilled');
    assert.equal(second?.status, 'rejected');
    assert.ok(second?.status === 'rejected' && second.reason instanceof StoreConflictError);
    assert.equal(third?.status, 'fulfilled');
    const r1 = first?.status === 'fulfilled' ? first.value : 0n;
    const r3 = third?.status === 'fulfilled' ? third.value : 0n;
    // The embedded store runs them in the order asked, in one transaction; etcd pipelines
    // independent commits, which may be applied in either order (each is still its own CAS).
    if (backend.name === 'sqlite') assert.ok(r1 > r0 && r3 > r1, `revisions in order: ${r0} < ${r1} < ${r3}`);
    else assert.ok(r1 > r0 && r3 > r0 && r1 !== r3, `distinct revisions after ${r0}: ${r1}, ${r3}`);
    const all = new Map((await store.loadAll()).map((o) => [o.name, o]));
    assert.equal(text(all.get('a')?.data ?? bytes('')), 'one', 'the stale commit wrote nothing');
    assert.equal(all.get('a')?.revision, r1);
    assert.equal(all.get('b')?.revision, r3);
    const puts = await until('the watch delivers both commits', () => {
      const seen = w.batches.flatMap((b) => (b.type === 'events' ? b.events : []));
      return seen.length >= 2 ? seen : undefined;
    });
    w.close();
    // The watch delivers them in revision order, whichever ran first.
    assert.deepEqual(
      puts.map((e) => [e.type, e.name, e.revision]),
      (
        [
          ['put', 'a', r1],
          ['put', 'b', r3],
        ] as [string, string, bigint][]
      ).sort((x, y) => (x[2] < y[2] ? -1 : 1)),
    );
  });
  it('deletes at the expected revision; a deleted object then counts as not existing', async () => {
    const { store } = await fresh();
    const r1 = await store.commit([put('a', 'one')]);
    await assert.rejects(
      store.commit([{ op: 'delete', kind: 'link', name: 'a', expected: r1 + 100n }]),
      StoreConflictError,
    );
    await store.commit([{ op: 'delete', kind: 'link', name: 'a', expected: r1 }]);
    assert.deepEqual(await store.loadAll(), []);
    await assert.rejects(store.commit([{ op: 'delete', kind: 'link', name: 'a', expected: r1 }]), StoreConflictError);
    await store.commit([put('a', 'again', 0n)]);
    assert.equal((await store.loadAll()).length, 1);
  });

  it('keeps kinds apart and lists more objects than one page, each at its own revision', async () => {
    const { store } = await fresh();
    const n = backend.pageSize * 2 + 7;
    const ops: StoreOp[] = [];
    for (let i = 0; i < n; i++) ops.push(put(`link-${String(i).padStart(4, '0')}`, `v${i}`));
    ops.push({ op: 'put', kind: 'policy', name: 'link-0000', data: bytes('a policy') });
    ops.push({ op: 'put', kind: 'agent', name: 'card-1', data: bytes('an agent') });
    const revs = new Map<string, bigint>();
    for (let i = 0; i < ops.length; i += store.maxOpsPerCommit) {
      const chunk = ops.slice(i, i + store.maxOpsPerCommit);
      const rev = await store.commit(chunk);
      for (const op of chunk) revs.set(`${op.kind}/${op.name}`, rev);
    }
    const snap = await store.loadSnapshot();
    assert.equal(snap.objects.length, n + 2);
    assert.equal(snap.revision, store.revision());
    for (const o of snap.objects) assert.equal(o.revision, revs.get(`${o.kind}/${o.name}`), `${o.kind}/${o.name}`);
    const links = snap.objects.filter((o) => o.kind === 'link');
    assert.equal(new Set(links.map((o) => o.name)).size, n);
    assert.equal(text(snap.objects.find((o) => o.kind === 'policy')?.data ?? bytes('')), 'a policy');
  });

  it('watches every change after a revision, in order, one commit’s events together', async () => {
    const { store } = await fresh();
    const r0 = await store.commit([put('a', '0')]);
    const r1 = await store.commit([put('a', '1'), put('b', '1')]);
    const w = collect(store, r0);
    const r2 = await store.commit([{ op: 'delete', kind: 'link', name: 'a' }]);
    const r3 = await store.commit([put('c', '3')]);
    await until('the watch to reach r3', () => (changes(w.batches).some((b) => b.revision >= r3) ? true : undefined));
    w.close();
    const evs = changes(w.batches).flatMap((b) => (b.type === 'events' ? b.events : []));
    assert.ok(changes(w.batches).every((b) => b.type === 'events'));
    assert.deepEqual(
      evs.map((e) => [e.type, e.name, e.revision, e.type === 'put' ? text(e.data) : '']),
      [
        ['put', 'a', r1, '1'],
        ['put', 'b', r1, '1'],
        ['delete', 'a', r2, ''],
        ['put', 'c', r3, '3'],
      ],
    );
    // A batch may hold several commits (etcd catching up), but a commit is never split.
    const batchOf = new Map<bigint, number>();
    changes(w.batches).forEach((b, i) => {
      if (b.type !== 'events') return;
      for (const e of b.events) {
        assert.equal(batchOf.get(e.revision) ?? i, i, `revision ${e.revision} split across batches`);
        batchOf.set(e.revision, i);
      }
    });
    let last = 0n;
    for (const b of changes(w.batches)) {
      assert.ok(b.revision > last, 'batches in revision order');
      last = b.revision;
    }
  });

  it('resyncs a watch from a compacted revision with the complete state, then goes on with events', async () => {
    const { store } = await fresh();
    const r0 = await store.commit([put('a', '0'), put('b', '0')]);
    await store.commit([put('a', '1')]);
    const r2 = await store.commit([{ op: 'delete', kind: 'link', name: 'b' }]);
    await store.compact(r2);
    const w = collect(store, r0);
    const resync = await until('a resync', () => w.batches.find((b) => b.type === 'resync'));
    assert.ok(resync.type === 'resync');
    assert.equal(resync.reason, 'compacted');
    assert.ok(resync.revision >= r2);
    assert.deepEqual(
      resync.objects.map((o) => [o.name, text(o.data)]),
      [['a', '1']],
    );
    assert.equal(resync.identity.clusterId, store.identity().clusterId);
    const r3 = await store.commit([put('c', '3')]);
    const next = await until('the event after the resync', () =>
      w.batches.find((b) => b.type === 'events' && b.revision === r3),
    );
    assert.ok(next.type === 'events');
    assert.deepEqual(
      next.events.map((e) => e.name),
      ['c'],
    );
    assert.equal(changes(w.batches).indexOf(resync), 0, 'nothing before the resync');
    // A watch from the compaction revision itself still has its history.
    const w2 = collect(store, r2);
    const r4 = await store.commit([put('d', '4')]);
    await until('w2 to reach r4', () => (changes(w2.batches).some((b) => b.revision >= r4) ? true : undefined));
    assert.ok(changes(w2.batches).every((b) => b.type === 'events'));
    w.close();
    w2.close();
  });

  it('keeps its cluster id across a reopen; the generation moves only with desired state and never back', async () => {
    const { store, reopen } = await fresh();
    const snap0 = await store.loadSnapshot();
    const id = snap0.identity.clusterId;
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(snap0.identity.generation, 0n, 'an empty store has generation 0');
    const r1 = await store.commit([put('a', '1')]);
    assert.deepEqual(store.identity(), { clusterId: id, generation: r1 });
    // An agent record is a registration, not desired state.
    const r2 = await store.commit([{ op: 'put', kind: 'agent', name: 'card-1', data: bytes('reg') }]);
    assert.ok(r2 > r1);
    assert.equal(store.identity().generation, r1);
    const r3 = await store.commit([{ op: 'put', kind: 'policy', name: 'p', data: bytes('p') }]);
    assert.equal(store.identity().generation, r3);
    const r4 = await store.commit([{ op: 'delete', kind: 'link', name: 'a' }]);
    assert.equal(store.identity().generation, r4);
    // A conflict changes nothing.
    await assert.rejects(store.commit([put('z', 'z', 99n)]), StoreConflictError);
    assert.equal(store.identity().generation, r4);
    // Another handle (a restart, another replica) reads it from the store before loading anything.
    const other = reopen();
    assert.deepEqual(await other.readIdentity(), { clusterId: id, generation: r4 });
    await other.close();
    await store.close();
    const again = reopen();
    const snap = await again.loadSnapshot();
    assert.deepEqual(snap.identity, { clusterId: id, generation: r4 });
    assert.deepEqual(again.identity(), { clusterId: id, generation: r4 });
  });

  it('fences a deposed leader: its commit with the old fence writes nothing', async () => {
    const { store } = await fresh();
    await store.loadSnapshot();
    const a = store.elector('replica-a', { ttlSeconds: 2 });
    const b = store.elector('replica-b', { ttlSeconds: 2 });
    const states: LeaderState[] = [];
    b.observe((s) => states.push(s));
    try {
      a.campaign();
      const fenceA = await waitLeader(a);
      b.campaign();
      await until('b to follow a', () => {
        const s = b.state();
        return s.role === 'follower' && s.leader === 'replica-a' ? true : undefined;
      });
      const r1 = await store.commit([put('x', 'by a', 0n)], { fence: fenceA });
      await a.resign();
      assert.equal(a.state().role, 'stopped');
      const fenceB = await waitLeader(b);
      assert.notDeepEqual(fenceB, fenceA);
      const revBefore = (await store.loadSnapshot()).revision;
      await assert.rejects(store.commit([put('x', 'late write by a')], { fence: fenceA }), StoreFencedError);
      const snap = await store.loadSnapshot();
      assert.equal(snap.revision, revBefore, 'the fenced commit wrote nothing');
      assert.deepEqual(
        snap.objects.map((o) => [o.name, text(o.data), o.revision]),
        [['x', 'by a', r1]],
      );
      await store.commit([put('x', 'by b', r1)], { fence: fenceB });
      const roles = states.map((s) => s.role);
      assert.ok(roles.indexOf('follower') >= 0 && roles.indexOf('follower') < roles.indexOf('leader'), roles.join(' '));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('takes a batch up to maxOpsPerCommit in one commit and refuses a larger one whole', async () => {
    const { store } = await fresh();
    const max = Math.min(store.maxOpsPerCommit, 5000);
    const ops: StoreOp[] = [];
    for (let i = 0; i < max; i++) ops.push(put(`n${i}`, 'x', 0n));
    const rev = await store.commit(ops);
    const all = await store.loadAll();
    assert.equal(all.length, max);
    assert.ok(
      all.every((o) => o.revision === rev),
      'one commit, one revision',
    );
    if (store.maxOpsPerCommit < 1_000_000) {
      const tooMany: StoreOp[] = [];
      for (let i = 0; i <= store.maxOpsPerCommit; i++) tooMany.push(put(`m${i}`, 'x'));
      await assert.rejects(store.commit(tooMany), /at most \d+ ops/);
      assert.equal((await store.loadAll()).length, max);
    }
  });
}

async function waitLeader(e: LeaderElector): Promise<{ key: string; revision: bigint }> {
  return until(`${e.value} to lead`, () => {
    const s = e.state();
    return s.role === 'leader' ? s.fence : undefined;
  });
}

describe('store conformance: sqlite', () => {
  const dirs: string[] = [];
  after(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  conformance({
    name: 'sqlite',
    pageSize: 50,
    fresh: async () => {
      const dir = tempDir('store-sqlite');
      dirs.push(dir);
      return { store: new SqliteStore(dir), reopen: () => new SqliteStore(dir) };
    },
  });
});

describe('sqlite store from before identities', () => {
  it('gets a cluster id on first open and takes its revision as the generation (an upper bound)', async () => {
    const dir = tempDir('store-sqlite-old');
    try {
      // The schema as it was: objects and a revision, no identity, no generation.
      const db = new Database(path.join(dir, SQLITE_FILE));
      db.exec(`CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
        CREATE TABLE objects (kind TEXT NOT NULL, name TEXT NOT NULL, revision INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (kind, name)) STRICT;
        INSERT INTO meta (key, value) VALUES ('revision', 7), ('schema', 1);
        INSERT INTO objects VALUES ('link', 'l1', 7, x'00');`);
      db.close();
      const store = new SqliteStore(dir);
      const snap = await store.loadSnapshot();
      assert.equal(snap.revision, 7n);
      assert.equal(snap.identity.generation, 7n);
      assert.match(snap.identity.clusterId, /^[0-9a-f-]{36}$/);
      assert.equal(snap.objects.length, 1);
      await store.close();
      const again = new SqliteStore(dir);
      assert.deepEqual(again.identity(), snap.identity);
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('store conformance: etcd (one member)', () => {
  let etcd: EtcdCluster;
  let n = 0;
  before(async () => {
    etcd = await startEtcd({ members: 1 });
  });
  after(async () => {
    await etcd.close();
  });
  conformance({
    name: 'etcd',
    pageSize: 50,
    fresh: async () => {
      const cfg = { ...ETCD_DEFAULTS, endpoints: etcd.endpoints, prefix: `/conformance/${++n}/` };
      return {
        store: new EtcdStore(cfg, { pageSize: 50 }),
        reopen: () => new EtcdStore(cfg, { pageSize: 50 }),
      };
    },
  });
});
