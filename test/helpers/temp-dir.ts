/**
 * Temporary directories of one test file. node --test runs each file in its own process, so a directory
 * made here lives until that file's process exits and is then removed with everything in it (sockets,
 * state files, images), whether its tests passed or not. VOP_KEEP_TMP=1 keeps them for a post-mortem.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made: string[] = [];

function removeAll(): void {
  if (process.env.VOP_KEEP_TMP === '1') return;
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true, maxRetries: 2 });
}

/** A new directory under os.tmpdir() whose name starts with `prefix`, removed when this process exits. */
export function tempDirRemovedAtExit(prefix: string): string {
  if (made.length === 0) process.once('exit', removeAll);
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}
