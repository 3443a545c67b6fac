/**
 * The agent's host path policy (docs/agent.md "Host paths"): every host path a link spec
 * names for this agent's role lies under the directory the node's operator allowed for its
 * kind (hostPaths in the agent config). Checked when a link is applied: INVALID_ARGUMENT for
 * a path outside its root (also when a stored link is restored), FAILED_PRECONDITION for what
 * the filesystem holds there (a symlink out of the root, a special file, a file where a socket
 * or a pty link belongs). The native layer enforces the same roots again whenever it opens a
 * path (openat2 RESOLVE_BENEATH, native/include/vop/path.h), so a change on disk after the
 * check cannot lead out of the root either.
 */
import { lstatSync, readlinkSync, realpathSync, statSync, type Stats } from 'node:fs';
import path from 'node:path';

import { status as GrpcStatus } from '@grpc/grpc-js';

import { StreamProtocol, type LinkSpec } from '../../../lib/proto/types';
import { ServerError, type ViolationList } from '../../../lib/src/errors';
import { fnv1a32Hex } from '../../../lib/src/fnv';
import type { HostPaths } from '../config';

/** Kinds of host paths, each with its own root. */
export type HostPathKind = 'disk' | 'socket' | 'log' | 'pty' | 'vhost-client' | 'bar';

/** Longest socket file name: the native layer binds through /proc/self/fd/<dirfd>/<name> (sun_path). */
export const MAX_SOCKET_NAME_BYTES = 80;

/** One host path a spec names for this agent's role. */
export interface HostPathUse {
  /** Proto field path, e.g. link.spec.devices[0].blk.backing.path. */
  readonly field: string;
  readonly kind: HostPathKind;
  readonly path: string;
  /** A datagram peer: the other side binds it, nothing is checked at the name. */
  readonly peer: boolean;
}

/** Where a path may lie: a directory, or (blk only) an operator-listed block device. */
export type HostPathRoot = { readonly dir: string } | { readonly blockDevice: string };

const KIND_TEXT: Record<HostPathKind, string> = {
  disk: 'blk backing files',
  socket: 'sockets',
  log: 'console logs',
  pty: 'pty links',
  'vhost-client': 'vhost-user client sockets',
  bar: 'pci-bar BAR files',
};

const KIND_KEY: Record<HostPathKind, string> = {
  disk: 'hostPaths.diskDirs',
  socket: 'hostPaths.socketDir',
  log: 'hostPaths.logDir',
  pty: 'hostPaths.ptyDir',
  'vhost-client': 'hostPaths.vhostUserClientDirs',
  bar: 'hostPaths.barDirs',
};

/** True when p is strictly inside dir (dir "/" contains every other absolute path). */
function inside(dir: string, p: string): boolean {
  return dir === '/' ? p !== '/' : p.startsWith(`${dir}/`);
}

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch {
    return null;
  }
}

export class HostPathPolicy {
  constructor(
    readonly paths: HostPaths,
    /** shm windows: a link's transport.shm.directory must be this directory or below it. */
    readonly rendezvousDir: string,
  ) {}

  /** Directories of a kind. */
  dirsOf(kind: HostPathKind): readonly string[] {
    switch (kind) {
      case 'disk':
        return this.paths.diskDirs;
      case 'socket':
        return [this.paths.socketDir];
      case 'log':
        return [this.paths.logDir];
      case 'pty':
        return [this.paths.ptyDir];
      case 'vhost-client':
        return this.paths.vhostUserClientDirs ?? [];
      case 'bar':
        return this.paths.barDirs;
    }
  }

  /** The allowed roots of a kind, as an error message names them. */
  describe(kind: HostPathKind): string {
    const dirs = this.dirsOf(kind);
    const d = `${dirs.length === 1 ? 'directory' : 'directories'} ${dirs.join(', ') || '(none)'} (${KIND_KEY[kind]})`;
    if (kind !== 'disk') return d;
    const b = this.paths.blockDevices;
    return `${d}, block devices ${b.length > 0 ? b.join(', ') : '(none)'} (hostPaths.blockDevices)`;
  }

  /** The root p lies in, or null when it lies in none (lexical: p is absolute and normalised). */
  rootOf(kind: HostPathKind, p: string): HostPathRoot | null {
    if (kind === 'disk' && this.paths.blockDevices.includes(p)) return { blockDevice: p };
    // The innermost directory, should roots nest.
    const dir = [...this.dirsOf(kind)].sort((a, b) => b.length - a.length).find((d) => inside(d, p));
    return dir === undefined ? null : { dir };
  }

  /** The NBD socket of a blk export that names neither a socket nor a TCP address. */
  defaultNbdSocket(link: string, device: string): string {
    const plain = path.join(this.paths.socketDir, `${link}-${device}.nbd`);
    const name = path.basename(plain);
    if (Buffer.byteLength(plain) <= 107 && Buffer.byteLength(name) <= MAX_SOCKET_NAME_BYTES) return plain;
    return path.join(this.paths.socketDir, `nbd-${fnv1a32Hex(link)}-${fnv1a32Hex(`${link}/${device}`)}.nbd`);
  }

  /** Every host path spec names for this agent's role (what its backends will open). */
  uses(spec: LinkSpec, role: 'device' | 'driver', linkName: string, field = 'link.spec'): HostPathUse[] {
    const out: HostPathUse[] = [];
    const add = (f: string, kind: HostPathKind, p: string, peer = false): void => {
      if (p !== '') out.push({ field: f, kind, path: p, peer });
    };
    const t = spec.transport?.kind;
    if (t?.$case === 'vhostUser')
      // server: created in the socket directory; client: the front-end's, in an allowed directory
      add(`${field}.transport.vhost_user.socket_path`, t.value.client ? 'vhost-client' : 'socket', t.value.socketPath);
    // A stream link over a Unix socket: the device side binds it (listen_address, else address), the
    // driver side dials address (bound by the other side: checked lexically, not at the name).
    if (t?.$case === 'stream' && t.value.protocol === StreamProtocol.STREAM_PROTOCOL_UNIX) {
      const f = `${field}.transport.stream`;
      if (role === 'device' && t.value.listenAddress !== '')
        add(`${f}.listen_address`, 'socket', t.value.listenAddress);
      else add(`${f}.address`, 'socket', t.value.address, role === 'driver');
    }
    // A pci-bar link: the ivshmem server's socket and the BAR files this role maps.
    if (t?.$case === 'pciBar') {
      const a = role === 'device' ? t.value.deviceAccess : t.value.driverAccess;
      const f = `${field}.transport.pci_bar.${role}_access`;
      if (a) {
        add(`${f}.ivshmem_socket`, 'socket', a.ivshmemSocket);
        add(`${f}.bar_path`, 'bar', a.barPath);
        add(`${f}.doorbell_path`, 'bar', a.doorbellPath);
      }
    }
    spec.devices.forEach((d, i) => {
      const f = `${field}.devices[${i}]`;
      const k = d.kind;
      switch (k?.$case) {
        case 'blk':
          if (role === 'device') add(`${f}.blk.backing.path`, 'disk', k.value.backing?.path ?? '');
          else if (k.value.export) {
            const ex = k.value.export;
            if (ex.unixSocket !== '') add(`${f}.blk.export.unix_socket`, 'socket', ex.unixSocket);
            else if (ex.tcpListen === '')
              add(`${f}.blk.export.unix_socket`, 'socket', this.defaultNbdSocket(linkName, d.name));
          }
          break;
        case 'net': {
          const side = role === 'device' ? 'device_backend' : 'driver_frontend';
          const be = role === 'device' ? k.value.deviceBackend : k.value.driverFrontend;
          if (be?.kind?.$case === 'datagram') {
            add(`${f}.net.${side}.datagram.path`, 'socket', be.kind.value.path);
            add(`${f}.net.${side}.datagram.peer_path`, 'socket', be.kind.value.peerPath, true);
          }
          break;
        }
        case 'console': {
          const side = role === 'device' ? 'device_backend' : 'driver_frontend';
          const be = role === 'device' ? k.value.deviceBackend : k.value.driverFrontend;
          if (be?.kind?.$case === 'pty') add(`${f}.console.${side}.pty.link_path`, 'pty', be.kind.value.linkPath);
          if (be?.kind?.$case === 'unixSocket' && role === 'device')
            add(`${f}.console.${side}.unix_socket.path`, 'socket', be.kind.value.path);
          if (role === 'device' && k.value.log) add(`${f}.console.log.path`, 'log', k.value.log.path);
          break;
        }
        default:
          break;
      }
    });
    return out;
  }

  /**
   * Lexical check of every path spec names for role (and of its shm directory): each must
   * lie in its kind's root. Adds INVALID_ARGUMENT violations naming the field and the root.
   */
  checkSpec(v: ViolationList, spec: LinkSpec, role: 'device' | 'driver', linkName: string, field = 'link.spec'): void {
    const t = spec.transport?.kind;
    if (t?.$case === 'shm' && t.value.directory !== '') {
      const dir = path.resolve(t.value.directory);
      if (dir !== this.rendezvousDir && !inside(this.rendezvousDir, dir))
        v.add(
          `${field}.transport.shm.directory`,
          `"${t.value.directory}" is outside the shm rendezvous directory of this agent: directory ${this.rendezvousDir} (rendezvousDir)`,
        );
    }
    this.checkNetns(v, spec, role, field);
    for (const u of this.uses(spec, role, linkName, field)) {
      if (!this.rootOf(u.kind, u.path)) {
        v.add(
          u.field,
          `"${u.path}" is outside the roots allowed for ${KIND_TEXT[u.kind]} on this agent: ${this.describe(u.kind)}`,
        );
        continue;
      }
      if (
        (u.kind === 'socket' || u.kind === 'vhost-client') &&
        Buffer.byteLength(path.basename(u.path)) > MAX_SOCKET_NAME_BYTES
      )
        v.add(u.field, `socket file name "${path.basename(u.path)}" is longer than ${MAX_SOCKET_NAME_BYTES} bytes`);
    }
  }

  /** A TAP may go only into a network namespace the operator listed (hostPaths.netns). */
  private checkNetns(v: ViolationList, spec: LinkSpec, role: 'device' | 'driver', field: string): void {
    spec.devices.forEach((d, i) => {
      if (d.kind?.$case !== 'net') return;
      const side = role === 'device' ? 'device_backend' : 'driver_frontend';
      const be = role === 'device' ? d.kind.value.deviceBackend : d.kind.value.driverFrontend;
      const ns = be?.kind?.$case === 'tap' ? be.kind.value.netns : '';
      if (ns !== '' && !this.paths.netns.includes(ns))
        v.add(
          `${field}.devices[${i}].net.${side}.tap.netns`,
          `network namespace "${ns}" is not one this agent may put TAPs into: ${this.paths.netns.length > 0 ? this.paths.netns.join(', ') : '(none)'} (hostPaths.netns)`,
        );
    });
  }

  /**
   * What the filesystem holds at each path (after checkSpec passed): the path and its
   * directories resolve inside the root, and what already sits at the name is what the
   * backend will use (a regular file for a disk or log, a socket for a socket, a symlink
   * into /dev/pts for a pty link). Nothing is created or changed. Throws FAILED_PRECONDITION
   * naming the field and the root.
   */
  checkFilesystem(spec: LinkSpec, role: 'device' | 'driver', linkName: string, field = 'link.spec'): void {
    for (const u of this.uses(spec, role, linkName, field)) {
      const root = this.rootOf(u.kind, u.path);
      if (!root) continue; // checkSpec reports it
      const why = 'blockDevice' in root ? this.blockDeviceProblem(u.path) : this.problem(u, root.dir);
      if (why !== null) throw this.refusal(u, why);
    }
  }

  private refusal(u: HostPathUse, why: string): ServerError {
    const roots = this.describe(u.kind);
    return new ServerError(
      GrpcStatus.FAILED_PRECONDITION,
      `${u.field}: "${u.path}" ${why}; allowed for ${KIND_TEXT[u.kind]}: ${roots}`,
      {
        reason: 'HOST_PATH_REFUSED',
        metadata: { field: u.field, path: u.path, root: this.dirsOf(u.kind).join(',') },
        preconditionViolations: [{ type: 'HOST_PATH', subject: u.field, description: `${why}; allowed: ${roots}` }],
      },
    );
  }

  private blockDeviceProblem(p: string): string | null {
    try {
      return statSync(p).isBlockDevice() ? null : 'is listed in hostPaths.blockDevices but is not a block device';
    } catch {
      return null; // not there yet: the backend retries until it is
    }
  }

  /** Why u cannot be used under dir, or null. */
  private problem(u: HostPathUse, dir: string): string | null {
    let realRoot: string;
    try {
      realRoot = realpathSync(dir);
    } catch {
      return `cannot be used: its root ${dir} does not exist`;
    }
    const r = resolveBeneath(realRoot, u.path.slice(dir === '/' ? 1 : dir.length + 1), u.kind === 'disk' && !u.peer);
    if ('escape' in r) return `leads out of its root: ${r.escape}`;
    if (r.missing || u.peer) return null; // created by the backend (a disk image must exist by then)
    const st = lstatSync(r.path);
    switch (u.kind) {
      case 'disk':
        return st.isFile() ? null : `is a ${kindOf(st)}, not a regular file (special files are refused)`;
      case 'log':
        if (!st.isFile()) return `is a ${kindOf(st)}; console logs are written only to regular files`;
        return st.nlink > 1 ? 'has other hard links' : null;
      case 'socket':
      case 'vhost-client':
        return st.isSocket()
          ? null
          : `is a ${kindOf(st)}, not a socket; it is left alone (remove it or choose another path)`;
      case 'bar':
        return st.isFile() ? null : `is a ${kindOf(st)}; a BAR is mapped from a regular file (sysfs resourceN)`;
      case 'pty':
        if (!st.isSymbolicLink()) return `is a ${kindOf(st)}, not a pty link; it is left alone`;
        return readlinkSync(r.path).startsWith('/dev/pts/')
          ? null
          : 'is a symlink that does not lead to a pty; it is left alone';
    }
  }
}

/**
 * Resolves rel beneath root the way openat2(RESOLVE_BENEATH) does: a symlink may not be
 * absolute nor lead above root; the final component is followed only with followFinal.
 * Returns the resolved path (missing: some component does not exist yet) or why it escapes.
 */
function resolveBeneath(
  root: string,
  rel: string,
  followFinal: boolean,
): { readonly path: string; readonly missing: boolean } | { readonly escape: string } {
  const todo = rel.split('/').filter((c) => c !== '' && c !== '.');
  const stack: string[] = [];
  let links = 0;
  for (let c = todo.shift(); c !== undefined; c = todo.shift()) {
    if (c === '..') {
      if (stack.length === 0) return { escape: 'a symlink climbs above the root' };
      stack.pop();
      continue;
    }
    const cur = path.join(root, ...stack, c);
    const st = lstatOrNull(cur);
    if (st === null) return { path: path.join(cur, ...todo), missing: true };
    if (st.isSymbolicLink() && (todo.length > 0 || followFinal)) {
      if (++links > 40) return { escape: 'too many symlinks' };
      const target = readlinkSync(cur);
      if (path.isAbsolute(target)) return { escape: `the symlink ${cur} points to the absolute path ${target}` };
      todo.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
      continue;
    }
    stack.push(c);
  }
  return { path: path.join(root, ...stack), missing: false };
}

function kindOf(st: Stats): string {
  if (st.isFile()) return 'regular file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isSocket()) return 'socket';
  if (st.isFIFO()) return 'FIFO';
  return 'device file';
}
