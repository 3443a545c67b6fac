/**
 * One link endpoint on this agent: the applied spec (desired) against the window and
 * devices the data plane actually has (observed), driven through the lifecycle in
 * link-lifecycle.ts by one guarded transition function. Its rooms: link-devices.ts
 * (each device and its backend's retries), window-opener.ts (where the window is and
 * how it is opened), link-status.ts (what the API and /metrics show). All native calls
 * are cheap control operations; buffers move in native worker threads, so nothing here
 * runs per buffer and the link keeps moving while this JavaScript is busy.
 */
import { rmSync } from 'node:fs';

import {
  StreamProtocol,
  type DeviceStats,
  type Link,
  type LinkEvent,
  type StreamStatus,
  type StreamTransport,
  type TransportStatus,
} from '../../../lib/proto/types';
import { monotonicMs } from '../../../lib/src/clock';
import type { Logger } from '../../../lib/src/logger';
import { redactSpec } from '../../../lib/src/redact';
import { backoffDelayMs } from '../../../lib/src/backoff';
import { roleName, type BackendInstance, type BackendRegistry, type DeviceKindName } from '../backends/device-backend';
import { NativeError, type DataPlane, type DataPlaneEvent, type DataPlaneWindow, type WindowSide } from './data-plane';
import { LINK_BACKOFF, LinkDevices, type DeviceRuntime } from './link-devices';
import { ALLOWED_TRANSITIONS, ConditionSet, PHASE_OF, type LinkState } from './link-lifecycle';
import { specEqual } from './link-spec';
import { deviceCounters, deviceStats, deviceStatuses, type DeviceCounterView } from './link-status';
import type { PciWindowDto } from '../native/native';
import { pciBarName, pciBarOf, pciDoorbellName, pciWindowName, pciWindowOf, windowSideOf } from './pci-window';
import { MAX_WINDOW_BYTES, openWindow, windowBytesOf, windowPathOf } from './window-opener';
import { streamTlsFor, type StreamTlsFiles } from './stream-security';

/** Doorbells of a pci-bar link's one vector, read at scrape time (restart with each window). */
export interface LinkDoorbells {
  readonly vector: number;
  /** Doorbells this side sent (eventfd or register writes). */
  readonly sent: bigint;
  /** Doorbells that woke this side (interrupts: the ivshmem eventfd, an MSI-X vector). */
  readonly received: bigint;
  /** Looks at the peer's kick word while polling. */
  readonly polls: bigint;
}

/**
 * Poll period while connecting or negotiating: CONNECT_POLL_MS for the first
 * FAST_POLL_WINDOW_MS after a transition (bring-up latency is bounded by it), then
 * growing by half each poll without progress up to MAX_POLL_MS, so links waiting for
 * an absent peer cost next to nothing.
 */
export const CONNECT_POLL_MS = 5;
export const MAX_POLL_MS = 250;
/** After each transition, poll every CONNECT_POLL_MS for this long before backing off. */
export const FAST_POLL_WINDOW_MS = 1000;
/** Backstop health check while Ready; native events (peer gone/reset, queue broken) drive recovery. */
export const READY_POLL_MS = 10_000;
/** Consecutive failed attempts (link or device resets) before Failed. */
export const MAX_RETRY_ATTEMPTS = 8;
/** After this long without a peer, PeerConnected says the peer is late, not just absent. */
export const PEER_LATE_MS = 10_000;
/**
 * Native link failures (data-plane 'link-failed' reasons) as condition reasons and
 * messages; `%p` is the peer agent, `%w` the window path.
 */
const LINK_FAILURES: Readonly<Record<string, { reason: string; message: string }>> = {
  devtab_unstable: {
    reason: 'DeviceTableUnstable',
    message: 'peer %p kept rewriting the device table of %w (it never settled); the link was stopped',
  },
};

export interface LinkRuntimeDeps {
  readonly dataPlane: DataPlane;
  readonly backends: BackendRegistry;
  readonly rendezvousDir: string;
  readonly nodeName: string;
  /** An attacher refuses a peer's window larger than this (limit maxWindowBytes; default MAX_WINDOW_BYTES). */
  readonly maxWindowBytes?: number;
  /** Certificates of stream links (TLS by default when set). */
  readonly streamTls?: StreamTlsFiles | null;
  /**
   * The allowed directory (hostPaths.barDirs) a pci-bar BAR file lies in: the native side opens it
   * beneath that root. Null (or absent: tests) opens the path as given; apply refuses a BAR file
   * outside every root before a runtime exists.
   */
  readonly barRoot?: (p: string) => string | null;
  /**
   * The allowed directory (hostPaths.socketDir) a stream link's Unix socket lies in: the device side
   * binds and the driver side dials beneath it. Null: not allowed (a restored link may predate a
   * config change; apply refuses it before a runtime exists). Absent (tests): the path as given.
   */
  readonly socketRoot?: (p: string) => string | null;
  readonly log: Logger;
  /** Status changed (phase, conditions, devices). */
  onStatus(rt: LinkRuntime): void;
  onEvent(e: LinkEvent): void;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class LinkRuntime {
  private stateValue: LinkState = 'Pending';
  private linkValue: Link;
  private readonly conditions: ConditionSet;
  private window: DataPlaneWindow | null = null;
  private readonly devices: LinkDevices;
  private epoch = 0n;
  private resetCount = 0;
  private lastTransition = new Date();
  /** Monotonic ms of the last transition (poll pacing; lastTransition is for status). */
  private lastTransitionMono = monotonicMs();
  /** Peer epoch seen when the peer last came up; 0 before. */
  private peerEpoch = 0;
  /** Consecutive failed attempts since the link was last Ready. */
  private attempts = 0;
  /** Valid while Connecting: when we started waiting for the peer (monotonic ms). */
  private connectingSince = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Next poll delay while Connecting/Negotiating/Degraded; reset on progress and native events. */
  private pollMs = CONNECT_POLL_MS;
  private readonly log: Logger;

  constructor(
    link: Link,
    private readonly deps: LinkRuntimeDeps,
  ) {
    this.linkValue = link;
    this.log = deps.log;
    this.conditions = new ConditionSet(this.generation);
    this.devices = new LinkDevices({
      backends: deps.backends,
      log: this.log,
      link: () => ({
        name: this.name,
        annotations: this.linkValue.meta?.annotations ?? {},
        stream: this.streamTransport !== null,
      }),
      role: () => this.role,
      window: () => this.window,
      changed: () => {
        this.deps.onStatus(this);
        this.evaluateSoon();
      },
      gaveUp: (d) => this.event('BackendFailed', `device ${d.device.name}: ${d.backendError}`, d.device.name),
    });
    for (const d of this.spec.devices) this.devices.add(d);
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
  private get spec(): NonNullable<Link['spec']> {
    if (!this.linkValue.spec) throw new Error('link without spec');
    return this.linkValue.spec;
  }
  /** This agent's virtio role on the link. */
  get role(): 'device' | 'driver' {
    const ep = this.spec.endpoints.find((e) => e.agent === this.deps.nodeName);
    if (!ep) throw new Error(`link ${this.name} does not name ${this.deps.nodeName}`);
    return roleName(ep.role);
  }
  /**
   * The creator lays the window out and owns its device table; the other side attaches. shm:
   * the device role creates; pci-bar: the spec's window_creator (pci-window.ts).
   */
  get side(): WindowSide {
    // A stream link's window is private: each agent creates its own (docs/stream-protocol.md).
    if (this.streamTransport) return 'creator';
    return windowSideOf(this.linkValue, this.role);
  }
  /** The stream transport of the spec, or null. */
  private get streamTransport(): StreamTransport | null {
    const k = this.spec.transport?.kind;
    return k?.$case === 'stream' ? k.value : null;
  }
  /** The window file (shm), or where a pci-bar window is mapped from. */
  get windowPath(): string {
    return windowPathOf(this.linkValue, this.deps.rendezvousDir, this.role);
  }
  /** This endpoint's pci-bar window options, null for shm. */
  private get pciWindow(): PciWindowDto | null {
    const t = pciBarOf(this.linkValue);
    return t ? pciWindowOf(t, this.role, false, this.deps.barRoot) : null;
  }
  /** Window size: the spec's, or the automatic one for the devices (capped; apply refuses more). */
  private get windowBytes(): number {
    return windowBytesOf(
      this.linkValue,
      this.deps.dataPlane,
      [...this.devices.values()].map((d) => d.native),
    );
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * The one place the state changes. Refuses (returns false) unless the current state
   * is in `from` and the lifecycle allows `to`; then logs, runs the target's side
   * effects and notifies.
   */
  private transitionTo(from: readonly LinkState[], to: LinkState, reason: string): boolean {
    const cur = this.stateValue;
    if (!from.includes(cur) || !ALLOWED_TRANSITIONS[cur].includes(to)) {
      this.log.debug({ from: cur, to, reason }, 'transition refused');
      return false;
    }
    this.stateValue = to;
    this.lastTransition = new Date();
    this.lastTransitionMono = monotonicMs();
    this.pollMs = CONNECT_POLL_MS;
    this.log.info({ from: cur, to, reason }, `${cur} -> ${to}`);
    switch (to) {
      case 'Connecting':
        this.connectingSince = monotonicMs();
        this.epoch += 1n;
        break;
      case 'Negotiating':
        break;
      case 'Ready':
        this.attempts = 0;
        for (const d of this.devices.values()) d.resets = 0;
        break;
      case 'Degraded':
        break;
      case 'Resetting':
        this.resetCount += 1;
        break;
      case 'Failed':
      case 'Terminating':
        this.clearTimer();
        break;
      case 'Pending':
        break;
      default: {
        const never: never = to;
        throw new Error(`unknown link state ${String(never)}`);
      }
    }
    this.refreshReadyCondition(reason);
    this.deps.onStatus(this);
    return true;
  }

  private setCondition(
    type: Parameters<ConditionSet['set']>[0],
    value: 'True' | 'False' | 'Unknown',
    reason: string,
    message: string,
  ): void {
    if (this.conditions.set(type, value, reason, message, this.generation)) this.deps.onStatus(this);
  }

  private refreshReadyCondition(reason: string): void {
    const s = this.stateValue;
    if (s === 'Ready')
      this.conditions.set('Ready', 'True', 'LinkReady', 'all devices are running on a connected peer', this.generation);
    else this.conditions.set('Ready', 'False', reason, `link is ${s}`, this.generation);
  }

  private event(reason: string, message: string, device = '', queue = -1): void {
    // Every link event is also a log line: link and peer come from the child logger, `code` is the stable reason.
    this.log.info({ code: reason, device, queue, event: message }, `link event ${reason}`);
    this.deps.onEvent({ link: this.name, device, queue, reason, message, time: new Date() });
  }

  private schedule(ms: number, fn: () => void): void {
    this.clearTimer();
    this.timer = setTimeout(() => {
      this.timer = null;
      try {
        fn();
      } catch (err) {
        this.log.error({ err, code: 'LINK_STEP_FAILED' }, 'link step failed');
        this.retryLater('InternalError', errText(err));
      }
    }, ms);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Starts bringing the link up (after apply or restore). */
  start(): void {
    if (this.transitionTo(['Pending'], 'Connecting', 'Applied')) this.connect();
  }

  private fail(reason: string, message: string): void {
    this.closeWindow(false);
    this.setCondition('PeerConnected', 'Unknown', reason, message);
    this.transitionTo(['Pending', 'Connecting', 'Negotiating', 'Degraded', 'Resetting'], 'Failed', reason);
    this.conditions.set('Ready', 'False', reason, message, this.generation);
    this.event(reason, message);
    this.deps.onStatus(this);
  }

  /** Tears the data plane down and tries again after a backoff, or fails when the budget is spent. */
  private retryLater(reason: string, message: string): void {
    if (this.stateValue === 'Terminating' || this.stateValue === 'Failed') return;
    this.attempts += 1;
    if (this.attempts > MAX_RETRY_ATTEMPTS) {
      this.fail('RetryBudgetExhausted', `gave up after ${MAX_RETRY_ATTEMPTS} attempts; last: ${reason}: ${message}`);
      return;
    }
    const delay = backoffDelayMs(LINK_BACKOFF, this.attempts - 1);
    this.log.warn(
      { code: 'LINK_RESET', reason, message, attempt: this.attempts, delayMs: delay },
      'link reset, retrying',
    );
    this.event(reason, `${message}; retry ${this.attempts}/${MAX_RETRY_ATTEMPTS} in ${delay} ms`);
    this.closeWindow(this.side === 'creator');
    this.transitionTo(['Connecting', 'Negotiating', 'Ready', 'Degraded'], 'Resetting', reason);
    this.schedule(delay, () => {
      if (this.transitionTo(['Resetting'], 'Connecting', 'Retry')) this.connect();
    });
  }

  // ---------------------------------------------------------------- data plane

  private closeWindow(unlink: boolean): void {
    this.devices.windowClosed();
    const w = this.window;
    this.window = null;
    if (w) {
      try {
        w.close(unlink);
      } catch (err) {
        this.log.warn({ err }, 'closing the window failed');
      }
    } else if (unlink && !pciBarOf(this.linkValue)) {
      rmSync(this.windowPath, { force: true });
    }
  }

  private addNative(d: DeviceRuntime): void {
    if (!this.window || d.added) return;
    this.window.addDevice(d.native);
    d.added = true;
  }

  private connect(): void {
    if (this.stateValue !== 'Connecting') return;
    if (!this.deps.dataPlane.available) {
      this.fail('DataPlaneUnavailable', `the native data plane is not loaded (${this.deps.dataPlane.version})`);
      return;
    }
    if (!this.window && this.streamTransport) {
      if (!this.openStream(this.streamTransport)) return;
    }
    if (!this.window) {
      let opened: ReturnType<typeof openWindow>;
      try {
        opened = openWindow(
          this.deps.dataPlane,
          {
            link: this.name,
            path: this.windowPath,
            pci: this.pciWindow,
            side: this.side,
            sizeBytes: this.windowBytes,
            maxWindowBytes: this.deps.maxWindowBytes ?? MAX_WINDOW_BYTES,
          },
          (e) => this.onNativeEvent(e),
          this.log,
          (reason, message) => this.event(reason, message),
        );
      } catch (err) {
        if (err instanceof NativeError && err.code === 'ENOSPC') {
          // Reserving the window failed (a full tmpfs): this link fails, the agent does not.
          this.fail(
            'WindowSpaceExhausted',
            `cannot reserve ${this.windowBytes} bytes for ${this.windowPath}: no space left on its filesystem ` +
              '(ENOSPC); free space there or set a smaller transport.shm.windowSizeBytes',
          );
          return;
        }
        this.retryLater('WindowOpenFailed', `${this.windowPath}: ${errText(err)}`);
        return;
      }
      if (opened.kind === 'rejected') {
        this.windowRejected(opened.why);
        return;
      }
      if (opened.kind === 'absent') {
        this.waitingForPeer(`waiting for the device side to create ${this.windowPath}`);
        return;
      }
      const w = opened.window;
      this.window = w;
      try {
        for (const d of this.devices.values()) this.addNative(d);
        // The creator's backends need no peer: start them now, overlapping the peer's attach.
        if (w.side === 'creator') for (const d of this.devices.values()) this.devices.startBackend(d);
      } catch (err) {
        this.retryLater('DeviceSetupFailed', errText(err));
        return;
      }
    }
    const peer = this.window.peer();
    if (peer.state === 'gone' && this.side === 'attacher' && this.window.replaced()) {
      // The creator replaced or removed its window: drop this mapping, look for the file again.
      this.closeWindow(false);
      this.waitingForPeer(`the device side replaced ${this.windowPath}; waiting for the new window`);
      return;
    }
    if (peer.state !== 'up') {
      // A stream link says why its last connection ended (a refused certificate, a wrong secret).
      const ended = this.streamTransport ? (this.window.stream?.()?.lastError ?? '') : '';
      if (ended !== '') this.waitingForPeer(`the last connection ended: ${ended}`, 'StreamConnectionFailed');
      else
        this.waitingForPeer(
          peer.state === 'gone'
            ? `the peer left ${this.windowPath}; waiting for it to return`
            : `waiting for the peer to attach ${this.windowPath}`,
        );
      return;
    }
    if (this.peerEpoch !== 0 && peer.epoch !== this.peerEpoch) this.resetDevices('PeerRestarted');
    this.peerEpoch = peer.epoch;
    this.setCondition(
      'PeerConnected',
      'True',
      'PeerAttached',
      `peer ${this.peerAgent()} is on the window (epoch ${peer.epoch})`,
    );
    if (this.transitionTo(['Connecting'], 'Negotiating', 'PeerAttached')) this.evaluate();
  }

  /**
   * Stream transport: this agent's private window with every device, then the connection
   * (the device side listens, the driver side dials). False when it must be retried.
   */
  private openStream(t: StreamTransport): boolean {
    const dp = this.deps.dataPlane;
    if (!dp.openStream) {
      this.fail('TransportUnsupported', 'this data plane has no stream transport');
      return false;
    }
    const scheme =
      t.protocol === StreamProtocol.STREAM_PROTOCOL_UNIX
        ? 'unix'
        : t.protocol === StreamProtocol.STREAM_PROTOCOL_VSOCK
          ? 'vsock'
          : 'tcp';
    const where = this.role === 'device' && t.listenAddress !== '' ? t.listenAddress : t.address;
    const address = `${scheme}:${where}`;
    const unixRoot = scheme === 'unix' && this.deps.socketRoot ? this.deps.socketRoot(where) : null;
    if (scheme === 'unix' && this.deps.socketRoot && unixRoot === null) {
      this.fail('PathNotAllowed', `stream socket ${where} is not inside this agent's hostPaths.socketDir`);
      return false;
    }
    let w: DataPlaneWindow;
    try {
      w = dp.openStream(
        { link: this.name, role: this.role, devices: [...this.devices.values()].map((d) => d.native) },
        (e) => this.onNativeEvent(e),
      );
    } catch (err) {
      this.retryLater('WindowOpenFailed', `stream window: ${errText(err)}`);
      return false;
    }
    this.window = w;
    try {
      for (const d of this.devices.values()) this.addNative(d);
      for (const d of this.devices.values()) this.devices.startBackend(d);
      w.startStream?.({
        address,
        unixRoot,
        secret: t.secret === '' ? null : new TextEncoder().encode(t.secret),
        allowPlain: t.secret === '' && t.allowPlaintext,
        idleMs: t.idleTimeoutMs,
        tls: streamTlsFor(this.spec, t, this.deps.nodeName, this.deps.streamTls ?? null),
      });
    } catch (err) {
      this.closeWindow(false);
      this.retryLater(
        'StreamStartFailed',
        `${this.role === 'device' ? 'listen on' : 'dial'} ${address}: ${errText(err)}`,
      );
      return false;
    }
    return true;
  }

  /** The stream connection as status and metrics show it (no secret in it), or undefined. */
  streamStatus(): StreamStatus | undefined {
    const s = this.streamTransport ? this.window?.stream?.() : null;
    if (!s) return undefined;
    return {
      state: s.state,
      peerAddress: s.peer,
      rttNs: s.rttNs,
      bytesSent: s.bytesSent,
      bytesReceived: s.bytesReceived,
      connections: s.connections,
      disconnects: s.disconnects,
      lastError: s.lastError,
      security: s.security,
    };
  }

  private peerAgent(): string {
    const other = this.spec.endpoints.find((e) => e.agent !== this.deps.nodeName)?.agent;
    if (other !== undefined) return other;
    // One agent endpoint: the far end is vop-card, named through the transport.
    const pci = pciBarOf(this.linkValue);
    return pci ? `vop-card (${pciWindowName(pci, this.role === 'device' ? 'driver' : 'device')})` : '?';
  }

  /** The attacher refused the window it found (its layout does not validate): say why, keep looking. */
  private windowRejected(error: string): void {
    const message = `refused the window ${this.windowPath} of agent ${this.peerAgent()}: ${error}`;
    const prev = this.conditions.get('PeerConnected');
    if (prev?.reason !== 'WindowRejected' || prev.message !== message) {
      this.log.warn({ code: 'WINDOW_REJECTED', path: this.windowPath, error }, 'window refused');
      this.event('WindowRejected', message);
    }
    this.setCondition('PeerConnected', 'False', 'WindowRejected', message);
    this.schedule(this.nextPoll(), () => this.connect());
  }

  /** The native data plane stopped this link for good because of the peer: fail the link, not the agent. */
  private peerFailed(reason: string): void {
    const s = this.stateValue;
    if (s === 'Failed' || s === 'Terminating' || s === 'Pending') return;
    const f = LINK_FAILURES[reason] ?? { reason: 'DataPlaneFailed', message: `the data plane failed (${reason})` };
    const message = f.message.replace('%p', this.peerAgent()).replace('%w', this.windowPath);
    this.log.warn({ code: 'LINK_FAILED', reason }, message);
    // Ready may only fail through Degraded (link-lifecycle.ts).
    this.transitionTo(['Ready'], 'Degraded', f.reason);
    this.fail(f.reason, message);
  }

  private waitingForPeer(message: string, reason?: string): void {
    if (!this.ownTableIntact()) {
      // Rewritten while we waited (a hostile or broken peer): lay the window out afresh, so
      // that the next peer incarnation finds a table that validates.
      this.retryLater('WindowTampered', `the device table this side published in ${this.windowPath} was rewritten`);
      return;
    }
    const late = monotonicMs() - this.connectingSince > PEER_LATE_MS;
    this.setCondition(
      'PeerConnected',
      'False',
      reason ?? (late ? 'PeerNotResponding' : 'WaitingForPeer'),
      `${message} (agent ${this.peerAgent()})`,
    );
    this.schedule(this.nextPoll(), () => this.connect());
  }

  /**
   * Resets every device after the peer restarted or left, except the resumable ones
   * (virtio-blk with its in-flight journal): a restarted device side resumes their rings,
   * and one that cannot asks for the reset itself (needs-reset).
   */
  private resetDevices(reason: string): void {
    for (const d of this.devices.values()) {
      if (!this.window || !d.added || d.native.resumable) continue;
      try {
        this.window.resetDevice(d.native.devId);
        d.broken = '';
      } catch (err) {
        this.log.warn({ err, code: 'DEVICE_RESET_FAILED', device: d.device.name, reason }, 'device reset failed');
      }
    }
  }

  /** Compares the data plane against the spec; runs while Negotiating, Ready and Degraded. */
  private evaluate(): void {
    const w = this.window;
    const s = this.stateValue;
    if (!w || (s !== 'Negotiating' && s !== 'Ready' && s !== 'Degraded')) return;
    const failure = w.failure();
    if (failure !== null) {
      this.peerFailed(failure);
      return;
    }
    const peer = w.peer();
    if (peer.state !== 'up') {
      this.onPeerGone();
      return;
    }
    if (peer.epoch !== this.peerEpoch) {
      this.onPeerReset(peer.epoch);
      return;
    }
    const { notReady, broken } = this.devices.assess(w, this.side);
    if (notReady.length === 0)
      this.setCondition('DevicesReady', 'True', 'AllDevicesReady', `${this.devices.size} device(s) running`);
    else this.setCondition('DevicesReady', 'False', 'DevicesNotReady', `not ready: ${notReady.join(', ')}`);
    if (broken.length === 0) this.setCondition('QueueHealthy', 'True', 'QueuesHealthy', 'no broken queue');
    else this.setCondition('QueueHealthy', 'False', 'QueueBroken', `broken: ${broken.join(', ')}`);

    if (notReady.length === 0 && broken.length === 0)
      this.transitionTo(['Negotiating', 'Degraded'], 'Ready', 'AllDevicesReady');
    else if (broken.length > 0) {
      this.transitionTo(['Negotiating', 'Ready'], 'Degraded', 'QueueBroken');
      this.repairBroken();
    } else if (s === 'Ready') this.transitionTo(['Ready'], 'Degraded', 'DevicesNotReady');
    if (this.stateValue === 'Ready') this.schedule(READY_POLL_MS, () => this.evaluate());
    else if (this.stateValue === 'Negotiating' || this.stateValue === 'Degraded') {
      const waitingOnBackends =
        notReady.length > 0 && broken.length === 0 && [...this.devices.values()].every((d) => d.ready);
      const next = Math.min(this.devices.nextRetryMs(), READY_POLL_MS);
      this.schedule(waitingOnBackends ? Math.max(CONNECT_POLL_MS, next) : this.nextPoll(), () => this.evaluate());
    }
  }

  /** Device-level reset-and-retry for broken queues, backed off per device. */
  private repairBroken(): void {
    for (const d of this.devices.values()) {
      if (d.broken === '' || !this.window) continue;
      d.resets += 1;
      if (d.resets > MAX_RETRY_ATTEMPTS) {
        this.fail('RetryBudgetExhausted', `device ${d.device.name} kept breaking: ${d.broken}`);
        return;
      }
      this.event(
        'QueueBroken',
        `device ${d.device.name}: ${d.broken}; device reset ${d.resets}/${MAX_RETRY_ATTEMPTS}`,
        d.device.name,
      );
      try {
        this.window.resetDevice(d.native.devId);
      } catch (err) {
        this.retryLater('DeviceResetFailed', `${d.device.name}: ${errText(err)}`);
        return;
      }
    }
  }

  private nextPoll(): number {
    // Bring-up latency matters most right after a transition: poll fast for a while.
    if (monotonicMs() - this.lastTransitionMono < FAST_POLL_WINDOW_MS) return CONNECT_POLL_MS;
    const ms = this.pollMs;
    this.pollMs = Math.min(MAX_POLL_MS, Math.ceil(this.pollMs * 1.5));
    return ms;
  }

  /** Re-evaluates on the next turn when the link is past Connecting (never clobbers the connect poll). */
  private evaluateSoon(): void {
    const s = this.stateValue;
    if (s === 'Negotiating' || s === 'Ready' || s === 'Degraded') this.schedule(0, () => this.evaluate());
  }

  private onPeerGone(): void {
    this.event('PeerGone', `peer ${this.peerAgent()} left the window or stopped its heartbeat`);
    this.setCondition('PeerConnected', 'False', 'PeerGone', `peer ${this.peerAgent()} is gone`);
    // Both sides keep the window: a restarted peer takes its side back. The attacher
    // drops its mapping only when the creator put a new window file in its place.
    if (this.side === 'attacher' && this.window?.replaced()) this.closeWindow(false);
    else this.resetDevices('PeerGone');
    this.transitionTo(['Negotiating', 'Ready', 'Degraded'], 'Resetting', 'PeerGone');
    this.schedule(CONNECT_POLL_MS, () => {
      if (this.transitionTo(['Resetting'], 'Connecting', 'PeerGone')) this.connect();
    });
  }

  private onPeerReset(epoch: number): void {
    this.event('PeerRestarted', `peer ${this.peerAgent()} re-attached (epoch ${this.peerEpoch} -> ${epoch})`);
    this.transitionTo(['Negotiating', 'Ready', 'Degraded'], 'Resetting', 'PeerRestarted');
    this.schedule(0, () => {
      if (this.transitionTo(['Resetting'], 'Connecting', 'PeerRestarted')) this.connect();
    });
  }

  private onNativeEvent(e: DataPlaneEvent): void {
    this.pollMs = CONNECT_POLL_MS;
    switch (e.type) {
      case 'peer-gone':
        if (this.stateValue === 'Ready' || this.stateValue === 'Degraded' || this.stateValue === 'Negotiating')
          this.onPeerGone();
        break;
      case 'peer-reset':
        if (this.stateValue === 'Ready' || this.stateValue === 'Degraded' || this.stateValue === 'Negotiating')
          this.onPeerReset(e.epoch);
        break;
      case 'peer-up':
        if (this.stateValue === 'Connecting') this.schedule(0, () => this.connect());
        break;
      case 'backend-failed': {
        const d = this.devices.byDevId(e.devId);
        this.event(
          'BackendFailed',
          `device ${d?.device.name ?? e.devId}: the native backend failed (${e.error})`,
          d?.device.name,
        );
        if (this.stateValue === 'Ready' || this.stateValue === 'Degraded' || this.stateValue === 'Negotiating')
          this.schedule(0, () => this.evaluate());
        break;
      }
      case 'link-failed':
        this.peerFailed(e.reason);
        break;
      case 'queue-broken':
      case 'device-ready':
      case 'device-removed':
        if (this.stateValue === 'Ready' || this.stateValue === 'Degraded' || this.stateValue === 'Negotiating')
          this.schedule(0, () => this.evaluate());
        break;
      default: {
        const never: never = e;
        this.log.warn({ event: never }, 'unknown data plane event');
      }
    }
  }

  // ---------------------------------------------------------------- operations

  /** Moves to a new spec: only what differs changes (devices hot added/removed). */
  update(next: Link): void {
    const prev = this.linkValue;
    this.linkValue = next;
    const ps = prev.spec;
    const ns = next.spec;
    if (!ps || !ns) return;
    // A stream link's devices are fixed when its connection starts (the device table travels in
    // the handshake): any device change restarts it, as a new secret does (rotation).
    const identityChanged =
      !specEqual({ ...ps, devices: [] }, { ...ns, devices: [] }) ||
      (this.streamTransport !== null && !specEqual(ps, ns));
    if (identityChanged) {
      this.closeWindow(this.side === 'creator');
      this.devices.clear();
      for (const d of ns.devices) this.devices.add(d);
      this.restart('SpecChanged');
      return;
    }
    const wanted = new Map(ns.devices.map((d) => [d.name, d]));
    for (const d of [...this.devices.values()]) {
      const w = wanted.get(d.device.name);
      if (
        w &&
        specEqual(
          { endpoints: [], transport: undefined, devices: [w] },
          { endpoints: [], transport: undefined, devices: [d.device] },
        )
      )
        continue;
      this.removeDeviceRuntime(d);
    }
    for (const d of ns.devices) {
      if (this.devices.has(d.name)) continue;
      const rt = this.devices.add(d);
      try {
        this.addNative(rt);
        this.event('DeviceAdded', `device ${d.name} added`, d.name);
      } catch (err) {
        if (err instanceof NativeError && err.code === 'ENOSPC') {
          this.event('WindowTooSmall', `device ${d.name} does not fit the window; recreating it larger`, d.name);
          this.restart('WindowTooSmall');
          return;
        }
        this.retryLater('DeviceSetupFailed', `${d.name}: ${errText(err)}`);
        return;
      }
    }
    this.conditions.set(
      'Ready',
      this.stateValue === 'Ready' ? 'True' : 'False',
      this.conditions.get('Ready')?.reason ?? 'SpecChanged',
      this.conditions.get('Ready')?.message ?? '',
      this.generation,
    );
    if (this.stateValue === 'Failed') this.restart('SpecChanged');
    else {
      this.deps.onStatus(this);
      this.schedule(0, () => this.evaluate());
    }
  }

  private removeDeviceRuntime(d: DeviceRuntime): void {
    this.devices.remove(d);
    if (this.window && d.added) {
      try {
        this.window.removeDevice(d.native.devId);
      } catch (err) {
        this.log.warn({ err, device: d.device.name }, 'native device removal failed');
      }
    }
    this.event('DeviceRemoved', `device ${d.device.name} removed`, d.device.name);
  }

  private restart(reason: string): void {
    this.attempts = 0;
    if (this.stateValue === 'Failed') {
      if (this.transitionTo(['Failed'], 'Connecting', reason)) this.connect();
      return;
    }
    if (this.stateValue === 'Pending') {
      this.start();
      return;
    }
    this.closeWindow(this.side === 'creator');
    this.transitionTo(['Connecting', 'Negotiating', 'Ready', 'Degraded'], 'Resetting', reason);
    this.schedule(0, () => {
      if (this.transitionTo(['Resetting'], 'Connecting', reason)) this.connect();
    });
  }

  /** ResetLink: tears the data plane down and brings it up again; both sides renegotiate. */
  reset(reason: string): void {
    this.event('LinkReset', reason === '' ? 'reset requested' : `reset requested: ${reason}`);
    this.restart('ResetRequested');
  }

  /** DeleteLink: stops everything and frees the window. */
  terminate(): void {
    this.transitionTo(
      ['Pending', 'Connecting', 'Negotiating', 'Ready', 'Degraded', 'Resetting', 'Failed'],
      'Terminating',
      'Deleted',
    );
    this.clearTimer();
    this.closeWindow(this.side === 'creator');
  }

  /** Agent shutdown: stop workers and unmap, keep the window file for the next start. */
  shutdown(): void {
    this.clearTimer();
    this.closeWindow(false);
  }

  // ---------------------------------------------------------------- views

  get meta(): NonNullable<Link['meta']> {
    if (!this.linkValue.meta) throw new Error('link without meta');
    return this.linkValue.meta;
  }

  /** The desired state as applied (meta + spec, no status). */
  get desired(): Link {
    return this.linkValue;
  }

  toLink(): Link {
    return {
      meta: this.linkValue.meta,
      spec: redactSpec(this.linkValue.spec),
      status: {
        phase: PHASE_OF[this.stateValue],
        observedGeneration: BigInt(this.generation),
        conditions: this.conditions.list(),
        devices: deviceStatuses(this.devices.values(), this.window, this.windowPath),
        epoch: this.epoch,
        resetCount: this.resetCount,
        lastTransitionTime: this.lastTransition,
        endpointPhases: {},
        stream: this.streamStatus(),
        transport: this.transportStatus(),
      },
    };
  }

  /** This endpoint's window and doorbells (GetLink, WatchLinks, the Sync stream). */
  private transportStatus(): TransportStatus {
    const pci = pciBarOf(this.linkValue);
    const v = this.window?.transportView() ?? null;
    return {
      kind: pci ? 'pci-bar' : 'shm',
      window: this.windowPath,
      sizeBytes: v?.sizeBytes ?? 0n,
      offsetBytes: pci?.offsetBytes ?? 0n,
      bar: pci ? pciBarName(pci, this.role) : '',
      ownId: v?.ownId ?? -1,
      peerId: v?.peerId ?? -1,
      doorbell: pci ? pciDoorbellName(pci, this.role) : 'futex',
      mapping: v?.mapping ?? '',
      side: this.side,
    };
  }

  /** What /metrics shows about this link, read at scrape time. */
  metricsView(): {
    state: LinkState;
    conditions: ReturnType<ConditionSet['list']>;
    resets: number;
    lastTransition: Date;
    pollNs: bigint;
    sleepNs: bigint;
    doorbells: LinkDoorbells | null;
  } {
    // Worker counters restart with each window (a counter reset to Prometheus).
    const t = this.window?.workerTimes() ?? { pollNs: 0n, sleepNs: 0n };
    const pci = pciBarOf(this.linkValue);
    const v = pci ? (this.window?.transportView() ?? null) : null;
    return {
      doorbells: pci && v ? { vector: pci.vector, sent: v.signals, received: v.interrupts, polls: v.polls } : null,
      state: this.stateValue,
      conditions: this.conditions.list(),
      resets: this.resetCount,
      lastTransition: this.lastTransition,
      pollNs: t.pollNs,
      sleepNs: t.sleepNs,
    };
  }

  /** Per-device, per-queue counters read from the native layer now. */
  stats(): DeviceStats[] {
    try {
      return deviceStats(this.devices.values(), this.window);
    } catch (err) {
      // The window's device table no longer validates (a hostile peer rewrote it): the link is
      // reset by its own checks; the answer carries what this process knows without the window.
      if (!(err instanceof NativeError)) throw err;
      return deviceStats(this.devices.values(), null);
    }
  }

  /** Each device's own native counters, typed (for /metrics), read now. */
  deviceCounters(): DeviceCounterView[] {
    try {
      return deviceCounters(this.devices.values(), this.window);
    } catch (err) {
      if (!(err instanceof NativeError)) throw err;
      return deviceCounters(this.devices.values(), null);
    }
  }

  /**
   * A pci-bar creator's device table lives in memory the peer can write: true while every entry
   * this side published still reads back valid (the native layer validates each entry it reads).
   */
  private ownTableIntact(): boolean {
    if (!this.window || this.side !== 'creator' || !pciBarOf(this.linkValue)) return true;
    try {
      for (const d of this.devices.values()) if (d.added) this.window.counters(d.native.devId);
      return true;
    } catch (err) {
      if (err instanceof NativeError && err.code === 'EPROTO') return false;
      throw err;
    }
  }

  /** Console port of a device, when its backend offers one. */
  consoleOf(device: string): { found: boolean; port: BackendInstance['console'] } {
    const d = this.devices.get(device);
    if (!d) return { found: false, port: null };
    return { found: true, port: d.kind === 'console' ? (d.instance?.console ?? null) : null };
  }

  deviceKind(device: string): DeviceKindName | null {
    return this.devices.get(device)?.kind ?? null;
  }
}
