/**
 * Boots a Linux guest under QEMU (TCG) for a test and drives it: commands through
 * vop-guest-agent on a virtio-serial port, QEMU's monitor through QMP, ivshmem (plain and
 * doorbell), a vIOMMU for vfio-pci, shareable guest RAM for vhost-user, TAP NICs and raw extra
 * arguments. One boot is meant to serve a whole test file: boot in `before`, several `it`s,
 * `close()` in `after`. docs/guest-harness.md has the details and the costs.
 *
 *   const g = await Guest.boot({ programs: ['bar-peek'] });
 *   const r = await g.exec('uname -r');           // { code, stdout, stderr, ms }
 *   await g.qmp.execute('query-pci');
 *   await g.close();                              // poweroff, else kill; removes its folder
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { AgentChannel, type ExecResult, type GuestProcess } from './guest-channel';
import { appendArchive, type GuestFile, guestImage, guestPrerequisites } from './guest-image';
import { requirePrereq } from './prereq';
import { Qmp, withTimeout } from './qmp';

export type { ExecResult, GuestProcess } from './guest-channel';
export type { GuestFile } from './guest-image';

export interface IvshmemPlainOptions {
  /** Host file backing BAR2 (memory-backend-file, share=on); QEMU creates it if missing. */
  path: string;
  sizeBytes: number;
  /** PCI address on bus 0 (slot, e.g. 5 -> 0000:00:05.0); default: QEMU picks. */
  slot?: number;
}

export interface IvshmemDoorbellOptions {
  /** The ivshmem server's socket (test/helpers/ivshmem.ts starts vop-ivshmem-server). */
  socket: string;
  vectors: number;
  slot?: number;
}

export interface TapOptions {
  /** Host TAP interface name (created by QEMU if missing; needs CAP_NET_ADMIN). */
  ifname: string;
  mac?: string;
  /** Extra virtio-net-pci properties, e.g. "vectors=0". */
  deviceProps?: string;
}

export interface ShareOptions {
  /** Host folder exported with virtio-9p (security_model=none: files keep the host's owners). */
  hostPath: string;
  /** Where the guest mounts it (before any /etc/vop/init.d script runs). */
  guestPath: string;
  readonly?: boolean;
}

export interface GuestOptions {
  /** Label for logs and the temp folder. */
  name?: string;
  /** Guest RAM in MiB (default 512). */
  memoryMiB?: number;
  /** vCPUs (default 1). Two TCG vCPUs on this 2-vCPU machine slow everything else down. */
  cpus?: number;
  /** q35 + intel-iommu,intremap=off + intel_iommu=on: what vfio-pci in the guest needs. */
  iommu?: boolean;
  /** Guest RAM from memory-backend-memfd,share=on (vhost-user backends map it). */
  sharedMemory?: boolean;
  ivshmemPlain?: IvshmemPlainOptions[];
  ivshmemDoorbell?: IvshmemDoorbellOptions[];
  tap?: TapOptions[];
  /** Host folders mounted in the guest over virtio-9p, live both ways during the run. */
  shares?: ShareOptions[];
  /** Static guest programs (test/guest/progs/NAME.c or a .c path), installed as /bin/NAME. */
  programs?: string[];
  /** Files appended to the initramfs for this boot. Executables under /etc/vop/init.d/ run at boot. */
  files?: GuestFile[];
  /** Extra kernel command-line words. */
  kernelArgs?: string[];
  /**
   * Run QEMU inside this network namespace (`ip netns exec`): its TAP devices appear there, not in
   * the host's namespace. The namespace must exist; Unix sockets are unaffected.
   */
  netns?: string;
  /** Extra QEMU arguments (-device, -netdev, -chardev, -object ...), appended as given. */
  qemuArgs?: string[];
  /** From QEMU's start to the agent's ready frame (default 60 s). */
  bootTimeoutMs?: number;
  /** Keep the folder (logs, sockets) after close(), also on success. Env: VOP_GUEST_KEEP=1. */
  keep?: boolean;
}

export interface ExecOptions {
  /** Default 30 s; the command is killed (SIGKILL to its process group) when it runs out. */
  timeoutMs?: number;
  stdin?: Buffer | string;
}

/** Every QEMU this process started and has not seen exit: killed if the test process exits. */
const live = new Set<ChildProcess>();
let exitHook = false;
function track(p: ChildProcess): void {
  live.add(p);
  p.once('exit', () => live.delete(p));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const q of live) q.kill('SIGKILL');
  });
}

export class GuestError extends Error {
  constructor(message: string, guest: { dir: string; serialLog: string }) {
    super(`${message}\n  logs: ${guest.dir}\n  serial log (tail):\n${tail(guest.serialLog, 25)}`);
    this.name = 'GuestError';
  }
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8')
      .replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1bc/g, '')
      .split('\n')
      .slice(-lines)
      .map((l) => `    | ${l}`)
      .join('\n');
  } catch {
    return '    (no serial log)';
  }
}

/** Accepts one connection on a fresh Unix socket; QEMU is the connecting side. */
function listenOnce(sockPath: string): { ready: Promise<void>; conn: Promise<net.Socket>; server: net.Server } {
  const server = net.createServer();
  let ok!: () => void;
  let bad!: (e: Error) => void;
  const ready = new Promise<void>((resolve, reject) => {
    ok = resolve;
    bad = reject;
  });
  const conn = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  server.once('error', bad);
  server.listen(sockPath, ok);
  return { ready, conn, server };
}

export class Guest {
  /** Wall-clock ms from QEMU's start to the agent's ready frame. */
  bootMs = 0;
  /** Guest uptime (ms) when its agent was ready. */
  guestUptimeMs = 0;
  /**
   * Set by a boot, run, exec-timeout, reset or poweroff failure (or by the test): close() then keeps
   * the folder with the logs. A test that provoked an expected failure may set it back to false.
   */
  failed = false;
  private closed = false;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  /** Settles when QEMU exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly dir: string,
    readonly proc: ChildProcess,
    readonly qmp: Qmp,
    private readonly channel: AgentChannel,
    private readonly servers: net.Server[],
    private readonly keep: boolean,
  ) {
    this.exited = new Promise((resolve) => {
      if (proc.exitCode !== null || proc.signalCode !== null) resolve({ code: proc.exitCode, signal: proc.signalCode });
      proc.once('exit', (code, signal) => resolve({ code, signal }));
    });
    void this.exited.then((e) => {
      this.exitInfo = e;
      channel.close();
      qmp.close();
    });
  }

  /** Console output of the guest (kernel, /init, agent). */
  get serialLog(): string {
    return path.join(this.dir, 'serial.log');
  }

  /** QEMU's own stderr. */
  get qemuLog(): string {
    return path.join(this.dir, 'qemu.log');
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /**
   * Starts QEMU and resolves once vop-guest-agent is ready; rejects (QEMU killed, logs kept) if it is
   * not within bootTimeoutMs or QEMU exits first.
   */
  static async boot(opts: GuestOptions = {}): Promise<Guest> {
    const image = guestImage();
    const name = opts.name ?? 'guest';
    const dir = mkdtempSync(path.join(os.tmpdir(), `vop-${name.replace(/[^a-zA-Z0-9_.-]/g, '_')}-`));
    const keep = opts.keep ?? process.env.VOP_GUEST_KEEP === '1';
    const initrd = path.join(dir, 'initrd.cpio');
    const shares = opts.shares ?? [];
    const mountScript = shares.length
      ? [
          {
            path: '/etc/vop/init.d/00-shares',
            mode: 0o755,
            data:
              '#!/bin/sh\n' +
              shares
                .map(
                  (sh, i) =>
                    `mkdir -p ${shellQuote(sh.guestPath)} && mount -t 9p -o trans=virtio,version=9p2000.L${sh.readonly ? ',ro' : ''} vopshare${i} ${shellQuote(sh.guestPath)}\n`,
                )
                .join(''),
          },
        ]
      : [];
    writeFileSync(
      initrd,
      Buffer.concat([
        readFileSync(image.initramfs),
        appendArchive([...mountScript, ...(opts.files ?? [])], opts.programs ?? []),
      ]),
    );
    const agentSock = path.join(dir, 'agent.sock');
    const qmpSock = path.join(dir, 'qmp.sock');
    const agentL = listenOnce(agentSock);
    const qmpL = listenOnce(qmpSock);
    const servers = [agentL.server, qmpL.server];
    const closeServers = (): void => servers.forEach((s) => s.close());
    await Promise.all([agentL.ready, qmpL.ready]);

    const mem = opts.memoryMiB ?? 512;
    const args: string[] = ['-accel', 'tcg', '-M', 'q35', '-nodefaults', '-no-user-config', '-display', 'none'];
    args.push('-m', `${mem}M`, '-smp', String(opts.cpus ?? 1), '-no-reboot');
    if (opts.iommu) args.push('-device', 'intel-iommu,intremap=off');
    if (opts.sharedMemory) {
      args.push('-object', `memory-backend-memfd,id=vopmem,size=${mem}M,share=on`, '-numa', 'node,memdev=vopmem');
    }
    const kargs = [
      'console=ttyS0',
      'quiet',
      'panic=-1',
      ...(opts.iommu ? ['intel_iommu=on'] : []),
      ...(opts.kernelArgs ?? []),
    ];
    args.push('-kernel', image.kernel.image, '-initrd', initrd, '-append', kargs.join(' '));
    args.push('-chardev', `file,id=vopserial,path=${path.join(dir, 'serial.log')}`, '-serial', 'chardev:vopserial');
    args.push('-chardev', `socket,id=vopqmp,path=${qmpSock}`, '-mon', 'chardev=vopqmp,mode=control');
    args.push('-chardev', `socket,id=vopagent,path=${agentSock}`);
    args.push(
      '-device',
      'virtio-serial-pci,id=vopvser',
      '-device',
      'virtserialport,bus=vopvser.0,chardev=vopagent,name=vop.agent',
    );
    const addr = (slot: number | undefined): string => (slot === undefined ? '' : `,addr=${slot.toString(16)}.0`);
    (opts.ivshmemPlain ?? []).forEach((s, i) => {
      args.push('-object', `memory-backend-file,id=vopivm${i},share=on,mem-path=${s.path},size=${s.sizeBytes}`);
      args.push('-device', `ivshmem-plain,memdev=vopivm${i}${addr(s.slot)}`);
    });
    (opts.ivshmemDoorbell ?? []).forEach((s, i) => {
      args.push('-chardev', `socket,id=vopivc${i},path=${s.socket}`);
      args.push('-device', `ivshmem-doorbell,chardev=vopivc${i},vectors=${s.vectors}${addr(s.slot)}`);
    });
    shares.forEach((sh, i) => {
      const ro = sh.readonly ? ',readonly=on' : '';
      args.push('-fsdev', `local,id=vopfs${i},path=${sh.hostPath},security_model=none${ro}`);
      args.push('-device', `virtio-9p-pci,fsdev=vopfs${i},mount_tag=vopshare${i}`);
    });
    (opts.tap ?? []).forEach((t, i) => {
      args.push('-netdev', `tap,id=voptap${i},ifname=${t.ifname},script=no,downscript=no`);
      const props = [
        `netdev=voptap${i}`,
        ...(t.mac ? [`mac=${t.mac}`] : []),
        ...(t.deviceProps ? [t.deviceProps] : []),
      ];
      args.push('-device', `virtio-net-pci,${props.join(',')}`);
    });
    args.push(...(opts.qemuArgs ?? []));
    // setpriv --pdeathsig: QEMU dies with the test process even when that is SIGKILLed.
    const qemu = ['setpriv', '--pdeathsig', 'KILL', '--', 'qemu-system-x86_64', ...args];
    const [cmd, ...cmdArgs] = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...qemu] : qemu;
    writeFileSync(path.join(dir, 'qemu.cmdline'), [cmd, ...cmdArgs].map((a) => JSON.stringify(a)).join(' ') + '\n');

    const t0 = Date.now();
    const proc = spawn(cmd ?? 'setpriv', cmdArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
    track(proc);
    const qemuErr: Buffer[] = [];
    proc.stderr?.on('data', (c: Buffer) => {
      qemuErr.push(c);
      writeFileSync(path.join(dir, 'qemu.log'), Buffer.concat(qemuErr));
    });
    const exitedEarly = new Promise<never>((_, reject) => {
      proc.once('error', (e) => reject(e));
      proc.once('exit', (code, signal) => {
        const err = Buffer.concat(qemuErr).toString('utf8').trim();
        reject(
          new GuestError(`QEMU exited during boot (code ${code}, signal ${signal}): ${err}`, {
            dir,
            serialLog: path.join(dir, 'serial.log'),
          }),
        );
      });
    });
    exitedEarly.catch(() => undefined);
    const bootTimeout = opts.bootTimeoutMs ?? 60_000;
    try {
      const [agentConn, qmpConn] = await withTimeout(
        Promise.race([Promise.all([agentL.conn, qmpL.conn]), exitedEarly]),
        bootTimeout,
        'QEMU connecting its sockets',
      );
      const channel = new AgentChannel(agentConn);
      const ready = channel.nextReady();
      const qmp = await Promise.race([Qmp.open(qmpConn, bootTimeout), exitedEarly]);
      const g = new Guest(dir, proc, qmp, channel, servers, keep);
      const left = bootTimeout - (Date.now() - t0);
      try {
        g.guestUptimeMs = await withTimeout(Promise.race([ready, exitedEarly]), Math.max(left, 1), 'guest boot');
      } catch (e) {
        g.failed = true;
        proc.kill('SIGKILL');
        await g.exited;
        closeServers();
        throw e instanceof GuestError ? e : new GuestError(`guest did not become ready: ${(e as Error).message}`, g);
      }
      g.bootMs = Date.now() - t0;
      return g;
    } catch (e) {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      closeServers();
      if (e instanceof GuestError) throw e;
      throw new GuestError(`guest boot failed: ${(e as Error).message}`, {
        dir,
        serialLog: path.join(dir, 'serial.log'),
      });
    }
  }

  /** Runs `cmd` with /bin/sh in the guest; never throws for a non-zero exit (see run()). */
  async exec(cmd: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const p = this.spawn(cmd, opts.stdin);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        p.kill(9);
        this.failed = true;
        reject(
          new GuestError(
            `guest command "${cmd}" timed out after ${timeoutMs} ms; output so far: ${JSON.stringify((p.stdout() + p.stderr()).slice(-500))}`,
            this,
          ),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([p.exited, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** exec() that throws unless the command exits 0; resolves with its stdout. */
  async run(cmd: string, opts: ExecOptions = {}): Promise<string> {
    const r = await this.exec(cmd, opts);
    if (r.code !== 0) {
      this.failed = true;
      throw new GuestError(
        `guest command "${cmd}" exited ${r.code}\n  stdout: ${r.stdout.slice(-1000)}\n  stderr: ${r.stderr.slice(-1000)}`,
        this,
      );
    }
    return r.stdout;
  }

  /** Starts `cmd` and returns at once: stream its output, wait for it, kill it. */
  spawn(cmd: string, stdin?: Buffer | string): GuestProcess {
    if (!this.running) throw new GuestError(`guest is not running: cannot run "${cmd}"`, this);
    return this.channel.spawn(cmd, stdin);
  }

  async writeFile(guestPath: string, data: Buffer | string, mode = 0o644): Promise<void> {
    const q = shellQuote(guestPath);
    await this.run(`cat > ${q} && chmod ${mode.toString(8)} ${q}`, { stdin: data });
  }

  async readFile(guestPath: string): Promise<Buffer> {
    const r = await this.exec(`cat ${shellQuote(guestPath)}`);
    if (r.code !== 0) throw new GuestError(`reading ${guestPath} in the guest failed: ${r.stderr}`, this);
    return r.stdoutBuf;
  }

  /**
   * QMP system_reset (a hard reset, like the reset button) and waits for the agent to be ready
   * again; commands running at the reset fail. Resolves with the ms until ready.
   */
  async reset(timeoutMs = 60_000): Promise<number> {
    const t0 = Date.now();
    // -no-reboot turns every reset into an exit; allow this one to reset.
    await this.qmp.execute('set-action', { reboot: 'reset' });
    const ready = this.channel.nextReady();
    this.channel.resetting('guest reset (system_reset)');
    await this.qmp.execute('system_reset');
    try {
      this.guestUptimeMs = await withTimeout(ready, timeoutMs, 'guest ready after system_reset');
    } catch (e) {
      this.failed = true;
      throw new GuestError((e as Error).message, this);
    }
    await this.qmp.execute('set-action', { reboot: 'shutdown' });
    return Date.now() - t0;
  }

  /** `poweroff -f` in the guest; resolves with QEMU's exit code once it has exited (SIGKILL after timeoutMs). */
  async poweroff(timeoutMs = 30_000): Promise<number | null> {
    if (this.running) {
      try {
        this.channel.spawn('sync; poweroff -f');
      } catch {
        await this.qmp.execute('quit').catch(() => undefined);
      }
    }
    try {
      return (await withTimeout(this.exited, timeoutMs, 'guest poweroff')).code;
    } catch (e) {
      this.failed = true;
      this.kill();
      await this.exited;
      throw new GuestError((e as Error).message, this);
    }
  }

  /**
   * For `afterEach((t) => g?.noteTest(t))`: a test that did not pass marks the guest failed, so
   * close() keeps its logs. (Node's TestContext has `passed` at run time, not in @types/node 20.)
   */
  noteTest(t: object): void {
    if ((t as { passed?: unknown }).passed === false) this.failed = true;
  }

  /** SIGKILL to QEMU (no shutdown). */
  kill(): void {
    if (this.running) this.proc.kill('SIGKILL');
  }

  /**
   * Powers the guest off (kills it if it does not go), closes the sockets and removes the folder
   * unless the guest failed or `keep` was asked for. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.running) await this.poweroff(20_000).catch(() => undefined);
    this.kill();
    await this.exited;
    this.channel.close();
    this.qmp.close();
    for (const s of this.servers) s.close();
    if (this.failed || this.keep) process.stderr.write(`guest logs kept in ${this.dir}\n`);
    else rmSync(this.dir, { recursive: true, force: true });
  }

  /** The last lines of the serial log (ANSI sequences removed). */
  serialTail(lines = 40): string {
    return tail(this.serialLog, lines);
  }
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * For `describe(..., { skip: guestSkip() })`: the missing prerequisites skip on a developer
 * machine and fail in CI (CI set), where a guest test must run.
 */
export function guestSkip(): string | false {
  const why = guestPrerequisites();
  return requirePrereq('a QEMU guest', !why, why ?? '');
}
