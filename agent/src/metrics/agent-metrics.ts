/**
 * Agent metrics (docs/metrics.md, "Agent"): link lifecycle and conditions, and the
 * per-queue native counters, all read in collect() at scrape time from the link
 * manager and the native counter blocks; nothing is pushed from timers. Device
 * metrics (net, blk, console) are read the same way from the device backends' counters.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

import { ConditionStatus } from '../../../lib/proto/types';
import type { LinkManager } from '../links/link-manager';
import { LINK_STATES } from '../links/link-lifecycle';
import type { DeviceCounterView } from '../links/link-status';
import { loadNative } from '../native/load';
import type { DeviceCountersDto } from '../native/native';
import { registerBlkLatency } from './blk-latency';

type QueueLabel = 'link' | 'device' | 'queue' | 'direction';
const QUEUE_LABELS: readonly QueueLabel[] = ['link', 'device', 'queue', 'direction'];

const STATUS_NAME: Record<ConditionStatus, 'True' | 'False' | 'Unknown'> = {
  [ConditionStatus.CONDITION_STATUS_UNSPECIFIED]: 'Unknown',
  [ConditionStatus.CONDITION_STATUS_TRUE]: 'True',
  [ConditionStatus.CONDITION_STATUS_FALSE]: 'False',
  [ConditionStatus.CONDITION_STATUS_UNKNOWN]: 'Unknown',
  [ConditionStatus.UNRECOGNIZED]: 'Unknown',
};

/** The device metrics, all fed at scrape time from the device backends' native counters. */
export interface DeviceMetrics {
  readonly netFramesDropped: Counter<'link' | 'device' | 'direction'>;
  readonly blkRequests: Counter<'link' | 'device' | 'op'>;
  readonly consoleDroppedBytes: Counter<'link' | 'device'>;
}

const NS_PER_S = 1e9;

/** The blk latency bucket bounds in seconds, from C (empty when the addon is not loaded: no blk devices then). */
function loadBoundsSeconds(): readonly number[] {
  try {
    return [...loadNative().constants().blkLatencyBoundsNs].map((ns) => Number(ns) / NS_PER_S);
  } catch {
    return [];
  }
}

export function registerAgentMetrics(
  registry: Registry,
  links: LinkManager,
  build: { version: string; nativeVersion: string },
): DeviceMetrics {
  const registers = [registry];
  new Gauge({
    name: 'vop_agent_info',
    help: 'Always 1; build facts of this agent.',
    labelNames: ['version', 'native_version'] as const,
    registers,
    collect() {
      this.set({ version: build.version, native_version: build.nativeVersion }, 1);
    },
  });

  // One snapshot per scrape, shared by the collectors below (each collect() runs in the same scrape).
  // The snapshot lives until the end of the current turn (one scrape), never longer.
  let snap: { name: string; view: ReturnType<ReturnType<LinkManager['runtimes']>[number]['metricsView']> }[] | null =
    null;
  const views = (): NonNullable<typeof snap> => {
    if (!snap) {
      snap = [...links.runtimes(), ...links.quarantinedLinks()].map((rt) => ({
        name: rt.name,
        view: rt.metricsView(),
      }));
      setImmediate(() => (snap = null));
    }
    return snap;
  };

  new Gauge({
    name: 'vop_agent_links',
    help: 'Links on this agent by lifecycle state.',
    labelNames: ['state'] as const,
    registers,
    collect() {
      this.reset();
      const counts = new Map<string, number>(LINK_STATES.map((s) => [s, 0]));
      for (const { view } of views()) counts.set(view.state, (counts.get(view.state) ?? 0) + 1);
      for (const [state, n] of counts) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'vop_link_state',
    help: "1 for the link's current lifecycle state, 0 for the others (stateset).",
    labelNames: ['link', 'state'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views())
        for (const s of LINK_STATES) this.set({ link: name, state: s }, s === view.state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'vop_link_condition',
    help: "1 for the condition's current status, 0 otherwise.",
    labelNames: ['link', 'condition', 'status'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) {
        for (const c of view.conditions) {
          const cur = STATUS_NAME[c.status];
          for (const st of ['True', 'False', 'Unknown'] as const)
            this.set({ link: name, condition: c.type, status: st }, st === cur ? 1 : 0);
        }
      }
    },
  });
  new Counter({
    name: 'vop_link_resets_total',
    help: 'Data-plane resets of the link (requested, peer-initiated or recovery).',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) this.inc({ link: name }, view.resets);
    },
  });
  new Gauge({
    name: 'vop_link_last_state_change_timestamp_seconds',
    help: 'Unix time of the last lifecycle transition.',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) this.set({ link: name }, view.lastTransition.getTime() / 1000);
    },
  });
  new Counter({
    name: 'vop_link_poll_seconds_total',
    help: "Time the link's worker threads spent busy-polling.",
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) this.inc({ link: name }, Number(view.pollNs) / NS_PER_S);
    },
  });
  new Counter({
    name: 'vop_link_sleep_seconds_total',
    help: "Time the link's worker threads slept on the doorbell.",
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) this.inc({ link: name }, Number(view.sleepNs) / NS_PER_S);
    },
  });

  new Counter({
    name: 'vop_link_doorbells_total',
    help: 'Doorbells of a pci-bar link by vector: sent to the peer (eventfd or register writes) and received (interrupts: ivshmem eventfd, MSI-X).',
    labelNames: ['link', 'vector', 'direction'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) {
        if (!view.doorbells) continue;
        const vector = String(view.doorbells.vector);
        this.inc({ link: name, vector, direction: 'sent' }, Number(view.doorbells.sent));
        this.inc({ link: name, vector, direction: 'received' }, Number(view.doorbells.received));
      }
    },
  });
  new Counter({
    name: 'vop_link_doorbell_polls_total',
    help: "Looks of a polled pci-bar side at its peer's kick word (no interrupt path).",
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { name, view } of views()) if (view.doorbells) this.inc({ link: name }, Number(view.doorbells.polls));
    },
  });

  // Stream transport: the connection of each stream link (read at scrape time, one read per link).
  let ssnap:
    { link: string; s: NonNullable<ReturnType<ReturnType<LinkManager['runtimes']>[number]['streamStatus']>> }[] | null =
    null;
  const streams = (): NonNullable<typeof ssnap> => {
    if (!ssnap) {
      ssnap = [];
      for (const rt of links.runtimes()) {
        const s = rt.streamStatus();
        if (s) ssnap.push({ link: rt.name, s });
      }
      setImmediate(() => (ssnap = null));
    }
    return ssnap;
  };
  new Gauge({
    name: 'vop_stream_connected',
    help: '1 while the stream link has a connection past the handshake.',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, s } of streams()) this.set({ link }, s.state === 'ready' ? 1 : 0);
    },
  });
  new Gauge({
    name: 'vop_stream_rtt_seconds',
    help: 'Round trip of the last keepalive of the current connection (0: none).',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, s } of streams()) this.set({ link }, Number(s.rttNs) / NS_PER_S);
    },
  });
  new Counter({
    name: 'vop_stream_bytes_total',
    help: 'Bytes the stream link sent or received on its sockets, over every connection.',
    labelNames: ['link', 'direction'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, s } of streams()) {
        this.inc({ link, direction: 'sent' }, Number(s.bytesSent));
        this.inc({ link, direction: 'received' }, Number(s.bytesReceived));
      }
    },
  });
  new Counter({
    name: 'vop_stream_connections_total',
    help: 'Connections of the stream link that completed the handshake.',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, s } of streams()) this.inc({ link }, Number(s.connections));
    },
  });
  new Counter({
    name: 'vop_stream_disconnects_total',
    help: 'Connections of the stream link that ended (refused handshakes included).',
    labelNames: ['link'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, s } of streams()) this.inc({ link }, Number(s.disconnects));
    },
  });

  // Per-queue counters: one stats read per link per scrape.
  let qsnap: { link: string; stats: ReturnType<LinkManager['stats']> }[] | null = null;
  const queues = (): NonNullable<typeof qsnap> => {
    if (!qsnap) {
      qsnap = links.runtimes().map((rt) => ({ link: rt.name, stats: rt.stats() }));
      setImmediate(() => (qsnap = null));
    }
    return qsnap;
  };
  const queueCounter = (
    name: string,
    help: string,
    pick: (q: ReturnType<LinkManager['stats']>[number]['queues'][number]) => bigint,
  ): void => {
    new Counter({
      name,
      help,
      labelNames: QUEUE_LABELS,
      registers,
      collect() {
        this.reset();
        for (const { link, stats } of queues()) {
          for (const d of stats) {
            for (const q of d.queues)
              this.inc(
                { link, device: d.device, queue: q.name, direction: q.direction === 'transmit' ? 'tx' : 'rx' },
                Number(pick(q)),
              );
          }
        }
      },
    });
  };
  queueCounter('vop_queue_buffers_total', 'Buffer chains completed on the queue.', (q) => q.buffers);
  queueCounter('vop_queue_bytes_total', 'Payload bytes moved through the queue.', (q) => q.bytes);
  queueCounter('vop_queue_notifications_sent_total', 'Doorbells rung to the peer.', (q) => q.notificationsSent);
  queueCounter(
    'vop_queue_notifications_suppressed_total',
    'Doorbells skipped because the peer did not ask for one (EVENT_IDX).',
    (q) => q.notificationsSuppressed,
  );
  queueCounter('vop_queue_wakeups_total', 'Worker wake-ups that found work on the queue.', (q) => q.wakeups);
  new Counter({
    name: 'vop_queue_errors_total',
    help: 'Peer protocol violations and local errors, by reason.',
    labelNames: ['link', 'device', 'queue', 'reason'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, stats } of queues()) {
        for (const d of stats)
          for (const q of d.queues)
            for (const [reason, n] of Object.entries(q.errors))
              this.inc({ link, device: d.device, queue: q.name, reason }, Number(n));
      }
    },
  });
  new Gauge({
    name: 'vop_queue_broken',
    help: '1 while the queue is marked broken (DEVICE_NEEDS_RESET).',
    labelNames: ['link', 'device', 'queue'] as const,
    registers,
    collect() {
      this.reset();
      for (const { link, stats } of queues())
        for (const d of stats)
          for (const q of d.queues) this.set({ link, device: d.device, queue: q.name }, q.broken ? 1 : 0);
    },
  });

  // Device counters, read typed from each device's native counters (one read per link per scrape).
  let dsnap: { link: string; devices: DeviceCounterView[] }[] | null = null;
  const devices = (): NonNullable<typeof dsnap> => {
    if (!dsnap) {
      dsnap = links.runtimes().map((rt) => ({ link: rt.name, devices: rt.deviceCounters() }));
      setImmediate(() => (dsnap = null));
    }
    return dsnap;
  };
  const deviceCounter = <L extends string>(
    name: string,
    help: string,
    labelNames: readonly L[],
    pick: (c: DeviceCountersDto) => readonly { labels: Record<string, string>; value: bigint }[],
  ): Counter<L> =>
    new Counter({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const { link, devices: ds } of devices())
          for (const d of ds) {
            if (d.counters === null) continue;
            for (const { labels, value } of pick(d.counters))
              this.inc({ link, device: d.device, ...labels } as Record<L, string>, Number(value));
          }
      },
    });
  registerBlkLatency(registry, devices, loadBoundsSeconds());

  return {
    netFramesDropped: deviceCounter(
      'vop_net_frames_dropped_total',
      'Network frames dropped (malformed header, no buffer, backend error).',
      ['link', 'device', 'direction'] as const,
      (c) =>
        c.kind === 'net'
          ? [
              { labels: { direction: 'tx' }, value: c.txDropped },
              { labels: { direction: 'rx' }, value: c.rxDropped },
            ]
          : [],
    ),
    blkRequests: deviceCounter(
      'vop_blk_requests_total',
      'virtio-blk requests by op.',
      ['link', 'device', 'op'] as const,
      (c) =>
        c.kind === 'blk'
          ? [
              { labels: { op: 'read' }, value: c.reads },
              { labels: { op: 'write' }, value: c.writes },
              { labels: { op: 'flush' }, value: c.flushes },
              { labels: { op: 'discard' }, value: c.discards },
              { labels: { op: 'write_zeroes' }, value: c.writeZeroes },
              { labels: { op: 'get_id' }, value: c.getIds },
              { labels: { op: 'unsupported' }, value: c.unsupported },
            ]
          : [],
    ),
    consoleDroppedBytes: deviceCounter(
      'vop_console_dropped_bytes_total',
      'Console bytes dropped because a reader or the log fell behind.',
      ['link', 'device'] as const,
      (c) => (c.kind === 'console' ? [{ labels: {}, value: c.dropped }] : []),
    ),
  };
}
