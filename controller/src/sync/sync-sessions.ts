/**
 * What each message on an agent's Sync stream does to the controller's picture of the fleet
 * (state/fleet-state.ts): Register (resume or full snapshot, drift against what the agent reports,
 * the registration persisted), heartbeats (the lease), status updates (observed link status),
 * acknowledgements (applied and rejected generations) and the stream's end. Each enqueues the keys
 * whose result may have changed; the reconcile passes do the rest. The gRPC side of the stream
 * (framing, identity, chunking) is agent-sync-service.ts.
 */
import type { DesiredAck, LinkStatusUpdate, Register, Registered } from '../../../lib/proto/controller';
import { AgentPhase, WatchEventType } from '../../../lib/proto/types';
import { durationOfMs, monotonicMs } from '../../../lib/src/clock';
import type { Limits } from '../../../lib/src/limits';
import type { Logger } from '../../../lib/src/logger';
import type { ServerError } from '../../../lib/src/errors';
import { linkSpecEqual } from '../../../lib/src/proto-equal';
import { redactSpec } from '../../../lib/src/redact';
import { storeConflict } from '../../../lib/src/store-identity';
import type { ControllerMetrics } from '../metrics/controller-metrics';
import { desiredLinksFor } from '../reconcile/desired-push';
import type { WorkQueues } from '../reconcile/work-queues';
import { agentLabels } from '../state/agent-labels';
import type { AgentRuntime, SyncSessionHandle } from '../state/agent-runtime';
import type { FleetState } from '../state/fleet-state';
import { emptyMeta, type ObjectCache } from '../state/object-cache';
import { addressesCondition, ADDRESSES_VERIFIED, type AddressCheck } from './address-verification';
import { RegistrationAdmission, type RegistrationAdmissionOptions } from './registration-admission';

/** Heartbeat interval handed to agents, as a fraction of the lease. */
export const HEARTBEAT_FRACTION = 1 / 3;
/** An agent's reason for rejecting a link is kept up to this many characters. */
export const MAX_REJECT_REASON_LENGTH = 1024;

export interface SyncSessionsOptions {
  readonly leaseMs: number;
  /** maxLinksPerAgent bounds the statuses kept of links an agent reports but was not sent. */
  readonly limits: Pick<Limits, 'maxLinksPerAgent'>;
  /** Registrations admitted per second (a new term starts with a full burst). */
  readonly admission: RegistrationAdmissionOptions;
}

/** An agent's registered addresses as checked against its connection (address-verification.ts). */
export interface CheckedAddresses {
  readonly grpc: AddressCheck;
  readonly metrics: AddressCheck;
}

export class SyncSessions {
  /** Set once the leader term these sessions belong to has ended: registrations are refused with it. */
  private ended: ServerError | undefined;
  private readonly admission: RegistrationAdmission;

  constructor(
    private readonly cache: ObjectCache,
    private readonly fleet: FleetState,
    private readonly queues: WorkQueues,
    private readonly metrics: ControllerMetrics,
    private readonly log: Logger,
    private readonly opts: SyncSessionsOptions,
  ) {
    this.admission = new RegistrationAdmission(opts.admission);
  }

  /** A validated registration (lib/src/validate-registration.ts) with its checked addresses. */
  register(session: SyncSessionHandle, reg: Register, addresses: CheckedAddresses): Registered {
    if (this.ended) throw this.ended;
    const id = reg.identity;
    const name = id?.nodeName ?? '';
    try {
      this.admission.admit(name);
    } catch (err) {
      this.metrics.registrationsThrottled.inc();
      throw err;
    }
    const rt = this.fleet.runtime(name);
    if (rt.session && rt.session.id !== session.id)
      rt.session.close('replaced by a newer Sync stream of the same agent');
    rt.session = session;
    rt.lastHeartbeat = monotonicMs();
    rt.leaseExpired = false;
    rt.labels = id ? agentLabels(id) : {};
    // Resume: same controller process, the agent has everything we sent, and what it
    // reports matches the desired state. Anything else gets a full snapshot.
    rt.needsFull = !(
      reg.ackedVersion !== 0n &&
      reg.ackedVersion === rt.sentVersion &&
      rt.ackedVersion === rt.sentVersion
    );
    if (reg.ackedVersion > rt.sentVersion) rt.sentVersion = reg.ackedVersion;
    rt.ackedVersion = reg.ackedVersion;
    rt.observed.clear();
    const desired = desiredLinksFor(this.cache, this.fleet, name);
    const reported = new Set<string>();
    for (const l of reg.links) {
      const ln = l.meta?.name ?? '';
      reported.add(ln);
      if (l.status) rt.observed.set(ln, l.status);
      const want = desired.get(ln);
      if (!want) {
        if ((l.meta?.managedBy ?? '') !== '') {
          rt.needsFull = true;
          this.metrics.drift.inc({ direction: 'extra_on_agent' });
        }
      } else if (!linkSpecEqual(want.spec, l.spec)) {
        // Agents report write-only fields emptied (lib/src/redact.ts), so a link equal but for them is not
        // drift; it still gets the snapshot, which re-delivers a secret rotated while the agent was away.
        rt.needsFull = true;
        if (!linkSpecEqual(redactSpec(want.spec), l.spec)) this.metrics.drift.inc({ direction: 'spec_differs' });
      } else {
        rt.applied.set(ln, want.meta?.generation ?? 0n);
      }
      this.queues.links.add(ln);
    }
    for (const ln of desired.keys()) {
      if (!reported.has(ln)) {
        if (!rt.needsFull && rt.sent.has(ln)) this.metrics.drift.inc({ direction: 'missing_on_agent' });
        if (rt.sent.has(ln) || rt.applied.has(ln)) rt.needsFull = true;
        rt.applied.delete(ln);
      }
      this.queues.links.add(ln);
    }
    if (desired.size > 0 && reported.size === 0 && rt.sentVersion === 0n) rt.needsFull = true;
    // The store identity rule (lib/src/store-identity.ts): an agent that applied another store, or a
    // newer copy of this one, keeps its links; nothing is sent to it until an operator adopts it.
    const storeId = this.cache.identity();
    rt.appliedIdentity = reg.appliedIdentity;
    rt.storeConflict = rt.adopted ? undefined : storeConflict(reg.appliedIdentity, storeId);
    // What it runs, for an adoption (kept only while it is in conflict).
    rt.reported = rt.storeConflict ? reg.links : [];
    if (rt.storeConflict)
      this.log.warn(
        { agent: name, code: 'STORE_IDENTITY_CONFLICT', reason: rt.storeConflict.reason, links: reg.links.length },
        `agent holds its links: ${rt.storeConflict.message}; vopctl adopt ${name} takes them over`,
      );
    void this.persistRegistration(name, reg, addresses).catch((err: unknown) =>
      this.log.error({ err, agent: name }, 'persisting registration failed'),
    );
    this.queues.agents.add(name);
    this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    return {
      leaseDuration: durationOfMs(this.opts.leaseMs),
      heartbeatInterval: durationOfMs(Math.max(200, Math.floor(this.opts.leaseMs * HEARTBEAT_FRACTION))),
      serverTime: new Date(),
      storeIdentity: { clusterId: storeId.clusterId, generation: storeId.generation },
    };
  }

  /** Stores what the agent registered (identity, verified addresses, capabilities, version) when it changed. */
  private async persistRegistration(name: string, reg: Register, checked: CheckedAddresses): Promise<void> {
    const cur = this.cache.agents.get(name)?.obj;
    const s = cur?.status;
    // Only verified addresses are stored; the condition says what was refused and why. The
    // data-plane address is stored as registered (format-checked): the controller never dials it,
    // other agents do, and a stream link authenticates its peer itself (docs/security.md).
    const addresses = {
      grpc: checked.grpc.address,
      metrics: checked.metrics.address,
      dataPlane: reg.addresses?.dataPlane ?? '',
      dataPlanePorts: reg.addresses?.dataPlanePorts,
    };
    const prevCond = s?.conditions.find((c) => c.type === ADDRESSES_VERIFIED);
    let cond = addressesCondition(checked, cur?.meta?.generation ?? 0n, new Date());
    if (prevCond && prevCond.status === cond.status && prevCond.message === cond.message) cond = prevCond;
    const same =
      s !== undefined &&
      cond === prevCond &&
      JSON.stringify([s.identity, s.addresses, s.capabilities, s.version]) ===
        JSON.stringify([reg.identity, addresses, reg.capabilities, reg.version]);
    if (same) return;
    const isNew = cur === undefined;
    await this.cache.putAgent({
      meta: cur?.meta ?? { ...emptyMeta(name), labels: { ...(reg.identity?.labels ?? {}) } },
      spec: cur?.spec ?? { unschedulable: false, drain: false },
      status: {
        phase: AgentPhase.AGENT_PHASE_READY,
        identity: reg.identity,
        addresses,
        capabilities: reg.capabilities,
        version: reg.version,
        lastHeartbeatTime: undefined,
        leaseDuration: undefined,
        conditions: [cond],
        ackedVersion: 0n,
      },
    });
    if (!isNew) for (const p of this.cache.policies.keys()) this.queues.policies.add(p);
  }

  heartbeat(name: string): void {
    const rt = this.fleet.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    if (rt.leaseExpired) {
      rt.leaseExpired = false;
      this.log.info({ agent: name }, 'agent lease renewed');
      for (const l of this.fleet.linksOf(name)) this.queues.links.add(l);
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
    }
  }

  linkStatusUpdate(name: string, u: LinkStatusUpdate): void {
    const rt = this.fleet.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    const desired = this.fleet.linksOf(name).has(u.name);
    if (u.deleted) {
      const inflight = isInflight(rt, u.name);
      rt.observed.delete(u.name);
      rt.applied.delete(u.name);
      if (desired && !inflight) {
        this.metrics.drift.inc({ direction: 'missing_on_agent' });
        rt.needsFull = true;
        this.queues.agents.add(name);
      }
    } else {
      // The agent names the link: keep at most maxLinksPerAgent statuses of links it was not sent.
      const known = desired || rt.sent.has(u.name) || rt.observed.has(u.name);
      if (u.status && (known || rt.observed.size < this.opts.limits.maxLinksPerAgent))
        rt.observed.set(u.name, u.status);
      if (!desired && !rt.sent.has(u.name) && this.cache.links.get(u.name) === undefined && rt.session) {
        // A link we do not want is running there: a snapshot removes it (if managed).
        this.metrics.drift.inc({ direction: 'extra_on_agent' });
        rt.needsFull = true;
        this.queues.agents.add(name);
      }
    }
    this.queues.links.add(u.name);
    if (this.cache.agents.get(name)?.obj.spec?.drain)
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
  }

  ack(name: string, a: DesiredAck): void {
    const rt = this.fleet.runtimes.get(name);
    if (!rt) return;
    rt.lastHeartbeat = monotonicMs();
    if (a.held !== '') {
      // The agent applied nothing of the version (the store identity rule): it is in conflict.
      for (const v of [...rt.inflight.keys()]) if (v <= a.version) rt.inflight.delete(v);
      rt.needsFull = true;
      if (!rt.storeConflict) {
        rt.storeConflict = { reason: 'HeldByAgent', message: a.held.slice(0, MAX_REJECT_REASON_LENGTH) };
        this.log.warn(
          { agent: name, code: 'STORE_IDENTITY_CONFLICT', reason: 'HeldByAgent', held: rt.storeConflict.message },
          `agent held desired links version ${a.version}; vopctl adopt ${name} takes its links over`,
        );
        this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
      }
      return;
    }
    if (a.version > rt.ackedVersion) rt.ackedVersion = a.version;
    const rejectedNames = Object.keys(a.rejected);
    if (rejectedNames.length > 0) this.metrics.rejections.inc(rejectedNames.length);
    for (const [v, upserts] of rt.inflight) {
      if (v > a.version) continue;
      rt.inflight.delete(v);
      for (const [ln, gen] of upserts) {
        const reason = a.rejected[ln];
        if (v === a.version && reason !== undefined) {
          rt.rejected.set(ln, reason.slice(0, MAX_REJECT_REASON_LENGTH));
        } else {
          rt.rejected.delete(ln);
          rt.applied.set(ln, gen);
        }
        this.queues.links.add(ln);
      }
    }
    for (const ln of rejectedNames) {
      // Only links this agent was sent: an agent cannot make the controller hold other names.
      if (!rt.sent.has(ln)) continue;
      rt.rejected.set(ln, (a.rejected[ln] ?? '').slice(0, MAX_REJECT_REASON_LENGTH));
      this.queues.links.add(ln);
    }
    if (this.cache.agents.get(name)?.obj.spec?.drain)
      this.cache.publish('agent', WatchEventType.WATCH_EVENT_TYPE_MODIFIED, name, true);
  }

  /** The leader term ended: every stream is closed with `err` (agents go to the new leader), and no new one registers. */
  closeAll(err: ServerError): void {
    this.ended = err;
    for (const rt of this.fleet.runtimes.values()) rt.session?.close(err.message, err);
  }

  streamClosed(name: string, session: SyncSessionHandle): void {
    const rt = this.fleet.runtimes.get(name);
    if (!rt || rt.session?.id !== session.id) return;
    rt.session = undefined;
    rt.inflight.clear();
    // The lease, not the stream, decides readiness (the agent is expected back soon).
  }
}

/** True while a version carrying the link is unacknowledged (a deletion report may predate it). */
function isInflight(rt: AgentRuntime, link: string): boolean {
  if (rt.sent.has(link) && !rt.applied.has(link)) return true;
  for (const m of rt.inflight.values()) if (m.has(link)) return true;
  return false;
}
