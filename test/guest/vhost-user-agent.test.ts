/**
 * VM-to-VM through one agent: two QEMU guests, each with a stock virtio-net device whose
 * back-end is a vhost_user link of the same real agent (server mode, sockets in its socket
 * directory). The two devices' backends are datagram sockets pointed at each other, so the
 * guests are joined directly, with no TAP in between. They ping each other both ways; then the
 * agent is killed with -9 and started again on the same state directory: it restores both links,
 * both QEMUs (reconnect=1) come back on their own, and the guests ping each other again. Guest 0
 * also has a stock virtio-blk on a third vhost_user link (a file in the agent's disk directory):
 * a write of 8 MiB with fsync is running when the agent dies (each write held 20 ms in the device, the
 * kill after the first completes); the restarted agent re-executes the requests the dead one had
 * taken (recovered > 0, from its journal in QEMU's inflight area), the write completes and the host
 * file holds it.
 */
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { LinkPhase, Role, type Device, type Link } from '../../lib/proto/types';
import { Agent } from '../agent/helpers';
import { sh } from '../devices/helpers';
import { Guest, guestSkip } from '../helpers/guest';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

const IP = ['10.199.8.1', '10.199.8.2'];
const MAC = ['52:54:00:00:08:01', '52:54:00:00:08:02'];

function link(name: string, socketPath: string, device: Device): Link {
  return {
    meta: {
      name,
      uid: '',
      generation: 0n,
      resourceVersion: '',
      labels: {},
      annotations: {},
      managedBy: '',
    } as unknown as Link['meta'],
    spec: {
      endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
      transport: {
        kind: {
          $case: 'vhostUser',
          value: { socketPath, client: false, socketMode: 0, socketGroup: '', queuePairs: 0 },
        },
      },
      devices: [device],
    },
    status: undefined,
  };
}

function blkDevice(file: string): Device {
  return {
    name: 'disk0',
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'blk',
      value: { backing: { path: file, readOnly: false, directIo: false, serial: '' }, export: undefined },
    },
  };
}

function dgramNet(local: string, peer: string): Device {
  return {
    name: 'eth0',
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'net',
      value: {
        mac: '',
        mtu: 0,
        offloads: false,
        deviceBackend: { kind: { $case: 'datagram', value: { path: local, peerPath: peer } } },
        driverFrontend: undefined,
      },
    },
  };
}

describe('two QEMU guests joined by one agent over vhost-user (no TAP)', { skip: guestSkip() }, () => {
  let dir: string;
  let stateDir: string;
  let socketDir: string;
  let srv: ServerProcess;
  let agent: Agent;
  const guests: Guest[] = [];
  let disk: string;

  const startAgent = async (): Promise<void> => {
    srv = await startServer(
      'agent',
      [
        '--node-name',
        'host-a',
        '--rendezvous-dir',
        path.join(dir, 'rdv'),
        '--socket-dir',
        socketDir,
        '--disk-dir',
        path.join(dir, 'disks'),
      ],
      // Each blk write sleeps 20 ms in the device's I/O thread (a test hook of native/devices/dev_blk.c),
      // so that requests are inside the device (popped and journaled, not yet done) when it dies.
      { stateDir, env: { VOP_BLK_TEST_DELAY_US: '20000' } },
    );
    agent = new Agent(srv.admin);
  };

  before(async () => {
    dir = tempDir('vhost-vm2vm');
    stateDir = path.join(dir, 'state');
    socketDir = path.join(dir, 'sockets');
    sh('mkdir', ['-p', path.join(dir, 'disks')]);
    disk = path.join(dir, 'disks', 'vm0.img');
    writeFileSync(disk, Buffer.alloc(32 << 20));
    await startAgent();
    await agent.apply(link('vm0-disk', path.join(socketDir, 'vm0-disk.sock'), blkDevice(disk)));
    const d = [path.join(socketDir, 'vm0.dgram'), path.join(socketDir, 'vm1.dgram')];
    for (const i of [0, 1]) {
      await agent.apply(link(`vm${i}-net`, path.join(socketDir, `vm${i}.sock`), dgramNet(d[i] ?? '', d[1 - i] ?? '')));
      await agent.waitPhase(`vm${i}-net`, LinkPhase.LINK_PHASE_CONNECTING, 20_000);
    }
    const boot = (i: number): Promise<Guest> =>
      Guest.boot({
        name: `vhost-vm2vm-${i}`,
        sharedMemory: true,
        bootTimeoutMs: 120_000,
        qemuArgs: [
          '-chardev',
          `socket,id=vun,path=${path.join(socketDir, `vm${i}.sock`)},reconnect=1`,
          '-netdev',
          'vhost-user,id=vn0,chardev=vun',
          '-device',
          `virtio-net-pci,netdev=vn0,mac=${MAC[i] ?? ''},vectors=0,addr=0x7`,
          ...(i === 0
            ? [
                '-chardev',
                `socket,id=vub,path=${path.join(socketDir, 'vm0-disk.sock')},reconnect=1`,
                '-device',
                'vhost-user-blk-pci,chardev=vub,num-queues=1,addr=0x8',
              ]
            : []),
        ],
      });
    guests.push(...(await Promise.all([boot(0), boot(1)])));
    for (const i of [0, 1]) {
      const g = guests[i] as Guest;
      const eth = (await g.run(`grep -l ${MAC[i] ?? ''} /sys/class/net/*/address`)).trim().split('/')[4] ?? '';
      await g.run(`ip addr add ${IP[i] ?? ''}/24 dev ${eth} && ip link set ${eth} up`);
      await agent.waitPhase(`vm${i}-net`, LinkPhase.LINK_PHASE_READY, 60_000);
    }
  });

  afterEach((t) => guests.forEach((g) => g.noteTest(t)));

  after(async () => {
    await Promise.all(guests.map((g) => g.close()));
    agent?.close();
    await srv?.stop('SIGTERM');
    if (dir) sh('rm', ['-rf', dir]);
  });

  const pingBoth = async (): Promise<void> => {
    const [a, b] = guests as [Guest, Guest];
    assert.match(await a.run(`ping -c 3 -W 5 ${IP[1] ?? ''}`, { timeoutMs: 60_000 }), /3 packets received/);
    assert.match(await b.run(`ping -c 3 -W 5 ${IP[0] ?? ''}`, { timeoutMs: 60_000 }), /3 packets received/);
  };

  it('the guests ping each other through the agent, both ways', async () => {
    await pingBoth();
    const s = (await agent.stats('vm0-net')).devices[0]?.counters ?? {};
    assert.ok((s.tx_frames ?? 0n) >= 3n && (s.rx_frames ?? 0n) >= 3n, JSON.stringify(Object.keys(s)));
  });

  it('the agent killed with -9 mid-write and restarted: the links come back, QEMU reconnects, the write completes, pings flow', async () => {
    const g = guests[0] as Guest;
    await agent.waitPhase('vm0-disk', LinkPhase.LINK_PHASE_READY, 60_000);
    const dev = (await g.run('ls /sys/block | grep vd')).trim().split('\n')[0] ?? '';
    await g.run('dd if=/dev/urandom of=/tmp/pat bs=1M count=8 2>/dev/null');
    const sum = (await g.run('sha256sum /tmp/pat')).split(' ')[0] ?? '';
    const writesBefore = (await agent.stats('vm0-disk')).devices[0]?.counters.writes ?? 0n;
    const writer = g.spawn(`dd if=/tmp/pat of=/dev/${dev} bs=64k seek=64 conv=fsync 2>/dev/null && echo written`);
    // kill once the device completed its first write of this dd: the others are in flight then
    for (let i = 0; i < 3000; i++) {
      if (((await agent.stats('vm0-disk')).devices[0]?.counters.writes ?? 0n) > writesBefore) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    agent.close();
    await srv.stop('SIGKILL');
    await startAgent();
    for (const l of ['vm0-net', 'vm1-net', 'vm0-disk']) await agent.waitPhase(l, LinkPhase.LINK_PHASE_READY, 90_000);
    await writer.waitForOutput(/written/, 120_000);
    assert.equal((await writer.exited).code, 0);
    await g.run('echo 3 > /proc/sys/vm/drop_caches');
    assert.equal(
      (await g.run(`dd if=/dev/${dev} bs=64k skip=64 count=128 2>/dev/null | sha256sum`)).split(' ')[0],
      sum,
    );
    // recovered > 0: requests the killed agent had popped and not completed were re-executed by the
    // restarted one from the journal in QEMU's inflight area (QEMU itself resubmits nothing)
    const c = (await agent.stats('vm0-disk')).devices[0]?.counters ?? {};
    console.log(`restarted agent's blk counters: writes=${c.writes} flushes=${c.flushes} recovered=${c.recovered}`);
    assert.ok((c.recovered ?? 0n) > 0n, `no request was in flight at the kill: recovered=${c.recovered}`);
    const host = readFileSync(disk).subarray(4 << 20, 12 << 20);
    assert.equal(createHash('sha256').update(host).digest('hex'), sum);
    await pingBoth();
  });
});
