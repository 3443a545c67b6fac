/**
 * The devices of one link endpoint: each device's spec, what the data plane has of it
 * (added, ready, broken) and its backend instance, started once the device runs and
 * restarted with a backoff when its start fails (the peer's half usually lags by
 * milliseconds, so the first retries are fast). LinkRuntime drives it; nothing here
 * changes the link's lifecycle state.
 */
import type { Device } from '../../../lib/proto/types';
import { monotonicMs } from '../../../lib/src/clock';
import type { Logger } from '../../../lib/src/logger';
import { backoffDelayMs, type BackoffPolicy } from '../../../lib/src/backoff';
import {
  deviceKindName,
  type BackendInstance,
  type BackendRegistry,
  type DeviceBackend,
  type DeviceKindName,
  type LinkIdentity,
} from '../backends/device-backend';
import type { DataPlaneWindow, LinkDevice } from './data-plane';

/** Device backend start retries: from 10 ms, capped at 50 ms for the first 60 tries, then the link backoff. */
export const BACKEND_RETRY_BASE_MS = 10;
export const BACKEND_FAST_RETRY_MAX_MS = 50;
export const BACKEND_FAST_RETRIES = 60;
/** Reset-and-retry backoff of a link (and of a backend past its fast retries): 100 ms doubling to 5 s, +/- 20 %. */
export const LINK_BACKOFF: BackoffPolicy = { initialMs: 100, maxMs: 5000, jitter: [0.8, 1.2] };
/** A backend's fast retries: from 10 ms (then capped at BACKEND_FAST_RETRY_MAX_MS). */
const BACKEND_FAST_BACKOFF: BackoffPolicy = { ...LINK_BACKOFF, initialMs: BACKEND_RETRY_BASE_MS };

/** One device of the link on this endpoint. */
export interface DeviceRuntime {
  device: Device;
  readonly kind: DeviceKindName;
  /** What the data plane publishes and serves for it. */
  readonly native: LinkDevice;
  readonly backend: DeviceBackend;
  /** The running backend, a placeholder while it starts, or null. */
  instance: BackendInstance | null;
  /** Last backend start failure ('' when none) and when to try again (monotonic ms). */
  backendError: string;
  /** True while start() runs (the device is not ready until its surface is). */
  backendStarting: boolean;
  backendFailures: number;
  backendRetryAt: number;
  /** Published (creator) / bound (attacher) on the current window. */
  added: boolean;
  /** Both sides bound it and its queues run. */
  ready: boolean;
  /** Broken queues ("rx:avail_idx_jump,..."), '' when healthy. */
  broken: string;
  /** Device resets since the link was last Ready. */
  resets: number;
}

export interface LinkDevicesDeps {
  readonly backends: BackendRegistry;
  readonly log: Logger;
  /** The link as backends see it (name, annotations). */
  link(): LinkIdentity;
  /** This endpoint's virtio role on the link. */
  role(): 'device' | 'driver';
  /** The window now (a backend that started on an older one is stopped). */
  window(): DataPlaneWindow | null;
  /** A backend started or failed: status changed, evaluate soon. */
  changed(): void;
  /** A backend kept failing past its fast retries (reported once per failure streak). */
  gaveUp(d: DeviceRuntime): void;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class LinkDevices {
  private readonly byName = new Map<string, DeviceRuntime>();

  constructor(private readonly deps: LinkDevicesDeps) {}

  get size(): number {
    return this.byName.size;
  }

  values(): IterableIterator<DeviceRuntime> {
    return this.byName.values();
  }

  get(name: string): DeviceRuntime | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  byDevId(devId: number): DeviceRuntime | undefined {
    return [...this.byName.values()].find((d) => d.native.devId === devId);
  }

  /** Adds (or replaces) the runtime of device; throws when no backend serves its kind. */
  add(device: Device): DeviceRuntime {
    const kind = deviceKindName(device);
    const backend = kind ? this.deps.backends.get(kind) : undefined;
    if (!kind || !backend) throw new Error(`no backend for device ${device.name}`);
    const d: DeviceRuntime = {
      device,
      kind,
      native: backend.describe(device, this.deps.role(), this.deps.link()),
      backend,
      instance: null,
      backendError: '',
      backendStarting: false,
      backendFailures: 0,
      backendRetryAt: 0,
      added: false,
      ready: false,
      broken: '',
      resets: 0,
    };
    this.byName.set(device.name, d);
    return d;
  }

  /** Forgets a device, stopping its backend. */
  remove(d: DeviceRuntime): void {
    this.byName.delete(d.device.name);
    this.stopBackend(d);
  }

  /** Forgets every device (their backends are stopped by stopBackends first). */
  clear(): void {
    this.byName.clear();
  }

  private stopBackend(d: DeviceRuntime): void {
    const inst = d.instance;
    d.instance = null;
    if (inst)
      inst.stop().catch((err: unknown) => this.deps.log.warn({ err, device: d.device.name }, 'backend stop failed'));
  }

  /** The window went away: stop every backend and forget what it had (they start again when their devices run). */
  windowClosed(): void {
    for (const d of this.byName.values()) {
      d.backendError = '';
      d.backendStarting = false;
      d.backendFailures = 0;
      d.backendRetryAt = 0;
      this.stopBackend(d);
      d.added = false;
      d.ready = false;
      d.broken = '';
    }
  }

  /**
   * Reads what the data plane has of every device now (ready, broken queues), starts the
   * backends of the devices that run (the creator's as soon as they are published), and
   * says which are not ready (and why) and which have broken queues.
   */
  assess(w: DataPlaneWindow, side: 'creator' | 'attacher'): { notReady: string[]; broken: string[] } {
    const notReady: string[] = [];
    const broken: string[] = [];
    for (const d of this.byName.values()) {
      d.ready = d.added && w.deviceReady(d.native.devId);
      d.broken = w
        .counters(d.native.devId)
        .map((q) => (q.broken !== '' ? `${d.native.queues[q.index]?.name ?? q.index}:${q.broken}` : ''))
        .filter((x) => x !== '')
        .join(',');
      if (d.ready || (side === 'creator' && d.added)) this.startBackend(d);
      const issue = d.ready ? '' : w.deviceIssue(d.native.devId);
      if (!d.ready) notReady.push(issue === '' ? d.device.name : `${d.device.name} (refused: ${issue})`);
      else if (d.backendError !== '') notReady.push(`${d.device.name} (backend: ${d.backendError})`);
      else if (d.backendStarting) notReady.push(`${d.device.name} (backend starting)`);
      if (d.broken !== '') broken.push(`${d.device.name}(${d.broken})`);
    }
    return { notReady, broken };
  }

  /** Ms until the soonest pending backend retry (Infinity when none waits). */
  nextRetryMs(): number {
    return Math.min(
      ...[...this.byName.values()].filter((d) => d.backendError !== '').map((d) => d.backendRetryAt - monotonicMs()),
      Infinity,
    );
  }

  /** Starts d's backend on the current window unless it runs, is starting, or waits for its retry time. */
  startBackend(d: DeviceRuntime): void {
    const w = this.deps.window();
    if (!w || d.instance || monotonicMs() < d.backendRetryAt) return;
    const placeholder: BackendInstance = { endpoints: {}, console: null, stop: async () => undefined };
    d.instance = placeholder;
    d.backendStarting = true;
    const link = this.deps.link().name;
    d.backend
      .start({
        link,
        device: d.device,
        role: this.deps.role(),
        devId: d.native.devId,
        window: w,
        log: this.deps.log.child({ device: d.device.name }),
      })
      .then((inst) => {
        if (d.instance === placeholder) d.backendStarting = false;
        if (d.instance === placeholder && this.deps.window() === w) {
          d.instance = inst;
          d.backendError = '';
          d.backendFailures = 0;
          this.deps.changed();
        } else void inst.stop();
      })
      .catch((err: unknown) => {
        if (d.instance !== placeholder) return;
        d.backendStarting = false;
        d.instance = null;
        d.backendFailures += 1;
        d.backendError = errText(err);
        // Fast retries for the first seconds (the peer's half usually lags by milliseconds), then back off.
        d.backendRetryAt =
          monotonicMs() +
          (d.backendFailures <= BACKEND_FAST_RETRIES
            ? Math.min(BACKEND_FAST_RETRY_MAX_MS, backoffDelayMs(BACKEND_FAST_BACKOFF, d.backendFailures - 1))
            : backoffDelayMs(LINK_BACKOFF, d.backendFailures - BACKEND_FAST_RETRIES - 1));
        // A start can race the peer's half (the device not published or not running yet): quiet at first.
        if (d.backendFailures > BACKEND_FAST_RETRIES)
          this.deps.log.warn(
            { err, code: 'BACKEND_START_FAILED', device: d.device.name, failures: d.backendFailures },
            'backend failed to start',
          );
        else this.deps.log.debug({ err, device: d.device.name }, 'backend not started yet');
        if (d.backendFailures === BACKEND_FAST_RETRIES + 1) this.deps.gaveUp(d);
        this.deps.changed();
      });
  }
}
