/**
 * The device façade (agent/src/devices) over the real addon: both sides of
 * a window in this process, a disk exported over NBD and used by qemu-io,
 * the console stream with two readers and one writer, and option
 * validation before anything native runs.
 */
import assert from 'node:assert/strict';
import { openSync, closeSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ConsoleBusyError, DeviceHost, deviceDescription } from '../../agent/src/devices/device-host';
import { sh, tempDir } from './helpers';

async function waitFor(pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('device host façade', () => {
  let dir = '';
  before(() => {
    dir = tempDir('vop-devhost-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('validates options with the field name before calling native', () => {
    assert.throws(
      () => deviceDescription({ kind: 'blk', role: 'driver', id: 1, slots: 3, nbdSocket: '/x' }),
      /slots must be a power of two/,
    );
    assert.throws(() => deviceDescription({ kind: 'blk', role: 'driver', id: 1 }), /needs nbdSocket or nbdTcpPort/);
    assert.throws(() => deviceDescription({ kind: 'blk', role: 'device', id: 0, file: '/x' }), RangeError);
    assert.throws(() => deviceDescription({ kind: 'blk', role: 'device', id: 1, file: 'a:b' }), /without ':'/);
    assert.throws(
      () => deviceDescription({ kind: 'net', role: 'device', id: 1, tap: 'x', mac: '53:54:00:00:00:01' }),
      /unicast/,
    );
    assert.throws(() => deviceDescription({ kind: 'console', role: 'driver', id: 1, logFile: '/x' }), /device role/);
    // NBD over TCP: address, TLS files and client names, plaintext only when asked for.
    const tls = { cert: '/pki/c.pem', key: '/pki/k.pem', ca: '/pki/ca.pem', clients: ['ops-admin', 'backup'] };
    assert.deepEqual(
      deviceDescription({ kind: 'blk', role: 'driver', id: 2, nbdTcpPort: -1, nbdTcpHost: '::1', nbdTls: tls }),
      {
        kind: 'blk-driver',
        desc: '2:tcp=-1:tcphost=--1:tlscert=/pki/c.pem:tlskey=/pki/k.pem:tlsca=/pki/ca.pem:tlsnames=ops-admin,backup',
      },
    );
    assert.throws(
      () => deviceDescription({ kind: 'blk', role: 'driver', id: 2, nbdTcpPort: 1, nbdTcpHost: 'example.org' }),
      /nbdTcpHost must be an IPv4 or IPv6 address/,
    );
    assert.throws(
      () => deviceDescription({ kind: 'blk', role: 'driver', id: 2, nbdTcpPort: 1, nbdTls: { ...tls, ca: '/a:b' } }),
      /nbdTls.ca must be a non-empty string without ':'/,
    );
    assert.throws(
      () =>
        deviceDescription({ kind: 'blk', role: 'driver', id: 2, nbdTcpPort: 1, nbdTls: { ...tls, clients: ['a,b'] } }),
      /nbdTls.clients/,
    );
    assert.equal(
      deviceDescription({ kind: 'blk', role: 'driver', id: 2, nbdTcpPort: 10809, nbdTcpPlaintext: true }).desc,
      '2:tcp=10809:tcpplain',
    );
    assert.deepEqual(
      deviceDescription({ kind: 'net', role: 'driver', id: 7, tap: 'vop0', mac: '52:54:00:00:00:07', mtu: 9000 }),
      {
        kind: 'net-driver',
        desc: '7:tap=vop0:mtu=9000:mac=52-54-00-00-00-07',
      },
    );
  });

  it('exports a disk over NBD and carries the console stream between the two sides', async () => {
    const win = `/dev/shm/vop-devhost-${process.pid}`;
    rmSync(win, { force: true });
    const disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 16 << 20);
    const sock = path.join(dir, 'nbd.sock');
    const log = path.join(dir, 'console.log');
    // the driver side waits for the device's config inside open(): open both sides concurrently
    const [cardR, hostR] = await Promise.allSettled([
      DeviceHost.open({
        window: win,
        createMiB: 64,
        devices: [
          { kind: 'blk', role: 'driver', id: 1, nbdSocket: sock, slots: 16, segKiB: 256 },
          { kind: 'console', role: 'driver', id: 2, ptyLink: path.join(dir, 'card.pty') },
        ],
      }),
      new Promise((r) => setTimeout(r, 100)).then(() =>
        DeviceHost.open({
          window: win,
          devices: [
            { kind: 'blk', role: 'device', id: 1, file: disk, serial: 'disk-one' },
            { kind: 'console', role: 'device', id: 2, logFile: log },
          ],
        }),
      ),
    ]);
    const card = cardR.status === 'fulfilled' ? cardR.value : null;
    const host = hostR.status === 'fulfilled' ? hostR.value : null;
    try {
      assert.ok(
        card && host,
        `open: ${cardR.status === 'rejected' ? String(cardR.reason) : ''} ${hostR.status === 'rejected' ? String(hostR.reason) : ''}`,
      );
      assert.equal(card.endpoints()['nbd1-size'], String(16 << 20));
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
          .every((b) => b === 0x3c),
      );
      assert.ok((host.stats().blk1?.writes ?? 0) > 0);

      // console: two readers see the card's output; one writer at a time
      const con = host.console(2);
      const seen: [string, string] = ['', ''];
      const d0 = con.attachReader((c) => (seen[0] += c.toString()), 10);
      const d1 = con.attachReader((c) => (seen[1] += c.toString()), 10);
      const fd = openSync(path.join(dir, 'card.pty'), 'r+');
      writeSync(fd, 'boot: ok\n');
      await waitFor(() => seen[0].includes('boot: ok') && seen[1].includes('boot: ok'));
      const w = con.acquireWriter();
      assert.throws(() => con.acquireWriter(), ConsoleBusyError);
      assert.equal(w.write(Buffer.from('whoami\n')), 7);
      w.release();
      con.acquireWriter().release();
      d0();
      d1();
      closeSync(fd);
      await waitFor(() => readFileSync(log, 'utf8').includes('boot: ok'));
    } finally {
      host?.close();
      card?.close();
      rmSync(win, { force: true });
    }
  });
});
