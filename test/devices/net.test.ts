/**
 * virtio-net across an shm link between two real processes: the device
 * side's TAP in one network namespace, the driver side's TAP in another,
 * ping both ways, then iperf3 TCP and UDP across. A packet socket on each
 * TAP (test/devices/tools/vnet-capture.c, PACKET_VNET_HDR) sees every frame
 * the link delivered with the virtio-net header the kernel holds for it, so
 * the tests observe TSO frames (gso_type, gso_size, frames larger than one
 * receive buffer) and compare the frames and receive buffers the link
 * counted with what arrived. Namespaces, TAPs, the window and the tools are
 * removed afterwards, also on failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { buildTool, buildVopdev, Netns, Vopdev } from './helpers';

/** VOP_NET_RXBUF (dev_net.h): the driver's default receive buffer, one 64 KiB GSO frame + header. */
const DEFAULT_RXBUF = 65536 + 12 + 14 + 4;

const missing = [
  ...(isRoot() ? [] : ['root']),
  ...(existsSync('/dev/net/tun') ? [] : ['/dev/net/tun']),
  ...['iperf3', 'ping', 'ip', 'cc'].filter((c) => !haveCommand(c)),
];

interface UdpSum {
  packets: number;
  lost_packets: number;
  seconds: number;
}

interface IperfEnd {
  end: { sum_received?: { bits_per_second: number } & Partial<UdpSum>; sum?: UdpSum };
}

/** What vnet-capture saw arrive on one TAP (see the tool's header). */
interface Capture {
  frames: number;
  bytes: number;
  max_len: number;
  gso_tcpv4: number;
  gso_tcpv6: number;
  gso_other: number;
  max_gso_size: number;
  big_frames: number;
  buffers: number;
  drops: number;
}

/** The net device's counters as vopdev prints them on exit (dev_net.h, struct vop_net_stats). */
type NetCounters = Record<
  | 'tx_frames'
  | 'rx_frames'
  | 'tx_bytes'
  | 'rx_bytes'
  | 'tx_dropped'
  | 'rx_dropped'
  | 'bad_headers'
  | 'gso_frames'
  | 'rx_buffers',
  number
>;

/** iperf3 client against a one-off server started just before: retry while the daemon is not listening yet. */
async function iperfClient(
  ns: Netns,
  n: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  for (let i = 0; ; i++) {
    const r = ns.exec(n, 'iperf3', args, 30000);
    if (i >= 20 || !/Connection refused/.test(r.stdout + r.stderr)) return r;
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** vnet-capture on a TAP inside a namespace: started before the TAP is up, stopped after the link. */
class Capturer {
  private readonly proc: ChildProcess;
  private out = '';
  private err = '';
  private readonly ready: Promise<void>;
  private readonly exited: Promise<number | null>;
  constructor(tool: string, ns: string, ifname: string, rxbuf: number) {
    this.proc = spawn('ip', ['netns', 'exec', ns, tool, ifname, String(rxbuf)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.proc.stderr?.on('data', (d: Buffer) => (this.err += d.toString()));
    this.ready = new Promise((resolve, reject) => {
      this.proc.stdout?.on('data', (d: Buffer) => {
        this.out += d.toString();
        if (this.out.startsWith('ready\n')) resolve();
      });
      void this.exited.then((code) => reject(new Error(`vnet-capture exited ${code}: ${this.err}`)));
    });
    this.ready.catch(() => undefined);
  }
  waitReady(): Promise<void> {
    return this.ready;
  }
  async stop(): Promise<Capture> {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    const code = await this.exited;
    assert.equal(code, 0, `vnet-capture: ${this.err}`);
    return JSON.parse(this.out.slice('ready\n'.length)) as Capture;
  }
  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

interface LinkRun {
  /** Counters of the device side (its TAP in nsDev) and of the driver side. */
  dev: NetCounters;
  drv: NetCounters;
  /** Frames that arrived on the device side's TAP (driver -> device) and on the driver side's. */
  atDev: Capture;
  atDrv: Capture;
}

describe(
  'virtio-net over an shm link between two namespaces',
  { skip: requirePrereq(missing.join(', '), missing.length === 0, 'TAP devices, namespaces and iperf3') },
  () => {
    it('pings both ways and carries iperf3 TCP and UDP with offloads', async () => {
      const r = await runLink(DEFAULT_RXBUF);
      // TSO both ways: the kernel of each side hands the link 64 KiB segments (gso_size one MSS)
      // and the other side's kernel receives them whole, with the GSO header the link carried.
      for (const [side, c] of [
        ['device', r.atDev],
        ['driver', r.atDrv],
      ] as const) {
        assert.ok(c.gso_tcpv4 > 0, `${side} side's TAP received TSO frames: ${JSON.stringify(c)}`);
        assert.equal(c.gso_other, 0);
        assert.ok(c.max_gso_size > 0 && c.max_gso_size <= 1500 - 40, `gso_size ${c.max_gso_size}`);
        assert.ok(c.max_len > 1514, `frames larger than the MTU: ${c.max_len} bytes`);
      }
      assert.ok(r.dev.gso_frames > 0 && r.drv.gso_frames > 0, 'both sides counted GSO frames');
      // One receive buffer per frame with the default 64 KiB buffers.
      assert.equal(r.drv.rx_buffers, r.drv.rx_frames, 'driver: one buffer per frame');
      assert.equal(r.dev.rx_buffers, r.dev.rx_frames, 'device: one buffer per frame');
      assert.equal(r.atDrv.big_frames, 0);
    });

    it('with 2 KiB mergeable receive buffers: 64 KiB TSO frames span many buffers, both directions', async () => {
      const r = await runLink(2048);
      // Device -> driver: the device reads a TSO frame from its TAP into as many of the driver's
      // 2 KiB buffers as it needs (num_buffers); the driver reassembles it for its TAP.
      assert.ok(r.atDrv.gso_tcpv4 > 0, `TSO frames reached the driver side: ${JSON.stringify(r.atDrv)}`);
      assert.ok(r.atDrv.max_gso_size > 0 && r.atDrv.max_gso_size <= 1460, `gso_size ${r.atDrv.max_gso_size}`);
      assert.ok(r.atDrv.big_frames > 0 && r.atDrv.max_len > 2048, `frames larger than one buffer: ${r.atDrv.max_len}`);
      // Buffers per frame from the counters: every frame that arrived needed ceil((len + 12) / 2048)
      // buffers, and the driver side counted exactly those for the frames its TAP took (the socket
      // lost nothing, checked first). A frame the TAP refused (early IPv6 chatter while it is still
      // down) is in rx_dropped; the device side counted every frame it put on the ring.
      assert.equal(r.atDrv.drops, 0, 'the capture on the driver side lost no frame');
      assert.equal(r.drv.rx_frames, r.atDrv.frames, 'every frame the driver side passed on reached its TAP');
      assert.equal(r.drv.rx_buffers, r.atDrv.buffers, 'driver: buffers per frame as the frame sizes need');
      assert.equal(r.dev.rx_frames, r.drv.rx_frames + r.drv.rx_dropped, 'every frame the device sent was received');
      assert.ok(r.drv.rx_dropped <= 4, `the driver's TAP refused ${r.drv.rx_dropped} frames`);
      assert.ok(r.dev.rx_buffers >= r.drv.rx_buffers, 'the device filled at least the buffers the driver passed on');
      assert.ok(r.drv.rx_buffers > r.drv.rx_frames, 'frames span more than one buffer');
      // Driver -> device: TSO frames go out in one 64 KiB transmit buffer each and arrive whole.
      assert.ok(r.atDev.gso_tcpv4 > 0 && r.atDev.max_len > 2048, `TSO to the device side: ${JSON.stringify(r.atDev)}`);
      process.stdout.write(
        `# 2 KiB buffers: ${r.drv.rx_frames} frames in ${r.drv.rx_buffers} buffers (${(r.drv.rx_buffers / r.drv.rx_frames).toFixed(2)} per frame), ${r.atDrv.big_frames} frames larger than one buffer, largest ${r.atDrv.max_len} bytes, gso_size up to ${r.atDrv.max_gso_size}\n`,
      );
    });
  },
);

async function runLink(rxbuf: number): Promise<LinkRun> {
  buildVopdev();
  const tool = buildTool('vnet-capture');
  const ns = new Netns('vopnet', 2);
  const [nsDev, nsDrv] = ns.names as [string, string];
  const win = `/dev/shm/vop-net-test-${process.pid}`;
  const driverOpts = rxbuf === DEFAULT_RXBUF ? '' : `:rxbuf=${rxbuf}`;
  rmSync(win, { force: true });
  let drv: Vopdev | null = null;
  let dev: Vopdev | null = null;
  const caps: Capturer[] = [];
  try {
    drv = new Vopdev(['--window', win, '--create', '96', '--net-driver', `1:tap=vop0:mtu=1500${driverOpts}`], nsDrv);
    dev = new Vopdev(['--window', win, '--attach', '--net-device', '1:tap=vop0'], nsDev);
    await drv.waitReady();
    await dev.waitReady();
    // Capture from before the TAPs are up: a TAP that is down takes no frame, so every frame the
    // link delivers is seen.
    const atDev = new Capturer(tool, nsDev, 'vop0', rxbuf);
    const atDrv = new Capturer(tool, nsDrv, 'vop0', rxbuf);
    caps.push(atDev, atDrv);
    await Promise.all([atDev.waitReady(), atDrv.waitReady()]);
    for (const [n, ip] of [
      [nsDev, '10.77.0.1'],
      [nsDrv, '10.77.0.2'],
    ] as const) {
      assert.equal(ns.exec(n, 'ip', ['addr', 'add', `${ip}/24`, 'dev', 'vop0']).code, 0);
      assert.equal(ns.exec(n, 'ip', ['link', 'set', 'vop0', 'up']).code, 0);
    }
    // the driver side's TAP carries the MAC from the device's config space
    assert.match(ns.exec(nsDrv, 'ip', ['link', 'show', 'vop0']).stdout, /52:54:00:76:6f:01/);
    const p1 = ns.exec(nsDev, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.77.0.2'], 20000);
    assert.equal(p1.code, 0, p1.stdout + p1.stderr);
    const p2 = ns.exec(nsDrv, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', '10.77.0.1'], 20000);
    assert.equal(p2.code, 0, p2.stdout + p2.stderr);
    // a large ping is fragmented/reassembled across the link
    const p3 = ns.exec(nsDrv, 'ping', ['-c', '2', '-s', '8000', '-W', '2', '10.77.0.1'], 20000);
    assert.equal(p3.code, 0, p3.stdout + p3.stderr);

    // a port per run: a one-off server may still be exiting when the next one starts
    assert.equal(ns.exec(nsDev, 'iperf3', ['-s', '-1', '-D', '-B', '10.77.0.1', '-p', '5301']).code, 0);
    const tcp = await iperfClient(ns, nsDrv, ['-c', '10.77.0.1', '-p', '5301', '-t', '3', '-J']);
    assert.equal(tcp.code, 0, tcp.stderr);
    const tcpBps = (JSON.parse(tcp.stdout) as IperfEnd).end.sum_received?.bits_per_second ?? 0;
    assert.ok(tcpBps > 0, 'TCP moved data');
    // and the other way: device side to driver side (receive buffers, mergeable when small)
    assert.equal(ns.exec(nsDev, 'iperf3', ['-s', '-1', '-D', '-B', '10.77.0.1', '-p', '5302']).code, 0);
    const rev = await iperfClient(ns, nsDrv, ['-c', '10.77.0.1', '-p', '5302', '-t', '3', '-R', '-J']);
    assert.equal(rev.code, 0, rev.stderr);
    const revBps = (JSON.parse(rev.stdout) as IperfEnd).end.sum_received?.bits_per_second ?? 0;
    assert.ok(revBps > 0, 'reverse TCP moved data');

    assert.equal(ns.exec(nsDev, 'iperf3', ['-s', '-1', '-D', '-B', '10.77.0.1', '-p', '5303']).code, 0);
    const udp = await iperfClient(ns, nsDrv, [
      '-c',
      '10.77.0.1',
      '-p',
      '5303',
      '-u',
      '-b',
      '20M',
      '-l',
      '1400',
      '-t',
      '3',
      '-J',
    ]);
    assert.equal(udp.code, 0, udp.stderr);
    const end = (JSON.parse(udp.stdout) as IperfEnd).end;
    const rs = end.sum_received;
    const u: UdpSum | undefined =
      end.sum ??
      (rs?.packets !== undefined
        ? { packets: rs.packets, lost_packets: rs.lost_packets ?? 0, seconds: rs.seconds ?? 0 }
        : undefined);
    // Loss at the receiving socket depends on how loaded the machine is (veth loses as
    // much on a busy 2-vCPU box); the link itself must carry every frame: checked below.
    assert.ok(u && u.packets > u.lost_packets, `UDP: ${udp.stdout.slice(-800)}`);
    process.stdout.write(
      `# vop link${driverOpts}: TCP ${(tcpBps / 1e9).toFixed(2)} Gbit/s, reverse ${(revBps / 1e9).toFixed(2)} Gbit/s, UDP ${u.packets} packets, ${u.lost_packets} lost\n`,
    );

    const devStats = await dev.stop();
    const drvStats = await drv.stop();
    dev = null;
    drv = null;
    const r: LinkRun = {
      dev: devStats.net1 as NetCounters,
      drv: drvStats.net1 as NetCounters,
      atDev: await atDev.stop(),
      atDrv: await atDrv.stop(),
    };
    assert.ok(r.dev && r.drv, 'both sides printed their counters');
    assert.equal(r.dev.bad_headers, 0);
    assert.equal(r.drv.bad_headers, 0);
    // every frame the driver side took from its TAP reached the device side's TAP, none dropped
    // (a few background frames, e.g. IPv6 neighbour discovery, may be posted after the device stopped)
    const sent = r.drv.tx_frames;
    const delivered = r.dev.tx_frames;
    assert.ok(delivered <= sent && sent - delivered <= 16, `driver posted ${sent}, device delivered ${delivered}`);
    assert.equal(r.dev.tx_dropped, 0);
    assert.equal(r.drv.tx_dropped, 0);
    assert.ok(r.dev.tx_frames > 0 && r.dev.rx_frames > 0);
    // what the device side handed its TAP is what arrived there
    assert.equal(r.atDev.drops, 0, 'the capture on the device side lost no frame');
    assert.equal(r.atDev.frames, r.dev.tx_frames, 'frames the device side wrote arrived on its TAP');
    return r;
  } finally {
    for (const c of caps) c.kill();
    if (dev) await dev.stop();
    if (drv) await drv.stop();
    ns.remove();
    rmSync(win, { force: true });
    rmSync(path.dirname(tool), { recursive: true, force: true });
  }
}
