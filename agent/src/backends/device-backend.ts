/**
 * The per-device backend seam. A backend turns one Device of a link spec into what
 * the native layer publishes and serves (a typed device config: a virtio device
 * backend, or the byte-pipe stand-in) and, once the device runs, into a view of its
 * local surface (a TAP, a pty, an NBD export...). The real console, blk and net
 * backends (virtio-backends.ts) register over the byte-pipe stand-ins (byte-pipe.ts),
 * which carry a device the spec gives no local surface for, so links, stats and
 * restarts still work.
 */
import { DeviceKind, Role, type Device } from '../../../lib/proto/types';
import { fnv1a32 } from '../../../lib/src/fnv';
import type { Logger } from '../../../lib/src/logger';
import type { DataPlaneWindow, LinkDevice, QueueLayout } from '../links/data-plane';

export type DeviceKindName = 'net' | 'console' | 'blk';

export function deviceKindName(d: Device): DeviceKindName | null {
  return d.kind?.$case ?? null;
}

export const DEVICE_KIND_ENUM: Record<DeviceKindName, DeviceKind> = {
  net: DeviceKind.DEVICE_KIND_NET,
  console: DeviceKind.DEVICE_KIND_CONSOLE,
  blk: DeviceKind.DEVICE_KIND_BLK,
};

/** Stable nonzero device id from the device name (FNV-1a), the same on both sides. */
export function devIdOf(name: string): number {
  const h = fnv1a32(name);
  return h === 0 ? 1 : h;
}

/** Console sessions attach here: output fan-out and one input path. */
export interface ConsolePort {
  /** Registers an output listener; returns the unsubscribe function. */
  onOutput(listener: (chunk: Uint8Array) => void): () => void;
  /** Console input; returns the bytes accepted (fewer, down to 0, while the console's buffer is full). */
  write(data: Uint8Array): number;
  /** Up to `max` most recent output bytes, for replay. */
  recent(max: number): Uint8Array;
  /** Local surface to report (pty path, socket) or ''. */
  readonly devicePath: string;
}

/** The link a device belongs to, as its backend needs it. */
export interface LinkIdentity {
  readonly name: string;
  readonly annotations: Readonly<Record<string, string>>;
  /**
   * The link's transport is stream: every chain travels as a message and must fit one chain slot
   * of the far side (docs/stream-protocol.md), so blk requests are cut to STREAM_BLK_SEG_BYTES.
   */
  readonly stream?: boolean;
}

export interface BackendContext {
  readonly link: string;
  readonly device: Device;
  readonly role: 'device' | 'driver';
  readonly devId: number;
  readonly window: DataPlaneWindow;
  readonly log: Logger;
}

/** A running backend of one device on one endpoint. */
export interface BackendInstance {
  /** Local surfaces reported in DeviceStatus.endpoints. */
  readonly endpoints: Readonly<Record<string, string>>;
  /** Present on console devices whose backend supports attach. */
  readonly console: ConsolePort | null;
  stop(): Promise<void>;
}

export interface DeviceBackend {
  readonly kind: DeviceKindName;
  /**
   * Native description of the device for this endpoint's virtio role; both endpoints of a
   * link derive the same table shape from the same spec. Does not throw: a device it cannot
   * describe fails in start() with the reason.
   */
  describe(device: Device, role: 'device' | 'driver', link: LinkIdentity): LinkDevice;
  start(ctx: BackendContext): Promise<BackendInstance>;
  /**
   * The node operator's policy for this device in this role (e.g. an NBD export over TCP
   * without TLS): throws a ServerError (FAILED_PRECONDITION naming field...) to refuse the
   * link before anything is stored. Absent: everything the spec validation passed is fine.
   */
  admit?(device: Device, role: 'device' | 'driver', field: string): void;
}

export function roleName(r: Role): 'device' | 'driver' {
  return r === Role.ROLE_DEVICE ? 'device' : 'driver';
}

/** Queue names per kind in virtio queue order, with which virtio role produces into each. */
const QUEUES: Record<DeviceKindName, readonly { name: string; producer: 'device' | 'driver' }[]> = {
  net: [
    { name: 'rx', producer: 'device' },
    { name: 'tx', producer: 'driver' },
  ],
  console: [
    { name: 'receiveq', producer: 'device' },
    { name: 'transmitq', producer: 'driver' },
  ],
  blk: [{ name: 'requestq', producer: 'driver' }],
};

/** The virtio queues of a device kind as seen from role (VIRTIO 1.2 sections 5.1.2, 5.2.2, 5.3.2). */
export function queueLayout(kind: DeviceKindName, role: 'device' | 'driver'): QueueLayout[] {
  return QUEUES[kind].map((q) => ({ name: q.name, direction: q.producer === role ? 'transmit' : 'receive' }));
}

/** Backends by device kind; later registrations replace the stand-ins. */
export class BackendRegistry {
  private readonly byKind = new Map<DeviceKindName, DeviceBackend>();

  constructor(backends: readonly DeviceBackend[] = []) {
    for (const b of backends) this.register(b);
  }

  register(b: DeviceBackend): void {
    this.byKind.set(b.kind, b);
  }

  get(kind: DeviceKindName): DeviceBackend | undefined {
    return this.byKind.get(kind);
  }
}
