/**
 * Prerequisites of a test (root, /dev/net/tun, a tool, a free port, a guest kernel). On a
 * developer's machine a missing one skips the test and says why; in CI (the CI environment
 * variable set to any non-empty value, as .ci/run does) it is a failure: nothing passes by
 * being skipped, and nothing degrades silently into a weaker check.
 */
import { spawnSync } from 'node:child_process';

import type { TestContext } from 'node:test';

export function inCI(): boolean {
  return (process.env.CI ?? '') !== '';
}

export class MissingPrerequisite extends Error {
  constructor(name: string, why: string) {
    super(`missing prerequisite ${name}: ${why} (CI is set: a missing prerequisite fails the test)`);
    this.name = 'MissingPrerequisite';
  }
}

/**
 * For node:test's `skip` option: false when `ok`; otherwise the reason (a skip) on a developer's
 * machine, and a thrown MissingPrerequisite in CI (the file fails to load, naming what is missing).
 */
export function requirePrereq(name: string, ok: boolean, why: string): string | false {
  if (ok) return false;
  if (inCI()) throw new MissingPrerequisite(name, why);
  return `needs ${name}: ${why}`;
}

/**
 * Inside a running test: when `ok` is false, skip it with the reason on a developer's machine or
 * fail it in CI. Returns `ok`, so a test reads `if (!prereq(t, ...)) return;`.
 */
export function prereq(t: TestContext, name: string, ok: boolean, why: string): boolean {
  if (ok) return true;
  if (inCI()) throw new MissingPrerequisite(name, why);
  t.skip(`needs ${name}: ${why}`);
  return false;
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** True when `cmd` is on PATH (runs `command -v`). */
export function haveCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}
