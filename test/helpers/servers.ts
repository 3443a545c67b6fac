/**
 * Starts real vop-agent / vop-controller processes for tests, on port 0, and learns
 * their bound addresses from the "ready" log line. Each server gets its local admin
 * Unix socket in its state directory (`admin`, the target admin calls use: plaintext
 * TCP only gives role reader).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync } from 'node:fs';
import path from 'node:path';

import { repoPath } from '../../lib/src/paths';

import { tempDirRemovedAtExit } from './temp-dir';

export type ServerKind = 'agent' | 'controller';

export interface ServerProcess {
  readonly proc: ChildProcess;
  readonly grpc: string;
  readonly metrics: string;
  /** Path of the admin Unix socket ("" if turned off). */
  readonly adminSocket: string;
  /** grpc-js target of the admin socket: "unix:PATH". */
  readonly admin: string;
  readonly stateDir: string;
  /** Every stdout line parsed as JSON (non-JSON lines kept as { raw }). */
  readonly logs: Record<string, unknown>[];
  readonly stderr: string[];
  /** Sends `signal` and resolves with the exit code (null if killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  exited(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A `vop-PREFIX-XXXXXX` directory removed when the test file's process exits. */
export function tempDir(prefix: string): string {
  return tempDirRemovedAtExit(`vop-${prefix}-`);
}

export const MAIN_JS: Record<ServerKind, string> = {
  agent: repoPath('dist', 'agent', 'src', 'main.js'),
  controller: repoPath('dist', 'controller', 'src', 'main.js'),
};

export async function startServer(
  kind: ServerKind,
  args: readonly string[] = [],
  opts: {
    env?: NodeJS.ProcessEnv;
    stateDir?: string;
    readyTimeoutMs?: number;
    adminSocket?: string;
    /** A command the server runs under, e.g. ['setpriv', '--reuid=65534', ...] (node and its arguments follow). */
    wrap?: readonly string[];
  } = {},
): Promise<ServerProcess> {
  const stateDir = opts.stateDir ?? tempDir(kind);
  const fullArgs = [
    MAIN_JS[kind],
    '--admin-socket',
    opts.adminSocket ?? path.join(stateDir, 'admin.sock'),
    '--grpc-listen',
    '127.0.0.1:0',
    '--metrics-listen',
    '127.0.0.1:0',
    '--state-dir',
    stateDir,
    '--log-level',
    'debug',
    ...args,
  ];
  const [cmd = process.execPath, ...argv] = [...(opts.wrap ?? []), process.execPath, ...fullArgs];
  const proc = spawn(cmd, argv, {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  const exitedP = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let buf = '';
  const ready = new Promise<{ grpc: string; metrics: string; admin: string }>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${kind} not ready in time; stderr: ${stderr.join('')}`)),
      opts.readyTimeoutMs ?? 15_000,
    );
    proc.stdout?.on('data', (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          rec = { raw: line };
        }
        logs.push(rec);
        if (typeof rec.msg === 'string' && rec.msg === `vop-${kind} ready`) {
          clearTimeout(timer);
          resolve({
            grpc: String(rec.grpc),
            metrics: String(rec.metrics),
            admin: typeof rec.admin === 'string' ? rec.admin : '',
          });
        }
      }
    });
    proc.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
    void exitedP.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`${kind} exited early (code ${code}, signal ${signal}); stderr: ${stderr.join('')}`));
    });
  });
  const addr = await ready;
  return {
    proc,
    grpc: addr.grpc,
    metrics: addr.metrics,
    adminSocket: addr.admin,
    admin: addr.admin === '' ? '' : `unix:${addr.admin}`,
    stateDir,
    logs,
    stderr,
    exited: () => exitedP,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      const t0 = Date.now();
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      const r = await exitedP;
      return { ...r, ms: Date.now() - t0 };
    },
  };
}

/** Runs a command, resolving with its exit code and output (never rejects on non-zero). */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { input?: string; timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, {
      cwd: opts.cwd ?? repoPath(),
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    // A command that exits without reading its input (openssl, say) makes this write fail
    // with EPIPE after the fact; its exit status is what reports a failure.
    p.stdin.on('error', () => undefined);
    p.stdin.end(opts.input ?? '');
  });
}

/**
 * buf curl against a plaintext server, reflection only (no .proto files). `target` is
 * HOST:PORT[/pkg.Service/Method], or unix:PATH[/pkg.Service/Method] for a Unix socket
 * (what `grpcurl -unix -plaintext PATH` does).
 */
export function bufCurl(
  target: string,
  args: readonly string[],
  data?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const extra = data === undefined ? [] : ['-d', data];
  let url = `http://${target}`;
  const unix = /^unix:(\/[^ ]*?\.sock)(\/.*)?$/.exec(target);
  if (unix) {
    extra.push('--unix-socket', unix[1] ?? '');
    url = `http://localhost${unix[2] ?? ''}`;
  }
  return run(
    repoPath('node_modules', '.bin', 'buf'),
    ['curl', '--protocol', 'grpc', '--http2-prior-knowledge', ...extra, ...args, url.replace(/\/$/, '')],
    {
      timeoutMs: 30_000,
    },
  );
}

/** Path of promtool; throws when Prometheus is not installed (.ci/run installs it). */
export function promtoolPath(): string {
  for (const p of ['/usr/bin/promtool', '/usr/local/bin/promtool']) {
    try {
      accessSync(p);
      return p;
    } catch {
      /* try next */
    }
  }
  throw new Error('promtool not found: install the Debian package "prometheus" (.ci/run does)');
}

/** Drops prom-client's gauges named *_total, which promtool flags (prometheus/client_js#283). */
export function withoutKnownPromClientLintNames(text: string): string {
  return text
    .split('\n')
    .filter((l) => !/nodejs_active_(handles|requests|resources)_total/.test(l))
    .join('\n');
}
