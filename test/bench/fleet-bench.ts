/**
 * Fleet benchmark (not a timed test): `npm run bench:fleet -- --agents N --links-per-agent K [--workers W] [--json FILE]`.
 *
 * Starts a real vop-controller (embedded SQLite store), W simulator processes with N/2
 * hosts and N/2 cards in total (each card sits in its own host) speaking the real Sync
 * protocol, waits until every agent registered, then applies K LinkPolicies (each gives
 * every card one link to its host: L = N/2 * K links, K per agent) and measures the time
 * until the controller reports every link Ready. Then measures ApplyLink/GetLink latency
 * with the fleet connected. Reports controller CPU and peak RSS from /proc.
 */
import { fork, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { credentials, Metadata } from '@grpc/grpc-js';

import { ControllerServiceClient } from '../../lib/proto/controller';
import { ConditionStatus, Link, LinkPolicy, NodeRole, type AgentIdentity } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import type { WorkerReport } from './fleet-sim-worker';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '1000' },
    'links-per-agent': { type: 'string', default: '4' },
    workers: { type: 'string', default: '4' },
    json: { type: 'string' },
    'lease-seconds': { type: 'string', default: '30' },
  },
  strict: true,
});
const N = Math.max(2, Number(values.agents));
const K = Math.max(1, Number(values['links-per-agent']));
const W = Math.max(1, Number(values.workers));
const cards = Math.floor(N / 2);
const L = cards * K;

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

async function main(): Promise<void> {
  const stateDir = mkdtempSync(path.join(os.tmpdir(), 'vop-fleet-bench-'));
  const cfg = path.join(stateDir, 'controller.yaml');
  writeFileSync(cfg, `leaseSeconds: ${Number(values['lease-seconds'])}\n`);
  const ctl = spawn(
    process.execPath,
    [
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
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env } },
  );
  // The simulated agents and the bench client use the admin Unix socket (plaintext TCP is read-only).
  const addrs = await new Promise<{ grpc: string; metrics: string }>((resolve, reject) => {
    let buf = '';
    ctl.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      for (const line of buf.split('\n')) {
        try {
          const rec = JSON.parse(line) as { msg?: string; admin?: string; metrics?: string };
          if (rec.msg === 'vop-controller ready' && rec.admin && rec.metrics)
            resolve({ grpc: `unix:${rec.admin}`, metrics: rec.metrics });
        } catch {
          /* partial line */
        }
      }
    });
    ctl.once('exit', (code) => reject(new Error(`controller exited ${code}`)));
  });
  ctl.stdout.resume();
  const pid = ctl.pid as number;
  log(
    `controller pid ${pid} gRPC ${addrs.grpc}; ${N} agents (${cards} hosts + ${cards} cards) in ${W} processes, ${K} links per agent -> ${L} links`,
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
  const workers = [];
  const workerMain = repoPath('dist', 'test', 'bench', 'fleet-sim-worker.js');
  for (let w = 0; w < W; w++) {
    const mine = ids.filter((_, i) => Math.floor(i / 2) % W === w);
    const child = fork(workerMain, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.on('message', (m: WorkerReport) => {
      if (m.type === 'registered') registered[w] = m.count;
      else simLinks[w] = m.links;
    });
    child.send({ init: { controller: addrs.grpc, agents: mine.map((a) => ({ ...a })), streamsPerChannel: 100 } });
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
  const before = procStats(pid);

  const client = new ControllerServiceClient(addrs.grpc, credentials.createInsecure(), {
    'grpc.max_receive_message_length': 256 << 20,
  });
  const unary = <Req, Res>(method: string, req: Req): Promise<[Res, number]> =>
    new Promise((resolve, reject) => {
      const s = process.hrtime.bigint();
      const fn = (
        client as unknown as Record<
          string,
          (r: Req, md: Metadata, o: object, cb: (e: Error | null, r?: Res) => void) => void
        >
      )[method] as (r: Req, md: Metadata, o: object, cb: (e: Error | null, r?: Res) => void) => void;
      fn.call(client, req, new Metadata(), { deadline: Date.now() + 60_000 }, (e, r) =>
        e ? reject(e) : resolve([r as Res, Number(process.hrtime.bigint() - s) / 1e6]),
      );
    });

  const applyPolicyMs: number[] = [];
  const tApply = Date.now();
  for (let k = 0; k < K; k++) {
    const policy = LinkPolicy.fromJSON({
      meta: { name: `p${k}` },
      spec: {
        cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
        hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
        template: { cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices: [{ name: 'console', console: {} }] },
      },
    });
    const [, ms] = await unary('applyPolicy', { policy, dryRun: false });
    applyPolicyMs.push(ms);
  }
  const getMs: number[] = [];
  let ready = 0;
  let lastLog = 0;
  for (;;) {
    const text = await (await fetch(`http://${addrs.metrics}/metrics`)).text();
    ready = 0;
    for (const m of text.matchAll(/^vop_controller_links\{[^}]*condition="Ready"[^}]*status="True"[^}]*\} (\d+)/gm))
      ready += Number(m[1]);
    if (ready >= L) break;
    if (Date.now() - lastLog > 5000) {
      lastLog = Date.now();
      log(`${ready}/${L} links Ready, ${sum(simLinks)} link endpoints on the simulated agents`);
    }
    try {
      const [, ms] = await unary('getLink', {
        name: `p0-c-${String(Math.floor(Math.random() * cards)).padStart(5, '0')}`,
      });
      getMs.push(ms);
    } catch {
      /* not created yet */
    }
    if (Date.now() - tApply > 600_000) throw new Error(`not converged after 600 s: ${ready}/${L}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const convergeS = (Date.now() - tApply) / 1000;
  const atConverge = procStats(pid);
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
  const end = procStats(pid);
  const result = {
    agents: N,
    links: L,
    converge_s: Number(convergeS.toFixed(2)),
    register_s: Number(registerS.toFixed(2)),
    controller_rss_mb: Number(end.hwmMb.toFixed(1)),
    controller_rss_now_mb: Number(end.rssMb.toFixed(1)),
    controller_cpu_s: Number((atConverge.cpuS - before.cpuS).toFixed(2)),
    controller_cpu_total_s: Number(end.cpuS.toFixed(2)),
    apply_p50_ms: Number(pct(applyMs, 50).toFixed(2)),
    apply_p99_ms: Number(pct(applyMs, 99).toFixed(2)),
    apply_policy_max_ms: Number(Math.max(...applyPolicyMs).toFixed(2)),
    get_p50_ms: Number(pct(getMs, 50).toFixed(2)),
    get_p99_ms: Number(pct(getMs, 99).toFixed(2)),
    list_page_1000_ms: Number(listPageMs.toFixed(2)),
    machine: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model ?? '',
      mem_gb: Math.round(os.totalmem() / 2 ** 30),
      node: process.version,
    },
  };
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
  client.close();
  for (const w of workers) w.kill('SIGKILL');
  ctl.kill('SIGKILL');
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:fleet: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
