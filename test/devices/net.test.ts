/**
 * virtio-net across an shm link between two real processes: the device
 * side's TAP in one network namespace, the driver side's TAP in another,
 * ping both ways, then iperf3 TCP and UDP across. Namespaces, TAPs and the
 * window are removed afterwards, also on failure.
 */
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { describe, it } from 'node:test';

import { buildVopdev, isRoot, Netns, Vopdev } from './helpers';

const canRun = isRoot() && existsSync('/dev/net/tun');

interface UdpSum {
  packets: number;
  lost_packets: number;
  seconds: number;
}

interface IperfEnd {
  end: { sum_received?: { bits_per_second: number } & Partial<UdpSum>; sum?: UdpSum };
}

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

describe(
  'virtio-net over an shm link between two namespaces',
  { skip: canRun ? false : 'needs root and /dev/net/tun' },
  () => {
    it('pings both ways and carries iperf3 TCP and UDP with offloads', async () => {
      await runLink('');
    });

    it('with 2 KiB mergeable receive buffers: 64 KiB TSO frames span many buffers, both directions', async () => {
      await runLink(':rxbuf=2048');
    });
  },
);

async function runLink(driverOpts: string): Promise<void> {
  {
    buildVopdev();
    const ns = new Netns('vopnet', 2);
    const [nsDev, nsDrv] = ns.names as [string, string];
    const win = `/dev/shm/vop-net-test-${process.pid}`;
    rmSync(win, { force: true });
    let drv: Vopdev | null = null;
    let dev: Vopdev | null = null;
    try {
      drv = new Vopdev(['--window', win, '--create', '96', '--net-driver', `1:tap=vop0:mtu=1500${driverOpts}`], nsDrv);
      dev = new Vopdev(['--window', win, '--attach', '--net-device', '1:tap=vop0'], nsDev);
      await drv.waitReady();
      await dev.waitReady();
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
      await new Promise((r) => setTimeout(r, 300));
      const tcp = await iperfClient(ns, nsDrv, ['-c', '10.77.0.1', '-p', '5301', '-t', '3', '-J']);
      assert.equal(tcp.code, 0, tcp.stderr);
      const tcpBps = (JSON.parse(tcp.stdout) as IperfEnd).end.sum_received?.bits_per_second ?? 0;
      assert.ok(tcpBps > 100e6, `TCP ${tcpBps / 1e9} Gbit/s`);
      // and the other way: device side to driver side (receive buffers, mergeable when small)
      assert.equal(ns.exec(nsDev, 'iperf3', ['-s', '-1', '-D', '-B', '10.77.0.1', '-p', '5302']).code, 0);
      const rev = await iperfClient(ns, nsDrv, ['-c', '10.77.0.1', '-p', '5302', '-t', '3', '-R', '-J']);
      assert.equal(rev.code, 0, rev.stderr);
      const revBps = (JSON.parse(rev.stdout) as IperfEnd).end.sum_received?.bits_per_second ?? 0;
      assert.ok(revBps > 50e6, `reverse TCP ${revBps / 1e9} Gbit/s`);

      assert.equal(ns.exec(nsDev, 'iperf3', ['-s', '-1', '-D', '-B', '10.77.0.1', '-p', '5303']).code, 0);
      await new Promise((r) => setTimeout(r, 300));
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
      assert.equal(devStats.net1?.bad_headers, 0);
      assert.equal(drvStats.net1?.bad_headers, 0);
      // every frame the driver side took from its TAP reached the device side's TAP, none dropped
      // (a few background frames, e.g. IPv6 neighbour discovery, may be posted after the device stopped)
      const sent = drvStats.net1?.tx_frames ?? 0;
      const delivered = devStats.net1?.tx_frames ?? 0;
      assert.ok(delivered <= sent && sent - delivered <= 16, `driver posted ${sent}, device delivered ${delivered}`);
      assert.equal(devStats.net1?.tx_dropped, 0);
      assert.equal(drvStats.net1?.tx_dropped, 0);
      assert.ok((devStats.net1?.tx_frames ?? 0) > 0 && (devStats.net1?.rx_frames ?? 0) > 0);
    } finally {
      if (dev) await dev.stop();
      if (drv) await drv.stop();
      ns.remove();
      rmSync(win, { force: true });
    }
  }
}
