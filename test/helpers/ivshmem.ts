/**
 * vop's ivshmem server and a host ivshmem peer as child processes of a test
 * (native/tools/vop-ivshmem-server.c, native/tools/vop-ivshmem-peer.c; docs/ivshmem-server.md).
 * Both print one line per event; these wrappers keep every line and wait on them.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';

import { repoPath } from '../../lib/src/paths';

let toolsBuilt = false;

/** Builds the optimised tools (make -C native tools; a no-op when up to date) and returns their paths. */
export function ivshmemTools(): { server: string; peer: string } {
  if (!toolsBuilt) {
    execFileSync('make', ['-s', '-C', repoPath('native'), 'tools'], { stdio: ['ignore', 'ignore', 'inherit'] });
    toolsBuilt = true;
  }
  return {
    server: repoPath('native', 'out', 'tools', 'vop-ivshmem-server'),
    peer: repoPath('native', 'out', 'tools', 'vop-ivshmem-peer'),
  };
}

/** A child process whose stdout lines are kept; waits on them. */
class LineProcess {
  readonly lines: string[] = [];
  readonly stderr: string[] = [];
  private buf = '';
  private waiters: (() => void)[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    proc.stdout?.setEncoding('utf8');
    proc.stderr?.setEncoding('utf8');
    proc.stdout?.on('data', (c: string) => {
      this.buf += c;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        this.lines.push(this.buf.slice(0, nl));
        this.buf = this.buf.slice(nl + 1);
      }
      this.wake();
    });
    proc.stderr?.on('data', (c: string) => this.stderr.push(c));
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.wake();
        resolve({ code, signal });
      }),
    );
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** The first line at index >= from that matches `re`, with its index. */
  waitLine(
    re: RegExp,
    opts: { from?: number; timeoutMs?: number } = {},
  ): Promise<{ m: RegExpExecArray; index: number }> {
    const from = opts.from ?? 0;
    const timeoutMs = opts.timeoutMs ?? 30_000;
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined = undefined;
      const done = (): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      const check = (): void => {
        for (let i = from; i < this.lines.length; i++) {
          const m = re.exec(this.lines[i] ?? '');
          if (m) {
            done();
            resolve({ m, index: i });
            return;
          }
        }
        if (!this.running) {
          done();
          reject(
            new Error(
              `${this.name} exited (${JSON.stringify(this.exitInfo)}) without a line matching ${re}: ${this.tail()}`,
            ),
          );
        }
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no line matching ${re} in ${timeoutMs} ms: ${this.tail()}`));
      }, timeoutMs);
      this.waiters.push(check);
      check();
    });
  }

  tail(): string {
    return JSON.stringify({ stdout: this.lines.slice(-20), stderr: this.stderr.join('').slice(-2000) });
  }

  /** SIGTERM, then SIGKILL after 5 s; resolves when it has exited. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) {
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      try {
        return await this.exited;
      } finally {
        clearTimeout(t);
      }
    }
    return this.exited;
  }
}

export interface IvshmemServerOptions {
  /** Socket path (created 0600). */
  socket: string;
  sizeBytes: number;
  vectors?: number;
  /** Backing file; default: the server's sealed memfd. */
  shmPath?: string;
  maxPeers?: number;
  verbose?: boolean;
}

/** vop-ivshmem-server: lines "ready ...", "connect ID", "disconnect ID REASON", "reject REASON". */
export class IvshmemServer extends LineProcess {
  private constructor(
    proc: ChildProcess,
    readonly socket: string,
  ) {
    super('vop-ivshmem-server', proc);
  }

  static async start(opts: IvshmemServerOptions): Promise<IvshmemServer> {
    const { server } = ivshmemTools();
    const args = ['--socket', opts.socket, '--size', String(opts.sizeBytes), '--vectors', String(opts.vectors ?? 1)];
    if (opts.shmPath) args.push('--shm', opts.shmPath);
    if (opts.maxPeers) args.push('--max-peers', String(opts.maxPeers));
    if (opts.verbose) args.push('--verbose');
    const s = new IvshmemServer(spawn(server, args, { stdio: ['ignore', 'pipe', 'pipe'] }), opts.socket);
    await s.waitLine(/^ready /, { timeoutMs: 10_000 });
    return s;
  }

  /** Ids connected now, from the connect/disconnect lines. */
  connected(): number[] {
    const ids = new Set<number>();
    for (const l of this.lines) {
      const m = /^(connect|disconnect) (\d+)/.exec(l);
      if (!m) continue;
      if (m[1] === 'connect') ids.add(Number(m[2]));
      else ids.delete(Number(m[2]));
    }
    return [...ids].sort((a, b) => a - b);
  }
}

/** A host ivshmem peer (vop-ivshmem-peer) driven by commands; see that file for the protocol. */
export class IvshmemPeer extends LineProcess {
  id = -1;
  shmSize = 0;
  /** Lines already consumed as replies. */
  private replyFrom = 0;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(proc: ChildProcess) {
    super('vop-ivshmem-peer', proc);
  }

  static async start(socket: string, vectors = 1): Promise<IvshmemPeer> {
    const { peer } = ivshmemTools();
    const p = new IvshmemPeer(
      spawn(peer, ['--socket', socket, '--vectors', String(vectors)], { stdio: ['pipe', 'pipe', 'pipe'] }),
    );
    const { m, index } = await p.waitLine(/^hello (\d+) (\d+) (\d+)$/, { timeoutMs: 10_000 });
    p.id = Number(m[1]);
    p.shmSize = Number(m[3]);
    p.replyFrom = index + 1;
    return p;
  }

  /** Sends one command and resolves with its reply line (commands are answered in order). */
  command(line: string, timeoutMs = 10_000): Promise<string> {
    const run = async (): Promise<string> => {
      this.proc.stdin?.write(`${line}\n`);
      const { m, index } = await this.waitLine(/^(ok|data .*|peers.*|error .*)$/, { from: this.replyFrom, timeoutMs });
      this.replyFrom = index + 1;
      if (m[0].startsWith('error')) throw new Error(`vop-ivshmem-peer ${line}: ${m[0]}`);
      return m[0];
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  async ring(peer: number, vector: number): Promise<void> {
    await this.command(`ring ${peer} ${vector}`);
  }

  async write(offset: number, data: Buffer): Promise<void> {
    await this.command(`write ${offset} ${data.toString('hex')}`);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    return Buffer.from((await this.command(`read ${offset} ${length}`)).slice(5), 'hex');
  }

  async peers(): Promise<number[]> {
    return (await this.command('peers')).split(' ').slice(1).map(Number);
  }

  /** Total rings received on `vector` so far (sum of the "irq" lines). */
  irqs(vector: number): number {
    let n = 0;
    for (const l of this.lines) {
      const m = /^irq (\d+) (\d+)$/.exec(l);
      if (m && Number(m[1]) === vector) n += Number(m[2]);
    }
    return n;
  }

  /** Waits until at least `count` rings have arrived on `vector` in total. */
  async waitIrqs(vector: number, count: number, timeoutMs = 30_000): Promise<void> {
    const t0 = Date.now();
    while (this.irqs(vector) < count) {
      const left = timeoutMs - (Date.now() - t0);
      if (left <= 0)
        throw new Error(
          `vop-ivshmem-peer: ${this.irqs(vector)} of ${count} rings on vector ${vector} in ${timeoutMs} ms`,
        );
      await this.waitLine(/^irq /, { from: this.lines.length, timeoutMs: left }).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    if (this.running) this.proc.stdin?.end('quit\n');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    try {
      await this.exited;
    } finally {
      clearTimeout(t);
    }
  }
}
