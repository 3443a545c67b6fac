/**
 * Declaration-only contract of the native addon (native/build/Release/vop_native.node).
 * Same names and order as the export table in native/binding/addon.c; keep them in
 * step. Nothing here runs: load.ts returns the real module typed as this file, and
 * agent/src/native/addon.ts is the one façade over it.
 *
 * Conventions (bridge rules): handles are opaque branded types; DTOs crossing the
 * boundary set every property explicitly and use `T | null`, never `prop?: T`; C
 * converts each DTO straight into its config struct (native/binding/device_config.c)
 * and names the property it refuses (TypeError / RangeError). Enum values cross as the
 * strings below, produced and parsed by C: TypeScript mirrors no C table. Native
 * failures throw the class passed to setErrorClass() (errors.ts) with a stable `code`
 * ("EPROTO", "ENOENT", ..., "UNKNOWN_<n>").
 */

/** One side of one shared window plus its link worker and the devices it serves. */
export interface LinkHandle {
  readonly __brand: 'vop.LinkHandle';
}

/** Limits and tables of the C layer (vop/layout.h, vop/dev_backend.h, vop/dev_blk.h). */
export interface ConstantsDto {
  queueMaxSize: number;
  /** Entries per virtqueue when a device's queueSize is 0. */
  defaultQueueSize: number;
  /** Device-table entries of a window. */
  maxDevices: number;
  maxQueues: number;
  /** Bytes of a host path, NUL included. */
  pathMax: number;
  netnsNameMax: number;
  windowSizeMax: number;
  /** Upper bounds of the blk latency buckets (the last bucket, +Inf, has none). */
  blkLatencyBoundsNs: BigUint64Array;
}

/** Worker tuning shared by every way of opening a window. */
export interface WorkerOptionsDto {
  /** Busy-poll time after the last work before sleeping on the doorbell. */
  spinNs: number;
  /** Never sleep (benchmark polling mode). */
  pollOnly: boolean;
  /** Device reset handshake timeout (0 = 1000 ms). */
  resetTimeoutMs: number;
}

/**
 * A pci-bar window (vop/xport_pci.h; docs/transports.md): the memory of an ivshmem server
 * (mode 'ivshmem': this side holds it, or maps it as one more peer) or a BAR (mode 'bar': a
 * vfio-pci device's region `bar`, or a file such as sysfs resourceN).
 */
export interface PciWindowDto {
  mode: 'ivshmem' | 'bar';
  /** 'interrupt': an ivshmem eventfd, or MSI-X through vfio; 'poll': look at the peer's kick word. */
  doorbell: 'interrupt' | 'poll';
  /** The ivshmem id this side rings, -1: the one other peer of the server (or none: cannot ring). */
  peerId: number;
  /** Window offset inside the memory or BAR, and its size (0: the rest); multiples of 4096. */
  offset: number;
  size: number;
  vector: number;
  /** The server's --vectors; 0: vector + 1. */
  vectors: number;
  /** Polled: longest nap; 0: 20 ms. */
  pollMaxUs: number;
  /** Creator: lay out a new window over one that validates (else EEXIST). */
  replace: boolean;
  /** mode 'ivshmem': the server's socket. */
  socket?: string;
  /** mode 'bar': exactly one of barPath and vfioBdf. */
  barPath?: string | null;
  vfioBdf?: string | null;
  /** The doorbell register file (sysfs resource0); null: none (vfio: BAR0). */
  regsPath?: string | null;
  /** The allowed directories (hostPaths.barDirs) barPath and regsPath are opened beneath (RESOLVE_BENEATH). */
  barRoot?: string | null;
  regsRoot?: string | null;
  /** vfio: the window's region index. */
  bar?: number;
  /** barPath is a write-combining mapping. */
  wc?: boolean;
}

/** windowCreate (side 0: creator, device-table owner). */
export interface WindowCreateDto extends WorkerOptionsDto {
  /** A pci-bar window instead of the shm file at path (null or absent: shm). */
  pci?: PciWindowDto | null;
  /** New file created 0600 with O_EXCL, or null for an anonymous memfd. */
  path: string | null;
  /** Window size in bytes: multiple of 4096, >= 64 KiB. */
  sizeBytes: number;
  /** Device-table slots, 1..32 (0 = 32). */
  maxDevices: number;
}

/** windowAttach (side 1). */
export interface WindowAttachDto extends WorkerOptionsDto {
  path: string;
  pci?: PciWindowDto | null;
}

/** windowReattach: take side 0 or 1 of an existing window back after a restart. */
export interface WindowReattachDto extends WorkerOptionsDto {
  path: string;
  side: number;
  pci?: PciWindowDto | null;
}

export type WindowSide = 'creator' | 'attacher';
export type PeerState = 'absent' | 'up' | 'gone';

export interface WindowInfoDto {
  side: WindowSide;
  epoch: number;
  /** The peer's side block: 'gone' also for a state word we do not know. */
  peerState: PeerState;
  peerEpoch: number;
  fd: number;
  sizeBytes: bigint;
  peerHeartbeat: bigint;
  /** '' for a memfd window. */
  path: string;
  /** Why this side's worker stopped for good ('devtab_unstable'), null while healthy. */
  failed: string | null;
  /** The transport's name: 'shm' or 'pci-bar'. */
  transport: string;
  /** How the window is mapped: 'wb', 'uc' (a BAR), 'wc' (a write-combining BAR). */
  mapping: 'wb' | 'uc' | 'wc';
  /** pci-bar: our ivshmem id and the peer's we ring, -1 when unknown. */
  ownId: number;
  peerId: number;
  /** pci-bar: doorbells sent, interrupts taken (eventfd wake-ups), looks at the peer's kick word while polling. */
  signals: bigint;
  interrupts: bigint;
  polls: bigint;
  /** The create nonce of the window now mapped (0 when none is laid out): a new one means replaced. */
  createNonce: bigint;
}

/** Per link worker (one worker serves every queue of a side). */
export interface LinkStatsDto {
  wakeups: bigint;
  sleeps: bigint;
  pollNs: bigint;
  sleepNs: bigint;
  doorbells: bigint;
  /** doorbells that needed a signal (wake syscall, eventfd write, doorbell register) */
  signals: bigint;
  heartbeats: bigint;
  peerResets: bigint;
  peerGone: bigint;
}

/** A worker event (link.h enum vop_event_type), named by C. */
export type LinkEventDto =
  | { type: 'queue-broken'; devId: number; queue: number; reason: string }
  | { type: 'peer-reset' | 'peer-gone' | 'peer-up'; epoch: number }
  | { type: 'device-removed' | 'reset-done' | 'reset-timeout' | 'needs-reset'; devId: number }
  /** A device backend failed (its surface broke, its queues could not start); errno name. */
  | { type: 'backend-failed'; devId: number; error: string }
  /** This side stopped for good because of its peer; the worker no longer runs. */
  | { type: 'link-failed'; reason: string };

export type Role = 'driver' | 'device';
/** What a byte pipe does with one of its queues (link.h enum vop_pipe_mode). */
export type PipeMode = 'off' | 'source' | 'sink' | 'echo';

/** What every device config carries: the device-table shape both sides agree on. */
interface DeviceBaseDto {
  /** Nonzero, the same on both sides. */
  devId: number;
  /** The role this side plays (the device role implements it). */
  role: Role;
  /** Entries per virtqueue, a power of two; 0 = defaultQueueSize. blk: >= 4 (4 per request). */
  queueSize: number;
  /** Offer VIRTIO_F_EVENT_IDX (notification suppression). */
  eventIdx: boolean;
}

/** The raw byte-pipe test device (two queues: 0 driver->device, 1 device->driver). */
export interface PipeDeviceDto extends DeviceBaseDto {
  kind: 'pipe';
  /** Table: bytes per driver buffer in the pools. */
  bufSize: number;
  /** Offer (table) and want (driver) VIRTIO_F_INDIRECT_DESC. */
  indirect: boolean;
  msgSize: number;
  /** Driver: descriptors per buffer, 1..16. */
  segs: number;
  tx: PipeMode;
  rx: PipeMode;
  /** Stamp and check sequence numbers and checksums. */
  verify: boolean;
  /** Source: stop after this many messages; 0n = unlimited. */
  count: bigint;
  /** Driver source+sink: bound on unanswered messages; 0 = none. */
  maxInflight: number;
  /** Chains per publish; 0 = half the queue size. */
  batch: number;
}

/** virtio-blk (struct vop_blk_device_config / vop_nbd_config). */
export interface BlkDeviceDto extends DeviceBaseDto {
  kind: 'blk';
  /** Table: data bytes per request slot, a multiple of 4096; 0 = 512 KiB. */
  segBytes: number;
  /** Table: offer VIRTIO_BLK_F_RO (and the device refuses writes). */
  readOnly: boolean;
  /** Device role: the backing file. */
  file: BlkFileDto | null;
  /** Driver role: the NBD export. */
  nbd: NbdExportDto | null;
}

export interface BlkFileDto {
  /** Regular file, or a block device with blockDevice. */
  path: string;
  /** Directory path must lie in (null: its own directory); unused with blockDevice. */
  root: string | null;
  blockDevice: boolean;
  /** O_DIRECT. */
  direct: boolean;
  /** I/O threads 1..32; 0 = 4. */
  ioThreads: number;
  /** GET_ID answer (<= 20 bytes); null = "vop-<devId>". */
  serial: string | null;
}

export interface NbdExportDto {
  unixPath: string | null;
  /** Directory unixPath must lie in (null: its own directory). */
  unixRoot: string | null;
  /** IPv4 or IPv6 literal; null = 127.0.0.1. */
  tcpHost: string | null;
  /** 0 = no TCP, -1 = any free port. */
  tcpPort: number;
  /** null = "vop". */
  exportName: string | null;
  tls: NbdTlsDto | null;
  /** TCP without TLS (C allows it on loopback only). */
  tcpPlaintext: boolean;
}

export interface NbdTlsDto {
  cert: string;
  key: string;
  /** Client certificates required and verified against it; null = none asked. */
  ca: string | null;
  /** Client names allowed (CN, else first DNS SAN); ['*'] = any, [] = none. */
  clients: string[];
}

/** virtio-net (struct vop_net_config). */
export interface NetDeviceDto extends DeviceBaseDto {
  kind: 'net';
  /** Table: MTU in config space; 0 = 1500. */
  mtu: number;
  /** Table: "02:00:00:00:00:01" (unicast), '' = derived from devId. */
  mac: string;
  /** Table: offer checksum and TSO/ECN offloads both ways (and set them on the TAPs). */
  offloads: boolean;
  tap: TapDto | null;
  datagram: DatagramDto | null;
  /** Driver: bytes per receive buffer (64..65554); 0 = one buffer per frame. */
  rxBufBytes: number;
}

export interface TapDto {
  /** Interface name (<= 15 bytes); '' = the kernel picks vopN. */
  name: string;
  /** Network namespace (a name under /run/netns) the TAP is moved into; null = the agent's. */
  netns: string | null;
}

export interface DatagramDto {
  local: string;
  peer: string;
  /** Directory both paths must lie in (null: each one's own). */
  root: string | null;
}

/** virtio-console (struct vop_console_config). */
export interface ConsoleDeviceDto extends DeviceBaseDto {
  kind: 'console';
  pty: boolean;
  ptyLink: string | null;
  ptyRoot: string | null;
  /** Device role: the rotated output log. */
  log: ConsoleLogDto | null;
  /** Device role: a Unix socket for attach. */
  unixPath: string | null;
  unixRoot: string | null;
}

export interface ConsoleLogDto {
  path: string;
  root: string | null;
  /** Rotate when the log would pass this; 0 = 1 MiB. */
  maxBytes: number;
  /** Rotated files kept, 0..100 (0 = 1). */
  files: number;
}

export type DeviceConfigDto = PipeDeviceDto | BlkDeviceDto | NetDeviceDto | ConsoleDeviceDto;

/** One device's share of a window (alignment included). */
export interface DeviceFootprintDto {
  /** Descriptor tables, driver and device areas of its queues (ring area). */
  ringBytes: number;
  /** Its queues' buffer pools (data area). */
  poolBytes: number;
}

/** The smallest window that holds a set of devices, as a creator lays it out. */
export interface WindowLayoutDto {
  /** A multiple of 4096, at least 64 KiB. */
  sizeBytes: number;
  /** Header page and device table. */
  tableBytes: number;
  /** Ring area: max(64 KiB, sizeBytes / 16). */
  ringBytes: number;
  /** Data area: the rest. */
  dataBytes: number;
  ringUsedBytes: number;
  dataUsedBytes: number;
  /** In the order of the devices given. */
  devices: DeviceFootprintDto[];
}

export type DeviceRunState = 'resetting' | 'wait-driver' | 'running' | 'broken' | 'removed' | 'unknown';

/** A device's table entry as this side validated it. */
export interface DeviceInfoDto {
  deviceType: number;
  /** Entries of each virtqueue, in queue order: what the rings hold. */
  queueSizes: number[];
  featuresOffered: bigint;
  /** What the driver accepted (0n until it did): the negotiated features. */
  featuresAccepted: bigint;
}

/** One queue's ring counters (vq.h), named. */
export interface QueueStatsDto {
  buffers: bigint;
  bytes: bigint;
  notificationsSent: bigint;
  notificationsSuppressed: bigint;
  wakeups: bigint;
  pollNs: bigint;
  sleepNs: bigint;
  errors: bigint;
  resets: bigint;
  /** Reason name while broken, null when healthy. */
  broken: string | null;
  /** Violations by stable reason name (nonzero ones only). */
  errorsByReason: Record<string, bigint>;
}

/** Latency of one blk request kind: counts per bucket (not cumulative; last = +Inf). */
export interface BlkLatencyDto {
  op: string;
  bucketCounts: BigUint64Array;
  sumNs: bigint;
}

export type DeviceCountersDto =
  | { kind: 'pipe'; txMsgs: bigint; rxMsgs: bigint; badMsgs: bigint }
  | {
      kind: 'blk';
      reads: bigint;
      writes: bigint;
      flushes: bigint;
      discards: bigint;
      writeZeroes: bigint;
      getIds: bigint;
      bytesRead: bigint;
      bytesWritten: bigint;
      ioErrors: bigint;
      unsupported: bigint;
      badRequests: bigint;
      recovered: bigint;
      latency: BlkLatencyDto[];
    }
  | {
      kind: 'net';
      txFrames: bigint;
      rxFrames: bigint;
      txBytes: bigint;
      rxBytes: bigint;
      txDropped: bigint;
      rxDropped: bigint;
      badHeaders: bigint;
      gsoFrames: bigint;
      rxBuffers: bigint;
    }
  | {
      kind: 'console';
      inBytes: bigint;
      outBytes: bigint;
      dropped: bigint;
      logBytes: bigint;
      rotations: bigint;
      zeroLen: bigint;
    };

/** A device backend's local surfaces; null where one does not apply. */
export interface DeviceEndpointsDto {
  tap: string | null;
  /** The namespace the TAP lives in, null for the agent's own. */
  netns: string | null;
  pty: string | null;
  nbdSocket: string | null;
  nbdPort: number | null;
  /** The export's size (0n until the device runs). */
  nbdSizeBytes: bigint | null;
}

export interface ConsoleReadDto {
  data: Buffer;
  /** Bytes this reader lost because it fell more than 1 MiB behind. */
  lost: bigint;
}

/** An open vhost-user device (vhostOpen); closed by vhostClose or when collected. */
export interface VhostHandle {
  readonly __brand: 'vop.VhostHandle';
}

/** vhostOpen's socket and limits (vop/vhost_user.h struct vop_vhu_config). */
export interface VhostOpenDto {
  /** The socket, absolute. */
  socketPath: string;
  /** The directory socketPath must lie in (bound / resolved beneath it); null: its own directory. */
  root: string | null;
  /** We listen (the front-end connects) or connect to the front-end's socket. */
  server: boolean;
  /** Server: mode of the socket file (0: 0600). */
  socketMode: number;
  /** Server: group of the socket file (-1: ours). */
  socketGid: number;
  /** Client: retry period while the front-end is away (0: 1000 ms). */
  reconnectMs: number;
  /** Largest ring accepted (0: 32768). */
  maxQueueSize: number;
  /** Bound on the guest memory mapped (0n: 64 GiB). */
  maxMemBytes: bigint;
  /** Accept memory the front-end could shrink (DPDK without hugepages): off unless configured. */
  allowUnsealed: boolean;
  spinNs: bigint;
  /** net and sink: queue pairs offered (VIRTIO_NET_F_MQ when > 1), each a backend on the same TAP; 0: 1, at most 4. */
  queuePairs: number;
}

export interface VhostStatusDto {
  connected: boolean;
  running: boolean;
  failed: boolean;
  features: bigint;
  protocolFeatures: bigint;
  connections: bigint;
  disconnects: bigint;
  protocolErrors: bigint;
  messages: bigint;
  starts: bigint;
  memBytes: bigint;
  regions: number;
  /** Request of the last protocol error ("SET_MEM_TABLE"), null if none. */
  lastRequest: string | null;
  lastError: number;
  /** The rule it broke, null if none. */
  lastWhy: string | null;
  /** The device's virtqueues (all queue pairs: rx0, tx0, rx1, tx1, ...). */
  queues: number;
}

export declare function version(): string;
export declare function setErrorClass(ctor: new (message: string, code: string, errno: number) => Error): void;
export declare function constants(): ConstantsDto;
export declare function windowCreate(opts: WindowCreateDto): LinkHandle;
export declare function windowAttach(opts: WindowAttachDto): LinkHandle;
/** Throws EBUSY while a live process (heartbeat moving) holds that side. */
export declare function windowReattach(opts: WindowReattachDto): LinkHandle;
export declare function windowInfo(h: LinkHandle): WindowInfoDto;
export declare function windowClose(h: LinkHandle, unlink: boolean): void;
/** The smallest window a creator lays out for these devices, its areas and each device's footprint (vop/window_size.h). */
export declare function windowLayout(devices: DeviceConfigDto[], maxDevices: number): WindowLayoutDto;
export declare function start(h: LinkHandle): void;
export declare function stop(h: LinkHandle): void;
export declare function onEvent(h: LinkHandle, cb: ((ev: LinkEventDto) => void) | null): void;
export declare function linkStats(h: LinkHandle): LinkStatsDto;
/** Creator only: publishes the device's table entry; returns its slot. */
export declare function devicePublish(h: LinkHandle, device: DeviceConfigDto): number;
/** Creator only: tombstones the entry (hot unplug). */
export declare function deviceRemove(h: LinkHandle, devId: number): void;
/** Serves the device on this link (a backend opens its local surfaces); ENOENT until published. */
export declare function deviceAttach(h: LinkHandle, device: DeviceConfigDto): void;
export declare function deviceDetach(h: LinkHandle, devId: number): void;
/** Driver role: the reset handshake. */
export declare function deviceReset(h: LinkHandle, devId: number): void;
export declare function deviceState(h: LinkHandle, devId: number): DeviceRunState;
export declare function deviceInfo(h: LinkHandle, devId: number): DeviceInfoDto;
export declare function queueStats(h: LinkHandle, devId: number, queue: number): QueueStatsDto;
/** A pipe's or a backend's own counters; null for a backend that keeps none (blk driver). */
export declare function deviceCounters(h: LinkHandle, devId: number): DeviceCountersDto | null;
/** Device backends only (ENOENT for a pipe). */
export declare function deviceEndpoints(h: LinkHandle, devId: number): DeviceEndpointsDto;
/** Console stream of a console backend: reader 0..3. */
export declare function consoleRead(h: LinkHandle, devId: number, reader: number, maxBytes: number): ConsoleReadDto;
/** streamOpen: a private window (memfd) for a stream link; side 1 is the bridge's proxy (vop/stream.h). */
export interface StreamOpenDto extends WorkerOptionsDto {
  devices: DeviceConfigDto[];
  /** This side serves the devices (listens); its pools hold whole chains of maxChain bytes. */
  deviceSide: boolean;
  /** Bytes one chain may carry; 0 = 69632. */
  maxChain: number;
}
export interface StreamStartDto {
  /** "tcp:IPV4:PORT", "unix:PATH" or "vsock:CID:PORT". */
  address: string;
  /** unix: the directory PATH must lie beneath (hostPaths, resolved beneath it in C), or null. */
  unixRoot: string | null;
  deviceSide: boolean;
  /** The link secret (HMAC-SHA256 key), or null with allowPlain. */
  secret: Uint8Array | null;
  allowPlain: boolean;
  /** 0 = defaults (5000 / 15000). */
  handshakeMs: number;
  idleMs: number;
  /** Devices published so far. */
  devIds: number[];
  /** TLS 1.3 with mutual certificates (files read at each handshake), or null. */
  tls?: { ca: string; cert: string; key: string; peerId: string } | null;
}
export type StreamStateName = 'listening' | 'dialing' | 'handshake' | 'ready' | 'stopped';
export interface StreamStatusDto {
  state: StreamStateName;
  peer: string;
  rttNs: bigint;
  bytesSent: bigint;
  bytesReceived: bigint;
  connections: bigint;
  disconnects: bigint;
  lastError: string;
  security: string;
}
export declare function consoleWrite(h: LinkHandle, devId: number, data: Uint8Array): number;
/** A vhost-user device: a net or blk device config in the device role, or null for the counting sink. */
export declare function vhostOpen(opts: VhostOpenDto, device: DeviceConfigDto | null): VhostHandle;
export declare function vhostClose(h: VhostHandle): void;
export declare function vhostStatus(h: VhostHandle): VhostStatusDto;
export declare function vhostQueueStats(h: VhostHandle, queue: number): QueueStatsDto;
export declare function vhostCounters(h: VhostHandle): DeviceCountersDto | null;
export declare function vhostEndpoints(h: VhostHandle): { tap: string | null; netns: string | null };
export declare function streamOpen(opts: StreamOpenDto): LinkHandle;
/** Device side: binds and listens before it returns (EADDRINUSE, EACCES); driver side: dials in the background. */
export declare function streamStart(h: LinkHandle, opts: StreamStartDto): void;
/** null until streamStart. */
export declare function streamStatus(h: LinkHandle): StreamStatusDto | null;
