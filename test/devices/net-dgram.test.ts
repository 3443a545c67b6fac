/**
 * virtio-net with the datagram backend on both sides (no CAP_NET_ADMIN
 * needed): UDP sockets on 127.0.0.1 stand for the two networks; each
 * datagram is one frame with its 12-byte virtio-net header. Frames cross
 * the shm link both ways in order and intact (UDP itself may drop at a full
 * socket buffer, so at least 99 % must arrive, as an in-order subsequence),
 * and a malformed header is dropped and counted.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { describe, it } from 'node:test';

import { buildVopdev, Vopdev } from './helpers';

function frame(i: number, len: number): Buffer {
  const f = Buffer.alloc(12 + len);
  f.fill(0xff, 12, 18); // broadcast destination
  f.writeUInt16BE(0x88b5, 24); // local experimental ethertype
  f.writeUInt32LE(i, 26);
  randomBytes(len - 18).copy(f, 30);
  return f;
}

async function bindUdp(): Promise<dgram.Socket> {
  const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

async function collect(rx: dgram.Socket, n: number, timeoutMs: number): Promise<Buffer[]> {
  const got: Buffer[] = [];
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(got), timeoutMs);
    rx.on('message', (m: Buffer) => {
      got.push(m);
      if (got.length === n) {
        clearTimeout(timer);
        resolve(got);
      }
    });
  });
}

describe('virtio-net datagram backend', () => {
  it('carries frames both ways in order and intact, drops malformed headers', async () => {
    buildVopdev();
    const a = await bindUdp(); // the device side's network
    const b = await bindUdp(); // the driver side's network
    const pa = a.address().port;
    const pb = b.address().port;
    const base = 20000 + (process.pid % 20000);
    const devPort = base;
    const drvPort = base + 1;
    const win = `/dev/shm/vop-dgram-test-${process.pid}`;
    rmSync(win, { force: true });
    const drv = new Vopdev(['--window', win, '--create', '64', '--net-driver', `1:udp=${drvPort}:udppeer=${pb}`]);
    const dev = new Vopdev(['--window', win, '--attach', '--net-device', `1:udp=${devPort}:udppeer=${pa}`]);
    try {
      await drv.waitReady();
      await dev.waitReady();
      const N = 2000;
      for (const [src, dstPort, rx, len] of [
        [a, devPort, b, 1000],
        [b, drvPort, a, 1400],
      ] as const) {
        const frames = Array.from({ length: N }, (_, i) => frame(i, len));
        const got = collect(rx, N, 15000);
        for (let i = 0; i < N; i += 20) {
          // 20 frames, then let the event loop breathe: UDP has no back-pressure
          for (const f of frames.slice(i, i + 20)) src.send(f, dstPort, '127.0.0.1');
          await new Promise((r) => setTimeout(r, 4));
        }
        const r = await got;
        rx.removeAllListeners('message');
        assert.ok(r.length >= N * 0.99, `frames to port ${dstPort}: ${r.length} of ${N}`);
        let j = 0;
        for (const m of r) {
          while (j < N && !(frames[j] as Buffer).equals(m)) j++;
          assert.ok(j < N, 'every received frame is intact and in order');
          j++;
        }
      }
      // malformed: unknown gso type, and a runt
      const bad = frame(1, 100);
      bad[1] = 9;
      a.send(bad, devPort, '127.0.0.1');
      b.send(bad, drvPort, '127.0.0.1');
      b.send(Buffer.alloc(20), drvPort, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 300));
      const ds = await dev.stop();
      const rs = await drv.stop();
      assert.equal(ds.net1?.tx_frames, N, 'device sent what the driver posted');
      assert.ok((ds.net1?.bad_headers ?? 0) >= 1, 'device dropped the bad header from the driver');
      assert.ok((rs.net1?.bad_headers ?? 0) >= 1 || (rs.net1?.tx_dropped ?? 0) >= 1, 'driver side counted bad frames');
    } finally {
      await dev.stop();
      await drv.stop();
      a.close();
      b.close();
      rmSync(win, { force: true });
    }
  });
});
