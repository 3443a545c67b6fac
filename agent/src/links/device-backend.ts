/**
 * The per-device backend seam. A backend turns one Device of a link spec into what
 * the native layer publishes (type, queues, or a hosted device backend) and, once the
 * device runs, into a view of its local surface (a TAP, a pty, an NBD export...). The
 * real console, blk and net backends (agent/src/devices/backends.ts) register over the
 * byte-pipe stand-ins below, which carry a device the spec gives no local surface for
 * over the native raw byte-pipe device, so links, stats and restarts still work.
 */
import { DeviceKind, Role, type Device } from '../../../lib/gen/vop/types/v1/types';
import type { Logger } from '../../../lib/src/logger';
import type { DataPlaneWindow, NativeDeviceSpec, QueueLayout } from './data-plane';

/** virtio device ids (VIRTIO 1.2 section 5) and the native test device. */
export const VIRTIO_ID = { net: 1, blk: 2, console: 3, bytePipe: 0xfff0 } as const;

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
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
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
  /** Device-specific counters (GetStats counters map). */
  counters(): Record<string, bigint>;
  stop(): Promise<void>;
}

export interface DeviceBackend {
  readonly kind: DeviceKindName;
  /**
   * Native description of the device for this endpoint's virtio role; both endpoints of a
   * link derive the same table shape from the same spec. Does not throw: a device it cannot
   * describe fails in start() with the reason.
   */
  nativeSpec(device: Device, role: 'device' | 'driver', link: LinkIdentity): NativeDeviceSpec;
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

const DEFAULT_QUEUE_SIZE = 256;

/** Queue names per kind, with which virtio role produces into each. */
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

export function queueLayout(kind: DeviceKindName, device: Device, role: 'device' | 'driver'): QueueLayout[] {
  const size = device.queueSize === 0 ? DEFAULT_QUEUE_SIZE : device.queueSize;
  return QUEUES[kind].map((q) => ({ name: q.name, direction: q.producer === role ? 'transmit' : 'receive', size }));
}

/** Link annotation that sets the byte-pipe stand-ins' traffic ('idle' default, or 'stream'). */
export const BYTEPIPE_TRAFFIC_ANNOTATION = 'vop.dev/bytepipe-traffic';

/** Stand-in queue names in byte-pipe order: queue 0 carries driver->device, queue 1 device->driver. */
const STAND_IN_QUEUES: Record<DeviceKindName, readonly [string, string]> = {
  net: ['tx', 'rx'],
  console: ['transmitq', 'receiveq'],
  blk: ['requestq', 'completionq'],
};

/** Bytes per stand-in buffer: small, so 64 idle links stay cheap in memory. */
export const STAND_IN_BUF_SIZE = 512;

/**
 * Stand-in for a device kind whose real backend has not landed: the device travels as
 * the native byte-pipe device with that kind's queue names. Reports backend "bytepipe".
 */
export function bytePipeStandIn(kind: DeviceKindName): DeviceBackend {
  return {
    kind,
    nativeSpec(device, role, link) {
      const size = device.queueSize === 0 ? DEFAULT_QUEUE_SIZE : device.queueSize;
      const [q0, q1] = STAND_IN_QUEUES[kind];
      const queues: QueueLayout[] = [
        { name: q0, direction: role === 'driver' ? 'transmit' : 'receive', size },
        { name: q1, direction: role === 'device' ? 'transmit' : 'receive', size },
      ];
      const traffic = link.annotations[BYTEPIPE_TRAFFIC_ANNOTATION] === 'stream' ? 'stream' : 'idle';
      return {
        devId: devIdOf(device.name),
        deviceType: VIRTIO_ID.bytePipe,
        role,
        queues,
        eventIdx: !device.disableEventIdx,
        bufSize: STAND_IN_BUF_SIZE,
        traffic,
        hosted: null,
      };
    },
    async start() {
      return { endpoints: { backend: 'bytepipe' }, console: null, counters: () => ({}), stop: async () => undefined };
    },
  };
}

/** Backends by device kind; later registrations replace the stand-ins. */
export class BackendRegistry {
  private readonly byKind = new Map<DeviceKindName, DeviceBackend>();

  constructor(backends: readonly DeviceBackend[] = (['net', 'console', 'blk'] as const).map(bytePipeStandIn)) {
    for (const b of backends) this.register(b);
  }

  register(b: DeviceBackend): void {
    this.byKind.set(b.kind, b);
  }

  get(kind: DeviceKindName): DeviceBackend | undefined {
    return this.byKind.get(kind);
  }

  kinds(): DeviceKindName[] {
    return [...this.byKind.keys()];
  }
}
