/**
 * Crash-safe replacement of a small state file: the new content goes to a temp file in the
 * same directory, which is written in full (a short write on a full disk is continued, never
 * mistaken for success), fsynced, renamed over the old file, and the directory is fsynced,
 * so after a power loss the file holds either the old or the new content. On any error the
 * old file is untouched and the temp file is removed.
 */
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';

let seq = 0;

/** fsync of a directory (after a rename or unlink in it). */
export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Writes all of data at fd, looping over short writes; a write that makes no progress throws ENOSPC. */
export function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) {
    const n = writeSync(fd, data, off, data.length - off);
    if (n <= 0) throw Object.assign(new Error('ENOSPC: no progress writing the state file'), { code: 'ENOSPC' });
    off += n;
  }
}

/**
 * Replaces file with data atomically and durably (see the file comment). Throws the I/O
 * error; the old file is then intact. `mode` applies to a newly created file.
 */
export function writeFileAtomicSync(file: string, data: string | Uint8Array, mode = 0o600): void {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = `${file}.tmp-${process.pid}-${seq++}`;
  let fd = openSync(tmp, 'wx', mode);
  try {
    writeAllSync(fd, buf);
    fsyncSync(fd);
    closeSync(fd);
    fd = -1;
    renameSync(tmp, file);
  } catch (err) {
    if (fd >= 0) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      rmSync(tmp, { force: true });
    } catch {
      /* report the first error */
    }
    throw err;
  }
  fsyncDirSync(path.dirname(file));
}

/** True for the temp files writeFileAtomicSync leaves behind when the process dies mid-write. */
export function isAtomicTempFile(name: string): boolean {
  return /\.tmp-\d+-\d+$/.test(name);
}
