/**
 * The port between the link manager and the native data plane. The link manager
 * speaks only this interface; agent/src/native/addon.ts implements it over the addon
 * (the one façade), and unit tests of the link manager may supply a fake. Every call
 * here is a cheap control operation: buffers never cross it. Devices cross as the
 * addon's typed configs (DeviceConfigDto), counters and endpoints come back as its
 * typed objects: nothing is encoded as text on the way.
 */
import type {
  ConsoleReadDto,
  DeviceConfigDto,
  DeviceCountersDto,
  DeviceEndpointsDto,
  PciWindowDto,
  PeerState,
  VhostStatusDto,
  WindowSide,
} from '../native/native';

export { NativeError } from '../native/errors';
export type { WindowSide } from '../native/native';

/** Direction of a queue as seen from this endpoint. */
export type QueueDirection = 'transmit' | 'receive';

/** One queue of a device, named for status and metrics (sizes come from the table). */
export interface QueueLayout {
  readonly name: string;
  readonly direction: QueueDirection;
}

/** One device of a link as this endpoint publishes (creator) and serves it. */
export interface LinkDevice {
  /** Nonzero, stable for the device's life on the link (derived from its name). */
  readonly devId: number;
  /** Which virtio role this endpoint plays for the device. */
  readonly role: 'device' | 'driver';
  /** In native queue-index order. */
  readonly queues: readonly QueueLayout[];
  /** What the native layer publishes and serves: a byte pipe or a device backend. */
  readonly config: DeviceConfigDto;
  /**
   * The device side may restart without a reset (virtio-blk's in-flight journal): peer
   * restarts and departures do not reset it; a device that cannot resume asks for one.
   */
  readonly resumable: boolean;
}

export interface OpenWindowRequest {
  readonly link: string;
  /** Window file path inside the rendezvous directory (pci-bar: where the window is, for messages). */
  readonly path: string;
  /** A pci-bar window (the path is then only its name in messages); null: the shm file at path. */
  readonly pci?: PciWindowDto | null;
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
  /** Entries of the ring (the negotiated queue size); 0 when unknown. */
  readonly size: number;
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
  readonly state: PeerState;
  /** Incremented on each (re)attach of the peer; 0 before the first. */
  readonly epoch: number;
}

/** Reads and writes of one console's native stream. */
export interface ConsoleIo {
  /** Up to maxBytes of output not yet read by reader 0..3 (lost: bytes it fell behind). */
  read(reader: number, maxBytes: number): ConsoleReadDto;
  /** Input bytes accepted (0 when the input buffer is full). */
  write(data: Uint8Array): number;
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

/** The connection of a stream link (native/devices/stream_conn.c). */
export interface StreamConnection {
  readonly state: 'listening' | 'dialing' | 'handshake' | 'ready' | 'stopped';
  readonly peer: string;
  readonly rttNs: bigint;
  readonly bytesSent: bigint;
  readonly bytesReceived: bigint;
  readonly connections: bigint;
  readonly disconnects: bigint;
  readonly lastError: string;
  /** The current connection's protection ("TLSv1.3 TLS_AES_256_GCM_SHA384 + hmac", "hmac", "none"), "" when none. */
  readonly security: string;
}

/** TLS 1.3 with mutual certificates for a stream link (docs/stream-protocol.md "TLS"). */
export interface StreamTlsRequest {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  /** The DNS subjectAltName the peer's certificate must carry (the peer agent's name). */
  readonly peerId: string;
}

export interface StreamOpenRequest {
  readonly link: string;
  readonly role: 'device' | 'driver';
  /** The devices, published into the private window before the connection starts. */
  readonly devices: readonly LinkDevice[];
}

export interface StreamStartRequest {
  /** "tcp:IPV4:PORT", "unix:PATH" or "vsock:CID:PORT": where the device side listens or the driver side dials. */
  readonly address: string;
  /** unix: the allowed directory the socket lies beneath (path policy), or null. */
  readonly unixRoot?: string | null;
  readonly secret: Uint8Array | null;
  readonly allowPlain: boolean;
  readonly idleMs: number;
  /** TLS on every connection, or null/absent for none. */
  readonly tls?: StreamTlsRequest | null;
}

/** The transport of an open window, read at call time (status and metrics). */
export interface TransportView {
  /** 'shm' or 'pci-bar'. */
  readonly transport: string;
  readonly mapping: string;
  readonly sizeBytes: bigint;
  /** pci-bar: our ivshmem id and the peer's, -1 when unknown. */
  readonly ownId: number;
  readonly peerId: number;
  /** Doorbells sent to the peer (signals that left this side: eventfd or register writes). */
  readonly signals: bigint;
  /** Doorbells that woke this side (interrupt eventfd). */
  readonly interrupts: bigint;
  /** Looks at the peer's kick word while polling. */
  readonly polls: bigint;
}

/** One open window (one endpoint of one link). */
export interface DataPlaneWindow {
  readonly side: WindowSide;
  /** The transport's view of this window. */
  transportView(): TransportView;
  peer(): PeerView;
  /** Publishes (creator) and serves a device; an attacher binds it once the creator published it. */
  addDevice(device: LinkDevice): void;
  removeDevice(devId: number): void;
  /** True when both sides have bound the device and its queues run. */
  deviceReady(devId: number): boolean;
  /** Why the device cannot be bound (its table entry was refused), '' when nothing is wrong. */
  deviceIssue(devId: number): string;
  /** Device reset handshake for one device; its queues start clean. */
  resetDevice(devId: number): void;
  /** Counters per queue of a bound device ([] otherwise). */
  counters(devId: number): QueueCounters[];
  /** The device's own counters (a byte pipe's messages, a backend's frames/requests/bytes), null if none. */
  deviceCounters(devId: number): DeviceCountersDto | null;
  /** A bound device backend's local surfaces (TAP, pty, NBD export), null for a byte pipe or before binding. */
  endpoints(devId: number): DeviceEndpointsDto | null;
  /** Features the driver accepted for the device (0n until negotiated). */
  negotiatedFeatures(devId: number): bigint;
  /** The console stream of a bound console backend, else null. */
  console(devId: number): ConsoleIo | null;
  /** Link-wide worker counters (busy-poll and sleep time). */
  workerTimes(): { readonly pollNs: bigint; readonly sleepNs: bigint };
  /** True when the window's path no longer names this mapping (removed or replaced by a new window). */
  replaced(): boolean;
  /** Why the data plane stopped for good because of the peer ('devtab_unstable'), null while healthy. */
  failure(): string | null;
  /** Stream transport only: start listening / dialing for the devices added so far. */
  startStream?(req: StreamStartRequest): void;
  /** Stream transport only: the connection, null before startStream. */
  stream?(): StreamConnection | null;
  /** Stops workers and unmaps; the creator removes the window file when `unlink`. */
  close(unlink: boolean): void;
}

/** A vhost-user device this agent serves (transport vhost_user): one device on one socket. */
export interface OpenVhostRequest {
  readonly link: string;
  readonly socketPath: string;
  /** The directory socketPath must lie in (server: the agent's socket directory; client: an allowed one). */
  readonly root: string;
  readonly server: boolean;
  readonly socketMode: number;
  readonly socketGid: number;
  readonly reconnectMs: number;
  readonly maxQueueSize: number;
  readonly allowUnsealed: boolean;
  /** net: queue pairs offered (transport vhost_user.queue_pairs); 0 or 1: one. */
  readonly queuePairs: number;
  /** The device as a link's device role describes it, or null for the counting sink. */
  readonly device: DeviceConfigDto | null;
}

export interface DataPlaneVhost {
  status(): VhostStatusDto;
  /** Counters per virtqueue. */
  counters(): QueueCounters[];
  deviceCounters(): DeviceCountersDto | null;
  endpoints(): { tap: string | null; netns: string | null };
  /** Ends the connection, stops the backend, removes a server socket. Idempotent. */
  close(): void;
}

export interface DataPlane {
  /** False when the native addon could not be loaded; open() then throws NATIVE_UNAVAILABLE. */
  readonly available: boolean;
  readonly version: string;
  /**
   * The automatic window size for these devices: the smallest window that holds them
   * and one more copy of the largest (room for a hot add), as the C layout computes it.
   * Throws TypeError/RangeError naming the property of a device config it refuses.
   */
  windowBytes(devices: readonly DeviceConfigDto[]): number;
  /**
   * Creates or attaches a window. The attacher throws EAGAIN/ENOENT while the creator
   * has not published it yet (the caller retries); the creator throws EEXIST when a
   * window file is already there (the caller then re-attaches with `reattach`, or
   * replaces the file when the engine cannot adopt it).
   */
  open(req: OpenWindowRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow;
  /**
   * Serves one device over vhost-user (binds or resolves the socket beneath req.root).
   * Absent where the data plane has none (test doubles): such links fail with a clear reason.
   */
  openVhost?(req: OpenVhostRequest): DataPlaneVhost;
  /**
   * Stream transport: a private window (only this process maps it) whose other side is the
   * bridge to the peer; peer() says "up" while a connection is ready (epoch: connections).
   */
  openStream?(req: StreamOpenRequest, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow;
}
