/**
 * The byte-pipe stand-in: a device the spec gives no local surface for travels as the
 * native raw byte-pipe device (two queues, 0 driver->device and 1 device->driver) with
 * its kind's queue names, so links, stats and restarts still work. Reports backend
 * "bytepipe". A link annotation can make it stream verified messages both ways (tests,
 * benchmarks).
 */
import type { Device } from '../../../lib/proto/types';
import type { QueueLayout } from '../links/data-plane';
import type { PipeDeviceDto } from '../native/native';
import { devIdOf, type DeviceBackend, type DeviceKindName } from './device-backend';

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
/** Message size of the stand-ins (<= STAND_IN_BUF_SIZE, >= 16 for verification). */
const STAND_IN_MSG_SIZE = 256;

/**
 * The byte-pipe config of device for role. 'idle' posts receive buffers and sends
 * nothing; 'stream' sends verified messages both ways continuously.
 */
export function bytePipeConfig(device: Device, role: 'device' | 'driver', traffic: 'idle' | 'stream'): PipeDeviceDto {
  const stream = traffic === 'stream';
  return {
    kind: 'pipe',
    devId: devIdOf(device.name),
    role,
    queueSize: device.queueSize,
    eventIdx: !device.disableEventIdx,
    bufSize: STAND_IN_BUF_SIZE,
    indirect: false,
    msgSize: STAND_IN_MSG_SIZE,
    segs: 1,
    verify: true,
    // Queue 0 carries driver->device, queue 1 device->driver.
    tx: role === 'driver' ? (stream ? 'source' : 'off') : 'sink',
    rx: role === 'driver' ? 'sink' : stream ? 'source' : 'off',
    count: 0n,
    maxInflight: 0,
    batch: 0,
  };
}

export function bytePipeStandIn(kind: DeviceKindName): DeviceBackend {
  return {
    kind,
    describe(device, role, link) {
      const [q0, q1] = STAND_IN_QUEUES[kind];
      const queues: QueueLayout[] = [
        { name: q0, direction: role === 'driver' ? 'transmit' : 'receive' },
        { name: q1, direction: role === 'device' ? 'transmit' : 'receive' },
      ];
      const traffic = link.annotations[BYTEPIPE_TRAFFIC_ANNOTATION] === 'stream' ? 'stream' : 'idle';
      return {
        devId: devIdOf(device.name),
        role,
        queues,
        config: bytePipeConfig(device, role, traffic),
        resumable: false,
      };
    },
    async start() {
      return { endpoints: { backend: 'bytepipe' }, console: null, stop: async () => undefined };
    },
  };
}

/** Stand-ins for every kind (what a registry holds before the real backends register). */
export function bytePipeStandIns(): DeviceBackend[] {
  return (['net', 'console', 'blk'] as const).map(bytePipeStandIn);
}
