/**
 * Store benchmark (not a timed test):
 *   node dist/test/bench/etcd-store-bench.js [--members 3] [--objects 40000] [--max-txn-ops 128] [--json FILE]
 *
 * Starts a local etcd (Debian's etcd-server, data directories on the temp directory's
 * disk, fsync on) and measures the etcd store as the controller uses it, with links
 * shaped like a policy's (real Link encoding):
 *   - commit latency of one object, one commit at a time (p50/p99);
 *   - the same with 64 commits in flight (etcd batches them into one raft entry and fsync);
 *   - writing `objects` links in commits of maxOpsPerCommit (sequential and 4 in flight);
 *   - loadSnapshot of all of them (paged, 1000 per range), three times;
 *   - watch lag: a second handle's watch reaching the last commit of a burst.
 * And the SQLite store's commit latency on the same disk, for comparison.
 */
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';

import { Link } from '../../lib/proto/types';
import { ETCD_DEFAULTS } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import { SqliteStore } from '../../controller/src/store/sqlite-store';
import type { DesiredStateStore, StoreOp } from '../../controller/src/store/store';
import { startEtcd } from '../helpers/etcd';
import { tempDir } from '../helpers/servers';

const { values } = parseArgs({
  options: {
    members: { type: 'string', default: '3' },
    objects: { type: 'string', default: '40000' },
    'max-txn-ops': { type: 'string', default: '128' },
    json: { type: 'string' },
  },
  strict: true,
});
const MEMBERS = Number(values.members) === 1 ? 1 : 3;
const OBJECTS = Math.max(1, Number(values.objects));
const MAX_TXN_OPS = Math.max(8, Number(values['max-txn-ops']));

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? 0;
}

const round = (x: number, d = 2): number => Number(x.toFixed(d));

/** A link as a policy renders it (labels, two endpoints, shm, a console). */
function linkBytes(i: number): Uint8Array {
  const card = `card-${i}`;
  return Link.encode(
    Link.fromJSON({
      meta: {
        name: `console-${card}`,
        labels: {
          'vop.dev/policy': 'console',
          'vop.dev/rack': `r${i % 100}`,
          'vop.dev/node': card,
          'vop.dev/host': `host-${i}`,
        },
        generation: 1,
        managedBy: 'policy/console',
        createTime: new Date().toISOString(),
        updateTime: new Date().toISOString(),
      },
      spec: {
        endpoints: [
          { agent: `host-${i}`, role: 'ROLE_DEVICE' },
          { agent: card, role: 'ROLE_DRIVER' },
        ],
        transport: { shm: {} },
        devices: [{ name: 'console', console: {} }],
      },
    }),
  ).finish();
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, performance.now() - t0];
}

async function singleCommits(store: DesiredStateStore, prefix: string, n: number): Promise<number[]> {
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const [, ms] = await timed(() =>
      store.commit([{ op: 'put', kind: 'link', name: `${prefix}${i}`, data: linkBytes(i), expected: 0n }]),
    );
    lat.push(ms);
  }
  return lat;
}

async function concurrentCommits(store: DesiredStateStore, prefix: string, n: number, inFlight: number) {
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < n) {
        const i = next++;
        const [, ms] = await timed(() =>
          store.commit([{ op: 'put', kind: 'link', name: `${prefix}${i}`, data: linkBytes(i), expected: 0n }]),
        );
        lat.push(ms);
      }
    }),
  );
  return { lat, totalMs: performance.now() - t0 };
}

async function batchedWrite(store: DesiredStateStore, prefix: string, n: number, inFlight: number) {
  const per = store.maxOpsPerCommit;
  const batches: StoreOp[][] = [];
  for (let i = 0; i < n; i += per) {
    const b: StoreOp[] = [];
    for (let j = i; j < Math.min(n, i + per); j++)
      b.push({ op: 'put', kind: 'link', name: `${prefix}${j}`, data: linkBytes(j), expected: 0n });
    batches.push(b);
  }
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < batches.length) {
        const b = batches[next++] as StoreOp[];
        const [, ms] = await timed(() => store.commit(b));
        lat.push(ms);
      }
    }),
  );
  return { lat, totalMs: performance.now() - t0, commits: batches.length, opsPerCommit: per };
}

async function main(): Promise<void> {
  const result: Record<string, unknown> = {
    store: 'etcd',
    members: MEMBERS,
    objects: OBJECTS,
    max_txn_ops: MAX_TXN_OPS,
    cpus: os.cpus().length,
    loadavg_at_start: os.loadavg().map((x) => round(x)),
  };
  log(`starting a ${MEMBERS}-member etcd (--max-txn-ops ${MAX_TXN_OPS})`);
  const etcd = await startEtcd({ members: MEMBERS, maxTxnOps: MAX_TXN_OPS });
  const cfg = { ...ETCD_DEFAULTS, endpoints: etcd.endpoints, maxTxnOps: MAX_TXN_OPS, requestTimeoutSeconds: 30 };
  const store = new EtcdStore({ ...cfg, prefix: '/bench/' });
  const watcher = new EtcdStore({ ...cfg, prefix: '/bench/' });
  try {
    const snap0 = await store.loadSnapshot();
    result.object_bytes = linkBytes(12345).byteLength;

    log('one commit at a time, one object each');
    const single = await singleCommits(store, 'single-', 300);
    result.commit_single_p50_ms = round(pct(single, 50));
    result.commit_single_p99_ms = round(pct(single, 99));

    log('64 commits in flight, one object each');
    const conc = await concurrentCommits(store, 'conc-', 3000, 64);
    result.commit_concurrent64_p50_ms = round(pct(conc.lat, 50));
    result.commit_concurrent64_p99_ms = round(pct(conc.lat, 99));
    result.commit_concurrent64_per_s = round((conc.lat.length / conc.totalMs) * 1000, 0);

    log(`${OBJECTS} links in commits of ${store.maxOpsPerCommit}, one at a time`);
    const seq = await batchedWrite(store, 'obj-a-', OBJECTS, 1);
    result.batched_ops_per_commit = seq.opsPerCommit;
    result.batched_commit_p50_ms = round(pct(seq.lat, 50));
    result.batched_commit_p99_ms = round(pct(seq.lat, 99));
    result.batched_write_s = round(seq.totalMs / 1000);
    result.batched_objects_per_s = round((OBJECTS / seq.totalMs) * 1000, 0);

    // Watch lag over the next burst: a replica's cache following the leader's writes.
    let seen = 0n;
    const w = watcher.watch(store.revision(), {
      onBatch: (b) => {
        seen = b.revision;
      },
    });
    log(`${OBJECTS} more links in commits of ${store.maxOpsPerCommit}, 4 in flight, watched by a second handle`);
    const par = await batchedWrite(store, 'obj-b-', OBJECTS, 4);
    const lastRev = store.revision();
    const tEnd = performance.now();
    while (seen < lastRev) await new Promise((r) => setTimeout(r, 2));
    result.watch_lag_after_burst_ms = round(performance.now() - tEnd);
    w.close();
    result.batched4_commit_p50_ms = round(pct(par.lat, 50));
    result.batched4_commit_p99_ms = round(pct(par.lat, 99));
    result.batched4_write_s = round(par.totalMs / 1000);
    result.batched4_objects_per_s = round((OBJECTS / par.totalMs) * 1000, 0);

    // loadSnapshot of OBJECTS objects alone: a fresh prefix holding exactly them.
    const lister = new EtcdStore({ ...cfg, prefix: '/bench-list/' });
    await lister.loadSnapshot();
    await batchedWrite(lister, 'l-', OBJECTS, 4);
    const loads: number[] = [];
    let count = 0;
    for (let i = 0; i < 3; i++) {
      const fresh = new EtcdStore({ ...cfg, prefix: '/bench-list/' });
      const [snap, ms] = await timed(() => fresh.loadSnapshot());
      count = snap.objects.length;
      loads.push(ms);
      await fresh.close();
    }
    await lister.close();
    result.load_objects = count;
    result.load_ms = loads.map((x) => round(x, 0));
    result.load_median_ms = round(pct(loads, 50), 0);
    result.rss_mb_after = round(process.memoryUsage().rss / 1024 / 1024, 0);
    result.start_revision = Number(snap0.revision);
  } finally {
    await store.close();
    await watcher.close();
    await etcd.close();
  }

  log('SQLite on the same disk, for comparison');
  const dir = tempDir('bench-sqlite');
  const sq = new SqliteStore(dir);
  const sqSingle = await singleCommits(sq, 's-', 300);
  result.sqlite_commit_single_p50_ms = round(pct(sqSingle, 50));
  result.sqlite_commit_single_p99_ms = round(pct(sqSingle, 99));
  await sq.close();
  rmSync(dir, { recursive: true, force: true });
  result.loadavg_at_end = os.loadavg().map((x) => round(x));

  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err instanceof Error ? err.stack : err)}\n`);
  process.exit(1);
});
