/** Locations inside the installed package, independent of where the compiled JS lives. */
import { existsSync } from 'node:fs';
import path from 'node:path';

function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'proto'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error(`cannot find the vop package root above ${start}`);
    dir = up;
  }
}

/** Root of the vop package (the directory holding package.json and proto/). */
export const REPO_ROOT = findRepoRoot(__dirname);

export function repoPath(...parts: string[]): string {
  return path.join(REPO_ROOT, ...parts);
}
