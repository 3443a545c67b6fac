/**
 * Declaration of the device-host exports of the native addon
 * (native/binding/devices.c, registered in native/binding/addon.c after the
 * window/link exports). Kept beside the device façade rather than in
 * agent/src/native/native.ts so the two bindings evolve independently; the
 * same conventions apply (opaque branded handles, DTOs without optional
 * properties, NativeError with a stable code on failure).
 */
import { loadNative } from '../native/load';
import type { ConsoleReadDto, HostedKind } from '../native/native';

export type { ConsoleReadDto } from '../native/native';

/** One side of one window with its device backends. */
export interface DevHostHandle {
  readonly __brand: 'vop.DevHostHandle';
}

export type DevKind = HostedKind;

export interface DevHostDeviceDto {
  kind: DevKind;
  /** "ID:opt=value:flag..." as in native/include/vop/dev_host.h. */
  desc: string;
}

export interface DevHostOpenDto {
  path: string;
  /** 0n attaches (side 1); otherwise creates the window (side 0) with this size. */
  createBytes: bigint;
  /** Busy-poll after the last work before sleeping (0n = 20 us). */
  spinNs: bigint;
  devices: DevHostDeviceDto[];
}

export interface DeviceNative {
  devHostOpen(opts: DevHostOpenDto): Promise<DevHostHandle>;
  /** "key value\n" lines: nbd<ID>-size, nbd<ID>-port, tap<ID>, pty<ID>. */
  devHostEndpoints(h: DevHostHandle): string;
  /** Counters of every device as one JSON object. */
  devHostStats(h: DevHostHandle): string;
  /** Ring counter block (vq.h enum vop_vq_stat order) of a device's queue; null until the device runs. */
  devHostQueueStats(h: DevHostHandle, devId: number, queue: number): BigUint64Array | null;
  /** Stable short names of enum vop_vq_reason, by number. */
  reasonNames(): string[];
  devConsoleRead(h: DevHostHandle, devId: number, reader: number, maxBytes: number): ConsoleReadDto;
  devConsoleWrite(h: DevHostHandle, devId: number, data: Uint8Array): number;
  /** Idempotent. */
  devHostClose(h: DevHostHandle): void;
}

/** The addon's device exports; throws NativeError NATIVE_UNAVAILABLE like loadNative(). */
export function loadDeviceNative(): DeviceNative {
  return loadNative() as unknown as DeviceNative;
}
