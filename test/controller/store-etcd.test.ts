/**
 * The etcd store beyond the conformance suite, against real etcd processes: a
 * three-member cluster losing its leader member, a leader paused (SIGSTOP) past its
 * lease whose late write is fenced, a lease revoked behind the leader's back, a prefix
 * wiped under a running replica, TLS with client certificates, a raised --max-txn-ops,
 * and the store's configuration schema.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { CONTROLLER_DEFAULTS, controllerConfigSchema } from '../../controller/src/config';
import { ETCD_DEFAULTS, prefixEnd, type EtcdStoreConfig } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import type { Fence, LeaderElector, LeaderState } from '../../controller/src/store/leader-election';
import {
  StoreConflictError,
  StoreFencedError,
  StoreIdentityError,
  StoreUnavailableError,
  type DesiredStateStore,
  type StoredObject,
  type WatchBatch,
} from '../../controller/src/store/store';
import { repoPath } from '../../lib/src/paths';
import { startEtcd, type EtcdCluster } from '../helpers/etcd';
import { testPki } from '../helpers/pki';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function cfg(etcd: EtcdCluster, prefix: string, extra: Partial<EtcdStoreConfig> = {}): EtcdStoreConfig {
  return { ...ETCD_DEFAULTS, endpoints: etcd.endpoints, prefix, ...extra };
}

/** A replica's cache kept current by the store's watch alone. */
function mirror(store: DesiredStateStore, from: bigint, initial: readonly StoredObject[]) {
  const objects = new Map(initial.map((o) => [`${o.kind}/${o.name}`, o]));
  const batches: WatchBatch[] = [];
  let position = from;
  const w = store.watch(from, {
    onBatch: (b) => {
      assert.ok(b.revision >= position, `watch went back from ${position} to ${b.revision}`);
      position = b.revision;
      batches.push(b);
      if (b.type === 'resync') {
        objects.clear();
        for (const o of b.objects) objects.set(`${o.kind}/${o.name}`, o);
      } else if (b.type === 'events') {
        for (const e of b.events) {
          if (e.type === 'put')
            objects.set(`${e.kind}/${e.name}`, { kind: e.kind, name: e.name, revision: e.revision, data: e.data });
          else objects.delete(`${e.kind}/${e.name}`);
        }
      }
    },
  });
  return { objects, batches, position: () => position, close: () => w.close() };
}

const summary = (objs: Iterable<StoredObject>): string[] =>
  [...objs].map((o) => `${o.kind}/${o.name}@${o.revision}=${text(o.data)}`).sort();

describe('etcd store, three members', () => {
  let etcd: EtcdCluster;
  before(async () => {
    // A raised --max-txn-ops, so one commit can carry a policy's worth of links.
    etcd = await startEtcd({ members: 3, maxTxnOps: 1024 });
  });
  after(async () => {
    await etcd.close();
  });

  it('takes 1022 ops in one commit when etcd and the store both allow 1024 per transaction', async () => {
    const store = new EtcdStore(cfg(etcd, '/big/', { maxTxnOps: 1024 }));
    try {
      assert.equal(store.maxOpsPerCommit, 1022);
      const ops = Array.from({ length: 1022 }, (_, i) => ({
        op: 'put' as const,
        kind: 'link' as const,
        name: `l${i}`,
        data: bytes('x'),
        expected: 0n,
      }));
      const rev = await store.commit(ops);
      const all = await store.loadAll();
      assert.equal(all.length, 1022);
      assert.ok(all.every((o) => o.revision === rev));
    } finally {
      await store.close();
    }
  });

  it('keeps reads, compare-and-swap and the watch working when the etcd leader member is killed', async () => {
    const store = new EtcdStore(cfg(etcd, '/ha/', { requestTimeoutSeconds: 3 }));
    const reader = new EtcdStore(cfg(etcd, '/ha/'));
    try {
      const snap = await store.loadSnapshot();
      const m = mirror(reader, snap.revision, snap.objects);
      let rev = await store.commit([{ op: 'put', kind: 'link', name: 'k', data: bytes('0'), expected: 0n }]);
      const leader = await etcd.leader();
      assert.ok(leader >= 0, 'a leader member');
      const t0 = Date.now();
      await etcd.kill(leader);
      let firstWriteMs = -1;
      let unavailable = 0;
      let unknownOutcomes = 0;
      for (let i = 1; i <= 20; i++) {
        for (;;) {
          try {
            rev = await store.commit([{ op: 'put', kind: 'link', name: 'k', data: bytes(String(i)), expected: rev }]);
            break;
          } catch (err) {
            if (!(err instanceof StoreUnavailableError)) throw err;
            unavailable++;
            if (Date.now() - t0 > 60_000) throw err;
            if (err.outcomeUnknown) {
              // What a caller does with an unknown outcome: read, and see whether it landed.
              unknownOutcomes++;
              const k = (await store.loadAll()).find((o) => o.name === 'k');
              if (k && text(k.data) === String(i)) {
                rev = k.revision;
                break;
              }
              if (k) rev = k.revision;
            }
            await sleep(50);
          }
        }
        if (firstWriteMs < 0) firstWriteMs = Date.now() - t0;
      }
      const all = await store.loadAll();
      const readMs = Date.now() - t0;
      assert.deepEqual(
        all.map((o) => [o.name, text(o.data), o.revision]),
        [['k', '20', rev]],
      );
      // The watch (whichever member it was on) delivered everything, in order.
      await until('the mirror to reach the last write', () => (m.position() >= rev ? true : undefined));
      assert.deepEqual(summary(m.objects.values()), summary(all));
      const seen = m.batches.flatMap((b) =>
        b.type === 'events' ? b.events.map((e) => text(e.type === 'put' ? e.data : bytes(''))) : [],
      );
      assert.deepEqual(
        seen,
        Array.from({ length: 21 }, (_, i) => String(i)),
        'every value once, in order',
      );
      m.close();
      console.log(
        `# etcd leader killed: first CAS after ${firstWriteMs} ms, 20 CAS and a read after ${readMs} ms (${unavailable} unavailable, ${unknownOutcomes} unknown outcomes)`,
      );
      // The member comes back and catches up.
      await etcd.restart(leader);
      await etcd.waitHealthy();
    } finally {
      await store.close();
      await reader.close();
    }
  });
});

describe('etcd store, a member that stops answering', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd({ members: 3 });
  });
  after(async () => {
    await etcd.close();
  });

  it('moves a watch off a member paused with SIGSTOP, and it misses nothing', async () => {
    const watcher = new EtcdStore(cfg(etcd, '/hung/'));
    let writer: EtcdStore | undefined;
    let paused = -1;
    try {
      const snap = await watcher.loadSnapshot();
      const m = mirror(watcher, snap.revision, snap.objects);
      const streams = async (): Promise<number[]> =>
        Promise.all(etcd.members.map((_, i) => etcd.metric(i, 'etcd_debugging_mvcc_watch_stream_total')));
      // The watch's own stream is the only one: pause the member that serves it.
      paused = await until('the watch stream on a member', async () => {
        const i = (await streams()).findIndex((n) => n >= 1);
        return i >= 0 ? i : undefined;
      });
      etcd.pause(paused);
      const t0 = Date.now();
      writer = new EtcdStore({ ...cfg(etcd, '/hung/'), endpoints: etcd.endpoints.filter((_, i) => i !== paused) });
      let rev = 0n;
      for (let i = 0; i < 10; i++) {
        rev = await until('a commit while a member is paused', async () => {
          try {
            return await writer?.commit([{ op: 'put', kind: 'link', name: `k${i}`, data: bytes(String(i)) }]);
          } catch (err) {
            if (err instanceof StoreUnavailableError && !err.outcomeUnknown) return undefined;
            throw err;
          }
        });
      }
      await until('the watch to deliver every write', () => (m.position() >= rev ? true : undefined), 60_000);
      const recoveredMs = Date.now() - t0;
      assert.deepEqual(summary(m.objects.values()), summary(await writer.loadAll()));
      m.close();
      console.log(`# watch moved off a paused member and caught up after ${recoveredMs} ms`);
    } finally {
      if (paused >= 0) etcd.resume(paused);
      await watcher.close();
      await writer?.close();
    }
  });
});

describe('etcd store, one member', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd({ members: 1 });
  });
  after(async () => {
    await etcd.close();
  });

  it('fences a leader paused past its lease: the other replica leads, and the late write changes nothing', async () => {
    const prefix = '/paused/';
    const a = await startChild(etcd, prefix, 'replica-a');
    let b: Child | undefined;
    const observer = new EtcdStore(cfg(etcd, prefix));
    try {
      await a.waitState((s) => s.role === 'leader');
      b = await startChild(etcd, prefix, 'replica-b');
      await b.waitState((s) => s.role === 'follower' && s.leader === 'replica-a');
      const w1 = await a.write('x', 'by-a');
      assert.equal(w1.write, 'ok');
      a.proc.kill('SIGSTOP');
      const paused = Date.now();
      await b.waitState((s) => s.role === 'leader');
      const takeoverMs = Date.now() - paused;
      const w2 = await b.write('x', 'by-b');
      assert.equal(w2.write, 'ok');
      const before = await observer.loadSnapshot();
      // The old leader wakes up with a write in flight, made with the fence it held.
      const late = a.write('x', 'late-by-a');
      a.proc.kill('SIGCONT');
      const w3 = await late;
      assert.equal(w3.write, 'fenced', JSON.stringify(w3));
      const afterSnap = await observer.loadSnapshot();
      assert.deepEqual(summary(afterSnap.objects), summary(before.objects), 'the fenced write changed nothing');
      assert.equal(text(afterSnap.objects.find((o) => o.name === 'x')?.data ?? bytes('')), 'by-b');
      // The key of the write still carries the new leader's revision, and etcd's revision did not move for it.
      const raw = await observer.client.kv.range({ key: observer.keys.object('link', 'x') });
      assert.equal(raw.kvs[0]?.mod_revision, String(w2.revision));
      // It steps down and follows the new leader.
      await a.waitState((s) => s.role === 'follower' && s.leader === 'replica-b');
      console.log(`# leader SIGSTOPped: the other replica led after ${takeoverMs} ms (lease 2 s)`);
    } finally {
      await a.stop();
      await b?.stop();
      await observer.close();
    }
  });

  it('steps a leader down when its lease is revoked behind its back, and fences its old term', async () => {
    const store = new EtcdStore(cfg(etcd, '/revoked/'));
    await store.loadSnapshot();
    const a = store.elector('a', { ttlSeconds: 5 });
    const b = store.elector('b', { ttlSeconds: 5 });
    try {
      a.campaign();
      const fenceA = await leads(a);
      b.campaign();
      await until('b to follow', () => (b.state().role === 'follower' ? true : undefined));
      const leaseHex = fenceA.key.slice(fenceA.key.lastIndexOf('/') + 1);
      await store.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${leaseHex}`).toString() });
      const fenceB = await leads(b);
      assert.notEqual(fenceB.key, fenceA.key);
      await until('a to follow b', () => {
        const s = a.state();
        return s.role === 'follower' && s.leader === 'b' ? true : undefined;
      });
      await assert.rejects(
        store.commit([{ op: 'put', kind: 'policy', name: 'p', data: bytes('a') }], { fence: fenceA }),
        StoreFencedError,
      );
      assert.deepEqual(await store.loadAll(), []);
      await store.commit([{ op: 'put', kind: 'policy', name: 'p', data: bytes('b') }], { fence: fenceB });
    } finally {
      await a.close();
      await b.close();
      await store.close();
    }
  });

  it('hands leadership over at once on resign, without waiting for the lease', async () => {
    const store = new EtcdStore(cfg(etcd, '/resign/'));
    await store.loadSnapshot();
    const a = store.elector('a', { ttlSeconds: 60 });
    const b = store.elector('b', { ttlSeconds: 60 });
    try {
      a.campaign();
      await leads(a);
      b.campaign();
      await until('b to follow', () => (b.state().role === 'follower' ? true : undefined));
      const t0 = Date.now();
      await a.resign();
      await leads(b);
      // Far below the 60 s lease: the revoke deleted a's key.
      assert.ok(Date.now() - t0 < 30_000);
    } finally {
      await a.close();
      await b.close();
      await store.close();
    }
  });

  it('reports every operation with its duration and outcome (for the request latency metric)', async () => {
    const seen: string[] = [];
    const store = new EtcdStore(cfg(etcd, '/measured/'), {
      onRequest: (op, seconds, outcome) => {
        assert.ok(seconds >= 0 && seconds < 30);
        seen.push(`${op}:${outcome}`);
      },
    });
    try {
      await store.loadSnapshot();
      await store.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('a'), expected: 0n }]);
      await assert.rejects(
        store.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('a'), expected: 0n }]),
        StoreConflictError,
      );
      await store.compact(store.revision());
      assert.deepEqual(seen, ['list:ok', 'commit:ok', 'commit:refused', 'compact:ok']);
    } finally {
      await store.close();
    }
  });

  it('gives a wiped prefix a new cluster id: a watching replica resyncs to it, a stale one cannot write', async () => {
    const prefix = '/wiped/';
    const store = new EtcdStore(cfg(etcd, prefix));
    const stale = new EtcdStore(cfg(etcd, prefix));
    try {
      const snap = await store.loadSnapshot();
      await stale.loadSnapshot();
      const oldId = snap.identity.clusterId;
      const r1 = await store.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('a'), expected: 0n }]);
      const m = mirror(store, snap.revision, snap.objects);
      await until('the mirror to see a', () => (m.objects.size === 1 ? true : undefined));
      // What `etcdctl del --prefix /wiped/` does.
      const p = Buffer.from(prefix);
      await store.client.kv.deleteRange({ key: p, range_end: prefixEnd(p) });
      const resync = await until('a resync', () => m.batches.find((b) => b.type === 'resync'));
      assert.ok(resync.type === 'resync');
      assert.equal(resync.reason, 'identity-changed');
      assert.notEqual(resync.identity.clusterId, oldId);
      assert.equal(resync.identity.generation, 0n);
      assert.deepEqual(resync.objects, []);
      assert.equal(m.objects.size, 0);
      assert.deepEqual(store.identity(), resync.identity);
      // The handle that never saw the wipe writes nothing into the new store.
      await assert.rejects(
        stale.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('old'), expected: r1 }]),
        (err: unknown) => err instanceof StoreIdentityError && err.expected === oldId,
      );
      // The resynced one writes, into the new store.
      await assert.rejects(
        store.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('old'), expected: r1 }]),
        StoreConflictError,
      );
      const r2 = await store.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('new'), expected: 0n }]);
      assert.equal(store.identity().generation, r2);
      const fresh = new EtcdStore(cfg(etcd, prefix));
      assert.deepEqual((await fresh.loadSnapshot()).identity, { clusterId: resync.identity.clusterId, generation: r2 });
      await fresh.close();
      m.close();
    } finally {
      await store.close();
      await stale.close();
    }
  });
});

describe('etcd store over TLS', () => {
  let etcd: EtcdCluster;
  let pki: Awaited<ReturnType<typeof testPki>>;
  before(async () => {
    pki = await testPki(['etcd', 'vop-controller', 'stranger']);
    const f = pki.files('etcd');
    etcd = await startEtcd({ members: 1, tls: { ca: f.ca, cert: f.cert, key: f.key, clientCertAuth: true } });
  });
  after(async () => {
    await etcd.close();
    rmSync(pki.dir, { recursive: true, force: true });
  });

  it('works with the CA and a client certificate, and is refused without one or in plaintext', async () => {
    const c = pki.files('vop-controller');
    const good = new EtcdStore(cfg(etcd, '/tls/', { tls: { ca: c.ca, cert: c.cert, key: c.key } }));
    const noCert = new EtcdStore(cfg(etcd, '/tls/', { tls: { ca: c.ca }, requestTimeoutSeconds: 2 }));
    const plain = new EtcdStore(cfg(etcd, '/tls/', { requestTimeoutSeconds: 2 }));
    try {
      await good.loadSnapshot();
      const rev = await good.commit([{ op: 'put', kind: 'link', name: 'a', data: bytes('a'), expected: 0n }]);
      assert.equal((await good.loadAll())[0]?.revision, rev);
      await assert.rejects(noCert.loadSnapshot());
      await assert.rejects(plain.loadSnapshot());
      assert.equal((await good.loadAll()).length, 1);
    } finally {
      await good.close();
      await noCert.close();
      await plain.close();
    }
  });
});

describe('store configuration', () => {
  const parse = (store: unknown) => controllerConfigSchema.safeParse({ ...CONTROLLER_DEFAULTS, store });

  it('defaults to sqlite and fills in the etcd defaults', () => {
    const d = controllerConfigSchema.parse({ ...CONTROLLER_DEFAULTS });
    assert.deepEqual(d.store, { kind: 'sqlite' });
    const e = parse({ kind: 'etcd', endpoints: ['10.0.0.1:2379', 'https://etcd-2.example:2379'] });
    assert.ok(e.success);
    assert.deepEqual(e.data.store, {
      kind: 'etcd',
      endpoints: ['10.0.0.1:2379', 'https://etcd-2.example:2379'],
      prefix: '/vop/',
      requestTimeoutSeconds: 5,
      maxTxnOps: 128,
      leaderLeaseSeconds: 6,
    });
  });

  it('names the bad field: endpoints, prefix, TLS pairs, plaintext endpoints with TLS', () => {
    const cases: [unknown, string, RegExp][] = [
      [{ kind: 'etcd', endpoints: [] }, 'store.endpoints', /too_small|>=1|at least/i],
      [{ kind: 'etcd', endpoints: ['etcd-1'] }, 'store.endpoints.0', /HOST:PORT/],
      [{ kind: 'etcd', endpoints: ['a:1'], prefix: '/vop' }, 'store.prefix', /end with "\/"/],
      [{ kind: 'etcd', endpoints: ['a:1'], tls: { ca: '/ca.pem', cert: '/c.pem' } }, 'store.tls.key', /go together/],
      [{ kind: 'etcd', endpoints: ['http://a:1'], tls: { ca: '/ca.pem' } }, 'store.endpoints', /must not use http/],
      [{ kind: 'etcd', endpoints: ['a:1'], leaderLeaseSeconds: 1 }, 'store.leaderLeaseSeconds', /2/],
      [{ kind: 'etcd', endpoints: ['a:1'], nope: 1 }, 'store', /nope/],
    ];
    for (const [input, path, msg] of cases) {
      const r = parse(input);
      assert.ok(!r.success, JSON.stringify(input));
      const issue = r.error.issues.find(
        (i) => ['store', ...i.path.slice(1)].join('.') === path || i.path.join('.') === path,
      );
      assert.ok(issue, `${JSON.stringify(input)}: no issue at ${path} in ${JSON.stringify(r.error.issues)}`);
      assert.match(`${issue.message} ${JSON.stringify(issue)}`, msg);
    }
  });
});

async function leads(e: LeaderElector): Promise<Fence> {
  return until(`${e.value} to lead`, () => {
    const s = e.state();
    return s.role === 'leader' ? s.fence : undefined;
  });
}

interface Child {
  readonly proc: ChildProcess;
  waitState(pred: (s: LeaderState) => boolean): Promise<void>;
  write(name: string, data: string): Promise<{ write: string; revision?: string; error?: string }>;
  stop(): Promise<void>;
}

async function startChild(etcd: EtcdCluster, prefix: string, value: string): Promise<Child> {
  const proc = spawn(
    process.execPath,
    [repoPath('dist', 'test', 'controller', 'elector-child.js'), etcd.endpoints.join(','), prefix, value, '2'],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  let buf = '';
  proc.stdout?.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>);
      buf = buf.slice(nl + 1);
    }
  });
  proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  let writesSeen = 0;
  const fail = (what: string) => new Error(`${value}: ${what}; output ${JSON.stringify(lines)}; stderr ${stderr}`);
  return {
    proc,
    async waitState(pred) {
      await until(
        `${value} state`,
        () => {
          if (proc.exitCode !== null) throw fail('exited');
          const states = lines.filter((l) => l.state).map((l) => l.state as LeaderState);
          const last = states[states.length - 1];
          return last && pred(last) ? true : undefined;
        },
        30_000,
      ).catch((err: unknown) => {
        throw fail(String(err));
      });
    },
    async write(name, data) {
      const n = ++writesSeen;
      proc.stdin?.write(`write ${name} ${data}\n`);
      return until(
        `${value}'s write`,
        () => lines.filter((l) => l.write)[n - 1] as { write: string; revision?: string } | undefined,
        30_000,
      );
    },
    async stop() {
      proc.kill('SIGCONT');
      proc.stdin?.end('exit\n');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}
