/**
 * The stream transport over AF_VSOCK (this machine's kernel has no vsock transport; Debian's guest
 * kernel has vsock_loopback): two vop-card processes (the static card-side binary,
 * native/out/guest/vop-card, window.access=stream) inside one QEMU guest, joined by vsock loopback
 * (the device side listens on vsock:any:PORT, the driver side dials vsock:1:PORT, CID 1 being the
 * local one). One boot for every check:
 *  - authenticated with the HMAC secret: console bytes both ways between the two ptys, and a disk:
 *    the device side serves a file in the guest's tmpfs, the driver side surfaces it as /dev/nbd0
 *    (the kernel's NBD client on vop-card's export); 1 MiB written with dd through /dev/nbd0 is in
 *    the file (checksums equal) and reads back;
 *  - TLS 1.3 with mutual certificates (made with the openssl CLI on the host) over the same vsock
 *    loopback: console bytes, and the status line says TLSv1.3;
 *  - a wrong secret is refused on both ends with the reason, and vop-card stays up.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { after, afterEach, before, describe, it } from 'node:test';

import { repoPath } from '../../lib/src/paths';
import { Guest, guestSkip } from '../helpers/guest';
import type { GuestProcess } from '../helpers/guest-channel';
import { tempDir } from '../helpers/servers';
import { haveCommand } from '../helpers/prereq';
import { TestPki } from '../stream/tls-certs';

const skip = guestSkip() || (haveCommand('openssl') ? false : 'needs the openssl CLI');

describe('the stream transport over vsock between two vop-card processes in one QEMU guest', { skip }, () => {
  let g: Guest;
  let dir = '';
  const procs: GuestProcess[] = [];

  const card = async (name: string, lines: readonly string[], until: RegExp): Promise<GuestProcess> => {
    await g.writeFile(`/etc/${name}.conf`, [...lines, ''].join('\n'));
    const p = g.spawn(`vop-card --config /etc/${name}.conf`);
    procs.push(p);
    await p.waitForOutput(until, 60_000);
    return p;
  };
  const stop = async (p: GuestProcess): Promise<void> => {
    p.kill();
    await p.exited.catch(() => undefined);
  };
  /**
   * Bytes written into one pty come out of the other. The reader is no session leader, and it is
   * dd, not cat: busybox cat copies with sendfile(), and a splice from a tty into the agent's
   * stdout pipe holds the pipe's mutex while the tty read sleeps, so the guest agent (PID 1)
   * blocks in pipe_read in D state until the pty has data (Linux 6.1).
   */
  const consoleOneWay = async (from: string, to: string, text: string): Promise<void> => {
    const reader = g.spawn(`dd if=${to} bs=64 2>/dev/null & wait`);
    try {
      await new Promise((r) => setTimeout(r, 300));
      await g.run(`(printf "${text}\\n" > ${from})`);
      await reader.waitForOutput(new RegExp(text), 60_000);
    } finally {
      reader.kill();
      await reader.exited.catch(() => undefined);
    }
  };

  before(async () => {
    execFileSync('make', ['-s', '-C', repoPath('native'), 'out/guest/vop-card'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    dir = tempDir('stream-vsock');
    const pki = new TestPki(dir);
    const a = pki.issue('card-dev');
    const b = pki.issue('card-drv');
    const pem = (p: string): string => readFileSync(p, 'utf8');
    g = await Guest.boot({
      name: 'stream-vsock',
      files: [{ path: '/bin/vop-card', source: repoPath('native', 'out', 'guest', 'vop-card') }],
    });
    await g.run('mkdir -p /etc/tls');
    for (const [f, p] of [
      ['ca.pem', pki.ca],
      ['dev.pem', a.cert],
      ['dev.key', a.key],
      ['drv.pem', b.cert],
      ['drv.key', b.key],
    ] as const)
      await g.writeFile(`/etc/tls/${f}`, pem(p));
    await g.writeFile('/run/secret', 'a-link-secret-of-the-vsock-test\n');
    await g.writeFile('/run/wrong', 'another-secret-that-is-not-it\n');
    await g.run('chmod 600 /etc/tls/dev.key /etc/tls/drv.key /run/secret /run/wrong');
  });
  afterEach((t) => g?.noteTest(t));
  after(async () => {
    for (const p of procs) p.kill();
    await g?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('carries console bytes both ways and a disk through /dev/nbd0 over vsock loopback with the HMAC secret', async () => {
    assert.match(await g.run('ls /dev/vsock && cat /proc/modules'), /vsock_loopback/);
    await g.run('dd if=/dev/zero of=/tmp/disk.img bs=1048576 count=8 2>/dev/null');
    const dev = await card(
      'dev',
      [
        'window.access=stream',
        'window.path=vsock:any:5000',
        'stream.secret_file=/run/secret',
        'device.con0.kind=console',
        'device.con0.role=device',
        'device.con0.pty=/run/dcon.pty',
        'device.disk0.kind=blk',
        'device.disk0.role=device',
        'device.disk0.file=/tmp/disk.img',
      ],
      /listening vsock:any:5000/,
    );
    const drv = await card(
      'drv',
      [
        'window.access=stream',
        'window.path=vsock:1:5000',
        'stream.secret_file=/run/secret',
        'device.con0.kind=console',
        'device.con0.role=driver',
        'device.con0.pty=/run/rcon.pty',
        'device.disk0.kind=blk',
        'device.disk0.role=driver',
        'device.disk0.nbd_unix=/run/disk0.nbd',
        'device.disk0.nbd_device=/dev/nbd0',
      ],
      /ready stream vsock:1:5000/,
    );
    assert.match(drv.stdout(), /connected hmac/);
    await dev.waitForOutput(/connected hmac/, 30_000);
    await consoleOneWay('/run/dcon.pty', '/run/rcon.pty', 'hello-driver-side');
    await consoleOneWay('/run/rcon.pty', '/run/dcon.pty', 'hello-device-side');

    await g.run('dd if=/dev/urandom of=/tmp/pattern bs=65536 count=16 2>/dev/null');
    const want = (await g.run('sha256sum /tmp/pattern')).split(' ')[0];
    await g.run('dd if=/tmp/pattern of=/dev/nbd0 bs=65536 seek=16 conv=fsync 2>/dev/null && sync', {
      timeoutMs: 120_000,
    });
    const inFile = (await g.run('dd if=/tmp/disk.img bs=65536 skip=16 count=16 2>/dev/null | sha256sum')).split(' ')[0];
    assert.equal(inFile, want, 'the bytes written through /dev/nbd0 are in the device side file');
    await g.run('echo 3 > /proc/sys/vm/drop_caches');
    const back = (await g.run('dd if=/dev/nbd0 bs=65536 skip=16 count=16 2>/dev/null | sha256sum')).split(' ')[0];
    assert.equal(back, want, 'and read back through /dev/nbd0');
    await stop(drv);
    await stop(dev);
  });

  it('runs TLS 1.3 with mutual certificates over vsock, and refuses a wrong secret on both ends with the reason', async () => {
    const tls = (me: string, peer: string): string[] => [
      'stream.tls_ca=/etc/tls/ca.pem',
      `stream.tls_cert=/etc/tls/${me}.pem`,
      `stream.tls_key=/etc/tls/${me}.key`,
      `stream.tls_peer=${peer}`,
    ];
    const console = (role: string, pty: string): string[] => [
      'device.con1.kind=console',
      `device.con1.role=${role}`,
      `device.con1.pty=${pty}`,
    ];
    const sdev = await card(
      'sdev',
      [
        'window.access=stream',
        'window.path=vsock:any:5002',
        'stream.secret_file=/run/secret',
        ...console('device', '/run/sd.pty'),
      ],
      /listening/,
    );
    const sdrv = await card(
      'sdrv',
      [
        'window.access=stream',
        'window.path=vsock:1:5002',
        'stream.secret_file=/run/wrong',
        ...console('driver', '/run/sr.pty'),
      ],
      /failed .*authentication failed/,
    );
    await sdev.waitForOutput(/failed .*authentication failed: the peer does not know the link secret/, 30_000);
    assert.doesNotMatch(sdrv.stdout(), /connected/);
    assert.equal(
      await Promise.race([sdev.exited.then(() => 'exited'), new Promise((r) => setTimeout(() => r('up'), 500))]),
      'up',
    );
    await stop(sdrv);
    await stop(sdev);
    const dev = await card(
      'tdev',
      [
        'window.access=stream',
        'window.path=vsock:any:5001',
        ...tls('dev', 'card-drv'),
        ...console('device', '/run/tdcon.pty'),
      ],
      /listening/,
    );
    const drv = await card(
      'tdrv',
      [
        'window.access=stream',
        'window.path=vsock:1:5001',
        ...tls('drv', 'card-dev'),
        ...console('driver', '/run/trcon.pty'),
      ],
      /ready stream/,
    );
    assert.match(drv.stdout(), /connected TLSv1\.3 TLS_/);
    await consoleOneWay('/run/tdcon.pty', '/run/trcon.pty', 'hello-over-tls');
    await consoleOneWay('/run/trcon.pty', '/run/tdcon.pty', 'and-back-over-tls');
    await stop(drv);
    await stop(dev);
  });
});
