/**
 * Every device field of a link spec reaches the data plane (issue 12 item 2), seen by
 * two real agents and in the window they share: queue_size is the size of every ring
 * (console, blk, net; 0 means 256); disable_event_idx keeps VIRTIO_F_EVENT_IDX out of
 * a device's negotiation and its rings never carry a used_event/avail_event write;
 * tap.netns puts each side's TAP into the named network namespace (and frames cross
 * between them); offloads sets the TAPs' offloads (ethtool -k) and what the device
 * offers. The TAP tests need root, /dev/net/tun, ip and ethtool: a developer's machine
 * without them skips them, saying why; under CI (the `CI` variable set) that is a
 * failure.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { status as GrpcStatus } from '@grpc/grpc-js';

import { devIdOf } from '../../agent/src/backends/device-backend';
import { LinkPhase, type Device, type Link } from '../../lib/proto/types';
import { Netns, sh } from '../devices/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink } from './helpers';

const EVENT_IDX = 29n;
const NET_F_CSUM = 0n;
const NET_F_HOST_TSO4 = 11n;

/** Why the TAP tests cannot run here, or '' when they can. */
function tapPrerequisite(): string {
  if (process.getuid?.() !== 0) return 'not root';
  if (sh('test', ['-c', '/dev/net/tun']).code !== 0) return 'no /dev/net/tun';
  if (sh('ip', ['-V']).code !== 0) return 'no ip (iproute2)';
  if (sh('ethtool', ['--version']).code !== 0) return 'no ethtool (.ci/apt-packages)';
  return '';
}
const TAP_MISSING = tapPrerequisite();
if (TAP_MISSING !== '' && process.env.CI) throw new Error(`CI: the TAP field tests need root and TAPs: ${TAP_MISSING}`);

// ------------------------------------------------------------------ the window, read as the ABI says

/** One live device-table entry of a window file (native/include/vop/layout.h, layout major 2). */
interface EntryView {
  devId: number;
  featuresOffered: bigint;
  featuresAccepted: bigint;
  queues: { size: number; usedEvent: number; availEvent: number }[];
}

/**
 * The live entries of the window at file: header magic "OPWN" and layout major 2, the
 * device table at 0x1000 (64-byte header, entries of entry_size), each entry's device side
 * at +30, its two side blocks at +128 (128 bytes each: the driver side's accepted features
 * u64 @16), its queue descriptors at +384 (48 bytes: size u16 @0, avail_off u64 @16,
 * used_off u64 @24); a
 * ring's used_event is the u16 after avail->ring[size], its avail_event the u16 after
 * used->ring[size].
 */
function readEntries(file: string): EntryView[] {
  const fd = openSync(file, 'r');
  const at = (off: number, len: number): Buffer => {
    const b = Buffer.alloc(len);
    assert.equal(readSync(fd, b, 0, len, off), len, `window read at ${off}`);
    return b;
  };
  try {
    const hdr = at(0, 8);
    assert.equal(hdr.readUInt32LE(0), 0x4e57504f, 'window magic');
    assert.equal(hdr.readUInt16LE(4), 2, 'layout major 2 (update this reader with the layout)');
    const dt = at(0x1000, 16);
    const entrySize = dt.readUInt32LE(4);
    const maxEntries = dt.readUInt32LE(8);
    const out: EntryView[] = [];
    for (let i = 0; i < maxEntries; i++) {
      const e = at(0x1000 + 64 + i * entrySize, entrySize);
      if (e.readUInt32LE(0) !== 1) continue; // VOP_DEV_LIVE
      const nq = e.readUInt16LE(28);
      const driverSide = (e.readUInt8(30) & 1) ^ 1;
      const queues = [];
      for (let k = 0; k < nq; k++) {
        const q = 384 + k * 48;
        const size = e.readUInt16LE(q);
        const avail = Number(e.readBigUInt64LE(q + 16));
        const used = Number(e.readBigUInt64LE(q + 24));
        queues.push({
          size,
          usedEvent: at(avail + 4 + 2 * size, 2).readUInt16LE(0),
          availEvent: at(used + 4 + 8 * size, 2).readUInt16LE(0),
        });
      }
      out.push({
        devId: e.readUInt32LE(8),
        featuresOffered: e.readBigUInt64LE(16),
        featuresAccepted: e.readBigUInt64LE(128 + 128 * driverSide + 16),
        queues,
      });
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

function entryOf(file: string, device: string): EntryView {
  const e = readEntries(file).find((x) => x.devId === devIdOf(device));
  assert.ok(e, `device ${device} in the window's table`);
  return e;
}

function bit(v: bigint, b: bigint): boolean {
  return ((v >> b) & 1n) === 1n;
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ------------------------------------------------------------------ devices

function consoleDevice(name: string, dir: string, queueSize: number, disableEventIdx: boolean): Device {
  return {
    name,
    queueSize,
    disableEventIdx,
    kind: {
      $case: 'console',
      value: {
        deviceBackend: undefined,
        driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, `${name}.pty`) } } },
        log: { path: path.join(dir, `${name}.log`), maxBytes: 0n, maxFiles: 0 },
      },
    },
  };
}

function blkDevice(name: string, dir: string, queueSize: number, disableEventIdx: boolean): Device {
  return {
    name,
    queueSize,
    disableEventIdx,
    kind: {
      $case: 'blk',
      value: {
        backing: { path: path.join(dir, 'disk.img'), readOnly: false, directIo: false, serial: '' },
        export: { unixSocket: path.join(dir, `${name}.nbd`), tcpListen: '', exportName: '' },
      },
    },
  };
}

function netDatagramDevice(name: string, dir: string, queueSize: number, disableEventIdx: boolean): Device {
  const a = path.join(dir, `${name}-a.sock`);
  const b = path.join(dir, `${name}-b.sock`);
  return {
    name,
    queueSize,
    disableEventIdx,
    kind: {
      $case: 'net',
      value: {
        mac: '',
        mtu: 0,
        offloads: false,
        deviceBackend: { kind: { $case: 'datagram', value: { path: a, peerPath: b } } },
        driverFrontend: { kind: { $case: 'datagram', value: { path: b, peerPath: a } } },
      },
    },
  };
}

function netTapDevice(
  name: string,
  offloads: boolean,
  nsDevice: string,
  nsDriver: string,
  taps: [string, string],
): Device {
  return {
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'net',
      value: {
        mac: '',
        mtu: 0,
        offloads,
        deviceBackend: { kind: { $case: 'tap', value: { name: taps[0], netns: nsDevice } } },
        driverFrontend: { kind: { $case: 'tap', value: { name: taps[1], netns: nsDriver } } },
      },
    },
  };
}

describe('spec fields reach the data plane', () => {
  const dir = tempDir('fields');
  const rdv = tempDir('rdv-fields');
  const tag = `vf${process.pid % 100000}`;
  const ns = TAP_MISSING === '' ? new Netns(tag, 2) : null;
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;

  before(async () => {
    sh('truncate', ['-s', '16M', path.join(dir, 'disk.img')]);
    const roots = ['--disk-dir', dir, '--socket-dir', dir, '--log-dir', dir, '--pty-dir', dir, '--rendezvous-dir', rdv];
    const netns = ns ? ['--netns', ns.names.join(',')] : [];
    srvA = await startServer('agent', ['--node-name', 'host-a', ...roots, ...netns]);
    srvB = await startServer('agent', ['--node-name', 'card-b', ...roots, ...netns]);
    a = new Agent(srvA.admin);
    b = new Agent(srvB.admin);
  });

  after(async () => {
    a.close();
    b.close();
    await srvA.stop();
    await srvB.stop();
    ns?.remove();
    rmSync(dir, { recursive: true, force: true });
    rmSync(rdv, { recursive: true, force: true });
  });

  async function applyBoth(link: Link): Promise<void> {
    await a.apply(link);
    await b.apply(link);
    await a.waitPhase(link.meta?.name ?? '', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase(link.meta?.name ?? '', LinkPhase.LINK_PHASE_READY, 30_000);
  }

  async function deleteBoth(name: string): Promise<void> {
    await a.delete(name);
    await b.delete(name);
  }

  it('queue_size is the ring size of every device kind, and 0 means 256', async () => {
    const devices = [
      consoleDevice('con0', dir, 128, false),
      consoleDevice('con1', dir, 0, false),
      blkDevice('disk0', dir, 64, false),
      netDatagramDevice('net0', dir, 512, false),
    ];
    const link = makeLink('qsize', { devices });
    await applyBoth(link);
    try {
      const want: Record<string, number[]> = { con0: [128, 128], con1: [256, 256], disk0: [64], net0: [512, 512] };
      for (const agent of [a, b]) {
        const st = await agent.stats('qsize');
        for (const [name, sizes] of Object.entries(want)) {
          const d = st.devices.find((x) => x.device === name);
          assert.deepEqual(
            d?.queues.map((q) => q.size),
            sizes,
            `GetStats queue sizes of ${name}`,
          );
        }
      }
      const win = path.join(rdv, 'qsize.win');
      for (const [name, sizes] of Object.entries(want))
        assert.deepEqual(
          entryOf(win, name).queues.map((q) => q.size),
          sizes,
          `ring sizes of ${name} in the window`,
        );
    } finally {
      await deleteBoth('qsize');
    }
  });

  it('a blk queue smaller than one request is refused, naming the field', async () => {
    const link = makeLink('qsize-small', { devices: [blkDevice('disk0', dir, 2, false)] });
    await assert.rejects(a.apply(link), (err: { code?: number; details?: string; message?: string }) => {
      assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT);
      assert.match(String(err.details ?? err.message), /devices\[0\]\.queue_size/);
      return true;
    });
  });

  it('disable_event_idx keeps VIRTIO_F_EVENT_IDX out of each device and out of its rings', async () => {
    const devices = [
      consoleDevice('con0', dir, 0, true),
      consoleDevice('con1', dir, 0, false),
      blkDevice('disk0', dir, 0, true),
      netDatagramDevice('net0', dir, 0, true),
    ];
    const link = makeLink('evidx', { devices });
    await applyBoth(link);
    try {
      // Traffic through both consoles: the card writes into its pty, the host logs it.
      for (const name of ['con0', 'con1']) {
        const fd = openSync(path.join(dir, `${name}.pty`), 'r+');
        try {
          for (let i = 0; i < 50; i++) writeSync(fd, `line ${i} of ${name}\n`);
        } finally {
          closeSync(fd);
        }
      }
      await until('both consoles logged their lines', () =>
        ['con0', 'con1'].every((n) => {
          try {
            return readFileSync(path.join(dir, `${n}.log`), 'utf8').includes(`line 49 of ${n}`);
          } catch {
            return false;
          }
        }),
      );
      const status = (await a.get('evidx')).link?.status;
      const negotiated = (n: string): bigint => status?.devices.find((d) => d.name === n)?.negotiatedFeatures ?? 0n;
      assert.ok(negotiated('con1') !== 0n, 'negotiated features are reported');
      assert.ok(bit(negotiated('con1'), EVENT_IDX), 'con1 (default) negotiates EVENT_IDX');
      for (const n of ['con0', 'disk0', 'net0']) assert.ok(!bit(negotiated(n), EVENT_IDX), `${n} without EVENT_IDX`);
      const win = path.join(rdv, 'evidx.win');
      for (const n of ['con0', 'disk0', 'net0']) {
        const e = entryOf(win, n);
        assert.ok(!bit(e.featuresOffered, EVENT_IDX), `${n}: not offered`);
        assert.ok(!bit(e.featuresAccepted, EVENT_IDX), `${n}: not accepted`);
        for (const q of e.queues) assert.deepEqual([q.usedEvent, q.availEvent], [0, 0], `${n}: no event index written`);
      }
      const on = entryOf(win, 'con1');
      assert.ok(bit(on.featuresAccepted, EVENT_IDX));
      assert.ok(
        on.queues.some((q) => q.usedEvent !== 0 || q.availEvent !== 0),
        'with EVENT_IDX the rings carry event indexes (the reader works)',
      );
    } finally {
      await deleteBoth('evidx');
    }
  });

  it(
    'tap.netns puts each TAP into its named namespace, and frames cross between them',
    { skip: TAP_MISSING || false },
    async () => {
      assert.ok(ns);
      const [nsA, nsB] = ns.names as [string, string];
      const taps: [string, string] = [`${tag}d`, `${tag}r`];
      const link = makeLink('netns', { devices: [netTapDevice('eth0', true, nsA, nsB, taps)] });
      await applyBoth(link);
      try {
        assert.equal(sh('ip', ['-n', nsA, 'link', 'show', taps[0]]).code, 0, `${taps[0]} in ${nsA}`);
        assert.equal(sh('ip', ['-n', nsB, 'link', 'show', taps[1]]).code, 0, `${taps[1]} in ${nsB}`);
        assert.notEqual(sh('ip', ['link', 'show', taps[0]]).code, 0, 'not in the agent namespace');
        assert.notEqual(sh('ip', ['link', 'show', taps[1]]).code, 0, 'not in the agent namespace');
        const ep = (await a.get('netns')).link?.status?.devices.find((d) => d.name === 'eth0')?.endpoints ?? {};
        assert.equal(ep[`tap${devIdOf('eth0')}-netns`], nsA, 'the status names the namespace');
        sh('ip', ['-n', nsA, 'addr', 'add', '10.91.0.1/24', 'dev', taps[0]]);
        sh('ip', ['-n', nsB, 'addr', 'add', '10.91.0.2/24', 'dev', taps[1]]);
        sh('ip', ['-n', nsA, 'link', 'set', taps[0], 'up']);
        sh('ip', ['-n', nsB, 'link', 'set', taps[1], 'up']);
        const ping = ns.exec(nsA, 'ping', ['-c', '3', '-i', '0.2', '-W', '3', '10.91.0.2']);
        assert.equal(ping.code, 0, ping.stdout + ping.stderr);
      } finally {
        await deleteBoth('netns');
      }
      await until('the TAPs gone with the link', () => sh('ip', ['-n', nsA, 'link', 'show', taps[0]]).code !== 0);
    },
  );

  it('a namespace the agent does not allow is refused, naming the field', async () => {
    const link = makeLink('netns-refused', {
      devices: [netTapDevice('eth0', false, 'not-allowed', '', ['vopx0d', 'vopx0r'])],
    });
    await assert.rejects(a.apply(link), (err: { code?: number; details?: string; message?: string }) => {
      assert.equal(err.code, GrpcStatus.INVALID_ARGUMENT);
      assert.match(String(err.details ?? err.message), /device_backend\.tap\.netns/);
      assert.match(String(err.details ?? err.message), /hostPaths\.netns/);
      return true;
    });
  });

  it(
    'offloads sets the TAP offloads on both sides and the features the device offers',
    { skip: TAP_MISSING || false },
    async () => {
      assert.ok(ns);
      const [nsA, nsB] = ns.names as [string, string];
      const taps: [string, string] = [`${tag}od`, `${tag}or`];
      const offload = (n: string, tap: string): { csum: string; tso: string } => {
        const k = ns.exec(n, 'ethtool', ['-k', tap]);
        assert.equal(k.code, 0, k.stderr);
        const get = (key: string): string => new RegExp(`^${key}: (\\w+)`, 'm').exec(k.stdout)?.[1] ?? '?';
        return { csum: get('tx-checksumming'), tso: get('tcp-segmentation-offload') };
      };
      for (const on of [true, false]) {
        const name = on ? 'offl-on' : 'offl-off';
        await applyBoth(makeLink(name, { devices: [netTapDevice('eth0', on, nsA, nsB, taps)] }));
        try {
          const want = on ? 'on' : 'off';
          assert.deepEqual(offload(nsA, taps[0]), { csum: want, tso: want }, `device side TAP, offloads ${on}`);
          assert.deepEqual(offload(nsB, taps[1]), { csum: want, tso: want }, `driver side TAP, offloads ${on}`);
          const f = (await b.get(name)).link?.status?.devices.find((d) => d.name === 'eth0')?.negotiatedFeatures ?? 0n;
          assert.equal(bit(f, NET_F_CSUM), on, 'CSUM negotiated');
          assert.equal(bit(f, NET_F_HOST_TSO4), on, 'HOST_TSO4 negotiated');
        } finally {
          await deleteBoth(name);
        }
        await until('the TAPs gone with the link', () => sh('ip', ['-n', nsA, 'link', 'show', taps[0]]).code !== 0);
      }
    },
  );
});
