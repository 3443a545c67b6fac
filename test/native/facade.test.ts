/**
 * The TypeScript façade over the real addon: two sides of one window in this
 * process move verified data both ways in C worker threads; arguments are
 * validated before native code runs; native failures are NativeError with a
 * stable code; events (queue/peer/device) arrive through the link's
 * threadsafe function; a closed window refuses further calls.
 *
 * TESTING NOTES: needs native/build/Release/vop_native.node (npm ci builds it).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import { NativeError } from '../../agent/src/native/errors';
import { loadNative } from '../../agent/src/native/load';
import { type LinkEvent, type PipeOptions, VopWindow } from '../../agent/src/native/window';

const dir = mkdtempSync(path.join(tmpdir(), 'vop-facade-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const worker = { spinNs: 20_000, pollOnly: false, resetTimeoutMs: 500 } as const;

function pipe(over: Partial<PipeOptions>): PipeOptions {
  return {
    msgSize: 64,
    bufSize: null,
    segs: null,
    tx: 'off',
    rx: 'off',
    verify: true,
    eventIdx: true,
    indirect: true,
    count: null,
    maxInflight: null,
    batch: null,
    ...over,
  };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function openPair(name: string): { a: VopWindow; b: VopWindow; ea: LinkEvent[]; eb: LinkEvent[]; file: string } {
  const file = path.join(dir, name);
  const a = VopWindow.create({ path: file, sizeBytes: 4 << 20, maxDevices: null, ...worker });
  const b = VopWindow.attach({ path: file, ...worker });
  const ea: LinkEvent[] = [];
  const eb: LinkEvent[] = [];
  a.on('event', (e) => ea.push(e));
  b.on('event', (e) => eb.push(e));
  return { a, b, ea, eb, file };
}

describe('native façade', () => {
  it('loads the addon and reports a version and the reason names', () => {
    const n = loadNative();
    assert.match(n.version(), /^\d+\.\d+\.\d+$/);
    assert.equal(n.reasonNames()[2], 'avail_idx_jump');
  });

  it('moves verified data both ways between two sides of one window', async () => {
    const { a, b, ea, eb, file } = openPair('pipe');
    assert.equal(statSync(file).mode & 0o777, 0o600, 'window file is owner-only');
    a.addDevice({ devId: 1, deviceSide: 'attacher', queueSize: 256, bufSize: 1500, eventIdx: true, indirect: true });
    a.attach(1, 'driver', pipe({ msgSize: 1500, segs: 3, tx: 'source', rx: 'sink' }));
    b.attach(1, 'device', pipe({ msgSize: 1500, tx: 'sink', rx: 'source' }));
    a.start();
    b.start();
    await until('100k messages each way', () => a.pipeStats(1).rxMsgs > 100_000n && b.pipeStats(1).rxMsgs > 100_000n);
    const sa = a.pipeStats(1);
    assert.equal(sa.badMsgs, 0n);
    assert.equal(sa.state, 'running');
    const q0 = b.queueStats(1, 0);
    assert.ok(q0.buffers > 100_000n);
    assert.ok(q0.bytes >= q0.buffers * 1500n);
    assert.equal(q0.broken, null);
    assert.deepEqual(q0.errorsByReason, {});
    assert.ok(q0.notificationsSuppressed > 0n, 'EVENT_IDX suppresses most notifications');
    assert.ok(a.linkStats().heartbeats > 0n);
    assert.equal(b.info().peer.state, 'up');
    assert.equal(b.info().side, 'attacher');
    assert.ok(ea.some((e) => e.type === 'reset-done'));
    assert.ok(!eb.some((e) => e.type === 'queue-broken'));

    // Hot unplug: both sides hear about it.
    a.removeDevice(1);
    await until(
      'device-removed on both sides',
      () => ea.some((e) => e.type === 'device-removed') && eb.some((e) => e.type === 'device-removed'),
    );
    assert.equal(b.pipeStats(1).state, 'removed');

    // The attacher goes away: the creator sees peer-gone.
    b.close();
    await until('peer-gone', () => ea.some((e) => e.type === 'peer-gone'));
    a.close();
    assert.throws(() => statSync(file), /ENOENT/, 'the creator removes the window file');
  });

  it('attaches to an anonymous memfd window by fd', async () => {
    const a = VopWindow.create({ path: null, sizeBytes: 1 << 20, maxDevices: 4, ...worker });
    const b = VopWindow.attachFd({ fd: a.info().fd, ...worker });
    try {
      assert.equal(a.info().path, '');
      a.addDevice({ devId: 9, deviceSide: 'attacher', queueSize: 64, bufSize: 128, eventIdx: true, indirect: false });
      a.attach(9, 'driver', pipe({ msgSize: 128, tx: 'source', rx: 'sink' }));
      b.attach(9, 'device', pipe({ msgSize: 128, tx: 'sink', rx: 'source' }));
      a.start();
      b.start();
      await until(
        'data over the memfd window',
        () => b.pipeStats(9).rxMsgs > 10_000n && a.pipeStats(9).rxMsgs > 10_000n,
      );
      assert.equal(b.pipeStats(9).badMsgs, 0n);
    } finally {
      b.close();
      a.close();
    }
  });

  it('lets a restarted creator take its side back and keep its devices', async () => {
    const { a, b, eb, file } = openPair('reattach');
    a.addDevice({ devId: 5, deviceSide: 'attacher', queueSize: 64, bufSize: 64, eventIdx: true, indirect: false });
    a.attach(5, 'driver', pipe({ tx: 'source', rx: 'sink' }));
    b.attach(5, 'device', pipe({ tx: 'sink', rx: 'source' }));
    a.start();
    b.start();
    await until('traffic', () => a.pipeStats(5).rxMsgs > 1000n);
    assert.throws(
      () => VopWindow.reattach({ path: file, side: 'creator', ...worker }),
      (e: unknown) => e instanceof NativeError && e.code === 'EBUSY',
    );
    a.close({ unlink: false });
    const a2 = VopWindow.reattach({ path: file, side: 'creator', ...worker });
    try {
      assert.equal(a2.info().epoch, 2);
      a2.attach(5, 'driver', pipe({ tx: 'source', rx: 'sink' }));
      a2.start();
      await until('peer-reset seen by the attacher', () => eb.some((e) => e.type === 'peer-reset'));
      await until('traffic after the restart', () => a2.pipeStats(5).rxMsgs > 1000n);
      assert.equal(a2.pipeStats(5).badMsgs, 0n);
    } finally {
      b.close();
      a2.close();
    }
  });

  it('validates arguments before any native call', () => {
    const { a, b } = openPair('validate');
    try {
      assert.throws(
        () =>
          a.addDevice({
            devId: 2,
            deviceSide: 'attacher',
            queueSize: 100,
            bufSize: 64,
            eventIdx: true,
            indirect: false,
          }),
        RangeError,
      );
      assert.throws(
        () =>
          a.addDevice({
            devId: 0,
            deviceSide: 'attacher',
            queueSize: 64,
            bufSize: 64,
            eventIdx: true,
            indirect: false,
          }),
        RangeError,
      );
      assert.throws(
        () => a.attach(2, 'driver', pipe({ tx: 'sink' })),
        /tx mode 'sink' is not valid for the driver role/,
      );
      assert.throws(() => a.attach(2, 'driver', pipe({ segs: 17 })), RangeError);
      assert.throws(
        () => VopWindow.create({ path: path.join(dir, 'odd'), sizeBytes: 65536 + 1, maxDevices: null, ...worker }),
        /multiple of 4096/,
      );
      assert.throws(
        () =>
          b.addDevice({ devId: 2, deviceSide: 'creator', queueSize: 64, bufSize: 64, eventIdx: true, indirect: false }),
        (e: unknown) => e instanceof NativeError && e.code === 'EPERM',
      );
    } finally {
      b.close();
      a.close();
    }
  });

  it('reports native failures as NativeError with a stable code', () => {
    const { a, b, file } = openPair('errors');
    try {
      assert.throws(
        () => VopWindow.create({ path: file, sizeBytes: 1 << 20, maxDevices: null, ...worker }),
        (e: unknown) => e instanceof NativeError && e.code === 'EEXIST',
      );
      assert.throws(
        () => VopWindow.attach({ path: path.join(dir, 'missing'), ...worker }),
        (e: unknown) => e instanceof NativeError && e.code === 'ENOENT',
      );
      assert.throws(
        () => a.detach(42),
        (e: unknown) => e instanceof NativeError && e.code === 'ENOENT',
      );
      a.addDevice({ devId: 3, deviceSide: 'attacher', queueSize: 64, bufSize: 64, eventIdx: false, indirect: false });
      assert.throws(
        () =>
          a.addDevice({
            devId: 3,
            deviceSide: 'attacher',
            queueSize: 64,
            bufSize: 64,
            eventIdx: false,
            indirect: false,
          }),
        (e: unknown) => e instanceof NativeError && e.code === 'EEXIST',
      );
      // Wrong role for the side the table names as the device side.
      assert.throws(
        () => a.attach(3, 'device', pipe({ tx: 'sink' })),
        (e: unknown) => e instanceof NativeError && e.code === 'EINVAL',
      );
    } finally {
      b.close();
      a.close();
    }
    assert.throws(
      () => a.start(),
      (e: unknown) => e instanceof NativeError && e.code === 'EBADF',
    );
    a.close(); // idempotent
  });

  it('runs the reset handshake with a bounded timeout and an echo device', async () => {
    const { a, b, ea } = openPair('echo');
    try {
      a.addDevice({ devId: 4, deviceSide: 'attacher', queueSize: 64, bufSize: 64, eventIdx: true, indirect: false });
      a.attach(4, 'driver', pipe({ tx: 'source', rx: 'sink', maxInflight: 1 }));
      a.start();
      await until('reset-timeout without a device side', () => ea.some((e) => e.type === 'reset-timeout'));
      assert.equal(a.pipeStats(4).state, 'resetting');
      b.attach(4, 'device', pipe({ tx: 'echo', rx: 'off' }));
      b.start();
      await until('echoed round trips', () => a.pipeStats(4).rxMsgs > 1000n);
      assert.equal(a.pipeStats(4).badMsgs, 0n);
      a.resetDevice(4);
      await until('a second reset-done', () => ea.filter((e) => e.type === 'reset-done').length >= 2);
      await until('round trips after the reset', () => a.pipeStats(4).rxMsgs > 100n);
    } finally {
      a.stop();
      b.close();
      a.close();
    }
  });
});
