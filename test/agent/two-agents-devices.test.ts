/**
 * Two real agents with the real device backends plugged into the link manager: a
 * virtio-console (pty on both sides, AttachConsole on the device side) and a
 * virtio-blk (backing file on the device side, NBD export on the driver side), both
 * served on the link's own window by its workers. A SIGKILL of the device-side agent
 * lands while NBD writes are in flight: they complete once it is back (the in-flight
 * journal lets the restarted device resume the rings) and every acknowledged write is in
 * the backing file and reads back through the link. After a SIGKILL of the driver-side
 * agent the new driver resets the devices and serves again; the link returns to Ready by
 * itself after either restart.
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
import { waitFor } from '../controller/fleet-helpers';
import { NBD_CMD, NbdClient } from '../devices/helpers';
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

async function until(pred: () => boolean, ms = 20_000): Promise<void> {
  await waitFor('a condition', pred, ms, 20);
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
  // Each blk write sleeps 20 ms in the device's I/O thread (a hook of native/devices/dev_blk.c for
  // tests), so that requests are inside the device (popped and journaled, not yet done) when it dies.
  const startA = async (): Promise<void> => {
    srvA = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, ...roots], {
      stateDir: stateA,
      env: { VOP_BLK_TEST_DELAY_US: '20000' },
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

  it('keeps every blk write acknowledged over NBD across a SIGKILL of the device-side agent that lands with writes in flight', async (t) => {
    const uri = `nbd+unix:///vop?socket=${sock}`;
    // A client keeps QD writes of distinct 64 KiB blocks outstanding and records which the export
    // acknowledged; after KILL_AFTER more acknowledgements the device-side agent is killed from
    // inside one. Writes are slow in the device (20 ms, see startA), so some are in flight inside
    // it: popped from the ring and journaled, not done. The restarted device says how many it found
    // in its journal and re-executed (its blk counter "recovered"); a kill that found none (a
    // starved machine can leave every request waiting on the ring) proves nothing about the
    // journal, so the workload goes on and the agent is killed again, at most three times.
    const BLOCK = 64 * 1024;
    const QD = 8;
    const KILL_AFTER = 32;
    const nbd = await NbdClient.connect(sock);
    const blocks = Math.floor(Number(nbd.size) / BLOCK);
    const writes: { block: number; data: Buffer; result?: number }[] = [];
    const settled: Promise<void>[] = [];
    const recoveredOf = async (): Promise<bigint> => {
      const c = (await a.stats('real')).devices.find((d) => d.device === 'disk0')?.counters ?? {};
      return Object.entries(c).find(([k]) => /(^|_)recovered$/.test(k))?.[1] ?? 0n;
    };
    const cycles: string[] = [];
    let recovered = 0n;
    for (let cycle = 1; cycle <= 3 && recovered === 0n; cycle++) {
      let acked = 0;
      let inflightAtKill = -1;
      const issue = (): void => {
        if (inflightAtKill >= 0 || writes.length >= blocks) return;
        const w = { block: writes.length, data: randomBytes(BLOCK), result: undefined as number | undefined };
        writes.push(w);
        settled.push(
          nbd.request(NBD_CMD.WRITE, BigInt(w.block * BLOCK), BLOCK, w.data).then((r) => {
            w.result = r.error;
            if (r.error === 0) acked++;
            issue();
            if (acked === KILL_AFTER && inflightAtKill < 0) {
              srvA.proc.kill('SIGKILL');
              inflightAtKill = writes.filter((x) => x.result === undefined).length;
            }
          }),
        );
      };
      for (let i = 0; i < QD; i++) issue();
      await waitFor('the kill', () => inflightAtKill >= 0, 60_000);
      a.close();
      await srvA.stop('SIGKILL');
      assert.ok(inflightAtKill > 0, `writes outstanding when the kill landed: ${inflightAtKill}`);
      await startA();
      await a.waitPhase('real', LinkPhase.LINK_PHASE_READY, 60_000);
      await b.waitPhase('real', LinkPhase.LINK_PHASE_READY, 60_000);
      // The writes outstanding at the kill complete once the device is back.
      await Promise.race([
        Promise.all(settled),
        new Promise((_, reject) => setTimeout(() => reject(new Error('in-flight writes never completed')), 60_000)),
      ]);
      recovered = await recoveredOf();
      cycles.push(`kill ${cycle}: ${inflightAtKill} outstanding, ${recovered} re-executed from the journal`);
    }
    await nbd.close();
    t.diagnostic(`${writes.length} writes; ${cycles.join('; ')}`);
    assert.ok(recovered > 0n, `a kill landed with writes inside the device: ${cycles.join('; ')}`);
    const ok = writes.filter((w) => w.result === 0);
    assert.deepEqual(
      writes.filter((w) => w.result !== 0).map((w) => [w.block, w.result]),
      [],
      'every write outstanding at a kill completed without error (pairs of block and NBD error)',
    );
    // Every acknowledged write is in the backing file, byte for byte.
    const disk0 = readFileSync(disk);
    for (const w of ok)
      assert.ok(
        disk0.subarray(w.block * BLOCK, (w.block + 1) * BLOCK).equals(w.data),
        `acknowledged block ${w.block} is in the backing file`,
      );
    // And reads back through the link after recovery.
    const back = path.join(dir, 'back.bin');
    let get = { code: 1 as number | null, stdout: '', stderr: '' };
    for (let i = 0; i < 50 && get.code !== 0; i++) {
      get = await run('nbdcopy', [uri, back], { timeoutMs: 60_000 });
      if (get.code !== 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(get.code, 0, get.stderr);
    const viaLink = readFileSync(back);
    for (const w of ok)
      assert.ok(
        viaLink.subarray(w.block * BLOCK, (w.block + 1) * BLOCK).equals(w.data),
        `acknowledged block ${w.block} reads back through the link`,
      );
  });

  it('recovers from a SIGKILL of the driver-side agent: the new driver resets the devices and serves again', async () => {
    const uri = `nbd+unix:///vop?socket=${sock}`;
    b.close();
    await srvB.stop('SIGKILL');
    await startB();
    // Back to Ready by itself (a generous deadline, no timing claim on a shared machine).
    await b.waitPhase('real', LinkPhase.LINK_PHASE_READY, 60_000);
    await a.waitPhase('real', LinkPhase.LINK_PHASE_READY, 60_000);
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
