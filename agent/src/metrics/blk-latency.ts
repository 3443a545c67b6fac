/**
 * vop_blk_request_duration_seconds: the virtio-blk devices' pop-to-push latency
 * histograms, kept in C (native/include/vop/dev_blk.h, vop_blk_lat_bounds_ns) and
 * exposed at scrape time as a classic Prometheus histogram. The native counters
 * arrive as "<dev>_lat_<op>_b<k>" (bucket k, not cumulative) and
 * "<dev>_lat_<op>_sum_ns"; buckets absent from the map are zero.
 */
import type { Registry } from 'prom-client';

import type { DeviceStats } from '../../../lib/proto/types';

/** Upper bounds in seconds, the same as vop_blk_lat_bounds_ns in C. */
export const BLK_LATENCY_BOUNDS_S = [1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1] as const;

const NAME = 'vop_blk_request_duration_seconds';
const HELP = 'Time from popping a blk request to pushing its status.';

interface Series {
  readonly labels: { link: string; device: string; op: string };
  readonly buckets: bigint[]; // BLK_LATENCY_BOUNDS_S.length + 1 (+Inf), not cumulative
  sumNs: bigint;
}

/** Groups one device's counters into per-op histograms. */
export function blkLatencySeries(link: string, d: Pick<DeviceStats, 'device' | 'counters'>): Series[] {
  const byOp = new Map<string, Series>();
  const get = (op: string): Series => {
    let s = byOp.get(op);
    if (!s)
      byOp.set(
        op,
        (s = {
          labels: { link, device: d.device, op },
          buckets: new Array<bigint>(BLK_LATENCY_BOUNDS_S.length + 1).fill(0n),
          sumNs: 0n,
        }),
      );
    return s;
  };
  for (const [key, v] of Object.entries(d.counters)) {
    const m = /^blk\d+_lat_([a-z_]+?)_(?:b(\d+)|(sum_ns))$/.exec(key);
    if (!m) continue;
    const s = get(m[1] as string);
    if (m[3]) s.sumNs = BigInt(v);
    else {
      const b = Number(m[2]);
      if (b < s.buckets.length) s.buckets[b] = BigInt(v);
    }
  }
  return [...byOp.values()];
}

/** Registers the histogram as a collector over `devices()` (read once per scrape). */
export function registerBlkLatency(
  registry: Registry,
  devices: () => { link: string; stats: Pick<DeviceStats, 'device' | 'counters'>[] }[],
): void {
  const metric = {
    name: NAME,
    help: HELP,
    type: 'histogram' as const,
    aggregator: 'sum' as const,
    reset(): void {},
    get: async () => {
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const { link, stats } of devices()) {
        for (const d of stats) {
          for (const s of blkLatencySeries(link, d)) {
            let cum = 0n;
            s.buckets.forEach((n, i) => {
              cum += n;
              const le = i < BLK_LATENCY_BOUNDS_S.length ? String(BLK_LATENCY_BOUNDS_S[i]) : '+Inf';
              values.push({ labels: { ...s.labels, le }, value: Number(cum), metricName: `${NAME}_bucket` });
            });
            values.push({ labels: s.labels, value: Number(s.sumNs) / 1e9, metricName: `${NAME}_sum` });
            values.push({ labels: s.labels, value: Number(cum), metricName: `${NAME}_count` });
          }
        }
      }
      return { name: NAME, help: HELP, type: 'histogram' as const, aggregator: 'sum' as const, values };
    },
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}
