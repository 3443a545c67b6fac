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
 * Several controller replicas: the agent is given their addresses and streams to the one that
 * leads. A replica that does not lead refuses the stream (UNAVAILABLE, NOT_LEADER, the leader's
 * address in the ErrorInfo metadata): the agent goes there next. An address that cannot be
 * reached is skipped for a few seconds; the next is tried after 0.1-1 s at random, and only when
 * every address failed does the reconnect back off exponentially. While replicas answer NOT_LEADER
 * (an election) the retries back off from 0.1 s to 5 s, each scaled by 0.5-1.5 at random: a whole
 * fleet arriving at once would starve the replica that is taking over.
 *
 * The store identity rule (lib/src/store-identity.ts): the agent remembers the store identity
 * (cluster id, generation) of the last version it applied, with the acknowledged version, and
 * applies a version only from the same store at the same or a later generation. A version from
 * another store, or an older copy of it, is held: nothing applied, nothing deleted, every link
 * keeps running; the ack says so (`held`), the condition StoreIdentity turns False (GetInfo), until
 * an operator adopts the agent on the controller (the version then carries `adopt`).
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
import { performance } from 'node:perf_hooks';

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
  type StoreIdentity,
  type SyncRequest,
  type SyncResponse,
} from '../../../lib/proto/controller';
import {
  ConditionStatus,
  type AgentAddresses,
  type AgentIdentity,
  type Capabilities,
  type Condition,
  type Link,
  type LinkStatus,
} from '../../../lib/proto/types';
import { writeFileAtomicSync } from '../../../lib/src/atomic-file';
import { errorInfoOf, ServerError } from '../../../lib/src/errors';
import { DEFAULT_LIMITS } from '../../../lib/src/limits';
import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';
import type { Logger } from '../../../lib/src/logger';
import { isLoopback, parseHostPort } from '../../../lib/src/net';
import { linkStatusEqual } from '../../../lib/src/status-equal';
import { storeConflict, type StoreConflict } from '../../../lib/src/store-identity';
import type { LinkManagerApi, LinkOwner } from '../links/link-manager-api';
import { vopLinkRef } from '../links/vop-link-join';

export type SyncState = 'idle' | 'connecting' | 'registered' | 'backoff' | 'stopped';

export const STATE_FILE = 'controller-sync.json';
/** Heartbeat interval until the controller says otherwise. */
export const DEFAULT_HEARTBEAT_MS = 5000;
/** Status changes are coalesced over this window before being sent. */
export const STATUS_FLUSH_MS = 50;
/** Reconnect delay once every address failed: 250 ms doubling to 15 s, each scaled by 0.8-1.2 at random. */
export const RECONNECT_BACKOFF: BackoffPolicy = { initialMs: 250, maxMs: 15_000, jitter: [0.8, 1.2] };
/** Delay before trying the next address after one failed (another replica may lead): 100 ms to 10x that, at random. */
export const NEXT_ADDRESS_DELAY_MS = 100;
/** While replicas answer NOT_LEADER (an election runs), retries back off to at most this. */
export const MAX_NOT_LEADER_DELAY_MS = 5000;

/**
 * The delay before the next attempt after `n` NOT_LEADER answers in a row: 100 ms doubling to
 * MAX_NOT_LEADER_DELAY_MS, scaled by 0.5-1.5 at random. A failover sends every agent of the fleet
 * to the replicas at once: without the spread, thousands of refusals a second starve the replica
 * that is about to take over (its lease renewals and the election wait behind them).
 */
export function notLeaderDelayMs(n: number, random: () => number = Math.random): number {
  const base = Math.min(MAX_NOT_LEADER_DELAY_MS, NEXT_ADDRESS_DELAY_MS * 2 ** Math.min(Math.max(0, n - 1), 6));
  return Math.round(base * (0.5 + random()));
}

/**
 * The delay before registering again after the leader throttled registrations (RESOURCE_EXHAUSTED,
 * REGISTRATIONS_THROTTLED): the retry time it named (a slot it reserved), scaled by 1-1.5 at random,
 * so a refused herd comes back spread out and never early; undefined when the error names none.
 */
export function throttledDelayMs(
  info: { reason: string; metadata: Record<string, string> } | undefined,
  random: () => number = Math.random,
): number | undefined {
  if (info?.reason !== 'REGISTRATIONS_THROTTLED') return undefined;
  return retryAfterDelayMs(info, random);
}

/**
 * The retry time a controller named (`retryAfterMs` in the ErrorInfo metadata: REGISTRATIONS_THROTTLED,
 * or NOT_LEADER from a replica pacing a fleet that looks for its leader), scaled by 1-1.5 at random;
 * undefined when it names none.
 */
export function retryAfterDelayMs(
  info: { metadata: Record<string, string> } | undefined,
  random: () => number = Math.random,
): number | undefined {
  const raw = info?.metadata.retryAfterMs;
  if (raw === undefined || raw === '') return undefined;
  const after = Number(raw);
  if (!Number.isFinite(after) || after < 0) return undefined;
  return Math.round(Math.min(after, 60_000) * (1 + 0.5 * random()));
}

/** The delay before trying the next address after one failed: spread over 0.1-1 s so a fleet does not arrive at once. */
export function nextAddressDelayMs(random: () => number = Math.random): number {
  return Math.round(NEXT_ADDRESS_DELAY_MS * (1 + 9 * random()));
}
/** An address that could not be reached is tried again only after the others, for this long. */
export const UNREACHABLE_MS = 3000;
/** The condition of the store identity rule (GetInfo). */
export const STORE_IDENTITY_CONDITION = 'StoreIdentity';

export interface SyncClientOptions {
  /** The controller replicas to dial (one or more); the agent streams to the one that leads. */
  readonly controllers: readonly string[];
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
  readonly storeIdentity: StoreIdentity | undefined;
  readonly adopt: boolean;
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

/** What controller-sync.json holds. */
interface SavedState {
  controller?: string;
  ackedVersion?: string;
  /** The store identity of the last applied version. */
  clusterId?: string;
  generation?: string;
}

export class ControllerSyncClient {
  private state: SyncState = 'idle';
  private readonly clients = new Map<string, AgentSyncServiceClient>();
  private readonly creds: ChannelCredentials;
  private readonly channelOptions: Record<string, string | number>;
  /** The address the current (or next) stream goes to. */
  private target: string;
  /** Address -> performance.now() until which it counts as unreachable. */
  private readonly unreachable = new Map<string, number>();
  /** NOT_LEADER answers in a row (an election): retries every MAX_NOT_LEADER_DELAY_MS at most. */
  private notLeader = 0;
  /** The store identity of the last version applied (persisted), undefined before the first. */
  private applied: StoreIdentity | undefined;
  /** What the controller of the current stream presents (Registered). */
  private presented: StoreIdentity | undefined;
  /** Set while the presented store conflicts with the applied one and no version was adopted. */
  private conflict: StoreConflict | undefined;
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
    if (opts.controllers.length === 0) throw new Error('ControllerSyncClient needs at least one controller address');
    this.log = opts.log;
    this.creds = credentials.createInsecure();
    this.channelOptions = {
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.max_reconnect_backoff_ms': 10_000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    };
    if (opts.tls) {
      this.creds = opts.tls.credentials;
      if (opts.tls.serverName) this.channelOptions['grpc.ssl_target_name_override'] = opts.tls.serverName;
    }
    this.target = opts.controllers[0] as string;
    const saved = this.loadState();
    this.ackedVersion =
      saved.controller === this.target && typeof saved.ackedVersion === 'string' ? BigInt(saved.ackedVersion) : 0n;
    if (typeof saved.clusterId === 'string' && saved.clusterId !== '')
      this.applied = { clusterId: saved.clusterId, generation: BigInt(saved.generation ?? '0') };
  }

  get currentState(): SyncState {
    return this.state;
  }

  /** The controller address the current (or next) stream goes to. */
  get controllerAddress(): string {
    return this.target;
  }

  /** The agent's StoreIdentity condition (GetInfo): none before the first controller answered. */
  conditions(): Condition[] {
    const id = this.presented;
    if (!id && !this.applied) return [];
    const c: Condition = this.conflict
      ? {
          type: STORE_IDENTITY_CONDITION,
          status: ConditionStatus.CONDITION_STATUS_FALSE,
          reason: this.conflict.reason,
          message: `controller ${this.target}: ${this.conflict.message}; this agent keeps every link it runs and applies nothing from it until an operator adopts it there (vopctl adopt ${this.opts.identity().nodeName})`,
          observedGeneration: 0n,
          lastTransitionTime: undefined,
        }
      : {
          type: STORE_IDENTITY_CONDITION,
          status: ConditionStatus.CONDITION_STATUS_TRUE,
          reason: 'Matches',
          message: this.applied
            ? `applies store ${this.applied.clusterId} (generation ${this.applied.generation})`
            : 'nothing applied yet',
          observedGeneration: 0n,
          lastTransitionTime: undefined,
        };
    return [c];
  }

  private client(address: string): AgentSyncServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new AgentSyncServiceClient(address, this.creds, this.channelOptions);
      this.clients.set(address, c);
    }
    return c;
  }

  private transitionTo(from: readonly SyncState[], to: SyncState, reason?: string, err?: ServiceError): boolean {
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
        const failed = this.target;
        const delay = this.chooseNext(err);
        this.log.info(
          { delayMs: delay, reason, controller: failed, next: this.target },
          'controller stream down; reconnecting after backoff',
        );
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
        for (const c of this.clients.values()) c.close();
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

  /**
   * After a failed stream: where to go next and after how long. A NOT_LEADER answer names the
   * leader (go there, unless it was just unreachable); an unreachable address is skipped for
   * UNREACHABLE_MS; only when every address failed does the delay back off.
   */
  private chooseNext(err: ServiceError | undefined): number {
    const now = performance.now();
    const info = err ? errorInfoOf(err) : undefined;
    // The leader is there and asked us to come back later: same address, its time.
    const throttled = throttledDelayMs(info);
    if (throttled !== undefined) return throttled;
    if (info?.reason === 'NOT_LEADER') {
      this.notLeader++;
      const hint = info.metadata.leader ?? '';
      const usable =
        hint !== '' && hint !== this.target && (this.unreachable.get(hint) ?? 0) < now && this.followable(hint);
      this.target = usable ? hint : this.nextAddress(now);
      // A replica pacing the fleet names when to come back; else the agent's own backoff.
      return retryAfterDelayMs(info) ?? notLeaderDelayMs(this.notLeader);
    }
    this.unreachable.set(this.target, now + UNREACHABLE_MS);
    const next = this.nextAddress(now);
    const othersLeft = next !== this.target && (this.unreachable.get(next) ?? 0) < now;
    this.target = next;
    return othersLeft ? nextAddressDelayMs() : this.backoff.next();
  }

  /** The next configured address after the current one that is not marked unreachable (else the next one). */
  private nextAddress(now: number): string {
    const list = this.opts.controllers;
    const start = Math.max(0, list.indexOf(this.target));
    for (let i = 1; i <= list.length; i++) {
      const a = list[(start + i) % list.length] as string;
      if ((this.unreachable.get(a) ?? 0) < now) return a;
    }
    return list[(start + 1) % list.length] as string;
  }

  /**
   * A leader address a replica named: followed when configured, or when it is reached over TLS
   * (the certificate is checked as for any controller) or on loopback, as a configured one would be.
   */
  private followable(address: string): boolean {
    if (this.opts.controllers.includes(address) || this.opts.tls) return true;
    const hp = parseHostPort(address);
    return typeof hp !== 'string' && isLoopback(hp.host);
  }

  private connect(): void {
    if (!this.transitionTo(['idle', 'backoff'], 'connecting')) return;
    const call = this.client(this.target).sync();
    this.presented = undefined;
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
          err,
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
          appliedIdentity: this.applied,
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
      this.notLeader = 0;
      this.unreachable.delete(this.target);
      this.presented = res.msg.value.storeIdentity;
      this.checkStore(this.presented, false);
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
        {
          controller: this.target,
          heartbeatMs: ms,
          ackedVersion: String(this.ackedVersion),
          clusterId: this.presented?.clusterId ?? '',
          generation: String(this.presented?.generation ?? 0n),
        },
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
      p = {
        version: d.version,
        fullSnapshot: d.fullSnapshot,
        storeIdentity: d.storeIdentity,
        adopt: d.adopt,
        upserts: [],
        deletes: [],
        rejected: {},
        parts: 0,
      };
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
    return {
      version: p.version,
      fullSnapshot: p.fullSnapshot,
      upserts: p.upserts,
      deletes: p.deletes,
      more: false,
      storeIdentity: p.storeIdentity,
      adopt: p.adopt,
    };
  }

  private owner(managedBy: string): LinkOwner {
    return { kind: 'controller', managedBy: managedBy === '' ? 'controller' : managedBy };
  }

  /**
   * The store identity rule against what a controller presents: sets (and logs once) or clears
   * the conflict. `adopt`: an operator adopted this agent there, which clears it.
   */
  private checkStore(presented: StoreIdentity | undefined, adopt: boolean): StoreConflict | undefined {
    const c = adopt ? undefined : storeConflict(this.applied, presented);
    if (c && !this.conflict)
      this.log.warn(
        { code: 'STORE_IDENTITY_CONFLICT', controller: this.target, reason: c.reason },
        `controller presents another store: ${c.message}; keeping every link and applying nothing from it until an operator adopts this agent`,
      );
    else if (!c && this.conflict)
      this.log.info(
        { controller: this.target, adopted: adopt, clusterId: presented?.clusterId ?? '' },
        'store identity conflict resolved',
      );
    this.conflict = c;
    return c;
  }

  private async applyDesired(call: ClientDuplexStream<SyncRequest, SyncResponse>, d: DesiredLinks): Promise<void> {
    const id = d.storeIdentity ?? this.presented;
    const conflict = this.checkStore(id, d.adopt);
    if (conflict) {
      // Hold the version whole: nothing applied, nothing deleted; the controller is told why.
      this.preRejected.delete(d.version);
      this.log.warn(
        { version: String(d.version), full: d.fullSnapshot, upserts: d.upserts.length, deletes: d.deletes.length },
        'desired links held (store identity conflict): every link keeps running',
      );
      if (this.call === call && this.state === 'registered')
        call.write({
          msg: {
            $case: 'ack',
            value: { version: d.version, rejected: {}, held: `${conflict.reason}: ${conflict.message}` },
          },
        });
      return;
    }
    const rejected: Record<string, string> = { ...this.preRejected.get(d.version) };
    this.preRejected.delete(d.version);
    const links = this.opts.links;
    // A link refused while assembling is not removed by a snapshot either.
    const wanted = new Set<string>(Object.keys(rejected));
    // vhost_user links joined to another link (vop_link) after the links they name: the agent
    // accepts either order (a missing target is Ready=False JoinedLinkMissing, cleared when it
    // comes: vop-link-join.ts), this only spares one transient condition
    const upserts = [...d.upserts.filter((l) => !vopLinkRef(l)), ...d.upserts.filter((l) => vopLinkRef(l))];
    for (const l of upserts) {
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
    if (id && id.clusterId !== '') {
      const adopted =
        d.adopt && (this.applied?.clusterId !== id.clusterId || (this.applied?.generation ?? 0n) > id.generation);
      // Only forward, unless an operator adopted this agent onto this store.
      if (adopted || !this.applied || id.generation >= this.applied.generation) this.applied = id;
    }
    this.saveState();
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
      call.write({ msg: { $case: 'ack', value: { version: d.version, rejected, held: '' } } });
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

  private loadState(): SavedState {
    try {
      const raw = JSON.parse(readFileSync(path.join(this.opts.stateDir, STATE_FILE), 'utf8')) as unknown;
      return raw !== null && typeof raw === 'object' ? raw : {};
    } catch {
      return {};
    }
  }

  /** The acknowledged version and the applied store identity, atomically, before the ack is sent. */
  private saveState(): void {
    const file = path.join(this.opts.stateDir, STATE_FILE);
    const state: SavedState = {
      controller: this.target,
      ackedVersion: String(this.ackedVersion),
      ...(this.applied ? { clusterId: this.applied.clusterId, generation: String(this.applied.generation) } : {}),
    };
    try {
      writeFileAtomicSync(file, JSON.stringify(state));
    } catch (err) {
      this.log.warn({ err }, 'cannot persist the acknowledged desired-links version and store identity');
    }
  }
}
