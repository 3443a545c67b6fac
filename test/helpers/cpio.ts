/**
 * A writer of "newc" cpio archives, the format of a Linux initramfs. The kernel unpacks
 * concatenated archives one after the other, a later file replacing an earlier one, which is how a
 * test appends its own files to the cached base image of its guest (test/helpers/guest-image.ts).
 */

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(n: number): Buffer {
  return Buffer.alloc((4 - (n % 4)) % 4);
}

function record(ino: number, mode: number, nlink: number, name: string, data: Buffer): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const header = '070701' + [ino, mode, 0, 0, nlink, 0, data.length, 0, 0, 0, 0, nameBuf.length, 0].map(hex8).join('');
  return [Buffer.from(header, 'ascii'), nameBuf, pad4(110 + nameBuf.length), data, pad4(data.length)];
}

/** Normalises "/a/b" or "a/b" to the archive's relative form "a/b"; refuses "..", empty parts. */
function archivePath(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.includes('..')) throw new RangeError(`cpio: bad path "${p}"`);
  return parts.join('/');
}

/**
 * One archive with the entries in order, each missing parent directory added before its first
 * child (mode 0755), and the trailer. Modes default to 0755 for directories and 0644 for files.
 */
export function cpioArchive(entries: readonly CpioEntry[]): Buffer {
  const out: Buffer[] = [];
  const dirs = new Set<string>();
  let ino = 1;
  const addDir = (p: string, mode = 0o755): void => {
    if (dirs.has(p)) return;
    dirs.add(p);
    out.push(...record(ino++, S_IFDIR | mode, 2, p, Buffer.alloc(0)));
  };
  const parents = (p: string): void => {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) addDir(parts.slice(0, i).join('/'));
  };
  for (const e of entries) {
    const p = archivePath(e.path);
    parents(p);
    if (e.kind === 'dir') addDir(p, e.mode ?? 0o755);
    else if (e.kind === 'file') out.push(...record(ino++, S_IFREG | (e.mode ?? 0o644), 1, p, e.data));
    else out.push(...record(ino++, S_IFLNK | 0o777, 1, p, Buffer.from(e.target, 'utf8')));
  }
  out.push(...record(0, 0, 1, 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(out);
}
