/**
 * Ring counters of a device backend's own queues, decoded by the same code as the
 * link window's (decodeQueueStats, toQueueCounters), and the virtio queue index of
 * each named queue per device kind (VIRTIO 1.2 sections 5.1.2, 5.2.2, 5.3.2).
 */
import type { QueueCounters } from '../links/data-plane';
import type { DeviceKindName } from '../links/device-backend';
import { toQueueCounters } from '../links/native-data-plane';
import { decodeQueueStats } from '../native/window';

/** Virtio queue index of each queue name, per device kind. */
export const VIRTIO_QUEUE_INDEX: Record<DeviceKindName, Readonly<Record<string, number>>> = {
  net: { rx: 0, tx: 1 },
  console: { receiveq: 0, transmitq: 1 },
  blk: { requestq: 0 },
};

export function decodeQueueCounters(index: number, c: BigUint64Array, reasons: readonly string[]): QueueCounters {
  return toQueueCounters(index, decodeQueueStats(c, reasons));
}
