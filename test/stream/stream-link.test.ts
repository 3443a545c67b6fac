/**
 * The stream transport between two real processes (vop-stream, test/native/tools/stream-side.c)
 * in two network namespaces joined by a veth pair, over TCP with HMAC authentication: virtio-net
 * with a TAP on each side (ping both ways between the namespaces behind the TAPs, iperf3 TCP
 * both ways) and a console (bytes both ways between the ptys); once more over a Unix socket.
 * Faults: the veth down and up again (both sides see the link end, the driver side dials again,
 * traffic resumes with no process restarted); kill -9 of the driver side and a new one; a wrong
 * secret (refused on both ends, the reason printed); a hostile client (an oversized frame
 * length, a slow-loris handshake) ends only its own connection and the device side keeps
 * serving. Namespaces, TAPs and processes are removed afterwards, also on failure.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { sh, tempDir } from '../devices/helpers';
import {
  buildVopStream,
  consoleBothWays,
  iperfBothWays,
  pingUntil,
  secretFile,
  StreamSide,
  tapUp,
  VethPair,
} from './helpers';

const missing = [
  ...(isRoot() ? [] : ['root']),
  ...(existsSync('/dev/net/tun') ? [] : ['/dev/net/tun']),
  ...['iperf3', 'ping', 'ip', 'make', 'cc', 'python3'].filter((c) => !haveCommand(c)),
];
const skip = requirePrereq(missing.join(', '), missing.length === 0, 'network namespaces, TAPs, iperf3');

const ready = (l: string): boolean => l === 'ready';
const failed = (l: string): boolean => l.startsWith('failed ');

/** iperf3 -c from ns n to addr for 2 s (reverse: server sends); Gbit/s. */
describe('the stream transport between two namespaces', { skip }, () => {
  let dir = '';
  let secret = '';
  const cleanups: Array<() => Promise<void> | void> = [];

  before(() => {
    buildVopStream();
    dir = tempDir('vop-stream-');
    secret = secretFile(dir, 'secret', randomBytes(32).toString('hex'));
  });
  after(async () => {
    for (const c of cleanups.reverse()) await c();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Device side in a (listening on addr), driver side in b; TAPs 10.<net+1>.0.1 and .2. */
  async function start(
    v: VethPair,
    addr: string,
    tag: string,
    opts: { driverSecret?: string; idleMs?: number } = {},
  ): Promise<{ dev: StreamSide; drv: () => StreamSide; tapNet: string; newDriver: () => Promise<StreamSide> }> {
    const tapD = `${tag}d`;
    const tapR = `${tag}r`;
    const common = ['--secret-file', secret, '--idle-ms', String(opts.idleMs ?? 15000)];
    const dev = new StreamSide(
      ['--listen', addr, ...common, '--net-device', `1:tap=${tapD}`, '--con-device', `2:pty=${dir}/${tag}-dev.pty`],
      v.a,
    );
    cleanups.push(() => dev.stop());
    await dev.waitLines((l) => l.startsWith('listening '));
    let current: StreamSide | null = null;
    const newDriver = async (): Promise<StreamSide> => {
      const drvArgs = [
        '--connect',
        addr,
        '--secret-file',
        opts.driverSecret ?? secret,
        '--idle-ms',
        String(opts.idleMs ?? 15000),
        '--net-driver',
        `1:tap=${tapR}`,
        '--con-driver',
        `2:pty=${dir}/${tag}-drv.pty`,
      ];
      const d = new StreamSide(drvArgs, v.b);
      cleanups.push(() => d.stop());
      await d.waitLines((l) => l.startsWith('dialing '));
      current = d;
      return d;
    };
    await newDriver();
    const tapNet = `10.${v.net + 1}.0`;
    return { dev, drv: () => current as unknown as StreamSide, tapNet, newDriver };
  }

  it('carries ping and iperf3 both ways between the namespaces behind the TAPs and console bytes both ways, over authenticated TCP across a veth pair', async () => {
    const v = new VethPair('vst', 71);
    cleanups.push(() => v.remove());
    const { dev, drv, tapNet } = await start(v, 'tcp:10.71.0.1:7411', 'vst1');
    await dev.waitLines(ready);
    await drv().waitLines(ready);
    tapUp(v.ns, v.a, 'vst1d', `${tapNet}.1/24`);
    tapUp(v.ns, v.b, 'vst1r', `${tapNet}.2/24`);
    assert.ok(await pingUntil(v.ns, v.a, `${tapNet}.2`), 'ping from the device side namespace');
    assert.ok(await pingUntil(v.ns, v.b, `${tapNet}.1`), 'ping from the driver side namespace');
    const p = v.ns.exec(v.a, 'ping', ['-c', '20', '-i', '0.05', '-W', '2', `${tapNet}.2`]);
    assert.match(p.stdout, / 0% packet loss/, p.stdout);

    iperfBothWays(v, `${tapNet}.2`, 'stream link (vop-stream)');

    await consoleBothWays(path.join(dir, 'vst1-dev.pty'), path.join(dir, 'vst1-drv.pty'));
    assert.equal(dev.count(failed), 0, dev.lines.join('\n'));
  });

  it('carries ping over a Unix socket as well', async () => {
    const v = new VethPair('vsu', 73);
    cleanups.push(() => v.remove());
    const { dev, drv, tapNet } = await start(v, `unix:${dir}/stream.sock`, 'vsu1');
    await dev.waitLines(ready);
    await drv().waitLines(ready);
    tapUp(v.ns, v.a, 'vsu1d', `${tapNet}.1/24`);
    tapUp(v.ns, v.b, 'vsu1r', `${tapNet}.2/24`);
    assert.ok(await pingUntil(v.ns, v.a, `${tapNet}.2`));
    assert.ok(await pingUntil(v.ns, v.b, `${tapNet}.1`));
  });

  it('carries a blk device: nbdcopy of a 32 MiB image through the stream link and back, checksums match', async (t) => {
    if (!haveCommand('nbdcopy')) {
      requirePrereq('nbdcopy', false, 'libnbd-bin');
      t.skip('needs nbdcopy');
      return;
    }
    const disk = path.join(dir, 'disk.img');
    const src = path.join(dir, 'src.bin');
    const back = path.join(dir, 'back.bin');
    writeFileSync(disk, Buffer.alloc(0), { mode: 0o600 });
    truncateSync(disk, 64 << 20);
    const data = randomBytes(32 << 20);
    writeFileSync(src, data);
    const sock = path.join(dir, 'blk-stream.sock');
    const nbd = path.join(dir, 'nbd.sock');
    const dev = new StreamSide(
      ['--listen', `unix:${sock}`, '--secret-file', secret, '--blk-device', `1:file=${disk}:fileroot=${dir}`],
      null,
    );
    cleanups.push(() => dev.stop());
    await dev.waitLines((l) => l.startsWith('listening '));
    // 64 KiB segments: a whole request fits one chain slot of the device side (max_chain 68 KiB).
    const drv = new StreamSide(
      ['--connect', `unix:${sock}`, '--secret-file', secret, '--blk-driver', `1:unix=${nbd}:sockroot=${dir}:seg=64`],
      null,
    );
    cleanups.push(() => drv.stop());
    await dev.waitLines(ready);
    await drv.waitLines(ready);
    const uri = `nbd+unix:///?socket=${nbd}`;
    let w = { code: 1 as number | null, stdout: '', stderr: '' };
    for (let i = 0; i < 50 && w.code !== 0; i++) {
      // the export serves once the device runs (its capacity came over in the handshake)
      w = sh('nbdcopy', [src, uri], 60000);
      if (w.code !== 0) await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(w.code, 0, w.stderr);
    const r = sh('nbdcopy', [uri, back], 60000);
    assert.equal(r.code, 0, r.stderr);
    const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    assert.equal(sha(readFileSync(back).subarray(0, data.length)), sha(data), 'read back through the link');
    assert.equal(sha(readFileSync(disk).subarray(0, data.length)), sha(data), 'in the backing file');
  });

  it('resumes after the veth was down for 5 s and after kill -9 of the driver side, without restarting the device side', async () => {
    const v = new VethPair('vsf', 75);
    cleanups.push(() => v.remove());
    const { dev, drv, tapNet, newDriver } = await start(v, 'tcp:10.75.0.1:7413', 'vsf1', { idleMs: 3000 });
    await dev.waitLines(ready);
    await drv().waitLines(ready);
    tapUp(v.ns, v.a, 'vsf1d', `${tapNet}.1/24`);
    tapUp(v.ns, v.b, 'vsf1r', `${tapNet}.2/24`);
    assert.ok(await pingUntil(v.ns, v.a, `${tapNet}.2`));

    v.setUp(false);
    await dev.waitLines(failed, 1, 15000);
    await drv().waitLines(failed, 1, 15000);
    assert.match(drv().lines.find(failed) ?? '', /peer silent/);
    await new Promise((r) => setTimeout(r, 5000));
    v.setUp(true);
    await dev.waitLines(ready, 2, 30000);
    await drv().waitLines(ready, 2, 30000);
    assert.ok(await pingUntil(v.ns, v.a, `${tapNet}.2`), 'ping after the veth came back');

    const old = drv();
    await old.crash();
    await dev.waitLines(failed, 2, 15000);
    // The driver side's TAP went with its process: a new one comes up and dials.
    const d2 = await newDriver();
    await d2.waitLines(ready);
    await dev.waitLines(ready, 3, 20000);
    tapUp(v.ns, v.b, 'vsf1r', `${tapNet}.2/24`);
    assert.ok(await pingUntil(v.ns, v.a, `${tapNet}.2`), 'ping after the driver side was killed and restarted');
    assert.ok(dev.alive());
  });

  it('refuses a wrong secret on both ends with the reason, and a hostile client ends only its own connection', async () => {
    const v = new VethPair('vsw', 77);
    cleanups.push(() => v.remove());
    const wrong = secretFile(dir, 'wrong', 'not-the-secret');
    const { dev, drv } = await start(v, 'tcp:10.77.0.1:7415', 'vsw1', { driverSecret: wrong });
    await drv().waitLines(failed);
    await dev.waitLines(failed);
    assert.match(drv().lines.find(failed) ?? '', /authentication failed/);
    assert.match(dev.lines.find(failed) ?? '', /authentication failed/);
    assert.equal(dev.count(ready) + drv().count(ready), 0);
    await drv().stop();

    // Hostile clients from the driver namespace: an oversized hello, then silence (slow-loris).
    const hostile = (payload: Buffer): void => {
      const script = `import socket,time\ns=socket.create_connection(("10.77.0.1",7415))\ns.sendall(bytes.fromhex("${payload.toString('hex')}"))\ntime.sleep(7)\n`;
      const r = v.ns.exec(v.b, 'python3', ['-c', script], 15000);
      assert.equal(r.code, 0, r.stderr);
    };
    const before = dev.count(failed);
    const big = Buffer.alloc(8);
    big.writeUInt32LE(1 << 30, 0);
    big[4] = 0x01;
    hostile(big);
    hostile(Buffer.from([0x34, 0x00])); // two bytes of a header, then nothing
    await dev.waitLines(failed, before + 2, 20000);
    const reasons = dev.lines.filter(failed).slice(before);
    assert.ok(
      reasons.some((l) => /exceeds the negotiated max_frame/.test(l)),
      reasons.join('\n'),
    );
    assert.ok(
      reasons.some((l) => /handshake timed out/.test(l)),
      reasons.join('\n'),
    );
    assert.ok(dev.alive(), 'the device side keeps serving');
  });
});
