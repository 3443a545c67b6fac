/**
 * NOT IN npm test (named .wip.ts, compiled only): in about half of its runs the guest's command
 * agent (vop-guest-agent, PID 1) blocks in D state around the console step and the guest stops
 * answering; passing runs take about 20 s. Run it by hand: rename it to card.test.ts.
 *
 * The host agent against vop-card in a QEMU guest (TCG, q35 with intel-iommu, an ivshmem-doorbell
 * device bound to vfio-pci): the topology of the original VOP with the host as the memory holder
 * (under QEMU the host process always holds the memory: the ivshmem server's; the guest maps it as
 * BAR2). The agent is the device side and creates the window; the guest runs the static card
 * binary (native/out/guest/vop-card) as the driver, its doorbells MSI-X through vfio one way and
 * BAR0 register writes the other. A virtio-console carries bytes both ways between the agent's pty
 * and the guest's; the guest writes a disk through /dev/nbd0 (the kernel's NBD client on the card's
 * export) with dd, and the bytes are in the agent's backing file and read back in the guest.
 * Then the roles swap (the guest is the device: a pty and a disk file in the guest, the host writes
 * through its NBD export), and last the guest polls through sysfs resource2 (vfio unbound) and
 * creates the window itself. One boot serves the file. TCG figures are not performance figures.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import tty from 'node:tty';

import { LinkPhase, PciBarTransport, PciDoorbellMode, Role, type Device, type Link } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { Agent, makeLink } from '../agent/helpers';
import { NBD_CMD, NbdClient } from '../devices/helpers';
import { waitFor } from '../controller/fleet-helpers';
import { Guest, guestSkip, type GuestProcess } from '../helpers/guest';
import { IvshmemServer } from '../helpers/ivshmem';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

const MIB = 1024 * 1024;
const BDF = '0000:00:06.0';

class PtyEnd {
  readonly fd: number;
  private readonly stream: tty.ReadStream;
  got = Buffer.alloc(0);
  constructor(p: string) {
    this.fd = openSync(p, 'r+');
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on('data', (d: Buffer) => {
      this.got = Buffer.concat([this.got, d]);
    });
  }
  write(b: Buffer): void {
    writeSync(this.fd, b);
  }
  close(): void {
    this.stream.destroy();
  }
}

const VOP_WIN_MAGIC = 0x4e57504f;

function magicAt(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, 0);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe(
  'the host agent and vop-card in a QEMU guest (vfio MSI-X, sysfs polled; either side the device or the creator)',
  // About 20 s when it passes; the guest's command agent was seen to block (D state) in some runs,
  // and a bounded file fails in 4 minutes instead of the runner's 10.
  { skip: guestSkip(), timeout: 240_000 },
  () => {
    const dir = tempDir('card-guest');
    const disk = path.join(dir, 'disk.img');
    const memFile = path.join(dir, 'ivshmem.mem');
    let server: IvshmemServer;
    let srv: ServerProcess;
    let agent: Agent;
    let g: Guest;
    let card: GuestProcess | null = null;

    const devices: Device[] = [
      {
        name: 'con0',
        queueSize: 0,
        disableEventIdx: false,
        kind: {
          $case: 'console',
          value: {
            deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'host.pty') } } },
            driverFrontend: { kind: { $case: 'pty', value: { linkPath: '/run/con0.pty' } } },
            log: undefined,
          },
        },
      },
      {
        name: 'disk0',
        queueSize: 32,
        disableEventIdx: false,
        kind: {
          $case: 'blk',
          value: {
            backing: { path: disk, readOnly: false, directIo: false, serial: 'vop-card' },
            export: { unixSocket: '/run/disk0.nbd', tcpListen: '', exportName: 'vop' },
          },
        },
      },
    ];

    const cardConfig = (hostId: number): string =>
      [
        '# the card side of link "card"',
        'window.access=vfio',
        `window.path=${BDF}`,
        'window.bar=2',
        'window.side=attacher',
        `window.peer_id=${hostId}`,
        'window.doorbell=interrupt',
        'device.con0.kind=console',
        'device.con0.role=driver',
        'device.con0.pty=/run/con0.pty',
        'device.disk0.kind=blk',
        'device.disk0.role=driver',
        'device.disk0.queue_size=32',
        'device.disk0.nbd_unix=/run/disk0.nbd',
        'device.disk0.nbd_device=/dev/nbd0',
        '',
      ].join('\n');

    before(async () => {
      execFileSync('make', ['-s', '-C', repoPath('native'), 'out/guest/vop-card'], {
        stdio: ['ignore', 'ignore', 'ignore'],
      });
      const fd = openSync(disk, 'w', 0o600);
      ftruncateSync(fd, 16 * MIB);
      closeSync(fd);
      server = await IvshmemServer.start({
        socket: path.join(dir, 'ivshmem.sock'),
        sizeBytes: 16 * MIB,
        vectors: 1,
        shmPath: memFile,
      });
      srv = await startServer(
        'agent',
        ['--node-name', 'host-a', '--socket-dir', dir, '--pty-dir', dir, '--disk-dir', dir],
        {
          stateDir: tempDir('card-guest-a'),
        },
      );
      agent = new Agent(srv.admin);
      g = await Guest.boot({
        name: 'card-test',
        iommu: true,
        programs: ['ivshmem-vfio'],
        files: [{ path: '/bin/vop-card', source: repoPath('native', 'out', 'guest', 'vop-card') }],
        ivshmemDoorbell: [{ socket: server.socket, vectors: 1, slot: 6 }],
      });
    });

    afterEach((t) => g?.noteTest(t));

    /** The id the server gives its next peer (ids count up from 0, one per connection). */
    const nextId = (): number => server.lines.filter((x) => /^connect \d+/.test(x)).length;

    const stopCard = async (): Promise<void> => {
      card?.kill();
      const r = await card?.exited.catch(() => null);
      card = null;
      if (r) assert.equal(r.code, 0, `vop-card exit: ${r.stderr}`);
    };

    /** The host's pty and the guest's /run/con0.pty carry bytes both ways. */
    const consoleBothWays = async (hostPty: string): Promise<void> => {
      await waitFor('host pty', () => existsSync(hostPty), 30_000, 50);
      const host = new PtyEnd(hostPty);
      // Never as a session leader: one that opens a tty without O_NOCTTY makes it its controlling
      // terminal, and its exit then hangs the pty up under vop-card. A child of the shell is none.
      const reader = g.spawn('cat /run/con0.pty & wait');
      try {
        await new Promise((r) => setTimeout(r, 300));
        host.write(Buffer.from('hello guest\r'));
        await reader.waitForOutput(/hello guest/, 60_000);
        await g.run('(printf "hello host\\n" > /run/con0.pty)');
        await waitFor('guest to host', () => host.got.toString().includes('hello host'), 60_000, 50);
      } finally {
        reader.kill();
        await reader.exited.catch(() => undefined);
        host.close();
      }
    };

    after(async () => {
      card?.kill();
      await Promise.race([card?.exited.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000))]);
      await g?.close();
      agent?.close();
      await srv?.stop('SIGTERM');
      await server?.stop();
    });

    it('polls through sysfs resource2 (no vfio) and the guest creates the window', async () => {
      // First, before vfio-pci takes the device: sysfs maps the BARs (an unbind from vfio-pci
      // right after a vfio user closed the device could block in the guest).
      const hostId = nextId();
      const sys = `/sys/bus/pci/devices/${BDF}`;
      await g.writeFile(
        '/etc/vop-card.conf',
        [
          'window.access=bar',
          `window.path=${sys}/resource2`,
          `window.doorbell_path=${sys}/resource0`,
          'window.side=creator',
          `window.peer_id=${hostId}`,
          'window.doorbell=poll',
          'window.poll_max_us=2000',
          'device.con0.kind=console',
          'device.con0.role=driver',
          'device.con0.pty=/run/con0.pty',
          'device.disk0.kind=blk',
          'device.disk0.role=driver',
          'device.disk0.queue_size=32',
          'device.disk0.nbd_unix=/run/disk0.nbd',
          'device.disk0.nbd_device=/dev/nbd0',
          '',
        ].join('\n'),
      );
      // The guest lays the window out first; the agent then attaches at once (and joins the server once).
      card = g.spawn('vop-card --config /etc/vop-card.conf');
      await waitFor('the guest laid the window out', () => magicAt(memFile) === VOP_WIN_MAGIC, 60_000, 50);
      const link: Link = makeLink('card-poll', { devices });
      link.spec = {
        ...link.spec!,
        endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
        transport: {
          kind: {
            $case: 'pciBar',
            value: PciBarTransport.fromPartial({
              bar: 2,
              memoryHolder: Role.ROLE_DEVICE,
              windowCreator: Role.ROLE_DRIVER,
              pollMaxUs: 2000,
              deviceAccess: { ivshmemSocket: server.socket, peerId: 0 },
              driverAccess: {
                barPath: `${sys}/resource2`,
                doorbellPath: `${sys}/resource0`,
                doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL,
                peerId: hostId,
              },
            }),
          },
        },
      };
      await agent.apply(link);
      await card.waitForOutput(/ready id=0 peer=\d+/, 120_000);
      const l = await agent.waitPhase('card-poll', LinkPhase.LINK_PHASE_READY, 120_000);
      assert.equal(l.status?.transport?.side, 'attacher', 'the guest created the window');
      assert.equal(l.status?.transport?.ownId, hostId);
      await consoleBothWays(path.join(dir, 'host.pty'));
      await g.run('dd if=/dev/urandom of=/tmp/pattern2 bs=65536 count=8 2>/dev/null');
      const want = (await g.run('sha256sum /tmp/pattern2')).split(' ')[0];
      await g.run('dd if=/tmp/pattern2 of=/dev/nbd0 bs=65536 seek=64 conv=fsync 2>/dev/null && sync', {
        timeoutMs: 120_000,
      });
      const fd = openSync(disk, 'r');
      const got = Buffer.alloc(8 * 65536);
      readSync(fd, got, 0, got.length, 64 * 65536);
      closeSync(fd);
      assert.equal(sha256(got), want, "the polled guest's writes are in the agent's backing file");
      const m = await (await fetch(`http://${srv.metrics}/metrics`)).text();
      assert.match(m, /vop_link_doorbells_total\{[^}]*link="card-poll"[^}]*direction="received"[^}]*\} [1-9]/);
      await stopCard();
      await agent.delete('card-poll');
    });

    it('brings the link up with the guest as the driver: console both ways, a disk through /dev/nbd0', async () => {
      await g.run(`ivshmem-vfio -a ${BDF} -v 1 info`); // binds the device to vfio-pci
      const [guestId] = server.connected();
      assert.equal(guestId, 0, 'the guest joined the fresh server first');
      const expected = nextId();
      const link: Link = makeLink('card', { devices });
      link.spec = {
        ...link.spec!,
        // The far end is vop-card in the guest, named through the transport.
        endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
        transport: {
          kind: {
            $case: 'pciBar',
            value: PciBarTransport.fromPartial({
              bar: 2,
              memoryHolder: Role.ROLE_DEVICE,
              windowCreator: Role.ROLE_DEVICE,
              deviceAccess: {
                ivshmemSocket: server.socket,
                doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT,
                peerId: guestId,
              },
              // The card: BAR2 through vfio, MSI-X; it rings the host (the server's next peer).
              driverAccess: {
                pciAddress: BDF,
                doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT,
                peerId: expected,
              },
            }),
          },
        },
      };
      await agent.apply(link);
      // The agent's window is open once its status has an ivshmem id.
      let hostId = -1;
      await waitFor(
        'the agent joined the server',
        async () => {
          hostId = (await agent.get('card')).link?.status?.transport?.ownId ?? -1;
          return hostId >= 0;
        },
        30_000,
        50,
      );
      assert.equal(hostId, expected, 'the agent has the id the spec names');
      await g.writeFile('/etc/vop-card.conf', cardConfig(hostId));
      assert.match(await g.run('vop-card --config /etc/vop-card.conf --check'), /ok 2 devices/);
      card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
      await card.waitForOutput(new RegExp(`ready id=0 peer=${hostId}\\b`), 120_000);
      const l = await agent.waitPhase('card', LinkPhase.LINK_PHASE_READY, 120_000);
      assert.equal(l.status?.transport?.peerId, guestId);

      await consoleBothWays(path.join(dir, 'host.pty'));

      // Disk: the guest writes 1 MiB at 1 MiB through /dev/nbd0; it is in the agent's backing file.
      await g.run('dd if=/dev/urandom of=/tmp/pattern bs=65536 count=16 2>/dev/null');
      const want = (await g.run('sha256sum /tmp/pattern')).split(' ')[0];
      await g.run('dd if=/tmp/pattern of=/dev/nbd0 bs=65536 seek=16 conv=fsync 2>/dev/null && sync', {
        timeoutMs: 120_000,
      });
      const fd = openSync(disk, 'r');
      const got = Buffer.alloc(MIB);
      readSync(fd, got, 0, MIB, MIB);
      closeSync(fd);
      assert.equal(sha256(got), want, "the guest's writes are in the agent's backing file");
      await g.run('echo 3 > /proc/sys/vm/drop_caches');
      const back = (await g.run('dd if=/dev/nbd0 bs=65536 skip=16 count=16 2>/dev/null | sha256sum')).split(' ')[0];
      assert.equal(back, want, 'and read back through the link');
      const stats = await agent.stats('card');
      const blk = stats.devices.find((d) => d.device === 'disk0');
      assert.ok(blk && Object.values(blk.counters).some((v) => v > 0n), 'the device counted the requests');
      await stopCard();
      await agent.delete('card');
    });

    it('swaps the roles: the guest is the device (a pty and a disk file in the guest), the host the driver', async () => {
      const hostId = nextId();
      await g.run('dd if=/dev/zero of=/tmp/disk.img bs=1048576 count=16 2>/dev/null');
      const nbdSock = path.join(dir, 'host-nbd.sock');
      const link: Link = makeLink('card-dev', {
        devices: [
          {
            name: 'con0',
            queueSize: 0,
            disableEventIdx: false,
            kind: {
              $case: 'console',
              value: {
                deviceBackend: { kind: { $case: 'pty', value: { linkPath: '/run/con0.pty' } } },
                driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'drv.pty') } } },
                log: undefined,
              },
            },
          },
          {
            name: 'disk0',
            queueSize: 32,
            disableEventIdx: false,
            kind: {
              $case: 'blk',
              value: {
                backing: { path: '/tmp/disk.img', readOnly: false, directIo: false, serial: 'in-guest' },
                export: { unixSocket: nbdSock, tcpListen: '', exportName: 'vop' },
              },
            },
          },
        ],
      });
      link.spec = {
        ...link.spec!,
        endpoints: [{ agent: 'host-a', role: Role.ROLE_DRIVER }],
        transport: {
          kind: {
            $case: 'pciBar',
            value: PciBarTransport.fromPartial({
              bar: 2,
              // The host holds the memory and creates the window; the guest is the device.
              memoryHolder: Role.ROLE_DRIVER,
              windowCreator: Role.ROLE_DRIVER,
              driverAccess: { ivshmemSocket: server.socket, peerId: 0 },
              deviceAccess: { pciAddress: BDF, peerId: hostId },
            }),
          },
        },
      };
      await agent.apply(link);
      await waitFor('the agent joined', () => server.connected().includes(hostId), 30_000, 50);
      await g.writeFile(
        '/etc/vop-card.conf',
        [
          'window.access=vfio',
          `window.path=${BDF}`,
          'window.bar=2',
          `window.peer_id=${hostId}`,
          'device.con0.kind=console',
          'device.con0.role=device',
          'device.con0.pty=/run/con0.pty',
          'device.disk0.kind=blk',
          'device.disk0.role=device',
          'device.disk0.queue_size=32',
          'device.disk0.file=/tmp/disk.img',
          '',
        ].join('\n'),
      );
      card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
      await card.waitForOutput(/ready id=0 peer=\d+/, 120_000);
      await agent.waitPhase('card-dev', LinkPhase.LINK_PHASE_READY, 120_000);
      await consoleBothWays(path.join(dir, 'drv.pty'));
      // The host writes through its NBD export; the bytes are in the guest's file.
      const nbd = await NbdClient.connect(nbdSock);
      try {
        const data = randomBytes(MIB);
        assert.equal((await nbd.request(NBD_CMD.WRITE, BigInt(2 * MIB), data.length, data)).error, 0);
        assert.equal((await nbd.request(NBD_CMD.FLUSH, 0n, 0)).error, 0);
        const inGuest = (await g.run('dd if=/tmp/disk.img bs=1048576 skip=2 count=1 2>/dev/null | sha256sum')).split(
          ' ',
        )[0];
        assert.equal(inGuest, sha256(data), "the host's writes are in the guest's backing file");
      } finally {
        await nbd.close();
      }
      await stopCard();
      await agent.delete('card-dev');
    });
  },
);
