/**
 * What the vop-card tests share (test/agent/card-host.test.ts on the host, test/guest/card.test.ts in
 * a QEMU guest): the vop-card binaries, its key=value config rendered from an object, the host agent
 * those tests run (pty, disk, socket and netns roots in one temporary folder), a pty end that reads
 * and writes raw bytes, and a look at the window's magic in the ivshmem memory.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import tty from 'node:tty';

import { repoPath } from '../../lib/src/paths';
import { Agent } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from './servers';

/** The window header's magic (vop/layout.h VOP_WIN_MAGIC): set while a laid-out window is live. */
export const VOP_WIN_MAGIC = 0x4e57504f;

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** The first word of `file` (the ivshmem server's memory): the window magic when it starts the memory. */
export function magicAt(file: string, offset = 0): number {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    readSync(fd, b, 0, 4, offset);
    return b.readUInt32LE(0);
  } finally {
    closeSync(fd);
  }
}

/** Bytes `[offset, offset + len)` of a host file. */
export function readAt(file: string, offset: number, len: number): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** vop-card built for this host (native/out/tools/vop-card). */
export function hostCardBinary(): string {
  execFileSync('make', ['-s', '-C', repoPath('native'), 'out/tools/vop-card'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return repoPath('native', 'out', 'tools', 'vop-card');
}

/** vop-card built static for a guest (native/out/guest/vop-card). */
export function guestCardBinary(): string {
  execFileSync('make', ['-s', '-C', repoPath('native'), 'out/guest/vop-card'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  return repoPath('native', 'out', 'guest', 'vop-card');
}

/** One side's window keys of a card config (docs/card.md), without the `window.` prefix. */
export interface CardWindow {
  access: 'vfio' | 'bar' | 'ivshmem';
  path: string;
  doorbell_path?: string;
  bar?: number;
  side?: 'creator' | 'attacher';
  peer_id?: number;
  doorbell?: 'interrupt' | 'poll';
  poll_max_us?: number;
  offset?: number;
  size?: number;
}

/** A device of a card config: kind and role, then the keys of that kind and role. */
export interface CardDevice {
  name: string;
  kind: 'console' | 'blk' | 'net';
  role: 'device' | 'driver';
  keys?: Record<string, string | number>;
}

/** The key=value text vop-card reads (`kind` and `role` first, as the parser wants). */
export function cardConfig(window: CardWindow, devices: readonly CardDevice[], comment = ''): string {
  const lines: string[] = comment ? [`# ${comment}`] : [];
  for (const [k, v] of Object.entries(window)) if (v !== undefined) lines.push(`window.${k}=${String(v)}`);
  for (const d of devices) {
    lines.push(`device.${d.name}.kind=${d.kind}`, `device.${d.name}.role=${d.role}`);
    for (const [k, v] of Object.entries(d.keys ?? {})) lines.push(`device.${d.name}.${k}=${String(v)}`);
  }
  return lines.join('\n') + '\n';
}

/** A raw pty end on the host: everything read is in `got`. */
export class PtyEnd {
  readonly fd: number;
  private readonly stream: tty.ReadStream;
  got = Buffer.alloc(0);
  constructor(p: string) {
    this.fd = openSync(p, 'r+');
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on('data', (d: Buffer) => {
      this.got = Buffer.concat([this.got, d]);
    });
  }
  write(b: Buffer | string): void {
    writeSync(this.fd, typeof b === 'string' ? Buffer.from(b) : b);
  }
  close(): void {
    this.stream.destroy();
  }
}

/**
 * The host agent of the card tests: node name host-a, its ptys, disks and sockets allowed in `dir`,
 * TAPs in the namespaces `netns`, plus `extraArgs`.
 */
export async function startCardAgent(
  dir: string,
  opts: { netns?: readonly string[]; extraArgs?: readonly string[]; stateDir?: string } = {},
): Promise<{ srv: ServerProcess; agent: Agent }> {
  const args = ['--node-name', 'host-a', '--socket-dir', dir, '--pty-dir', dir, '--disk-dir', dir];
  if (opts.netns?.length) args.push('--netns', opts.netns.join(','));
  const srv = await startServer('agent', [...args, ...(opts.extraArgs ?? [])], {
    stateDir: opts.stateDir ?? tempDir('card-agent'),
  });
  return { srv, agent: new Agent(srv.admin) };
}
