#!/usr/bin/env node
// npm run bench:compare -- --base REV [--head REV] [--rounds N] [--benches ring,net,fleet] [--json FILE]
//
// Builds two commits side by side (git worktrees under a temporary directory, each with its own
// `npm ci` and native build) and runs the headline benchmarks on both, alternating the order every
// round so that both builds see the same phases of this shared, noisy machine. Each round pairs one
// sample of the head with one of the base; the table reports the median of the paired ratios
// head/base, oriented so that > 1 means the head is better (for times, base/head).
//
//   ring   bench:ring, one repetition: vop msgs/s at 64 B and 1500 B (shm link, two processes)
//   net    bench:net (root), BENCH_RUNS=1: iperf3 TCP Gbit/s across a vop net link
//   fleet  bench:fleet, --agents 10000 --links-per-agent 4: time to converge (s, lower is better)
//
// The worktrees are removed at the end (also on failure). HEAD defaults to the current commit.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    head: { type: 'string', default: 'HEAD' },
    rounds: { type: 'string', default: '5' },
    benches: { type: 'string', default: 'ring,net,fleet' },
    json: { type: 'string' },
    'fleet-agents': { type: 'string', default: '10000' },
  },
  strict: true,
});
if (!values.base) {
  process.stderr.write('usage: compare-builds.mjs --base REV [--head REV] [--rounds N] [--benches ring,net,fleet]\n');
  process.exit(2);
}
const rounds = Math.max(1, Number(values.rounds));
const benches = values.benches.split(',').filter(Boolean);
for (const b of benches) if (!['ring', 'net', 'fleet'].includes(b)) throw new Error(`unknown bench ${b}`);

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}`);
  }
  return r.stdout;
}

const revParse = (rev) => run('git', ['-C', root, 'rev-parse', '--verify', `${rev}^{commit}`]).trim();
const builds = [
  { label: 'base', sha: revParse(values.base) },
  { label: 'head', sha: revParse(values.head) },
];
const scratch = mkdtempSync(path.join(tmpdir(), 'vop-compare-'));

function cleanup() {
  for (const b of builds) {
    if (b.dir) spawnSync('git', ['-C', root, 'worktree', 'remove', '--force', b.dir]);
  }
  rmSync(scratch, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

function prepare(b) {
  b.dir = path.join(scratch, b.label);
  process.stderr.write(`preparing ${b.label} ${b.sha.slice(0, 10)} in ${b.dir}\n`);
  run('git', ['-C', root, 'worktree', 'add', '--detach', b.dir, b.sha]);
  run('npm', ['ci', '--no-audit', '--no-fund'], { cwd: b.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  run('make', ['-s', '-C', 'native', 'bench'], { cwd: b.dir });
}

/** One sample of each headline figure of one bench on one build: { name: { value, better } }. */
function sample(b, bench) {
  const out = path.join(scratch, `${b.label}-${bench}.json`);
  if (bench === 'ring') {
    run(process.execPath, ['test/bench/ring-bench.mjs', '--runs', '1', '--idle-seconds', '1', '--json', out], {
      cwd: b.dir,
    });
    const j = JSON.parse(readFileSync(out, 'utf8'));
    const at = (size) => j.results.find((r) => r.size === size).vop_msgs_per_s;
    return {
      'ring 64 B msgs/s': { value: at(64), better: 'higher' },
      'ring 1500 B msgs/s': { value: at(1500), better: 'higher' },
    };
  }
  if (bench === 'net') {
    run(process.execPath, ['dist/test/bench/net-bench.js', '--json', out], {
      cwd: b.dir,
      env: { ...process.env, BENCH_RUNS: '1' },
    });
    const j = JSON.parse(readFileSync(out, 'utf8'));
    return { 'net TCP Gbit/s': { value: j.vop_tcp_gbit_s, better: 'higher' } };
  }
  run(
    process.execPath,
    ['dist/test/bench/fleet-bench.js', '--agents', values['fleet-agents'], '--links-per-agent', '4', '--json', out],
    { cwd: b.dir },
  );
  const j = JSON.parse(readFileSync(out, 'utf8'));
  return { 'fleet converge s': { value: j.converge_s, better: 'lower' } };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const pairs = {}; // figure -> [{ base, head, ratio }]
const loadAtStart = loadavg();
try {
  for (const b of builds) prepare(b);
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? builds : [...builds].reverse();
    for (const bench of benches) {
      const got = {};
      for (const b of order) got[b.label] = sample(b, bench);
      for (const [name, base] of Object.entries(got.base)) {
        const head = got.head[name];
        const ratio = base.better === 'higher' ? head.value / base.value : base.value / head.value;
        (pairs[name] ??= []).push({ base: base.value, head: head.value, ratio });
      }
      process.stderr.write(`round ${r + 1}/${rounds}: ${bench} done\n`);
    }
  }
} finally {
  cleanup();
}

const summary = Object.entries(pairs).map(([name, ps]) => ({
  figure: name,
  base_median: median(ps.map((p) => p.base)),
  head_median: median(ps.map((p) => p.head)),
  paired_ratio_median: median(ps.map((p) => p.ratio)),
  pairs: ps,
}));
const fmt = (x) => (Math.abs(x) >= 1000 ? x.toExponential(3) : x.toFixed(3));
const lines = [
  `base ${builds[0].sha.slice(0, 10)} vs head ${builds[1].sha.slice(0, 10)}, ${rounds} rounds, order alternating`,
  'figure               | base median  | head median  | head/base (paired median, >1 = head better)',
  '---------------------|--------------|--------------|--------------------------------------------',
  ...summary.map(
    (s) =>
      `${s.figure.padEnd(20)} | ${fmt(s.base_median).padStart(12)} | ${fmt(s.head_median).padStart(12)} | ${s.paired_ratio_median.toFixed(3)}x${s.paired_ratio_median >= 0.9 ? '' : '  (below 0.9x)'}`,
  ),
  `load average at start: ${loadAtStart.map((x) => x.toFixed(2)).join(' ')}`,
];
process.stdout.write(`${lines.join('\n')}\n`);
const json = { base: builds[0].sha, head: builds[1].sha, rounds, load_at_start: loadAtStart, results: summary };
process.stdout.write(`${JSON.stringify(json)}\n`);
if (values.json) writeFileSync(values.json, `${JSON.stringify(json, null, 2)}\n`);
