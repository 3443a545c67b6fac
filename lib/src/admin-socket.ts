/**
 * The local admin endpoint: a gRPC listener on a Unix socket, mode 0660, owned by the
 * process's user and a configurable group. File permissions are the access check:
 * whoever can open the socket is admin (the convention of docker and containerd).
 *
 * Created safely: the parent directory is made 0755 (0750 with a group) when missing;
 * an existing entry at the path is replaced only when it is a stale socket (nothing
 * answers on it), never when it is any other kind of file or a live socket. The socket
 * is bound inside a private 0700 directory, given its mode and group there, and then
 * renamed into place, so nobody can connect before the permissions are right.
 */
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import type { Server, ServerCredentials } from '@grpc/grpc-js';

import { ConfigError } from './config';

/** sun_path holds 108 bytes with the terminating NUL. */
const MAX_SOCKET_PATH = 107;
export const ADMIN_SOCKET_MODE = 0o660;

export interface AdminSocket {
  readonly path: string;
  /** Removes the socket file if it is still the one this process bound. */
  unlink(): void;
}

/** Resolves a group name (from /etc/group) or a numeric gid; throws ConfigError naming `field`. */
export function resolveGroup(group: string, groupFile = '/etc/group', field = 'adminSocket.group'): number {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch (err) {
    throw new ConfigError(`${field}: cannot read ${groupFile}: ${(err as Error).message}`);
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new ConfigError(`${field}: no group "${group}" in ${groupFile} (a numeric gid also works)`);
}

function probe(socketPath: string): Promise<'live' | 'stale'> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve('live');
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      s.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve('stale');
      else reject(err);
    });
  });
}

/** Checks what is at `socketPath` now: nothing, or a stale socket (fine); anything else throws ConfigError. */
async function checkExisting(socketPath: string): Promise<void> {
  let st;
  try {
    st = lstatSync(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new ConfigError(`adminSocket.path: cannot inspect ${socketPath}: ${(err as Error).message}`);
  }
  if (!st.isSocket())
    throw new ConfigError(
      `adminSocket.path: ${socketPath} exists and is not a socket; refusing to replace it (remove it by hand if it is yours)`,
    );
  let state: 'live' | 'stale';
  try {
    state = await probe(socketPath);
  } catch (err) {
    throw new ConfigError(`adminSocket.path: cannot probe ${socketPath}: ${(err as Error).message}`);
  }
  if (state === 'live') throw new ConfigError(`adminSocket.path: ${socketPath} is in use by another process`);
}

/**
 * Binds `server` on a Unix socket at `socketPath` with `creds` (insecure credentials
 * carrying the admin interceptors). Throws ConfigError naming the field on a bad path,
 * an existing non-socket, a live socket or an unknown group.
 */
export async function bindAdminSocket(
  server: Server,
  creds: ServerCredentials,
  socketPath: string,
  group: string | undefined,
): Promise<AdminSocket> {
  if (!path.isAbsolute(socketPath)) throw new ConfigError(`adminSocket.path: ${socketPath} must be absolute`);
  const gid = group === undefined ? undefined : resolveGroup(group);
  const parent = path.dirname(socketPath);
  // The temporary bind path (parent/.vop-XXXXXX/s) must fit sun_path too.
  const longest = Math.max(Buffer.byteLength(socketPath), Buffer.byteLength(parent) + 14);
  if (longest > MAX_SOCKET_PATH)
    throw new ConfigError(
      `adminSocket.path: ${socketPath} is too long for a Unix socket (limit ${MAX_SOCKET_PATH - 14 - 1} bytes for its directory)`,
    );
  try {
    statSync(parent);
  } catch {
    mkdirSync(parent, { recursive: true, mode: gid === undefined ? 0o755 : 0o750 });
    if (gid !== undefined) chownSync(parent, process.getuid?.() ?? 0, gid);
  }
  if (!statSync(parent).isDirectory()) throw new ConfigError(`adminSocket.path: ${parent} is not a directory`);
  await checkExisting(socketPath);

  const tmpDir = mkdtempSync(path.join(parent, '.vop-'));
  const tmpSock = path.join(tmpDir, 's');
  try {
    await new Promise<number>((resolve, reject) =>
      server.bindAsync(`unix:${tmpSock}`, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    chmodSync(tmpSock, ADMIN_SOCKET_MODE);
    if (gid !== undefined) chownSync(tmpSock, process.getuid?.() ?? 0, gid);
    renameSync(tmpSock, socketPath);
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
  const bound = statSync(socketPath);
  return {
    path: socketPath,
    unlink() {
      try {
        const now = lstatSync(socketPath);
        if (now.ino === bound.ino && now.dev === bound.dev) unlinkSync(socketPath);
      } catch {
        /* already gone */
      }
    },
  };
}
