/**
 * Declaration-only contract of the native addon (native/build/Release/vop_native.node).
 * Same names and order as the export table in native/binding/addon.c; keep them in
 * step. Nothing here runs: load.ts returns the real module typed as this file.
 *
 * Conventions (bridge rules): handles are opaque branded types; DTOs crossing the
 * boundary set every property explicitly and use `T | null`, never `prop?: T`.
 * Native failures throw the class passed to setErrorClass() (see errors.ts) with a
 * stable `code` ("EPROTO", "ENOENT", ..., "UNKNOWN_<n>").
 */

/** One side of one shared window plus its link worker. */
export interface WindowHandle {
  readonly __brand: 'vop.WindowHandle';
}

/** Options for windowCreate (side 0: creator, device-table owner). */
export interface WindowCreateOptions {
  /** New file created 0600 with O_EXCL, or null for an anonymous memfd. */
  path: string | null;
  /** Window size in bytes: multiple of 4096, >= 64 KiB. */
  sizeBytes: number;
  /** Device-table slots, 1..32 (0 = 32). */
  maxDevices: number;
  /** Busy-poll time after the last work before sleeping on the doorbell. */
  spinNs: number;
  /** Never sleep (benchmark polling mode). */
  pollOnly: boolean;
  /** Device reset handshake timeout (0 = 1000 ms). */
  resetTimeoutMs: number;
}

/** Options for windowAttach (side 1). */
export interface WindowAttachOptions {
  path: string;
  spinNs: number;
  pollOnly: boolean;
  resetTimeoutMs: number;
}

/** Options for windowAttachFd (side 1, window passed as an fd, e.g. a memfd). */
export interface WindowAttachFdOptions {
  fd: number;
  spinNs: number;
  pollOnly: boolean;
  resetTimeoutMs: number;
}

/** Options for windowReattach: take side 0 or 1 of an existing window back after a restart. */
export interface WindowReattachOptions {
  path: string;
  side: number;
  spinNs: number;
  pollOnly: boolean;
  resetTimeoutMs: number;
}

export interface WindowInfoDto {
  side: number;
  epoch: number;
  /** enum vop_side_state: 0 absent, 1 up, 2 gone. */
  peerState: number;
  peerEpoch: number;
  fd: number;
  sizeBytes: bigint;
  peerHeartbeat: bigint;
  /** '' for a memfd window. */
  path: string;
  /** enum vop_link_fail: 0 healthy, else why this side's worker stopped for good. */
  failed: number;
}

/** A byte-pipe device entry (device type 0xfff0, two queues). */
export interface DeviceSpecDto {
  devId: number;
  /** Which side (0 creator / 1 attacher) implements the device. */
  deviceSide: number;
  queueSize: number;
  bufSize: number;
  /** Offered feature bits (VIRTIO_F_EVENT_IDX = 29, INDIRECT_DESC = 28). */
  features: bigint;
}

/** Byte-pipe role configuration (enum vop_pipe_mode: 0 off, 1 source, 2 sink, 3 echo). */
export interface PipeConfigDto {
  msgSize: number;
  bufSize: number;
  segs: number;
  txMode: number;
  rxMode: number;
  verify: boolean;
  features: bigint;
  count: bigint;
  maxInflight: number;
  batch: number;
}

/** A device backend of native/devices served by a link (native/include/vop/dev_host.h). */
export type HostedKind = 'blk-device' | 'blk-driver' | 'net-device' | 'net-driver' | 'con-device' | 'con-driver';

/** What a window must hold for a hosted device, as its creator would publish it. */
export interface HostedSpecDto {
  /** virtio device id. */
  deviceType: number;
  queueSizes: number[];
  /** Bytes of each queue's buffer pool (driver buffers, journal, indirect tables). */
  poolBytes: number[];
}

export interface ConsoleReadDto {
  data: Buffer;
  /** Bytes this reader lost because it fell more than 1 MiB behind. */
  lost: bigint;
}

/** Raw event from a worker thread (numbers; window.ts names them). */
export interface NativeEventDto {
  type: number;
  devId: number;
  queue: number;
  reason: number;
  epoch: number;
}

export declare function version(): string;
export declare function setErrorClass(ctor: new (message: string, code: string, errno: number) => Error): void;
export declare function reasonNames(): string[];
export declare function windowCreate(opts: WindowCreateOptions): WindowHandle;
export declare function windowAttach(opts: WindowAttachOptions): WindowHandle;
export declare function windowAttachFd(opts: WindowAttachFdOptions): WindowHandle;
/** Throws EBUSY while a live process (heartbeat moving) holds that side. */
export declare function windowReattach(opts: WindowReattachOptions): WindowHandle;
export declare function windowInfo(h: WindowHandle): WindowInfoDto;
export declare function windowClose(h: WindowHandle, unlink: boolean): void;
export declare function devicePublish(h: WindowHandle, spec: DeviceSpecDto): number;
export declare function deviceRemove(h: WindowHandle, devId: number): void;
/** role: 1 driver, 2 device. */
export declare function attachPipe(h: WindowHandle, devId: number, role: number, cfg: PipeConfigDto): void;
export declare function detach(h: WindowHandle, devId: number): void;
export declare function resetDevice(h: WindowHandle, devId: number): void;
export declare function start(h: WindowHandle): void;
export declare function stop(h: WindowHandle): void;
/** enum vop_vq_stat order; length VOP_VQS_COUNT. */
export declare function queueStats(h: WindowHandle, devId: number, queue: number): BigUint64Array;
/** [txMsgs, rxMsgs, badMsgs, runState]. */
export declare function pipeStats(h: WindowHandle, devId: number): BigUint64Array;
/** enum vop_link_stat order. */
export declare function linkStats(h: WindowHandle): BigUint64Array;
export declare function onEvent(h: WindowHandle, cb: ((ev: NativeEventDto) => void) | null): void;
/** desc: "ID:opt=value:flag..." (dev_host.h); throws EINVAL for a bad description. */
export declare function hostedSpec(kind: HostedKind, desc: string): HostedSpecDto;
/** Creator only: publishes a hosted device's table entry; returns its slot. */
export declare function hostedPublish(h: WindowHandle, kind: HostedKind, desc: string): number;
/** Opens the backend's local surfaces and serves it on this link; ENOENT until published. */
export declare function hostedAttach(h: WindowHandle, kind: HostedKind, desc: string): void;
/** "key value\n" lines: nbd<ID>-size, nbd<ID>-port, tap<ID>, pty<ID>. */
export declare function hostedEndpoints(h: WindowHandle, devId: number): string;
/** Backend counters as JSON text: {"blk1": {...}}. */
export declare function hostedStats(h: WindowHandle, devId: number): string;
/** enum vop_dev_run_state of a pipe or hosted device. */
export declare function devState(h: WindowHandle, devId: number): number;
/** Console stream of a hosted console: reader 0..3. */
export declare function hostedConsoleRead(
  h: WindowHandle,
  devId: number,
  reader: number,
  maxBytes: number,
): ConsoleReadDto;
export declare function hostedConsoleWrite(h: WindowHandle, devId: number, data: Uint8Array): number;
