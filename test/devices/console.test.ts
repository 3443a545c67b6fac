/**
 * virtio-console across an shm link between two real processes: a pty on
 * each side (bytes both ways), a 1 MiB burst with nobody attached ending up
 * intact in the device side's log file, and log rotation.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tty from 'node:tty';

import { buildVopdev, tempDir, Vopdev } from './helpers';

/** Open a pty slave in raw mode; collect what it reads. */
class PtyEnd {
  readonly fd: number;
  private stream: tty.ReadStream;
  private got = Buffer.alloc(0);
  constructor(p: string) {
    this.fd = openSync(p, 'r+');
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on('data', (d: Buffer) => {
      this.got = Buffer.concat([this.got, d]);
    });
  }
  /** The fd is non-blocking (tty.ReadStream): retry on EAGAIN until everything is written. */
  async write(b: Buffer): Promise<void> {
    let off = 0;
    while (off < b.length) {
      try {
        off += writeSync(this.fd, b, off, Math.min(65536, b.length - off));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  }
  async read(n: number, timeoutMs = 5000): Promise<Buffer> {
    const end = Date.now() + timeoutMs;
    while (this.got.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const out = this.got.subarray(0, n);
    this.got = this.got.subarray(n);
    return out;
  }
  close(): void {
    this.stream.destroy();
  }
}

async function waitFor(pred: () => boolean, timeoutMs = 10000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('virtio-console over an shm link', () => {
  let dir = '';
  before(() => {
    buildVopdev();
    dir = tempDir('vop-con-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('carries bytes both ways between the ptys and keeps a 1 MiB burst intact in the log with nobody attached', async () => {
    const win = `/dev/shm/vop-con-test-${process.pid}`;
    rmSync(win, { force: true });
    const log = path.join(dir, 'console.log');
    const drv = new Vopdev(['--window', win, '--create', '16', '--con-driver', `2:pty=${dir}/card.pty`]);
    const dev = new Vopdev([
      '--window',
      win,
      '--attach',
      '--con-device',
      `2:pty=${dir}/host.pty:log=${log}:logmax=${8 << 20}:unix=${dir}/console.sock`,
    ]);
    try {
      await drv.waitReady();
      await dev.waitReady();
      const host = new PtyEnd(path.join(dir, 'host.pty'));
      const card = new PtyEnd(path.join(dir, 'card.pty'));
      await host.write(Buffer.from('login: root\r'));
      assert.equal((await card.read(12)).toString(), 'login: root\r', 'host -> card');
      await card.write(Buffer.from('Welcome to the card\r\n'));
      assert.equal((await host.read(21)).toString(), 'Welcome to the card\r\n', 'card -> host');
      // a socket client sees console output too
      const sock = net.createConnection(path.join(dir, 'console.sock'));
      let sockGot = '';
      sock.on('data', (d: Buffer) => (sockGot += d.toString()));
      await new Promise((r) => sock.once('connect', r));
      await new Promise((r) => setTimeout(r, 200));
      await card.write(Buffer.from('via socket\n'));
      await waitFor(() => sockGot.includes('via socket'));
      sock.destroy();
      host.close();
      closeSync(host.fd);

      // nobody attached on the host side now: a 1 MiB burst from the card
      const burst = randomBytes(1 << 20);
      await card.write(burst);
      const before = 12 + 21 + 11; // bytes logged before the burst: card output only
      await waitFor(() => existsSync(log) && readFileSync(log).length >= before - 12 + burst.length, 20000);
      const logged = readFileSync(log);
      assert.ok(logged.subarray(logged.length - burst.length).equals(burst), 'burst intact in the log');
      card.close();
      closeSync(card.fd);
      const st = await dev.stop();
      assert.ok((st.con2?.dropped ?? 0) > 0, 'pty output for the absent reader was dropped, not held');
      assert.equal(st.con2?.out_bytes, logged.length);
    } finally {
      await dev.stop();
      await drv.stop();
      rmSync(win, { force: true });
    }
  });

  it('rotates the log by size', async () => {
    const win = `/dev/shm/vop-con-test2-${process.pid}`;
    rmSync(win, { force: true });
    const log = path.join(dir, 'rot.log');
    const drv = new Vopdev(['--window', win, '--create', '16', '--con-driver', `2:pty=${dir}/card2.pty`]);
    const dev = new Vopdev(['--window', win, '--attach', '--con-device', `2:log=${log}:logmax=65536:logfiles=2`]);
    try {
      await drv.waitReady();
      await dev.waitReady();
      const card = new PtyEnd(path.join(dir, 'card2.pty'));
      const data = randomBytes(300000);
      await card.write(data);
      await waitFor(
        () =>
          existsSync(`${log}.2`) &&
          readFileSync(log).length + readFileSync(`${log}.1`).length + readFileSync(`${log}.2`).length >=
            300000 - 3 * 65536,
      );
      await new Promise((r) => setTimeout(r, 300));
      const cur = readFileSync(log);
      const old1 = readFileSync(`${log}.1`);
      const old2 = readFileSync(`${log}.2`);
      assert.ok(!existsSync(`${log}.3`), 'two generations kept');
      assert.ok(cur.length <= 65536 && old1.length <= 65536 && old2.length <= 65536);
      const kept = Buffer.concat([old2, old1, cur]);
      assert.ok(
        kept.equals(data.subarray(data.length - kept.length)),
        'newest bytes kept in order across FILE.2, FILE.1, FILE',
      );
      card.close();
      closeSync(card.fd);
    } finally {
      await dev.stop();
      await drv.stop();
      rmSync(win, { force: true });
    }
  });
});
