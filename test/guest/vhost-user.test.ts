/**
 * vop's vhost-user device side against a QEMU 7.2 guest's STOCK virtio drivers (Debian's 6.1
 * kernel, unmodified), one boot for the file:
 * - virtio-net (`-netdev vhost-user`, `vectors=0`: the TCG crash of the reference) served by vop's
 *   virtio-net backend on a TAP in a test namespace: ping both ways, then 4 MiB each way over TCP
 *   with a SHA-256 on both ends.
 * - virtio-blk (`vhost-user-blk-pci`, MSI-X) served by vop's virtio-blk backend on a host file: a
 *   pattern written with dd, read back after dropping the guest's caches, the host file holds the
 *   same bytes, and the guest's fsync reaches the backend as a flush.
 * - Reconnect: the blk back-end killed with -9 while the guest writes 16 MiB (conv=fsync) and
 *   started again on the same socket once the first writes reached it: QEMU (reconnect=1)
 *   reconnects, the restarted back-end executes the rest, the write completes and the
 *   host file holds it; then QEMU killed with -9: both devices reset, a new QEMU on the same
 *   sockets negotiates afresh and pings through.
 * The backends run in `vhostdev` (test/native/tools/vhostdev.c), the same code the agent runs.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { Netns } from '../devices/helpers';
import { Guest, guestSkip } from '../helpers/guest';
import { buildVhostdev, VhostDev } from '../helpers/vhostdev';
import { nsSpawn, TCP_LISTEN, TCP_SEND } from '../helpers/netns-tcp';

const HOST_IP = '10.199.7.1';
const GUEST_IP = '10.199.7.2';
const MIB = 1 << 20;
const DISK = 32 * MIB;

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('stock virtio drivers of a QEMU guest on vop vhost-user devices', { skip: guestSkip() }, () => {
  let dir: string;
  let ns: Netns;
  let nsName: string;
  let net: VhostDev;
  let blk: VhostDev;
  let disk: string;
  let g: Guest;
  let g2: Guest | undefined;
  let ifname: string;
  let netSock: string;
  let blkSock: string;

  /** A guest on both sockets; reconnect=1: QEMU reconnects when the back-end comes back. */
  const bootGuest = (name: string): Promise<Guest> =>
    Guest.boot({
      name,
      sharedMemory: true,
      qemuArgs: [
        '-chardev',
        `socket,id=vun,path=${netSock},reconnect=1`,
        '-netdev',
        'vhost-user,id=vn0,chardev=vun',
        // vectors=0: QEMU 7.2 under TCG crashes on vhost-user net with MSI-X (the reference)
        '-device',
        'virtio-net-pci,netdev=vn0,mac=52:54:00:12:34:77,vectors=0,addr=0x7',
        '-chardev',
        `socket,id=vub,path=${blkSock},reconnect=1`,
        '-device',
        'vhost-user-blk-pci,chardev=vub,num-queues=1,addr=0x8',
      ],
    });

  before(async () => {
    buildVhostdev();
    dir = mkdtempSync(path.join(os.tmpdir(), 'vop-vhost-user-test-'));
    ns = new Netns('vhu', 1);
    nsName = ns.names[0] as string;
    disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(DISK));
    ifname = `vhu${process.pid % 100000}`;
    netSock = path.join(dir, 'net.sock');
    blkSock = path.join(dir, 'blk.sock');
    net = await VhostDev.start(['--socket', netSock, '--tap', ifname, '--netns', nsName, '--offloads']);
    blk = await VhostDev.start(['--socket', blkSock, '--blk', disk, '--stats-ms', '20']);
    const r = ns.exec(nsName, 'sh', ['-c', `ip addr add ${HOST_IP}/24 dev ${ifname} && ip link set ${ifname} up`]);
    assert.equal(r.code, 0, r.stderr);
    g = await bootGuest('vhost-user-test');
    await net.waitLine(/^event started/, 30_000);
  });

  afterEach((t) => g?.noteTest(t));

  after(async () => {
    await g?.close();
    await g2?.close();
    await net?.stop();
    await blk?.stop();
    ns?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('the guest pings the host namespace through the TAP backend, and the host pings the guest', async () => {
    const eth = (await g.run(`grep -l 52:54:00:12:34:77 /sys/class/net/*/address`)).trim().split('/')[4] ?? '';
    assert.match(eth, /^eth\d+$/);
    await g.run(`ip addr add ${GUEST_IP}/24 dev ${eth} && ip link set ${eth} up`);
    const out = await g.run(`ping -c 3 -W 5 ${HOST_IP}`, { timeoutMs: 60_000 });
    assert.match(out, /3 packets received/);
    const back = ns.exec(nsName, 'ping', ['-c', '3', '-W', '5', GUEST_IP], 60_000);
    assert.equal(back.code, 0, back.stdout + back.stderr);
    assert.match(back.stdout, /3 received/);
  });

  it('4 MiB each way over TCP arrive with the SHA-256 they left with', async () => {
    // guest -> host
    await g.run('dd if=/dev/urandom of=/tmp/out bs=1M count=4 2>/dev/null');
    const sentSum = (await g.run('sha256sum /tmp/out')).split(' ')[0];
    const rx = nsSpawn(nsName, [process.execPath, '-e', TCP_LISTEN, '5001']);
    for (let i = 0; i < 100 && !rx.stderr().includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
    await g.run(`nc ${HOST_IP} 5001 < /tmp/out`, { timeoutMs: 120_000 });
    const got = await rx.done;
    assert.equal(got.length, 4 * MIB);
    assert.equal(sha(got), sentSum);
    // host -> guest
    const data = randomBytes(4 * MIB);
    const lp = g.spawn('nc -l -p 5002 > /tmp/in');
    await new Promise((r) => setTimeout(r, 500));
    const tx = nsSpawn(nsName, [process.execPath, '-e', TCP_SEND, GUEST_IP, '5002'], data);
    await tx.done;
    await lp.exited;
    assert.equal((await g.run('sha256sum /tmp/in')).split(' ')[0], sha(data));
  });

  it('virtio-blk: a dd pattern reads back in the guest and the host file holds the same bytes', async () => {
    const dev = (await g.run('ls /sys/block | grep vd')).trim().split('\n')[0];
    assert.match(dev ?? '', /^vd[a-z]$/);
    await g.run('dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null');
    const sum = (await g.run('sha256sum /tmp/pat')).split(' ')[0] ?? '';
    const flushesBefore = Number(/flushes=(\d+)/.exec(blk.lastStats() ?? '')?.[1] ?? 0);
    // seek=1: 1 MiB in, so the pattern is not where a partition table would be
    await g.run(`dd if=/tmp/pat of=/dev/${dev} bs=1M seek=1 conv=fsync 2>/dev/null`, { timeoutMs: 120_000 });
    // the guest's fsync became a VIRTIO_BLK_T_FLUSH that the backend executed
    const from = blk.lines.length;
    const m = await blk.waitLine(/flushes=(\d+)/, 10_000, from);
    assert.ok(Number(m[1]) > flushesBefore, `no flush reached the backend: ${blk.lastStats() ?? ''}`);
    await g.run('echo 3 > /proc/sys/vm/drop_caches');
    const back = (await g.run(`dd if=/dev/${dev} bs=1M skip=1 count=4 2>/dev/null | sha256sum`)).split(' ')[0];
    assert.equal(back, sum);
    const host = readFileSync(disk);
    assert.equal(sha(host.subarray(MIB, 5 * MIB)), sum);
    assert.equal(
      host.subarray(0, MIB).every((b) => b === 0),
      true,
      'nothing written before the pattern',
    );
  });

  it('vop restarted mid-write under reconnect=1: QEMU reconnects, the write completes, its data is in the file', async () => {
    const dev = (await g.run('ls /sys/block | grep vd')).trim().split('\n')[0] ?? '';
    await g.run('dd if=/dev/urandom of=/tmp/pat2 bs=1M count=16 2>/dev/null');
    const sum = (await g.run('sha256sum /tmp/pat2')).split(' ')[0] ?? '';
    const writesOf = (line: string | undefined): number => Number(/writes=(\d+)/.exec(line ?? '')?.[1] ?? 0);
    const before = writesOf(blk.lastStats());
    const writer = g.spawn(`dd if=/tmp/pat2 of=/dev/${dev} bs=64k seek=128 conv=fsync 2>/dev/null && echo written`);
    // the back-end dies once the guest's writes reach it: the rest of the 16 MiB is in flight
    const end = Date.now() + 60_000;
    while (writesOf(blk.lastStats()) <= before) {
      assert.ok(Date.now() < end, `no write reached the back-end: ${blk.lastStats() ?? ''}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    blk.kill('SIGKILL');
    await blk.exited;
    blk = await VhostDev.start(['--socket', blkSock, '--blk', disk, '--stats-ms', '20']);
    await blk.waitLine(/^event started/, 60_000); // QEMU came back (reconnect=1) and restarted the ring
    await writer.waitForOutput(/written/, 120_000);
    assert.equal((await writer.exited).code, 0);
    await g.run('echo 3 > /proc/sys/vm/drop_caches');
    const back = (await g.run(`dd if=/dev/${dev} bs=64k skip=128 count=256 2>/dev/null | sha256sum`)).split(' ')[0];
    assert.equal(back, sum);
    assert.equal(sha(readFileSync(disk).subarray(8 * MIB, 24 * MIB)), sum);
    // the restarted back-end executed part of the write: it was in flight at the kill
    assert.ok(writesOf(blk.lastStats()) > 0, `the write had completed before the kill: ${blk.lastStats() ?? ''}`);
    console.log(`restarted back-end after the write: ${blk.lastStats() ?? '(no stats yet)'}`);
  });

  it('QEMU killed with -9 mid-traffic (pings and a disk write in flight): the devices reset; a new QEMU on the same sockets pings through again', async () => {
    const from = net.lines.length;
    // Traffic in flight when the kill lands: the host pings the guest every 10 ms, the guest writes its disk.
    const pinger = nsSpawn(nsName, ['ping', '-i', '0.01', '-W', '1', GUEST_IP]);
    pinger.done.catch(() => undefined); // ended by a signal below
    try {
      let replies = 0;
      pinger.proc.stdout?.on('data', (c: Buffer) => (replies += c.toString().split('bytes from').length - 1));
      const dev = (await g.run('ls /sys/block | grep vd')).trim().split('\n')[0] ?? '';
      const writesOf = (line: string | undefined): number => Number(/writes=(\d+)/.exec(line ?? '')?.[1] ?? 0);
      const writesBefore = writesOf(blk.lastStats());
      const writer = g.spawn(`dd if=/dev/zero of=/dev/${dev} bs=64k count=4096 oflag=direct 2>/dev/null`);
      writer.exited.catch(() => undefined); // the guest dies under it
      const end = Date.now() + 60_000;
      while (replies < 20 || writesOf(blk.lastStats()) <= writesBefore) {
        assert.ok(Date.now() < end, `no traffic before the kill: ${replies} replies, ${blk.lastStats() ?? ''}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const repliesAtKill = replies;
      g.kill();
      await net.waitLine(/^event disconnected/, 30_000, from);
      await blk.waitLine(/^event disconnected/, 30_000);
      g2 = await bootGuest('vhost-user-test-2');
      await net.waitLine(/^event started/, 60_000, from);
      const eth = (await g2.run(`grep -l 52:54:00:12:34:77 /sys/class/net/*/address`)).trim().split('/')[4] ?? '';
      await g2.run(`ip addr add ${GUEST_IP}/24 dev ${eth} && ip link set ${eth} up`);
      const out = await g2.run(`ping -c 3 -W 5 ${HOST_IP}`, { timeoutMs: 60_000 });
      assert.match(out, /3 packets received/);
      // The host's pings that never stopped are answered by the new guest too.
      const resumed = replies;
      const until = Date.now() + 30_000;
      while (replies < resumed + 5) {
        assert.ok(Date.now() < until, `the pinger's replies stopped at ${replies} (${repliesAtKill} at the kill)`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      pinger.proc.kill('SIGINT');
    }
  });
});
