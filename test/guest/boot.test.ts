/**
 * The guest harness itself: one TCG guest boots within its deadline, runs commands through
 * vop-guest-agent (exit codes, stdout/stderr, stdin, concurrency, a timeout that kills), answers on
 * QMP, and powers off. Prints the boot time.
 */
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';

import { Guest, guestSkip } from '../helpers/guest';

describe('guest harness: boot, exec, QMP, poweroff', { skip: guestSkip() }, () => {
  let g: Guest;

  before(async () => {
    g = await Guest.boot({ name: 'boot-test', bootTimeoutMs: 60_000 });
    console.log(`guest boot: ${g.bootMs} ms wall, guest uptime ${g.guestUptimeMs} ms at agent start`);
  });

  after(async () => {
    await g?.close();
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

  it('runs commands concurrently and kills one that overruns its timeout', async () => {
    const slow = g.spawn('sleep 1; echo slow');
    const fast = await g.exec('echo fast');
    assert.equal(fast.stdout, 'fast\n');
    assert.equal(slow.running, true);
    assert.equal((await slow.exited).stdout, 'slow\n');
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

  it('powers off: QEMU exits 0', async () => {
    const t0 = Date.now();
    assert.equal(await g.poweroff(30_000), 0);
    console.log(`guest poweroff: ${Date.now() - t0} ms`);
  });
});
