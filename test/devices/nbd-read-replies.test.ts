/**
 * Read replies of the NBD export (native/devices/nbd.c): a read of several slots streams as its
 * slots complete (header with the first slot, then each slot once every slot before it is read).
 * A real export (the blk driver of a vopdev pair over a file) against clients that pipeline many
 * reads, read slowly or stop reading, or vanish: every reply is whole and in one piece (no
 * interleaving: the client's parser would lose its place), every byte is the disk's, and the slots
 * all come back.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { buildVopdev, NBD_CMD, NbdClient, tempDir, Vopdev } from './helpers';

const MIB = 1024 * 1024;
const DISK_MIB = 24;

/** The disk's byte at offset o: each 4 KiB block names its MiB and block, so a misplaced block shows. */
function pattern(mib: number): Buffer {
  const b = Buffer.alloc(MIB);
  for (let blk = 0; blk < MIB / 4096; blk++) b.fill(`<mib ${mib} block ${blk}>`, blk * 4096, (blk + 1) * 4096);
  return b;
}

describe('NBD read replies: streamed as slots complete, never interleaved', () => {
  let dir = '';
  let drv: Vopdev | null = null;
  let dev: Vopdev | null = null;
  let sock = '';
  let win = '';
  const want: Buffer[] = [];

  before(async () => {
    buildVopdev();
    dir = tempDir('vop-nbd-replies-');
    const disk = path.join(dir, 'disk.img');
    for (let m = 0; m < DISK_MIB; m++) want.push(pattern(m));
    writeFileSync(disk, Buffer.concat(want));
    win = `/dev/shm/vop-nbd-replies-${process.pid}`;
    sock = path.join(dir, 'nbd.sock');
    // 128 KiB slots, 16 of them: a 1 MiB read is 8 slots and two of them exhaust the pool.
    drv = new Vopdev(['--window', win, '--create', '96', '--blk-driver', `1:unix=${sock}:qsize=64:seg=128`]);
    dev = new Vopdev(['--window', win, '--attach', '--blk-device', `1:file=${disk}:threads=4`]);
    await drv.waitReady();
    await dev.waitReady();
  });
  after(async () => {
    await drv?.stop();
    await dev?.stop();
  });

  async function readAll(c: NbdClient, mibs: number[]): Promise<void> {
    const rs = await Promise.all(mibs.map((m) => c.request(NBD_CMD.READ, BigInt(m * MIB), MIB)));
    rs.forEach((r, i) => {
      const m = mibs[i] ?? -1;
      assert.equal(r.error, 0, `read of MiB ${m}`);
      assert.ok(r.data?.equals(want[m] ?? Buffer.alloc(0)), `MiB ${m} holds exactly the disk's bytes`);
    });
  }

  it('pipelined reads of many slots each come back whole, in one piece, with the right bytes', async () => {
    const c = await NbdClient.connect(sock);
    try {
      for (let round = 0; round < 3; round++) await readAll(c, [...Array(DISK_MIB).keys()]);
      // odd sizes: the last slot partly filled; a read of one slot (not streamed)
      const odd = await c.request(NBD_CMD.READ, BigInt(3 * MIB + 4096), 5 * 128 * 1024 + 512);
      assert.equal(odd.error, 0);
      assert.ok(odd.data?.equals(Buffer.concat(want).subarray(3 * MIB + 4096, 3 * MIB + 4096 + 5 * 128 * 1024 + 512)));
    } finally {
      await c.close();
    }
  });

  it('a client that stops reading gets its bytes unchanged while another client reads through the same slots', async () => {
    const slow = await NbdClient.connect(sock);
    const fast = await NbdClient.connect(sock);
    try {
      slow.pause();
      const slowReads = readAll(slow, [0, 1, 2, 3, 4, 5]);
      // the fast client reads other data through whatever slots are free, many times over
      await new Promise((r) => setTimeout(r, 200));
      const fastReads = readAll(
        fast,
        [...Array(DISK_MIB - 6).keys()].map((i) => i + 6),
      );
      await new Promise((r) => setTimeout(r, 500));
      slow.resume();
      await slowReads;
      await fastReads;
      await readAll(fast, [7, 8]);
    } finally {
      await slow.close();
      await fast.close();
    }
  });

  it('a client that vanishes with replies unread gives its slots back: the export keeps serving', async () => {
    for (let i = 0; i < 3; i++) {
      const gone = await NbdClient.connect(sock);
      gone.pause();
      const lost = Promise.all([0, 1, 2, 3].map((m) => gone.request(NBD_CMD.READ, BigInt(m * MIB), MIB)));
      await new Promise((r) => setTimeout(r, 150));
      gone.destroy();
      await lost;
    }
    const c = await NbdClient.connect(sock);
    try {
      // 16 slots: these need every one of them back
      await readAll(c, [9, 10, 11, 12]);
      const w = Buffer.alloc(MIB, 0x5a);
      assert.equal((await c.request(NBD_CMD.WRITE, BigInt(20 * MIB), MIB, w)).error, 0);
      const r = await c.request(NBD_CMD.READ, BigInt(20 * MIB), MIB);
      assert.ok(r.data?.equals(w), 'a write then a streamed read of it');
      want[20] = w;
    } finally {
      await c.close();
    }
  });
});
