/**
 * The host end of vop-guest-agent's virtio-serial channel (framing in
 * test/guest/progs/vop-guest-agent.c): commands with streamed stdout/stderr and exit status,
 * several at a time, and the agent's "ready" frame after every boot or reset.
 */
import { type Socket } from 'node:net';

export interface ExecResult {
  /** Exit code, or 128 + signal number. */
  code: number;
  stdout: string;
  stderr: string;
  /** Raw stdout (binary-safe). */
  stdoutBuf: Buffer;
  ms: number;
}

const READY_MAGIC = Buffer.from('VOPGUEST1 ');
const HEADER = 9;
const MAX_OUTPUT = 64 << 20;

/** A command running in the guest. */
export class GuestProcess {
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];
  private outBytes = 0;
  private listeners: (() => void)[] = [];
  private settle!: { resolve: (r: ExecResult) => void; reject: (e: Error) => void };
  private done = false;
  private readonly t0 = Date.now();
  /** Settles when the command exits (or the guest resets or goes away). */
  readonly exited: Promise<ExecResult>;

  constructor(
    readonly id: number,
    readonly cmd: string,
    private readonly channel: AgentChannel,
  ) {
    this.exited = new Promise<ExecResult>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    // A test that only uses waitForOutput() must not get an unhandled rejection on reset.
    this.exited.catch(() => undefined);
  }

  get running(): boolean {
    return !this.done;
  }

  /** stdout so far, as text. */
  stdout(): string {
    return Buffer.concat(this.out).toString('utf8');
  }

  stderr(): string {
    return Buffer.concat(this.err).toString('utf8');
  }

  /** Resolves with the match once stdout matches `re`; rejects on timeout or exit without it. */
  waitForOutput(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const m = re.exec(this.stdout());
        if (m) {
          finish();
          resolve(m);
          return true;
        }
        if (this.done) {
          finish();
          reject(new Error(`guest command "${this.cmd}" ended without output matching ${re}: ${this.tail()}`));
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`guest command "${this.cmd}": no output matching ${re} in ${timeoutMs} ms: ${this.tail()}`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
      };
      const listener = (): void => void check();
      if (!check()) this.listeners.push(listener);
    });
  }

  /** Sends `signal` (a number; default SIGTERM = 15) to the command's process group. */
  kill(signal = 15): void {
    if (!this.done) this.channel.sendKill(this.id, signal);
  }

  /** @internal */
  onOutput(stream: 'O' | 'E', data: Buffer): void {
    if (this.outBytes + data.length > MAX_OUTPUT) return;
    this.outBytes += data.length;
    (stream === 'O' ? this.out : this.err).push(data);
    for (const l of [...this.listeners]) l();
  }

  /** @internal */
  onExit(code: number): void {
    if (this.done) return;
    this.done = true;
    const stdoutBuf = Buffer.concat(this.out);
    this.settle.resolve({
      code,
      stdout: stdoutBuf.toString('utf8'),
      stderr: this.stderr(),
      stdoutBuf,
      ms: Date.now() - this.t0,
    });
    for (const l of [...this.listeners]) l();
  }

  /** @internal */
  onAbort(e: Error): void {
    if (this.done) return;
    this.done = true;
    this.settle.reject(e);
    for (const l of [...this.listeners]) l();
  }

  private tail(): string {
    const s = (this.stdout() + this.stderr()).slice(-500);
    return s === '' ? '(no output)' : JSON.stringify(s);
  }
}

export class AgentChannel {
  private buf: Buffer = Buffer.alloc(0);
  private nextId = 1;
  private readonly procs = new Map<number, GuestProcess>();
  /** False from a reset until the agent's next ready frame; nothing is sent meanwhile. */
  private ready = false;
  /** Set after a reset: skip bytes until a ready frame's header and magic. */
  private resync = false;
  private readyWaiters: ((uptimeMs: number) => void)[] = [];
  private closedError: Error | null = null;
  /** Guest uptime (ms) reported by each ready frame, oldest first. */
  readonly readyUptimes: number[] = [];

  constructor(private readonly sock: Socket) {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('close', () => this.abortAll(new Error('guest agent channel closed')));
    sock.on('error', () => undefined);
  }

  get isReady(): boolean {
    return this.ready;
  }

  /** Resolves at the agent's next ready frame (with the guest's uptime in ms). */
  nextReady(): Promise<number> {
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Forget in-flight commands (they fail with `reason`) and wait for a new ready frame. */
  resetting(reason: string): void {
    this.ready = false;
    this.resync = true;
    this.abortAll(new Error(reason), false);
  }

  spawn(cmd: string, stdin?: Buffer | string): GuestProcess {
    if (this.closedError) throw this.closedError;
    if (!this.ready) throw new Error(`guest agent not ready (booting or resetting): cannot run "${cmd}"`);
    const id = this.nextId++;
    const p = new GuestProcess(id, cmd, this);
    this.procs.set(id, p);
    const c = Buffer.from(cmd, 'utf8');
    const input = stdin === undefined ? Buffer.alloc(0) : Buffer.from(stdin);
    const head = Buffer.alloc(HEADER + 4);
    head.writeUInt32LE(5 + 4 + c.length + input.length, 0);
    head.write('X', 4, 'ascii');
    head.writeUInt32LE(id, 5);
    head.writeUInt32LE(c.length, 9);
    this.sock.write(Buffer.concat([head, c, input]));
    return p;
  }

  /** @internal */
  sendKill(id: number, signal: number): void {
    if (!this.ready || this.closedError) return;
    const f = Buffer.alloc(HEADER + 4);
    f.writeUInt32LE(9, 0);
    f.write('K', 4, 'ascii');
    f.writeUInt32LE(id, 5);
    f.writeUInt32LE(signal, 9);
    this.sock.write(f);
  }

  close(): void {
    this.sock.destroy();
  }

  private abortAll(e: Error, final = true): void {
    if (final) this.closedError ??= e;
    for (const p of this.procs.values()) p.onAbort(e);
    this.procs.clear();
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.resync) {
        const at = this.buf.indexOf(READY_MAGIC, HEADER);
        if (at < 0) {
          // Keep a tail that may be the start of a ready frame.
          if (this.buf.length > HEADER + READY_MAGIC.length)
            this.buf = this.buf.subarray(-(HEADER + READY_MAGIC.length));
          return;
        }
        this.buf = this.buf.subarray(at - HEADER);
        this.resync = false;
      }
      if (this.buf.length < HEADER) return;
      const len = this.buf.readUInt32LE(0);
      if (len < 5 || len > (1 << 20) + 5) {
        this.resync = true; // not a frame of ours: wait for the next ready frame
        continue;
      }
      if (this.buf.length < 4 + len) return;
      const type = String.fromCharCode(this.buf[4] ?? 0);
      const id = this.buf.readUInt32LE(5);
      const payload = this.buf.subarray(HEADER, 4 + len);
      this.buf = this.buf.subarray(4 + len);
      this.onFrame(type, id, payload);
    }
  }

  private onFrame(type: string, id: number, payload: Buffer): void {
    if (type === 'R') {
      const uptime = payload.subarray(0, READY_MAGIC.length).equals(READY_MAGIC)
        ? Number(payload.subarray(READY_MAGIC.length).toString('ascii'))
        : NaN;
      this.abortAll(new Error('guest agent restarted'), false);
      this.ready = true;
      this.readyUptimes.push(uptime);
      const w = this.readyWaiters;
      this.readyWaiters = [];
      for (const r of w) r(uptime);
      return;
    }
    const p = this.procs.get(id);
    if (!p) return;
    if (type === 'O' || type === 'E') p.onOutput(type, Buffer.from(payload));
    else if (type === 'Z') {
      this.procs.delete(id);
      p.onExit(payload.length >= 4 ? payload.readInt32LE(0) : -1);
    }
  }
}
