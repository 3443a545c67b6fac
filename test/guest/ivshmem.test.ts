/**
 * ivshmem in a real guest kernel (QEMU TCG), the ground issue 13's pci-bar transport stands on:
 * - ivshmem-plain: a host file is BAR2; the host writes, the guest reads it through sysfs
 *   resource2 (mmap), the guest writes back, the host reads the file.
 * - ivshmem-doorbell with vop-ivshmem-server: the guest binds the device to vfio-pci and takes its
 *   MSI-X vectors as eventfds; a host peer (vop-ivshmem-peer) rings the guest, the guest rings the
 *   host through BAR0's doorbell, several rounds on two vectors, payloads checked in BAR2.
 * - QMP system_reset mid-run: the guest comes back and the doorbell path works again. QEMU keeps its
 *   server connection (and the guest its id) across the reset: the server sees no disconnect.
 * - poweroff: the server sees the guest disconnect and the host peer gets "leave".
 * One boot serves the whole file.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { Guest, guestSkip } from '../helpers/guest';
import { IvshmemPeer, IvshmemServer } from '../helpers/ivshmem';

const SIZE = 4 << 20;
const PLAIN_BDF = '0000:00:05.0';
const DOORBELL_BDF = '0000:00:06.0';
const VECTORS = 2;

/** Host side of the pingpong protocol of test/guest/progs/ivshmem-vfio.c; returns ms per round. */
async function pingpong(
  g: Guest,
  peer: IvshmemPeer,
  rounds: number,
): Promise<{ perRoundMs: number[]; interrupts: string }> {
  const p = g.spawn(`ivshmem-vfio -a ${DOORBELL_BDF} -v ${VECTORS} pingpong ${peer.id} ${rounds} 30000`);
  const ready = await p.waitForOutput(/ready id=(\d+)/, 30_000);
  const guestId = Number(ready[1]);
  const rung = [0, 0].map((_, v) => peer.irqs(v));
  const perRoundMs: number[] = [];
  let interrupts = '';
  let finished = false;
  try {
    for (let r = 0; r < rounds; r++) {
      const v = r % VECTORS;
      const word = Buffer.alloc(4);
      word.writeUInt32LE(r + 1);
      await peer.write(0x10, word);
      const t0 = process.hrtime.bigint();
      await peer.ring(guestId, v);
      rung[v] = (rung[v] ?? 0) + 1;
      await peer.waitIrqs(v, rung[v] ?? 0, 30_000);
      perRoundMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
      assert.equal((await peer.read(0x14, 4)).readUInt32LE(0), ((r + 1) | 0x80000000) >>> 0, `reply of round ${r}`);
      // While the program holds its vectors, the guest kernel lists them as vfio-msix interrupts.
      if (r === rounds - 2) interrupts = await g.run('grep vfio-msix /proc/interrupts');
    }
    finished = true;
  } finally {
    // A failed round must not leave the program holding the VFIO group for the next test.
    if (!finished && p.running) {
      p.kill(9);
      await p.exited.catch(() => undefined);
    }
  }
  const res = await p.exited;
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, new RegExp(`done ${rounds}\\n$`));
  return { perRoundMs, interrupts };
}

describe('ivshmem in a QEMU guest: plain BAR2, doorbell + vfio MSI-X, reset', { skip: guestSkip() }, () => {
  let dir: string;
  let plainFile: string;
  let server: IvshmemServer;
  let peer: IvshmemPeer;
  let g: Guest;

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'vop-ivshmem-test-'));
    plainFile = path.join(dir, 'plain.shm');
    writeFileSync(plainFile, Buffer.alloc(SIZE));
    server = await IvshmemServer.start({ socket: path.join(dir, 'ivshmem.sock'), sizeBytes: SIZE, vectors: VECTORS });
    g = await Guest.boot({
      name: 'ivshmem-test',
      iommu: true,
      programs: ['bar-peek', 'ivshmem-vfio'],
      ivshmemPlain: [{ path: plainFile, sizeBytes: SIZE, slot: 5 }],
      ivshmemDoorbell: [{ socket: server.socket, vectors: VECTORS, slot: 6 }],
    });
    console.log(`guest boot (q35 + intel-iommu, two ivshmem devices): ${g.bootMs} ms`);
    peer = await IvshmemPeer.start(server.socket, VECTORS);
  });

  afterEach((t) => g?.noteTest(t));

  after(async () => {
    await peer?.close();
    await g?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ivshmem-plain: the guest reads the host pattern through resource2 and the host reads the reply', async () => {
    const pattern = randomBytes(256);
    const fd = openSync(plainFile, 'r+');
    try {
      writeSync(fd, pattern, 0, pattern.length, 4096);
      assert.equal(await g.run(`bar-peek -a ${PLAIN_BDF} info`), `${PLAIN_BDF} ${SIZE}\n`);
      assert.equal((await g.run(`bar-peek -a ${PLAIN_BDF} read 4096 256`)).trim(), pattern.toString('hex'));
      const reply = randomBytes(256);
      await g.run(`bar-peek -a ${PLAIN_BDF} write 8192 ${reply.toString('hex')}`);
      const got = Buffer.alloc(256);
      readSync(fd, got, 0, 256, 8192);
      assert.deepEqual(got, reply);
    } finally {
      closeSync(fd);
    }
  });

  it('ivshmem-doorbell: the guest id from IVPosition is the one the server gave, and it has 2 MSI-X vectors', async () => {
    const info = await g.run(`ivshmem-vfio -a ${DOORBELL_BDF} -v ${VECTORS} info`);
    const m = /id=(\d+) vectors=(\d+) shm=(\d+)/.exec(info);
    assert.ok(m, info);
    const guestId = Number(m[1]);
    assert.deepEqual(
      server.connected(),
      [guestId, peer.id].sort((a, b) => a - b),
    );
    assert.equal(Number(m[2]), VECTORS);
    assert.equal(Number(m[3]), SIZE);
    // The host peer learnt the guest's eventfds from the server: one per vector.
    await peer.waitLine(new RegExp(`^join ${guestId} ${VECTORS - 1}$`));
    assert.deepEqual(await peer.peers(), [guestId]);
  });

  it('ivshmem-doorbell + vfio-pci: 10 rounds of MSI-X host->guest and doorbell guest->host on 2 vectors', async () => {
    const { perRoundMs, interrupts } = await pingpong(g, peer, 10);
    assert.equal(interrupts.split('\n').filter((l) => /vfio-msix\[\d\]/.test(l)).length, VECTORS, interrupts);
    const sorted = [...perRoundMs].sort((a, b) => a - b);
    console.log(
      `doorbell round trip host->guest->host under TCG: median ${sorted[sorted.length >> 1]?.toFixed(2)} ms (not a performance figure)`,
    );
  });

  it('system_reset through QMP mid-run: the guest comes back and the doorbells work again', async () => {
    const serverLines = server.lines.length;
    // The kernel draws a new boot_id at every boot: the proof of a reboot that reads no clock.
    const bootId = (await g.run('cat /proc/sys/kernel/random/boot_id')).trim();
    const waiting = g.spawn(`ivshmem-vfio -a ${DOORBELL_BDF} -v ${VECTORS} pingpong ${peer.id} 5 60000`);
    await waiting.waitForOutput(/ready id=/);
    const ms = await g.reset();
    console.log(`system_reset to agent ready: ${ms} ms`);
    await assert.rejects(waiting.exited, /reset/);
    const bootIdAfter = (await g.run('cat /proc/sys/kernel/random/boot_id')).trim();
    assert.match(bootIdAfter, /^[0-9a-f-]{36}$/);
    assert.notEqual(bootIdAfter, bootId, 'the guest rebooted');
    // QEMU keeps the ivshmem chardev connected across a reset: no disconnect, same id.
    assert.deepEqual(server.lines.slice(serverLines), []);
    await pingpong(g, peer, 4);
  });

  it('poweroff: the server sees the guest disconnect and the host peer gets "leave"', async () => {
    const ids = server.connected();
    const guestId = ids.find((i) => i !== peer.id);
    assert.notEqual(guestId, undefined);
    assert.equal(await g.poweroff(), 0);
    await server.waitLine(new RegExp(`^disconnect ${guestId} closed$`));
    await peer.waitLine(new RegExp(`^leave ${guestId}$`));
    assert.deepEqual(await peer.peers(), []);
  });
});
