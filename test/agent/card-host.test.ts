/**
 * vop-card (native/tools/vop-card.c, the static card-side binary) as the far end of an agent's
 * pci-bar link, both on this host and both peers of a real vop-ivshmem-server: the link names one
 * agent endpoint (the card is no agent); the agent holds the memory and is the device side; the
 * card attaches as the driver, configured by its key=value file. A console carries bytes both ways
 * between the agent's pty and the card's, and a disk written through the card's NBD export lands
 * in the agent's backing file and reads back. A bad card config is refused naming line and key.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, PciDoorbellMode, PciBarTransport, Role, type Device, type Link } from '../../lib/proto/types';
import { waitFor } from '../controller/fleet-helpers';
import { NBD_CMD, NbdClient } from '../devices/helpers';
import { cardConfig, hostCardBinary, PtyEnd, readAt, sha256, startCardAgent } from '../helpers/card';
import { IvshmemServer } from '../helpers/ivshmem';
import { tempDir, type ServerProcess } from '../helpers/servers';
import { type Agent, makeLink } from './helpers';

const MIB = 1024 * 1024;

async function until(what: string, pred: () => boolean, ms = 30_000): Promise<void> {
  await waitFor(what, pred, ms, 20);
}

describe('vop-card as the far end of an agent pci-bar link (host, ivshmem)', () => {
  const dir = tempDir('card');
  const stateA = tempDir('card-a');
  const socket = path.join(dir, 'ivshmem.sock');
  const disk = path.join(dir, 'disk.img');
  const nbdSock = path.join(dir, 'card-nbd.sock');
  let server: IvshmemServer;
  let srv: ServerProcess;
  let agent: Agent;
  let card: ChildProcess | null = null;
  let cardOut = '';
  let cardErr = '';
  let bin: string;

  const devices: Device[] = [
    {
      name: 'con0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'console',
        value: {
          deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'host.pty') } } },
          // The card's side, as its config file says (the agent serves only its own role).
          driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'card.pty') } } },
          log: undefined,
        },
      },
    },
    {
      name: 'disk0',
      // 8 requests of 512 KiB in flight: the window fits in the server's 16 MiB.
      queueSize: 32,
      disableEventIdx: false,
      kind: {
        $case: 'blk',
        value: {
          backing: { path: disk, readOnly: false, directIo: false, serial: 'card-test' },
          export: { unixSocket: nbdSock, tcpListen: '', exportName: 'vop' },
        },
      },
    },
  ];

  before(async () => {
    bin = hostCardBinary();
    const fd = openSync(disk, 'w', 0o600);
    ftruncateSync(fd, 16 * MIB);
    closeSync(fd);
    server = await IvshmemServer.start({ socket, sizeBytes: 16 * MIB, vectors: 1 });
    ({ srv, agent } = await startCardAgent(dir, { stateDir: stateA }));
  });
  after(async () => {
    if (card && card.exitCode === null) {
      card.kill('SIGTERM');
      await new Promise((r) => card?.once('exit', r));
    }
    agent?.close();
    await srv?.stop('SIGTERM');
    await server?.stop();
    for (const d of [dir, stateA]) rmSync(d, { recursive: true, force: true });
  });

  it('refuses a config with an unknown or bad key, naming the line and the key', () => {
    const bad = path.join(dir, 'bad.conf');
    writeFileSync(bad, 'window.access=ivshmem\nwindow.path=/x\nwindow.offset=12\n');
    const r = spawnSync(bin, ['--config', bad, '--check'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /line 3: window\.offset: must be a multiple of 4096/);
    writeFileSync(bad, 'window.access=ivshmem\nwindow.path=/x\ndevice.con0.kind=console\ndevice.con0.colour=red\n');
    const r2 = spawnSync(bin, ['--config', bad, '--check'], { encoding: 'utf8' });
    assert.equal(r2.status, 1);
    assert.match(r2.stderr, /line 4: device\.con0\.colour: unknown key for this kind/);
  });

  it('carries a console both ways and a disk written through the card lands in the agent backing file', async () => {
    const link: Link = makeLink('card', { devices });
    link.spec = {
      ...link.spec!,
      // One agent endpoint: the far end is vop-card, named through the transport.
      endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
      transport: {
        kind: {
          $case: 'pciBar',
          value: PciBarTransport.fromPartial({
            bar: 2,
            // On this host the card joins the server too (in a guest it maps BAR2: test/guest/card.test.ts).
            memoryHolder: Role.ROLE_UNSPECIFIED,
            sizeBytes: BigInt(16 * MIB), // the agent creates the window: the server's whole memory
            deviceAccess: { ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT },
            // The card's own access, as its config file says (validated; the agent does not use it).
            driverAccess: { ivshmemSocket: socket, doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT },
          }),
        },
      },
    };
    await agent.apply(link);
    const conf = path.join(dir, 'card.conf');
    writeFileSync(
      conf,
      cardConfig(
        { access: 'ivshmem', path: socket, side: 'attacher', doorbell: 'interrupt' },
        [
          { name: 'con0', kind: 'console', role: 'driver', keys: { pty: path.join(dir, 'card.pty') } },
          { name: 'disk0', kind: 'blk', role: 'driver', keys: { queue_size: 32, nbd_unix: nbdSock } },
        ],
        'the card side of link "card"',
      ),
    );
    card = spawn(bin, ['--config', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    card.stdout?.setEncoding('utf8').on('data', (c: string) => (cardOut += c));
    card.stderr?.setEncoding('utf8').on('data', (c: string) => (cardErr += c));
    await until('card ready', () => /ready id=\d+ peer=\d+/.test(cardOut) || card?.exitCode !== null, 60_000).catch(
      async (e: unknown) => {
        const st = (await agent.get('card')).link?.status;
        throw new Error(
          `${String(e)}; card: ${cardOut} ${cardErr}; agent: ${JSON.stringify(st?.conditions.map((c) => c.message))}`,
        );
      },
    );
    assert.match(cardOut, /ready id=\d+/, `card: ${cardOut} ${cardErr}`);
    const l = await agent.waitPhase('card', LinkPhase.LINK_PHASE_READY, 30_000);
    assert.equal(l.status?.transport?.doorbell, 'eventfd');
    assert.ok((l.status?.transport?.peerId ?? -1) >= 0, 'the agent met the card on the server');

    await until('ptys', () => existsSync(path.join(dir, 'card.pty')) && existsSync(path.join(dir, 'host.pty')));
    const host = new PtyEnd(path.join(dir, 'host.pty'));
    const cpty = new PtyEnd(path.join(dir, 'card.pty'));
    try {
      cpty.write(Buffer.from('card login: '));
      await until('card to host', () => host.got.toString().includes('card login: '));
      host.write(Buffer.from('root\n'));
      await until('host to card', () => cpty.got.toString().includes('root'));
    } finally {
      host.close();
      cpty.close();
    }

    const nbd = await NbdClient.connect(nbdSock);
    try {
      assert.equal(nbd.size, BigInt(16 * MIB));
      const data = randomBytes(256 * 1024);
      const off = 3 * MIB;
      assert.equal((await nbd.request(NBD_CMD.WRITE, BigInt(off), data.length, data)).error, 0);
      assert.equal((await nbd.request(NBD_CMD.FLUSH, 0n, 0)).error, 0);
      const back = await nbd.request(NBD_CMD.READ, BigInt(off), data.length);
      assert.equal(back.error, 0);
      assert.equal(sha256(back.data ?? Buffer.alloc(0)), sha256(data), 'reads back through the link');
      assert.equal(sha256(readAt(disk, off, data.length)), sha256(data), "in the agent's backing file");
    } finally {
      await nbd.close();
    }

    card.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => card?.once('exit', (c) => r(c)));
    assert.equal(code, 0, cardErr);
    await agent.delete('card');
    assert.ok(readFileSync(disk).length === 16 * MIB);
  });
});
