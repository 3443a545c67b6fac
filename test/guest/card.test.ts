/**
 * The host agent against vop-card in a QEMU guest (TCG, q35 with intel-iommu, one ivshmem-doorbell
 * device on a vop-ivshmem-server): the VOP topology as QEMU can run it. The host process always holds
 * the memory (the server's), the guest maps it as BAR2 and runs the static card binary
 * (native/out/guest/vop-card); the link names one agent endpoint and describes the card through the
 * transport. One boot serves the whole matrix:
 *
 *   {the guest is the driver, the guest is the device} x {the host creates the window, the guest does}
 *   x {polled (the guest maps BAR2/BAR0 through sysfs resourceN, no interrupt path; both sides poll),
 *      MSI-X (the guest's BAR through vfio-pci, MSI-X to an eventfd; the host on its server eventfd)}
 *
 * and on every link a console carries bytes both ways between a host pty and the guest's, a disk is
 * written and read on the driver side (the guest: `dd` through /dev/nbd0, the kernel's NBD client on
 * the card's export; the host: `nbdcopy` through the agent's NBD export) with checksums equal to the
 * backing file on the device side, and a net device joins a TAP in the guest and a TAP in a host
 * namespace, `ping` both ways. The doorbells are checked per mode: polled, the host never signals
 * and counts polls; MSI-X, the guest takes vfio-msix interrupts and the host counts doorbells both ways.
 * TCG figures are not performance figures.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import {
  LinkPhase,
  PciBarTransport,
  PciDoorbellMode,
  Role,
  type Device,
  type Link,
  type PciBarAccess,
} from '../../lib/proto/types';
import { type Agent, makeLink } from '../agent/helpers';
import { waitFor } from '../controller/fleet-helpers';
import { Netns } from '../devices/helpers';
import {
  cardConfig,
  guestCardBinary,
  hostCardBinary,
  magicAt,
  PtyEnd,
  readAt,
  sha256,
  startCardAgent,
  VOP_WIN_MAGIC,
  type CardDevice,
  type CardWindow,
} from '../helpers/card';
import { Guest, guestSkip, type GuestProcess } from '../helpers/guest';
import { IvshmemServer } from '../helpers/ivshmem';
import { run, tempDir, type ServerProcess } from '../helpers/servers';

const MIB = 1024 * 1024;
const BDF = '0000:00:06.0';
const SYS = `/sys/bus/pci/devices/${BDF}`;
const DISK_BYTES = 4 * MIB;
const WINDOW_BYTES = 32 * MIB;
/** Net rings of 32 entries: the window (with the agent's room for one hot add) then fits 32 MiB. */
const NET_QUEUE = 32;
const HOST_IP = '10.77.0.1';
const GUEST_IP = '10.77.0.2';

type Mode = 'poll' | 'msix';
/** What a scenario run on a link that is up needs to know. */
interface CellCtx {
  name: string;
  n: number;
  hostPty: string;
  hostTap: string;
  hostId: number;
  guestId: number;
}
interface Cell {
  guest: 'driver' | 'device';
  creator: 'host' | 'guest';
  mode: Mode;
}

/** `vop_link_doorbells_total` / `_polls_total` of one link from the agent's /metrics text. */
function doorbells(metrics: string, link: string): { sent: number; received: number; polls: number } {
  const r = { sent: 0, received: 0, polls: 0 };
  for (const line of metrics.split('\n')) {
    if (!line.includes(`link="${link}"`)) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (line.startsWith('vop_link_doorbells_total{') && line.includes('direction="sent"')) r.sent += v;
    if (line.startsWith('vop_link_doorbells_total{') && line.includes('direction="received"')) r.received += v;
    if (line.startsWith('vop_link_doorbell_polls_total{')) r.polls += v;
  }
  return r;
}

describe(
  'the host agent and vop-card in a QEMU guest: either side the device, either side the creator, polled and MSI-X',
  // About 1-2 minutes under load; bounded well below the runner's 10 minutes.
  { skip: guestSkip(), timeout: 280_000 },
  () => {
    const dir = tempDir('card-guest');
    const memFile = path.join(dir, 'ivshmem.mem');
    const hostDisk = path.join(dir, 'disk.img');
    const nbdSock = path.join(dir, 'host-nbd.sock');
    let ns: Netns;
    let nsName: string;
    let server: IvshmemServer;
    let srv: ServerProcess;
    let agent: Agent;
    let g: Guest;
    let card: GuestProcess | null = null;
    let cellNo = 0;

    before(async () => {
      const bin = guestCardBinary();
      const fd = openSync(hostDisk, 'w', 0o600);
      ftruncateSync(fd, DISK_BYTES);
      closeSync(fd);
      ns = new Netns('vcg', 1);
      nsName = ns.names[0] as string;
      server = await IvshmemServer.start({
        socket: path.join(dir, 'ivshmem.sock'),
        sizeBytes: WINDOW_BYTES,
        vectors: 1,
        shmPath: memFile,
      });
      ({ srv, agent } = await startCardAgent(dir, { netns: [nsName], stateDir: tempDir('card-guest-a') }));
      g = await Guest.boot({
        name: 'card',
        iommu: true,
        programs: ['ivshmem-vfio', 'bar-hostile'],
        files: [{ path: '/bin/vop-card', source: bin }],
        ivshmemDoorbell: [{ socket: server.socket, vectors: 1, slot: 6 }],
        bootTimeoutMs: 120_000,
      });
      assert.deepEqual(server.connected(), [0], 'the guest is the fresh server first peer');
    });

    afterEach((t) => g?.noteTest(t));

    after(async () => {
      card?.kill();
      await Promise.race([card?.exited.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000))]);
      await g?.close();
      agent?.close();
      await srv?.stop('SIGTERM');
      await server?.stop();
      ns?.remove();
      rmSync(dir, { recursive: true, force: true });
      if (srv) rmSync(srv.stateDir, { recursive: true, force: true });
    });

    /** The id the server gives its next peer (ids count up from 0, one per connection). */
    const nextId = (): number => server.lines.filter((x) => /^connect \d+/.test(x)).length;

    const stopCard = async (): Promise<void> => {
      const c = card;
      card = null;
      if (!c) return;
      c.kill();
      const r = await c.exited;
      assert.equal(r.code, 0, `vop-card exit: ${r.stderr}`);
    };

    /** The host's pty and the guest's /run/con0.pty carry bytes both ways. */
    const consoleBothWays = async (hostPty: string, tag: string): Promise<void> => {
      await waitFor('host pty', () => existsSync(hostPty), 30_000, 50);
      const host = new PtyEnd(hostPty);
      // A child of the shell (not a session leader) opens the guest's pty: a session leader without
      // O_NOCTTY would make it its controlling terminal and hang it up under vop-card at exit.
      const reader = g.spawn('cat /run/con0.pty & wait');
      try {
        // Until the reader has the pty open, bytes may arrive before it: say it again until seen.
        await waitFor(
          'host to guest',
          () => {
            if (reader.stdout().includes(`to guest ${tag}`)) return true;
            host.write(`to guest ${tag}\r`);
            return false;
          },
          60_000,
          1000,
        );
        await g.run(`(printf "to host ${tag}\\n" > /run/con0.pty)`);
        await waitFor('guest to host', () => host.got.toString().includes(`to host ${tag}`), 60_000, 50);
      } finally {
        reader.kill();
        await reader.exited.catch(() => undefined);
        host.close();
      }
    };

    /** The guest's and the host namespace's TAPs ping each other. */
    const pingBothWays = async (hostTap: string): Promise<void> => {
      await waitFor(
        'host TAP in the namespace',
        () => ns.exec(nsName, 'ip', ['link', 'show', hostTap]).code === 0,
        30_000,
        100,
      );
      for (const args of [
        ['addr', 'replace', `${HOST_IP}/24`, 'dev', hostTap],
        ['link', 'set', hostTap, 'up'],
      ]) {
        const r = ns.exec(nsName, 'ip', args);
        assert.equal(r.code, 0, r.stderr);
      }
      await g.run(`ip addr flush dev vcard0; ip addr add ${GUEST_IP}/24 dev vcard0 && ip link set vcard0 up`);
      const out = await g.run(`ping -c 3 -w 90 ${HOST_IP}`, { timeoutMs: 120_000 });
      assert.match(out, /3 packets received/, out);
      const back = await run('ip', ['netns', 'exec', nsName, 'ping', '-c', '3', '-w', '90', GUEST_IP], {
        timeoutMs: 120_000,
      });
      assert.equal(back.code, 0, back.stdout + back.stderr);
      assert.match(back.stdout, /3 received/);
    };

    /** One cell; on a failure the link's conditions and the agent's last errors join the message. */
    const runCell = async (c: Cell, body?: (x: CellCtx) => Promise<void>, label = 'card'): Promise<void> => {
      const name = `${label}-${c.guest === 'driver' ? 'drv' : 'dev'}-${c.creator}-${c.mode}`;
      try {
        await cell(c, name, body);
      } catch (e) {
        const st = await agent.get(name).catch(() => null);
        const errs = srv.logs
          .filter((r) => r.level === 'warn' || r.level === 'error' || r.level === 'fatal')
          .slice(-8)
          .map((r) => JSON.stringify(r));
        (e as Error).message +=
          `\n  link conditions: ${JSON.stringify(st?.link?.status?.conditions.map((x) => `${x.type}=${x.status} ${x.reason}: ${x.message}`))}` +
          `\n  agent warnings:\n    ${errs.join('\n    ')}`;
        throw e;
      } finally {
        const k = card;
        card = null;
        if (k) {
          k.kill();
          await k.exited.catch(() => undefined);
        }
        await agent.delete(name).catch(() => undefined);
      }
    };

    const cell = async (c: Cell, name: string, body?: (x: CellCtx) => Promise<void>): Promise<void> => {
      const n = cellNo++;
      const hostTap = `vcg${n}h${process.pid % 1000}`;
      const hostPty = path.join(dir, `host${n}.pty`);
      const guestId = 0;
      const hostId = nextId();
      const hostRole = c.guest === 'driver' ? Role.ROLE_DEVICE : Role.ROLE_DRIVER;
      const guestRole = c.guest === 'driver' ? Role.ROLE_DRIVER : Role.ROLE_DEVICE;
      const poll = c.mode === 'poll';
      const doorbell = poll ? PciDoorbellMode.PCI_DOORBELL_MODE_POLL : PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT;
      const hostAccess: Partial<PciBarAccess> = { ivshmemSocket: server.socket, doorbell, peerId: guestId };
      const guestAccess: Partial<PciBarAccess> = poll
        ? { barPath: `${SYS}/resource2`, doorbellPath: `${SYS}/resource0`, doorbell, peerId: hostId }
        : { pciAddress: BDF, doorbell, peerId: hostId };
      const hostTapB = { kind: { $case: 'tap' as const, value: { name: hostTap, netns: nsName } } };
      const guestTapB = { kind: { $case: 'tap' as const, value: { name: 'vcard0', netns: '' } } };
      const hostPtyB = { kind: { $case: 'pty' as const, value: { linkPath: hostPty } } };
      const guestPtyB = { kind: { $case: 'pty' as const, value: { linkPath: '/run/con0.pty' } } };
      const guestDrv = c.guest === 'driver';
      const devices: Device[] = [
        {
          name: 'con0',
          queueSize: 0,
          disableEventIdx: false,
          kind: {
            $case: 'console',
            value: {
              deviceBackend: guestDrv ? hostPtyB : guestPtyB,
              driverFrontend: guestDrv ? guestPtyB : hostPtyB,
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
              backing: {
                path: guestDrv ? hostDisk : '/tmp/disk.img',
                readOnly: false,
                directIo: false,
                serial: 'card',
              },
              export: { unixSocket: guestDrv ? '/run/disk0.nbd' : nbdSock, tcpListen: '', exportName: 'vop' },
            },
          },
        },
        {
          name: 'eth0',
          queueSize: NET_QUEUE,
          disableEventIdx: false,
          kind: {
            $case: 'net',
            value: {
              mac: '',
              mtu: 0,
              offloads: false,
              deviceBackend: guestDrv ? hostTapB : guestTapB,
              driverFrontend: guestDrv ? guestTapB : hostTapB,
            },
          },
        },
      ];
      const link: Link = makeLink(name, { devices });
      link.spec = {
        ...link.spec!,
        endpoints: [{ agent: 'host-a', role: hostRole }],
        transport: {
          kind: {
            $case: 'pciBar',
            value: PciBarTransport.fromPartial({
              bar: 2,
              memoryHolder: hostRole,
              // The whole memory (a creator names its size; the card config says the same).
              sizeBytes: BigInt(WINDOW_BYTES),
              windowCreator: c.creator === 'host' ? hostRole : guestRole,
              pollMaxUs: poll ? 2000 : 0,
              deviceAccess: guestDrv ? hostAccess : guestAccess,
              driverAccess: guestDrv ? guestAccess : hostAccess,
            }),
          },
        },
      };
      const win: CardWindow = poll
        ? {
            access: 'bar',
            path: `${SYS}/resource2`,
            doorbell_path: `${SYS}/resource0`,
            side: c.creator === 'guest' ? 'creator' : 'attacher',
            peer_id: hostId,
            doorbell: 'poll',
            poll_max_us: 2000,
            size: WINDOW_BYTES,
          }
        : {
            access: 'vfio',
            path: BDF,
            bar: 2,
            side: c.creator === 'guest' ? 'creator' : 'attacher',
            peer_id: hostId,
            doorbell: 'interrupt',
            size: WINDOW_BYTES,
          };
      const role = c.guest;
      const cardDevices: CardDevice[] = [
        { name: 'con0', kind: 'console', role, keys: { pty: '/run/con0.pty' } },
        guestDrv
          ? {
              name: 'disk0',
              kind: 'blk',
              role,
              keys: { queue_size: 32, nbd_unix: '/run/disk0.nbd', nbd_device: '/dev/nbd0' },
            }
          : { name: 'disk0', kind: 'blk', role, keys: { queue_size: 32, file: '/tmp/disk.img' } },
        { name: 'eth0', kind: 'net', role, keys: { queue_size: NET_QUEUE, tap: 'vcard0' } },
      ];
      await g.writeFile('/etc/vop-card.conf', cardConfig(win, cardDevices, `the card side of link ${name}`));
      assert.match(await g.run('vop-card --config /etc/vop-card.conf --check'), /ok 3 devices/);
      if (!guestDrv) await g.run(`dd if=/dev/zero of=/tmp/disk.img bs=${MIB} count=${DISK_BYTES / MIB} 2>/dev/null`);

      // Whoever creates the window goes first; the other attaches.
      await waitFor('no window left in the memory', () => magicAt(memFile) !== VOP_WIN_MAGIC, 30_000, 50);
      if (c.creator === 'guest') {
        card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
        await waitFor('the guest laid the window out', () => magicAt(memFile) === VOP_WIN_MAGIC, 90_000, 50);
        await agent.apply(link);
      } else {
        await agent.apply(link);
        await waitFor('the agent laid the window out', () => magicAt(memFile) === VOP_WIN_MAGIC, 90_000, 50);
        card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
      }
      await card.waitForOutput(new RegExp(`ready id=${guestId} peer=${hostId}\\b`), 120_000);
      const l = await agent.waitPhase(name, LinkPhase.LINK_PHASE_READY, 120_000);
      assert.equal(l.status?.transport?.side, c.creator === 'host' ? 'creator' : 'attacher');
      assert.equal(l.status?.transport?.ownId, hostId);
      assert.equal(l.status?.transport?.peerId, guestId);
      assert.equal(l.status?.transport?.doorbell, poll ? 'poll' : 'eventfd');
      if (body) {
        await body({ name, n, hostPty, hostTap, hostId, guestId });
        await agent.delete(name);
        return;
      }

      await consoleBothWays(hostPty, `${n}`);

      if (guestDrv) {
        // The guest writes 1 MiB at 1 MiB through /dev/nbd0; it is in the agent's backing file and reads back.
        await g.run('dd if=/dev/urandom of=/tmp/pattern bs=65536 count=16 2>/dev/null');
        const want = (await g.run('sha256sum /tmp/pattern')).split(' ')[0];
        await g.run('dd if=/tmp/pattern of=/dev/nbd0 bs=65536 seek=16 conv=fsync 2>/dev/null && sync', {
          timeoutMs: 120_000,
        });
        assert.equal(sha256(readAt(hostDisk, MIB, MIB)), want, "the guest's writes are in the agent's backing file");
        await g.run('echo 3 > /proc/sys/vm/drop_caches');
        const back = await g.run('dd if=/dev/nbd0 bs=65536 skip=16 count=16 2>/dev/null | sha256sum', {
          timeoutMs: 120_000,
        });
        assert.equal(back.split(' ')[0], want, 'and read back through the link');
      } else {
        // The host writes the whole disk through its NBD export with nbdcopy and reads it back;
        // the guest's backing file has the same checksum.
        const pattern = path.join(dir, 'pattern.bin');
        const copy = path.join(dir, 'copy.bin');
        writeFileSync(pattern, randomBytes(DISK_BYTES));
        const uri = `nbd+unix:///vop?socket=${nbdSock}`;
        await waitFor('the NBD export', () => existsSync(nbdSock), 30_000, 50);
        let r = await run('nbdcopy', ['--flush', pattern, uri], { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.stderr);
        r = await run('nbdcopy', [uri, copy], { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.stderr);
        const want = sha256(readFileSync(pattern));
        assert.equal(sha256(readFileSync(copy)), want, 'read back through the link');
        const inGuest = (await g.run('sha256sum /tmp/disk.img')).split(' ')[0];
        assert.equal(inGuest, want, "the host's writes are in the guest's backing file");
        rmSync(pattern);
        rmSync(copy);
      }

      await pingBothWays(hostTap);

      const m = doorbells(await (await fetch(`http://${srv.metrics}/metrics`)).text(), name);
      const irqs = await g.run('grep vfio-msix /proc/interrupts || true');
      if (poll) {
        assert.equal(m.sent, 0, 'a polled guest is never signalled');
        assert.ok(m.polls > 0, `the host polled: ${JSON.stringify(m)}`);
        assert.equal(irqs.trim(), '', 'no MSI-X vector is set up in the guest');
      } else {
        assert.ok(m.sent > 0 && m.received > 0, `doorbells both ways: ${JSON.stringify(m)}`);
        const n = irqs
          .trim()
          .split(/\s+/)
          .slice(1)
          .filter((x) => /^\d+$/.test(x))
          .reduce((a, x) => a + Number(x), 0);
        assert.ok(n > 0, `the guest took MSI-X interrupts: ${irqs}`);
      }
      await stopCard();
      await agent.delete(name);
      await waitFor(
        'the host TAP gone',
        () => ns.exec(nsName, 'ip', ['link', 'show', hostTap]).code !== 0,
        30_000,
        100,
      );
    };

    /** A second link of the same agent: vop-card on this host through another ivshmem server, a console. */
    const startBystander = async (): Promise<{ check: (tag: string) => Promise<void>; stop: () => Promise<void> }> => {
      const sock2 = path.join(dir, 'ivshmem2.sock');
      const server2 = await IvshmemServer.start({ socket: sock2, sizeBytes: 8 * MIB, vectors: 1 });
      let proc: ChildProcess | null = null;
      try {
        const hpty = path.join(dir, 'by-host.pty');
        const cpty = path.join(dir, 'by-card.pty');
        const link: Link = makeLink('bystander', {
          devices: [
            {
              name: 'con0',
              queueSize: 0,
              disableEventIdx: false,
              kind: {
                $case: 'console',
                value: {
                  deviceBackend: { kind: { $case: 'pty', value: { linkPath: hpty } } },
                  driverFrontend: { kind: { $case: 'pty', value: { linkPath: cpty } } },
                  log: undefined,
                },
              },
            },
          ],
        });
        const ev = { ivshmemSocket: sock2, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT };
        link.spec = {
          ...link.spec!,
          endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
          transport: {
            kind: {
              $case: 'pciBar',
              value: PciBarTransport.fromPartial({
                bar: 2,
                sizeBytes: BigInt(8 * MIB),
                deviceAccess: ev,
                driverAccess: ev,
              }),
            },
          },
        };
        await agent.apply(link);
        const conf = path.join(dir, 'bystander.conf');
        writeFileSync(
          conf,
          cardConfig({ access: 'ivshmem', path: sock2, side: 'attacher', doorbell: 'interrupt' }, [
            { name: 'con0', kind: 'console', role: 'driver', keys: { pty: cpty } },
          ]),
        );
        const p = spawn(hostCardBinary(), ['--config', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
        proc = p;
        let out = '';
        p.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
        p.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
        await waitFor('the bystander card', () => /ready id=/.test(out) || p.exitCode !== null, 60_000, 50);
        assert.match(out, /ready id=/);
        await agent.waitPhase('bystander', LinkPhase.LINK_PHASE_READY, 60_000);
        const check = async (tag: string): Promise<void> => {
          const h = new PtyEnd(hpty);
          const c = new PtyEnd(cpty);
          try {
            h.write(`host ${tag}\n`);
            c.write(`card ${tag}\n`);
            await waitFor(
              `bystander console ${tag}`,
              () => c.got.includes(`host ${tag}`) && h.got.includes(`card ${tag}`),
              60_000,
              50,
            );
          } finally {
            h.close();
            c.close();
          }
        };
        const stop = async (): Promise<void> => {
          if (p.exitCode === null) {
            p.kill('SIGTERM');
            await new Promise((r) => p.once('exit', r));
          }
          await agent.delete('bystander').catch(() => undefined);
          await server2.stop();
        };
        return { check, stop };
      } catch (e) {
        if (proc && proc.exitCode === null) proc.kill('SIGKILL');
        await agent.delete('bystander').catch(() => undefined);
        await server2.stop();
        throw e;
      }
    };

    /**
     * The hostile guest: while pings and console bytes flow, bar-hostile (test/guest/progs) rewrites
     * ring fields of every queue and the host's device table through BAR2 for a few seconds.
     */
    const hostile = async (x: CellCtx): Promise<void> => {
      const by = await startBystander();
      try {
        await consoleBothWays(x.hostPty, `h${x.n}`);
        await pingBothWays(x.hostTap);
        await by.check('before');
        const traffic = g.spawn(`ping -i 0.05 -w 20 ${HOST_IP} >/dev/null 2>&1; true`);
        const h = await g.run(`bar-hostile ${SYS}/resource2 5000`, { timeoutMs: 120_000 });
        assert.match(h, /hostile rings=[1-9]\d* table=[1-9]/, h);
        traffic.kill();
        await traffic.exited.catch(() => undefined);
        // The agent answers, its other link carries bytes, this link is broken or reset.
        assert.equal(srv.proc.exitCode, null, 'the agent process is up');
        assert.ok((await agent.info()).identity, 'the agent answers');
        await by.check('during');
        assert.equal((await agent.get('bystander')).link?.status?.phase, LinkPhase.LINK_PHASE_READY);
        // This link broke and was reset (the peer's rings and the host's table were rewritten)...
        const st = (await agent.get(x.name)).link?.status;
        assert.ok(
          (st?.resetCount ?? 0) >= 1,
          `the link was reset: ${st?.conditions.map((c) => `${c.type} ${c.reason}`).join(', ')}`,
        );
        // ...and GetStats still answers for it (it read the rewritten table and failed with INTERNAL).
        assert.ok(Array.isArray((await agent.stats(x.name)).devices));
        // The guest side resets: vop-card restarts until it finds a window that validates (the
        // host lays a rewritten table out afresh while it waits; vop-card exits on a bad table).
        const old = card;
        card = null;
        old?.kill();
        await old?.exited.catch(() => undefined);
        const ready = new RegExp(`ready id=${x.guestId} peer=${x.hostId}\\b`);
        let starts = 0;
        await waitFor(
          'vop-card attached again',
          async () => {
            if (card && card.running) return ready.test(card.stdout());
            starts += 1;
            card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
            await new Promise((r) => setTimeout(r, 1000));
            return false;
          },
          120_000,
          500,
        );
        assert.ok(starts >= 1);
        await agent.waitPhase(x.name, LinkPhase.LINK_PHASE_READY, 120_000);
        await consoleBothWays(x.hostPty, `h${x.n}b`);
        // The link reset re-opened the host's TAP (a new interface): ping through both again.
        await pingBothWays(x.hostTap);
        await by.check('after');
        await stopCard();
      } finally {
        await by.stop();
      }
    };

    /**
     * QMP system_reset while the guest writes 64 KiB blocks with conv=fsync through /dev/nbd0 and
     * reports each completed one ("done BLOCK SHA-256"): the host sees the peer gone (heartbeat),
     * resets the link and serves the rebooted guest; every acknowledged block is in its backing file.
     */
    const resetMidTraffic = async (x: CellCtx): Promise<void> => {
      const conf = await g.readFile('/etc/vop-card.conf');
      const events = agent.watch('', true);
      try {
        const writer = g.spawn(
          'i=32; while [ $i -lt 96 ]; do ' +
            'dd if=/dev/urandom of=/tmp/b bs=65536 count=1 2>/dev/null; s=$(sha256sum /tmp/b); ' +
            'dd if=/tmp/b of=/dev/nbd0 bs=65536 seek=$i count=1 conv=fsync 2>/dev/null || exit 1; ' +
            'echo "done $i ${s%% *}"; i=$((i+1)); done',
        );
        writer.exited.catch(() => undefined); // ends with the reset
        await writer.waitForOutput(/done 36 /, 120_000);
        card = null; // it goes with the guest
        await g.reset(120_000);
        // Every line that arrived was printed after its write and flush completed.
        const acked = [...writer.stdout().matchAll(/done (\d+) ([0-9a-f]{64})/g)].map((m) => ({
          block: Number(m[1]),
          sha: m[2] ?? '',
        }));
        assert.ok(acked.length >= 5, writer.stdout());
        const gone = await events.waitFor((m) => m.event?.link === x.name && m.event.reason === 'PeerGone', 60_000);
        assert.match(gone.event?.message ?? '', /heartbeat|left/);
        for (const a of acked)
          assert.equal(sha256(readAt(hostDisk, a.block * 65536, 65536)), a.sha, `acknowledged block ${a.block} lost`);
        // The rebooted guest: vfio again, the same card config, attached and served.
        await g.run(`ivshmem-vfio -a ${BDF} -v 1 info`);
        await g.writeFile('/etc/vop-card.conf', conf);
        card = g.spawn('vop-card --config /etc/vop-card.conf --spin-us 0');
        await card.waitForOutput(new RegExp(`ready id=${x.guestId} peer=${x.hostId}\\b`), 120_000);
        const l = await agent.waitPhase(x.name, LinkPhase.LINK_PHASE_READY, 120_000);
        assert.ok((l.status?.resetCount ?? 0) >= 1, 'the link was reset');
        await consoleBothWays(x.hostPty, `r${x.n}`);
        const last = acked[acked.length - 1]!;
        const back = await g.run(`dd if=/dev/nbd0 bs=65536 skip=${last.block} count=1 2>/dev/null | sha256sum`, {
          timeoutMs: 120_000,
        });
        assert.equal(back.split(' ')[0], last.sha, 'the rebooted guest reads the last acknowledged block back');
        await stopCard();
      } finally {
        events.stream.cancel();
      }
    };

    const cells = (mode: Mode): Cell[] => [
      { guest: 'driver', creator: 'host', mode },
      { guest: 'driver', creator: 'guest', mode },
      { guest: 'device', creator: 'host', mode },
      { guest: 'device', creator: 'guest', mode },
    ];

    // Polled first: sysfs maps the BARs while no driver holds the device; then vfio-pci takes it.
    for (const c of cells('poll')) {
      it(`polled through sysfs: the guest is the ${c.guest}, the ${c.creator} creates the window`, () => runCell(c));
    }
    it('a hostile guest that rewrites rings and the device table breaks only its link; the agent and its other link stay up; the link recovers when the guest side restarts', () =>
      runCell({ guest: 'driver', creator: 'host', mode: 'poll' }, hostile, 'hostile'));
    it('binds the ivshmem device to vfio-pci in the guest', async () => {
      await g.run(`ivshmem-vfio -a ${BDF} -v 1 info`);
      assert.match(await g.run(`readlink ${SYS}/driver`), /vfio-pci/);
    });
    for (const c of cells('msix')) {
      it(`MSI-X through vfio: the guest is the ${c.guest}, the ${c.creator} creates the window`, () => runCell(c));
    }
    it('a guest reset (system_reset) while it writes: the host sees the peer gone, resets the link and serves the rebooted guest; no acknowledged write is lost', () =>
      runCell({ guest: 'driver', creator: 'host', mode: 'msix' }, resetMidTraffic, 'reset'));
  },
);
