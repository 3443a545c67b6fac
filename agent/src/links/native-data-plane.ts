/**
 * The DataPlane port over the native façade (agent/src/native/window.ts): one
 * VopWindow per link endpoint with its C worker thread, which serves byte-pipe
 * stand-ins and hosted device backends alike. The device-role endpoint creates the
 * window and publishes the devices (it implements them); the driver-role endpoint
 * attaches and binds each device once the creator has published it. When the addon
 * cannot be loaded, links fail with DataPlaneUnavailable instead.
 */
import { statSync } from 'node:fs';

import type { Logger } from '../../../lib/src/logger';
import { NativeError } from '../native/errors';
import { loadNative } from '../native/load';
import { VopWindow, type LinkEvent as NativeLinkEvent, type PipeOptions, type QueueStats } from '../native/window';
import {
  DataPlaneError,
  type DataPlane,
  type DataPlaneEvent,
  type DataPlaneWindow,
  type HostedDevicePort,
  type NativeDeviceSpec,
  type OpenWindowRequest,
  type PeerView,
  type QueueCounters,
} from './data-plane';
import { unavailableDataPlane } from './unavailable-data-plane';

/** The link manager's view of one queue's native counters. */
export function toQueueCounters(index: number, q: QueueStats): QueueCounters {
  return {
    index,
    buffers: q.buffers,
    bytes: q.bytes,
    notificationsSent: q.notificationsSent,
    notificationsSuppressed: q.notificationsSuppressed,
    wakeups: q.wakeups,
    pollNs: q.pollNs,
    sleepNs: q.sleepNs,
    errors: new Map(Object.entries(q.errorsByReason)),
    broken: q.broken ?? '',
  };
}

/** Busy-poll after the last work before sleeping on the doorbell. */
const SPIN_NS = 50_000;
/** Byte-pipe message size of the stand-ins (<= STAND_IN_BUF_SIZE, >= 16 for verification). */
const PIPE_MSG_SIZE = 256;
const PAGE = 4096;

function wrap<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof NativeError) throw new DataPlaneError(err.code, err.message);
    throw err;
  }
}

function pipeOptions(spec: NativeDeviceSpec): PipeOptions {
  const stream = spec.traffic === 'stream';
  const base = {
    msgSize: PIPE_MSG_SIZE,
    bufSize: null,
    segs: null,
    verify: true,
    eventIdx: spec.eventIdx,
    indirect: false,
    count: null,
    maxInflight: null,
    batch: null,
  };
  // Queue 0 carries driver->device, queue 1 device->driver.
  if (spec.role === 'driver') return { ...base, tx: stream ? 'source' : 'off', rx: 'sink' };
  return { ...base, tx: 'sink', rx: stream ? 'source' : 'off' };
}

/** Rounds a requested window size up to whole pages. */
export function windowBytes(requested: number): number {
  return Math.max(65536, Math.ceil(requested / PAGE) * PAGE);
}

class NativeWindow implements DataPlaneWindow {
  /** Devices this side serves, by devId; `bound` once attached to the worker. */
  private readonly devices = new Map<number, { spec: NativeDeviceSpec; bound: boolean }>();
  /** Why binding a device last failed because its table entry was refused (EPROTO), by devId. */
  private readonly refused = new Map<number, string>();

  /**
   * The side block keeps saying "up" after a peer dies without closing; the worker
   * detects the stalled heartbeat and reports peer-gone. Valid after such an event:
   * the heartbeat and epoch the peer stopped at (cleared once either moves).
   */
  private gone: { heartbeat: bigint; epoch: number } | null = null;
  /** Heartbeat and epoch at open; the peer counts as present once either moves (a dead creator's window never does). */
  private atOpen: { heartbeat: bigint; epoch: number } | null;

  constructor(
    private readonly w: VopWindow,
    private readonly log: Logger,
    onEvent: (e: DataPlaneEvent) => void,
    private readonly path: string,
    /** Inode of the window file when it was mapped. */
    private readonly ino: number,
  ) {
    const i = w.info().peer;
    this.atOpen = { heartbeat: i.heartbeat, epoch: i.epoch };
    w.on('event', (e: NativeLinkEvent) => {
      if (e.type === 'peer-gone' && !this.w.closed) {
        const p = this.w.info().peer;
        this.gone = { heartbeat: p.heartbeat, epoch: p.epoch };
      }
      // peer-up is also reported for a dead peer's stale side block; presence is
      // decided in peer() by a moving heartbeat or a new epoch.
      if (e.type === 'peer-up' || e.type === 'peer-reset') this.gone = null;
      const out = this.translate(e);
      if (out) onEvent(out);
    });
  }

  get side(): 'creator' | 'attacher' {
    return this.w.side;
  }

  private translate(e: NativeLinkEvent): DataPlaneEvent | null {
    switch (e.type) {
      case 'queue-broken':
        return { type: 'queue-broken', devId: e.devId, queue: e.queue, reason: e.reason };
      case 'peer-reset':
        return { type: 'peer-reset', epoch: e.epoch };
      case 'peer-gone':
        return { type: 'peer-gone' };
      case 'peer-up':
        return { type: 'peer-up', epoch: e.epoch };
      case 'device-removed': {
        // The creator tombstoned it: release what this side holds for it (a hosted device's TAP, pty, NBD export).
        const d = this.devices.get(e.devId);
        this.devices.delete(e.devId);
        if (d?.bound && !this.w.closed) {
          try {
            this.w.detach(e.devId);
          } catch (err) {
            this.log.warn({ err, devId: e.devId }, 'detaching a removed device failed');
          }
        }
        return { type: 'device-removed', devId: e.devId };
      }
      case 'reset-done':
        return { type: 'device-ready', devId: e.devId };
      case 'needs-reset': {
        // The device side flagged DEVICE_NEEDS_RESET: the driver answers with the handshake.
        const d = this.devices.get(e.devId);
        if (d?.spec.role === 'driver' && !this.w.closed) {
          try {
            this.w.resetDevice(e.devId);
          } catch (err) {
            this.log.warn({ err, devId: e.devId }, 'reset after needs-reset failed');
          }
        }
        return { type: 'queue-broken', devId: e.devId, queue: -1, reason: 'peer_needs_reset' };
      }
      case 'reset-timeout':
        return { type: 'queue-broken', devId: e.devId, queue: -1, reason: 'reset_timeout' };
      case 'backend-failed':
        return { type: 'backend-failed', devId: e.devId, error: e.error };
      case 'link-failed':
        return { type: 'link-failed', reason: e.reason };
      default: {
        const never: never = e;
        this.log.warn({ event: never }, 'unknown native event');
        return null;
      }
    }
  }

  peer(): PeerView {
    const p = wrap(() => this.w.info()).peer;
    if (p.state !== 'up') return { state: p.state, epoch: p.epoch };
    if (this.gone) {
      if (p.heartbeat === this.gone.heartbeat && p.epoch === this.gone.epoch) return { state: 'gone', epoch: p.epoch };
      this.gone = null;
    }
    if (this.atOpen) {
      if (p.heartbeat === this.atOpen.heartbeat && p.epoch === this.atOpen.epoch)
        return { state: 'absent', epoch: p.epoch };
      this.atOpen = null;
    }
    return { state: 'up', epoch: p.epoch };
  }

  failure(): string | null {
    return this.w.closed ? null : wrap(() => this.w.info()).failed;
  }

  replaced(): boolean {
    try {
      return statSync(this.path).ino !== this.ino;
    } catch {
      return true;
    }
  }

  addDevice(spec: NativeDeviceSpec): void {
    if (this.w.side === 'creator') {
      try {
        this.publish(spec);
      } catch (err) {
        // A re-attached creator finds its devices still in the table: bind them again.
        if (!(err instanceof DataPlaneError && err.code === 'EEXIST')) throw err;
      }
    }
    this.devices.set(spec.devId, { spec, bound: false });
    this.tryBind(spec.devId);
  }

  private publish(spec: NativeDeviceSpec): void {
    const hosted = spec.hosted;
    wrap(() =>
      hosted
        ? this.w.addHostedDevice(hosted.kind, hosted.desc)
        : this.w.addDevice({
            devId: spec.devId,
            deviceSide: spec.role === 'device' ? 'creator' : 'attacher',
            queueSize: spec.queues[0]?.size ?? 256,
            bufSize: spec.bufSize,
            eventIdx: spec.eventIdx,
            indirect: false,
          }),
    );
  }

  /** Binds a device to the worker; the attacher retries until the creator has published it. */
  private tryBind(devId: number): boolean {
    const d = this.devices.get(devId);
    if (!d) return false;
    if (d.bound) return true;
    try {
      const hosted = d.spec.hosted;
      if (hosted) this.w.attachHosted(hosted.kind, hosted.desc);
      else this.w.attach(devId, d.spec.role, pipeOptions(d.spec));
      d.bound = true;
      this.refused.delete(devId);
    } catch (err) {
      if (err instanceof NativeError && (err.code === 'ENOENT' || err.code === 'EAGAIN') && this.w.side === 'attacher')
        return false;
      // The peer's table entry does not validate: never served; say why and look again later.
      if (err instanceof NativeError && err.code === 'EPROTO') {
        this.refused.set(devId, err.message);
        return false;
      }
      throw err instanceof NativeError ? new DataPlaneError(err.code, err.message) : err;
    }
    return true;
  }

  removeDevice(devId: number): void {
    const d = this.devices.get(devId);
    this.devices.delete(devId);
    this.refused.delete(devId);
    if (d?.bound) wrap(() => this.w.detach(devId));
    if (this.w.side === 'creator') {
      try {
        this.w.removeDevice(devId);
      } catch (err) {
        if (!(err instanceof NativeError && err.code === 'ENOENT')) throw err;
      }
    }
  }

  deviceIssue(devId: number): string {
    return this.refused.get(devId) ?? '';
  }

  deviceReady(devId: number): boolean {
    if (!this.tryBind(devId)) return false;
    return wrap(() => this.w.deviceState(devId)) === 'running';
  }

  resetDevice(devId: number): void {
    const d = this.devices.get(devId);
    // Only the driver role starts the handshake; the device side is reset by its driver.
    if (d?.bound && d.spec.role === 'driver') wrap(() => this.w.resetDevice(devId));
  }

  counters(devId: number): QueueCounters[] {
    const d = this.devices.get(devId);
    if (!d?.bound) return [];
    return d.spec.queues.map((_, index) =>
      toQueueCounters(
        index,
        wrap(() => this.w.queueStats(devId, index)),
      ),
    );
  }

  deviceCounters(devId: number): Record<string, bigint> {
    const d = this.devices.get(devId);
    if (!d?.bound || d.spec.hosted) return {}; // hosted devices report through hosted(devId).counters()
    const p = wrap(() => this.w.pipeStats(devId));
    return { tx_msgs: p.txMsgs, rx_msgs: p.rxMsgs, bad_msgs: p.badMsgs };
  }

  hosted(devId: number): HostedDevicePort | null {
    const d = this.devices.get(devId);
    if (!d?.bound || !d.spec.hosted) return null;
    const w = this.w;
    return {
      endpoints: () => wrap(() => w.hostedEndpoints(devId)),
      counters: () => wrap(() => w.hostedCounters(devId)),
      consoleRead: (reader, maxBytes) => wrap(() => w.consoleRead(devId, reader, maxBytes)),
      consoleWrite: (data) => wrap(() => w.consoleWrite(devId, data)),
    };
  }

  workerTimes(): { pollNs: bigint; sleepNs: bigint } {
    if (this.w.closed) return { pollNs: 0n, sleepNs: 0n };
    const s = wrap(() => this.w.linkStats());
    return { pollNs: s.pollNs, sleepNs: s.sleepNs };
  }

  close(unlink: boolean): void {
    this.w.removeAllListeners('event');
    wrap(() => this.w.close({ unlink: unlink && this.w.side === 'creator' }));
  }
}

class NativeDataPlane implements DataPlane {
  readonly available = true;
  constructor(
    readonly version: string,
    private readonly log: Logger,
  ) {}

  open(req: OpenWindowRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow {
    const worker = { spinNs: SPIN_NS, pollOnly: false, resetTimeoutMs: null };
    const w = wrap(() =>
      req.side === 'creator'
        ? req.reattach
          ? VopWindow.reattach({ path: req.path, side: 'creator', ...worker })
          : VopWindow.create({ path: req.path, sizeBytes: windowBytes(req.sizeBytes), maxDevices: null, ...worker })
        : VopWindow.attach({ path: req.path, ...worker }),
    );
    let ino = -1;
    try {
      ino = statSync(req.path).ino;
    } catch {
      /* replaced or removed already: replaced() says so */
    }
    const nw = new NativeWindow(w, this.log.child({ link: req.link }), onEvent, req.path, ino);
    try {
      wrap(() => w.start());
    } catch (err) {
      nw.close(req.side === 'creator');
      throw err;
    }
    return nw;
  }
}

export function loadDataPlane(log: Logger): DataPlane {
  try {
    const version = loadNative().version();
    log.info({ version }, 'native data plane loaded');
    return new NativeDataPlane(version, log);
  } catch (err) {
    const dp = unavailableDataPlane(err instanceof Error ? err.message : String(err));
    log.error({ err }, 'native data plane unavailable; links will report DataPlaneUnavailable');
    return dp;
  }
}
