/**
 * The agent's side of AgentSyncService.Sync: one long-lived stream to vop-controller.
 *
 * It registers (identity, addresses, capabilities, the desired-links version it last
 * acknowledged and the controller-managed links it actually runs), heartbeats at the
 * interval the controller asks for, reports link status only when it changes, and
 * applies DesiredLinks through the link manager (owner: controller), acknowledging each
 * version with the links it rejected and why. When the stream breaks it reconnects
 * with capped exponential backoff and jitter and resumes from its acknowledged version
 * (kept in the state directory across restarts). Links keep running while the
 * controller is away.
 *
 * A version too large for one message arrives in parts (DesiredLinks.more); the
 * parts are collected and the version is applied only once the last one is in, so a
 * half-received snapshot never removes links. At most maxLinksPerAgent upserts are
 * held; the rest of an oversized version are rejected by name.
 *
 * States (one guarded transition function, logged as "A -> B"):
 *   idle        created, not started
 *   connecting  stream opened, Register sent, waiting for Registered
 *   registered  Registered received: heartbeats flow, desired links are applied
 *   backoff     stream ended or failed; a reconnect timer is pending
 *   stopped     stop() called; terminal
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

import {
  credentials,
  status as GrpcStatus,
  type ChannelCredentials,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';

import {
  AgentSyncServiceClient,
  type DesiredLinks,
  type SyncRequest,
  type SyncResponse,
} from '../../../lib/proto/controller';
import type { AgentAddresses, AgentIdentity, Capabilities, Link, LinkStatus } from '../../../lib/proto/types';
import { writeFileAtomicSync } from '../../../lib/src/atomic-file';
import { ServerError } from '../../../lib/src/errors';
import { DEFAULT_LIMITS } from '../../../lib/src/limits';
import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';
import type { Logger } from '../../../lib/src/logger';
import { linkStatusEqual } from '../../../lib/src/status-equal';
import type { LinkManagerApi, LinkOwner } from '../links/link-manager-api';

export type SyncState = 'idle' | 'connecting' | 'registered' | 'backoff' | 'stopped';

export const STATE_FILE = 'controller-sync.json';
/** Heartbeat interval until the controller says otherwise. */
export const DEFAULT_HEARTBEAT_MS = 5000;
/** Status changes are coalesced over this window before being sent. */
export const STATUS_FLUSH_MS = 50;
/** Reconnect delay: 250 ms doubling to 15 s, each scaled by 0.8-1.2 at random. */
export const RECONNECT_BACKOFF: BackoffPolicy = { initialMs: 250, maxMs: 15_000, jitter: [0.8, 1.2] };

export interface SyncClientOptions {
  readonly address: string;
  /** TLS to the controller (credentials that follow certificate reloads); absent: plaintext. */
  readonly tls?: { readonly credentials: ChannelCredentials; readonly serverName?: string | undefined } | undefined;
  readonly links: LinkManagerApi;
  readonly log: Logger;
  readonly stateDir: string;
  readonly identity: () => AgentIdentity;
  readonly addresses: () => AgentAddresses;
  readonly capabilities: () => Capabilities;
  readonly version: string;
  /** Upserts of one desired version held while its parts arrive (default DEFAULT_LIMITS). */
  readonly maxLinksPerAgent?: number;
}

/** A desired version whose parts are still arriving. */
interface PartialDesired {
  readonly version: bigint;
  readonly fullSnapshot: boolean;
  readonly upserts: Link[];
  readonly deletes: string[];
  /** Links refused while assembling (over maxLinksPerAgent), with the reason. */
  readonly rejected: Record<string, string>;
  parts: number;
}

/** What the agent reports of a link at registration: what the controller compares, no labels or annotations. */
function registeredLink(l: Link): Link {
  const m = l.meta;
  return {
    meta: m ? { ...m, labels: {}, annotations: {} } : undefined,
    spec: l.spec,
    status: l.status,
  };
}

function isManaged(l: Link): boolean {
  return (l.meta?.managedBy ?? '') !== '';
}

export class ControllerSyncClient {
  private state: SyncState = 'idle';
  private readonly client: AgentSyncServiceClient;
  /** Valid in connecting and registered. */
  private call: ClientDuplexStream<SyncRequest, SyncResponse> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly backoff = new Backoff(RECONNECT_BACKOFF);
  private heartbeatSeq = 0n;
  private ackedVersion = 0n;
  /** Desired versions are applied one after another, in arrival order. */
  private applying: Promise<void> = Promise.resolve();
  /** Valid while the parts of a desired version arrive on the current stream. */
  private partial: PartialDesired | undefined;
  /** Links an assembled version rejected before it was applied, by version. */
  private readonly preRejected = new Map<bigint, Record<string, string>>();
  /** Links whose status changed since the last flush. */
  private readonly dirty = new Set<string>();
  private readonly deleted = new Set<string>();
  /** Status last sent per link, on the current stream (undefined: sent without a status). */
  private readonly sentStatus = new Map<string, LinkStatus | undefined>();
  private unsubscribe: (() => void) | undefined;
  private readonly log: Logger;

  constructor(private readonly opts: SyncClientOptions) {
    this.log = opts.log;
    let creds: ChannelCredentials = credentials.createInsecure();
    const channelOptions: Record<string, string | number> = {
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_reconnect_backoff_ms': 10_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    };
    if (opts.tls) {
      creds = opts.tls.credentials;
      if (opts.tls.serverName) channelOptions['grpc.ssl_target_name_override'] = opts.tls.serverName;
    }
    this.client = new AgentSyncServiceClient(opts.address, creds, channelOptions);
    this.ackedVersion = this.loadAckedVersion();
  }

  get currentState(): SyncState {
    return this.state;
  }

  private transitionTo(from: readonly SyncState[], to: SyncState, reason?: string): boolean {
    if (!from.includes(this.state)) return false;
    this.log.debug({ from: this.state, to, reason }, `sync ${this.state} -> ${to}`);
    this.state = to;
    switch (to) {
      case 'connecting':
      case 'registered':
      case 'idle':
        break;
      case 'backoff': {
        this.teardownStream();
        const delay = this.backoff.next();
        this.log.info({ delayMs: delay, reason }, 'controller stream down; reconnecting after backoff');
        this.reconnectTimer = setTimeout(() => {
          this.reconnectTimer = undefined;
          this.connect();
        }, delay);
        this.reconnectTimer.unref();
        break;
      }
      case 'stopped':
        this.teardownStream();
        if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
        this.unsubscribe?.();
        this.client.close();
        break;
      default:
        throw new Error(`unknown sync state ${String(to)}`);
    }
    return true;
  }

  start(): void {
    this.unsubscribe = this.opts.links.subscribe((change) => {
      if (change.type === 'event') return;
      const l = change.link;
      const name = l.meta?.name ?? '';
      if (!isManaged(l)) return;
      if (change.type === 'delete') this.deleted.add(name);
      else this.deleted.delete(name);
      this.dirty.add(name);
      this.scheduleFlush();
    });
    this.connect();
  }

  stop(): void {
    this.transitionTo(['idle', 'connecting', 'registered', 'backoff'], 'stopped');
  }

  private connect(): void {
    if (!this.transitionTo(['idle', 'backoff'], 'connecting')) return;
    const call = this.client.sync();
    this.call = call;
    this.partial = undefined;
    this.sentStatus.clear();
    call.on('data', (res: SyncResponse) => this.onMessage(call, res));
    call.on('error', (err: ServiceError) => {
      if (this.call !== call) return;
      if (err.code !== GrpcStatus.CANCELLED || this.state !== 'stopped')
        this.transitionTo(
          ['connecting', 'registered'],
          'backoff',
          `${GrpcStatus[err.code] ?? err.code}: ${err.details}`,
        );
    });
    call.on('end', () => {
      if (this.call === call)
        this.transitionTo(['connecting', 'registered'], 'backoff', 'stream ended by the controller');
    });
    const links = this.opts.links.list().filter(isManaged);
    for (const l of links) this.sentStatus.set(l.meta?.name ?? '', l.status);
    call.write({
      msg: {
        $case: 'register',
        value: {
          identity: this.opts.identity(),
          addresses: this.opts.addresses(),
          capabilities: this.opts.capabilities(),
          version: this.opts.version,
          ackedVersion: this.ackedVersion,
          links: links.map(registeredLink),
          acceptsChunkedDesired: true,
        },
      },
    });
  }

  private teardownStream(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    const call = this.call;
    this.call = undefined;
    if (call) {
      call.on('error', () => undefined);
      call.cancel();
    }
  }

  private onMessage(call: ClientDuplexStream<SyncRequest, SyncResponse>, res: SyncResponse): void {
    if (this.call !== call || !res.msg) return;
    if (res.msg.$case === 'registered') {
      if (!this.transitionTo(['connecting'], 'registered')) return;
      this.backoff.reset();
      const hb = res.msg.value.heartbeatInterval;
      const ms = hb ? Number(hb.seconds) * 1000 + Math.floor(hb.nanos / 1e6) : DEFAULT_HEARTBEAT_MS;
      this.heartbeatTimer = setInterval(
        () => {
          this.heartbeatSeq++;
          this.call?.write({ msg: { $case: 'heartbeat', value: { sequence: this.heartbeatSeq } } });
        },
        Math.max(100, ms || DEFAULT_HEARTBEAT_MS),
      );
      this.heartbeatTimer.unref();
      this.log.info(
        { controller: this.opts.address, heartbeatMs: ms, ackedVersion: String(this.ackedVersion) },
        'registered with the controller',
      );
      // Status that changed while we were away.
      for (const l of this.opts.links.list().filter(isManaged)) this.dirty.add(l.meta?.name ?? '');
      this.scheduleFlush();
      return;
    }
    const desired = this.assemble(res.msg.value);
    if (!desired) return;
    this.applying = this.applying
      .then(() => this.applyDesired(call, desired))
      .catch((err: unknown) => this.log.error({ err }, 'applying desired links failed'));
  }

  /**
   * Collects the parts of a desired version; returns the whole version once its last
   * part is in (a single-part version at once), else undefined.
   */
  private assemble(d: DesiredLinks): DesiredLinks | undefined {
    let p = this.partial;
    if (p && p.version !== d.version) {
      this.log.warn(
        { version: String(p.version), parts: p.parts, next: String(d.version) },
        'desired version abandoned before its last part; waiting for the next',
      );
      p = undefined;
    }
    if (!p && !d.more) return d;
    if (!p) {
      p = { version: d.version, fullSnapshot: d.fullSnapshot, upserts: [], deletes: [], rejected: {}, parts: 0 };
      this.partial = p;
    }
    p.parts++;
    const max = this.opts.maxLinksPerAgent ?? DEFAULT_LIMITS.maxLinksPerAgent;
    for (const l of d.upserts) {
      if (p.upserts.length < max) p.upserts.push(l);
      else
        p.rejected[l.meta?.name ?? ''] =
          `this agent runs at most ${max} links (limit maxLinksPerAgent); the version carries more`;
    }
    p.deletes.push(...d.deletes);
    if (d.more) return undefined;
    this.partial = undefined;
    this.log.debug(
      { version: String(p.version), parts: p.parts, upserts: p.upserts.length },
      'desired version assembled',
    );
    this.preRejected.set(p.version, p.rejected);
    return { version: p.version, fullSnapshot: p.fullSnapshot, upserts: p.upserts, deletes: p.deletes, more: false };
  }

  private owner(managedBy: string): LinkOwner {
    return { kind: 'controller', managedBy: managedBy === '' ? 'controller' : managedBy };
  }

  private async applyDesired(call: ClientDuplexStream<SyncRequest, SyncResponse>, d: DesiredLinks): Promise<void> {
    const rejected: Record<string, string> = { ...this.preRejected.get(d.version) };
    this.preRejected.delete(d.version);
    const links = this.opts.links;
    // A link refused while assembling is not removed by a snapshot either.
    const wanted = new Set<string>(Object.keys(rejected));
    for (const l of d.upserts) {
      const name = l.meta?.name ?? '';
      wanted.add(name);
      const owner = this.owner(l.meta?.managedBy ?? '');
      try {
        await links.apply(l, { owner, force: false, dryRun: false });
      } catch (err) {
        if (
          err instanceof ServerError &&
          err.code === GrpcStatus.ALREADY_EXISTS &&
          isManaged(links.get(name) ?? ({} as Link))
        ) {
          // Endpoints changed: the agent's link manager needs delete + create.
          try {
            await links.delete(name, { owner, force: true, resourceVersion: '' });
            await links.apply(l, { owner, force: false, dryRun: false });
            continue;
          } catch (err2) {
            rejected[name] = err2 instanceof Error ? err2.message : String(err2);
            continue;
          }
        }
        rejected[name] = err instanceof Error ? err.message : String(err);
      }
    }
    const toDelete = [...d.deletes];
    if (d.fullSnapshot)
      for (const l of links.list())
        if (isManaged(l) && !wanted.has(l.meta?.name ?? '')) toDelete.push(l.meta?.name ?? '');
    for (const name of toDelete) {
      const cur = links.get(name);
      if (!cur) continue;
      try {
        await links.delete(name, { owner: this.owner(cur.meta?.managedBy ?? ''), force: false, resourceVersion: '' });
      } catch (err) {
        rejected[name] = err instanceof Error ? err.message : String(err);
      }
    }
    this.ackedVersion = d.version;
    this.saveAckedVersion();
    const n = Object.keys(rejected).length;
    this.log.info(
      {
        version: String(d.version),
        full: d.fullSnapshot,
        upserts: d.upserts.length,
        deletes: toDelete.length,
        rejected: n,
      },
      'desired links applied',
    );
    if (n > 0) this.log.warn({ rejected }, 'desired links rejected');
    if (this.call === call && this.state === 'registered')
      call.write({ msg: { $case: 'ack', value: { version: d.version, rejected } } });
    this.flush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.state !== 'registered') return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flush();
    }, STATUS_FLUSH_MS);
    this.flushTimer.unref();
  }

  /** Sends LinkStatusUpdate for links whose status really changed. */
  private flush(): void {
    const call = this.call;
    if (!call || this.state !== 'registered') return;
    for (const name of this.dirty) {
      const l = this.opts.links.get(name);
      if (!l || this.deleted.has(name)) {
        if (this.sentStatus.has(name) || this.deleted.has(name))
          call.write({ msg: { $case: 'status', value: { name, status: undefined, deleted: true } } });
        this.sentStatus.delete(name);
        this.deleted.delete(name);
        continue;
      }
      if (this.sentStatus.has(name) && linkStatusEqual(this.sentStatus.get(name), l.status)) continue;
      this.sentStatus.set(name, l.status);
      call.write({ msg: { $case: 'status', value: { name, status: l.status, deleted: false } } });
    }
    this.dirty.clear();
  }

  private loadAckedVersion(): bigint {
    try {
      const raw = JSON.parse(readFileSync(path.join(this.opts.stateDir, STATE_FILE), 'utf8')) as {
        ackedVersion?: string;
        controller?: string;
      };
      return raw.controller === this.opts.address && typeof raw.ackedVersion === 'string'
        ? BigInt(raw.ackedVersion)
        : 0n;
    } catch {
      return 0n;
    }
  }

  private saveAckedVersion(): void {
    const file = path.join(this.opts.stateDir, STATE_FILE);
    try {
      writeFileAtomicSync(
        file,
        JSON.stringify({ controller: this.opts.address, ackedVersion: String(this.ackedVersion) }),
      );
    } catch (err) {
      this.log.warn({ err }, 'cannot persist the acknowledged desired-links version');
    }
  }
}
