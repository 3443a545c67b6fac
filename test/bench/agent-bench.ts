/**
 * vop-agent figures (npm run bench:agent [-- --runs N]): link bring-up time (ApplyLink on both
 * sides until both report Ready), agent RSS idle with 0 links and with 64 idle links, and CPU of
 * an agent holding those idle links. Two kinds of idle links, each measured: the real device
 * backends on both sides (a console on ptys, a net device on TAP interfaces as root or on Unix
 * datagram sockets otherwise, a blk device on its own backing file exported over NBD on a Unix
 * socket, default 256-entry queues), and one console-sized byte pipe (the link and worker alone).
 * Two real agent processes on this machine share one rendezvous directory. Prints a markdown
 * table (medians) and the raw samples as JSON.
 *
 * Environment: BENCH_BRINGUP_RUNS (default 21; --runs wins), BENCH_CPU_SECONDS (default 30),
 * BENCH_LINKS (64), BENCH_IDLE_QUEUE_SIZE (64, the byte-pipe links), BENCH_NET (tap as root,
 * else datagram), BENCH_NODE_OPTIONS (default: the systemd unit's node flags).
 */
import { readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { LinkPhase, type Device, type NetBackend } from '../../lib/proto/types';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

/** Node flags the systemd unit runs the agent with (deploy/systemd/vop-agent.service). */
const NODE_FLAGS = process.env.BENCH_NODE_OPTIONS ?? '--max-semi-space-size=2';
function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const RUNS = Number(arg('--runs') ?? process.env.BENCH_BRINGUP_RUNS ?? 21);
/** The net backend of the real-backend links: TAP needs CAP_NET_ADMIN, datagram sockets do not. */
const NET: 'tap' | 'datagram' =
  process.env.BENCH_NET === 'datagram' || (process.env.BENCH_NET !== 'tap' && process.getuid?.() !== 0)
    ? 'datagram'
    : 'tap';
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

/**
 * The real backends of one link, both sides: console on ptys, net on TAP (names chosen by the
 * agents) or datagram sockets, blk on its own sparse backing file exported over NBD.
 */
function realDevices(devDir: string, name: string): Device[] {
  const disk = path.join(devDir, `${name}.img`);
  writeFileSync(disk, '');
  truncateSync(disk, 64 * 1024 * 1024);
  const sock = (what: string): string => path.join(devDir, `${name}-${what}.sock`);
  const netBackend = (self: string, peer: string): NetBackend =>
    NET === 'tap'
      ? { kind: { $case: 'tap', value: { name: '', netns: '' } } }
      : { kind: { $case: 'datagram', value: { path: sock(self), peerPath: sock(peer) } } };
  return [
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
      name: 'net0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'net',
        value: {
          mac: '',
          mtu: 1500,
          offloads: false,
          deviceBackend: netBackend('dev', 'dev-peer'),
          driverFrontend: netBackend('drv', 'drv-peer'),
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
          export: { unixSocket: sock('nbd'), tcpListen: '', exportName: 'vop' },
        },
      },
    },
  ];
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

    // A blk device without an export is a byte-pipe stand-in; its backing path still lies in the disk root.
    const pipeBlk = bytePipeDevice('disk0', 'blk');
    if (pipeBlk.kind?.$case === 'blk' && pipeBlk.kind.value.backing) {
      pipeBlk.kind.value.backing.path = path.join(devDir, 'pipe.img');
      writeFileSync(pipeBlk.kind.value.backing.path, Buffer.alloc(1 << 20));
    }
    // Bring-up: both sides applied at once, time until both report Ready.
    const bringUp: number[] = [];
    let notReady = 0;
    for (let i = 0; i < RUNS; i++) {
      const name = `bu-${i}`;
      const link = makeLink(name, { devices: [bytePipeDevice('con0'), pipeBlk] });
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

    /** LINKS idle links with the given devices: how many got Ready on host-a, and host-a's memory then. */
    const idleLinks = async (
      prefix: string,
      devices: (name: string) => Device[],
    ): Promise<{ ready: number; rss: number; pss: number; windowBytes: number }> => {
      for (let i = 0; i < LINKS; i++) {
        const link = makeLink(`${prefix}-${i}`, { devices: devices(`${prefix}-${i}`) });
        await Promise.all([ca.apply(link), cb.apply(link)]);
      }
      let ready = 0;
      for (let i = 0; i < LINKS; i++)
        if (
          (await Promise.all([waitReady(ca, `${prefix}-${i}`, 20_000), waitReady(cb, `${prefix}-${i}`, 20_000)])).every(
            Boolean,
          )
        )
          ready += 1;
      await sleep(2000);
      const rss = await rssSamples(pidA);
      return { ready, rss, pss: pssBytes(pidA), windowBytes: Number(statSync(path.join(rdv, `${prefix}-0.win`)).size) };
    };
    const deleteLinks = async (prefix: string): Promise<void> => {
      for (let i = 0; i < LINKS; i++) await Promise.all([ca.delete(`${prefix}-${i}`), cb.delete(`${prefix}-${i}`)]);
    };
    /** host-a's CPU over CPU_SECONDS in three equal windows; the median is quoted (the machine may be shared). */
    const idleCpu = async (): Promise<{ total: number; main: number; seconds: number; windows: unknown[] }> => {
      const windows: { total: number; main: number }[] = [];
      const per = (CPU_SECONDS * 1000) / 3;
      let seconds = 0;
      for (let k = 0; k < 3; k++) {
        const c0 = cpuTicks(pidA);
        const m0 = cpuTicks(pidA, pidA);
        const t0 = process.hrtime.bigint();
        await sleep(per);
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        seconds += s;
        windows.push({
          total: ((cpuTicks(pidA) - c0) / CLK_TCK / s) * 100,
          main: ((cpuTicks(pidA, pidA) - m0) / CLK_TCK / s) * 100,
        });
      }
      return {
        total: median(windows.map((w) => w.total)),
        main: median(windows.map((w) => w.main)),
        seconds,
        windows,
      };
    };

    // LINKS idle links with the real backends on both sides: console on ptys, net, blk over NBD.
    const real = await idleLinks('idle-real', (name) => realDevices(devDir, name));
    const realCpu = await idleCpu();
    out.idleReal = { ...real, cpu: realCpu, net: NET };
    await deleteLinks('idle-real');

    // The same number of idle links of one console-sized byte pipe each: the link and its worker alone.
    const pipe = await idleLinks('idle-pipe', () => [bytePipeDevice('con0', 'console', IDLE_QUEUE_SIZE)]);
    const pipeCpu = await idleCpu();
    out.idlePipe = { ...pipe, cpu: pipeCpu };
    await deleteLinks('idle-pipe');

    // Bring-up with the real backends on both sides.
    const realUp: number[] = [];
    let realNotReady = 0;
    for (let i = 0; i < RUNS; i++) {
      const name = `real-${i}`;
      const link = makeLink(name, { devices: realDevices(devDir, name) });
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
    const netName = NET === 'tap' ? 'TAP' : 'datagram sockets';
    const realKind = `console on ptys, net on ${netName}, blk file over NBD; 256-entry queues`;
    const lines = [
      `| figure | result | target |`,
      `|---|---|---|`,
      `| link bring-up (ApplyLink on both sides until both Ready; byte-pipe stand-ins for a console and a blk device, no backends), median of ${bringUp.length} | ${bringUp.length > 0 ? `${median(bringUp).toFixed(1)} ms` : 'n/a (no link reached Ready)'} | <= 100 ms |`,
      `| link bring-up with real backends (${realKind}), median of ${realUp.length} | ${realUp.length > 0 ? `${median(realUp).toFixed(1)} ms` : 'n/a'} | <= 100 ms |`,
      `| agent RSS idle, 0 links (median of 5 samples) | ${mib(rss0)} MiB (PSS ${mib(out.pssIdle0LinksBytes)} MiB) | <= 120 MiB |`,
      `| agent RSS idle, ${LINKS} links with real backends (${real.ready} Ready; ${realKind}; window ${(real.windowBytes / 1024).toFixed(0)} KiB) | ${mib(real.rss)} MiB (PSS ${mib(real.pss)} MiB; ${mib((real.rss - rss0) / LINKS)} MiB RSS per link) | <= 120 MiB |`,
      `| agent CPU, ${LINKS} idle links with real backends, ${realCpu.seconds.toFixed(0)} s (median of 3 windows) | ${realCpu.total.toFixed(2)} % of one core (JS thread ${realCpu.main.toFixed(2)} %) | < 2 % |`,
      `| agent RSS idle, ${LINKS} links of one byte pipe (${pipe.ready} Ready; queue size ${IDLE_QUEUE_SIZE}, window ${(pipe.windowBytes / 1024).toFixed(0)} KiB) | ${mib(pipe.rss)} MiB (PSS ${mib(pipe.pss)} MiB; ${mib((pipe.rss - rss0) / LINKS)} MiB RSS per link) | <= 120 MiB |`,
      `| agent CPU, ${LINKS} idle byte-pipe links, ${pipeCpu.seconds.toFixed(0)} s (median of 3 windows) | ${pipeCpu.total.toFixed(2)} % of one core (JS thread ${pipeCpu.main.toFixed(2)} %) | < 2 % |`,
    ];
    process.stdout.write(
      `${lines.join('\n')}\n\nnative: ${native}; node ${process.version} ${NODE_FLAGS}\n${JSON.stringify(out)}\n`,
    );
  } finally {
    ca.close();
    cb.close();
    await Promise.all([a.stop('SIGTERM'), b.stop('SIGTERM')]);
    rmSync(devDir, { recursive: true, force: true });
    rmSync(rdv, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`agent-bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
