/**
 * VopWindow: the validating façade over one side of a shared window and its link
 * worker. Arguments are checked here with exact TypeError/RangeError messages
 * before any native call (the C core re-checks cheaply and answers -EINVAL);
 * native failures arrive as NativeError with a stable code. Worker events arrive
 * through one threadsafe function per link and are re-emitted as 'event'.
 *
 * Lifecycle: create()/attach() -> addDevice() (creator) -> attach(devId, role)
 * -> start() -> stats/events -> stop() -> close(). close() stops and joins the
 * worker; any later call throws NativeError code "EBADF".
 */
import { EventEmitter } from 'node:events';
import { NativeError, toNativeError } from './errors';
import { loadNative, type NativeModule } from './load';
import type { ConsoleReadDto, HostedKind, HostedSpecDto, NativeEventDto, PipeConfigDto, WindowHandle } from './native';

export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const QUEUE_MAX_SIZE = 32768;
export const MAX_DEVICES = 32;
export const MAX_SEGS = 16;
/** Queues per device (layout.h VOP_MAX_QUEUES). */
export const MAX_QUEUES = 8;

export type Side = 'creator' | 'attacher';
export type Role = 'driver' | 'device';
export type PipeMode = 'off' | 'source' | 'sink' | 'echo';

/** Worker tuning shared by create() and attach(); null picks the default. */
export interface WorkerOptions {
  /** Busy-poll after the last work before sleeping (default 50 µs). */
  readonly spinNs: number | null;
  /** Never sleep on the doorbell (benchmarks only). */
  readonly pollOnly: boolean | null;
  /** Device reset handshake timeout (default 1000 ms). */
  readonly resetTimeoutMs: number | null;
}

export interface CreateOptions extends WorkerOptions {
  /** New window file (created 0600, must not exist) or null for an anonymous memfd. */
  readonly path: string | null;
  readonly sizeBytes: number;
  readonly maxDevices: number | null;
}

export interface AttachOptions extends WorkerOptions {
  readonly path: string;
}

export interface AttachFdOptions extends WorkerOptions {
  /** An fd of the window (memfd or file) passed by the creator's process; it is dup'ed. */
  readonly fd: number;
}

export interface ReattachOptions extends WorkerOptions {
  readonly path: string;
  /** The side this process held before it restarted. */
  readonly side: Side;
}

/** A raw byte-pipe device in the device table (the only device type of this layer). */
export interface DeviceSpec {
  readonly devId: number;
  /** Which side implements the device (the other side is the driver). */
  readonly deviceSide: Side;
  readonly queueSize: number;
  /** Bytes per driver buffer. */
  readonly bufSize: number;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

/** What this side does with the pipe's queue 0 (driver->device) and queue 1 (device->driver). */
export interface PipeOptions {
  readonly msgSize: number;
  /** Driver: bytes per buffer slot; null = as large as the pool allows. */
  readonly bufSize: number | null;
  /** Driver: descriptors per buffer (1..16); null = 1. */
  readonly segs: number | null;
  readonly tx: PipeMode;
  readonly rx: PipeMode;
  /** Stamp and check sequence numbers and checksums. */
  readonly verify: boolean;
  /** Driver: negotiate EVENT_IDX / INDIRECT_DESC if offered. */
  readonly eventIdx: boolean;
  readonly indirect: boolean;
  /** Source: stop after this many messages; null = unlimited. */
  readonly count: bigint | null;
  /** Driver source+sink: bound on unanswered messages; null = none. */
  readonly maxInflight: number | null;
  /** Chains per publish; null = half the queue size. */
  readonly batch: number | null;
}

export type LinkEvent =
  | { readonly type: 'queue-broken'; readonly devId: number; readonly queue: number; readonly reason: string }
  | { readonly type: 'peer-reset'; readonly epoch: number }
  | { readonly type: 'peer-gone'; readonly epoch: number }
  | { readonly type: 'peer-up'; readonly epoch: number }
  | { readonly type: 'device-removed'; readonly devId: number }
  | { readonly type: 'reset-done'; readonly devId: number }
  | { readonly type: 'reset-timeout'; readonly devId: number }
  | { readonly type: 'needs-reset'; readonly devId: number }
  /** A hosted backend failed (its surface broke, its queues could not start); errno name. */
  | { readonly type: 'backend-failed'; readonly devId: number; readonly error: string }
  /**
   * This side stopped for good because of its peer (reason: LINK_FAIL_NAMES, e.g. the device
   * table never settled); the worker no longer runs. Other links are unaffected.
   */
  | { readonly type: 'link-failed'; readonly reason: string };

export interface QueueStats {
  readonly buffers: bigint;
  readonly bytes: bigint;
  readonly notificationsSent: bigint;
  readonly notificationsSuppressed: bigint;
  /** Per link worker (one worker serves all queues of a side). */
  readonly wakeups: bigint;
  readonly pollNs: bigint;
  readonly sleepNs: bigint;
  readonly errors: bigint;
  /** Reason name while broken, null when healthy. */
  readonly broken: string | null;
  readonly resets: bigint;
  /** Violations by stable reason name (only nonzero entries). */
  readonly errorsByReason: Readonly<Record<string, bigint>>;
}

export type DeviceRunState = 'resetting' | 'wait-driver' | 'running' | 'broken' | 'removed' | 'unknown';

export interface PipeStats {
  readonly txMsgs: bigint;
  readonly rxMsgs: bigint;
  readonly badMsgs: bigint;
  readonly state: DeviceRunState;
}

export interface LinkStats {
  readonly wakeups: bigint;
  readonly sleeps: bigint;
  readonly pollNs: bigint;
  readonly sleepNs: bigint;
  readonly doorbells: bigint;
  readonly futexWakes: bigint;
  readonly heartbeats: bigint;
  readonly peerResets: bigint;
  readonly peerGone: bigint;
}

export interface WindowInfo {
  readonly side: Side;
  readonly epoch: number;
  readonly sizeBytes: bigint;
  /** '' for a memfd window. */
  readonly path: string;
  /** The window's fd in this process (pass it to attachFd in a peer). */
  readonly fd: number;
  readonly peer: { readonly state: 'absent' | 'up' | 'gone'; readonly epoch: number; readonly heartbeat: bigint };
  /** Why this side failed for good (LINK_FAIL_NAMES), null while healthy. */
  readonly failed: string | null;
}

const DEFAULT_SPIN_NS = 50_000;
const DEFAULT_RESET_TIMEOUT_MS = 1000;
const VQS_ERR_BASE = 10;

/**
 * Decodes a native ring counter block (enum vop_vq_stat order, vq.h), as returned by
 * queueStats() here or by a device host's queue stats; `reasons` from reasonNames().
 */
export function decodeQueueStats(c: BigUint64Array, reasons: readonly string[]): QueueStats {
  const at = (i: number): bigint => c[i] ?? 0n;
  const errorsByReason: Record<string, bigint> = {};
  reasons.forEach((name, r) => {
    const v = at(VQS_ERR_BASE + r);
    if (r > 0 && v > 0n) errorsByReason[name] = v;
  });
  const broken = Number(at(8));
  return {
    buffers: at(0),
    bytes: at(1),
    notificationsSent: at(2),
    notificationsSuppressed: at(3),
    wakeups: at(4),
    pollNs: at(5),
    sleepNs: at(6),
    errors: at(7),
    broken: broken === 0 ? null : (reasons[broken] ?? `unknown_${broken}`),
    resets: at(9),
    errorsByReason,
  };
}
const EVENT_TYPES = [
  '',
  'queue-broken',
  'peer-reset',
  'peer-gone',
  'device-removed',
  'reset-done',
  'reset-timeout',
  'needs-reset',
  'peer-up',
  'backend-failed',
  'link-failed',
] as const;
/** enum vop_link_fail (link.h), by number. */
export const LINK_FAIL_NAMES: readonly string[] = ['none', 'devtab_unstable'];

function linkFailName(reason: number): string {
  return LINK_FAIL_NAMES[reason] ?? `unknown_${reason}`;
}
const HOSTED_KINDS: readonly HostedKind[] = [
  'blk-device',
  'blk-driver',
  'net-device',
  'net-driver',
  'con-device',
  'con-driver',
];
/** errno names for backend-failed events (Linux numbers). */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: 'EPERM',
  2: 'ENOENT',
  5: 'EIO',
  9: 'EBADF',
  12: 'ENOMEM',
  13: 'EACCES',
  16: 'EBUSY',
  19: 'ENODEV',
  22: 'EINVAL',
  28: 'ENOSPC',
  32: 'EPIPE',
  67: 'ENOLINK',
  71: 'EPROTO',
  107: 'ENOTCONN',
  110: 'ETIMEDOUT',
};

function checkHosted(kind: HostedKind, desc: string): void {
  if (!HOSTED_KINDS.includes(kind)) throw new TypeError(`kind must be one of ${HOSTED_KINDS.join(', ')}`);
  if (
    typeof desc !== 'string' ||
    !/^[1-9][0-9]*(:|$)/.test(desc) ||
    desc.includes('\0') ||
    Buffer.byteLength(desc) > 1000
  )
    throw new TypeError('desc must be "ID:options" (dev_host.h)');
}

/** The table footprint of a hosted device description (queue sizes and pool bytes). */
export function hostedSpec(kind: HostedKind, desc: string): HostedSpecDto {
  checkHosted(kind, desc);
  return loadNative().hostedSpec(kind, desc);
}
const RUN_STATES: readonly DeviceRunState[] = ['unknown', 'resetting', 'wait-driver', 'running', 'broken', 'removed'];
const PIPE_MODE: Record<PipeMode, number> = { off: 0, source: 1, sink: 2, echo: 3 };
const PEER_STATE = ['absent', 'up', 'gone'] as const;

function checkInt(name: string, v: number, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${name} must be an integer`);
  if (v < min || v > max) throw new RangeError(`${name} must be in [${min}, ${max}], got ${v}`);
}

function checkDevId(devId: number): void {
  checkInt('devId', devId, 1, 0xffffffff);
}

function checkWorker(o: WorkerOptions): { spinNs: number; pollOnly: boolean; resetTimeoutMs: number } {
  const spinNs = o.spinNs ?? DEFAULT_SPIN_NS;
  const resetTimeoutMs = o.resetTimeoutMs ?? DEFAULT_RESET_TIMEOUT_MS;
  checkInt('spinNs', spinNs, 0, 10_000_000_000);
  checkInt('resetTimeoutMs', resetTimeoutMs, 1, 600_000);
  const pollOnly = o.pollOnly ?? false;
  if (typeof pollOnly !== 'boolean') throw new TypeError('pollOnly must be a boolean');
  return { spinNs, pollOnly, resetTimeoutMs };
}

function checkPath(path: unknown): void {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('path must be a non-empty string');
  if (Buffer.byteLength(path) > 250) throw new RangeError('path must be at most 250 bytes');
}

function featureBits(eventIdx: boolean, indirect: boolean): bigint {
  return (eventIdx ? 1n << BigInt(VIRTIO_F_EVENT_IDX) : 0n) | (indirect ? 1n << BigInt(VIRTIO_F_INDIRECT_DESC) : 0n);
}

export interface VopWindowEvents {
  event: [LinkEvent];
}

export class VopWindow extends EventEmitter<VopWindowEvents> {
  readonly side: Side;
  private readonly native: NativeModule;
  /** Valid until close(); null afterwards. */
  private handle: WindowHandle | null;
  private readonly reasons: readonly string[];
  private started = false;

  private constructor(native: NativeModule, handle: WindowHandle, side: Side) {
    super();
    this.native = native;
    this.handle = handle;
    this.side = side;
    this.reasons = native.reasonNames();
    native.onEvent(handle, (ev) => this.forward(ev));
  }

  /** Creates a new window (this side owns the device table). */
  static create(opts: CreateOptions): VopWindow {
    if (opts.path !== null) checkPath(opts.path);
    checkInt('sizeBytes', opts.sizeBytes, 65536, 2 ** 40);
    if (opts.sizeBytes % 4096 !== 0) throw new RangeError('sizeBytes must be a multiple of 4096');
    const maxDevices = opts.maxDevices ?? MAX_DEVICES;
    checkInt('maxDevices', maxDevices, 1, MAX_DEVICES);
    const w = checkWorker(opts);
    const native = loadNative();
    const h = native.windowCreate({ path: opts.path, sizeBytes: opts.sizeBytes, maxDevices, ...w });
    return new VopWindow(native, h, 'creator');
  }

  /** Attaches to a window another process (or this one) created; EAGAIN while unpublished. */
  static attach(opts: AttachOptions): VopWindow {
    checkPath(opts.path);
    const w = checkWorker(opts);
    const native = loadNative();
    const h = native.windowAttach({ path: opts.path, ...w });
    return new VopWindow(native, h, 'attacher');
  }

  /**
   * Takes a side of an existing window back after this process restarted (the
   * creator gets its device table back; the peer sees a new epoch and resets).
   * NativeError EBUSY while a live process still holds that side.
   */
  static reattach(opts: ReattachOptions): VopWindow {
    checkPath(opts.path);
    if (opts.side !== 'creator' && opts.side !== 'attacher')
      throw new TypeError("side must be 'creator' or 'attacher'");
    const w = checkWorker(opts);
    const native = loadNative();
    const h = native.windowReattach({ path: opts.path, side: opts.side === 'creator' ? 0 : 1, ...w });
    return new VopWindow(native, h, opts.side);
  }

  /** Attaches to a window given as an fd (e.g. the creator's memfd, see info().fd). */
  static attachFd(opts: AttachFdOptions): VopWindow {
    checkInt('fd', opts.fd, 0, 2 ** 31 - 1);
    const w = checkWorker(opts);
    const native = loadNative();
    const h = native.windowAttachFd({ fd: opts.fd, ...w });
    return new VopWindow(native, h, 'attacher');
  }

  get closed(): boolean {
    return this.handle === null;
  }

  private h(): WindowHandle {
    if (this.handle === null) throw new NativeError('window is closed', 'EBADF', 9);
    return this.handle;
  }

  private forward(ev: NativeEventDto): void {
    const type = EVENT_TYPES[ev.type];
    let out: LinkEvent;
    switch (type) {
      case 'queue-broken':
        out = { type, devId: ev.devId, queue: ev.queue, reason: this.reasons[ev.reason] ?? `unknown_${ev.reason}` };
        break;
      case 'peer-reset':
      case 'peer-gone':
      case 'peer-up':
        out = { type, epoch: ev.epoch };
        break;
      case 'device-removed':
      case 'reset-done':
      case 'reset-timeout':
      case 'needs-reset':
        out = { type, devId: ev.devId };
        break;
      case 'backend-failed':
        out = { type, devId: ev.devId, error: ERRNO_NAMES[ev.reason] ?? `errno_${ev.reason}` };
        break;
      case 'link-failed':
        out = { type, reason: linkFailName(ev.reason) };
        break;
      case '':
      case undefined:
        return;
      default: {
        const never: never = type;
        throw new Error(`unknown event ${String(never)}`);
      }
    }
    this.emit('event', out);
  }

  info(): WindowInfo {
    const i = this.native.windowInfo(this.h());
    return {
      side: i.side === 0 ? 'creator' : 'attacher',
      epoch: i.epoch,
      sizeBytes: i.sizeBytes,
      path: i.path,
      fd: i.fd,
      peer: { state: PEER_STATE[i.peerState] ?? 'gone', epoch: i.peerEpoch, heartbeat: i.peerHeartbeat },
      failed: i.failed === 0 ? null : linkFailName(i.failed),
    };
  }

  /** Creator only: publishes a byte-pipe device; returns its table slot. */
  addDevice(spec: DeviceSpec): number {
    if (this.side !== 'creator') throw new NativeError('only the window creator publishes devices', 'EPERM', 1);
    checkDevId(spec.devId);
    checkInt('queueSize', spec.queueSize, 1, QUEUE_MAX_SIZE);
    if ((spec.queueSize & (spec.queueSize - 1)) !== 0)
      throw new RangeError(`queueSize must be a power of two, got ${spec.queueSize}`);
    checkInt('bufSize', spec.bufSize, 1, 64 * 1024 * 1024);
    if (spec.deviceSide !== 'creator' && spec.deviceSide !== 'attacher')
      throw new TypeError("deviceSide must be 'creator' or 'attacher'");
    return this.native.devicePublish(this.h(), {
      devId: spec.devId,
      deviceSide: spec.deviceSide === 'creator' ? 0 : 1,
      queueSize: spec.queueSize,
      bufSize: spec.bufSize,
      features: featureBits(spec.eventIdx, spec.indirect),
    });
  }

  /** Creator only: publishes a hosted device (dev_host.h description); returns its table slot. */
  addHostedDevice(kind: HostedKind, desc: string): number {
    if (this.side !== 'creator') throw new NativeError('only the window creator publishes devices', 'EPERM', 1);
    checkHosted(kind, desc);
    return this.native.hostedPublish(this.h(), kind, desc);
  }

  /**
   * Opens a hosted device's local surfaces (TAP, pty, NBD socket, backing file) and serves
   * it on this side's link worker. NativeError ENOENT until the creator published it.
   */
  attachHosted(kind: HostedKind, desc: string): void {
    checkHosted(kind, desc);
    this.native.hostedAttach(this.h(), kind, desc);
  }

  /** Local surfaces of a hosted device: { "nbd1-port": "40331", "tap1": "vop0", ... }. */
  hostedEndpoints(devId: number): Record<string, string> {
    checkDevId(devId);
    const out: Record<string, string> = {};
    for (const line of this.native.hostedEndpoints(this.h(), devId).split('\n')) {
      const sp = line.indexOf(' ');
      if (sp > 0) out[line.slice(0, sp)] = line.slice(sp + 1);
    }
    return out;
  }

  /** Backend counters of a hosted device as "<kind><id>_<counter>" ("blk7_reads", "net3_tx_frames", "blk7_lat_write_b3"...). */
  hostedCounters(devId: number): Record<string, number> {
    checkDevId(devId);
    const all = JSON.parse(this.native.hostedStats(this.h(), devId)) as Record<string, Record<string, number>>;
    const out: Record<string, number> = {};
    for (const [dev, c] of Object.entries(all)) for (const [k, v] of Object.entries(c)) out[`${dev}_${k}`] = v;
    return out;
  }

  /** Run state of any device (byte pipe or hosted). */
  deviceState(devId: number): DeviceRunState {
    checkDevId(devId);
    return RUN_STATES[this.native.devState(this.h(), devId)] ?? 'unknown';
  }

  /** Console output not yet read by reader (0..3) of a hosted console, up to maxBytes. */
  consoleRead(devId: number, reader: number, maxBytes: number): ConsoleReadDto {
    checkDevId(devId);
    checkInt('reader', reader, 0, 3);
    checkInt('maxBytes', maxBytes, 1, 1 << 20);
    return this.native.hostedConsoleRead(this.h(), devId, reader, maxBytes);
  }

  /** Console input for a hosted console; returns the bytes accepted (0 when its buffer is full). */
  consoleWrite(devId: number, data: Uint8Array): number {
    checkDevId(devId);
    if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Uint8Array');
    return this.native.hostedConsoleWrite(this.h(), devId, data);
  }

  /** Creator only: hot-unplugs a device (tombstone); both sides get 'device-removed'. */
  removeDevice(devId: number): void {
    checkDevId(devId);
    this.native.deviceRemove(this.h(), devId);
  }

  /** Serves device devId in role on this side (the device table says which side is the device). */
  attach(devId: number, role: Role, pipe: PipeOptions): void {
    checkDevId(devId);
    if (role !== 'driver' && role !== 'device') throw new TypeError("role must be 'driver' or 'device'");
    checkInt('msgSize', pipe.msgSize, pipe.verify ? 16 : 1, 64 * 1024 * 1024);
    const segs = pipe.segs ?? 1;
    checkInt('segs', segs, 1, MAX_SEGS);
    if (pipe.bufSize !== null) checkInt('bufSize', pipe.bufSize, pipe.msgSize, 64 * 1024 * 1024);
    const allowed: Record<Role, { tx: PipeMode[]; rx: PipeMode[] }> = {
      driver: { tx: ['off', 'source'], rx: ['off', 'sink'] },
      device: { tx: ['off', 'sink', 'echo'], rx: ['off', 'source'] },
    };
    if (!allowed[role].tx.includes(pipe.tx))
      throw new RangeError(`tx mode '${pipe.tx}' is not valid for the ${role} role`);
    if (!allowed[role].rx.includes(pipe.rx))
      throw new RangeError(`rx mode '${pipe.rx}' is not valid for the ${role} role`);
    if (pipe.tx === 'echo' && pipe.rx !== 'off')
      throw new RangeError("rx must be 'off' when tx is 'echo' (echo fills queue 1)");
    const count = pipe.count ?? 0n;
    if (typeof count !== 'bigint' || count < 0n) throw new RangeError('count must be a non-negative bigint');
    const maxInflight = pipe.maxInflight ?? 0;
    checkInt('maxInflight', maxInflight, 0, 0xffffffff);
    const batch = pipe.batch ?? 0;
    checkInt('batch', batch, 0, QUEUE_MAX_SIZE);
    const dto: PipeConfigDto = {
      msgSize: pipe.msgSize,
      bufSize: pipe.bufSize ?? 0,
      segs,
      txMode: PIPE_MODE[pipe.tx],
      rxMode: PIPE_MODE[pipe.rx],
      verify: pipe.verify,
      features: featureBits(pipe.eventIdx, pipe.indirect),
      count,
      maxInflight,
      batch,
    };
    this.native.attachPipe(this.h(), devId, role === 'driver' ? 1 : 2, dto);
  }

  detach(devId: number): void {
    checkDevId(devId);
    this.native.detach(this.h(), devId);
  }

  /** Driver role: device reset handshake; queues restart clean ('reset-done' event). */
  resetDevice(devId: number): void {
    checkDevId(devId);
    this.native.resetDevice(this.h(), devId);
  }

  start(): void {
    this.native.start(this.h());
    this.started = true;
  }

  stop(): void {
    if (!this.started) return;
    this.native.stop(this.h());
    this.started = false;
  }

  queueStats(devId: number, queue: number): QueueStats {
    checkDevId(devId);
    checkInt('queue', queue, 0, MAX_QUEUES - 1);
    return decodeQueueStats(this.native.queueStats(this.h(), devId, queue), this.reasons);
  }

  pipeStats(devId: number): PipeStats {
    checkDevId(devId);
    const s = this.native.pipeStats(this.h(), devId);
    return {
      txMsgs: s[0] ?? 0n,
      rxMsgs: s[1] ?? 0n,
      badMsgs: s[2] ?? 0n,
      state: RUN_STATES[Number(s[3] ?? 0n)] ?? 'unknown',
    };
  }

  linkStats(): LinkStats {
    const s = this.native.linkStats(this.h());
    const at = (i: number): bigint => s[i] ?? 0n;
    return {
      wakeups: at(0),
      sleeps: at(1),
      pollNs: at(2),
      sleepNs: at(3),
      doorbells: at(4),
      futexWakes: at(5),
      heartbeats: at(6),
      peerResets: at(7),
      peerGone: at(8),
    };
  }

  /**
   * Stops and joins the worker, releases the event function and unmaps. The creator
   * removes the window file unless unlink is false. Idempotent.
   */
  close(opts: { readonly unlink: boolean } | null = null): void {
    if (this.handle === null) return;
    const h = this.handle;
    this.handle = null;
    this.started = false;
    try {
      this.native.windowClose(h, opts?.unlink ?? true);
    } catch (err) {
      throw toNativeError(err);
    }
  }
}
