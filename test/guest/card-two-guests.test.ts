/**
 * Topology c under QEMU: two guests on one region. Both guests (TCG, q35 with intel-iommu) have an
 * ivshmem-doorbell device on the same vop-ivshmem-server, so each maps the same memory as BAR2 and
 * neither holds it; each binds its device to vfio-pci and runs the static card binary. Guest A is the
 * device side and creates the window (a pty, a disk file in its tmpfs), guest B attaches as the
 * driver (a pty, the disk as /dev/nbd0 through the kernel's NBD client). Doorbells are MSI-X both
 * ways (each rings the other's ivshmem id through BAR0). Checked: console bytes both ways between
 * the two guests' ptys, and a disk written with `dd` in B whose checksum equals A's backing file, read
 * back in B after dropping its caches. No agent takes part: the two cards are the two ends.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { waitFor } from '../controller/fleet-helpers';
import { cardConfig, guestCardBinary, magicAt, VOP_WIN_MAGIC } from '../helpers/card';
import { Guest, guestSkip, type GuestProcess } from '../helpers/guest';
import { IvshmemServer } from '../helpers/ivshmem';
import { tempDir } from '../helpers/servers';

const MIB = 1024 * 1024;
const BDF = '0000:00:06.0';
const WINDOW = 16 * MIB;

describe(
  'two QEMU guests on one ivshmem region: vop-card as the device in one and as the driver in the other',
  { skip: guestSkip(), timeout: 240_000 },
  () => {
    const dir = tempDir('card-two');
    const memFile = path.join(dir, 'ivshmem.mem');
    let server: IvshmemServer;
    let a: Guest;
    let b: Guest;
    let idA = -1;
    let idB = -1;
    const cards: GuestProcess[] = [];

    before(async () => {
      const bin = guestCardBinary();
      server = await IvshmemServer.start({
        socket: path.join(dir, 'ivshmem.sock'),
        sizeBytes: WINDOW,
        vectors: 1,
        shmPath: memFile,
      });
      const opts = (name: string): Parameters<typeof Guest.boot>[0] => ({
        name,
        iommu: true,
        programs: ['ivshmem-vfio'],
        files: [{ path: '/bin/vop-card', source: bin }],
        ivshmemDoorbell: [{ socket: server.socket, vectors: 1, slot: 6 }],
        bootTimeoutMs: 150_000,
      });
      // One after the other: the server gives ids in connection order (A 0, B 1).
      a = await Guest.boot(opts('card-a'));
      await waitFor('guest A on the server', () => server.connected().length === 1, 30_000, 50);
      b = await Guest.boot(opts('card-b'));
      await waitFor('guest B on the server', () => server.connected().length === 2, 30_000, 50);
      [idA, idB] = server.connected() as [number, number];
      for (const g of [a, b]) await g.run(`ivshmem-vfio -a ${BDF} -v 1 info`); // binds vfio-pci
    });

    afterEach((t) => {
      a?.noteTest(t);
      b?.noteTest(t);
    });

    after(async () => {
      for (const c of cards) c.kill();
      await Promise.all(cards.map((c) => c.exited.catch(() => undefined)));
      await Promise.all([a?.close(), b?.close()]);
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('carries a console both ways and a disk from guest B (driver) into guest A (device)', async () => {
      const win = (side: 'creator' | 'attacher', peer: number) =>
        ({ access: 'vfio', path: BDF, bar: 2, side, peer_id: peer, doorbell: 'interrupt', size: WINDOW }) as const;
      await a.run('dd if=/dev/zero of=/tmp/disk.img bs=1048576 count=4 2>/dev/null');
      await a.writeFile(
        '/etc/vop-card.conf',
        cardConfig(win('creator', idB), [
          { name: 'con0', kind: 'console', role: 'device', keys: { pty: '/run/con0.pty' } },
          { name: 'disk0', kind: 'blk', role: 'device', keys: { queue_size: 32, file: '/tmp/disk.img' } },
        ]),
      );
      await b.writeFile(
        '/etc/vop-card.conf',
        cardConfig(win('attacher', idA), [
          { name: 'con0', kind: 'console', role: 'driver', keys: { pty: '/run/con0.pty' } },
          {
            name: 'disk0',
            kind: 'blk',
            role: 'driver',
            keys: { queue_size: 32, nbd_unix: '/run/disk0.nbd', nbd_device: '/dev/nbd0' },
          },
        ]),
      );
      const ca = a.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
      cards.push(ca);
      await waitFor('guest A laid the window out', () => magicAt(memFile) === VOP_WIN_MAGIC, 120_000, 50);
      const cb = b.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
      cards.push(cb);
      await cb.waitForOutput(new RegExp(`ready id=${idB} peer=${idA}\\b`), 120_000);
      await ca.waitForOutput(new RegExp(`ready id=${idA} peer=${idB}\\b`), 120_000);

      // Console: each guest reads its pty while the other writes into its own.
      for (const [from, to, text] of [
        [a, b, 'from guest A'],
        [b, a, 'from guest B'],
      ] as const) {
        const reader = to.spawn('cat /run/con0.pty & wait');
        // Until the reader has its pty open, bytes may arrive before it: say it again until seen.
        await waitFor(
          `console ${text}`,
          async () => {
            if (reader.stdout().includes(text)) return true;
            await from.run(`(printf "${text}\\r\\n" > /run/con0.pty)`);
            return false;
          },
          60_000,
          1000,
        );
        reader.kill();
        await reader.exited.catch(() => undefined);
      }

      // Disk: B writes 1 MiB at 1 MiB through /dev/nbd0; A's backing file has it; B reads it back.
      await b.run('dd if=/dev/urandom of=/tmp/pattern bs=65536 count=16 2>/dev/null');
      const want = (await b.run('sha256sum /tmp/pattern')).split(' ')[0];
      await b.run('dd if=/tmp/pattern of=/dev/nbd0 bs=65536 seek=16 conv=fsync 2>/dev/null && sync', {
        timeoutMs: 120_000,
      });
      const inA = await a.run('dd if=/tmp/disk.img bs=65536 skip=16 count=16 2>/dev/null | sha256sum');
      assert.equal(inA.split(' ')[0], want, "guest B's writes are in guest A's backing file");
      await b.run('echo 3 > /proc/sys/vm/drop_caches');
      const back = await b.run('dd if=/dev/nbd0 bs=65536 skip=16 count=16 2>/dev/null | sha256sum', {
        timeoutMs: 120_000,
      });
      assert.equal(back.split(' ')[0], want, 'and read back through the window');

      // MSI-X both ways: each guest took interrupts on its vfio vector.
      for (const g of [a, b]) {
        const irqs = await g.run('grep vfio-msix /proc/interrupts || true');
        const n = irqs
          .trim()
          .split(/\s+/)
          .slice(1)
          .filter((x) => /^\d+$/.test(x))
          .reduce((s, x) => s + Number(x), 0);
        assert.ok(n > 0, `MSI-X interrupts in ${g === a ? 'A' : 'B'}: ${irqs}`);
      }
      for (const c of [cb, ca]) {
        c.kill();
        const r = await c.exited;
        assert.equal(r.code, 0, `vop-card exit: ${r.stderr}`);
      }
      cards.length = 0;
    });
  },
);
