/**
 * Stream transport figures (npm run bench:stream): iperf3 TCP throughput, both directions, between
 * two network namespaces joined by a veth pair, three ways in the same run:
 *  - vop: virtio-net over a stream link (two vop-stream processes, test/native/tools/stream-side.c,
 *    TCP over the veth, HMAC authentication on), a TAP on each side;
 *  - veth: the veth pair directly;
 *  - socat: a user-space TAP-over-TCP tunnel of the usual kind (socat TUN,tun-type=tap on both
 *    ends, over the same veth). TCP does not keep frame boundaries, so frames split and merge on the
 *    way and TCP inside retransmits: reported as asked, and beside it the same tunnel over UDP
 *    (net_socat_udp_gbit_s), which keeps one frame per datagram and is the fairer baseline.
 * Runs alternate vop/veth/socat; medians over both directions are reported, per direction too.
 * blk, in the same run on the same veth: sequential read and write (qemu-img bench, 1 MiB requests,
 * BLK_DEPTH in flight) of a file opened with O_DIRECT on the serving side, two ways, alternating:
 *  - vop: a virtio-blk over a second stream link (device side in ns a: the file with O_DIRECT; driver
 *    side in ns b: its NBD export on a Unix socket, 512 KiB segments as the agent cuts them: a request
 *    fits one chain slot), the client on that export;
 *  - nbd: qemu-nbd serving the same file (--cache=none, O_DIRECT) on 10.95.0.1 in ns a, the client in
 *    ns b over the veth: the stock NBD server reached directly over the same TCP path.
 * --json FILE writes { net_vop_gbit_s, net_veth_gbit_s, net_socat_gbit_s, blk_read_vop_mb_s,
 * blk_read_nbd_mb_s, blk_write_vop_mb_s, blk_write_nbd_mb_s } plus per-direction medians and the
 * load average at the start. Namespaces, TAPs and processes are removed on exit, also on failure.
 *
 * --tls adds, beside (not instead of) the HMAC-authenticated plaintext links, the same links with TLS
 * 1.3 (mutual certificates made with the openssl CLI; TLS alone authenticates): net_vop_tls_gbit_s,
 * per direction, and vop_tls_vs_vop; blk_read_vop_tls_mb_s, blk_write_vop_tls_mb_s and their ratios
 * to the HMAC link (blk_read_tls_vs_vop, blk_write_tls_vs_vop).
 *
 * Environment: BENCH_RUNS (default 3), BENCH_SECONDS (default 3), BENCH_ONLY (net, blk, or blkread: the
 * stream link's blk read alone, for profiles; measure only that part while iterating; the record is a
 * full run), BENCH_BLK_MIB (1024), BENCH_BLK_SEG (KiB per blk segment of the stream link; default the
 * agent's, STREAM_BLK_SEG_BYTES: 512), BENCH_PIN (default 1: one CPU per namespace for the blk part, below; 0: unpinned).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { STREAM_BLK_SEG_BYTES } from '../../agent/src/backends/virtio-backends';
import { sh, tempDir } from '../devices/helpers';
import { buildVopStream, pingUntil, secretFile, StreamSide, tapUp, VethPair } from '../stream/helpers';
import { TestPki } from '../stream/tls-certs';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
/** MiB per blk run (BENCH_BLK_MIB, default 1024: 256 MiB samples took under 0.2 s, too short on a noisy 2-vCPU machine) and requests in flight (qemu-img bench -d). */
const BLK_MIB = Number(process.env.BENCH_BLK_MIB ?? 1024);
const BLK_DEPTH = 8;
/** BENCH_ONLY=net or blk: only that part (quick iterations); unset: both, as recorded. */
const ONLY = process.env.BENCH_ONLY ?? '';
/**
 * The blk part models two machines on this one: every blk process of namespace a (vop's device
 * side, qemu-nbd) runs on CPU 0 and of namespace b (vop's driver side, the qemu-img client) on
 * CPU 1, for vop and qemu-nbd alike. Unpinned, both "machines" share both vCPUs, and on a guest
 * that halts an idle vCPU at once every wake-up that lands on the other vCPU waits for the host
 * (docs/benchmarks-stream.md). BENCH_PIN=0: the scheduler places every thread (reported beside).
 */
const PIN = process.env.BENCH_PIN !== '0';
const cpuOf = (side: 'a' | 'b'): number | null => (PIN ? (side === 'a' ? 0 : 1) : null);
const pinned = (side: 'a' | 'b', cmd: string, args: readonly string[]): [string, string[]] =>
  PIN ? ['taskset', ['-c', String(cpuOf(side)), cmd, ...args]] : [cmd, [...args]];
/** KiB per blk segment of the stream link (one chain carries one segment) and its chain slot. */
const BLK_SEG = Number(process.env.BENCH_BLK_SEG ?? STREAM_BLK_SEG_BYTES / 1024);
const BLK_CHAIN_ARGS = ['--max-chain', String(BLK_SEG * 1024 + 4096)];

/** qemu-img bench of BLK_MIB 1 MiB requests on an NBD URI from ns `client`: MB/s. */
function blkSeq(v: VethPair, client: string, uri: string, write: boolean): number {
  const args = ['bench', '-f', 'raw', '-t', 'writeback', '-c', String(BLK_MIB), '-d', String(BLK_DEPTH), '-s', '1M'];
  if (write) args.push('-w');
  const r = v.ns.exec(client, ...pinned('b', 'qemu-img', [...args, uri]), 300_000);
  const m = /Run completed in ([\d.]+) seconds/.exec(r.stdout);
  if (r.code !== 0 || !m) throw new Error(`qemu-img bench ${uri}: ${r.stdout}${r.stderr}`);
  return (BLK_MIB * 1.048576) / Number(m[1]);
}

/** Waits until nbdinfo (in ns `client`) answers on uri. */
async function nbdUp(v: VethPair, client: string, uri: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (v.ns.exec(client, 'nbdinfo', ['--size', uri], 10_000).code === 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no NBD server answers on ${uri}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

let nextPort = 5600;

/**
 * iperf3 TCP from ns `client` to ip (server in ns `server`); reverse: the server sends. Gbit/s.
 * stallIsZero: a run that does not finish in time counts as 0 (the socat TCP tunnel can stall for
 * good: TCP inside TCP), its server is killed and the run goes on.
 */
function iperf(v: VethPair, server: string, client: string, ip: string, reverse: boolean, stallIsZero = false): number {
  const port = String(nextPort++);
  const s = v.ns.exec(server, 'iperf3', ['-s', '-1', '-D', '-B', ip, '-p', port]);
  if (s.code !== 0) throw new Error(`iperf3 -s: ${s.stderr}`);
  const args = ['-c', ip, '-p', port, '-t', String(SECONDS), '-J', ...(reverse ? ['-R'] : [])];
  let r = v.ns.exec(client, 'iperf3', args, (SECONDS + 30) * 1000);
  for (let i = 0; i < 20 && /Connection refused/.test(r.stdout + r.stderr); i++) {
    sh('sleep', ['0.25']);
    r = v.ns.exec(client, 'iperf3', args, (SECONDS + 30) * 1000);
  }
  if (r.code !== 0 && stallIsZero && /ETIMEDOUT/.test(r.stderr)) {
    v.ns.exec(server, 'pkill', ['-f', `iperf3 -s -1 -D -B ${ip} -p ${port}`]);
    console.log(`iperf3 to ${ip} stalled (no result in ${SECONDS + 30} s): counted as 0`);
    return 0;
  }
  if (r.code !== 0) throw new Error(`iperf3 -c: ${r.stdout}${r.stderr}`);
  const j = JSON.parse(r.stdout) as { end: { sum_received?: { bits_per_second: number } } };
  return (j.end.sum_received?.bits_per_second ?? 0) / 1e9;
}

async function main(): Promise<void> {
  const jsonAt = process.argv.indexOf('--json');
  const jsonFile = jsonAt >= 0 ? process.argv[jsonAt + 1] : undefined;
  const withTls = process.argv.includes('--tls');
  const load = loadavg();
  buildVopStream();
  const dir = tempDir('vop-stream-bench-');
  const v = new VethPair('vsb', 95);
  const procs: ChildProcess[] = [];
  const sides: StreamSide[] = [];
  try {
    // vop: a stream link over the veth, TAPs 10.96.0.1 (device side, ns a) and .2 (driver side, ns b).
    const secret = secretFile(dir, 'secret', randomBytes(32).toString('hex'));
    const dev = new StreamSide(
      ['--listen', 'tcp:10.95.0.1:7500', '--secret-file', secret, '--net-device', '1:tap=vsbd'],
      v.a,
    );
    sides.push(dev);
    await dev.waitLines((l) => l.startsWith('listening '));
    const drv = new StreamSide(
      ['--connect', 'tcp:10.95.0.1:7500', '--secret-file', secret, '--net-driver', '1:tap=vsbr'],
      v.b,
    );
    sides.push(drv);
    await dev.waitLines((l) => l === 'ready');
    await drv.waitLines((l) => l === 'ready');
    tapUp(v.ns, v.a, 'vsbd', '10.96.0.1/24');
    tapUp(v.ns, v.b, 'vsbr', '10.96.0.2/24');
    if (!(await pingUntil(v.ns, v.a, '10.96.0.2'))) throw new Error('the stream link carries no ping');

    // With --tls: certificates for the TLS links (no secret: the certificates authenticate).
    const pki = withTls ? new TestPki(dir) : null;
    const ca = pki?.ca ?? '';
    const ka = pki?.issue('bench-a') ?? { cert: '', key: '' };
    const kb = pki?.issue('bench-b') ?? { cert: '', key: '' };
    const tlsArgs = (k: { cert: string; key: string }, peer: string): string[] => [
      '--tls-ca',
      ca,
      '--tls-cert',
      k.cert,
      '--tls-key',
      k.key,
      '--tls-peer',
      peer,
    ];
    if (withTls) {
      // The same link with TLS 1.3, TAPs 10.99.0.1/.2.
      const tdev = new StreamSide(
        ['--listen', 'tcp:10.95.0.1:7503', '--tls-ca', ca, '--tls-cert', ka.cert, '--tls-key', ka.key].concat([
          '--tls-peer',
          'bench-b',
          '--net-device',
          '1:tap=vsbtd',
        ]),
        v.a,
      );
      sides.push(tdev);
      await tdev.waitLines((l) => l.startsWith('listening '));
      const tdrv = new StreamSide(
        ['--connect', 'tcp:10.95.0.1:7503', '--tls-ca', ca, '--tls-cert', kb.cert, '--tls-key', kb.key].concat([
          '--tls-peer',
          'bench-a',
          '--net-driver',
          '1:tap=vsbtr',
        ]),
        v.b,
      );
      sides.push(tdrv);
      await tdev.waitLines((l) => l === 'ready');
      await tdrv.waitLines((l) => l === 'ready');
      await tdrv.waitLines((l) => l.startsWith('security TLSv1.3'));
      console.log(`tls link: ${tdrv.value('security') ?? '?'}`);
      tapUp(v.ns, v.a, 'vsbtd', '10.99.0.1/24');
      tapUp(v.ns, v.b, 'vsbtr', '10.99.0.2/24');
      if (!(await pingUntil(v.ns, v.a, '10.99.0.2'))) throw new Error('the TLS stream link carries no ping');
    }

    // socat: TAP over TCP, 10.97.0.1 (ns a, listening) and .2 (ns b).
    const sa = spawn('ip', [
      'netns',
      'exec',
      v.a,
      'socat',
      'TCP-LISTEN:7501,bind=10.95.0.1,reuseaddr',
      'TUN:10.97.0.1/24,tun-type=tap,tun-name=vsbsa,iff-up',
    ]);
    procs.push(sa);
    sh('sleep', ['0.5']);
    const sb = spawn('ip', [
      'netns',
      'exec',
      v.b,
      'socat',
      'TCP:10.95.0.1:7501',
      'TUN:10.97.0.2/24,tun-type=tap,tun-name=vsbsb,iff-up',
    ]);
    procs.push(sb);
    if (!(await pingUntil(v.ns, v.a, '10.97.0.2'))) throw new Error('the socat tunnel carries no ping');
    // The same tunnel over UDP (one frame per datagram, so frames keep their boundaries): beside, not instead.
    const ua = spawn('ip', [
      'netns',
      'exec',
      v.a,
      'socat',
      'UDP-LISTEN:7502,bind=10.95.0.1',
      'TUN:10.98.0.1/24,tun-type=tap,tun-name=vsbua,iff-up',
    ]);
    procs.push(ua);
    sh('sleep', ['0.5']);
    const ub = spawn('ip', [
      'netns',
      'exec',
      v.b,
      'socat',
      'UDP:10.95.0.1:7502,sourceport=7502',
      'TUN:10.98.0.2/24,tun-type=tap,tun-name=vsbub,iff-up',
    ]);
    procs.push(ub);
    if (!(await pingUntil(v.ns, v.b, '10.98.0.1'))) throw new Error('the socat UDP tunnel carries no ping');

    const res: Record<'vop' | 'vopTls' | 'veth' | 'socat' | 'socatUdp', { fwd: number[]; rev: number[] }> = {
      vop: { fwd: [], rev: [] },
      vopTls: { fwd: [], rev: [] },
      veth: { fwd: [], rev: [] },
      socat: { fwd: [], rev: [] },
      socatUdp: { fwd: [], rev: [] },
    };
    const ips = {
      vop: '10.96.0.2',
      vopTls: '10.99.0.2',
      veth: '10.95.0.2',
      socat: '10.97.0.2',
      socatUdp: '10.98.0.2',
    } as const;
    const kinds = withTls
      ? (['vop', 'vopTls', 'veth', 'socat', 'socatUdp'] as const)
      : (['vop', 'veth', 'socat', 'socatUdp'] as const);
    for (let run = 0; run < (ONLY.startsWith('blk') ? 0 : RUNS); run++) {
      for (const k of kinds) {
        res[k].fwd.push(iperf(v, v.b, v.a, ips[k], false, k === 'socat'));
        res[k].rev.push(iperf(v, v.b, v.a, ips[k], true, k === 'socat'));
        console.log(
          `run ${run + 1} ${k}: a->b ${res[k].fwd.at(-1)?.toFixed(2)} Gbit/s, b->a ${res[k].rev.at(-1)?.toFixed(2)} Gbit/s`,
        );
      }
    }
    // blk: a second stream link (device side: the file with O_DIRECT) and qemu-nbd on the same file.
    const disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, BLK_MIB * 1024 * 1024);
    const nbdSock = path.join(dir, 'nbd.sock');
    /** A blk stream link on port (device side in ns a, driver side's NBD export at sock in ns b): its URI. */
    const blkLink = async (port: number, authA: string[], authB: string[], sock: string): Promise<string> => {
      const dev = new StreamSide(
        [
          '--listen',
          `tcp:10.95.0.1:${port}`,
          ...authA,
          '--blk-device',
          `1:file=${disk}:direct:threads=${BLK_DEPTH}:seg=${BLK_SEG}`,
          ...BLK_CHAIN_ARGS,
        ],
        v.a,
        cpuOf('a'),
      );
      sides.push(dev);
      await dev.waitLines((l) => l.startsWith('listening '));
      const drv = new StreamSide(
        ['--connect', `tcp:10.95.0.1:${port}`, ...authB, '--blk-driver', `1:unix=${sock}:name=vop:seg=${BLK_SEG}`],
        v.b,
        cpuOf('b'),
      );
      sides.push(drv);
      await dev.waitLines((l) => l === 'ready');
      await drv.waitLines((l) => l === 'ready');
      const uri = `nbd+unix:///vop?socket=${sock}`;
      await nbdUp(v, v.b, uri);
      return uri;
    };
    const hmac = ['--secret-file', secret];
    const vopUri = await blkLink(7520, hmac, hmac, nbdSock);
    // With --tls, the same blk device over a TLS 1.3 stream link (beside, not instead).
    const vopTlsUri = withTls
      ? await blkLink(7521, tlsArgs(ka, 'bench-b'), tlsArgs(kb, 'bench-a'), path.join(dir, 'nbd-tls.sock'))
      : '';
    const qn = spawn(
      'ip',
      [
        'netns',
        'exec',
        v.a,
        ...(PIN ? ['taskset', '-c', '0'] : []),
        'qemu-nbd',
        '-f',
        'raw',
        '-b',
        '10.95.0.1',
        '-p',
        '10809',
        '-t',
        '-e',
        String(BLK_DEPTH),
        '-x',
        'vop',
        '--cache=none',
        '--aio=threads',
        disk,
      ],
      { stdio: 'ignore' },
    );
    procs.push(qn);
    const nbdUri = 'nbd://10.95.0.1:10809/vop';
    await nbdUp(v, v.b, nbdUri);
    const blk = {
      vopRead: [] as number[],
      vopWrite: [] as number[],
      nbdRead: [] as number[],
      nbdWrite: [] as number[],
      tlsRead: [] as number[],
      tlsWrite: [] as number[],
    };
    for (let run = 0; run < (ONLY === 'net' ? 0 : RUNS); run++) {
      if (ONLY !== 'blkread') {
        blk.vopWrite.push(blkSeq(v, v.b, vopUri, true));
        blk.nbdWrite.push(blkSeq(v, v.b, nbdUri, true));
      }
      blk.vopRead.push(blkSeq(v, v.b, vopUri, false));
      if (ONLY !== 'blkread') blk.nbdRead.push(blkSeq(v, v.b, nbdUri, false));
      if (withTls && ONLY !== 'blkread') {
        blk.tlsWrite.push(blkSeq(v, v.b, vopTlsUri, true));
        blk.tlsRead.push(blkSeq(v, v.b, vopTlsUri, false));
      }
      console.log(
        `run ${run + 1} blk: vop read ${blk.vopRead.at(-1)?.toFixed(0)} MB/s write ${blk.vopWrite.at(-1)?.toFixed(0)} MB/s; ` +
          `qemu-nbd over TCP read ${blk.nbdRead.at(-1)?.toFixed(0)} MB/s write ${blk.nbdWrite.at(-1)?.toFixed(0)} MB/s` +
          (withTls
            ? `; vop TLS read ${blk.tlsRead.at(-1)?.toFixed(0)} MB/s write ${blk.tlsWrite.at(-1)?.toFixed(0)} MB/s`
            : ''),
      );
    }
    const r1 = (x: number): number => Math.round(x * 10) / 10;

    const med = (k: keyof typeof res): number => median([...res[k].fwd, ...res[k].rev]);
    const out = {
      net_vop_gbit_s: med('vop'),
      net_veth_gbit_s: med('veth'),
      net_socat_gbit_s: med('socat'),
      blk_read_vop_mb_s: r1(median(blk.vopRead)),
      blk_read_nbd_mb_s: r1(median(blk.nbdRead)),
      blk_write_vop_mb_s: r1(median(blk.vopWrite)),
      blk_write_nbd_mb_s: r1(median(blk.nbdWrite)),
      net_vop_device_to_driver_gbit_s: median(res.vop.rev),
      net_vop_driver_to_device_gbit_s: median(res.vop.fwd),
      net_veth_a_to_b_gbit_s: median(res.veth.fwd),
      net_veth_b_to_a_gbit_s: median(res.veth.rev),
      net_socat_a_to_b_gbit_s: median(res.socat.fwd),
      net_socat_b_to_a_gbit_s: median(res.socat.rev),
      net_socat_udp_gbit_s: med('socatUdp'),
      vop_vs_socat: med('socat') > 0 ? med('vop') / med('socat') : null,
      vop_vs_veth: med('veth') > 0 ? med('vop') / med('veth') : null,
      vop_vs_socat_udp: med('socatUdp') > 0 ? med('vop') / med('socatUdp') : null,
      blk_read_vop_vs_nbd: median(blk.nbdRead) > 0 ? median(blk.vopRead) / median(blk.nbdRead) : null,
      blk_write_vop_vs_nbd: median(blk.nbdWrite) > 0 ? median(blk.vopWrite) / median(blk.nbdWrite) : null,
      blk_mib_per_run: BLK_MIB,
      blk_pinned: PIN,
      blk_depth: BLK_DEPTH,
      ...(withTls
        ? {
            net_vop_tls_gbit_s: med('vopTls'),
            net_vop_tls_device_to_driver_gbit_s: median(res.vopTls.rev),
            net_vop_tls_driver_to_device_gbit_s: median(res.vopTls.fwd),
            vop_tls_vs_vop: med('vop') > 0 ? med('vopTls') / med('vop') : null,
            blk_read_vop_tls_mb_s: r1(median(blk.tlsRead)),
            blk_write_vop_tls_mb_s: r1(median(blk.tlsWrite)),
            blk_read_tls_vs_vop: median(blk.vopRead) > 0 ? median(blk.tlsRead) / median(blk.vopRead) : null,
            blk_write_tls_vs_vop: median(blk.vopWrite) > 0 ? median(blk.tlsWrite) / median(blk.vopWrite) : null,
          }
        : {}),
      runs: RUNS,
      seconds: SECONDS,
      loadavg_at_start: load.map((x) => Number(x.toFixed(2))),
    };
    console.log(JSON.stringify(out, null, 2));
    if (jsonFile) writeFileSync(jsonFile, JSON.stringify(out, null, 2) + '\n');
  } finally {
    for (const p of procs) p.kill('SIGTERM');
    for (const s of sides) await s.stop();
    v.remove();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
