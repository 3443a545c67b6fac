/**
 * The port between the link manager and the native data plane. The link manager
 * speaks only this interface; agent/src/links/native-data-plane.ts adapts it to the
 * native façade (agent/src/native/), and unit tests of the link manager may supply
 * a fake. Every call here is a cheap control operation: buffers never cross it.
 */
import type { HostedKind } from '../native/native';

/** Which side of the shared window this endpoint is. */
export type WindowSide = 'creator' | 'attacher';

/** Direction of a queue as seen from this endpoint. */
export type QueueDirection = 'transmit' | 'receive';

/** One queue of a device as the backend lays it out. */
export interface QueueLayout {
  readonly name: string;
  readonly direction: QueueDirection;
  readonly size: number;
}

/**
 * A real device backend of native/devices (virtio-net, -console, -blk) served by the
 * link's worker on the link's own window, described as dev_host.h does.
 */
export interface HostedDeviceSpec {
  readonly kind: HostedKind;
  /** "ID:opt=value:flag..." */
  readonly desc: string;
  /** Bytes of each queue's pool as the native layer lays it out (window sizing). */
  readonly poolBytes: readonly number[];
  /**
   * The device side may restart without a reset (virtio-blk's in-flight journal): peer
   * restarts and departures do not reset it; a device that cannot resume asks for one.
   */
  readonly resumable: boolean;
}

/** What the native layer needs to publish or bind one device. */
export interface NativeDeviceSpec {
  /** Nonzero, stable for the device's life on the link (derived from its name). */
  readonly devId: number;
  /** virtio device id, or the byte-pipe type for tests. */
  readonly deviceType: number;
  /** Which virtio role this endpoint plays for the device. */
  readonly role: 'device' | 'driver';
  /** In native queue-index order. */
  readonly queues: readonly QueueLayout[];
  readonly eventIdx: boolean;
  /** Bytes per driver buffer. */
  readonly bufSize: number;
  /**
   * Byte-pipe stand-ins only: 'idle' posts receive buffers and sends nothing;
   * 'stream' sends verified messages both ways continuously (tests, benchmarks).
   */
  readonly traffic: 'idle' | 'stream';
  /** A hosted device backend instead of a byte pipe (bufSize and traffic then unused). */
  readonly hosted: HostedDeviceSpec | null;
}

/** A hosted device as its endpoint sees it: local surfaces, backend counters, console stream. */
export interface HostedDevicePort {
  /** { "nbd1-port": "40331", "tap1": "vop0", "pty2": "/dev/pts/3", ... } */
  endpoints(): Record<string, string>;
  /** Backend counters as "<kind><id>_<counter>" ("blk7_reads", "net3_tx_frames", "blk7_lat_write_b3", ...). */
  counters(): Record<string, number>;
  /** Consoles: up to maxBytes of output not yet read by reader 0..3 (lost: bytes it fell behind). */
  consoleRead(reader: number, maxBytes: number): { readonly data: Buffer; readonly lost: bigint };
  /** Consoles: input bytes accepted (0 when the input buffer is full). */
  consoleWrite(data: Uint8Array): number;
}

export interface OpenWindowRequest {
  readonly link: string;
  /** Window file path inside the rendezvous directory. */
  readonly path: string;
  readonly side: WindowSide;
  /**
   * Creator only: take the creator side of an existing window back (after a restart)
   * instead of creating one; throws EBUSY while a live process holds it.
   */
  readonly reattach: boolean;
  /** Bytes; only the creator uses it. */
  readonly sizeBytes: number;
}

/** Native counters of one queue, read at call time. */
export interface QueueCounters {
  readonly index: number;
  readonly buffers: bigint;
  readonly bytes: bigint;
  readonly notificationsSent: bigint;
  readonly notificationsSuppressed: bigint;
  readonly wakeups: bigint;
  readonly pollNs: bigint;
  readonly sleepNs: bigint;
  /** Violations and local errors by stable reason name. */
  readonly errors: ReadonlyMap<string, bigint>;
  /** Reason name when broken, '' when healthy. */
  readonly broken: string;
}

/** State of the peer side as the window shows it. */
export interface PeerView {
  /** 'absent': never attached; 'up': attached and beating; 'gone': closed or heartbeat stalled. */
  readonly state: 'absent' | 'up' | 'gone';
  /** Incremented on each (re)attach of the peer; 0 before the first. */
  readonly epoch: number;
}

/** Asynchronous things the native layer reports (from its worker threads). */
export type DataPlaneEvent =
  | { readonly type: 'queue-broken'; readonly devId: number; readonly queue: number; readonly reason: string }
  | { readonly type: 'peer-reset'; readonly epoch: number }
  | { readonly type: 'peer-up'; readonly epoch: number }
  | { readonly type: 'peer-gone' }
  | { readonly type: 'device-ready'; readonly devId: number }
  | { readonly type: 'device-removed'; readonly devId: number }
  | { readonly type: 'backend-failed'; readonly devId: number; readonly error: string }
  /** This endpoint's data plane stopped for good because of the peer (e.g. 'devtab_unstable'). */
  | { readonly type: 'link-failed'; readonly reason: string };

/** Thrown by the data plane; `code` is stable ("EEXIST", "EAGAIN", "NATIVE_UNAVAILABLE", ...). */
export class DataPlaneError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'DataPlaneError';
    this.code = code;
  }
}

/** One open window (one endpoint of one link). */
export interface DataPlaneWindow {
  readonly side: WindowSide;
  peer(): PeerView;
  /** Publishes (creator) or binds (attacher) a device and starts moving its queues. */
  addDevice(spec: NativeDeviceSpec): void;
  removeDevice(devId: number): void;
  /** True when both sides have bound the device and its queues run. */
  deviceReady(devId: number): boolean;
  /** Why the device cannot be bound (its table entry was refused), '' when nothing is wrong. */
  deviceIssue(devId: number): string;
  /** Device reset handshake for one device; its queues start clean. */
  resetDevice(devId: number): void;
  /** The hosted device devId once bound on this side, else null. */
  hosted(devId: number): HostedDevicePort | null;
  /** Counters per queue of a device ([] when unknown). */
  counters(devId: number): QueueCounters[];
  /** Device-level native counters (byte pipe: tx_msgs, rx_msgs, bad_msgs). */
  deviceCounters(devId: number): Record<string, bigint>;
  /** Link-wide worker counters (busy-poll and sleep time). */
  workerTimes(): { readonly pollNs: bigint; readonly sleepNs: bigint };
  /** Byte-pipe only: send bytes into a device's transmit queue (console writer, tests). */
  write?(devId: number, data: Uint8Array): number;
  /** True when the window's path no longer names this mapping (removed or replaced by a new window). */
  replaced(): boolean;
  /** Why the data plane stopped for good because of the peer ('devtab_unstable'), null while healthy. */
  failure(): string | null;
  /** Stops workers and unmaps; the creator removes the window file when `unlink`. */
  close(unlink: boolean): void;
}

export interface DataPlane {
  /** False when the native addon could not be loaded; open() then throws NATIVE_UNAVAILABLE. */
  readonly available: boolean;
  readonly version: string;
  /**
   * Creates or attaches a window. The attacher throws EAGAIN/ENOENT while the creator
   * has not published it yet (the caller retries); the creator throws EEXIST when a
   * window file is already there (the caller then re-attaches with `reattach`, or
   * replaces the file when the engine cannot adopt it).
   */
  open(req: OpenWindowRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow;
}
