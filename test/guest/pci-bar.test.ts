/**
 * The pci-bar transport (native/core/xport_pci.c) against a real guest kernel's PCI stack under
 * QEMU TCG, in C only (no agent yet): the host process holds the memory as a peer of
 * vop-ivshmem-server and creates the window; the guest maps BAR2 of its ivshmem-doorbell device
 * and is the device side of a verified byte pipe (native/out/guest/vop-pci-pipe, static). Messages
 * go both ways and every one is checked on arrival.
 * - vfio-pci: the guest maps BAR2 through vfio and takes the host's rings as MSI-X (an eventfd
 *   through VFIO_DEVICE_SET_IRQS); it rings the host through BAR0's doorbell register. Both sides
 *   count signals sent and interrupts taken.
 * - sysfs resource2 + resource0, polled: no interrupt path in the guest, so it never asks to be
 *   signalled and looks at the host's kick word; it still rings the host through resource0.
 * One boot serves the file. TCG figures are not performance figures.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';

import { repoPath } from '../../lib/src/paths';
import { Guest, guestSkip } from '../helpers/guest';
import { IvshmemServer } from '../helpers/ivshmem';

const SIZE = 4 << 20;
const BDF = '0000:00:06.0';
const COUNT = 300;
const MSG = 128;

interface Done {
  rx: number;
  tx: number;
  bad: number;
  signals: number;
  interrupts: number;
  polls: number;
}

function parseDone(out: string): Done {
  const m = /done rx=(\d+) tx=(\d+) bad=(\d+) signals=(\d+) interrupts=(\d+) polls=(\d+)/.exec(out);
  assert.ok(m, `no "done" line in: ${out}`);
  const [rx, tx, bad, signals, interrupts, polls] = m.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  return { rx, tx, bad, signals, interrupts, polls };
}

/** The host side: creates the window in the server's memory and drives the pipe. */
class HostSide {
  out = '';
  err = '';
  readonly exited: Promise<number | null>;
  private readonly proc: ChildProcess;

  constructor(bin: string, socket: string, guestId: number, extra: readonly string[]) {
    const args = ['--ivshmem', socket, '--create', '--driver', '--peer', String(guestId), '--count', String(COUNT)];
    this.proc = spawn(bin, [...args, '--msg', String(MSG), '--timeout-ms', '240000', ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout?.setEncoding('utf8').on('data', (c: string) => (this.out += c));
    this.proc.stderr?.setEncoding('utf8').on('data', (c: string) => (this.err += c));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
  }

  async ownId(): Promise<number> {
    for (let i = 0; i < 300; i++) {
      const m = /ready id=(\d+)/.exec(this.out);
      if (m) return Number(m[1]);
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`host vop-pci-pipe never got ready: ${this.out} ${this.err}`);
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

describe('pci-bar transport in a QEMU guest (vfio MSI-X and polled sysfs)', { skip: guestSkip() }, () => {
  let dir: string;
  let server: IvshmemServer;
  let g: Guest;
  let hostBin: string;
  let guestId: number;

  before(async () => {
    execFileSync('make', ['-s', '-C', repoPath('native'), 'tools', 'out/guest/vop-pci-pipe'], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    hostBin = repoPath('native', 'out', 'tools', 'vop-pci-pipe');
    dir = mkdtempSync(path.join(os.tmpdir(), 'vop-pci-bar-test-'));
    server = await IvshmemServer.start({ socket: path.join(dir, 'ivshmem.sock'), sizeBytes: SIZE, vectors: 1 });
    g = await Guest.boot({
      name: 'pci-bar-test',
      iommu: true,
      programs: ['ivshmem-vfio'],
      files: [{ path: 'bin/vop-pci-pipe', source: repoPath('native', 'out', 'guest', 'vop-pci-pipe') }],
      ivshmemDoorbell: [{ socket: server.socket, vectors: 1, slot: 6 }],
    });
    // Binds the device to vfio-pci and reads the id the server gave the guest (IVPosition).
    const info = await g.run(`ivshmem-vfio -a ${BDF} -v 1 info`);
    const m = /id=(\d+)/.exec(info);
    assert.ok(m, info);
    guestId = Number(m[1]);
  });

  afterEach((t) => g?.noteTest(t));

  after(async () => {
    await g?.close();
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function pipeWith(
    guestArgs: string,
    hostArgs: readonly string[] = [],
  ): Promise<{ host: Done; guest: Done; ms: number }> {
    const host = new HostSide(hostBin, server.socket, guestId, hostArgs);
    try {
      const hostId = await host.ownId();
      const t0 = Date.now();
      const out = await g.run(
        `vop-pci-pipe ${guestArgs} --peer ${hostId} --device --count ${COUNT} --msg ${MSG} --timeout-ms 240000`,
        { timeoutMs: 300_000 },
      );
      const code = await host.exited;
      assert.equal(code, 0, `host side: ${host.out} ${host.err}`);
      return { host: parseDone(host.out), guest: parseDone(out), ms: Date.now() - t0 };
    } finally {
      host.kill();
    }
  }

  it('vfio-pci: BAR2 as the window, a verified pipe both ways', async () => {
    const { host, guest, ms } = await pipeWith(`--vfio ${BDF} --bar-index 2`);
    for (const d of [host, guest]) {
      assert.equal(d.rx, COUNT);
      assert.equal(d.tx, COUNT);
      assert.equal(d.bad, 0);
    }
    console.log(`vfio: ${COUNT} messages of ${MSG} B each way in ${ms} ms under TCG (not a performance figure)`);
  });

  it('vfio-pci ping-pong: MSI-X doorbells from the host wake the guest, register doorbells wake the host', async () => {
    // One message in flight, workers that sleep at once: every round trip needs a doorbell each way
    // once the guest is asleep. The host (native speed) may answer before the TCG guest went to
    // sleep after its echo, so a run can pass with the guest never asleep and nothing to wake:
    // up to three runs, until the host had to ring a sleeping guest.
    const ping = (): ReturnType<typeof pipeWith> =>
      pipeWith(`--vfio ${BDF} --bar-index 2 --echo --spin-ns 0`, ['--inflight', '1', '--spin-ns', '0']);
    let run = await ping();
    for (let attempt = 2; attempt <= 3 && run.host.signals === 0; attempt++) {
      console.log(`ping-pong run ${attempt - 1}: the guest never slept (host ${JSON.stringify(run.host)}); again`);
      run = await ping();
    }
    const { host, guest, ms } = run;
    assert.equal(host.rx, COUNT);
    assert.equal(host.tx, COUNT);
    assert.equal(host.bad, 0); // the host's sink verified every echoed message
    assert.equal(guest.rx, COUNT);
    const both = `host ${JSON.stringify(host)} guest ${JSON.stringify(guest)}`;
    assert.ok(host.signals > 0 && guest.interrupts > 0, both);
    assert.ok(guest.signals > 0 && host.interrupts > 0, both);
    console.log(
      `vfio ping-pong under TCG: ${((ms * 1000) / COUNT).toFixed(0)} us per round trip, ${guest.interrupts} MSI-X interrupts in the guest (not a performance figure)`,
    );
  });

  it('sysfs resource2 polled: the guest is never signalled and still carries the pipe both ways', async () => {
    // Out of vfio's hands again, so that sysfs may map the BARs.
    await g.run(`echo ${BDF} > /sys/bus/pci/drivers/vfio-pci/unbind`);
    const sys = `/sys/bus/pci/devices/${BDF}`;
    const { host, guest } = await pipeWith(`--bar ${sys}/resource2 --regs ${sys}/resource0 --poll`);
    for (const d of [host, guest]) {
      assert.equal(d.rx, COUNT);
      assert.equal(d.tx, COUNT);
      assert.equal(d.bad, 0);
    }
    assert.equal(guest.interrupts, 0);
    assert.equal(host.signals, 0, 'the guest never set waiting, so the host never rang it');
    assert.ok(guest.polls > 0);
    assert.ok(guest.signals > 0 && host.interrupts > 0, 'the guest rang the host through resource0');
  });
});
