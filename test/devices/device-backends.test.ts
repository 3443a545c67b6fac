/**
 * Device backends through the agent's own native seam (agent/src/native/addon.ts,
 * the shipped addon): both sides of one window in this process serve a disk exported
 * over NBD (qemu-io writes and reads it back) and a console (two readers and one
 * writer at a time on the device side's stream, the card's pty on the other); the
 * typed device configs are checked with the property's name before anything native
 * runs, and C names what it refuses itself.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readFileSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import pino from 'pino';

import { ConsoleBusyError, ConsoleStream } from '../../agent/src/backends/console-stream';
import type { DataPlaneWindow, LinkDevice } from '../../agent/src/links/data-plane';
import { NativeDataPlane } from '../../agent/src/native/addon';
import { checkDeviceConfig } from '../../agent/src/native/device-config';
import { loadNative } from '../../agent/src/native/load';
import type { BlkDeviceDto, ConsoleDeviceDto, DeviceConfigDto, NetDeviceDto } from '../../agent/src/native/native';
import { sh, tempDir } from './helpers';
import { rmSync } from 'node:fs';

async function waitFor(what: string, pred: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const LIMITS = loadNative().constants();

function device(config: DeviceConfigDto, queues: string[]): LinkDevice {
  return {
    devId: config.devId,
    role: config.role,
    queues: queues.map((name) => ({ name, direction: 'receive' as const })),
    config,
    resumable: config.kind === 'blk',
  };
}

const blk = (role: 'device' | 'driver', over: Partial<BlkDeviceDto> = {}): BlkDeviceDto => ({
  kind: 'blk',
  devId: 1,
  role,
  queueSize: 64,
  eventIdx: true,
  segBytes: 256 * 1024,
  readOnly: false,
  file: null,
  nbd: null,
  ...over,
});

const con = (role: 'device' | 'driver', over: Partial<ConsoleDeviceDto> = {}): ConsoleDeviceDto => ({
  kind: 'console',
  devId: 2,
  role,
  queueSize: 0,
  eventIdx: true,
  pty: role === 'driver',
  ptyLink: null,
  ptyRoot: null,
  log: null,
  unixPath: null,
  unixRoot: null,
  ...over,
});

const net = (over: Partial<NetDeviceDto> = {}): NetDeviceDto => ({
  kind: 'net',
  devId: 3,
  role: 'device',
  queueSize: 0,
  eventIdx: true,
  mtu: 0,
  mac: '',
  offloads: true,
  tap: { name: 'vop0', netns: null },
  datagram: null,
  rxBufBytes: 0,
  ...over,
});

describe('device backends through the addon', () => {
  let dir = '';
  before(() => {
    dir = tempDir('vop-devbackends-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('checks typed device configs, naming the property, before anything native runs', () => {
    const check = (d: DeviceConfigDto): void => checkDeviceConfig(d, LIMITS);
    assert.throws(() => check(blk('driver', { nbd: null })), /device\.nbd must be an object for the driver role/);
    assert.throws(
      () =>
        check(
          blk('driver', {
            nbd: {
              unixPath: null,
              unixRoot: null,
              tcpHost: null,
              tcpPort: 0,
              exportName: null,
              tls: null,
              tcpPlaintext: false,
            },
          }),
        ),
      /device\.nbd needs unixPath or a tcpPort/,
    );
    assert.throws(
      () => check(blk('driver', { queueSize: 2, nbd: null })),
      /device\.queueSize must be a power of two in \[4, 32768\]/,
    );
    assert.throws(() => check({ ...blk('device'), devId: 0 }), RangeError);
    assert.throws(() => check(net({ mac: '53:54:00:00:00:01' })), /device\.mac must be unicast/);
    assert.throws(
      () => check(net({ tap: { name: 'vop0', netns: '../x' } })),
      /device\.tap\.netns must be a namespace name/,
    );
    assert.throws(
      () => check(net({ tap: { name: 'way-too-long-name0', netns: null } })),
      /device\.tap\.name must be at most 15 bytes/,
    );
    assert.throws(
      () => check(con('driver', { log: { path: '/x', root: null, maxBytes: 0, files: 0 } })),
      /device\.log must be null for the driver role/,
    );
    const nbd = {
      unixPath: null,
      unixRoot: null,
      tcpHost: 'example.org',
      tcpPort: 1,
      exportName: null,
      tls: null,
      tcpPlaintext: false,
    };
    assert.throws(() => check(blk('driver', { nbd })), /device\.nbd\.tcpHost must be an IPv4 or IPv6 address/);
    const tls = { cert: '/pki/c.pem', key: '/pki/k.pem', ca: null, clients: ['a,b'] };
    assert.throws(() => check(blk('driver', { nbd: { ...nbd, tcpHost: '::1', tls } })), /device\.nbd\.tls\.clients/);
    // A ':' in a path is just a character now (no description format to escape).
    check(
      blk('device', {
        file: { path: '/srv/disk:1.img', root: null, blockDevice: false, direct: false, ioThreads: 0, serial: null },
      }),
    );
    // C re-checks what reaches it and names the property itself.
    const longSerial = blk('device', {
      file: { path: '/x', root: null, blockDevice: false, direct: false, ioThreads: 0, serial: 'x'.repeat(21) },
    });
    assert.throws(
      () => loadNative().windowLayout([longSerial], 0),
      (e: unknown) => e instanceof RangeError && /devices\[0\]\.file\.serial must be at most 20 bytes/.test(e.message),
    );
  });

  it('exports a disk over NBD and carries the console stream between the two sides', async () => {
    const dp = new NativeDataPlane(loadNative(), pino({ level: 'silent' }));
    const win = path.join(dir, 'win');
    const disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 16 << 20);
    const sock = path.join(dir, 'nbd.sock');
    const log = path.join(dir, 'console.log');
    const host = device(
      blk('device', {
        file: { path: disk, root: null, blockDevice: false, direct: false, ioThreads: 0, serial: 'disk-one' },
      }),
      ['requestq'],
    );
    const card = device(
      blk('driver', {
        nbd: {
          unixPath: sock,
          unixRoot: null,
          tcpHost: null,
          tcpPort: 0,
          exportName: null,
          tls: null,
          tcpPlaintext: false,
        },
      }),
      ['requestq'],
    );
    const hostCon = device(con('device', { log: { path: log, root: null, maxBytes: 0, files: 0 } }), ['rx', 'tx']);
    const cardCon = device(con('driver', { ptyLink: path.join(dir, 'card.pty') }), ['rx', 'tx']);
    const size = dp.windowBytes([host.config, hostCon.config]);
    let a: DataPlaneWindow | null = null;
    let b: DataPlaneWindow | null = null;
    try {
      a = dp.open({ link: 'dev', path: win, side: 'creator', reattach: false, sizeBytes: size }, () => undefined);
      b = dp.open({ link: 'dev', path: win, side: 'attacher', reattach: false, sizeBytes: 0 }, () => undefined);
      a.addDevice(host);
      a.addDevice(hostCon);
      b.addDevice(card);
      b.addDevice(cardCon);
      const sides = [a, b];
      await waitFor('both devices running', () => sides.every((w) => w.deviceReady(1) && w.deviceReady(2)));
      await waitFor('the export size', () => (b?.endpoints(1)?.nbdSizeBytes ?? 0n) === BigInt(16 << 20));
      const ep = b.endpoints(1);
      assert.equal(ep?.nbdSocket, sock);
      assert.equal(ep?.nbdPort, null);
      assert.equal(b.counters(1)[0]?.size, 64, 'the ring holds the 64 entries asked for');
      const q = sh('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write -P 0x3c 1M 2M',
        '-c',
        'read -P 0x3c 1M 2M',
        `nbd+unix:///vop?socket=${sock}`,
      ]);
      assert.equal(q.code, 0, q.stdout + q.stderr);
      assert.ok(
        readFileSync(disk)
          .subarray(1 << 20, 3 << 20)
          .every((x) => x === 0x3c),
      );
      const c = a.deviceCounters(1);
      assert.ok(c?.kind === 'blk' && c.writes > 0n && c.bytesWritten >= 2n << 20n, 'typed blk counters');
      assert.ok(c.latency.some((l) => l.op === 'write' && l.bucketCounts.reduce((x, y) => x + y, 0n) === c.writes));
      assert.equal(b.deviceCounters(1), null, 'the blk driver keeps no counters');

      // console: two readers see the card's output; one writer at a time
      const io = a.console(2);
      assert.ok(io, 'the device side has a console stream');
      const stream = new ConsoleStream(io, 2);
      const seen: [string, string] = ['', ''];
      const d0 = stream.attachReader((x) => (seen[0] += x.toString()), 10);
      const d1 = stream.attachReader((x) => (seen[1] += x.toString()), 10);
      assert.equal(b.endpoints(2)?.pty?.startsWith('/dev/pts/'), true);
      const fd = openSync(path.join(dir, 'card.pty'), 'r+');
      writeSync(fd, 'boot: ok\n');
      await waitFor('both readers', () => seen[0].includes('boot: ok') && seen[1].includes('boot: ok'));
      const w = stream.acquireWriter();
      assert.throws(() => stream.acquireWriter(), ConsoleBusyError);
      assert.equal(w.write(Buffer.from('whoami\n')), 7);
      w.release();
      stream.acquireWriter().release();
      d0();
      d1();
      closeSync(fd);
      await waitFor('the log', () => readFileSync(log, 'utf8').includes('boot: ok'));
      const cc = a.deviceCounters(2);
      assert.ok(cc?.kind === 'console' && cc.outBytes >= 9n && cc.logBytes >= 9n);
    } finally {
      b?.close(false);
      a?.close(true);
    }
  });
});
