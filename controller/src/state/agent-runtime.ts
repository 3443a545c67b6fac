/**
 * What the controller knows about one agent at run time (never persisted): its Sync
 * session, lease, what was sent and acknowledged, and the links it reports.
 *
 * Agent phase (AgentPhase), derived, never stored as a state machine:
 *   READY      lease valid (registered and heartbeating), no drain requested
 *   NOT_READY  never registered since controller start + grace, or lease expired
 *   DRAINING   drain requested, the agent still runs managed links
 *   DRAINED    drain requested, the agent acknowledged a desired set without links
 */
import type { StoreIdentity } from '../../../lib/proto/controller';
import type { Link, LinkStatus, Role } from '../../../lib/proto/types';
import type { ServerError } from '../../../lib/src/errors';

/** One DesiredLinks version as a session sends it. */
export interface DesiredVersion {
  readonly version: bigint;
  readonly fullSnapshot: boolean;
  readonly upserts: Link[];
  readonly deletes: string[];
  /** The identity of the desired state the version was computed from. */
  readonly storeIdentity: StoreIdentity;
  /** The agent was adopted: it accepts this identity although it differs from the one it applied. */
  readonly adopt: boolean;
}

/** The controller's handle on one registered Sync stream. */
export interface SyncSessionHandle {
  readonly id: number;
  sendDesired(d: DesiredVersion): void;
  /** Ends the stream: ABORTED (SESSION_REPLACED) with `reason`, or `err` when given. */
  close(reason: string, err?: ServerError): void;
}

export class AgentRuntime {
  /** Valid while a registered stream is open. */
  session: SyncSessionHandle | undefined;
  /**
   * Monotonic ms (lib/src/clock.ts) of the last register or heartbeat (controller start
   * for agents loaded from the store). Leases compare monotonic times only, so a wall
   * clock step neither expires nor extends them.
   */
  lastHeartbeat: number;
  /** Lease currently expired (set by the lease checker, cleared by a heartbeat). */
  leaseExpired = false;
  /** Selector labels (own + synthetic), recomputed at registration. */
  labels: Record<string, string> = {};
  /** Version of the last DesiredLinks sent. */
  sentVersion = 0n;
  /** Links (name -> generation) the agent has been sent, as of sentVersion. */
  readonly sent = new Map<string, bigint>();
  /** The agent's role in each link as last sent (orders deletes: driver sides first). */
  readonly sentRoles = new Map<string, Role>();
  /** Per sent version: the upserts it carried (name -> generation), until acknowledged. */
  readonly inflight = new Map<bigint, Map<string, bigint>>();
  ackedVersion = 0n;
  /** Generation of each link the agent acknowledged applying. */
  readonly applied = new Map<string, bigint>();
  /** Links the agent rejected, with its reason (cleared when a later version applies them). */
  readonly rejected = new Map<string, string>();
  /** Last status the agent reported per link. */
  readonly observed = new Map<string, LinkStatus>();
  /** Send a full snapshot on the next pass (new stream, drift found). */
  needsFull = true;
  /** The store identity the agent last applied, as it registered it (undefined: none yet). */
  appliedIdentity: StoreIdentity | undefined;
  /**
   * Set while the agent's applied identity conflicts with this store's (or it held a version for
   * that reason): nothing is sent to it until an operator adopts it.
   */
  storeConflict: { readonly reason: string; readonly message: string } | undefined;
  /** Adopted in this leader term: every version tells the agent to accept this store's identity. */
  adopted = false;
  /** The managed links the agent registered with while in conflict (name, managed_by, spec; no labels). */
  reported: Link[] = [];

  constructor(
    readonly name: string,
    now: number,
  ) {
    this.lastHeartbeat = now;
  }
}
