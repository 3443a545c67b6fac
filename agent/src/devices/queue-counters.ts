/**
 * Decoding of a native ring counter block (enum vop_vq_stat in native/include/vop/vq.h)
 * read from a device backend's own rings, and the virtio queue index of each named
 * queue per device kind (VIRTIO 1.2 sections 5.1.2, 5.2.2, 5.3.2).
 */
import type { QueueCounters } from '../links/data-plane';
import type { DeviceKindName } from '../links/device-backend';

/** Offsets into the counter block; stable numbers from vq.h. */
const VQS = { buffers: 0, bytes: 1, notifySent: 2, notifySuppressed: 3, wakeups: 4, pollNs: 5, sleepNs: 6, broken: 8, errBase: 10 } as const;

/** Virtio queue index of each queue name, per device kind. */
export const VIRTIO_QUEUE_INDEX: Record<DeviceKindName, Readonly<Record<string, number>>> = {
  net: { rx: 0, tx: 1 },
  console: { receiveq: 0, transmitq: 1 },
  blk: { requestq: 0 },
};

export function decodeQueueCounters(index: number, c: BigUint64Array, reasons: readonly string[]): QueueCounters {
  const at = (i: number): bigint => c[i] ?? 0n;
  const errors = new Map<string, bigint>();
  reasons.forEach((name, r) => {
    const v = at(VQS.errBase + r);
    if (r > 0 && v > 0n) errors.set(name, v);
  });
  const broken = Number(at(VQS.broken));
  return {
    index,
    buffers: at(VQS.buffers),
    bytes: at(VQS.bytes),
    notificationsSent: at(VQS.notifySent),
    notificationsSuppressed: at(VQS.notifySuppressed),
    wakeups: at(VQS.wakeups),
    pollNs: at(VQS.pollNs),
    sleepNs: at(VQS.sleepNs),
    errors,
    broken: broken === 0 ? '' : (reasons[broken] ?? `unknown_${broken}`),
  };
}
