/**
 * The NBD export's client is local but untrusted: a real NBD server (the blk driver of a
 * vopdev pair) against a raw client. Requests whose offset + length would wrap 64 bits
 * get an error and change nothing on the disk; a handshake that never ends (more than
 * 64 options) is closed instead of holding a connection slot; the export keeps serving.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { buildVopdev, NBD_CMD, NbdClient, tempDir, Vopdev } from '../devices/helpers';

const MIB = 1024 * 1024;

function sha(p: string): string {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

describe('the NBD export against a hostile local client', () => {
  let dir = '';
  let drv: Vopdev | null = null;
  let dev: Vopdev | null = null;
  let sock = '';
  let win = '';
  let disk = '';

  before(async () => {
    buildVopdev();
    dir = tempDir('vop-nbd-sec-');
    disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 4 * MIB);
    win = `/dev/shm/vop-nbd-sec-${process.pid}`;
    sock = path.join(dir, 'nbd.sock');
    rmSync(win, { force: true });
    drv = new Vopdev(['--window', win, '--create', '96', '--blk-driver', `1:unix=${sock}:qsize=32:seg=512`]);
    dev = new Vopdev(['--window', win, '--attach', '--blk-device', `1:file=${disk}`]);
    await drv.waitReady();
    await dev.waitReady();
  });
  after(async () => {
    await drv?.stop();
    await dev?.stop();
    rmSync(win, { force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses reads and writes whose offset plus length wraps, and the disk is unchanged', async () => {
    const before0 = sha(disk);
    const c = await NbdClient.connect(sock);
    try {
      const wrap = 0xffff_ffff_ffff_fe00n; // 2^64 - 512: + 1024 wraps to 512
      assert.notEqual((await c.request(NBD_CMD.READ, wrap, 1024)).error, 0, 'read that wraps');
      assert.notEqual(
        (await c.request(NBD_CMD.WRITE, wrap, 1024, Buffer.alloc(1024, 0xee))).error,
        0,
        'write that wraps',
      );
      assert.notEqual(
        (await c.request(NBD_CMD.WRITE, BigInt(4 * MIB), 512, Buffer.alloc(512, 0xee))).error,
        0,
        'write one sector past the end',
      );
      // The connection is still in sync (the refused payloads were skipped): a good read works.
      assert.equal((await c.request(NBD_CMD.READ, 0n, 4096)).error, 0);
    } finally {
      await c.close();
    }
    assert.equal(sha(disk), before0, 'nothing was written');
  });

  it('closes a handshake that sends more than 64 options, and keeps serving others', async () => {
    const s = net.createConnection(sock);
    await once(s, 'connect');
    let received = 0;
    s.on('data', (d: Buffer) => (received += d.length));
    s.on('error', () => undefined);
    const closed = once(s, 'close');
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(3); // FIXED_NEWSTYLE | NO_ZEROES
    const opts: Buffer[] = [flags];
    for (let i = 0; i < 80; i++) {
      const o = Buffer.alloc(16);
      o.write('IHAVEOPT', 0, 'latin1');
      o.writeUInt32BE(3, 8); // NBD_OPT_LIST: answered, the handshake goes on
      o.writeUInt32BE(0, 12);
      opts.push(o);
    }
    s.write(Buffer.concat(opts));
    const t = setTimeout(() => s.destroy(), 20_000);
    await closed;
    clearTimeout(t);
    // Hello (18) plus at most 64 answered options (a SERVER reply of 24 B + 4 + name, then an ACK of 20 B).
    assert.ok(received > 18, 'the first options were answered');
    assert.ok(received <= 18 + 64 * (20 + 4 + 3 + 20 + 20), `at most 64 options answered (got ${received} bytes)`);
    const c = await NbdClient.connect(sock);
    try {
      assert.equal((await c.request(NBD_CMD.READ, 0n, 512)).error, 0);
    } finally {
      await c.close();
    }
  });
});
