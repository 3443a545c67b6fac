/**
 * virtio-blk figures (npm run bench:blk [-- --runs N] [--json FILE]): sequential read and write
 * with 1 MiB requests (qemu-img bench) and 4 KiB random-read IOPS (test/bench/blk-bench-rand.c)
 * through the NBD export of a disk that crosses an shm link between two vopdev processes, against
 * the same operations on the backing file directly, in the same run. Two cache modes: O_DIRECT on
 * both sides (the device opens the file with O_DIRECT, the direct baseline uses qemu-img -t none),
 * and page cache on both sides. A third path in the same run: the stock NBD server (qemu-nbd)
 * exporting the same file over a Unix socket, which is the ceiling of any NBD export on this
 * machine (the client, the socket and the server's copies, without the link).
 *
 * Queue depths are the same on both sides of every comparison and printed with the table:
 * SEQ_DEPTH requests in flight for the sequential runs on every path; RAND_DEPTH for random reads
 * (direct: RAND_DEPTH threads doing pread; vop and qemu-nbd: one NBD connection with RAND_DEPTH in
 * flight); on the vop path the link's virtio queue holds QUEUE_SIZE requests and the device side
 * runs DEVICE_THREADS I/O threads (RAND_DEPTH unless set), so as many requests reach the file at
 * once as in the direct baseline.
 * Prints a markdown table of medians with the vop/direct ratio of each figure (random reads too);
 * --json FILE writes the O_DIRECT medians under the keys of issue 4 plus the cached ones under
 * "cached", and the qemu-nbd figures as qemunbd_*.
 *
 * Environment: BENCH_RUNS (default 5; --runs wins), BENCH_DISK_MIB (default 1024), BENCH_RAND_SECONDS
 * (default 5), BENCH_DEVICE_THREADS (default RAND_DEPTH).
 */
import { spawn, spawnSync } from 'node:child_process';
import { rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { repoPath } from '../../lib/src/paths';
import { buildVopdev, tempDir, Vopdev } from '../devices/helpers';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const RUNS = Number(arg('--runs') ?? process.env.BENCH_RUNS ?? 5);
const DISK_MIB = Number(process.env.BENCH_DISK_MIB ?? 1024);
const RAND_SECONDS = Number(process.env.BENCH_RAND_SECONDS ?? 5);
/** Requests in flight: qemu-img bench -d for the sequential runs, on every path. */
const SEQ_DEPTH = 8;
/** Requests in flight for 4 KiB random reads, on every path. */
const RAND_DEPTH = 16;
/** The link's virtio queue: room for every request in flight. */
const QUEUE_SIZE = 32;
/** I/O threads of the vop device side: as many requests at the file at once as the direct baseline. */
const DEVICE_THREADS = Number(process.env.BENCH_DEVICE_THREADS ?? RAND_DEPTH);
const RAND_BIN = repoPath('native', 'devices', 'out', 'blk-bench-rand');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] ?? 0) : ((s[m - 1] ?? 0) + (s[m] ?? 0)) / 2;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300000, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}${r.error ?? ''}`);
  return r.stdout;
}

/** qemu-img bench: MB/s for DISK_MIB of 1 MiB requests. */
function seq(target: string, write: boolean, cache: 'none' | 'writeback'): number {
  const args = ['bench', '-f', 'raw', '-t', cache, '-c', String(DISK_MIB), '-d', String(SEQ_DEPTH), '-s', '1M'];
  if (write) args.push('-w');
  args.push(target);
  const out = run('qemu-img', args);
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`qemu-img bench output: ${out}`);
  return (DISK_MIB * 1.048576) / Number(m[1]);
}

function randread(mode: 'file' | 'nbd', target: string, odirect: boolean): number {
  const out = run(
    RAND_BIN,
    [mode, target, String(RAND_DEPTH), String(RAND_SECONDS)],
    odirect ? { BENCH_ODIRECT: '1' } : {},
  );
  return Number(/iops (\d+)/.exec(out)?.[1] ?? 0);
}

interface Sample {
  vop_seq_read_mb_s: number;
  direct_seq_read_mb_s: number;
  vop_seq_write_mb_s: number;
  direct_seq_write_mb_s: number;
  vop_randread_iops: number;
  direct_randread_iops: number;
  qemunbd_seq_read_mb_s: number;
  qemunbd_seq_write_mb_s: number;
  qemunbd_randread_iops: number;
}

/** qemu-nbd serving disk on a Unix socket (the stock NBD server's path, without the link). */
async function startQemuNbd(disk: string, sock: string, odirect: boolean): Promise<() => void> {
  rmSync(sock, { force: true });
  const p = spawn(
    'qemu-nbd',
    [
      '-f',
      'raw',
      '-k',
      sock,
      '-t',
      '-e',
      String(RAND_DEPTH),
      '-x',
      'vop',
      `--cache=${odirect ? 'none' : 'writeback'}`,
      '--aio=threads',
      disk,
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 100; i++) {
    const r = spawnSync('nbdinfo', ['--size', `nbd+unix:///vop?socket=${sock}`], { encoding: 'utf8' });
    if (r.status === 0) return () => p.kill('SIGTERM');
    await new Promise((res) => setTimeout(res, 50));
  }
  p.kill('SIGKILL');
  throw new Error('qemu-nbd did not start');
}

async function measure(dir: string, disk: string, odirect: boolean): Promise<Sample[]> {
  const win = `/dev/shm/vop-blk-bench-${process.pid}-${odirect ? 'd' : 'c'}`;
  const sock = path.join(dir, `nbd-${odirect ? 'd' : 'c'}.sock`);
  rmSync(win, { force: true });
  const drv = new Vopdev([
    '--window',
    win,
    '--create',
    '96',
    '--blk-driver',
    `1:unix=${sock}:qsize=${QUEUE_SIZE}:seg=512`,
  ]);
  const dev = new Vopdev([
    '--window',
    win,
    '--attach',
    '--blk-device',
    `1:file=${disk}:threads=${DEVICE_THREADS}${odirect ? ':direct' : ''}`,
  ]);
  const cache = odirect ? 'none' : 'writeback';
  const uri = `nbd+unix:///vop?socket=${sock}`;
  const qsock = path.join(dir, `qemu-nbd-${odirect ? 'd' : 'c'}.sock`);
  const quri = `nbd+unix:///vop?socket=${qsock}`;
  const samples: Sample[] = [];
  let stopQemu: (() => void) | null = null;
  try {
    await drv.waitReady();
    await dev.waitReady();
    stopQemu = await startQemuNbd(disk, qsock, odirect);
    for (let i = 0; i < RUNS; i++) {
      samples.push({
        direct_seq_write_mb_s: seq(disk, true, cache),
        vop_seq_write_mb_s: seq(uri, true, 'writeback'),
        direct_seq_read_mb_s: seq(disk, false, cache),
        vop_seq_read_mb_s: seq(uri, false, 'writeback'),
        direct_randread_iops: randread('file', disk, odirect),
        vop_randread_iops: randread('nbd', sock, false),
        qemunbd_seq_write_mb_s: seq(quri, true, 'writeback'),
        qemunbd_seq_read_mb_s: seq(quri, false, 'writeback'),
        qemunbd_randread_iops: randread('nbd', qsock, false),
      });
      process.stderr.write(`${odirect ? 'O_DIRECT' : 'cached'} run ${i + 1}/${RUNS}: ${JSON.stringify(samples[i])}\n`);
    }
  } finally {
    stopQemu?.();
    await drv.stop();
    await dev.stop();
    rmSync(win, { force: true });
  }
  return samples;
}

function medians(s: Sample[]): Sample {
  const keys = Object.keys(s[0] ?? {}) as (keyof Sample)[];
  const out = {} as Sample;
  for (const k of keys) out[k] = Math.round(median(s.map((x) => x[k])) * 10) / 10;
  return out;
}

async function main(): Promise<void> {
  const jsonFile = arg('--json');
  buildVopdev();
  run('cc', ['-O2', '-Wall', '-Wextra', '-pthread', '-o', RAND_BIN, repoPath('test', 'bench', 'blk-bench-rand.c')]);
  const dir = tempDir('vop-blk-bench-');
  const disk = path.join(dir, 'disk.img');
  try {
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, DISK_MIB * 1024 * 1024);
    run('qemu-img', [
      'bench',
      '-f',
      'raw',
      '-t',
      'none',
      '-w',
      '-c',
      String(DISK_MIB),
      '-d',
      String(SEQ_DEPTH),
      '-s',
      '1M',
      disk,
    ]); // allocate
    const direct = medians(await measure(dir, disk, true));
    const cached = medians(await measure(dir, disk, false));
    const row = (name: string, s: Sample): string =>
      `| ${name} | ${s.vop_seq_read_mb_s} | ${s.direct_seq_read_mb_s} | ${(s.vop_seq_read_mb_s / s.direct_seq_read_mb_s).toFixed(2)} | ${s.vop_seq_write_mb_s} | ${s.direct_seq_write_mb_s} | ${(s.vop_seq_write_mb_s / s.direct_seq_write_mb_s).toFixed(2)} | ${s.vop_randread_iops} | ${s.direct_randread_iops} | ${(s.vop_randread_iops / s.direct_randread_iops).toFixed(2)} |`;
    process.stdout.write(`\nblk, medians of ${RUNS} runs, ${DISK_MIB} MiB disk\n\n`);
    process.stdout.write(
      `queue depths (the same on both sides of each ratio): sequential ${SEQ_DEPTH} x 1 MiB in flight (qemu-img bench -d ${SEQ_DEPTH}) on every path; ` +
        `4 KiB random read ${RAND_DEPTH} in flight (direct: ${RAND_DEPTH} threads doing pread; vop and qemu-nbd: one NBD connection with ${RAND_DEPTH} in flight); ` +
        `vop link: virtio queue of ${QUEUE_SIZE} entries, device side ${DEVICE_THREADS} I/O threads; qemu-nbd: -e ${RAND_DEPTH} --aio=threads\n\n`,
    );
    process.stdout.write(
      '| mode | vop seq read MB/s | direct | ratio | vop seq write MB/s | direct | ratio | vop 4K randread IOPS | direct | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n',
    );
    process.stdout.write(`${row('O_DIRECT', direct)}\n${row('page cache', cached)}\n`);
    const qrow = (name: string, s: Sample): string =>
      `| ${name} | ${s.qemunbd_seq_read_mb_s} | ${(s.vop_seq_read_mb_s / s.qemunbd_seq_read_mb_s).toFixed(2)} | ${s.qemunbd_seq_write_mb_s} | ${(s.vop_seq_write_mb_s / s.qemunbd_seq_write_mb_s).toFixed(2)} | ${s.qemunbd_randread_iops} | ${(s.vop_randread_iops / s.qemunbd_randread_iops).toFixed(2)} |`;
    process.stdout.write(
      '\nthe stock NBD server on the same file (qemu-nbd, Unix socket), same run:\n\n| mode | qemu-nbd seq read MB/s | vop/qemu-nbd | qemu-nbd seq write MB/s | vop/qemu-nbd | qemu-nbd 4K randread IOPS | vop/qemu-nbd |\n|---|---|---|---|---|---|---|\n',
    );
    process.stdout.write(`${qrow('O_DIRECT', direct)}\n${qrow('page cache', cached)}\n`);
    const depths = {
      seq_depth: SEQ_DEPTH,
      rand_depth: RAND_DEPTH,
      queue_size: QUEUE_SIZE,
      device_threads: DEVICE_THREADS,
    };
    if (jsonFile) writeFileSync(jsonFile, `${JSON.stringify({ ...direct, cached, depths }, null, 2)}\n`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
