#!/usr/bin/env node
// npm run bench:ring [-- --runs N] [--seconds S] [--idle-seconds S] [--json FILE]
//
// Ring benchmark (not a timed test). Builds native/out/bench/ring-bench (make -C native
// bench) and runs, back to back per repetition so candidate and baseline see the same
// machine state, then reports medians:
//   (a) single-thread memcpy bandwidth per size: "cold" = SIZE-byte copies cycling
//       through a 256 MiB working set (data not in cache: the bound of a copy-based
//       transport, see docs/benchmarks-ring.md); hot (same buffer) and a working set
//       equal to the vop buffer pool are reported alongside;
//   (b) Unix stream socketpair between two processes, one write() per message, and
//       batched like vop: one writev() of qsize/2 messages (vop publishes half a ring per pass);
//   (c) vop shm link between two processes: driver process copies each message into
//       the window and posts it, device process copies it out (64 B, 1500 B, 64 KiB);
//   (d) 64 B round trip: vop event-driven (no spin: sleep on the futex doorbell as
//       soon as idle), vop polling (never sleep), Unix socketpair; the default
//       adaptive mode (50 us spin, then sleep) is reported in details;
//   (e) CPU of an established, idle vop link (both processes) over --idle-seconds;
//   (f) worker placement: 4 byte pipes (1500 B) on one worker per process (per link)
//       against one worker per queue pair, aggregate msgs/s and CPU ns per message.
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = path.join(root, 'native', 'out', 'bench', 'ring-bench');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const runs = Number(arg('--runs', '5'));
const seconds = Number(arg('--seconds', '1'));
const idleSeconds = Number(arg('--idle-seconds', '10'));
const jsonFile = arg('--json', null);

const SIZES = [
  { size: 64, qsize: 256 },
  { size: 1500, qsize: 256 },
  { size: 65536, qsize: 64 },
];
const COLD_WS = 256 * 1024 * 1024;

function build() {
  const r = spawnSync('make', ['-s', '-C', path.join(root, 'native'), 'bench'], { stdio: 'inherit' });
  if (r.status !== 0) throw new Error('make -C native bench failed');
}

function run(...args) {
  const r = spawnSync(bin, args.map(String), { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`ring-bench ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function poolBytes(size, qsize) {
  return qsize * 64 * 16 + qsize * Math.ceil(size / 64) * 64;
}

const loadAtStart = loadavg();
build();
const samples = new Map(
  SIZES.map(({ size }) => [
    size,
    {
      vopMsgs: [],
      vopGb: [],
      unixMsgs: [],
      unixGb: [],
      unixBatchMsgs: [],
      unixBatchGb: [],
      memcpyCold: [],
      memcpyHot: [],
      memcpyWs: [],
    },
  ]),
);
const rtt = { vop_event: [], vop_poll: [], unix: [] };
const rttAdaptive = [];
const PLACEMENT_PAIRS = 4;
const placement = { per_link: [], per_queue_pair: [], per_link_cpu_ns: [], per_queue_pair_cpu_ns: [] };
for (let i = 0; i < runs; i++) {
  for (const { size, qsize } of SIZES) {
    const s = samples.get(size);
    s.memcpyCold.push(run('memcpy', size, 0.3, COLD_WS).gbytes_per_s);
    s.memcpyHot.push(run('memcpy', size, 0.2, size).gbytes_per_s);
    s.memcpyWs.push(run('memcpy', size, 0.2, poolBytes(size, qsize)).gbytes_per_s);
    const u = run('unix-tput', size, seconds);
    s.unixMsgs.push(u.msgs_per_s);
    s.unixGb.push(u.gbytes_per_s);
    const ub = run('unix-tput', size, seconds, qsize / 2);
    s.unixBatchMsgs.push(ub.msgs_per_s);
    s.unixBatchGb.push(ub.gbytes_per_s);
    const v = run('vop-tput', size, seconds, qsize);
    s.vopMsgs.push(v.msgs_per_s);
    s.vopGb.push(v.gbytes_per_s);
  }
  rtt.unix.push(run('unix-rtt', 64, 20000).rtt_us);
  rtt.vop_event.push(run('vop-rtt', 64, 20000, 'event').rtt_us);
  rtt.vop_poll.push(run('vop-rtt', 64, 100000, 'poll').rtt_us);
  rttAdaptive.push(run('vop-rtt', 64, 50000, 'adaptive').rtt_us);
  const pl = run('vop-multi', 1500, seconds, 256, PLACEMENT_PAIRS, 'link');
  const pq = run('vop-multi', 1500, seconds, 256, PLACEMENT_PAIRS, 'qp');
  placement.per_link.push(pl.msgs_per_s);
  placement.per_queue_pair.push(pq.msgs_per_s);
  placement.per_link_cpu_ns.push(pl.cpu_ns_per_msg);
  placement.per_queue_pair_cpu_ns.push(pq.cpu_ns_per_msg);
  process.stderr.write(`run ${i + 1}/${runs} done\n`);
}
const idle = run('idle', idleSeconds);

const results = SIZES.map(({ size }) => {
  const s = samples.get(size);
  return {
    size,
    vop_msgs_per_s: median(s.vopMsgs),
    vop_gbytes_per_s: median(s.vopGb),
    unix_msgs_per_s: median(s.unixMsgs),
    unix_gbytes_per_s: median(s.unixGb),
    unix_batched_msgs_per_s: median(s.unixBatchMsgs),
    unix_batched_gbytes_per_s: median(s.unixBatchGb),
    memcpy_gbytes_per_s: median(s.memcpyCold),
  };
});
const out = {
  results,
  rtt_us: { vop_event: median(rtt.vop_event), vop_poll: median(rtt.vop_poll), unix: median(rtt.unix) },
  idle_cpu_percent: idle.idle_cpu_percent,
  details: {
    runs,
    seconds_per_throughput_run: seconds,
    idle_seconds: idleSeconds,
    memcpy_cold_working_set_bytes: COLD_WS,
    memcpy_hot_gbytes_per_s: Object.fromEntries(SIZES.map(({ size }) => [size, median(samples.get(size).memcpyHot)])),
    memcpy_pool_ws_gbytes_per_s: Object.fromEntries(
      SIZES.map(({ size }) => [size, median(samples.get(size).memcpyWs)]),
    ),
    samples: Object.fromEntries([...samples].map(([k, v]) => [k, v])),
    rtt_samples: rtt,
    rtt_vop_adaptive_us: median(rttAdaptive),
    rtt_vop_adaptive_samples: rttAdaptive,
    idle,
    worker_placement: {
      pairs: PLACEMENT_PAIRS,
      size: 1500,
      per_link_msgs_per_s: median(placement.per_link),
      per_queue_pair_msgs_per_s: median(placement.per_queue_pair),
      per_link_cpu_ns_per_msg: median(placement.per_link_cpu_ns),
      per_queue_pair_cpu_ns_per_msg: median(placement.per_queue_pair_cpu_ns),
      samples: placement,
    },
  },
};

const f = (x, d = 2) => (x >= 100 ? x.toFixed(0) : x.toFixed(d));
const lines = [];
lines.push(`vop ring benchmark: medians of ${runs} runs (${seconds} s each)`);
lines.push(
  'size    | vop Mmsg/s | vop GB/s | unix Mmsg/s | unix GB/s | unix writev Mmsg/s | memcpy cold GB/s | msgs ratio | vs writev | GB/s vs memcpy',
);
lines.push(
  '--------|------------|----------|-------------|-----------|--------------------|------------------|------------|-----------|---------------',
);
for (const r of results) {
  lines.push(
    `${String(r.size).padEnd(7)} | ${f(r.vop_msgs_per_s / 1e6, 3).padStart(10)} | ${f(r.vop_gbytes_per_s).padStart(8)} | ${f(r.unix_msgs_per_s / 1e6, 3).padStart(11)} | ${f(r.unix_gbytes_per_s).padStart(9)} | ${f(r.unix_batched_msgs_per_s / 1e6, 3).padStart(18)} | ${f(r.memcpy_gbytes_per_s).padStart(16)} | ${f(r.vop_msgs_per_s / r.unix_msgs_per_s, 1).padStart(9)}x | ${f(r.vop_msgs_per_s / r.unix_batched_msgs_per_s, 2).padStart(8)}x | ${f(r.vop_gbytes_per_s / r.memcpy_gbytes_per_s).padStart(13)}x`,
  );
}
lines.push(
  `64 B RTT: vop event ${f(out.rtt_us.vop_event)} us, vop poll ${f(out.rtt_us.vop_poll)} us, vop adaptive (50 us spin) ${f(out.details.rtt_vop_adaptive_us)} us, unix ${f(out.rtt_us.unix)} us`,
);
lines.push(`idle link CPU (both processes, ${idleSeconds} s): ${out.idle_cpu_percent.toFixed(3)} % of one core`);
const wp = out.details.worker_placement;
lines.push(
  `worker placement, ${wp.pairs} x 1500 B pipes: one worker per link ${f(wp.per_link_msgs_per_s / 1e6, 3)} Mmsg/s (${f(wp.per_link_cpu_ns_per_msg, 0)} CPU ns/msg), ` +
    `one per queue pair ${f(wp.per_queue_pair_msgs_per_s / 1e6, 3)} Mmsg/s (${f(wp.per_queue_pair_cpu_ns_per_msg, 0)} CPU ns/msg)`,
);
// Targets use the median of ratios paired within each repetition (candidate and
// baseline ran back to back), which cancels slow phases of a shared, noisy host.
const paired = (a, b) => median(a.map((x, i) => x / b[i]));
const s64 = samples.get(64),
  s1500 = samples.get(1500),
  s64k = samples.get(65536);
const ratios = {
  kib64_vs_memcpy: paired(s64k.vopGb, s64k.memcpyCold),
  kib64_vs_memcpy_hot: paired(s64k.vopGb, s64k.memcpyHot),
  per_link_vs_per_queue_pair: paired(placement.per_link, placement.per_queue_pair),
  b64_msgs_vs_unix: paired(s64.vopMsgs, s64.unixMsgs),
  b1500_msgs_vs_unix: paired(s1500.vopMsgs, s1500.unixMsgs),
  b64_msgs_vs_unix_writev: paired(s64.vopMsgs, s64.unixBatchMsgs),
  b1500_msgs_vs_unix_writev: paired(s1500.vopMsgs, s1500.unixBatchMsgs),
  rtt_event_vs_unix: paired(rtt.vop_event, rtt.unix),
};
out.details.paired_ratio_medians = ratios;
const targets = [
  [`64 KiB >= 0.5 x memcpy (cold): ${f(ratios.kib64_vs_memcpy)}x`, ratios.kib64_vs_memcpy >= 0.5],
  [
    `64 KiB >= 0.5 x memcpy (hot, cache-resident): ${f(ratios.kib64_vs_memcpy_hot)}x`,
    ratios.kib64_vs_memcpy_hot >= 0.5,
  ],
  [`64 B msgs/s >= 20 x unix: ${f(ratios.b64_msgs_vs_unix, 1)}x`, ratios.b64_msgs_vs_unix >= 20],
  [`1500 B msgs/s >= 8 x unix: ${f(ratios.b1500_msgs_vs_unix, 1)}x`, ratios.b1500_msgs_vs_unix >= 8],
  [`event RTT <= unix RTT: ${f(ratios.rtt_event_vs_unix)}x`, ratios.rtt_event_vs_unix <= 1],
  [`idle < 1 % of a core: ${out.idle_cpu_percent.toFixed(3)} %`, out.idle_cpu_percent < 1],
];
for (const [name, ok] of targets) lines.push(`target ${ok ? 'met    ' : 'MISSED '} ${name} (median of paired ratios)`);
lines.push(`load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(' ')}`);
out.details.load_average_at_start = loadAtStart;
process.stdout.write(lines.join('\n') + '\n');
if (jsonFile) writeFileSync(jsonFile, JSON.stringify(out, null, 2) + '\n');
