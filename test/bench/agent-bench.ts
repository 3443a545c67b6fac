/**
 * vop-agent figures (npm run bench:agent): link bring-up time (ApplyLink on both sides
 * until both report Ready), agent RSS idle with 0 and 64 links, and CPU of an agent
 * holding 64 idle links over 30 s. Two real agent processes on this machine share one
 * rendezvous directory. Prints a markdown table (medians) and the raw samples as JSON.
 *
 * Environment: BENCH_BRINGUP_RUNS (default 21), BENCH_CPU_SECONDS (default 30), BENCH_LINKS (64),
 * BENCH_IDLE_QUEUE_SIZE (64), BENCH_NODE_OPTIONS (default: the systemd unit's node flags).
 */
import { readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { LinkPhase, type Device } from '../../lib/proto/types';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

/** Node flags the systemd unit runs the agent with (deploy/systemd/vop-agent.service). */
const NODE_FLAGS = process.env.BENCH_NODE_OPTIONS ?? '--max-semi-space-size=2';
const RUNS = Number(process.env.BENCH_BRINGUP_RUNS ?? 21);
const CPU_SECONDS = Number(process.env.BENCH_CPU_SECONDS ?? 30);
const LINKS = Number(process.env.BENCH_LINKS ?? 64);
const CLK_TCK = 100;
/** Queue size of the one console-sized device on each idle link (a console needs no more). */
const IDLE_QUEUE_SIZE = Number(process.env.BENCH_IDLE_QUEUE_SIZE ?? 64);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

/** Proportional set size: shared window pages count half for each of the two agents. */
function pssBytes(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(m?.[1] ?? 0) * 1024;
}

function cpuTicks(pid: number, tid: number | null = null): number {
  const stat = readFileSync(tid === null ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitReady(agent: Agent, name: string, timeoutMs = 10_000): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const phase = (await agent.get(name)).link?.status?.phase;
    if (phase === LinkPhase.LINK_PHASE_READY) return true;
    if (phase === LinkPhase.LINK_PHASE_FAILED) return false;
    await sleep(1);
  }
  return false;
}

async function rssSamples(pid: number, n = 5): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    xs.push(rssBytes(pid));
    await sleep(200);
  }
  return median(xs);
}

async function main(): Promise<void> {
  const rdv = tempDir('bench-rdv');
  const env = { NODE_OPTIONS: NODE_FLAGS };
  // The real-backend links put every host path in devDir: both agents allow it for every kind.
  const devDir = tempDir('bench-dev');
  const roots = ['--disk-dir', devDir, '--socket-dir', devDir, '--log-dir', devDir, '--pty-dir', devDir];
  const a: ServerProcess = await startServer(
    'agent',
    ['--node-name', 'host-a', '--rendezvous-dir', rdv, '--log-level', 'info', ...roots],
    { env },
  );
  const b: ServerProcess = await startServer(
    'agent',
    ['--node-name', 'card-b', '--rendezvous-dir', rdv, '--log-level', 'info', ...roots],
    { env },
  );
  const ca = new Agent(a.admin);
  const cb = new Agent(b.admin);
  const pidA = a.proc.pid ?? 0;
  const out: Record<string, unknown> = {};
  try {
    const native = (await ca.info()).nativeVersion;
    out.nativeVersion = native;
    await sleep(2000);
    const rss0 = await rssSamples(pidA);
    out.rssIdle0LinksBytes = rss0;
    out.pssIdle0LinksBytes = pssBytes(pidA);

    // Bring-up: both sides applied at once, time until both report Ready.
    const bringUp: number[] = [];
    let notReady = 0;
    for (let i = 0; i < RUNS; i++) {
      const name = `bu-${i}`;
      const link = makeLink(name, { devices: [bytePipeDevice('con0'), bytePipeDevice('disk0', 'blk')] });
      const t0 = process.hrtime.bigint();
      await Promise.all([ca.apply(link), cb.apply(link)]);
      const ok = (await Promise.all([waitReady(ca, name), waitReady(cb, name)])).every(Boolean);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (ok) bringUp.push(ms);
      else notReady += 1;
      await Promise.all([ca.delete(name), cb.delete(name)]);
    }
    out.bringUpMs = bringUp;
    out.bringUpNotReady = notReady;

    /** LINKS idle links of one console-sized byte pipe each: how many got Ready, and host-a's memory then. */
    const idleLinks = async (
      prefix: string,
      queueSize: number,
    ): Promise<{ ready: number; rss: number; pss: number; windowBytes: number }> => {
      for (let i = 0; i < LINKS; i++) {
        const link = makeLink(`${prefix}-${i}`, { devices: [bytePipeDevice('con0', 'console', queueSize)] });
        await Promise.all([ca.apply(link), cb.apply(link)]);
      }
      let ready = 0;
      for (let i = 0; i < LINKS; i++) if (await waitReady(ca, `${prefix}-${i}`, 5000)) ready += 1;
      await sleep(2000);
      const rss = await rssSamples(pidA);
      return { ready, rss, pss: pssBytes(pidA), windowBytes: Number(statSync(path.join(rdv, `${prefix}-0.win`)).size) };
    };
    const deleteLinks = async (prefix: string): Promise<void> => {
      for (let i = 0; i < LINKS; i++) await Promise.all([ca.delete(`${prefix}-${i}`), cb.delete(`${prefix}-${i}`)]);
    };

    // 64 idle links.
    const idle = await idleLinks('idle', IDLE_QUEUE_SIZE);
    const ready = idle.ready;
    out.idleLinksReady = ready;
    out.rssIdleLinksBytes = idle.rss;
    out.pssIdleLinksBytes = idle.pss;
    out.windowBytes = idle.windowBytes;
    // Three equal windows; the median is quoted (the machine may be shared).
    const windows: { total: number; main: number }[] = [];
    const per = (CPU_SECONDS * 1000) / 3;
    let secs = 0;
    for (let k = 0; k < 3; k++) {
      const c0 = cpuTicks(pidA);
      const m0 = cpuTicks(pidA, pidA);
      const t0 = Date.now();
      await sleep(per);
      const s = (Date.now() - t0) / 1000;
      secs += s;
      windows.push({
        total: ((cpuTicks(pidA) - c0) / CLK_TCK / s) * 100,
        main: ((cpuTicks(pidA, pidA) - m0) / CLK_TCK / s) * 100,
      });
    }
    out.cpuWindows = windows;
    out.cpuIdleLinksPercentOfCore = median(windows.map((w) => w.total));
    out.cpuIdleLinksMainThreadPercent = median(windows.map((w) => w.main));
    out.cpuWindowSeconds = secs;

    await deleteLinks('idle');
    // The same idle links with the default 256-entry queues (4x the pools; they are not resident until used).
    const idle256 = await idleLinks('idle256', 256);
    const ready256 = idle256.ready;
    out.idleLinks256Ready = ready256;
    out.rssIdleLinks256Bytes = idle256.rss;
    out.pssIdleLinks256Bytes = idle256.pss;
    out.window256Bytes = idle256.windowBytes;
    await deleteLinks('idle256');

    // After the idle figures: bring-up with the real backends on both sides (console on ptys, blk exported over NBD).
    const disk = path.join(devDir, 'disk.img');
    writeFileSync(disk, '');
    truncateSync(disk, 64 * 1024 * 1024);
    const realUp: number[] = [];
    let realNotReady = 0;
    for (let i = 0; i < RUNS; i++) {
      const name = `real-${i}`;
      const devices: Device[] = [
        {
          name: 'con0',
          queueSize: 0,
          disableEventIdx: false,
          kind: {
            $case: 'console',
            value: {
              deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(devDir, `${name}-host.pty`) } } },
              driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(devDir, `${name}-card.pty`) } } },
              log: undefined,
            },
          },
        },
        {
          name: 'disk0',
          queueSize: 0,
          disableEventIdx: false,
          kind: {
            $case: 'blk',
            value: {
              backing: { path: disk, readOnly: false, directIo: false, serial: '' },
              export: { unixSocket: path.join(devDir, `${name}.sock`), tcpListen: '', exportName: 'vop' },
            },
          },
        },
      ];
      const link = makeLink(name, { devices });
      const t0 = process.hrtime.bigint();
      await Promise.all([ca.apply(link), cb.apply(link)]);
      const ok = (await Promise.all([waitReady(ca, name, 20_000), waitReady(cb, name, 20_000)])).every(Boolean);
      if (ok) realUp.push(Number(process.hrtime.bigint() - t0) / 1e6);
      else realNotReady += 1;
      await Promise.all([ca.delete(name), cb.delete(name)]);
    }
    out.bringUpRealDevicesMs = realUp;
    out.bringUpRealDevicesNotReady = realNotReady;
    const mib = (x: unknown): string => (Number(x) / 1048576).toFixed(1);
    const lines = [
      `| figure | result | target |`,
      `|---|---|---|`,
      `| link bring-up (ApplyLink on both sides until both Ready; byte-pipe console, blk from a file), median of ${bringUp.length} | ${bringUp.length > 0 ? `${median(bringUp).toFixed(1)} ms` : 'n/a (no link reached Ready)'} | <= 100 ms |`,
      `| link bring-up with real backends (console on ptys, blk file exported over NBD), median of ${realUp.length} | ${realUp.length > 0 ? `${median(realUp).toFixed(1)} ms` : 'n/a'} | <= 100 ms |`,
      `| agent RSS idle, 0 links (median of 5 samples) | ${mib(rss0)} MiB (PSS ${mib(out.pssIdle0LinksBytes)} MiB) | <= 120 MiB |`,
      `| agent RSS idle, ${LINKS} links (${ready} Ready; 1 device, queue size ${IDLE_QUEUE_SIZE}, window ${(Number(out.windowBytes) / 1024).toFixed(0)} KiB) | ${mib(out.rssIdleLinksBytes)} MiB (PSS ${mib(out.pssIdleLinksBytes)} MiB) | <= 120 MiB |`,
      `| agent RSS idle, ${LINKS} links (${ready256} Ready; 1 device, queue size 256, window ${(Number(out.window256Bytes) / 1024).toFixed(0)} KiB) | ${mib(out.rssIdleLinks256Bytes)} MiB (PSS ${mib(out.pssIdleLinks256Bytes)} MiB) | <= 120 MiB |`,
      `| agent CPU, ${LINKS} idle links, ${secs.toFixed(0)} s (median of 3 windows) | ${(out.cpuIdleLinksPercentOfCore as number).toFixed(2)} % of one core (JS thread ${(out.cpuIdleLinksMainThreadPercent as number).toFixed(2)} %) | < 2 % |`,
    ];
    process.stdout.write(
      `${lines.join('\n')}\n\nnative: ${native}; node ${process.version} ${NODE_FLAGS}\n${JSON.stringify(out)}\n`,
    );
  } finally {
    ca.close();
    cb.close();
    await Promise.all([a.stop('SIGTERM'), b.stop('SIGTERM')]);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`agent-bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
