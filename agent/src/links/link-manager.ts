/**
 * The link manager: desired state (applied specs, persisted) and one LinkRuntime per
 * link that drives the data plane toward it. Implements LinkManagerApi for the
 * AgentService handlers and the controller sync client. Every mutation validates
 * fully and persists before touching memory or the data plane, so a rejected or
 * failed request leaves nothing behind. Links that cannot be restored after a restart
 * (unreadable state file, stored spec refused) stay listed as QuarantinedLinks.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

import { type DeviceStats, type Link, type LinkEvent, type ObjectMeta } from '../../../lib/proto/types';
import {
  alreadyExists,
  failedPrecondition,
  notFound,
  ServerError,
  staleResourceVersion,
  ViolationList,
} from '../../../lib/src/errors';
import { DEFAULT_LIMITS, HARD_LIMITS, type Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import { redactSpec } from '../../../lib/src/redact';
import { validateLink } from '../../../lib/src/validate';
import type { DataPlane } from './data-plane';
import { deviceKindName, roleName, type BackendRegistry } from '../backends/device-backend';
import type { ApplyOptions, ApplyResult, LinkChange, LinkManagerApi, LinkOwner } from './link-manager-api';
import { LinkRuntime } from './link-runtime';
import { windowSideOf } from './pci-window';
import { VhostUserRuntime, type VhostUserOptions } from './vhost-user-runtime';
import { checkLinkForAgent, mapEqual, specEqual } from './link-spec';
import type { LinkStore } from './link-store';
import type { HostPathPolicy } from './path-policy';
import { QuarantinedLink } from './quarantined-link';
import { checkStreamSecurity, type StreamTlsFiles } from './stream-security';
import { checkVopLinkJoin, resolveVopLink, vopLinkRef } from './vop-link-join';

export interface LinkManagerDeps {
  readonly nodeName: string;
  readonly rendezvousDir: string;
  readonly dataPlane: DataPlane;
  readonly backends: BackendRegistry;
  /** Where host paths in specs may lie (hostPaths of the agent config). */
  readonly paths: HostPathPolicy;
  readonly store: LinkStore;
  readonly log: Logger;
  /** Links, devices, window and queue sizes this agent accepts (lib/src/limits.ts); default DEFAULT_LIMITS. */
  readonly limits?: Pick<Limits, 'maxLinksPerAgent' | 'maxDevicesPerLink' | 'maxWindowBytes' | 'maxQueueSize'>;
  /** vhost_user links (agent config vhostUser); default: sealed memory only, rings up to 1024. */
  readonly vhostUser?: VhostUserOptions;
  /** Certificates of stream links (TLS by default when set); null/absent: none. */
  readonly streamTls?: StreamTlsFiles | null;
}

/** A link's runtime: a window between two agents, or a vhost-user device served to a local front-end. */
export type AnyLinkRuntime = LinkRuntime | VhostUserRuntime;

function isVhostUser(link: Link): boolean {
  return link.spec?.transport?.kind?.$case === 'vhostUser';
}

function ownerName(owner: LinkOwner): string {
  return owner.kind === 'controller' ? owner.managedBy : '';
}

export class LinkManager implements LinkManagerApi {
  private readonly links = new Map<string, AnyLinkRuntime>();
  /** Links that could not be restored: listed, no data plane; apply or delete clears them. */
  private readonly quarantined = new Map<string, QuarantinedLink>();
  private readonly listeners = new Set<(c: LinkChange) => void>();
  private readonly dirty = new Set<AnyLinkRuntime>();
  private flushQueued = false;
  /**
   * Last resource_version handed out. Versions are at least the wall clock in
   * microseconds, so they keep increasing across restarts even when the link with the
   * highest version was deleted (unless the clock steps back past the last version).
   */
  private rv = 0n;
  private readonly log: Logger;
  private readonly limits: NonNullable<LinkManagerDeps['limits']>;

  constructor(private readonly deps: LinkManagerDeps) {
    this.log = deps.log;
    this.limits = deps.limits ?? DEFAULT_LIMITS;
  }

  private nextRv(): string {
    const clock = BigInt(Date.now()) * 1000n;
    this.rv = this.rv + 1n > clock ? this.rv + 1n : clock;
    return this.rv.toString();
  }

  private newRuntime(link: Link): AnyLinkRuntime {
    const name = link.meta?.name ?? '';
    if (isVhostUser(link))
      return new VhostUserRuntime(link, {
        dataPlane: this.deps.dataPlane,
        paths: this.deps.paths,
        options: this.deps.vhostUser ?? { allowUnsealedMemory: false, maxQueueSize: 1024 },
        log: this.log.child({ link: name, transport: 'vhost_user' }),
        onStatus: (rt) => this.markDirty(rt),
        onEvent: (e) => this.emitEvent(e),
        resolveVopLink: (ref) => resolveVopLink(ref, this.links, this.deps.nodeName),
      });
    return new LinkRuntime(link, {
      dataPlane: this.deps.dataPlane,
      backends: this.deps.backends,
      rendezvousDir: this.deps.rendezvousDir,
      nodeName: this.deps.nodeName,
      maxWindowBytes: this.limits.maxWindowBytes,
      streamTls: this.deps.streamTls ?? null,
      barRoot: (p) => {
        const r = this.deps.paths.rootOf('bar', p);
        return r && 'dir' in r ? r.dir : null;
      },
      socketRoot: (p) => {
        const r = this.deps.paths.rootOf('socket', p);
        return r && 'dir' in r ? r.dir : null;
      },
      log: this.log.child({
        link: name,
        peer: link.spec?.endpoints.find((e) => e.agent !== this.deps.nodeName)?.agent ?? '',
      }),
      onStatus: (rt) => this.markDirty(rt),
      onEvent: (e) => this.emitEvent(e),
    });
  }

  /**
   * Restores persisted links and starts them; the agent needs no controller for this. A
   * link whose state file is unreadable, or whose stored spec this agent now refuses,
   * stays listed (quarantined) with the reason, never dropped silently.
   */
  restore(): number {
    let n = 0;
    const { links: stored, unreadable } = this.deps.store.loadAll();
    for (const u of unreadable) {
      this.quarantined.set(
        u.name,
        new QuarantinedLink(
          u.name,
          'StateFileUnreadable',
          `the state file ${u.file} could not be read (${u.error}); ${u.keptAs !== '' ? `it was kept as ${u.keptAs}` : 'it could not be moved aside'}; apply the link again or delete it`,
        ),
      );
    }
    for (const { link, file } of stored) {
      const rv = BigInt(/^\d+$/.test(link.meta?.resourceVersion ?? '') ? (link.meta?.resourceVersion ?? '0') : '0');
      if (rv > this.rv) this.rv = rv;
      try {
        // Links accepted before a limit was lowered stay: only the hard maxima apply here.
        validateLink(link, HARD_LIMITS);
        checkLinkForAgent(link, this.deps.nodeName, this.deps.backends, this.deps.paths);
        checkStreamSecurity(link, this.deps.nodeName, this.deps.streamTls ?? null);
      } catch (err) {
        const why =
          err instanceof ServerError && err.fieldViolations.length > 0
            ? err.fieldViolations.map((f) => `${f.field}: ${f.description}`).join('; ')
            : err instanceof Error
              ? err.message
              : String(err);
        this.log.error({ err, file, code: 'STORED_SPEC_REFUSED' }, 'stored link is no longer valid here; not started');
        const name = link.meta?.name ?? '';
        this.quarantined.set(
          name,
          new QuarantinedLink(
            name,
            'StoredSpecRefused',
            `the stored spec is refused by this agent now (${why}); apply a corrected spec or delete the link`,
            link,
          ),
        );
        continue;
      }
      const rt = this.newRuntime(link);
      this.links.set(rt.name, rt);
      n += 1;
    }
    // One link per turn: taking over a dead process's window side can block a native
    // call for a few heartbeat periods, and the gRPC server should come up in between.
    for (const rt of this.links.values()) setImmediate(() => rt.start());
    if (n > 0) this.log.info({ links: n }, 'restored links from the state directory');
    if (this.quarantined.size > 0)
      this.log.warn({ links: [...this.quarantined.keys()] }, 'links listed but not started (StateUnreadable)');
    return n;
  }

  private checkOwnership(
    existing: { readonly name: string; readonly meta: ObjectMeta },
    owner: LinkOwner,
    force: boolean,
  ): void {
    const managedBy = existing.meta.managedBy;
    if (managedBy === '' || force || ownerName(owner) === managedBy) return;
    throw failedPrecondition(
      'LINK_MANAGED',
      `link "${existing.name}" is managed by ${managedBy}; change it there, or set force to override`,
      {
        link: existing.name,
        managedBy,
      },
    );
  }

  private checkRv(existing: { readonly name: string; readonly meta: ObjectMeta }, expected: string): void {
    if (expected !== '' && expected !== existing.meta.resourceVersion)
      throw staleResourceVersion('link', existing.name, expected, existing.meta.resourceVersion);
  }

  async apply(input: Link, opts: ApplyOptions): Promise<ApplyResult> {
    const limits = this.limits;
    validateLink(input, limits);
    checkLinkForAgent(input, this.deps.nodeName, this.deps.backends, this.deps.paths);
    checkStreamSecurity(input, this.deps.nodeName, this.deps.streamTls ?? null);
    const name = input.meta.name;
    const mine = input.spec.endpoints.find((e) => e.agent === this.deps.nodeName);
    if (mine) this.deps.paths.checkFilesystem(input.spec, roleName(mine.role), name);
    const existing = this.links.get(name);
    const quarantined = this.quarantined.get(name);
    if (!existing && !quarantined && this.links.size + this.quarantined.size >= limits.maxLinksPerAgent) {
      throw new ServerError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `this agent already holds ${this.links.size + this.quarantined.size} links (limit maxLinksPerAgent = ${limits.maxLinksPerAgent}); delete one first`,
        {
          reason: 'LINK_LIMIT_EXCEEDED',
          metadata: { limit: 'maxLinksPerAgent', max: String(limits.maxLinksPerAgent) },
        },
      );
    }
    this.checkWindowSize(input);
    checkVopLinkJoin(input, this.links, this.deps.nodeName);
    const now = new Date();
    let meta: ObjectMeta;
    if (existing) {
      this.checkOwnership(existing, opts.owner, opts.force);
      this.checkRv(existing, input.meta.resourceVersion);
      const old = existing.desired.spec;
      const sameEndpoints =
        old !== undefined &&
        old.endpoints.length === input.spec.endpoints.length &&
        old.endpoints.every(
          (e, i) => e.agent === input.spec.endpoints[i]?.agent && e.role === input.spec.endpoints[i]?.role,
        );
      if (!sameEndpoints) {
        throw alreadyExists(
          'link',
          name,
          `it joins ${old?.endpoints.map((e) => e.agent).join(' and ') ?? '?'} with other roles; delete it before reusing the name`,
        );
      }
      const specChanged = !specEqual(old, input.spec);
      const managedBy = opts.owner.kind === 'controller' ? opts.owner.managedBy : existing.meta.managedBy;
      const metaChanged =
        !mapEqual(existing.meta.labels, input.meta.labels) ||
        !mapEqual(existing.meta.annotations, input.meta.annotations) ||
        managedBy !== existing.meta.managedBy;
      if (!specChanged && !metaChanged) return { link: existing.toLink(), changed: false };
      meta = {
        ...existing.meta,
        labels: { ...input.meta.labels },
        annotations: { ...input.meta.annotations },
        managedBy,
        generation: existing.meta.generation + (specChanged ? 1n : 0n),
        resourceVersion: opts.dryRun ? existing.meta.resourceVersion : this.nextRv(),
        updateTime: now,
      };
    } else if (quarantined) {
      // Applying again is the way out of quarantine: the new spec replaces whatever was stored.
      this.checkOwnership(quarantined, opts.owner, opts.force);
      this.checkRv(quarantined, input.meta.resourceVersion);
      meta = {
        name,
        labels: { ...input.meta.labels },
        annotations: { ...input.meta.annotations },
        generation: quarantined.meta.generation + 1n,
        resourceVersion: opts.dryRun ? quarantined.meta.resourceVersion : this.nextRv(),
        createTime: quarantined.meta.createTime ?? now,
        updateTime: now,
        managedBy: opts.owner.kind === 'controller' ? opts.owner.managedBy : quarantined.meta.managedBy,
      };
    } else {
      if (input.meta.resourceVersion !== '') throw notFound('link', name);
      meta = {
        name,
        labels: { ...input.meta.labels },
        annotations: { ...input.meta.annotations },
        generation: 1n,
        resourceVersion: opts.dryRun ? '' : this.nextRv(),
        createTime: now,
        updateTime: now,
        managedBy: ownerName(opts.owner),
      };
    }
    const desired: Link = { meta, spec: input.spec, status: undefined };
    if (opts.dryRun) {
      const status = existing?.toLink().status;
      return { link: { ...desired, spec: redactSpec(desired.spec), status }, changed: true };
    }
    try {
      this.deps.store.save(desired);
    } catch (err) {
      this.log.error({ err, link: name }, 'cannot persist link');
      throw new ServerError(
        GrpcStatus.UNAVAILABLE,
        `cannot persist link "${name}" in the state directory; nothing was changed`,
        { reason: 'STATE_WRITE_FAILED' },
      );
    }
    this.quarantined.delete(name);
    let rt = existing;
    if (rt && rt instanceof VhostUserRuntime !== isVhostUser(desired)) {
      // a window link became a vhost-user link or back: a new runtime of the other kind
      rt.terminate();
      this.links.delete(name);
      rt = undefined;
    }
    if (rt) rt.update(desired);
    else {
      rt = this.newRuntime(desired);
      this.links.set(name, rt);
      rt.start();
    }
    const link = rt.toLink();
    this.emit({ type: 'upsert', link });
    this.dirty.delete(rt);
    this.rejoin(name);
    return { link, changed: true };
  }

  /**
   * The window this agent would create for the link must fit maxWindowBytes (shm, device side,
   * automatic size), or hold its devices (pci-bar, the creator, a spec's size_bytes).
   */
  private checkWindowSize(link: Link & { spec: NonNullable<Link['spec']> }): void {
    const ep = link.spec.endpoints.find((e) => e.agent === this.deps.nodeName);
    const t = link.spec.transport?.kind;
    if (!ep) return;
    const role = roleName(ep.role);
    const pciCreator = t?.$case === 'pciBar' && windowSideOf(link, role) === 'creator';
    const pciSize = pciCreator ? t.value.sizeBytes : 0n;
    if (!pciCreator && (role !== 'device' || t?.$case !== 'shm' || t.value.windowSizeBytes !== 0n)) return;
    const natives = link.spec.devices.map((d) => {
      const kind = deviceKindName(d);
      const backend = kind ? this.deps.backends.get(kind) : undefined;
      if (!backend) throw new Error(`no backend for device ${d.name}`); // checkLinkForAgent refused it
      return backend.describe(d, role, {
        name: link.meta?.name ?? '',
        annotations: link.meta?.annotations ?? {},
      });
    });
    const v = new ViolationList();
    let bytes: number;
    try {
      bytes = this.deps.dataPlane.windowBytes(natives.map((n) => n.config));
    } catch (err) {
      // A device config the native layer refuses (the shared validation let it through).
      if (!(err instanceof TypeError || err instanceof RangeError)) throw err;
      const m = /^devices\[(\d+)\](.*)$/.exec(err.message);
      v.add(m ? `link.spec.devices[${m[1]}]` : 'link.spec.devices', m ? `native config${m[2]}` : err.message);
      v.throwIfAny();
      return;
    }
    if (pciCreator) {
      // The creator lays out exactly size_bytes; 0 ("the rest of the BAR or of the server's memory")
      // would be learnt only when the window opens, and a window too small for the devices would
      // then fail late with ENOSPC: the creator must say how large a window it lays out.
      if (pciSize !== 0n && BigInt(bytes) <= pciSize) return;
      v.add(
        'link.spec.transport.pci_bar.size_bytes',
        pciSize === 0n
          ? `must be set when this agent creates the window (0, the rest of the memory, is known only once it is mapped): these devices (with room for one hot add) need ${bytes} bytes`
          : `the window for these devices (with room for one hot add) needs ${bytes} bytes, more than size_bytes ${pciSize}`,
      );
      v.throwIfAny();
      return;
    }
    const max = this.limits.maxWindowBytes;
    if (bytes <= max) return;
    v.add(
      'link.spec.transport.shm.window_size_bytes',
      `the automatic window for these devices needs ${bytes} bytes, more than ${max} (limit maxWindowBytes); use fewer devices or smaller queues`,
    );
    v.throwIfAny();
  }

  get(name: string): Link | undefined {
    return (this.links.get(name) ?? this.quarantined.get(name))?.toLink();
  }

  list(): Link[] {
    return [...this.links.values(), ...this.quarantined.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((rt) => rt.toLink());
  }

  async delete(
    name: string,
    opts: { readonly owner: LinkOwner; readonly force: boolean; readonly resourceVersion: string },
  ): Promise<void> {
    const q = this.quarantined.get(name);
    if (q && !this.links.has(name)) {
      this.checkOwnership(q, opts.owner, opts.force);
      this.checkRv(q, opts.resourceVersion);
      this.removeStored(name);
      this.quarantined.delete(name);
      this.emit({ type: 'delete', link: q.toLink() });
      return;
    }
    const rt = this.links.get(name);
    if (!rt) throw notFound('link', name);
    this.checkOwnership(rt, opts.owner, opts.force);
    this.checkRv(rt, opts.resourceVersion);
    this.removeStored(name);
    this.links.delete(name);
    rt.terminate();
    this.dirty.delete(rt);
    this.emit({ type: 'delete', link: rt.toLink() });
    this.rejoin(name);
  }

  /**
   * Link `name` was applied or deleted: every vhost_user link whose vop_link names it resolves
   * it again (level-triggered: a missing target is a condition, not a refusal; vop-link-join.ts).
   */
  private rejoin(name: string): void {
    for (const rt of this.links.values())
      if (rt instanceof VhostUserRuntime && vopLinkRef(rt.desired)?.link === name) rt.joinedLinkChanged();
  }

  private removeStored(name: string): void {
    try {
      this.deps.store.remove(name);
    } catch (err) {
      this.log.error({ err, link: name }, 'cannot remove the stored link');
      throw new ServerError(
        GrpcStatus.UNAVAILABLE,
        `cannot remove link "${name}" from the state directory; nothing was changed`,
        { reason: 'STATE_WRITE_FAILED' },
      );
    }
  }

  async reset(name: string, reason: string): Promise<Link> {
    const rt = this.links.get(name);
    const q = this.quarantined.get(name);
    if (!rt && q)
      throw failedPrecondition(
        'STATE_UNREADABLE',
        `link "${name}" could not be restored (${q.reason}): apply it again or delete it`,
        { link: name },
      );
    if (!rt) throw notFound('link', name);
    rt.reset(reason);
    return rt.toLink();
  }

  stats(name: string): DeviceStats[] {
    const rt = this.links.get(name);
    if (!rt && this.quarantined.has(name)) return [];
    if (!rt) throw notFound('link', name);
    return rt.stats();
  }

  subscribe(listener: (change: LinkChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Runtimes for metrics and console attach (not part of LinkManagerApi). */
  runtime(name: string): AnyLinkRuntime | undefined {
    return this.links.get(name);
  }

  runtimes(): AnyLinkRuntime[] {
    return [...this.links.values()];
  }

  /** Links listed but not running (StateUnreadable), for metrics. */
  quarantinedLinks(): QuarantinedLink[] {
    return [...this.quarantined.values()];
  }

  /** Agent shutdown: stop the data plane of every link; specs stay persisted. */
  shutdown(): void {
    for (const rt of this.links.values()) rt.shutdown();
  }

  private emit(change: LinkChange): void {
    for (const l of this.listeners) {
      try {
        l(change);
      } catch (err) {
        this.log.error({ err }, 'link change listener threw');
      }
    }
  }

  private emitEvent(event: LinkEvent): void {
    this.emit({ type: 'event', event });
  }

  /** Status changes are coalesced per link and published once per turn. */
  private markDirty(rt: AnyLinkRuntime): void {
    this.dirty.add(rt);
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => {
      this.flushQueued = false;
      const items = [...this.dirty];
      this.dirty.clear();
      for (const r of items) if (this.links.get(r.name) === r) this.emit({ type: 'upsert', link: r.toLink() });
    });
  }
}
