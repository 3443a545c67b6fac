/**
 * A link of transport vhost_user on this agent: its one endpoint is the device role, and its
 * driver is the vhost-user front-end on the socket (QEMU, DPDK virtio-user), not an agent. The
 * runtime opens the socket (server: bound in the agent's socket directory with the spec's mode
 * and group; client: the front-end's socket in an allowed directory, reconnecting while it is
 * away) and serves the one net or blk device with the same native backends a link's device role
 * uses (native/devices/dev_vhost.c). The native side runs the protocol, the checks on every
 * message and the rings in its own threads; this class reads its status (cheap, every
 * STATUS_POLL_MS) and shows it like any link: phase, conditions, per-queue counters, metrics.
 *
 * Phases: Connecting (socket open, no front-end or rings not running yet) -> Ready (rings run)
 * -> Degraded (the backend failed, or the link a vop_link names is gone: vop-link-join.ts) ; the
 * front-end leaving or being cut off for a bad message goes back to Connecting (an event says why). Opening the socket fails -> retried with the link
 * backoff, Failed after MAX_RETRY_ATTEMPTS.
 */
import { readFileSync } from 'node:fs';

import type { DeviceStats, Link, StreamStatus } from '../../../lib/proto/types';
import type { Logger } from '../../../lib/src/logger';
import { backoffDelayMs } from '../../../lib/src/backoff';
import {
  DEVICE_KIND_ENUM,
  deviceKindName,
  devIdOf,
  queueLayout,
  type DeviceKindName,
} from '../backends/device-backend';
import { deviceConfigFor } from '../backends/virtio-backends';
import type { DataPlane, DataPlaneVhost } from './data-plane';
import { ALLOWED_TRANSITIONS, ConditionSet, PHASE_OF, type LinkState } from './link-lifecycle';
import { LINK_BACKOFF } from './link-devices';
import { MAX_RETRY_ATTEMPTS } from './link-runtime';
import { specEqual } from './link-spec';
import { vopLinkRef, type JoinedSocket, type JoinFailure } from './vop-link-join';
import { counterMap, type DeviceCounterView } from './link-status';
import type { HostPathPolicy } from './path-policy';

/** How often the device's native status is read while the link is up. */
export const STATUS_POLL_MS = 250;

export interface VhostUserOptions {
  /** Map guest memory that could shrink (DPDK without hugepages); agent config vhostUser.allowUnsealedMemory. */
  readonly allowUnsealedMemory: boolean;
  /** Largest ring a front-end may set up; agent config vhostUser.maxQueueSize. */
  readonly maxQueueSize: number;
}

export interface VhostUserRuntimeDeps {
  readonly dataPlane: DataPlane;
  readonly paths: HostPathPolicy;
  readonly options: VhostUserOptions;
  readonly log: Logger;
  onStatus(rt: VhostUserRuntime): void;
  onEvent(e: { link: string; device: string; queue: number; reason: string; message: string; time: Date }): void;
  /** The socket of a net device_backend `vop_link` (vop-link-join.ts), or why it cannot be joined. */
  resolveVopLink(ref: { link: string; device: string }): JoinedSocket | JoinFailure;
}

/** A group's number from /etc/group, null when there is none of that name. */
function getgrnam(name: string): number | null {
  for (const line of readFileSync('/etc/group', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f[2] !== undefined && /^\d+$/.test(f[2])) return Number(f[2]);
  }
  return null;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The device as a link's device role describes it. deviceConfigFor() serves a device only
 * when the spec names both roles' surfaces; a vhost_user link has no driver role, so the
 * driver-side part it never reads is filled in (net: a TAP frontend, blk: an export).
 */
function vhostDeviceConfig(
  link: Link,
  paths: HostPathPolicy,
  joined: JoinedSocket | null,
): ReturnType<typeof deviceConfigFor> {
  const spec = link.spec;
  const d = spec?.devices[0];
  const k = d?.kind;
  if (!d || !k) return null;
  const eligible =
    k.$case === 'net'
      ? {
          ...d,
          kind: {
            $case: 'net' as const,
            value: {
              ...k.value,
              // vop_link: the datagram socket of the joined device's driver side, taken from the other end
              deviceBackend: joined
                ? { kind: { $case: 'datagram' as const, value: { path: joined.local, peerPath: joined.peer } } }
                : k.value.deviceBackend,
              driverFrontend: { kind: { $case: 'tap' as const, value: { name: '', netns: '' } } },
            },
          },
        }
      : k.$case === 'blk'
        ? {
            ...d,
            kind: {
              $case: 'blk' as const,
              value: { ...k.value, export: { unixSocket: '/unused', tcpListen: '', tlsRequired: false } },
            },
          }
        : d;
  return deviceConfigFor(eligible as typeof d, 'device', devIdOf(d.name), link.meta?.name ?? '', paths);
}

export class VhostUserRuntime {
  private stateValue: LinkState = 'Pending';
  private linkValue: Link;
  private readonly conditions: ConditionSet;
  private dev: DataPlaneVhost | null = null;
  private timer: NodeJS.Timeout | null = null;
  private attempts = 0;
  private epoch = 0n;
  private resetCount = 0;
  private lastTransition = new Date();
  /** Native counters already reported as events. */
  private seenProtocolErrors = 0n;
  private seenConnections = 0n;
  private seenDisconnects = 0n;
  private negotiated = 0n;
  /** The socket of the vop_link the device was opened with (null: no vop_link, or not open). */
  private joined: JoinedSocket | null = null;
  /** Why the link named by the vop_link cannot be joined now (level: cleared when it can). */
  private joinWait: { reason: string; message: string } | null = null;
  private readonly log: Logger;

  constructor(
    link: Link,
    private readonly deps: VhostUserRuntimeDeps,
  ) {
    this.linkValue = link;
    this.log = deps.log;
    this.conditions = new ConditionSet(this.generation);
  }

  get name(): string {
    return this.linkValue.meta?.name ?? '';
  }
  get state(): LinkState {
    return this.stateValue;
  }
  get generation(): number {
    return Number(this.linkValue.meta?.generation ?? 0n);
  }
  get meta(): NonNullable<Link['meta']> {
    if (!this.linkValue.meta) throw new Error('link without meta');
    return this.linkValue.meta;
  }
  get desired(): Link {
    return this.linkValue;
  }
  private get transport(): {
    socketPath: string;
    client: boolean;
    socketMode: number;
    socketGroup: string;
    queuePairs: number;
  } {
    const t = this.linkValue.spec?.transport?.kind;
    if (t?.$case !== 'vhostUser') throw new Error(`link ${this.name} is not a vhost_user link`);
    return t.value;
  }
  private get device(): { name: string; kind: DeviceKindName } {
    const d = this.linkValue.spec?.devices[0];
    const kind = d ? deviceKindName(d) : null;
    if (!d || !kind) throw new Error(`link ${this.name} has no device`);
    return { name: d.name, kind };
  }

  private transitionTo(to: LinkState, reason: string, message = `link is ${to}`): void {
    const cur = this.stateValue;
    if (cur === to) return;
    if (!ALLOWED_TRANSITIONS[cur].includes(to)) {
      // the vhost-user lifecycle is simpler than a window's: go through the states it skips
      if (cur === 'Connecting' && to === 'Ready') this.transitionTo('Negotiating', reason);
      else if (cur === 'Ready' && (to === 'Connecting' || to === 'Failed')) this.transitionTo('Resetting', reason);
      else if (cur === 'Degraded' && to === 'Connecting') this.transitionTo('Resetting', reason);
      else {
        this.log.debug({ from: cur, to, reason }, 'transition refused');
        return;
      }
    }
    this.stateValue = to;
    this.lastTransition = new Date();
    this.log.info({ from: cur, to, reason }, `${cur} -> ${to}`);
    if (to === 'Connecting') this.epoch += 1n;
    if (to === 'Resetting') this.resetCount += 1;
    if (to === 'Ready')
      this.conditions.set('Ready', 'True', 'LinkReady', 'the front-end runs the rings', this.generation);
    else this.conditions.set('Ready', 'False', reason, message, this.generation);
    this.deps.onStatus(this);
  }

  private event(reason: string, message: string, queue = -1): void {
    this.log.info({ code: reason, event: message }, `link event ${reason}`);
    this.deps.onEvent({ link: this.name, device: this.device.name, queue, reason, message, time: new Date() });
  }

  private schedule(ms: number, fn: () => void): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      try {
        fn();
      } catch (err) {
        this.log.error({ err, code: 'LINK_STEP_FAILED' }, 'link step failed');
      }
    }, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  start(): void {
    if (this.stateValue !== 'Pending' && this.stateValue !== 'Failed') return;
    this.transitionTo('Connecting', 'Applied');
    this.open();
  }

  /** The socket's group as a number, -1 for the agent's own. */
  private socketGid(group: string): number {
    if (group === '') return -1;
    if (/^\d+$/.test(group)) return Number(group);
    const gid = getgrnam(group);
    if (gid === null) throw new RangeError(`socket_group "${group}" is not a group on this host`);
    return gid;
  }

  private open(): void {
    if (this.stateValue !== 'Connecting') return;
    if (!this.deps.dataPlane.available || !this.deps.dataPlane.openVhost) {
      this.fail(
        'DataPlaneUnavailable',
        `the native data plane cannot serve vhost-user (${this.deps.dataPlane.version})`,
      );
      return;
    }
    const t = this.transport;
    try {
      const root = this.deps.paths.rootOf(t.client ? 'vhost-client' : 'socket', t.socketPath);
      if (!root || !('dir' in root))
        throw new RangeError(
          `"${t.socketPath}" lies outside ${this.deps.paths.describe(t.client ? 'vhost-client' : 'socket')}`,
        );
      const ref = vopLinkRef(this.linkValue);
      let joined: JoinedSocket | null = null;
      if (ref) {
        const r = this.deps.resolveVopLink(ref);
        if ('field' in r) {
          // nothing to open until the link is there: joinedLinkChanged() opens it then
          this.waitForJoin(ref.link, r);
          return;
        }
        joined = r;
        this.joinWait = null;
      }
      this.joined = joined;
      const config = vhostDeviceConfig(this.linkValue, this.deps.paths, joined);
      if (!config) throw new RangeError(`device ${this.device.name} names no backend this agent can serve`);
      this.dev = this.deps.dataPlane.openVhost({
        link: this.name,
        socketPath: t.socketPath,
        root: root.dir,
        server: !t.client,
        socketMode: t.socketMode,
        socketGid: this.socketGid(t.socketGroup),
        reconnectMs: 0,
        maxQueueSize: this.deps.options.maxQueueSize,
        allowUnsealed: this.deps.options.allowUnsealedMemory,
        queuePairs: t.queuePairs,
        device: config,
      });
    } catch (err) {
      this.retryLater('SocketOpenFailed', `${t.socketPath}: ${errText(err)}`);
      return;
    }
    this.seenProtocolErrors = this.seenConnections = this.seenDisconnects = 0n;
    this.conditions.set(
      'PeerConnected',
      'False',
      'WaitingForFrontend',
      t.client ? `connecting to the front-end's socket ${t.socketPath}` : `listening on ${t.socketPath}`,
      this.generation,
    );
    this.deps.onStatus(this);
    this.poll();
  }

  private retryLater(reason: string, message: string): void {
    this.attempts += 1;
    this.closeDevice();
    if (this.attempts > MAX_RETRY_ATTEMPTS) {
      this.fail('RetryBudgetExhausted', `gave up after ${MAX_RETRY_ATTEMPTS} attempts; last: ${reason}: ${message}`);
      return;
    }
    const delay = backoffDelayMs(LINK_BACKOFF, this.attempts - 1);
    this.event(reason, `${message}; retry ${this.attempts}/${MAX_RETRY_ATTEMPTS} in ${delay} ms`);
    this.conditions.set('PeerConnected', 'Unknown', reason, message, this.generation);
    this.deps.onStatus(this);
    this.schedule(delay, () => this.open());
  }

  private fail(reason: string, message: string): void {
    this.closeDevice();
    this.clearTimer();
    this.transitionTo('Failed', reason, message);
    this.conditions.set('Ready', 'False', reason, message, this.generation);
    this.event(reason, message);
    this.deps.onStatus(this);
  }

  /** Reads the native status: phase, conditions and events follow it. */
  private poll(): void {
    const dev = this.dev;
    if (!dev) return;
    let s: ReturnType<DataPlaneVhost['status']>;
    try {
      s = dev.status();
    } catch (err) {
      this.retryLater('DataPlaneFailed', errText(err));
      return;
    }
    if (s.connections > this.seenConnections) {
      this.event('FrontendConnected', `a vhost-user front-end connected (${s.connections} so far)`);
      this.seenConnections = s.connections;
    }
    if (s.protocolErrors > this.seenProtocolErrors) {
      this.event(
        'FrontendRefused',
        `the front-end broke a rule and was cut off: ${s.lastRequest ?? '?'}: ${s.lastWhy ?? '?'} (${s.protocolErrors} so far); the device reset and the socket takes the next connection`,
      );
      this.seenProtocolErrors = s.protocolErrors;
    } else if (s.disconnects > this.seenDisconnects) {
      this.event('FrontendDisconnected', 'the vhost-user front-end went away; the device reset');
    }
    this.seenDisconnects = s.disconnects;
    if (s.features !== 0n) this.negotiated = s.features;
    this.conditions.set(
      'PeerConnected',
      s.connected ? 'True' : 'False',
      s.connected ? 'FrontendConnected' : 'WaitingForFrontend',
      s.connected ? 'a vhost-user front-end is on the socket' : `no front-end on ${this.transport.socketPath}`,
      this.generation,
    );
    const broken = dev.counters().filter((q) => q.broken !== '');
    this.conditions.set(
      'QueueHealthy',
      broken.length === 0 ? 'True' : 'False',
      broken.length === 0 ? 'QueuesHealthy' : 'QueueBroken',
      broken.length === 0 ? 'no queue broken' : broken.map((q) => `queue ${q.index}: ${q.broken}`).join(', '),
      this.generation,
    );
    this.conditions.set(
      'DevicesReady',
      s.running ? 'True' : 'False',
      s.running ? 'RingsRunning' : 'RingsStopped',
      s.running ? `device ${this.device.name} serves the front-end's rings` : 'the rings are not running',
      this.generation,
    );
    if (s.failed) this.transitionTo('Degraded', 'BackendFailed', 'the device backend failed');
    else if (s.running && this.joinWait) {
      this.attempts = 0;
      this.transitionTo('Degraded', this.joinWait.reason, this.joinWait.message);
    } else if (s.running) {
      this.attempts = 0;
      this.transitionTo('Ready', 'RingsRunning');
    } else if (this.stateValue === 'Ready' || this.stateValue === 'Degraded') {
      this.transitionTo('Connecting', 'FrontendGone', 'waiting for a front-end');
    }
    this.joinCondition();
    this.deps.onStatus(this);
    this.schedule(STATUS_POLL_MS, () => this.poll());
  }

  /** The vop_link's target cannot be joined (r): Ready=False with why, an event when it changes. */
  private waitForJoin(link: string, r: JoinFailure): void {
    const reason = r.missing ? 'JoinedLinkMissing' : 'JoinedLinkUnusable';
    const message = r.missing
      ? `link "${link}" that device_backend.vop_link names is not on this agent; ${this.dev ? 'frames the front-end sends are dropped and counted (tx_dropped) until it is applied again' : 'the socket opens when it is applied'}`
      : `device_backend.vop_link.${r.field}: ${r.why}`;
    const changed = this.joinWait?.message !== message;
    this.joinWait = { reason, message };
    if (changed) this.event(reason, message);
    this.joinCondition();
    this.deps.onStatus(this);
  }

  /** Ready=False while the join waits; back to the front-end's state once it does not. */
  private joinCondition(): void {
    if (this.joinWait) {
      this.conditions.set('Ready', 'False', this.joinWait.reason, this.joinWait.message, this.generation);
      if (!this.dev)
        this.conditions.set('PeerConnected', 'False', this.joinWait.reason, this.joinWait.message, this.generation);
      return;
    }
    const cur = this.conditions.list().find((c) => c.type === 'Ready');
    if (this.stateValue !== 'Ready' && cur?.reason.startsWith('JoinedLink'))
      this.conditions.set(
        'Ready',
        'False',
        'WaitingForFrontend',
        'the front-end does not run the rings',
        this.generation,
      );
  }

  /**
   * The link manager applied or deleted the link this one's vop_link names: resolve it again.
   * Gone or unusable -> Ready=False (the device, when open, stays open for its front-end);
   * back with the same socket -> the condition clears; back with another socket -> the device
   * is opened again with it.
   */
  joinedLinkChanged(): void {
    const ref = vopLinkRef(this.linkValue);
    if (!ref || this.stateValue === 'Terminating' || this.stateValue === 'Failed' || this.stateValue === 'Pending')
      return;
    const r = this.deps.resolveVopLink(ref);
    if ('field' in r) {
      this.waitForJoin(ref.link, r);
      return;
    }
    const waited = this.joinWait !== null;
    this.joinWait = null;
    if (this.dev && this.joined && (this.joined.local !== r.local || this.joined.peer !== r.peer)) {
      this.event('JoinedLinkChanged', `link "${ref.link}" moved its datagram socket; the device is opened again`);
      this.restart('JoinedLinkChanged');
      return;
    }
    if (!waited) return;
    this.event('JoinedLinkReady', `link "${ref.link}" is on this agent again; frames flow to device "${ref.device}"`);
    if (!this.dev) {
      this.joinCondition();
      this.open();
    } else this.poll();
  }

  private closeDevice(): void {
    const d = this.dev;
    this.dev = null;
    if (!d) return;
    try {
      d.close();
    } catch (err) {
      this.log.warn({ err }, 'closing the vhost-user device failed');
    }
  }

  update(next: Link): void {
    const prev = this.linkValue;
    this.linkValue = next;
    if (prev.spec && next.spec && specEqual(prev.spec, next.spec) && this.stateValue !== 'Failed') {
      this.deps.onStatus(this);
      return;
    }
    this.restart('SpecChanged');
  }

  private restart(reason: string): void {
    this.clearTimer();
    this.closeDevice();
    this.attempts = 0;
    if (this.stateValue === 'Pending') {
      this.start();
      return;
    }
    if (this.stateValue !== 'Failed') this.transitionTo('Resetting', reason);
    this.transitionTo('Connecting', reason);
    this.open();
  }

  reset(reason: string): void {
    this.event('LinkReset', reason === '' ? 'reset requested' : `reset requested: ${reason}`);
    this.restart('ResetRequested');
  }

  terminate(): void {
    this.clearTimer();
    this.closeDevice();
    this.transitionTo('Terminating', 'Deleted');
  }

  shutdown(): void {
    this.clearTimer();
    this.closeDevice();
  }

  toLink(): Link {
    let endpoints: Record<string, string> = {};
    try {
      const e = this.dev?.endpoints();
      const id = devIdOf(this.device.name);
      endpoints = { socket: this.transport.socketPath };
      if (e?.tap) endpoints[`tap${id}`] = e.tap;
      if (e?.netns) endpoints[`tap${id}-netns`] = e.netns;
    } catch {
      // closed meanwhile: no surfaces to report
    }
    const s = this.dev ? this.safeStatus() : null;
    return {
      meta: this.linkValue.meta,
      spec: this.linkValue.spec,
      status: {
        phase: PHASE_OF[this.stateValue],
        observedGeneration: BigInt(this.generation),
        conditions: this.conditions.list(),
        devices: [
          {
            name: this.device.name,
            kind: DEVICE_KIND_ENUM[this.device.kind],
            ready: s?.running ?? false,
            endpoints,
            conditions: [],
            negotiatedFeatures: this.negotiated,
          },
        ],
        epoch: this.epoch,
        resetCount: this.resetCount,
        lastTransitionTime: this.lastTransition,
        endpointPhases: {},
        stream: undefined,
        transport: undefined,
      },
    };
  }

  /** A vhost-user link has no stream connection. */
  streamStatus(): StreamStatus | undefined {
    return undefined;
  }

  private safeStatus(): ReturnType<DataPlaneVhost['status']> | null {
    try {
      return this.dev?.status() ?? null;
    } catch {
      return null;
    }
  }

  metricsView(): {
    state: LinkState;
    conditions: ReturnType<ConditionSet['list']>;
    resets: number;
    lastTransition: Date;
    pollNs: bigint;
    sleepNs: bigint;
    /** A vhost-user link has no pci-bar doorbells. */
    doorbells: null;
  } {
    let pollNs = 0n;
    let sleepNs = 0n;
    try {
      for (const q of this.dev?.counters() ?? []) {
        pollNs += q.pollNs;
        sleepNs += q.sleepNs;
      }
    } catch {
      // closed meanwhile
    }
    return {
      state: this.stateValue,
      conditions: this.conditions.list(),
      resets: this.resetCount,
      lastTransition: this.lastTransition,
      pollNs,
      sleepNs,
      doorbells: null,
    };
  }

  stats(): DeviceStats[] {
    const { name, kind } = this.device;
    let counters: ReturnType<DataPlaneVhost['counters']> = [];
    let dc: ReturnType<DataPlaneVhost['deviceCounters']> = null;
    try {
      counters = this.dev?.counters() ?? [];
      dc = this.dev?.deviceCounters() ?? null;
    } catch {
      // closed meanwhile: zeros
    }
    // queue pairs: rx, tx, then rx1, tx1, ... (ring order of the device)
    const pairs = kind === 'net' ? Math.max(1, this.transport.queuePairs) : 1;
    const layout = Array.from({ length: pairs }, (_, p) =>
      queueLayout(kind, 'device').map((q) => ({ ...q, name: p === 0 ? q.name : `${q.name}${p}` })),
    ).flat();
    return [
      {
        device: name,
        kind: DEVICE_KIND_ENUM[kind],
        queues: layout.map((q, index) => {
          const c = counters.find((x) => x.index === index);
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
            pollTime: {
              seconds: (c?.pollNs ?? 0n) / 1_000_000_000n,
              nanos: Number((c?.pollNs ?? 0n) % 1_000_000_000n),
            },
            sleepTime: {
              seconds: (c?.sleepNs ?? 0n) / 1_000_000_000n,
              nanos: Number((c?.sleepNs ?? 0n) % 1_000_000_000n),
            },
            errors: Object.fromEntries(c?.errors ?? []),
            broken: (c?.broken ?? '') !== '',
            brokenReason: c?.broken ?? '',
          };
        }),
        counters: counterMap(dc),
      },
    ];
  }

  deviceCounters(): DeviceCounterView[] {
    let c: ReturnType<DataPlaneVhost['deviceCounters']> = null;
    try {
      c = this.dev?.deviceCounters() ?? null;
    } catch {
      // closed meanwhile
    }
    return [{ device: this.device.name, kind: this.device.kind, counters: c }];
  }

  consoleOf(device: string): { found: boolean; port: null } {
    return { found: device === this.device.name, port: null };
  }

  deviceKind(device: string): DeviceKindName | null {
    return device === this.device.name ? this.device.kind : null;
  }
}
