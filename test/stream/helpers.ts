/**
 * Helpers for the stream transport tests: build and run vop-stream (a test tool,
 * test/native/tools/stream-side.c: one side of a stream link with device backends and no
 * agent), two network namespaces joined by a veth pair, a pty end, a secret file.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import tty from 'node:tty';

import type { Device } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { Netns, sh } from '../devices/helpers';
import { run } from '../helpers/servers';

export const VOP_STREAM = repoPath('native', 'out', 'tools', 'vop-stream');

/** Build vop-stream (idempotent). */
export function buildVopStream(): void {
  const r = spawnSync('make', ['-s', '-C', repoPath('native'), 'out/tools/vop-stream'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make -C native out/tools/vop-stream failed: ${r.stderr}`);
}

/** A secret file of mode 0600 in dir. */
export function secretFile(dir: string, name: string, secret: string): string {
  const p = path.join(dir, name);
  writeFileSync(p, `${secret}\n`, { mode: 0o600 });
  return p;
}

/** A running vop-stream and the lines it printed. */
export class StreamSide {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  private exited: Promise<number | null>;

  /** cpu: run it (and every thread it starts) on that CPU only (taskset). */
  constructor(args: readonly string[], netns: string | null, cpu: number | null = null) {
    const pin = cpu === null ? [] : ['taskset', '-c', String(cpu)];
    const tool = [...pin, VOP_STREAM, ...args];
    const cmd = netns === null ? (tool[0] ?? VOP_STREAM) : 'ip';
    const argv = netns === null ? tool.slice(1) : ['netns', 'exec', netns, ...tool];
    this.proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    let out = '';
    this.proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      let nl: number;
      while ((nl = out.indexOf('\n')) >= 0) {
        this.lines.push(out.slice(0, nl));
        out = out.slice(nl + 1);
      }
    });
    this.proc.stderr?.on('data', (d: Buffer) => {
      this.stderr += d.toString();
    });
  }

  /** Value of the first "key value" line with this key, or undefined. */
  value(key: string): string | undefined {
    const l = this.lines.find((x) => x.startsWith(`${key} `));
    return l?.slice(key.length + 1);
  }

  count(pred: (line: string) => boolean): number {
    return this.lines.filter(pred).length;
  }

  /** Wait until n lines satisfy pred (the process must stay alive). */
  async waitLines(pred: (line: string) => boolean, n = 1, timeoutMs = 20000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (this.count(pred) < n) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null)
        throw new Error(`vop-stream exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.stderr}`);
      if (Date.now() > end)
        throw new Error(`timed out waiting for vop-stream output; got:\n${this.lines.join('\n')}\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async stop(): Promise<void> {
    if (this.alive()) this.proc.kill('SIGTERM');
    await this.exited;
  }

  async crash(): Promise<void> {
    if (this.alive()) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** Two namespaces joined by a veth pair: a is 10.<net>.0.1, b is 10.<net>.0.2. */
export class VethPair {
  readonly ns: Netns;
  readonly a: string;
  readonly b: string;
  readonly ifA: string;
  readonly ifB: string;
  constructor(
    prefix: string,
    readonly net: number,
  ) {
    this.ns = new Netns(prefix, 2);
    [this.a, this.b] = this.ns.names as [string, string];
    const tag = `${prefix}${process.pid % 10000}`.slice(0, 11);
    this.ifA = `${tag}a`;
    this.ifB = `${tag}b`;
    const steps: string[][] = [
      ['link', 'add', this.ifA, 'netns', this.a, 'type', 'veth', 'peer', 'name', this.ifB, 'netns', this.b],
      ['-n', this.a, 'addr', 'add', `10.${net}.0.1/24`, 'dev', this.ifA],
      ['-n', this.b, 'addr', 'add', `10.${net}.0.2/24`, 'dev', this.ifB],
      ['-n', this.a, 'link', 'set', this.ifA, 'up'],
      ['-n', this.b, 'link', 'set', this.ifB, 'up'],
    ];
    for (const s of steps) {
      const r = sh('ip', s);
      if (r.code !== 0) {
        this.ns.remove();
        throw new Error(`ip ${s.join(' ')}: ${r.stderr}`);
      }
    }
  }
  /** Set the veth end in a up or down. */
  setUp(up: boolean): void {
    const r = sh('ip', ['-n', this.a, 'link', 'set', this.ifA, up ? 'up' : 'down']);
    if (r.code !== 0) throw new Error(`ip link set: ${r.stderr}`);
  }
  remove(): void {
    this.ns.remove();
  }
}

/** A TAP of vop-stream in ns gets addr and comes up. */
export function tapUp(ns: Netns, n: string, tap: string, addr: string): void {
  for (const s of [
    ['addr', 'replace', addr, 'dev', tap],
    ['link', 'set', tap, 'up'],
  ]) {
    const r = ns.exec(n, 'ip', s);
    if (r.code !== 0) throw new Error(`ip ${s.join(' ')} in ${n}: ${r.stderr}`);
  }
}

/** Open a pty slave in raw mode; collect what it reads. */
export class PtyEnd {
  readonly fd: number;
  private stream: tty.ReadStream;
  private got = Buffer.alloc(0);
  constructor(p: string) {
    this.fd = openSync(p, 'r+');
    this.stream = new tty.ReadStream(this.fd);
    this.stream.setRawMode(true);
    this.stream.on('data', (d: Buffer) => {
      this.got = Buffer.concat([this.got, d]);
    });
  }
  async write(b: Buffer): Promise<void> {
    let off = 0;
    while (off < b.length) {
      try {
        off += writeSync(this.fd, b, off, Math.min(65536, b.length - off));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        await new Promise((r) => setTimeout(r, 2));
      }
    }
  }
  async read(n: number, timeoutMs = 10000): Promise<Buffer> {
    const end = Date.now() + timeoutMs;
    while (this.got.length < n && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    const out = this.got.subarray(0, n);
    this.got = this.got.subarray(n);
    return out;
  }
  close(): void {
    this.stream.destroy();
  }
}

/** Ping from ns n until one reply comes back (the link may still be starting), bounded. */
export async function pingUntil(ns: Netns, n: string, addr: string, timeoutMs = 20000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const r = ns.exec(n, 'ping', ['-c', '1', '-W', '1', addr], 5000);
    if (r.code === 0) return true;
  }
  return false;
}

/** A net device (TAP on each side, named devTap / drvTap) and a console (ptys host.pty / card.pty in dir). */
export function tapAndConsoleDevices(dir: string, devTap: string, drvTap: string): Device[] {
  return [
    {
      name: 'net0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'net',
        value: {
          mac: '',
          mtu: 0,
          offloads: false,
          deviceBackend: { kind: { $case: 'tap', value: { name: devTap, netns: '' } } },
          driverFrontend: { kind: { $case: 'tap', value: { name: drvTap, netns: '' } } },
        },
      },
    },
    {
      name: 'con0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'console',
        value: {
          deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'host.pty') } } },
          driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, 'card.pty') } } },
          log: undefined,
        },
      },
    },
  ];
}

/**
 * iperf3 TCP for 2 s from namespace n to a one-off server started at serverAddr in namespace serverNs:
 * Gbit/s received. A run that ends without a result (iperf3 reports "error" in its JSON, as it does
 * when a control message times out on a loaded machine) is retried with a new server on the next port.
 */
export function iperf(v: VethPair, n: string, serverNs: string, serverAddr: string, reverse: boolean): number {
  const errors: string[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = String(5201 + attempt + (reverse ? 10 : 0));
    const server = v.ns.exec(serverNs, 'iperf3', ['-s', '-D', '-1', '-p', port, '--bind', serverAddr]);
    assert.equal(server.code, 0, server.stderr);
    const args = ['-c', serverAddr, '-p', port, '-t', '2', '-J', ...(reverse ? ['-R'] : [])];
    for (let i = 0; i < 20; i++) {
      const r = v.ns.exec(n, 'iperf3', args, 30000);
      let j: { error?: string; end?: { sum_received?: { bits_per_second: number } } } = {};
      try {
        j = JSON.parse(r.stdout) as typeof j;
      } catch {
        j = { error: `${r.stdout}${r.stderr}` };
      }
      const bps = j.end?.sum_received?.bits_per_second;
      if (r.code === 0 && bps !== undefined) return bps / 1e9;
      if (/Connection refused|unable to connect/.test(`${j.error ?? ''}${r.stderr}`)) continue; // not listening yet
      errors.push(j.error ?? `exit ${r.code}: ${r.stderr}`);
      break;
    }
    v.ns.exec(serverNs, 'pkill', ['-f', `iperf3 -s -D -1 -p ${port} `]);
  }
  throw new Error(`iperf3 gave no result: ${errors.join('; ')}`);
}

/** iperf3 TCP both ways between the namespaces behind the TAPs: the server behind the driver side (v.b). */
export function iperfBothWays(v: VethPair, serverAddr: string, what: string): void {
  const fwd = iperf(v, v.a, v.b, serverAddr, false);
  const rev = iperf(v, v.a, v.b, serverAddr, true);
  console.log(`${what} iperf3: device->driver ${fwd.toFixed(2)} Gbit/s, driver->device ${rev.toFixed(2)} Gbit/s`);
  assert.ok(fwd > 0.01 && rev > 0.01, `iperf3 moved data both ways (${fwd}, ${rev})`);
}

/** nbdcopy with its arguments, retried while the export is not up yet (an NBD socket appears after Ready). */
export async function nbdcopy(args: string[]): Promise<void> {
  let r = { code: 1 as number | null, stdout: '', stderr: '' };
  for (let i = 0; i < 100 && r.code !== 0; i++) {
    r = await run('nbdcopy', args, { timeoutMs: 120_000 });
    if (r.code !== 0) await new Promise((res) => setTimeout(res, 200));
  }
  assert.equal(r.code, 0, `nbdcopy ${args.join(' ')}: ${r.stderr}`);
}

/** Console bytes both ways between the two ptys of a link (device side's pty first). */
export async function consoleBothWays(hostPty: string, cardPty: string): Promise<void> {
  const pa = new PtyEnd(hostPty);
  const pb = new PtyEnd(cardPty);
  try {
    const m1 = randomBytes(1500);
    const m2 = randomBytes(1500);
    await pa.write(m1);
    assert.ok((await pb.read(m1.length, 20_000)).equals(m1), 'device -> driver console bytes');
    await pb.write(m2);
    assert.ok((await pa.read(m2.length, 20_000)).equals(m2), 'driver -> device console bytes');
  } finally {
    pa.close();
    pb.close();
  }
}
