/**
 * Fleet benchmark (not a timed test): `npm run bench:fleet -- --agents N --links-per-agent K [--workers W] [--json FILE]
 * [--store sqlite|etcd] [--replicas R] [--kills M] [--leader-lease-seconds S]
 * [--registrations-per-second N] [--registration-burst B]` (the controller's syncAdmission).
 * VOP_BENCH_PROF=1 runs every replica with a V8 tick log (node --prof-process), =cpu with a
 * .cpuprofile (written by the replicas still running at the end); either keeps the run's directory.
 *
 * With `--store etcd`: a local three-member etcd (test/helpers/etcd.ts) and R controller
 * replicas (default 2) on it; the simulated agents stream to the leader and move to the next
 * replica on any error. After the steady-state latencies it kills the leader M times (default 3;
 * the killed replica is restarted as a follower in between) and reports `failover_s`, the median
 * from kill -9 to the new leader accepting an ApplyLink; then it deletes the policies, applies
 * them again, kills the leader 2 s into that convergence and reports `converge_with_failover_s`.
 *
 * Starts a real vop-controller (embedded SQLite store), W simulator processes with N/2
 * hosts and N/2 cards in total (each card sits in its own host) speaking the real Sync
 * protocol, waits until every agent registered, then applies K LinkPolicies (each gives
 * every card one link to its host: L = N/2 * K links, K per agent) and measures the time
 * until the controller reports every link Ready. Then measures ApplyLink/GetLink latency
 * with the fleet connected. Reports controller CPU and peak RSS from /proc.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { credentials, Metadata } from '@grpc/grpc-js';

import { ControllerServiceClient } from '../../lib/proto/controller';
import { ConditionStatus, Link, LinkPolicy, NodeRole, type AgentIdentity } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { startEtcd } from '../helpers/etcd';
import type { WorkerReport } from './fleet-sim-worker';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    'links-per-agent': { type: 'string', default: '4' },
    workers: { type: 'string', default: '4' },
    json: { type: 'string' },
    'lease-seconds': { type: 'string', default: '30' },
    store: { type: 'string', default: 'sqlite' },
    replicas: { type: 'string' },
    kills: { type: 'string', default: '3' },
    'leader-lease-seconds': { type: 'string', default: '6' },
    /** The controller's syncAdmission (default: the controller's defaults). */
    'registrations-per-second': { type: 'string' },
    'registration-burst': { type: 'string' },
  },
  strict: true,
});
const N = Math.max(2, Number(values.agents));
const K = Math.max(1, Number(values['links-per-agent']));
const W = Math.max(1, Number(values.workers));
const cards = Math.floor(N / 2);
const L = cards * K;
const STORE = values.store === 'etcd' ? 'etcd' : 'sqlite';
if (values.store !== 'sqlite' && values.store !== 'etcd') throw new Error('--store is sqlite or etcd');
const R = STORE === 'etcd' ? Math.max(1, Number(values.replicas ?? '2')) : 1;
const KILLS = Math.max(0, Number(values.kills));

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function procStats(pid: number): { cpuS: number; rssMb: number; hwmMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const hz = 100;
  const cpuS = (Number(fields[11]) + Number(fields[12])) / hz;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { cpuS, rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
}

function pct(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] ?? 0;
}

interface Replica {
  proc: ChildProcess;
  readonly admin: string;
  readonly metrics: string;
  readonly pid: number;
  client: ControllerServiceClient;
  peakMb: number;
}

async function startReplica(stateDir: string, cfg: string): Promise<Replica> {
  const ctl = spawn(
    process.execPath,
    [
      // VOP_BENCH_PROF=1: a V8 tick log per replica in its directory (node --prof-process);
      // VOP_BENCH_PROF=cpu: a .cpuprofile of every replica still running at the end (stopped with SIGTERM).
      ...(process.env.VOP_BENCH_PROF === 'cpu'
        ? ['--cpu-prof', '--cpu-prof-dir', stateDir]
        : process.env.VOP_BENCH_PROF
          ? ['--prof']
          : []),
      repoPath('dist', 'controller', 'src', 'main.js'),
      '--grpc-listen',
      '127.0.0.1:0',
      '--metrics-listen',
      '127.0.0.1:0',
      '--state-dir',
      stateDir,
      '--config',
      cfg,
      '--admin-socket',
      path.join(stateDir, 'admin.sock'),
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env }, cwd: stateDir },
  );
  // The simulated agents and the bench client use the admin Unix socket (plaintext TCP is read-only).
  const addrs = await new Promise<{ grpc: string; metrics: string }>((resolve, reject) => {
    let buf = '';
    const onData = (c: Buffer): void => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const rec = JSON.parse(line) as { msg?: string; admin?: string; metrics?: string };
          if (rec.msg === 'vop-controller ready' && rec.admin && rec.metrics) {
            ctl.stdout.off('data', onData);
            resolve({ grpc: `unix:${rec.admin}`, metrics: rec.metrics });
          }
        } catch {
          /* not JSON */
        }
      }
    };
    ctl.stdout.on('data', onData);
    ctl.once('exit', (code) => reject(new Error(`controller exited ${code}`)));
  });
  // The replica's log, for a run that goes wrong (the directory is removed at the end of a good one).
  ctl.stdout.pipe(createWriteStream(path.join(stateDir, 'controller.log'), { flags: 'a' }));
  return {
    proc: ctl,
    admin: addrs.grpc,
    metrics: addrs.metrics,
    pid: ctl.pid as number,
    client: new ControllerServiceClient(addrs.grpc, credentials.createInsecure(), {
      'grpc.max_receive_message_length': 256 << 20,
    }),
    peakMb: 0,
  };
}

async function main(): Promise<void> {
  const loadStart = os.loadavg().map((x) => Number(x.toFixed(2)));
  const root = mkdtempSync(path.join(os.tmpdir(), 'vop-fleet-bench-'));
  const etcd = STORE === 'etcd' ? await startEtcd({ members: 3, maxTxnOps: 1024 }) : undefined;
  const cfg = path.join(root, 'controller.yaml');
  writeFileSync(
    cfg,
    [
      `leaseSeconds: ${Number(values['lease-seconds'])}`,
      ...(values['registrations-per-second'] !== undefined || values['registration-burst'] !== undefined
        ? [
            'syncAdmission:',
            ...(values['registrations-per-second'] !== undefined
              ? [`  registrationsPerSecond: ${Number(values['registrations-per-second'])}`]
              : []),
            ...(values['registration-burst'] !== undefined ? [`  burst: ${Number(values['registration-burst'])}`] : []),
          ]
        : []),
      ...(etcd
        ? [
            'store:',
            '  kind: etcd',
            `  endpoints: [${etcd.endpoints.join(', ')}]`,
            '  prefix: /bench/',
            '  maxTxnOps: 1024',
            '  requestTimeoutSeconds: 10',
            `  leaderLeaseSeconds: ${Number(values['leader-lease-seconds'])}`,
          ]
        : []),
      '',
    ].join('\n'),
  );
  const dirs = Array.from({ length: R }, (_, i) => {
    const d = path.join(root, `replica-${i}`);
    mkdirSync(d);
    return d;
  });
  const replicas: Replica[] = [];
  for (const d of dirs) replicas.push(await startReplica(d, cfg));
  /** The index of the replica that leads and serves (asked with GetControllerStatus). */
  const findLeader = async (timeoutMs = 120_000): Promise<number> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      for (const [i, r] of replicas.entries()) {
        if (r.proc.exitCode !== null || r.proc.signalCode !== null) continue;
        const st = await new Promise<boolean>((resolve) =>
          r.client.getControllerStatus({}, new Metadata(), { deadline: Date.now() + 2000 }, (e, res) =>
            resolve(!e && res.leader),
          ),
        );
        if (st) return i;
      }
      if (Date.now() > end) throw new Error('no replica leads');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  let leader = await findLeader();
  const peaks = (): void => {
    for (const r of replicas) {
      try {
        r.peakMb = Math.max(r.peakMb, procStats(r.pid).hwmMb);
      } catch {
        /* exited */
      }
    }
  };
  const pid = (): number => (replicas[leader] as Replica).pid;
  log(
    `${R} controller replica(s) on ${STORE} (leader pid ${pid()}); ${N} agents (${cards} hosts + ${cards} cards) in ${W} processes, ${K} links per agent -> ${L} links`,
  );

  const ids: AgentIdentity[] = [];
  for (let i = 0; i < cards; i++) {
    const rack = `r${String(Math.floor(i / 40)).padStart(3, '0')}`;
    const h = `h-${String(i).padStart(5, '0')}`;
    ids.push({ nodeName: h, rack, slot: 0, role: NodeRole.NODE_ROLE_HOST, hostNode: '', labels: {} });
    ids.push({
      nodeName: `c-${String(i).padStart(5, '0')}`,
      rack,
      slot: 1,
      role: NodeRole.NODE_ROLE_CARD,
      hostNode: h,
      labels: {},
    });
  }
  const registered = new Array<number>(W).fill(0);
  const simLinks = new Array<number>(W).fill(0);
  const throttled = new Array<number>(W).fill(0);
  const workers = [];
  const workerMain = repoPath('dist', 'test', 'bench', 'fleet-sim-worker.js');
  for (let w = 0; w < W; w++) {
    const mine = ids.filter((_, i) => Math.floor(i / 2) % W === w);
    const child = fork(workerMain, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m: WorkerReport) => {
      if (m.type === 'registered') registered[w] = m.count;
      else {
        simLinks[w] = m.links;
        throttled[w] = m.throttled;
      }
    });
    child.send({
      init: {
        controllers: replicas.map((r) => r.admin),
        leader,
        agents: mine.map((a) => ({ ...a })),
        streamsPerChannel: 100,
      },
    });
    workers.push(child);
  }
  const sum = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);
  const t0 = Date.now();
  while (sum(registered) < N) {
    await new Promise((r) => setTimeout(r, 250));
    if (Date.now() - t0 > 300_000) throw new Error(`only ${sum(registered)}/${N} agents registered`);
  }
  const registerS = (Date.now() - t0) / 1000;
  log(`all ${N} agents registered in ${registerS.toFixed(1)} s`);
  await new Promise((r) => setTimeout(r, 2000));
  const before = procStats(pid());

  /** One call to the leader; `[response, ms]`. */
  const unary = <Req, Res>(method: string, req: Req, deadlineMs = 60_000): Promise<[Res, number]> =>
    new Promise((resolve, reject) => {
      const client = (replicas[leader] as Replica).client;
      const s = process.hrtime.bigint();
      const fn = (
        client as unknown as Record<
          string,
          (r: Req, md: Metadata, o: object, cb: (e: Error | null, r?: Res) => void) => void
        >
      )[method] as (r: Req, md: Metadata, o: object, cb: (e: Error | null, r?: Res) => void) => void;
      fn.call(client, req, new Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) =>
        e ? reject(e) : resolve([r as Res, Number(process.hrtime.bigint() - s) / 1e6]),
      );
    });

  const applyPolicyMs: number[] = [];
  /** Applies the K policies, through a failover if one happens meanwhile. */
  const applyPolicies = async (): Promise<void> => {
    for (let k = 0; k < K; k++) {
      const policy = LinkPolicy.fromJSON({
        meta: { name: `p${k}` },
        spec: {
          cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
          hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
          template: { cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices: [{ name: 'console', console: {} }] },
        },
      });
      for (;;) {
        try {
          const [, ms] = await unary('applyPolicy', { policy, dryRun: false });
          applyPolicyMs.push(ms);
          break;
        } catch (err) {
          log(`applyPolicy p${k}: ${(err as Error).message}; finding the leader`);
          leader = await findLeader();
        }
      }
    }
  };
  const getMs: number[] = [];
  /** Links Ready as the leader counts them (vop_controller_links). */
  const readyNow = async (): Promise<number> => {
    const text = await (await fetch(`http://${(replicas[leader] as Replica).metrics}/metrics`)).text();
    let n = 0;
    for (const m of text.matchAll(/^vop_controller_links\{[^}]*condition="Ready"[^}]*status="True"[^}]*\} (\d+)/gm))
      n += Number(m[1]);
    return n;
  };
  /** Waits until the leader reports `want` links Ready (leadership may move meanwhile). */
  const converge = async (
    t0: number,
    want: (n: number) => boolean,
    what: string,
    sampleGets: boolean,
  ): Promise<void> => {
    let lastLog = 0;
    for (;;) {
      peaks();
      let ready = -1;
      try {
        ready = await readyNow();
      } catch {
        leader = await findLeader();
        continue;
      }
      if (want(ready)) return;
      if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        log(
          `${what}: ${ready}/${L} links Ready, ${sum(simLinks)} link endpoints on the simulated agents, ${sum(registered)} agents registered, ${sum(throttled)} registrations throttled so far`,
        );
      }
      if (sampleGets)
        try {
          const [, ms] = await unary('getLink', {
            name: `p0-c-${String(Math.floor(Math.random() * cards)).padStart(5, '0')}`,
          });
          getMs.push(ms);
        } catch {
          /* not created yet */
        }
      if (Date.now() - t0 > 600_000) throw new Error(`${what}: not converged after 600 s: ${ready}/${L}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const tApply = Date.now();
  await applyPolicies();
  await converge(tApply, (n) => n >= L, 'converge', true);
  const convergeS = (Date.now() - tApply) / 1000;
  const atConverge = procStats(pid());
  log(`converged: ${L} links Ready in ${convergeS.toFixed(1)} s`);
  // Cross-check through the API and the simulated agents, not only the metric.
  let listed = 0;
  let listedReady = 0;
  let token = '';
  do {
    const [r] = await unary<object, { links: Link[]; nextPageToken: string }>('listLinks', {
      labelSelector: '',
      agent: '',
      phase: 0,
      pageSize: 5000,
      pageToken: token,
    });
    listed += r.links.length;
    listedReady += r.links.filter((l) =>
      l.status?.conditions.some((c) => c.type === 'Ready' && c.status === ConditionStatus.CONDITION_STATUS_TRUE),
    ).length;
    token = r.nextPageToken;
  } while (token !== '');
  await new Promise((r) => setTimeout(r, 600));
  log(
    `check: ListLinks returns ${listed} links, ${listedReady} Ready; simulated agents hold ${sum(simLinks)} link endpoints (expect ${2 * L})`,
  );
  if (listed !== L || listedReady !== L || sum(simLinks) !== 2 * L) throw new Error('cross-check failed');

  // Steady state: direct ApplyLink / GetLink latency with the fleet connected.
  const applyMs: number[] = [];
  const n = 500;
  let idx = 0;
  const workersN = 8;
  await Promise.all(
    Array.from({ length: workersN }, async () => {
      while (idx < n) {
        const i = idx++;
        const c = i % cards;
        const link = Link.fromJSON({
          meta: { name: `bench-${i}` },
          spec: {
            endpoints: [
              { agent: `h-${String(c).padStart(5, '0')}`, role: 'ROLE_DEVICE' },
              { agent: `c-${String(c).padStart(5, '0')}`, role: 'ROLE_DRIVER' },
            ],
            transport: { shm: {} },
            devices: [{ name: 'console', console: {} }],
          },
        });
        const [, ms] = await unary('applyLink', { link, dryRun: false });
        applyMs.push(ms);
        const [, gms] = await unary('getLink', { name: `bench-${i}` });
        getMs.push(gms);
      }
    }),
  );
  const listS = process.hrtime.bigint();
  await unary('listLinks', { labelSelector: '', agent: '', phase: 0, pageSize: 1000, pageToken: '' });
  const listPageMs = Number(process.hrtime.bigint() - listS) / 1e6;
  const end = procStats(pid());
  peaks();

  // Failovers (replicas only): kill -9 the leader, time until another accepts an ApplyLink.
  const failovers: number[] = [];
  let convergeWithFailoverS: number | undefined;
  const restart = async (i: number): Promise<void> => {
    const old = replicas[i] as Replica;
    old.client.close();
    rmSync(path.join(dirs[i] as string, 'admin.sock'), { force: true });
    const r = await startReplica(dirs[i] as string, cfg);
    r.peakMb = old.peakMb;
    replicas[i] = r;
  };
  const killLeader = async (): Promise<number> => {
    const old = leader;
    const victim = replicas[old] as Replica;
    peaks();
    const t0 = Date.now();
    victim.proc.kill('SIGKILL');
    await new Promise((r) => victim.proc.once('exit', r));
    return t0;
  };
  if (R > 1) {
    for (let k = 0; k < KILLS; k++) {
      const old = leader;
      const t0 = await killLeader();
      for (;;) {
        leader = await findLeader();
        try {
          await unary(
            'applyLink',
            {
              link: Link.fromJSON({
                meta: { name: `failover-${k}` },
                spec: {
                  endpoints: [
                    { agent: 'h-00000', role: 'ROLE_DEVICE' },
                    { agent: 'c-00000', role: 'ROLE_DRIVER' },
                  ],
                  transport: { shm: {} },
                  devices: [{ name: 'console', console: {} }],
                },
              }),
              dryRun: false,
            },
            5000,
          );
          break;
        } catch {
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      const s = (Date.now() - t0) / 1000;
      failovers.push(s);
      log(`failover ${k + 1}/${KILLS}: replica ${old} killed, replica ${leader} serving after ${s.toFixed(2)} s`);
      await restart(old);
      // Wait until every agent streams to the new leader again before the next kill.
      await converge(Date.now(), (n) => n >= L + applyMs.length + k + 1, `after failover ${k + 1}`, false);
    }
    // Converge again with a leader kill in the middle: delete the policies, apply them again.
    // The links applied one by one (steady state, failovers) stay.
    const direct = applyMs.length + failovers.length;
    for (let k = 0; k < K; k++) await unary('deletePolicy', { name: `p${k}`, resourceVersion: '' });
    await converge(Date.now(), (n) => n <= direct, 'policies deleted', false);
    const t1 = Date.now();
    await applyPolicies();
    await new Promise((r) => setTimeout(r, Math.max(0, 2000 - (Date.now() - t1))));
    const old = leader;
    await killLeader();
    log(`converge with failover: replica ${old} killed ${((Date.now() - t1) / 1000).toFixed(1)} s in`);
    leader = await findLeader();
    await converge(t1, (n) => n >= L + direct, 'converge with failover', false);
    convergeWithFailoverS = (Date.now() - t1) / 1000;
    log(
      `converge with failover: ${L} links Ready ${convergeWithFailoverS.toFixed(1)} s after the policies were applied`,
    );
    await restart(old);
  }
  peaks();
  // Main-thread stalls of a second or more, as each replica logged them (EVENT_LOOP_STALL).
  // Agent leases a replica let expire (LEASE_EXPIRED): a takeover must start every lease afresh.
  let leaseExpirations = 0;
  const stalls = dirs.map((d) => {
    const xs: number[] = [];
    try {
      const text = readFileSync(path.join(d, 'controller.log'), 'utf8');
      for (const m of text.matchAll(/"stallMs":(\d+)/g)) xs.push(Number(m[1]));
      leaseExpirations += text.split('"LEASE_EXPIRED"').length - 1;
    } catch {
      /* no log */
    }
    return xs;
  });
  const median = (xs: number[]): number => pct(xs, 50);
  const result = {
    agents: N,
    links: L,
    store: STORE,
    replicas: R,
    ...(R > 1 ? { leader_lease_s: Number(values['leader-lease-seconds']) } : {}),
    converge_s: Number(convergeS.toFixed(2)),
    register_s: Number(registerS.toFixed(2)),
    controller_rss_mb: Number((R > 1 ? Math.max(...replicas.map((r) => r.peakMb)) : end.hwmMb).toFixed(1)),
    controller_rss_now_mb: Number(end.rssMb.toFixed(1)),
    controller_cpu_s: Number((atConverge.cpuS - before.cpuS).toFixed(2)),
    controller_cpu_total_s: Number(end.cpuS.toFixed(2)),
    apply_p50_ms: Number(pct(applyMs, 50).toFixed(2)),
    apply_p99_ms: Number(pct(applyMs, 99).toFixed(2)),
    apply_policy_max_ms: Number(Math.max(...applyPolicyMs).toFixed(2)),
    get_p50_ms: Number(pct(getMs, 50).toFixed(2)),
    get_p99_ms: Number(pct(getMs, 99).toFixed(2)),
    list_page_1000_ms: Number(listPageMs.toFixed(2)),
    registrations_throttled: sum(throttled),
    agent_lease_expirations: leaseExpirations,
    loop_stalls_over_1s: stalls.map((xs) => xs.length),
    loop_stall_max_ms: stalls.map((xs) => (xs.length > 0 ? Math.max(...xs) : 0)),
    load_avg_start: loadStart,
    load_avg_end: os.loadavg().map((x) => Number(x.toFixed(2))),
    ...(R > 1
      ? {
          failover_s: Number(median(failovers).toFixed(2)),
          failovers_s: failovers.map((x) => Number(x.toFixed(2))),
          converge_with_failover_s: Number((convergeWithFailoverS ?? NaN).toFixed(2)),
          replica_rss_mb: replicas.map((r) => Number(r.peakMb.toFixed(1))),
        }
      : {}),
    machine: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model ?? '',
      mem_gb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
  for (const w of workers) w.kill('SIGKILL');
  for (const r of replicas) {
    r.client.close();
    if (process.env.VOP_BENCH_PROF === 'cpu') {
      r.proc.kill('SIGTERM');
      await new Promise((res) => r.proc.once('exit', res));
    } else r.proc.kill('SIGKILL');
  }
  await etcd?.close();
  // VOP_BENCH_PROF: the tick logs and replica logs stay for node --prof-process.
  if (process.env.VOP_BENCH_PROF) log(`kept ${root} (tick logs, replica logs)`);
  else rmSync(root, { recursive: true, force: true });
  process.exit(0);
}

// Ctrl-C: exit through process.exit, so the etcd helper's exit hook kills the members.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));

main().catch((err: unknown) => {
  process.stderr.write(`bench:fleet: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
