/**
 * Helpers for the device integration tests: build and run vopdev (a test tool,
 * test/native/tools/vopdev.c: one window side with device backends, no agent),
 * network namespaces that are always removed, and a small NBD client that
 * records exactly which requests the server acknowledged.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';

import { repoPath } from '../../lib/src/paths';
import { tempDirRemovedAtExit } from '../helpers/temp-dir';

export const VOPDEV = repoPath('native', 'out', 'tools', 'vopdev');

/** Build vopdev (idempotent, a few seconds the first time). */
export function buildVopdev(): void {
  const r = spawnSync('make', ['-s', '-C', repoPath('native'), 'out/tools/vopdev'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make -C native out/tools/vopdev failed: ${r.stderr}`);
}

/**
 * Build a one-file C test tool of test/devices/tools (e.g. vnet-capture) into a temp directory
 * and return its path.
 */
export function buildTool(name: string): string {
  const out = path.join(tempDir(`vop-${name}-`), name);
  const r = spawnSync('cc', ['-std=gnu11', '-Wall', '-Wextra', '-Werror', '-O2', '-o', out, toolSource(name)], {
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`cc ${name}.c failed: ${r.stderr}`);
  return out;
}

function toolSource(name: string): string {
  return repoPath('test', 'devices', 'tools', `${name}.c`);
}

/** A directory removed when the test file's process exits. */
export function tempDir(prefix: string): string {
  return tempDirRemovedAtExit(prefix);
}

/** A running vopdev process and the "key value" lines it printed. */
export class Vopdev {
  readonly proc: ChildProcess;
  readonly lines = new Map<string, string>();
  stderr = '';
  private ready: Promise<void>;
  private exited: Promise<number | null>;

  constructor(args: readonly string[], netns: string | null = null, env: Record<string, string> = {}) {
    const cmd = netns === null ? VOPDEV : 'ip';
    const argv = netns === null ? [...args] : ['netns', 'exec', netns, VOPDEV, ...args];
    this.proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
    let out = '';
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    this.ready = new Promise((resolve, reject) => {
      this.proc.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        let nl: number;
        while ((nl = out.indexOf('\n')) >= 0) {
          const line = out.slice(0, nl);
          out = out.slice(nl + 1);
          if (line === 'ready') resolve();
          const sp = line.indexOf(' ');
          if (sp > 0) this.lines.set(line.slice(0, sp), line.slice(sp + 1));
        }
      });
      this.proc.once('exit', (code) => reject(new Error(`vopdev exited (${code}) before ready: ${this.stderr}`)));
    });
    this.ready.catch(() => undefined);
    this.proc.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
  }

  async waitReady(timeoutMs = 15000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`vopdev not ready after ${timeoutMs} ms: ${this.stderr}`)), timeoutMs);
    });
    try {
      await Promise.race([this.ready, t]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, wait, and return the counters it printed on stderr. */
  async stop(): Promise<Record<string, Record<string, number>>> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    await this.exited;
    const last = this.stderr.trim().split('\n').pop() ?? '{}';
    try {
      return JSON.parse(last) as Record<string, Record<string, number>>;
    } catch {
      return {};
    }
  }

  /** kill -9 and wait for the exit. */
  async crash(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** Run a command, capture output, bounded in time. */
export function sh(
  cmd: string,
  args: readonly string[],
  timeoutMs = 60000,
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
}

/** Create network namespaces; remove() deletes them (and everything in them). */
export class Netns {
  readonly names: string[];
  constructor(prefix: string, count: number) {
    const tag = `${prefix}${process.pid % 100000}`;
    this.names = Array.from({ length: count }, (_, i) => `${tag}-${i}`);
    for (const n of this.names) {
      sh('ip', ['netns', 'del', n]);
      const r = sh('ip', ['netns', 'add', n]);
      if (r.code !== 0) {
        this.remove();
        throw new Error(`ip netns add ${n}: ${r.stderr}`);
      }
      sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
    }
  }
  exec(
    ns: string,
    cmd: string,
    args: readonly string[],
    timeoutMs = 60000,
  ): { code: number | null; stdout: string; stderr: string } {
    return sh('ip', ['netns', 'exec', ns, cmd, ...args], timeoutMs);
  }
  remove(): void {
    for (const n of this.names) sh('ip', ['netns', 'del', n]);
  }
}

// ---------------------------------------------------------------- NBD client

const NBD_REQ_MAGIC = 0x25609513;
const NBD_REPLY_MAGIC = 0x67446698;
export const NBD_CMD = { READ: 0, WRITE: 1, DISC: 2, FLUSH: 3, TRIM: 4, WRITE_ZEROES: 6 } as const;

interface Pending {
  resolve: (r: { error: number; data: Buffer | null }) => void;
  readLen: number;
}

/**
 * Minimal NBD client (newstyle fixed, NBD_OPT_GO, simple replies) with
 * pipelining: every request resolves when its reply arrives.
 */
export class NbdClient {
  size = 0n;
  flags = 0;
  private sock: net.Socket;
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  private pending = new Map<bigint, Pending>();
  private nextHandle = 1n;
  private closed = false;

  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    sock.on('close', () => {
      this.closed = true;
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
    sock.on('error', () => undefined);
  }

  static async connect(socketPath: string, name = 'vop'): Promise<NbdClient> {
    const sock = net.createConnection(socketPath);
    await once(sock, 'connect');
    const c = new NbdClient(sock);
    await c.handshake(name);
    void c.replyLoop();
    return c;
  }

  private async take(n: number): Promise<Buffer> {
    while (this.buf.length < n) {
      if (this.closed) throw new Error('nbd: connection closed');
      await new Promise<void>((r) => this.waiters.push(r));
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return Buffer.from(out);
  }

  private async handshake(name: string): Promise<void> {
    const hello = await this.take(18);
    if (hello.toString('latin1', 0, 16) !== 'NBDMAGICIHAVEOPT') throw new Error('nbd: bad greeting');
    const cflags = Buffer.alloc(4);
    cflags.writeUInt32BE(3); // FIXED_NEWSTYLE | NO_ZEROES
    const nameBuf = Buffer.from(name);
    const data = Buffer.alloc(4 + nameBuf.length + 2);
    data.writeUInt32BE(nameBuf.length, 0);
    nameBuf.copy(data, 4);
    data.writeUInt16BE(0, 4 + nameBuf.length);
    const opt = Buffer.alloc(16);
    opt.write('IHAVEOPT', 0, 'latin1');
    opt.writeUInt32BE(7, 8); // NBD_OPT_GO
    opt.writeUInt32BE(data.length, 12);
    this.sock.write(Buffer.concat([cflags, opt, data]));
    for (;;) {
      const h = await this.take(20);
      const type = h.readUInt32BE(12);
      const len = h.readUInt32BE(16);
      const body = await this.take(len);
      if (type === 1) return; // ACK
      if (type === 3 && body.readUInt16BE(0) === 0) {
        this.size = body.readBigUInt64BE(2);
        this.flags = body.readUInt16BE(10);
      } else if (type >= 0x80000000) {
        throw new Error(`nbd: option error ${type.toString(16)}`);
      }
    }
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const h = await this.take(16);
        if (h.readUInt32BE(0) !== NBD_REPLY_MAGIC) throw new Error('nbd: bad reply magic');
        const error = h.readUInt32BE(4);
        const handle = h.readBigUInt64BE(8);
        const p = this.pending.get(handle);
        if (!p) throw new Error(`nbd: reply for unknown handle ${handle}`);
        this.pending.delete(handle);
        const data = p.readLen > 0 && error === 0 ? await this.take(p.readLen) : null;
        p.resolve({ error, data });
      }
    } catch {
      for (const p of this.pending.values()) p.resolve({ error: -1, data: null });
      this.pending.clear();
    }
  }

  /** Send one request; resolves with the NBD error (0 ok) and read data. */
  request(
    type: number,
    offset: bigint,
    length: number,
    payload: Buffer | null = null,
  ): Promise<{ error: number; data: Buffer | null }> {
    const handle = this.nextHandle++;
    const h = Buffer.alloc(28);
    h.writeUInt32BE(NBD_REQ_MAGIC, 0);
    h.writeUInt16BE(0, 4);
    h.writeUInt16BE(type, 6);
    h.writeBigUInt64BE(handle, 8);
    h.writeBigUInt64BE(offset, 16);
    h.writeUInt32BE(length, 24);
    const p = new Promise<{ error: number; data: Buffer | null }>((resolve) => {
      this.pending.set(handle, { resolve, readLen: type === NBD_CMD.READ ? length : 0 });
    });
    this.sock.write(payload ? Buffer.concat([h, payload]) : h);
    return p;
  }

  /** Stop reading the socket (replies pile up in the kernel) until resume(). */
  pause(): void {
    this.sock.pause();
  }

  resume(): void {
    this.sock.resume();
  }

  /** Close without reading what is queued and without NBD_CMD_DISC (a client that vanishes). */
  destroy(): void {
    this.sock.destroy();
  }

  async close(): Promise<void> {
    if (!this.closed) {
      const h = Buffer.alloc(28);
      h.writeUInt32BE(NBD_REQ_MAGIC, 0);
      h.writeUInt16BE(NBD_CMD.DISC, 6);
      this.sock.write(h);
      this.sock.end();
    }
    this.sock.destroy();
  }
}
