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
import type { Link, LinkStatus, Role } from '../../../lib/proto/types';

/** The controller's handle on one registered Sync stream. */
export interface SyncSessionHandle {
  readonly id: number;
  sendDesired(version: bigint, fullSnapshot: boolean, upserts: Link[], deletes: string[]): void;
  close(reason: string): void;
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

  constructor(
    readonly name: string,
    now: number,
  ) {
    this.lastHeartbeat = now;
  }
}
