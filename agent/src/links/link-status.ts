/**
 * What the API and /metrics show of a link's devices, read from the data plane now:
 * DeviceStatus (ready, local endpoints, negotiated features), DeviceStats (per-queue
 * ring counters with the ring's size, and the device's own counters as one map), and
 * the typed device counters the metrics read. Nothing here changes state.
 */
import { DEVICE_KIND_ENUM, type DeviceKindName } from '../backends/device-backend';
import type { DeviceStats, DeviceStatus, QueueStats } from '../../../lib/proto/types';
import type { DeviceCountersDto } from '../native/native';
import type { DataPlaneWindow, QueueCounters } from './data-plane';
import type { DeviceRuntime } from './link-devices';

/** One device's own counters, typed, for the metrics. */
export interface DeviceCounterView {
  readonly device: string;
  readonly kind: DeviceKindName;
  readonly counters: DeviceCountersDto | null;
}

const NS = 1_000_000_000n;

function duration(ns: bigint): { seconds: bigint; nanos: number } {
  return { seconds: ns / NS, nanos: Number(ns % NS) };
}

/**
 * A device's counters as the GetStats counters map: the C counter names
 * (docs/devices.md), e.g. reads, bytes_written, tx_frames, dropped, tx_msgs.
 */
export function counterMap(c: DeviceCountersDto | null): Record<string, bigint> {
  if (c === null) return {};
  switch (c.kind) {
    case 'pipe':
      return { tx_msgs: c.txMsgs, rx_msgs: c.rxMsgs, bad_msgs: c.badMsgs };
    case 'blk':
      return {
        reads: c.reads,
        writes: c.writes,
        flushes: c.flushes,
        discards: c.discards,
        write_zeroes: c.writeZeroes,
        get_ids: c.getIds,
        bytes_read: c.bytesRead,
        bytes_written: c.bytesWritten,
        ioerr: c.ioErrors,
        unsupp: c.unsupported,
        bad_requests: c.badRequests,
        recovered: c.recovered,
      };
    case 'net':
      return {
        tx_frames: c.txFrames,
        rx_frames: c.rxFrames,
        tx_bytes: c.txBytes,
        rx_bytes: c.rxBytes,
        tx_dropped: c.txDropped,
        rx_dropped: c.rxDropped,
        bad_headers: c.badHeaders,
        gso_frames: c.gsoFrames,
        rx_buffers: c.rxBuffers,
      };
    case 'console':
      return {
        in_bytes: c.inBytes,
        out_bytes: c.outBytes,
        dropped: c.dropped,
        log_bytes: c.logBytes,
        rotations: c.rotations,
        zero_len: c.zeroLen,
      };
    default: {
      const never: never = c;
      return never;
    }
  }
}

/** The device's own counters now, or null (not on the window, or it keeps none). */
function countersOf(w: DataPlaneWindow | null, d: DeviceRuntime): DeviceCountersDto | null {
  return w && d.added ? w.deviceCounters(d.native.devId) : null;
}

export function deviceStatuses(
  devices: Iterable<DeviceRuntime>,
  w: DataPlaneWindow | null,
  windowPath: string,
): DeviceStatus[] {
  return [...devices].map((d) => {
    let negotiatedFeatures = 0n;
    try {
      negotiatedFeatures = w && d.added ? w.negotiatedFeatures(d.native.devId) : 0n;
    } catch {
      // the entry went away (removed, window closing): nothing negotiated to report
    }
    return {
      name: d.device.name,
      kind: DEVICE_KIND_ENUM[d.kind],
      ready: d.ready,
      endpoints: { ...(d.instance?.endpoints ?? {}), window: windowPath },
      conditions: [],
      negotiatedFeatures,
    };
  });
}

export function deviceStats(devices: Iterable<DeviceRuntime>, w: DataPlaneWindow | null): DeviceStats[] {
  return [...devices].map((d) => {
    const counters = w && d.added ? w.counters(d.native.devId) : [];
    const queues: QueueStats[] = d.native.queues.map((q, index) => {
      const c: QueueCounters | undefined = counters.find((x) => x.index === index);
      return {
        index,
        name: q.name,
        direction: q.direction,
        size: c?.size ?? 0,
        buffers: c?.buffers ?? 0n,
        bytes: c?.bytes ?? 0n,
        notificationsSent: c?.notificationsSent ?? 0n,
        notificationsSuppressed: c?.notificationsSuppressed ?? 0n,
        wakeups: c?.wakeups ?? 0n,
        pollTime: duration(c?.pollNs ?? 0n),
        sleepTime: duration(c?.sleepNs ?? 0n),
        errors: Object.fromEntries(c?.errors ?? []),
        broken: (c?.broken ?? '') !== '',
        brokenReason: c?.broken ?? '',
      };
    });
    return {
      device: d.device.name,
      kind: DEVICE_KIND_ENUM[d.kind],
      queues,
      counters: counterMap(countersOf(w, d)),
    };
  });
}

export function deviceCounters(devices: Iterable<DeviceRuntime>, w: DataPlaneWindow | null): DeviceCounterView[] {
  return [...devices].map((d) => ({ device: d.device.name, kind: d.kind, counters: countersOf(w, d) }));
}
