/**
 * The TypeScript façade (agent/src/native/addon.ts) over the real addon: two sides of
 * one window in this process move verified data both ways in C worker threads; device
 * configs are checked before native code runs, and C names the property it refuses
 * too; native failures are NativeError with a stable code; events (queue/peer/device)
 * arrive through the link's threadsafe function already named by C; the window size C
 * computes holds the devices; a closed window refuses further calls.
 *
 * TESTING NOTES: needs native/build/Release/vop_native.node (npm ci builds it).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import pino from 'pino';

import type { DataPlaneEvent, DataPlaneWindow, LinkDevice } from '../../agent/src/links/data-plane';
import { repoPath } from '../../lib/src/paths';
import { NativeDataPlane } from '../../agent/src/native/addon';
import { NativeError } from '../../agent/src/native/errors';
import { loadNative } from '../../agent/src/native/load';
import type { PipeDeviceDto } from '../../agent/src/native/native';

const dir = mkdtempSync(path.join(tmpdir(), 'vop-facade-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const dp = new NativeDataPlane(loadNative(), pino({ level: 'silent' }), {
  spinNs: 20_000,
  pollOnly: false,
  resetTimeoutMs: 500,
});

/** A byte pipe device for role (queues named like a stand-in's). */
function pipe(role: 'driver' | 'device', over: Partial<PipeDeviceDto> = {}): LinkDevice & { config: PipeDeviceDto } {
  const config: PipeDeviceDto = {
    kind: 'pipe',
    devId: 1,
    role,
    queueSize: 256,
    eventIdx: true,
    bufSize: 1500,
    indirect: true,
    msgSize: 64,
    segs: 1,
    tx: 'off',
    rx: 'off',
    verify: true,
    count: 0n,
    maxInflight: 0,
    batch: 0,
    ...over,
  };
  return {
    devId: config.devId,
    role: config.role,
    queues: [
      { name: 'tx', direction: role === 'driver' ? 'transmit' : 'receive' },
      { name: 'rx', direction: role === 'device' ? 'transmit' : 'receive' },
    ],
    config,
    resumable: false,
  };
}

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Pair {
  a: DataPlaneWindow;
  b: DataPlaneWindow;
  ea: DataPlaneEvent[];
  eb: DataPlaneEvent[];
  file: string;
}

function openPair(name: string, sizeBytes = 4 << 20): Pair {
  const file = path.join(dir, name);
  const ea: DataPlaneEvent[] = [];
  const eb: DataPlaneEvent[] = [];
  const a = dp.open({ link: name, path: file, side: 'creator', reattach: false, sizeBytes }, (e) => ea.push(e));
  const b = dp.open({ link: name, path: file, side: 'attacher', reattach: false, sizeBytes: 0 }, (e) => eb.push(e));
  return { a, b, ea, eb, file };
}

function pipeCounters(w: DataPlaneWindow, devId: number): { txMsgs: bigint; rxMsgs: bigint; badMsgs: bigint } {
  const c = w.deviceCounters(devId);
  assert.ok(c && c.kind === 'pipe', `pipe counters of ${devId}`);
  return c;
}

describe('native façade', () => {
  it('exports exactly the functions of the contract, in its order (native.ts = addon.c)', () => {
    const declared = [
      ...readFileSync(repoPath('agent', 'src', 'native', 'native.ts'), 'utf8').matchAll(
        /^export declare function (\w+)\(/gm,
      ),
    ].map((m) => m[1]);
    assert.deepEqual(Object.keys(loadNative()), declared);
  });

  it('loads the addon, reports its version and limits, and C names a property it refuses', () => {
    const n = loadNative();
    assert.match(n.version(), /^\d+\.\d+\.\d+$/);
    assert.equal(n.constants().queueMaxSize, 32768);
    assert.equal(n.constants().blkLatencyBoundsNs.length, 11);
    const bad = { ...pipe('driver').config, queueSize: 40_000 };
    assert.throws(
      () => n.windowLayout([bad], 0),
      (e: unknown) =>
        e instanceof RangeError && /devices\[0\]\.queueSize must be in \[0, 32768\], got 40000/.test(e.message),
    );
    assert.throws(
      () => n.windowLayout([{ ...pipe('driver').config, tx: 'loud' as 'off' }], 0),
      (e: unknown) => e instanceof RangeError && /devices\[0\]\.tx must be one of 'off', 'source'/.test(e.message),
    );
    const noId: Partial<PipeDeviceDto> = { ...pipe('driver').config };
    delete noId.devId;
    assert.throws(
      () => n.windowLayout([noId as PipeDeviceDto], 0),
      (e: unknown) => e instanceof TypeError && /devices\[0\]\.devId is missing/.test(e.message),
    );
  });

  it('moves verified data both ways between two sides of one window', async () => {
    const { a, b, ea, eb, file } = openPair('pipe');
    assert.equal(statSync(file).mode & 0o777, 0o600, 'window file is owner-only');
    a.addDevice(pipe('driver', { msgSize: 1500, segs: 3, tx: 'source', rx: 'sink' }));
    b.addDevice(pipe('device', { msgSize: 1500, tx: 'sink', rx: 'source' }));
    await until(
      '100k messages each way',
      () => pipeCounters(a, 1).rxMsgs > 100_000n && pipeCounters(b, 1).rxMsgs > 100_000n,
    );
    assert.equal(pipeCounters(a, 1).badMsgs, 0n);
    assert.ok(a.deviceReady(1) && b.deviceReady(1));
    const [q0] = b.counters(1);
    assert.ok(q0);
    assert.equal(q0.size, 256, 'the ring holds the queue size both sides use');
    assert.ok(q0.buffers > 100_000n);
    assert.ok(q0.bytes >= q0.buffers * 1500n);
    assert.equal(q0.broken, '');
    assert.equal(q0.errors.size, 0);
    assert.ok(q0.notificationsSuppressed > 0n, 'EVENT_IDX suppresses most notifications');
    assert.equal((a.negotiatedFeatures(1) >> 29n) & 1n, 1n, 'EVENT_IDX negotiated');
    assert.ok(a.workerTimes().sleepNs + a.workerTimes().pollNs > 0n);
    assert.equal(b.peer().state, 'up');
    assert.equal(b.side, 'attacher');
    assert.ok(ea.some((e) => e.type === 'device-ready'));
    assert.ok(!eb.some((e) => e.type === 'queue-broken'));
    assert.equal(a.endpoints(1), null, 'a byte pipe has no local surface');

    // Hot unplug: the creator lets the device go and tombstones it; the attacher hears about it.
    a.removeDevice(1);
    assert.equal(a.deviceCounters(1), null);
    await until('device-removed on the attacher', () => eb.some((e) => e.type === 'device-removed'));
    assert.equal(b.deviceCounters(1), null, 'the attacher let it go too');

    // The attacher goes away: the creator sees peer-gone.
    b.close(false);
    await until('peer-gone', () => ea.some((e) => e.type === 'peer-gone'));
    a.close(true);
    assert.throws(() => statSync(file), /ENOENT/, 'the creator removes the window file');
  });

  it('sizes a window from the C layout so that the devices fit', () => {
    const devices = [1, 2, 3].map((id) => pipe('driver', { devId: id, queueSize: 1024, bufSize: 9000 }).config);
    const bytes = dp.windowBytes(devices);
    const layout = loadNative().windowLayout(devices, 0);
    assert.ok(bytes > layout.sizeBytes, 'room for one more of the largest device');
    assert.equal(layout.tableBytes + layout.ringBytes + layout.dataBytes, layout.sizeBytes);
    assert.equal(layout.devices.length, 3);
    // Each 1024-entry queue of 9000-byte buffers (plus a 1 KiB indirect table per buffer) in the data area.
    assert.ok(layout.devices.every((f) => f.poolBytes >= 2 * 1024 * (9024 + 1024)));
    assert.ok(layout.dataUsedBytes <= layout.dataBytes && layout.ringUsedBytes <= layout.ringBytes);
    const { a, b } = openPair('sized', bytes);
    try {
      for (const d of [1, 2, 3, 4]) a.addDevice(pipe('driver', { devId: d, queueSize: 1024, bufSize: 9000 }));
      assert.throws(
        () => a.addDevice(pipe('driver', { devId: 5, queueSize: 1024, bufSize: 9000 })),
        (e: unknown) => e instanceof NativeError && e.code === 'ENOSPC',
        'a fifth one does not fit',
      );
    } finally {
      b.close(false);
      a.close(true);
    }
  });

  it('lets a restarted creator take its side back and keep its devices', async () => {
    const { a, b, eb, file } = openPair('reattach');
    a.addDevice(pipe('driver', { devId: 5, queueSize: 64, bufSize: 64, tx: 'source', rx: 'sink' }));
    b.addDevice(pipe('device', { devId: 5, queueSize: 64, bufSize: 64, tx: 'sink', rx: 'source' }));
    await until('traffic', () => pipeCounters(a, 5).rxMsgs > 1000n);
    assert.throws(
      () => dp.open({ link: 'r', path: file, side: 'creator', reattach: true, sizeBytes: 0 }, () => undefined),
      (e: unknown) => e instanceof NativeError && e.code === 'EBUSY',
    );
    a.close(false);
    const a2 = dp.open({ link: 'r', path: file, side: 'creator', reattach: true, sizeBytes: 0 }, () => undefined);
    try {
      a2.addDevice(pipe('driver', { devId: 5, queueSize: 64, bufSize: 64, tx: 'source', rx: 'sink' }));
      await until('peer-reset seen by the attacher', () => eb.some((e) => e.type === 'peer-reset'));
      await until('traffic after the restart', () => pipeCounters(a2, 5).rxMsgs > 1000n);
      assert.equal(pipeCounters(a2, 5).badMsgs, 0n);
    } finally {
      b.close(false);
      a2.close(true);
    }
  });

  it('checks device configs before any native call, naming the property', () => {
    const { a, b } = openPair('validate');
    try {
      assert.throws(
        () => a.addDevice(pipe('driver', { devId: 2, queueSize: 100 })),
        /device\.queueSize must be a power of two/,
      );
      assert.throws(
        () => a.addDevice({ ...pipe('driver', { devId: 0 }), devId: 0 }),
        /device\.devId must be in \[1, 4294967295\], got 0/,
      );
      assert.throws(
        () => a.addDevice(pipe('driver', { devId: 2, tx: 'sink' })),
        /device\.tx mode 'sink' is not valid for the driver role/,
      );
      assert.throws(() => a.addDevice(pipe('driver', { devId: 2, segs: 17 })), RangeError);
      // The binding re-checks on its own: a wrong type straight into native names it too.
      assert.throws(
        () => loadNative().windowLayout([{ ...pipe('driver').config, verify: 'yes' as unknown as boolean }], 0),
        (e: unknown) => e instanceof TypeError && /devices\[0\]\.verify must be a boolean/.test(e.message),
      );
    } finally {
      b.close(false);
      a.close(true);
    }
  });

  it('reports native failures as NativeError with a stable code', () => {
    const { a, b, file } = openPair('errors');
    try {
      assert.throws(
        () => dp.open({ link: 'e', path: file, side: 'creator', reattach: false, sizeBytes: 1 << 20 }, () => undefined),
        (e: unknown) => e instanceof NativeError && e.code === 'EEXIST',
      );
      assert.throws(
        () =>
          dp.open(
            { link: 'e', path: path.join(dir, 'missing'), side: 'attacher', reattach: false, sizeBytes: 0 },
            () => undefined,
          ),
        (e: unknown) => e instanceof NativeError && e.code === 'ENOENT',
      );
      a.addDevice(pipe('driver', { devId: 3, queueSize: 64, bufSize: 64, eventIdx: false, tx: 'source', rx: 'sink' }));
      assert.throws(
        () => a.addDevice(pipe('driver', { devId: 3, queueSize: 64, bufSize: 64, eventIdx: false })),
        (e: unknown) => e instanceof NativeError && e.code === 'EEXIST',
      );
      // The attacher claims the role the table gives the other side.
      assert.throws(
        () => b.addDevice(pipe('driver', { devId: 3, queueSize: 64, bufSize: 64 })),
        (e: unknown) => e instanceof NativeError && e.code === 'EINVAL',
      );
    } finally {
      b.close(false);
      a.close(true);
    }
    assert.throws(
      () => a.peer(),
      (e: unknown) => e instanceof NativeError && e.code === 'EBADF',
    );
    a.close(true); // idempotent
  });

  it('runs the reset handshake with a bounded timeout and an echo device', async () => {
    const file = path.join(dir, 'echo');
    const ea: DataPlaneEvent[] = [];
    const a = dp.open({ link: 'echo', path: file, side: 'creator', reattach: false, sizeBytes: 4 << 20 }, (e) =>
      ea.push(e),
    );
    let b: DataPlaneWindow | null = null;
    try {
      a.addDevice(pipe('driver', { devId: 4, queueSize: 64, bufSize: 64, tx: 'source', rx: 'sink', maxInflight: 1 }));
      await until('reset-timeout without a device side', () =>
        ea.some((e) => e.type === 'queue-broken' && e.reason === 'reset_timeout'),
      );
      assert.equal(a.deviceReady(4), false);
      b = dp.open({ link: 'echo', path: file, side: 'attacher', reattach: false, sizeBytes: 0 }, () => undefined);
      b.addDevice(pipe('device', { devId: 4, queueSize: 64, bufSize: 64, tx: 'echo', rx: 'off' }));
      await until('echoed round trips', () => pipeCounters(a, 4).rxMsgs > 1000n);
      assert.equal(pipeCounters(a, 4).badMsgs, 0n);
      const before = ea.filter((e) => e.type === 'device-ready').length;
      a.resetDevice(4);
      await until('another device-ready', () => ea.filter((e) => e.type === 'device-ready').length > before);
      const rx = pipeCounters(a, 4).rxMsgs;
      await until('round trips after the reset', () => pipeCounters(a, 4).rxMsgs > rx + 100n);
    } finally {
      b?.close(false);
      a.close(true);
    }
  });
});
