/**
 * The guest harness itself: one TCG guest boots within its deadline, runs commands through
 * vop-guest-agent (exit codes, stdout/stderr, stdin, concurrency, a timeout that kills), answers on
 * QMP, has its RAM in a shared memfd (what vhost-user needs), a virtio-net NIC on a TAP in a
 * network namespace of the test's own and a host folder over virtio-9p, and powers off. Prints the
 * boot time.
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { Guest, guestSkip } from '../helpers/guest';

const execFileP = promisify(execFile);

describe('guest harness: boot, exec, QMP, poweroff', { skip: guestSkip() }, () => {
  let g: Guest;
  const netns = `vopguest${process.pid}`;
  const ip = (...args: string[]): void => {
    const r = spawnSync('ip', args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  };

  let shareDir: string;

  before(async () => {
    shareDir = mkdtempSync(path.join(os.tmpdir(), 'vop-boot-share-'));
    writeFileSync(path.join(shareDir, 'from-host'), 'written by the host\n');
    ip('netns', 'add', netns);
    g = await Guest.boot({
      name: 'boot-test',
      bootTimeoutMs: 60_000,
      sharedMemory: true,
      netns,
      tap: [{ ifname: 'vtap0', mac: '52:54:00:00:78:02' }],
      shares: [{ hostPath: shareDir, guestPath: '/host' }],
    });
    console.log(`guest boot: ${g.bootMs} ms wall, guest uptime ${g.guestUptimeMs} ms at agent start`);
  });

  afterEach((t) => g?.noteTest(t));

  after(async () => {
    await g?.close();
    spawnSync('ip', ['netns', 'del', netns]);
    if (shareDir) rmSync(shareDir, { recursive: true, force: true });
  });

  it('runs uname -r in the guest and gets the Debian kernel version', async () => {
    const r = await g.exec('uname -r');
    assert.equal(r.code, 0);
    assert.match(r.stdout.trim(), /^6\.1\.\d+-\d+-amd64$/);
  });

  it('reads /proc/interrupts (the serial port and the virtio-serial channel have interrupts)', async () => {
    const out = await g.run('cat /proc/interrupts');
    assert.match(out, /ttyS0/);
    assert.match(out, /virtio\d+-virtqueues|PCI-MSI/);
  });

  it('reports exit codes and stderr, and passes stdin through byte for byte', async () => {
    const r = await g.exec('echo out; echo err >&2; exit 7');
    assert.deepEqual([r.code, r.stdout, r.stderr], [7, 'out\n', 'err\n']);
    const blob = randomBytes(300_000);
    const sum = await g.run('sha256sum', { stdin: blob });
    assert.equal(sum.split(' ')[0], createHash('sha256').update(blob).digest('hex'));
    await g.writeFile('/tmp/blob', blob);
    assert.deepEqual(await g.readFile('/tmp/blob'), blob);
  });

  it('runs commands concurrently, kills one on request and one that overruns its timeout', async () => {
    const slow = g.spawn('echo started; sleep 30; echo never');
    await slow.waitForOutput(/started/);
    const fast = await g.exec('echo fast');
    assert.equal(fast.stdout, 'fast\n');
    assert.equal(slow.running, true);
    slow.kill(15);
    const r = await slow.exited;
    assert.deepEqual([r.code, r.stdout], [128 + 15, 'started\n']);
    await assert.rejects(g.exec('sleep 30', { timeoutMs: 500 }), /timed out after 500 ms/);
    g.failed = false; // the timeout was the point: no logs to keep for it
    assert.equal((await g.exec('true')).code, 0);
  });

  it('answers QMP: query-status says running, query-pci lists the virtio-serial device', async () => {
    const st = await g.qmp.execute<{ status: string }>('query-status');
    assert.equal(st.status, 'running');
    const pci = await g.qmp.execute<{ devices: { id: { vendor: number; device: number } }[] }[]>('query-pci');
    const ids = pci.flatMap((b) => b.devices.map((d) => `${d.id.vendor.toString(16)}:${d.id.device.toString(16)}`));
    assert.ok(ids.includes('1af4:1003') || ids.includes('1af4:1043'), ids.join(' '));
  });

  it('guest RAM is a shared memfd (what a vhost-user backend maps)', async () => {
    const mem = await g.qmp.execute<{ id?: string; share: boolean; size: number }[]>('query-memdev');
    const ram = mem.find((m) => m.id === 'vopmem');
    assert.ok(ram, JSON.stringify(mem));
    assert.equal(ram.share, true);
    assert.equal(ram.size, 512 * 1024 * 1024);
  });

  it('virtio-net on a TAP in the test namespace: the guest and the namespace ping each other', async () => {
    ip('-n', netns, 'addr', 'add', '10.78.0.1/24', 'dev', 'vtap0');
    ip('-n', netns, 'link', 'set', 'vtap0', 'up');
    const mac = await g.run('cat /sys/class/net/eth0/address');
    assert.equal(mac.trim(), '52:54:00:00:78:02');
    await g.run('ip addr add 10.78.0.2/24 dev eth0 && ip link set eth0 up');
    assert.match(await g.run('ping -c 2 -W 5 10.78.0.1', { timeoutMs: 30_000 }), /2 packets received/);
    const r = await execFileP('ip', ['netns', 'exec', netns, 'ping', '-c', '2', '-W', '5', '10.78.0.2'], {
      timeout: 30_000,
    });
    assert.match(r.stdout, /2 packets transmitted, 2 received/); // iputils; a failure would reject
  });

  it('a host folder over virtio-9p: the guest reads the host file and writes one the host reads', async () => {
    assert.equal(await g.run('cat /host/from-host'), 'written by the host\n');
    await g.run('echo written by the guest > /host/from-guest && sync');
    assert.equal(readFileSync(path.join(shareDir, 'from-guest'), 'utf8'), 'written by the guest\n');
  });

  it('powers off: QEMU exits 0', async () => {
    const t0 = Date.now();
    assert.equal(await g.poweroff(30_000), 0);
    console.log(`guest poweroff: ${Date.now() - t0} ms`);
  });
});
