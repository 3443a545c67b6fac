/**
 * virtio-net figures (npm run bench:net): iperf3 TCP throughput and UDP
 * 1400-byte packets/s across a vop link (two vopdev processes joined by an
 * shm window, each with a TAP in its own network namespace) and, in the same
 * run, across a veth pair between two namespaces. Runs alternate vop/veth;
 * medians are reported. UDP is sent at an offered rate (BENCH_UDP_RATE,
 * default 2G: more than either path carries) and the receiver's packet count
 * is what counts. Namespaces, TAPs, veths and windows are removed on exit,
 * also on failure.
 * --json FILE writes { vop_tcp_gbit_s, veth_tcp_gbit_s, vop_udp_kpps, veth_udp_kpps } plus the
 * medians of the vop/veth ratios paired within each run (the machine is shared and noisy).
 *
 * Environment: BENCH_RUNS (default 5), BENCH_SECONDS (default 5), BENCH_UDP_RATE (default 2G).
 */
import { rmSync, writeFileSync } from 'node:fs';

import { buildVopdev, Netns, sh, Vopdev } from '../devices/helpers';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const UDP_RATE = process.env.BENCH_UDP_RATE ?? '2G';

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

interface IperfJson {
  end: {
    sum_received?: { bits_per_second: number; packets?: number; lost_packets?: number; seconds?: number };
    sum?: { packets: number; lost_packets: number; seconds: number };
    sum_sent?: { seconds: number };
  };
}

let nextPort = 5400;

function iperf(ns: Netns, server: string, client: string, ip: string, udp: boolean): number {
  // a port per run: a one-off server may still be exiting when the next one starts
  const port = String(nextPort++);
  const s = ns.exec(server, 'iperf3', ['-s', '-1', '-D', '-B', ip, '-p', port]);
  if (s.code !== 0) throw new Error(`iperf3 -s: ${s.stderr}`);
  sh('sleep', ['0.3']);
  const args = ['-c', ip, '-p', port, '-t', String(SECONDS), '-J'];
  if (udp) args.push('-u', '-b', UDP_RATE, '-l', '1400');
  let r = ns.exec(client, 'iperf3', args, (SECONDS + 30) * 1000);
  for (let i = 0; i < 20 && /Connection refused/.test(r.stdout + r.stderr); i++) {
    sh('sleep', ['0.25']); // the one-off server daemon is not listening yet
    r = ns.exec(client, 'iperf3', args, (SECONDS + 30) * 1000);
  }
  if (r.code !== 0) throw new Error(`iperf3 -c: ${r.stdout}${r.stderr}`);
  const j = JSON.parse(r.stdout) as IperfJson;
  if (!udp) return (j.end.sum_received?.bits_per_second ?? 0) / 1e9;
  const rs = j.end.sum_received;
  const u =
    j.end.sum ??
    (rs?.packets !== undefined
      ? { packets: rs.packets, lost_packets: rs.lost_packets ?? 0, seconds: rs.seconds ?? SECONDS }
      : undefined);
  return u && u.seconds > 0 ? (u.packets - u.lost_packets) / u.seconds / 1000 : 0;
}

function up(ns: Netns, n: string, dev: string, ip: string): void {
  for (const args of [
    ['addr', 'add', `${ip}/24`, 'dev', dev],
    ['link', 'set', dev, 'up'],
  ]) {
    const r = ns.exec(n, 'ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  }
}

async function main(): Promise<void> {
  const jsonIdx = process.argv.indexOf('--json');
  const jsonFile = jsonIdx > 0 ? process.argv[jsonIdx + 1] : undefined;
  buildVopdev();
  const ns = new Netns('vopbench', 4);
  const [vopDev, vopDrv, vethA, vethB] = ns.names as [string, string, string, string];
  const win = `/dev/shm/vop-net-bench-${process.pid}`;
  rmSync(win, { force: true });
  let drv: Vopdev | null = null;
  let dev: Vopdev | null = null;
  const onSignal = (): void => {
    ns.remove();
    rmSync(win, { force: true });
    process.exit(1);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    drv = new Vopdev(['--window', win, '--create', '96', '--net-driver', '1:tap=vop0:mtu=1500'], vopDrv);
    dev = new Vopdev(['--window', win, '--attach', '--net-device', '1:tap=vop0'], vopDev);
    await drv.waitReady();
    await dev.waitReady();
    up(ns, vopDev, 'vop0', '10.78.0.1');
    up(ns, vopDrv, 'vop0', '10.78.0.2');
    let r = sh('ip', ['link', 'add', 'vb0', 'netns', vethA, 'type', 'veth', 'peer', 'name', 'vb1', 'netns', vethB]);
    if (r.code !== 0) throw new Error(`veth: ${r.stderr}`);
    up(ns, vethA, 'vb0', '10.79.0.1');
    up(ns, vethB, 'vb1', '10.79.0.2');
    r = ns.exec(vopDrv, 'ping', ['-c', '1', '-W', '2', '10.78.0.1']);
    if (r.code !== 0) throw new Error('vop link does not ping');
    const s = { vopTcp: [] as number[], vethTcp: [] as number[], vopUdp: [] as number[], vethUdp: [] as number[] };
    for (let i = 0; i < RUNS; i++) {
      s.vopTcp.push(iperf(ns, vopDev, vopDrv, '10.78.0.1', false));
      s.vethTcp.push(iperf(ns, vethA, vethB, '10.79.0.1', false));
      s.vopUdp.push(iperf(ns, vopDev, vopDrv, '10.78.0.1', true));
      s.vethUdp.push(iperf(ns, vethA, vethB, '10.79.0.1', true));
      process.stderr.write(
        `run ${i + 1}/${RUNS}: vop tcp ${s.vopTcp[i]?.toFixed(2)} Gbit/s, veth tcp ${s.vethTcp[i]?.toFixed(2)} Gbit/s, vop udp ${s.vopUdp[i]?.toFixed(1)} kpps, veth udp ${s.vethUdp[i]?.toFixed(1)} kpps\n`,
      );
    }
    const paired = (a: number[], b: number[]): number =>
      Math.round(median(a.map((x, i) => x / (b[i] ?? 1))) * 100) / 100;
    const res = {
      vop_tcp_gbit_s: Math.round(median(s.vopTcp) * 100) / 100,
      veth_tcp_gbit_s: Math.round(median(s.vethTcp) * 100) / 100,
      vop_udp_kpps: Math.round(median(s.vopUdp) * 10) / 10,
      veth_udp_kpps: Math.round(median(s.vethUdp) * 10) / 10,
      paired_tcp_ratio: paired(s.vopTcp, s.vethTcp),
      paired_udp_ratio: paired(s.vopUdp, s.vethUdp),
    };
    process.stdout.write(
      `\nnet, medians of ${RUNS} runs of ${SECONDS} s\n\n| path | TCP Gbit/s | UDP 1400 B kpps (received) |\n|---|---|---|\n`,
    );
    process.stdout.write(
      `| vop link (TAP - shm - TAP) | ${res.vop_tcp_gbit_s} | ${res.vop_udp_kpps} |\n| veth pair | ${res.veth_tcp_gbit_s} | ${res.veth_udp_kpps} |\n`,
    );
    process.stdout.write(
      `| ratio vop/veth | ${(res.vop_tcp_gbit_s / res.veth_tcp_gbit_s).toFixed(2)} | ${(res.vop_udp_kpps / res.veth_udp_kpps).toFixed(2)} |\n`,
    );
    process.stdout.write(
      `| median of the ratios paired per run | ${res.paired_tcp_ratio} | ${res.paired_udp_ratio} |\n`,
    );
    process.stdout.write(
      `\ntarget vop >= 0.5 x veth TCP (paired): ${res.paired_tcp_ratio >= 0.5 ? 'met' : 'MISSED'}\n`,
    );
    if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify(res, null, 2)}\n`);
  } finally {
    if (dev) await dev.stop();
    if (drv) await drv.stop();
    ns.remove();
    rmSync(win, { force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
