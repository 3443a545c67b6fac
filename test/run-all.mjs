#!/usr/bin/env node
// Runs every test suite of vop, in order, and exits non-zero if any failed:
//   1. native C tests under ASan/UBSan          (make -C native check)
//   2. native tests under ThreadSanitizer        (make -C native tsan)
//   3. native fuzz targets, bounded in time      (make -C native fuzz-ci)
//   4. Prometheus alert-rule unit tests          (promtool test rules deploy/prometheus/*.test.yml)
//   5. TypeScript tests with node:test           (dist/test/**/*.test.js), last so its summary closes the output
// Environment: VOP_TEST_ONLY=native|tsan|fuzz|rules|node runs one stage; FUZZ_SECONDS (default 30) per fuzz target (6 targets: about 3 minutes);
// VOP_TEST_FILTER=regex restricts node test files.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const only = process.env.VOP_TEST_ONLY ?? '';
const failures = [];

function stage(name, fn) {
  if (only !== '' && only !== name) return;
  process.stdout.write(`\n=== ${name} ===\n`);
  const t0 = Date.now();
  const ok = fn();
  process.stdout.write(`=== ${name}: ${ok ? 'ok' : 'FAILED'} (${((Date.now() - t0) / 1000).toFixed(1)} s) ===\n`);
  if (!ok) failures.push(name);
}

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', ...opts });
  if (r.error) process.stdout.write(`${cmd}: ${r.error.message}\n`);
  return r.status === 0;
}

function makeHasTarget(target) {
  const mk = path.join(root, 'native', 'Makefile');
  return existsSync(mk) && new RegExp(`^${target}:`, 'm').test(readFileSync(mk, 'utf8'));
}

stage('native', () =>
  makeHasTarget('check')
    ? sh('make', ['-C', 'native', 'check'])
    : (process.stdout.write('native/Makefile has no check target\n'), false),
);
stage('tsan', () =>
  makeHasTarget('tsan')
    ? sh('make', ['-C', 'native', '-j2', 'tsan'])
    : (process.stdout.write('native/Makefile has no tsan target\n'), false),
);
stage('fuzz', () => {
  if (!makeHasTarget('fuzz-ci')) {
    process.stdout.write('native/Makefile has no fuzz-ci target\n');
    return false;
  }
  return sh('make', ['-C', 'native', 'fuzz-ci', `FUZZ_SECONDS=${process.env.FUZZ_SECONDS ?? '30'}`]);
});
stage('rules', () => {
  const dir = path.join(root, 'deploy', 'prometheus');
  const tests = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.test.yml')) : [];
  if (tests.length === 0) {
    process.stdout.write('no alert rule tests yet\n');
    return true;
  }
  return sh('promtool', ['test', 'rules', ...tests.map((t) => path.join(dir, t))]);
});
stage('node', () => {
  const files = [];
  const walk = (d) => {
    for (const e of readdirSync(d)) {
      const p = path.join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else if (e.endsWith('.test.js')) files.push(p);
    }
  };
  walk(path.join(root, 'dist', 'test'));
  const filter = process.env.VOP_TEST_FILTER ? new RegExp(process.env.VOP_TEST_FILTER) : null;
  const selected = files.filter((f) => !filter || filter.test(f)).sort();
  if (selected.length === 0) {
    process.stdout.write('no TypeScript tests found\n');
    return false;
  }
  return sh(process.execPath, [
    '--test',
    '--test-concurrency=1',
    '--test-timeout=600000',
    ...selected.map((f) => path.relative(root, f)),
  ]);
});

if (failures.length > 0) {
  process.stdout.write(`\nFAILED stages: ${failures.join(', ')}\n`);
  process.exit(1);
}
process.stdout.write('\nall test stages passed\n');
