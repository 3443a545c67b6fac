/**
 * What a test guest boots: the cached Debian kernel (test/guest/prepare.sh), a base initramfs built
 * here and cached by content hash, static guest programs (test/guest/progs/*.c, `gcc -static`,
 * cached by source hash) and the per-boot archive a test appends. docs/guest-harness.md.
 *
 * Cache folder: $VOP_GUEST_CACHE, else /var/cache/vop-guest when writable, else
 * ~/.cache/vop-guest (the same rule as prepare.sh):
 *   kernel/current            the kernel version prepare.sh unpacked last
 *   kernel/<kver>/            boot/vmlinux-<kver> (PVH ELF), boot/vmlinuz-<kver>, lib/modules/<kver>/
 *   initramfs/<sha256>.cpio   base images (busybox, modules, /init, vop-guest-agent)
 *   progs/<sha256>/<name>     static guest programs
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  accessSync,
  constants,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { repoPath } from '../../lib/src/paths';
import { type CpioEntry, cpioArchive } from './cpio';

/** Bumped when the layout of the base image changes in a way the hashed inputs do not show. */
const IMAGE_FORMAT = 'vop-guest-image-1';
const BUSYBOX = '/bin/busybox';

export const GUEST_DIR = repoPath('test', 'guest');
export const PROGS_DIR = repoPath('test', 'guest', 'progs');

let cacheDirMemo: string | null = null;

export function guestCacheDir(): string {
  if (cacheDirMemo) return cacheDirMemo;
  const fromEnv = process.env.VOP_GUEST_CACHE;
  let dir: string;
  if (fromEnv) dir = fromEnv;
  else {
    dir = '/var/cache/vop-guest';
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK);
    } catch {
      dir = path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'vop-guest');
    }
  }
  mkdirSync(dir, { recursive: true });
  cacheDirMemo = dir;
  return dir;
}

function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? Buffer.from(p, 'utf8') : p);
    h.update('\0');
  }
  return h.digest('hex');
}

/** Writes `data` to `dest` through a temporary file and a rename, so readers never see a half file. */
function writeAtomic(dest: string, data: Buffer | string, mode = 0o644): void {
  mkdirSync(path.dirname(dest), { recursive: true });
  const tmp = `${dest}.tmp.${process.pid}`;
  writeFileSync(tmp, data, { mode });
  renameSync(tmp, dest);
}

export interface GuestKernel {
  version: string;
  /** The file QEMU's -kernel gets: the PVH ELF when prepare.sh could unpack it, else the bzImage. */
  image: string;
  /** Root of the unpacked package (holds lib/modules/<version>). */
  root: string;
}

/** Missing prerequisites (a message that names them), or null when guests can boot here. */
export function guestPrerequisites(): string | null {
  const missing: string[] = [];
  const have = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
  for (const [cmd, pkg] of [
    ['qemu-system-x86_64', 'qemu-system-x86'],
    ['modprobe', 'kmod'],
    ['gcc', 'gcc'],
    ['xz', 'xz-utils'],
  ] as const) {
    if (!have(cmd)) missing.push(`${cmd} (${pkg})`);
  }
  if (!existsSync(BUSYBOX) || hasInterpreter(BUSYBOX)) missing.push(`a static ${BUSYBOX} (busybox-static)`);
  return missing.length === 0 ? null : `guest harness needs: ${missing.join(', ')} (see .ci/apt-packages)`;
}

/** True when an ELF64 file has a PT_INTERP program header (is dynamically linked). */
function hasInterpreter(file: string): boolean {
  const b = readFileSync(file);
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return true;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const off = phoff + i * phentsize;
    if (off + 4 > b.length) return true;
    if (b.readUInt32LE(off) === 3) return true;
  }
  return false;
}

/** The cached kernel; runs test/guest/prepare.sh first when the cache has none. */
export function guestKernel(): GuestKernel {
  const cache = guestCacheDir();
  const currentFile = path.join(cache, 'kernel', 'current');
  const find = (): GuestKernel | null => {
    if (!existsSync(currentFile)) return null;
    const version = readFileSync(currentFile, 'utf8').trim();
    const root = path.join(cache, 'kernel', version);
    if (!existsSync(path.join(root, '.complete'))) return null;
    const elf = path.join(root, 'boot', `vmlinux-${version}`);
    const bz = path.join(root, 'boot', `vmlinuz-${version}`);
    return { version, root, image: existsSync(elf) ? elf : bz };
  };
  const found = find();
  if (found) return found;
  execFileSync('bash', [path.join(GUEST_DIR, 'prepare.sh')], {
    env: { ...process.env, VOP_GUEST_CACHE: cache },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const after = find();
  if (!after) throw new Error(`test/guest/prepare.sh left no kernel in ${cache}/kernel`);
  return after;
}

function gccVersion(): string {
  return execFileSync('gcc', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? '';
}

/**
 * Builds test/guest/progs/<name>.c (or an absolute .c path) with `gcc -static` for the guest and
 * returns the binary's path in the cache. The key is the source, every .h beside it, the flags and
 * the compiler's version, so an unchanged program is never rebuilt.
 */
export function guestProgram(nameOrPath: string, extraFlags: readonly string[] = []): string {
  const src = nameOrPath.endsWith('.c') ? nameOrPath : path.join(PROGS_DIR, `${nameOrPath}.c`);
  const name = path.basename(src, '.c');
  const dir = path.dirname(src);
  const headers = readdirSync(dir)
    .filter((f) => f.endsWith('.h'))
    .sort()
    .map((f) => readFileSync(path.join(dir, f)));
  const flags = ['-static', '-O2', '-g0', '-Wall', '-Wextra', '-Werror', '-std=gnu11', ...extraFlags];
  const key = sha256(name, readFileSync(src), ...headers, flags.join(' '), gccVersion());
  const out = path.join(guestCacheDir(), 'progs', key, name);
  if (existsSync(out)) return out;
  mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.tmp.${process.pid}`;
  const r = spawnSync('gcc', [...flags, '-I', dir, '-o', tmp, src], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gcc -static ${src} failed:\n${r.stderr}`);
  renameSync(tmp, out);
  return out;
}

/** Keeps the `keep` newest files ending in `ext` in `dir` (older base images), removes the rest. */
function pruneOld(dir: string, ext: string, keep: number): void {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith(ext))
    .map((f) => ({ f, t: statSync(path.join(dir, f)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const { f } of files.slice(keep)) rmSync(path.join(dir, f), { force: true });
}

interface ModuleLine {
  /** Path under lib/modules/<kver>/. */
  rel: string;
  opts: string;
}

/** test/guest/modules.txt with every dependency before its user, each module once. */
function resolveModules(kernel: GuestKernel, listFile: string): ModuleLine[] {
  const modDir = path.join(kernel.root, 'lib', 'modules', kernel.version);
  const wanted = readFileSync(listFile, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '')
    .map((l) => {
      const [name = '', ...opts] = l.split(/\s+/);
      return { name: name.replace(/-/g, '_'), opts: opts.join(' ') };
    });
  const optsOf = new Map(wanted.map((w) => [w.name, w.opts]));
  const seen = new Set<string>();
  const out: ModuleLine[] = [];
  for (const w of wanted) {
    const r = spawnSync('modprobe', ['-d', kernel.root, '-S', kernel.version, '--show-depends', w.name], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`modprobe --show-depends ${w.name}: ${r.stderr.trim()}`);
    for (const line of r.stdout.split('\n')) {
      const m = /^insmod (\S+\.ko)/.exec(line.trim());
      if (!m?.[1]) continue; // "builtin X" or empty
      const rel = path.relative(modDir, m[1]);
      if (seen.has(rel)) continue;
      seen.add(rel);
      const base = path.basename(rel, '.ko').replace(/-/g, '_');
      out.push({ rel, opts: optsOf.get(base) ?? '' });
    }
  }
  return out;
}

export interface GuestImage {
  kernel: GuestKernel;
  /** The cached base initramfs. */
  initramfs: string;
  key: string;
}

let imageMemo: GuestImage | null = null;

/**
 * The base initramfs (built once per content hash): static busybox with a link per applet,
 * test/guest/init.sh as /init, the modules of test/guest/modules.txt and their dependencies
 * (/etc/vop/modules lists them in load order), and vop-guest-agent.
 */
export function guestImage(): GuestImage {
  if (imageMemo) return imageMemo;
  const prereq = guestPrerequisites();
  if (prereq) throw new Error(prereq);
  const kernel = guestKernel();
  const agent = guestProgram('vop-guest-agent');
  const initScript = readFileSync(path.join(GUEST_DIR, 'init.sh'));
  const busybox = readFileSync(BUSYBOX);
  const mods = resolveModules(kernel, path.join(GUEST_DIR, 'modules.txt'));
  const modList = mods.map((m) => `${kernel.version}/${m.rel}${m.opts ? ` ${m.opts}` : ''}`).join('\n') + '\n';
  const agentBin = readFileSync(agent);
  const key = sha256(IMAGE_FORMAT, kernel.version, initScript, busybox, modList, agentBin);
  const file = path.join(guestCacheDir(), 'initramfs', `${key}.cpio`);
  if (!existsSync(file)) {
    const applets = execFileSync(BUSYBOX, ['--list'], { encoding: 'utf8' })
      .split('\n')
      .filter((a) => a !== '' && a !== 'busybox' && !a.includes('/'));
    const entries: CpioEntry[] = [
      ...['proc', 'sys', 'dev', 'tmp', 'run', 'root', 'mnt', 'var', 'etc/vop/init.d'].map((d): CpioEntry => ({
        kind: 'dir',
        path: d,
      })),
      { kind: 'symlink', path: 'sbin', target: 'bin' },
      { kind: 'symlink', path: 'usr/bin', target: '../bin' },
      { kind: 'symlink', path: 'usr/sbin', target: '../bin' },
      { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
      ...applets.map((a): CpioEntry => ({ kind: 'symlink', path: `bin/${a}`, target: 'busybox' })),
      { kind: 'file', path: 'bin/vop-guest-agent', data: agentBin, mode: 0o755 },
      { kind: 'file', path: 'init', data: initScript, mode: 0o755 },
      { kind: 'file', path: 'etc/vop/modules', data: Buffer.from(modList) },
      { kind: 'file', path: 'etc/passwd', data: Buffer.from('root:x:0:0:root:/root:/bin/sh\n') },
      { kind: 'file', path: 'etc/group', data: Buffer.from('root:x:0:\n') },
      ...mods.map((m): CpioEntry => ({
        kind: 'file',
        path: `lib/modules/${kernel.version}/${m.rel}`,
        data: readFileSync(path.join(kernel.root, 'lib', 'modules', kernel.version, m.rel)),
      })),
    ];
    writeAtomic(file, cpioArchive(entries));
    pruneOld(path.dirname(file), '.cpio', 4);
  }
  imageMemo = { kernel, initramfs: file, key };
  return imageMemo;
}

/** A file a test puts into its guest (appended to the base initramfs for one boot). */
export interface GuestFile {
  /** Absolute path in the guest. */
  path: string;
  /** Host file to copy, or the bytes themselves. */
  source?: string;
  data?: Buffer | string;
  /** Default 0755 for `source` files (programs), 0644 for `data`. */
  mode?: number;
}

/** The per-boot archive: the files, each guest program as /bin/<name>. */
export function appendArchive(files: readonly GuestFile[], programs: readonly string[]): Buffer {
  const entries: CpioEntry[] = [];
  for (const p of programs) {
    entries.push({
      kind: 'file',
      path: `bin/${path.basename(p, '.c')}`,
      data: readFileSync(guestProgram(p)),
      mode: 0o755,
    });
  }
  for (const f of files) {
    if ((f.source === undefined) === (f.data === undefined))
      throw new TypeError(`guest file ${f.path}: give exactly one of source and data`);
    const data = f.source !== undefined ? readFileSync(f.source) : Buffer.from(f.data ?? '');
    entries.push({ kind: 'file', path: f.path, data, mode: f.mode ?? (f.source !== undefined ? 0o755 : 0o644) });
  }
  return cpioArchive(entries);
}
