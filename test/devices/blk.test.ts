/**
 * virtio-blk across an shm link between two real processes (vopdev), the
 * driver side exporting the disk over NBD: stock clients (nbdcopy,
 * nbdinfo, qemu-io), integrity against the backing file, and a kill -9 of
 * the device process in the middle of a write workload.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { waitFor } from '../controller/fleet-helpers';
import { buildVopdev, NBD_CMD, NbdClient, sh, tempDir, Vopdev } from './helpers';

const MIB = 1024 * 1024;

function sha256(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** Start the driver side (creates the window, exports NBD) and the device side. */
async function startPair(
  dir: string,
  disk: string,
  devExtra = '',
  devEnv: Record<string, string> = {},
): Promise<{ drv: Vopdev; dev: Vopdev; sock: string; win: string }> {
  const win = `/dev/shm/vop-blk-test-${process.pid}-${path.basename(dir)}`;
  const sock = path.join(dir, 'nbd.sock');
  rmSync(win, { force: true });
  const drv = new Vopdev([
    '--window',
    win,
    '--create',
    '96',
    '--blk-driver',
    `1:unix=${sock}:tcp=-1:tcpplain:qsize=32:seg=512`,
  ]);
  const dev = new Vopdev(['--window', win, '--attach', '--blk-device', `1:file=${disk}${devExtra}`], null, devEnv);
  await drv.waitReady();
  await dev.waitReady();
  return { drv, dev, sock, win };
}

function patternFor(i: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let o = 0; o < len; o += 8) {
    b.writeUInt32LE(i, o);
    b.writeUInt32LE((o ^ (i * 2654435761)) >>> 0, o + 4);
  }
  return b;
}

describe('virtio-blk over an shm link, exported as NBD', () => {
  let dir = '';
  before(() => {
    buildVopdev();
    dir = tempDir('vop-blk-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('random data written with nbdcopy reads back identical and matches the backing file checksum', async () => {
    const disk = path.join(dir, 'disk1.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 64 * MIB);
    const { drv, dev, sock, win } = await startPair(dir, disk);
    try {
      const uri = `nbd+unix:///vop?socket=${sock}`;
      const info = sh('nbdinfo', ['--json', uri], 20000);
      assert.equal(info.code, 0, info.stderr);
      assert.equal(JSON.parse(info.stdout).exports[0]['export-size'], 64 * MIB);
      const src = path.join(dir, 'rnd.bin');
      const data = randomBytes(64 * MIB);
      writeFileSync(src, data);
      const put = sh('nbdcopy', ['--flush', src, uri], 60000);
      assert.equal(put.code, 0, put.stderr);
      const back = path.join(dir, 'back.bin');
      const get = sh('nbdcopy', [uri, back], 60000);
      assert.equal(get.code, 0, get.stderr);
      assert.equal(sha256(readFileSync(back)), sha256(data), 'read back through the link');
      assert.equal(sha256(readFileSync(disk)), sha256(data), 'backing file');
    } finally {
      await drv.stop();
      const stats = await dev.stop();
      rmSync(win, { force: true });
      assert.equal(stats.blk1?.ioerr, 0);
    }
  });

  it('qemu-io over TCP on loopback writes, reads and verifies patterns, discards and zeroes', async () => {
    const disk = path.join(dir, 'disk2.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 32 * MIB);
    const { drv, dev, win } = await startPair(dir, disk);
    try {
      const port = drv.lines.get('nbd1-port');
      assert.ok(port, 'TCP port announced');
      const uri = `nbd://127.0.0.1:${port}/vop`;
      const cmds = [
        'write -P 0xab 0 4M',
        'write -P 0xcd 5M 1M',
        'flush',
        'read -P 0xab 0 4M',
        'read -P 0xcd 5M 1M',
        'write -z 1M 1M',
        'read -P 0 1M 1M',
        'discard 2M 1M',
        'read -P 0xab 3M 1M',
      ];
      const args = ['-f', 'raw'];
      for (const c of cmds) args.push('-c', c);
      args.push(uri);
      const r = sh('qemu-io', args, 60000);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.doesNotMatch(r.stdout + r.stderr, /Pattern verification failed|error/i);
      const file = readFileSync(disk);
      assert.ok(file.subarray(0, MIB).every((b) => b === 0xab));
      assert.ok(file.subarray(MIB, 2 * MIB).every((b) => b === 0));
      assert.ok(file.subarray(5 * MIB, 6 * MIB).every((b) => b === 0xcd));
    } finally {
      await drv.stop();
      await dev.stop();
      rmSync(win, { force: true });
    }
  });

  it('out-of-range and misaligned requests get NBD errors and the export keeps working', async () => {
    const disk = path.join(dir, 'disk3.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 4 * MIB);
    const { drv, dev, sock, win } = await startPair(dir, disk);
    const c = await NbdClient.connect(sock);
    try {
      assert.notEqual((await c.request(NBD_CMD.READ, BigInt(4 * MIB), 4096)).error, 0, 'read past the end');
      assert.notEqual(
        (await c.request(NBD_CMD.WRITE, BigInt(4 * MIB - 512), 1024, Buffer.alloc(1024))).error,
        0,
        'write across the end',
      );
      assert.notEqual((await c.request(NBD_CMD.READ, 100n, 512)).error, 0, 'misaligned offset');
      assert.notEqual((await c.request(NBD_CMD.WRITE, 0n, 100, Buffer.alloc(100))).error, 0, 'misaligned length');
      assert.notEqual((await c.request(99, 0n, 512)).error, 0, 'unknown command');
      const w = await c.request(NBD_CMD.WRITE, 4096n, 4096, patternFor(7, 4096));
      assert.equal(w.error, 0);
      const r = await c.request(NBD_CMD.READ, 4096n, 4096);
      assert.equal(r.error, 0);
      assert.ok(r.data?.equals(patternFor(7, 4096)));
    } finally {
      await c.close();
      await drv.stop();
      await dev.stop();
      rmSync(win, { force: true });
    }
  });

  it('kill -9 of the device process mid-workload: every acknowledged write is in the file, outstanding requests complete', async () => {
    const disk = path.join(dir, 'disk4.img');
    const WSIZE = 64 * 1024;
    const NWRITES = 3000;
    const DEPTH = 24;
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, NWRITES * WSIZE);
    // Slow writes (2 ms each) so that requests are in flight inside the device when it dies.
    const slow = { VOP_BLK_TEST_DELAY_US: '2000', VOP_BLK_DEBUG: '1' };
    const pair = await startPair(dir, disk, ':threads=4', slow);
    let dev: Vopdev = pair.dev;
    const c = await NbdClient.connect(pair.sock);
    const acked: number[] = [];
    const errors: string[] = [];
    let next = 0;
    // A kill lands mid-workload. Whether a request was inside the device at that instant (popped,
    // journaled, its write still sleeping) depends on scheduling: on a starved machine all of them
    // may still wait in the ring. The restarted device says how many it found in its journal
    // ("blk: resume ... re-execute=N"); a kill that found none proves nothing about the journal, so
    // the workload goes on and the device is killed again, at most three times in all.
    const KILLS_AT = [600, 1300, 2000];
    let kills = 0;
    const killedAt: number[] = [];
    /** The kill-and-restart under way, if any. */
    const run = { cycle: null as Promise<void> | null };
    let reexecuted = 0;
    const resumes: string[] = [];
    const killAndRestart = async (ackedBeforeKill: number[]): Promise<void> => {
      await dev.crash();
      // The device is dead: whatever the client saw acknowledged must already be in the file.
      const fd = openSync(disk, 'r');
      try {
        const b = Buffer.alloc(WSIZE);
        for (const k of ackedBeforeKill) {
          readSync(fd, b, 0, WSIZE, k * WSIZE);
          if (!b.equals(patternFor(k, WSIZE))) errors.push(`acknowledged write ${k} missing after kill -9`);
        }
      } finally {
        closeSync(fd);
      }
      dev = new Vopdev(['--window', pair.win, '--attach', '--blk-device', `1:file=${disk}:threads=4`], null, slow);
      await dev.waitReady();
      const restarted = dev;
      const m = await waitFor(
        'the restarted device to resume the ring',
        () => /blk: resume .*re-execute=(\d+)/.exec(restarted.stderr) ?? undefined,
        60_000,
      );
      resumes.push(m[0]);
      reexecuted += Number(m[1]);
    };
    try {
      const worker = async (): Promise<void> => {
        while (next < NWRITES) {
          const i = next++;
          const r = await c.request(NBD_CMD.WRITE, BigInt(i * WSIZE), WSIZE, patternFor(i, WSIZE));
          if (r.error !== 0) errors.push(`write ${i}: error ${r.error}`);
          else acked.push(i);
          const at = KILLS_AT[kills];
          if (!run.cycle && reexecuted === 0 && at !== undefined && acked.length >= at) {
            kills++;
            killedAt.push(acked.length);
            run.cycle = killAndRestart([...acked]).finally(() => (run.cycle = null));
          }
        }
      };
      await Promise.all(Array.from({ length: DEPTH }, () => worker()));
      assert.ok(kills > 0, 'the device was killed during the workload');
      while (run.cycle) await run.cycle;
      assert.equal((await c.request(NBD_CMD.FLUSH, 0n, 0)).error, 0, 'flush after restart');
      assert.deepEqual(errors, []);
      assert.equal(acked.length, NWRITES, 'every request completed, including those outstanding at each kill');
      const file = readFileSync(disk);
      for (let i = 0; i < NWRITES; i++) {
        if (!file.subarray(i * WSIZE, (i + 1) * WSIZE).equals(patternFor(i, WSIZE)))
          assert.fail(`write ${i} not in the file`);
      }
    } finally {
      await c.close();
      await pair.drv.stop();
      await dev.stop();
      rmSync(pair.win, { force: true });
    }
    for (const r of resumes) process.stdout.write(`# ${r}\n`);
    process.stdout.write(
      `# killed after ${killedAt.join(', ')} acks; the restarted devices re-executed ${reexecuted} in-flight requests\n`,
    );
    assert.ok(
      reexecuted > 0,
      `a restarted device found requests in flight in its journal and re-executed them (${kills} kills)`,
    );
  });
});
