/**
 * Two real agent processes on a pci-bar link (docs/transports.md), both on this host, sharing the
 * memory of a real vop-ivshmem-server: the host agent is a peer of the server and holds the
 * memory; the other maps the server's memory file as its BAR (as a card maps BAR2), or joins the
 * server as one more peer. A virtio-console with a pty on each side carries bytes both ways; the
 * status names the window, the BAR, the peer ids and the doorbell mode; /metrics counts the
 * doorbells; a spec the agent cannot serve is refused naming the field; deleting the link retires
 * the window in the server's memory and leaves the server up.
 */
import assert from 'node:assert/strict';
import {
  closeSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tty from 'node:tty';

import { status } from '@grpc/grpc-js';

import {
  LinkPhase,
  PciDoorbellMode,
  Role,
  type Device,
  type Link,
  type PciBarAccess,
  type PciBarTransport,
} from '../../lib/proto/types';
import { waitFor } from '../controller/fleet-helpers';
import { decodeStatus, expectGrpcError } from '../helpers/grpc';
import { IvshmemServer } from '../helpers/ivshmem';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink } from './helpers';

const MIB = 1024 * 1024;
const VOP_WIN_MAGIC = 0x4e57504f;

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

function access(over: Partial<PciBarAccess>): PciBarAccess {
  return {
    ivshmemSocket: '',
    pciAddress: '',
    barPath: '',
    doorbellPath: '',
    writeCombining: false,
    doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_UNSPECIFIED,
    peerId: undefined,
    ...over,
  };
}

function pciTransport(over: Partial<PciBarTransport>): PciBarTransport {
  return {
    pciAddress: '',
    bar: 2,
    offsetBytes: 0n,
    sizeBytes: 0n,
    doorbellBar: 0,
    doorbellOffsetBytes: 0n,
    memoryHolder: Role.ROLE_UNSPECIFIED,
    windowCreator: Role.ROLE_UNSPECIFIED,
    deviceAccess: undefined,
    driverAccess: undefined,
    vector: 0,
    vectors: 0,
    pollMaxUs: 2000,
    ...over,
  };
}

function pciLink(name: string, t: PciBarTransport, devices: Device[]): Link {
  const l = makeLink(name, { devices });
  l.spec = { ...l.spec!, transport: { kind: { $case: 'pciBar', value: t } } };
  return l;
}

function consoleDevice(dir: string, tag: string): Device {
  return {
    name: 'con0',
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'console',
      value: {
        deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, `${tag}-host.pty`) } } },
        driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, `${tag}-card.pty`) } } },
        log: undefined,
      },
    },
  };
}

/** The window magic at `offset` in the server's memory file. */
function magicAt(file: string, offset = 0): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, offset);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

async function until(what: string, pred: () => boolean, ms = 20_000): Promise<void> {
  await waitFor(what, pred, ms, 20);
}

/** Bytes typed on one pty arrive on the other, both ways. */
async function consoleBothWays(dir: string, tag: string): Promise<void> {
  await until(
    'both ptys',
    () => existsSync(path.join(dir, `${tag}-card.pty`)) && existsSync(path.join(dir, `${tag}-host.pty`)),
  );
  const host = new PtyEnd(path.join(dir, `${tag}-host.pty`));
  const card = new PtyEnd(path.join(dir, `${tag}-card.pty`));
  try {
    card.write(Buffer.from(`card says hello over ${tag}\n`));
    await until('card to host', () => host.got.toString().includes(`card says hello over ${tag}`));
    host.write(Buffer.from(`host answers over ${tag}\n`));
    await until('host to card', () => card.got.toString().includes(`host answers over ${tag}`));
  } finally {
    host.close();
    card.close();
  }
}

async function scrape(srv: ServerProcess): Promise<string> {
  const r = await fetch(`http://${srv.metrics}/metrics`);
  return r.text();
}

function sample(text: string, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.split(' ').pop());
  }
  return NaN;
}

describe('two agents on a pci-bar link through an ivshmem server', () => {
  const dir = tempDir('pci');
  const stateA = tempDir('pci-a');
  const stateB = tempDir('pci-b');
  const socket = path.join(dir, 'ivshmem.sock');
  const memFile = path.join(dir, 'ivshmem.mem');
  let server: IvshmemServer;
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  const roots = ['--socket-dir', dir, '--pty-dir', dir, '--bar-dir', dir];

  before(async () => {
    server = await IvshmemServer.start({ socket, sizeBytes: 8 * MIB, vectors: 1, shmPath: memFile });
    srvA = await startServer('agent', ['--node-name', 'host-a', ...roots], { stateDir: stateA });
    srvB = await startServer('agent', ['--node-name', 'card-b', ...roots], { stateDir: stateB });
    a = new Agent(srvA.admin);
    b = new Agent(srvB.admin);
  });
  after(async () => {
    a?.close();
    b?.close();
    await Promise.all([srvA?.stop('SIGTERM'), srvB?.stop('SIGTERM')]);
    await server?.stop();
    for (const d of [dir, stateA, stateB]) rmSync(d, { recursive: true, force: true });
  });

  it('refuses a pci-bar spec it cannot serve, naming the field, and applies nothing', async () => {
    const bad = pciLink(
      'bad',
      pciTransport({
        memoryHolder: Role.ROLE_DEVICE,
        // The holder must join the server; a BAR file has no interrupt path.
        deviceAccess: access({ barPath: memFile }),
        driverAccess: access({ barPath: memFile, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT }),
      }),
      [consoleDevice(dir, 'bad')],
    );
    const err = decodeStatus(await expectGrpcError(a.apply(bad)));
    assert.equal(err.code, status.INVALID_ARGUMENT);
    const fields = err.fieldViolations.map((v) => v.field);
    assert.ok(fields.includes('link.spec.transport.pci_bar.device_access'), fields.join(', '));
    assert.ok(fields.includes('link.spec.transport.pci_bar.driver_access.doorbell'), fields.join(', '));
    // A BAR file outside the agent's bar directories.
    const outside = pciLink(
      'outside',
      pciTransport({
        memoryHolder: Role.ROLE_DEVICE,
        deviceAccess: access({ ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
        driverAccess: access({ barPath: '/dev/mem', doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
      }),
      [consoleDevice(dir, 'outside')],
    );
    const err2 = await expectGrpcError(b.apply(outside));
    assert.equal(err2.code, status.INVALID_ARGUMENT);
    assert.match(err2.details, /driver_access\.bar_path.*hostPaths\.barDirs/s);
    // The creator's size_bytes must hold its devices.
    const small = pciLink(
      'small',
      pciTransport({
        sizeBytes: BigInt(64 * 1024),
        deviceAccess: access({ ivshmemSocket: socket }),
        driverAccess: access({ ivshmemSocket: socket }),
      }),
      [consoleDevice(dir, 'small')],
    );
    const err3 = decodeStatus(await expectGrpcError(a.apply(small)));
    assert.equal(err3.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      err3.fieldViolations.map((v) => v.field),
      ['link.spec.transport.pci_bar.size_bytes'],
    );
    assert.match(err3.fieldViolations[0]?.description ?? '', /needs \d+ bytes, more than size_bytes 65536/);
    // size_bytes 0 ("the rest of the memory") is known only once mapped: a creator must name a size.
    const zero = pciLink(
      'zero',
      pciTransport({
        sizeBytes: 0n,
        deviceAccess: access({ ivshmemSocket: socket }),
        driverAccess: access({ ivshmemSocket: socket }),
      }),
      [consoleDevice(dir, 'zero')],
    );
    const err4 = decodeStatus(await expectGrpcError(a.apply(zero)));
    assert.equal(err4.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      err4.fieldViolations.map((v) => v.field),
      ['link.spec.transport.pci_bar.size_bytes'],
    );
    assert.match(
      err4.fieldViolations[0]?.description ?? '',
      /must be set when this agent creates the window.*need \d+ bytes/,
    );
    assert.equal((await a.list()).links.length, 0, 'nothing applied on the device side');
    assert.equal((await b.list()).links.length, 0, 'nothing applied on the driver side');
    assert.deepEqual(server.connected(), [], 'no agent joined the server');
  });

  it('carries a console both ways when the host holds the memory and the card maps it as its BAR (polled)', async () => {
    const link = pciLink(
      'mapped',
      pciTransport({
        memoryHolder: Role.ROLE_DEVICE,
        sizeBytes: BigInt(8 * MIB), // the whole memory of the server
        // The card side cannot ring (no doorbell registers in a file): both sides poll.
        deviceAccess: access({ ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
        driverAccess: access({ barPath: memFile, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
      }),
      [consoleDevice(dir, 'mapped')],
    );
    await Promise.all([a.apply(link), b.apply(link)]);
    const la = await a.waitPhase('mapped', LinkPhase.LINK_PHASE_READY, 30_000);
    const lb = await b.waitPhase('mapped', LinkPhase.LINK_PHASE_READY, 30_000);
    assert.equal(magicAt(memFile), VOP_WIN_MAGIC, 'the window lives in the server memory');
    const ta = la.status?.transport;
    assert.equal(ta?.kind, 'pci-bar');
    assert.equal(ta?.bar, 'ivshmem');
    assert.equal(ta?.doorbell, 'poll');
    assert.equal(ta?.side, 'creator');
    assert.equal(ta?.sizeBytes, BigInt(8 * MIB));
    assert.match(ta?.window ?? '', /^ivshmem /);
    assert.ok((ta?.ownId ?? -1) >= 0, 'the holder has an ivshmem id');
    const tb = lb.status?.transport;
    assert.equal(tb?.bar, memFile);
    assert.equal(tb?.side, 'attacher');
    assert.equal(tb?.mapping, 'uc', 'a BAR file is mapped as uncached BAR memory');
    await consoleBothWays(dir, 'mapped');
    const m = await scrape(srvB);
    assert.ok(sample(m, 'vop_link_doorbell_polls_total', { link: 'mapped' }) > 0, 'the polled side counts its looks');

    await a.delete('mapped');
    await b.delete('mapped');
    await until('window retired', () => magicAt(memFile) === 0);
    assert.ok(server.running, 'the server stays up');
  });

  it('opens a BAR file beneath hostPaths.barDirs: a symlink there that leads out is not mapped', async () => {
    // Apply checks the path beneath the root (nothing there yet: accepted); a symlink out of the
    // root put there afterwards is refused by the open itself (openat2 RESOLVE_BENEATH).
    const outside = tempDir('pci-outside');
    const target = path.join(outside, 'bar.mem');
    writeFileSync(target, Buffer.alloc(4 * MIB, 0xa5));
    const before = readFileSync(target);
    const link = path.join(dir, 'evil-resource2');
    try {
      const l = pciLink(
        'evil',
        pciTransport({
          memoryHolder: Role.ROLE_DEVICE,
          deviceAccess: access({ ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
          driverAccess: access({ barPath: link, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL }),
        }),
        [consoleDevice(dir, 'evil')],
      );
      await b.apply(l);
      symlinkSync(target, link);
      let msg = '';
      await waitFor(
        'the open refused',
        async () => {
          const r = await b.get('evil');
          msg = (r.link?.status?.conditions ?? []).map((c) => c.message).join(' | ');
          return /EXDEV|cross-device/i.test(msg);
        },
        30_000,
        100,
      ).catch((e: Error) => assert.fail(`${e.message}; conditions: ${msg}`));
      assert.match(msg, /evil-resource2/, msg);
      assert.notEqual((await b.get('evil')).link?.status?.phase, LinkPhase.LINK_PHASE_READY);
      await b.delete('evil');
      assert.ok(readFileSync(target).equals(before), 'the file outside the root was never touched');
    } finally {
      rmSync(link, { force: true });
      rmSync(outside, { recursive: true, force: true });
    }
  });

  it('carries a console both ways with both agents as ivshmem peers, interrupts, and the driver creating the window', async () => {
    const link = pciLink(
      'peers',
      pciTransport({
        // Neither holds the memory: both are peers of the server (two guests on one region).
        memoryHolder: Role.ROLE_UNSPECIFIED,
        windowCreator: Role.ROLE_DRIVER,
        offsetBytes: BigInt(1 * MIB),
        sizeBytes: BigInt(6 * MIB),
        deviceAccess: access({ ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT }),
        driverAccess: access({ ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT }),
      }),
      [consoleDevice(dir, 'peers')],
    );
    await Promise.all([a.apply(link), b.apply(link)]);
    const la = await a.waitPhase('peers', LinkPhase.LINK_PHASE_READY, 30_000);
    const lb = await b.waitPhase('peers', LinkPhase.LINK_PHASE_READY, 30_000);
    assert.equal(magicAt(memFile, MIB), VOP_WIN_MAGIC, 'the window starts at offset_bytes');
    assert.equal(lb.status?.transport?.side, 'creator', 'window_creator ROLE_DRIVER: the driver lays it out');
    assert.equal(la.status?.transport?.side, 'attacher');
    assert.equal(la.status?.transport?.doorbell, 'eventfd');
    assert.equal(la.status?.transport?.sizeBytes, BigInt(6 * MIB));
    await consoleBothWays(dir, 'peers');
    // Each side now knows the other's id: its own is the other's peer id.
    const [ga, gb] = [(await a.get('peers')).link?.status?.transport, (await b.get('peers')).link?.status?.transport];
    assert.equal(ga?.peerId, gb?.ownId, "the device side rings the driver's id");
    assert.equal(gb?.peerId, ga?.ownId, "the driver side rings the device's id");
    const [ma, mb] = [await scrape(srvA), await scrape(srvB)];
    const got = (m: string, d: string): number =>
      sample(m, 'vop_link_doorbells_total', { link: 'peers', vector: '0', direction: d });
    assert.ok(got(ma, 'received') + got(mb, 'received') > 0, 'interrupts (eventfd doorbells) woke a side');
    assert.ok(got(ma, 'sent') + got(mb, 'sent') > 0, 'doorbells were sent');
    await b.delete('peers');
    await a.delete('peers');
    await until('window retired', () => magicAt(memFile, MIB) === 0);
  });
});
