#!/usr/bin/env node
// npm run bench:pci [-- --runs N] [--seconds S] [--idle-seconds S] [--json FILE]
//
// The ring benchmark over the pci-bar transport against shm, in the same run (not a timed
// test). Builds native/out/bench/ring-bench and native/out/tools/vop-ivshmem-server, starts the
// server (16 MiB of shared memory, one vector) and, for 64 B and 1500 B messages, runs a byte
// pipe between two processes (driver copies each message into the window and posts it, device
// copies it out; 256-entry queues, half a ring per publish):
//   pci    both processes are peers of the ivshmem server (the memory-holding side of pci-bar):
//          the window is the server's memory, doorbells are eventfds through the server protocol;
//   shm    the same on a window file, futex doorbells;
// each in two link modes: "poll" (the workers never sleep) and "event" (they sleep on the
// doorbell as soon as idle: every wake-up is a doorbell). Each repetition runs pci and shm back
// to back, alternating which goes first, and the ratio pci/shm is taken per repetition (medians
// of paired ratios cancel the slow phases of a shared machine). Target: pci >= 0.8 x shm.
// Then the CPU of an idle established link over pci-bar: with the polled doorbell (no interrupt
// path: each side looks at the peer's kick word with adaptive naps; target < 1 % of a core) and
// event-driven.
//
// --json FILE: { "results": [ { "size", "mode", "pci_msgs_per_s", "shm_msgs_per_s", ... } ],
//               "idle": {...}, "details": {...} } with medians.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'native', 'out', 'bench', 'ring-bench');
const server = path.join(root, 'native', 'out', 'tools', 'vop-ivshmem-server');
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '1' },
    'idle-seconds': { type: 'string', default: '5' },
    json: { type: 'string' },
  },
  strict: true,
});
const runs = Number(values.runs);
const seconds = Number(values.seconds);
const idleSeconds = Number(values['idle-seconds']);
const SIZES = [64, 1500];
const MODES = ['poll', 'event'];
const QSIZE = 256;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function run(...args) {
  const r = spawnSync(bin, args.map(String), { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`ring-bench ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

const r = spawnSync('make', ['-s', '-C', path.join(root, 'native'), 'bench', 'tools'], { stdio: 'inherit' });
if (r.status !== 0) throw new Error('make -C native bench tools failed');

const dir = mkdtempSync(path.join(tmpdir(), 'vop-pci-bench-'));
const sock = path.join(dir, 'ivshmem.sock');
const srv = spawn(server, ['--socket', sock, '--size', '16M', '--vectors', '1'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
await new Promise((resolve, reject) => {
  let out = '';
  srv.stdout.on('data', (d) => {
    out += d;
    if (out.includes('ready ')) resolve();
  });
  srv.on('exit', (code) => reject(new Error(`vop-ivshmem-server exited (${code})`)));
});
srv.stdout.resume();

const loadAtStart = loadavg();
const samples = {}; // `${size}/${mode}` -> { pci: [], shm: [], ratio: [] }
let idle;
try {
  for (let i = 0; i < runs; i++) {
    for (const size of SIZES) {
      for (const mode of MODES) {
        const key = `${size}/${mode}`;
        const s = (samples[key] ??= { pci: [], shm: [], ratio: [] });
        const order = i % 2 === 0 ? ['pci', 'shm'] : ['shm', 'pci'];
        const got = {};
        for (const t of order) got[t] = run('xport-tput', t, sock, size, seconds, QSIZE, mode).msgs_per_s;
        s.pci.push(got.pci);
        s.shm.push(got.shm);
        s.ratio.push(got.pci / got.shm);
      }
    }
    process.stderr.write(`run ${i + 1}/${runs} done\n`);
  }
  idle = {
    pci_polled_cpu_percent: run('xport-idle', 'pci', sock, idleSeconds, 'poll').idle_cpu_percent,
    pci_event_cpu_percent: run('xport-idle', 'pci', sock, idleSeconds, 'event').idle_cpu_percent,
    shm_event_cpu_percent: run('xport-idle', 'shm', sock, idleSeconds, 'event').idle_cpu_percent,
  };
} finally {
  srv.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}

const results = [];
for (const size of SIZES) {
  for (const mode of MODES) {
    const s = samples[`${size}/${mode}`];
    results.push({
      size,
      mode,
      pci_msgs_per_s: median(s.pci),
      shm_msgs_per_s: median(s.shm),
      pci_vs_shm_paired_median: median(s.ratio),
    });
  }
}
const out = {
  results,
  idle,
  details: {
    runs,
    seconds_per_run: seconds,
    qsize: QSIZE,
    idle_seconds: idleSeconds,
    samples,
    load_average_at_start: loadAtStart,
  },
};
const f = (x) => (x / 1e6).toFixed(3);
const lines = [`vop pci-bar vs shm ring benchmark: medians of ${runs} runs (${seconds} s each), ${QSIZE}-entry queues`];
lines.push('size    | mode  | pci Mmsg/s | shm Mmsg/s | pci/shm (paired median)');
lines.push('--------|-------|------------|------------|------------------------');
for (const x of results) {
  lines.push(
    `${String(x.size).padEnd(7)} | ${x.mode.padEnd(5)} | ${f(x.pci_msgs_per_s).padStart(10)} | ${f(x.shm_msgs_per_s).padStart(10)} | ${x.pci_vs_shm_paired_median.toFixed(2)}x`,
  );
}
lines.push(
  `idle link CPU (both processes, ${idleSeconds} s): pci polled doorbell ${idle.pci_polled_cpu_percent.toFixed(3)} %, pci event ${idle.pci_event_cpu_percent.toFixed(3)} %, shm ${idle.shm_event_cpu_percent.toFixed(3)} % of one core`,
);
for (const x of results) {
  const ok = x.pci_vs_shm_paired_median >= 0.8;
  lines.push(
    `target ${ok ? 'met    ' : 'MISSED '} ${x.size} B ${x.mode}: pci >= 0.8 x shm (${x.pci_vs_shm_paired_median.toFixed(2)}x)`,
  );
}
lines.push(
  `target ${idle.pci_polled_cpu_percent < 1 ? 'met    ' : 'MISSED '} idle polled pci-bar link < 1 % of a core (${idle.pci_polled_cpu_percent.toFixed(3)} %)`,
);
lines.push(`load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(' ')}`);
process.stdout.write(lines.join('\n') + '\n');
if (values.json) writeFileSync(values.json, JSON.stringify(out, null, 2) + '\n');
