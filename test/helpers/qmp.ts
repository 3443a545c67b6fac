/**
 * A QMP client (QEMU's JSON monitor protocol) on a connected Unix socket: the greeting and
 * capabilities handshake, commands matched to replies by id, and every asynchronous event kept in
 * order so a test can wait for one that may already have arrived (RESET, SHUTDOWN, ...).
 */
import { type Socket } from 'node:net';

export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** Index in Qmp.events, for waitEvent({ after }). */
  seq: number;
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

type EventWaiter = { name: string; after: number; resolve: (e: QmpEvent) => void };

export class Qmp {
  /** Every event received so far, oldest first. */
  readonly events: QmpEvent[] = [];
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private waiters: EventWaiter[] = [];
  private closedError: Error | null = null;
  private greeting: ((v: unknown) => void) | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('close', () => this.fail(new Error('QMP connection closed')));
    sock.on('error', (e) => this.fail(e));
  }

  /** Waits for the greeting on `sock` and negotiates capabilities. */
  static async open(sock: Socket, timeoutMs = 30_000): Promise<Qmp> {
    const q = new Qmp(sock);
    await withTimeout(
      new Promise((resolve) => {
        q.greeting = resolve;
      }),
      timeoutMs,
      'QMP greeting',
    );
    await q.execute('qmp_capabilities');
    return q;
  }

  /** Runs `command`; resolves with its "return" value, rejects with QmpError on an "error" reply. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = 30_000): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = `vop-${this.nextId++}`;
    const p = new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
    });
    this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    return withTimeout(p, timeoutMs, `QMP ${command}`).finally(() => this.pending.delete(id));
  }

  /**
   * The first event named `name` with seq > `after` (default: any, including ones already
   * received).
   */
  waitEvent(name: string, opts: { after?: number; timeoutMs?: number } = {}): Promise<QmpEvent> {
    const after = opts.after ?? -1;
    const have = this.events.find((e) => e.event === name && e.seq > after);
    if (have) return Promise.resolve(have);
    const p = new Promise<QmpEvent>((resolve) => this.waiters.push({ name, after, resolve }));
    return withTimeout(p, opts.timeoutMs ?? 30_000, `QMP event ${name}`);
  }

  /** seq of the newest event (-1 when none): pass it as `after` to wait only for later ones. */
  lastSeq(): number {
    return this.events.length - 1;
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line === '') continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      this.onMessage(msg);
    }
  }

  private onMessage(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.greeting?.(msg);
      this.greeting = null;
      return;
    }
    if (typeof msg.event === 'string') {
      const ev: QmpEvent = {
        event: msg.event,
        data: (msg.data as Record<string, unknown> | undefined) ?? {},
        seq: this.events.length,
      };
      this.events.push(ev);
      const ready = this.waiters.filter((w) => w.name === ev.event && ev.seq > w.after);
      this.waiters = this.waiters.filter((w) => !ready.includes(w));
      for (const w of ready) w.resolve(ev);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : '';
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? 'GenericError', e.desc ?? ''));
    } else p.resolve(msg.return);
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

/** Rejects with "<what> timed out after N ms" unless `p` settles first. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
