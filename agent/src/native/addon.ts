/**
 * The one façade between the agent and the native addon: it implements the link
 * manager's data-plane port (links/data-plane.ts) straight over the addon's contract
 * (native.ts). One LinkWindow per link endpoint owns one native handle: a window side
 * and its C worker thread, which serves byte pipes and device backends alike. The
 * device-role endpoint creates the window and publishes the devices (it implements
 * them); the driver-role endpoint attaches and binds each device once the creator has
 * published it. Arguments are checked here first (device-config.ts: TypeError /
 * RangeError naming the property); C re-checks cheaply. Native failures arrive as
 * NativeError with a stable code; worker events arrive through one threadsafe function
 * per link, already typed and named by C.
 */
import { statSync } from 'node:fs';

import type { Logger } from '../../../lib/src/logger';
import type {
  ConsoleIo,
  DataPlane,
  DataPlaneEvent,
  DataPlaneWindow,
  LinkDevice,
  DataPlaneVhost,
  OpenVhostRequest,
  OpenWindowRequest,
  PeerView,
  QueueCounters,
  StreamConnection,
  StreamOpenRequest,
  StreamStartRequest,
  TransportView,
} from '../links/data-plane';
import { checkDeviceConfig } from './device-config';
import { NativeError } from './errors';
import { loadNative, type NativeModule } from './load';
import type {
  ConstantsDto,
  DeviceConfigDto,
  DeviceCountersDto,
  DeviceEndpointsDto,
  LinkEventDto,
  LinkHandle,
  QueueStatsDto,
  VhostHandle,
  VhostStatusDto,
  WindowSide,
  WorkerOptionsDto,
} from './native';

/** Busy-poll after the last work before sleeping on the doorbell. */
const SPIN_NS = 50_000;
const PAGE = 4096;
/** Window paths: what a window file name may take (bytes). */
const WINDOW_PATH_MAX = 250;

function checkPath(path: unknown): string {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError('window path must be a non-empty string');
  if (Buffer.byteLength(path) > WINDOW_PATH_MAX)
    throw new RangeError(`window path must be at most ${WINDOW_PATH_MAX} bytes`);
  return path;
}

/** A device as this side serves it; `bound` once attached to the worker. */
interface Served {
  readonly device: LinkDevice;
  bound: boolean;
}

/** One endpoint of one link: a native handle (window side + worker) and the devices it serves. */
class LinkWindow implements DataPlaneWindow {
  /** Valid until close(); null afterwards. */
  private handle: LinkHandle | null;
  private readonly devices = new Map<number, Served>();
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
    private readonly native: NativeModule,
    private readonly constants: ConstantsDto,
    handle: LinkHandle,
    readonly side: WindowSide,
    private readonly path: string,
    private readonly log: Logger,
    onEvent: (e: DataPlaneEvent) => void,
    /** A pci-bar window: no file; a new create nonce in the header says it was replaced. */
    private readonly pci = false,
  ) {
    this.handle = handle;
    let ino = -1;
    try {
      if (!pci) ino = statSync(path).ino;
    } catch {
      /* replaced or removed already: replaced() says so */
    }
    this.ino = ino;
    const i = native.windowInfo(handle);
    this.nonce = i.createNonce;
    this.atOpen = { heartbeat: i.peerHeartbeat, epoch: i.peerEpoch };
    native.onEvent(handle, (e) => {
      const out = this.translate(e);
      if (out) onEvent(out);
    });
  }

  /** Inode of the window file when it was mapped. */
  private readonly ino: number;
  /** The window's create nonce when it was mapped. */
  private readonly nonce: bigint;

  private h(): LinkHandle {
    if (this.handle === null) throw new NativeError('window is closed', 'EBADF', 9);
    return this.handle;
  }

  get closed(): boolean {
    return this.handle === null;
  }

  private translate(e: LinkEventDto): DataPlaneEvent | null {
    switch (e.type) {
      case 'queue-broken':
        return { type: 'queue-broken', devId: e.devId, queue: e.queue, reason: e.reason };
      case 'peer-reset':
        this.gone = null;
        return { type: 'peer-reset', epoch: e.epoch };
      case 'peer-gone':
        if (this.handle) {
          const p = this.native.windowInfo(this.handle);
          this.gone = { heartbeat: p.peerHeartbeat, epoch: p.peerEpoch };
        }
        return { type: 'peer-gone' };
      case 'peer-up':
        // Also reported for a dead peer's stale side block; presence is decided in
        // peer() by a moving heartbeat or a new epoch.
        this.gone = null;
        return { type: 'peer-up', epoch: e.epoch };
      case 'device-removed': {
        // The creator tombstoned it: release what this side holds for it (a backend's TAP, pty, NBD export).
        const d = this.devices.get(e.devId);
        this.devices.delete(e.devId);
        if (d?.bound && this.handle) {
          try {
            this.native.deviceDetach(this.handle, e.devId);
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
        if (d?.device.role === 'driver' && this.handle) {
          try {
            this.native.deviceReset(this.handle, e.devId);
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

  /**
   * Stream transport: the window is private and its other side is our own bridge, so the peer
   * is the connection: "up" while one is ready, its epoch the number of connections so far (a
   * reconnect is a peer restart). A timer turns connection changes into peer events.
   */
  private streamMode: { timer: NodeJS.Timeout; ready: boolean; onEvent: (e: DataPlaneEvent) => void } | null = null;

  enableStream(onEvent: (e: DataPlaneEvent) => void): void {
    const timer = setInterval(() => this.pollStream(), 100);
    timer.unref();
    this.streamMode = { timer, ready: false, onEvent };
  }

  private pollStream(): void {
    const m = this.streamMode;
    const s = this.stream();
    if (!m || !s) return;
    const ready = s.state === 'ready';
    if (ready === m.ready) return;
    m.ready = ready;
    m.onEvent(ready ? { type: 'peer-up', epoch: Number(s.connections) } : { type: 'peer-gone' });
  }

  startStream(req: StreamStartRequest): void {
    if (!this.streamMode) throw new NativeError('not a stream window', 'EINVAL', 22);
    this.native.streamStart(this.h(), {
      address: req.address,
      unixRoot: req.unixRoot ?? null,
      deviceSide: this.streamDeviceSide,
      secret: req.secret,
      allowPlain: req.allowPlain,
      handshakeMs: 0,
      idleMs: req.idleMs,
      devIds: [...this.devices.keys()],
      tls: req.tls ?? null,
    });
  }

  /** Set by NativeDataPlane.openStream. */
  streamDeviceSide = false;

  stream(): StreamConnection | null {
    if (this.handle === null || !this.streamMode) return null;
    return this.native.streamStatus(this.handle);
  }

  peer(): PeerView {
    if (this.streamMode) {
      const s = this.stream();
      if (!s || s.connections === 0n) return { state: 'absent', epoch: 0 };
      return { state: s.state === 'ready' ? 'up' : 'gone', epoch: Number(s.connections) };
    }
    const i = this.native.windowInfo(this.h());
    const p = { state: i.peerState, epoch: i.peerEpoch, heartbeat: i.peerHeartbeat };
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

  transportView(): TransportView {
    const i = this.native.windowInfo(this.h());
    return {
      transport: i.transport,
      mapping: i.mapping,
      sizeBytes: i.sizeBytes,
      ownId: i.ownId,
      peerId: i.peerId,
      signals: i.signals,
      interrupts: i.interrupts,
      polls: i.polls,
    };
  }

  failure(): string | null {
    return this.handle === null ? null : this.native.windowInfo(this.handle).failed;
  }

  replaced(): boolean {
    if (this.streamMode) return false;
    if (this.pci) return this.handle !== null && this.native.windowInfo(this.handle).createNonce !== this.nonce;
    try {
      return statSync(this.path).ino !== this.ino;
    } catch {
      return true;
    }
  }

  addDevice(device: LinkDevice): void {
    checkDeviceConfig(device.config, this.constants);
    if (device.config.devId !== device.devId || device.config.role !== device.role)
      throw new TypeError('device.config must carry the device id and role of the device');
    if (this.side === 'creator') {
      try {
        this.native.devicePublish(this.h(), device.config);
      } catch (err) {
        // A re-attached creator finds its devices still in the table: bind them again.
        if (!(err instanceof NativeError && err.code === 'EEXIST')) throw err;
      }
    }
    this.devices.set(device.devId, { device, bound: false });
    this.tryBind(device.devId);
  }

  /** Binds a device to the worker; the attacher retries until the creator has published it. */
  private tryBind(devId: number): boolean {
    const d = this.devices.get(devId);
    if (!d) return false;
    if (d.bound) return true;
    try {
      this.native.deviceAttach(this.h(), d.device.config);
      d.bound = true;
      this.refused.delete(devId);
    } catch (err) {
      if (err instanceof NativeError && (err.code === 'ENOENT' || err.code === 'EAGAIN') && this.side === 'attacher')
        return false;
      // The peer's table entry does not validate: never served; say why and look again later.
      if (err instanceof NativeError && err.code === 'EPROTO') {
        this.refused.set(devId, err.message);
        return false;
      }
      throw err;
    }
    return true;
  }

  removeDevice(devId: number): void {
    const d = this.devices.get(devId);
    this.devices.delete(devId);
    this.refused.delete(devId);
    if (d?.bound) this.native.deviceDetach(this.h(), devId);
    if (this.side === 'creator') {
      try {
        this.native.deviceRemove(this.h(), devId);
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
    return this.native.deviceState(this.h(), devId) === 'running';
  }

  resetDevice(devId: number): void {
    const d = this.devices.get(devId);
    // Only the driver role starts the handshake; the device side is reset by its driver.
    if (d?.bound && d.device.role === 'driver') this.native.deviceReset(this.h(), devId);
  }

  private bound(devId: number): Served | null {
    const d = this.devices.get(devId);
    return d?.bound && this.handle !== null ? d : null;
  }

  counters(devId: number): QueueCounters[] {
    const d = this.bound(devId);
    if (!d) return [];
    const h = this.h();
    const sizes = this.native.deviceInfo(h, devId).queueSizes;
    return d.device.queues.map((_, index) => {
      const q = this.native.queueStats(h, devId, index);
      return {
        index,
        size: sizes[index] ?? 0,
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
    });
  }

  deviceCounters(devId: number): DeviceCountersDto | null {
    return this.bound(devId) ? this.native.deviceCounters(this.h(), devId) : null;
  }

  endpoints(devId: number): DeviceEndpointsDto | null {
    const d = this.bound(devId);
    return d && d.device.config.kind !== 'pipe' ? this.native.deviceEndpoints(this.h(), devId) : null;
  }

  negotiatedFeatures(devId: number): bigint {
    return this.bound(devId) ? this.native.deviceInfo(this.h(), devId).featuresAccepted : 0n;
  }

  console(devId: number): ConsoleIo | null {
    const d = this.bound(devId);
    if (!d || d.device.config.kind !== 'console') return null;
    return {
      read: (reader, maxBytes) => {
        if (!Number.isInteger(reader) || reader < 0 || reader > 3) throw new RangeError('reader must be in [0, 3]');
        if (!Number.isInteger(maxBytes) || maxBytes < 1 || maxBytes > 1 << 20)
          throw new RangeError('maxBytes must be in [1, 1048576]');
        return this.native.consoleRead(this.h(), devId, reader, maxBytes);
      },
      write: (data) => {
        if (!(data instanceof Uint8Array)) throw new TypeError('data must be a Uint8Array');
        return this.native.consoleWrite(this.h(), devId, data);
      },
    };
  }

  workerTimes(): { pollNs: bigint; sleepNs: bigint } {
    if (this.handle === null) return { pollNs: 0n, sleepNs: 0n };
    const s = this.native.linkStats(this.handle);
    return { pollNs: s.pollNs, sleepNs: s.sleepNs };
  }

  /** Starts the worker thread (open() does, once the window is mapped). */
  start(): void {
    this.native.start(this.h());
  }

  /**
   * Stops and joins the worker, releases the event function, closes the device
   * backends and unmaps. The creator removes the window file when unlink. Idempotent.
   */
  close(unlink: boolean): void {
    if (this.handle === null) return;
    if (this.streamMode) clearInterval(this.streamMode.timer);
    const h = this.handle;
    this.handle = null;
    this.native.onEvent(h, null);
    this.native.windowClose(h, unlink && this.side === 'creator');
  }
}

/** A per-queue counter block as the link manager shows it. */
function queueCounters(index: number, size: number, q: QueueStatsDto): QueueCounters {
  return {
    index,
    size,
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

/** One vhost-user device: a native handle (socket, control and worker threads, the backend). */
class VhostDevice implements DataPlaneVhost {
  private handle: VhostHandle | null;

  constructor(
    private readonly native: NativeModule,
    handle: VhostHandle,
  ) {
    this.handle = handle;
  }

  private h(): VhostHandle {
    if (this.handle === null) throw new NativeError('vhost-user device is closed', 'EBADF', 9);
    return this.handle;
  }

  status(): VhostStatusDto {
    return this.native.vhostStatus(this.h());
  }

  counters(): QueueCounters[] {
    const h = this.h();
    const n = this.native.vhostStatus(h).queues;
    return Array.from({ length: n }, (_, i) => queueCounters(i, 0, this.native.vhostQueueStats(h, i)));
  }

  deviceCounters(): DeviceCountersDto | null {
    return this.native.vhostCounters(this.h());
  }

  endpoints(): { tap: string | null; netns: string | null } {
    return this.native.vhostEndpoints(this.h());
  }

  close(): void {
    if (this.handle === null) return;
    const h = this.handle;
    this.handle = null;
    this.native.vhostClose(h);
  }
}

/** Rounds a requested window size up to whole pages (at least 64 KiB). */
export function windowBytes(requested: number): number {
  return Math.max(65536, Math.ceil(requested / PAGE) * PAGE);
}

export class NativeDataPlane implements DataPlane {
  readonly available = true;
  readonly version: string;
  private readonly constants: ConstantsDto;

  constructor(
    private readonly native: NativeModule,
    private readonly log: Logger,
    private readonly worker: WorkerOptionsDto = { spinNs: SPIN_NS, pollOnly: false, resetTimeoutMs: 0 },
  ) {
    this.version = native.version();
    this.constants = native.constants();
  }

  windowBytes(devices: readonly DeviceConfigDto[]): number {
    devices.forEach((d, i) => checkDeviceConfig(d, this.constants, `devices[${i}]`));
    const layout = this.native.windowLayout([...devices], 0);
    if (devices.length === 0 || devices.length >= this.constants.maxDevices) return layout.sizeBytes;
    // Room for a hot add: one more copy of the largest device (by its footprint, as C lays it out).
    let largest = 0;
    layout.devices.forEach((f, i) => {
      const l = layout.devices[largest];
      if (l && f.ringBytes + f.poolBytes > l.ringBytes + l.poolBytes) largest = i;
    });
    const spare: DeviceConfigDto = { ...(devices[largest] as DeviceConfigDto), devId: 0xffffffff };
    return this.native.windowLayout([...devices, spare], 0).sizeBytes;
  }

  open(req: OpenWindowRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow {
    const path = checkPath(req.path);
    const n = this.native;
    const pci = req.pci ?? null;
    // A pci-bar window lives in memory the transport maps, not in a file at path.
    const file = pci === null ? path : '';
    let h: LinkHandle;
    if (req.side === 'attacher') h = n.windowAttach({ path: file, pci, ...this.worker });
    else if (req.reattach) h = n.windowReattach({ path: file, side: 0, pci, ...this.worker });
    else {
      const sizeBytes = windowBytes(req.sizeBytes);
      if (sizeBytes > this.constants.windowSizeMax)
        throw new RangeError(`window sizeBytes must be at most ${this.constants.windowSizeMax}`);
      h = n.windowCreate({ path: file, sizeBytes, maxDevices: 0, pci, ...this.worker });
    }
    let w: LinkWindow;
    try {
      w = new LinkWindow(
        n,
        this.constants,
        h,
        req.side,
        path,
        this.log.child({ link: req.link }),
        onEvent,
        pci !== null,
      );
    } catch (err) {
      n.windowClose(h, req.side === 'creator' && !req.reattach);
      throw err;
    }
    try {
      w.start();
    } catch (err) {
      w.close(req.side === 'creator');
      throw err;
    }
    return w;
  }

  openVhost(req: OpenVhostRequest): DataPlaneVhost {
    if (req.device) checkDeviceConfig(req.device, this.constants, 'device');
    const h = this.native.vhostOpen(
      {
        socketPath: req.socketPath,
        root: req.root,
        server: req.server,
        socketMode: req.socketMode,
        socketGid: req.socketGid,
        reconnectMs: req.reconnectMs,
        maxQueueSize: req.maxQueueSize,
        maxMemBytes: 0n,
        allowUnsealed: req.allowUnsealed,
        spinNs: BigInt(this.worker.spinNs),
        queuePairs: req.queuePairs,
      },
      req.device,
    );
    return new VhostDevice(this.native, h);
  }

  openStream(req: StreamOpenRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow {
    const n = this.native;
    req.devices.forEach((d, i) => checkDeviceConfig(d.config, this.constants, `devices[${i}]`));
    const deviceSide = req.role === 'device';
    const h = n.streamOpen({
      devices: req.devices.map((d) => d.config),
      deviceSide,
      maxChain: 0,
      ...this.worker,
    });
    let w: LinkWindow;
    try {
      w = new LinkWindow(n, this.constants, h, 'creator', '', this.log.child({ link: req.link }), onEvent);
      w.streamDeviceSide = deviceSide;
      w.enableStream(onEvent);
      w.start();
    } catch (err) {
      n.windowClose(h, false);
      throw err;
    }
    return w;
  }
}

/** The data plane used when the native addon cannot be loaded: links fail with a clear reason. */
function unavailableDataPlane(why: string): DataPlane {
  return {
    available: false,
    version: why,
    windowBytes: () => 0,
    open() {
      throw new NativeError(`native data plane unavailable: ${why}`, 'NATIVE_UNAVAILABLE');
    },
  };
}

/** The native data plane, or one that fails every link with DataPlaneUnavailable when the addon does not load. */
export function loadDataPlane(log: Logger): DataPlane {
  try {
    const dp = new NativeDataPlane(loadNative(), log);
    log.info({ version: dp.version }, 'native data plane loaded');
    return dp;
  } catch (err) {
    log.error({ err }, 'native data plane unavailable; links will report DataPlaneUnavailable');
    return unavailableDataPlane(err instanceof Error ? err.message : String(err));
  }
}
