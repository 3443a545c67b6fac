/**
 * Idle costs nothing: two vopdev processes with an idle console, disk and
 * (datagram) network device each use no measurable CPU, and their device
 * loops sleep (a couple of heartbeat wake-ups per second).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { buildVopdev, tempDir, Vopdev } from './helpers';

function cpuTicks(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return Number(rest[11]) + Number(rest[12]); // utime + stime
}

function switches(pid: number): number {
  let n = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    const m = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8'));
    n += Number(m?.[1] ?? 0);
  }
  return n;
}

describe('idle devices', () => {
  it('use no measurable CPU and sleep between heartbeats', async () => {
    buildVopdev();
    const dir = tempDir('vop-idle-');
    const win = `/dev/shm/vop-idle-test-${process.pid}`;
    rmSync(win, { force: true });
    const disk = path.join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(0));
    truncateSync(disk, 8 << 20);
    const base = 30000 + (process.pid % 10000);
    const drv = new Vopdev([
      '--window',
      win,
      '--create',
      '96',
      '--con-driver',
      `2:pty=${dir}/card.pty`,
      '--blk-driver',
      `1:unix=${dir}/nbd.sock:qsize=8`,
      '--net-driver',
      `3:udp=${base}:udppeer=${base + 1}`,
    ]);
    const dev = new Vopdev([
      '--window',
      win,
      '--attach',
      '--con-device',
      `2:log=${dir}/con.log`,
      '--blk-device',
      `1:file=${disk}`,
      '--net-device',
      `3:udp=${base + 2}:udppeer=${base + 3}`,
    ]);
    try {
      await drv.waitReady();
      await dev.waitReady();
      await new Promise((r) => setTimeout(r, 1000));
      const pids = [drv.proc.pid ?? 0, dev.proc.pid ?? 0];
      const t0 = pids.map(cpuTicks);
      const s0 = pids.map(switches);
      await new Promise((r) => setTimeout(r, 5000));
      const t1 = pids.map(cpuTicks);
      const s1 = pids.map(switches);
      for (let i = 0; i < 2; i++) {
        const ticks = (t1[i] ?? 0) - (t0[i] ?? 0);
        const wakes = ((s1[i] ?? 0) - (s0[i] ?? 0)) / 5;
        process.stdout.write(
          `# ${i === 0 ? 'driver' : 'device'} side: ${ticks} ticks in 5 s, ${wakes.toFixed(1)} context switches/s\n`,
        );
        assert.ok(ticks <= 10, `idle ${i === 0 ? 'driver' : 'device'} side used ${ticks} ticks (1/100 s) in 5 s`);
        assert.ok(wakes < 50, `idle ${i === 0 ? 'driver' : 'device'} side woke ${wakes}/s`);
      }
    } finally {
      await dev.stop();
      await drv.stop();
      rmSync(win, { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
