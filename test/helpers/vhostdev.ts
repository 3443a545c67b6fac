/**
 * `native/out/tools/vhostdev` (test/native/tools/vhostdev.c) as a child process: one vop
 * vhost-user device (net on a TAP, blk on a file, or the counting sink) on a Unix socket, for the
 * vhost-user tests and `npm run bench:vhost`. Lines of its stdout are kept; `stop()` sends SIGTERM
 * and parses the counters it prints as JSON on stderr.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';

import { repoPath } from '../../lib/src/paths';

export type VhostCounters = Record<string, number>;

let built = false;

/** `make -C native tools` once per process (a no-op when up to date). */
export function buildVhostdev(): string {
  if (!built) {
    execFileSync('make', ['-s', '-C', repoPath('native'), 'tools'], { stdio: ['ignore', 'ignore', 'inherit'] });
    built = true;
  }
  return repoPath('native', 'out', 'tools', 'vhostdev');
}

export class VhostDev {
  readonly lines: string[] = [];
  err = '';
  readonly exited: Promise<number | null>;
  private readonly proc: ChildProcess;
  private partial = '';
  private waiters: Array<() => void> = [];

  private constructor(args: readonly string[]) {
    this.proc = spawn(buildVhostdev(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.setEncoding('utf8').on('data', (c: string) => {
      this.partial += c;
      const parts = this.partial.split('\n');
      this.partial = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const w of this.waiters.splice(0)) w();
    });
    this.proc.stderr?.setEncoding('utf8').on('data', (c: string) => (this.err += c));
    this.exited = new Promise((resolve) =>
      this.proc.once('exit', (code) => {
        for (const w of this.waiters.splice(0)) w();
        resolve(code);
      }),
    );
  }

  /** Starts vhostdev with args and waits for its "ready" line. */
  static async start(args: readonly string[], timeoutMs = 20_000): Promise<VhostDev> {
    const d = new VhostDev(args);
    await d.waitLine(/^ready$/, timeoutMs);
    return d;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** The first line (from index `from`) matching re, waiting up to timeoutMs. */
  async waitLine(re: RegExp, timeoutMs = 20_000, from = 0): Promise<RegExpExecArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      for (let i = from; i < this.lines.length; i++) {
        const m = re.exec(this.lines[i] ?? '');
        if (m) return m;
      }
      if (!this.running) throw new Error(`vhostdev exited before ${String(re)}: ${this.err}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`vhostdev: no line ${String(re)} in ${timeoutMs} ms: ${this.lines.join(' | ')}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** The latest "stats ..." line's key=value numbers (blk) or frame counts (net). */
  lastStats(): string | undefined {
    for (let i = this.lines.length - 1; i >= 0; i--) if (this.lines[i]?.startsWith('stats ')) return this.lines[i];
    return undefined;
  }

  /** SIGTERM, wait, and the counters it printed. */
  async stop(): Promise<VhostCounters> {
    if (this.running) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
    const line = this.err
      .split('\n')
      .reverse()
      .find((l) => l.startsWith('{'));
    return line ? (JSON.parse(line) as VhostCounters) : {};
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.running) this.proc.kill(signal);
  }
}
