/**
 * The hostile window creator of the data-plane security tests: the C program
 * test/native/tools/hostile-peer.c (built with `make -C native tools`), started as
 * a real process that creates a window file where an agent will look for it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

import { repoPath } from '../../lib/src/paths';

export const HOSTILE_PEER = repoPath('native', 'out', 'tools', 'vop-hostile-peer');

/** Builds the hostile peer (a few seconds the first time); throws when it cannot. */
export function buildHostilePeer(): void {
  const r = spawnSync('make', ['-s', '-C', repoPath('native'), 'tools'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make -C native tools failed: ${r.stderr}`);
}

export interface HostilePeer {
  readonly proc: ChildProcess;
  /** stdout lines so far. */
  readonly lines: string[];
  /** Resolves once the program printed `line` (rejects when it exits first). */
  waitLine(line: string, timeoutMs?: number): Promise<void>;
  /** Writes to its stdin. */
  send(text: string): void;
  /** SIGTERM, then waits for the exit (it removes its window file). */
  stop(): Promise<void>;
}

export function startHostilePeer(args: readonly string[]): HostilePeer {
  const proc = spawn(HOSTILE_PEER, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  let buf = '';
  const waiters: { line: string; resolve: () => void }[] = [];
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  proc.stdout?.on('data', (c: Buffer) => {
    buf += c.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      lines.push(l);
      for (const w of waiters.filter((x) => x.line === l)) w.resolve();
    }
  });
  proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
  return {
    proc,
    lines,
    waitLine(line, timeoutMs = 15_000) {
      if (lines.includes(line)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`hostile peer: no "${line}" in ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          line,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        });
        void exited.then(() => {
          clearTimeout(t);
          reject(new Error(`hostile peer exited (${proc.exitCode}) before "${line}": ${stderr}`));
        });
      });
    },
    send(text) {
      proc.stdin?.write(text);
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      await exited;
    },
  };
}

/** Side block of the attacher (side 1) in a window file: its epoch (0 = never attached). */
export function attacherEpoch(windowPath: string): number {
  const b = readFileSync(windowPath).subarray(0, 0x1000);
  return b.readUInt32LE(0x100 + 8);
}
