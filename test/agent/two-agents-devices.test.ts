/**
 * Two real agents with the real device backends plugged into the link manager: a
 * virtio-console (pty on both sides, AttachConsole on the device side) and a
 * virtio-blk (backing file on the device side, NBD export on the driver side), both
 * served on the link's own window by its workers. Data written through NBD and
 * acknowledged survives a SIGKILL of the device-side agent (the in-flight journal lets
 * the restarted device resume the rings), and of the driver-side agent (the new driver
 * resets the devices); the link returns to Ready by itself after either restart.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tty from 'node:tty';

import type { AttachConsoleResponse } from '../../lib/proto/agent';
import { LinkPhase, type Device } from '../../lib/proto/types';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink } from './helpers';

const MIB = 1024 * 1024;

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

class PtyEnd {
  readonly fd: number;
  private readonly stream: tty.ReadStream;
  got = Buffer.alloc(0);
  constructor(p: string) {
    this.fd = openSync(p, 'r+');
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on('data', (d: Buffer) => {
      this.got = Buffer.concat([this.got, d]);
    });
  }
  write(b: Buffer): void {
    writeSync(this.fd, b);
  }
  close(): void {
    this.stream.destroy();
  }
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('two agents with real console and blk devices', () => {
  const rdv = tempDir('rdv-dev');
  const dir = tempDir('devs');
  const stateA = tempDir('state-a');
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  const shmBefore = new Set(readdirSync('/dev/shm'));
  let b: Agent;
  const disk = path.join(dir, 'disk.img');
  const sock = path.join(dir, 'nbd.sock');
  const devices: Device[] = [
    {
      name: 'con0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'console',
        value: {
          deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'host.pty') } } },
          driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'card.pty') } } },
          log: { path: path.join(dir, 'console.log'), maxBytes: 0n, maxFiles: 0 },
        },
      },
    },
    {
      name: 'disk0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'blk',
        value: {
          backing: { path: disk, readOnly: false, directIo: false, serial: 'vop-test' },
          export: { unixSocket: sock, tcpListen: '', exportName: 'vop' },
        },
      },
    },
  ];
  const stateB = tempDir('state-b');
  // Both agents allow `dir` for every kind of host path the link names.
  const roots = ['--disk-dir', dir, '--socket-dir', dir, '--log-dir', dir, '--pty-dir', dir];
  const startA = async (): Promise<void> => {
    srvA = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, ...roots], {
      stateDir: stateA,
    });
    a = new Agent(srvA.admin);
  };
  const startB = async (): Promise<void> => {
    srvB = await startServer('agent', ['--node-name', 'card-b', '--rendezvous-dir', rdv, ...roots], {
      stateDir: stateB,
    });
    b = new Agent(srvB.admin);
  };
  before(async () => {
    const fd = openSync(disk, 'w', 0o600);
    ftruncateSync(fd, 32 * MIB);
    closeSync(fd);
    await startA();
    await startB();
  });
  after(async () => {
    a.close();
    b.close();
    await Promise.all([srvA.stop('SIGTERM'), srvB.stop('SIGTERM')]);
  });

  it('brings the link up with both devices, carries console bytes through AttachConsole and the ptys', async () => {
    const link = makeLink('real', { devices });
    await Promise.all([a.apply(link), b.apply(link)]);
    const la = await a.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    await b.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    const con = la.status?.devices.find((d) => d.name === 'con0');
    assert.equal(con?.endpoints.backend, 'native');
    const stats = await a.stats('real');
    assert.ok(
      Object.keys(stats.devices.find((d) => d.device === 'disk0')?.counters ?? {}).length > 0,
      'blk counters from the native backend',
    );
    // The devices live in the link's own window: no other shared-memory file appeared.
    const extra = readdirSync('/dev/shm').filter((f) => !shmBefore.has(f) && f.startsWith('vop-dev-'));
    assert.deepEqual(extra, [], 'no per-device sidecar windows');

    // On a heavily loaded machine a starved worker can cost one recovery, which recreates the pty.
    await until(() => existsSync(path.join(dir, 'card.pty')), 10_000);
    const card = new PtyEnd(path.join(dir, 'card.pty'));
    const session = a.client.attachConsole();
    const out: Buffer[] = [];
    let attached: AttachConsoleResponse | null = null;
    session.on('data', (m: AttachConsoleResponse) => {
      if (m.msg?.$case === 'attached') attached = m;
      if (m.msg?.$case === 'output') out.push(Buffer.from(m.msg.value));
    });
    session.on('error', () => undefined);
    try {
      session.write({ msg: { $case: 'open', value: { link: 'real', device: 'con0', write: true, replayBytes: 0 } } });
      await until(() => attached !== null);
      // A second, read-only session watches the same console.
      const watcher = a.client.attachConsole();
      const seen: Buffer[] = [];
      watcher.on('data', (m: AttachConsoleResponse) => {
        if (m.msg?.$case === 'output') seen.push(Buffer.from(m.msg.value));
      });
      watcher.on('error', () => undefined);
      watcher.write({ msg: { $case: 'open', value: { link: 'real', device: 'con0', write: false, replayBytes: 0 } } });
      await new Promise((r) => setTimeout(r, 200));
      // The card (driver side) prints; both sessions on the device side see it.
      card.write(Buffer.from('vop login: '));
      await until(() => Buffer.concat(out).toString().includes('vop login: '));
      await until(() => Buffer.concat(seen).toString().includes('vop login: '));
      watcher.cancel();
      // The operator types; the card's tty reads it.
      session.write({ msg: { $case: 'input', value: Buffer.from('root\r') } });
      await until(() => card.got.toString().includes('root'));
      // A second writer is refused while the first holds the slot.
      const second = a.client.attachConsole();
      const refused = new Promise<number>((resolve) => second.on('error', (e: { code: number }) => resolve(e.code)));
      second.on('data', () => undefined);
      second.write({ msg: { $case: 'open', value: { link: 'real', device: 'con0', write: true, replayBytes: 0 } } });
      assert.equal(await refused, 9, 'FAILED_PRECONDITION for a second writer');
    } finally {
      session.end();
      session.cancel();
      card.close();
    }
  });

  it('keeps blk writes acknowledged over NBD across a SIGKILL of the device-side agent, which recovers by itself', async () => {
    const uri = `nbd+unix:///vop?socket=${sock}`;
    const data = randomBytes(4 * MIB);
    const src = path.join(dir, 'src.bin');
    writeFileSync(src, data);
    const put = await run('nbdcopy', ['--flush', src, uri], { timeoutMs: 60_000 });
    assert.equal(put.code, 0, put.stderr);
    a.close();
    await srvA.stop('SIGKILL');
    await startA();
    const t0 = Date.now();
    await a.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    await b.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    const recoveryMs = Date.now() - t0;
    assert.ok(recoveryMs < 10_000, `Ready again ${recoveryMs} ms after the restart`);
    assert.equal(
      sha256(readFileSync(disk).subarray(0, 4 * MIB)),
      sha256(data),
      'backing file holds every acknowledged write',
    );
    const back = path.join(dir, 'back.bin');
    let get = { code: 1 as number | null, stdout: '', stderr: '' };
    for (let i = 0; i < 50 && get.code !== 0; i++) {
      get = await run('nbdcopy', [uri, back], { timeoutMs: 60_000 });
      if (get.code !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(get.code, 0, get.stderr);
    assert.equal(
      sha256(readFileSync(back).subarray(0, 4 * MIB)),
      sha256(data),
      'reads back through the link after recovery',
    );
  });

  it('recovers from a SIGKILL of the driver-side agent: the new driver resets the devices and serves again', async () => {
    const uri = `nbd+unix:///vop?socket=${sock}`;
    b.close();
    await srvB.stop('SIGKILL');
    await startB();
    const t0 = Date.now();
    await b.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    await a.waitPhase('real', LinkPhase.LINK_PHASE_READY, 15_000);
    const recoveryMs = Date.now() - t0;
    assert.ok(recoveryMs < 10_000, `Ready again ${recoveryMs} ms after the restart`);
    // A write and a read through the new NBD export.
    const data = randomBytes(1 * MIB);
    const src = path.join(dir, 'src2.bin');
    writeFileSync(src, data);
    let put = { code: 1 as number | null, stdout: '', stderr: '' };
    for (let i = 0; i < 50 && put.code !== 0; i++) {
      put = await run('nbdcopy', ['--flush', src, uri], { timeoutMs: 60_000 });
      if (put.code !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(put.code, 0, put.stderr);
    assert.equal(sha256(readFileSync(disk).subarray(0, 1 * MIB)), sha256(data), 'the write reached the backing file');
    // The console carries bytes again on the new card-side pty.
    await until(() => existsSync(path.join(dir, 'card.pty')), 10_000);
    const card = new PtyEnd(path.join(dir, 'card.pty'));
    const session = a.client.attachConsole();
    const out: Buffer[] = [];
    session.on('data', (m: AttachConsoleResponse) => {
      if (m.msg?.$case === 'output') out.push(Buffer.from(m.msg.value));
    });
    session.on('error', () => undefined);
    try {
      session.write({ msg: { $case: 'open', value: { link: 'real', device: 'con0', write: false, replayBytes: 0 } } });
      await new Promise((r) => setTimeout(r, 200));
      card.write(Buffer.from('after restart'));
      await until(() => Buffer.concat(out).toString().includes('after restart'));
    } finally {
      session.cancel();
      card.close();
    }
    await Promise.all([a.delete('real'), b.delete('real')]);
  });
});
