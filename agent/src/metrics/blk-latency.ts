/**
 * vop_blk_request_duration_seconds: the virtio-blk devices' pop-to-push latency
 * histograms, kept in C (native/include/vop/dev_blk.h, vop_blk_lat_bounds_ns) and read
 * typed at scrape time (per op: non-cumulative bucket counts, the last one +Inf, and
 * the sum), exposed as a classic Prometheus histogram. The bucket bounds come from C
 * too (constants().blkLatencyBoundsNs).
 */
import type { Registry } from 'prom-client';

import type { DeviceCounterView } from '../links/link-status';

const NAME = 'vop_blk_request_duration_seconds';
const HELP = 'Time from popping a blk request to pushing its status.';

/** Registers the histogram as a collector over `devices()` (read once per scrape); boundsS: bucket upper bounds in seconds. */
export function registerBlkLatency(
  registry: Registry,
  devices: () => readonly { link: string; devices: readonly DeviceCounterView[] }[],
  boundsS: readonly number[],
): void {
  const metric = {
    name: NAME,
    help: HELP,
    type: 'histogram' as const,
    aggregator: 'sum' as const,
    reset(): void {},
    get: async () => {
      const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
      for (const { link, devices: ds } of devices()) {
        for (const d of ds) {
          if (d.counters?.kind !== 'blk') continue;
          for (const l of d.counters.latency) {
            const labels = { link, device: d.device, op: l.op };
            let cum = 0n;
            l.bucketCounts.forEach((n, i) => {
              cum += n;
              const le = i < boundsS.length ? String(boundsS[i]) : '+Inf';
              values.push({ labels: { ...labels, le }, value: Number(cum), metricName: `${NAME}_bucket` });
            });
            values.push({ labels, value: Number(l.sumNs) / 1e9, metricName: `${NAME}_sum` });
            values.push({ labels, value: Number(cum), metricName: `${NAME}_count` });
          }
        }
      }
      return { name: NAME, help: HELP, type: 'histogram' as const, aggregator: 'sum' as const, values };
    },
  };
  registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
}
