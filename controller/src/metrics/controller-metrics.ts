/**
 * Controller metrics, on the process's own prom-client Registry. Work-queue metrics use
 * the client-go names (label `name` = queue); everything else is vop_controller_*.
 * Point-in-time values are read in collect() at scrape time. Documented in
 * docs/metrics.md, section "Controller".
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export type QueueName = 'links' | 'agents' | 'policies';

export interface QueueGauges {
  depth(): number;
  unfinishedSeconds(): number;
  longestRunningSeconds(): number;
}

/** Point-in-time counts, read at scrape time. */
export interface FleetCounts {
  /** [rack, phase (Ready|NotReady|Draining|Drained), count] */
  agents(): Iterable<readonly [string, string, number]>;
  /** [rack, condition, status (True|False|Unknown), count] */
  links(): Iterable<readonly [string, string, string, number]>;
  policies(): number;
  syncStreams(): number;
  /** Connected agents in a store identity conflict. */
  storeConflicts(): number;
}

export class ControllerMetrics {
  readonly queueAdds: Counter<'name'>;
  readonly queueRetries: Counter<'name'>;
  readonly queueDuration: Histogram<'name'>;
  readonly workDuration: Histogram<'name'>;
  readonly reconcileTotal: Counter<'result'>;
  readonly reconcileDuration: Histogram;
  readonly syncMessages: Counter<'type'>;
  readonly desiredPushes: Counter<'kind'>;
  readonly rejections: Counter;
  readonly drift: Counter<'direction'>;
  readonly registrationsThrottled: Counter;
  readonly loopStalls: Counter;
  readonly leaseExpirations: Counter;
  readonly storeOps: Histogram<'operation'>;
  readonly storeConflicts: Counter;
  readonly storeWatchErrors: Counter;
  readonly etcdRequests: Histogram<'operation' | 'outcome'>;
  readonly leaderChanges: Counter;
  private readonly isLeader: Gauge;
  private readonly queues = new Map<QueueName, QueueGauges>();
  private counts: FleetCounts | undefined;
  private lastLeader = '';

  constructor(registry: Registry, info: { version: string; store: string }) {
    const registers = [registry];
    const queues = this.queues;
    const buckets = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60];
    new Gauge({
      name: 'vop_controller_info',
      help: 'Always 1; build facts and store kind.',
      labelNames: ['version', 'store'] as const,
      registers,
    }).set(info, 1);
    this.isLeader = new Gauge({
      name: 'vop_controller_is_leader',
      help: '1 while this replica holds leadership (the embedded store has one replica, which leads once started).',
      registers,
    });
    this.isLeader.set(0);
    this.leaderChanges = new Counter({
      name: 'vop_controller_leader_changes_total',
      help: 'Changes of the leader this replica saw (another replica or this one took over).',
      registers,
    });
    new Gauge({
      name: 'workqueue_depth',
      help: 'Items waiting in the work queue.',
      labelNames: ['name'] as const,
      registers,
      collect() {
        this.reset();
        for (const [name, q] of queues) this.set({ name }, q.depth());
      },
    });
    this.queueAdds = new Counter({
      name: 'workqueue_adds_total',
      help: 'Items added to the work queue.',
      labelNames: ['name'] as const,
      registers,
    });
    this.queueRetries = new Counter({
      name: 'workqueue_retries_total',
      help: 'Items re-added with backoff after a failed pass.',
      labelNames: ['name'] as const,
      registers,
    });
    this.queueDuration = new Histogram({
      name: 'workqueue_queue_duration_seconds',
      help: 'Time an item waited before processing.',
      labelNames: ['name'] as const,
      buckets,
      registers,
    });
    this.workDuration = new Histogram({
      name: 'workqueue_work_duration_seconds',
      help: 'Time spent processing an item.',
      labelNames: ['name'] as const,
      buckets,
      registers,
    });
    new Gauge({
      name: 'workqueue_unfinished_work_seconds',
      help: 'Work in progress not yet finished (stuck reconciles grow it).',
      labelNames: ['name'] as const,
      registers,
      collect() {
        this.reset();
        for (const [name, q] of queues) this.set({ name }, q.unfinishedSeconds());
      },
    });
    new Gauge({
      name: 'workqueue_longest_running_processor_seconds',
      help: 'Longest-running item in progress.',
      labelNames: ['name'] as const,
      registers,
      collect() {
        this.reset();
        for (const [name, q] of queues) this.set({ name }, q.longestRunningSeconds());
      },
    });
    this.reconcileTotal = new Counter({
      name: 'vop_controller_reconcile_total',
      help: 'Reconcile passes by result.',
      labelNames: ['result'] as const,
      registers,
    });
    this.reconcileDuration = new Histogram({
      name: 'vop_controller_reconcile_duration_seconds',
      help: 'Duration of one reconcile pass of one key.',
      buckets,
      registers,
    });
    this.syncMessages = new Counter({
      name: 'vop_controller_sync_messages_received_total',
      help: 'Messages received on agent sync streams, by type.',
      labelNames: ['type'] as const,
      registers,
    });
    this.desiredPushes = new Counter({
      name: 'vop_controller_desired_pushes_total',
      help: 'DesiredLinks messages sent to agents, by kind (snapshot or delta).',
      labelNames: ['kind'] as const,
      registers,
    });
    this.rejections = new Counter({
      name: 'vop_controller_desired_rejections_total',
      help: 'Desired links an agent rejected in an acknowledgement.',
      registers,
    });
    this.drift = new Counter({
      name: 'vop_controller_drift_detected_total',
      help: 'Differences between desired links and what an agent reported, found and corrected.',
      labelNames: ['direction'] as const,
      registers,
    });
    this.registrationsThrottled = new Counter({
      name: 'vop_controller_registrations_throttled_total',
      help: 'Agent registrations refused with RESOURCE_EXHAUSTED (REGISTRATIONS_THROTTLED) and a retry time.',
      registers,
    });
    this.loopStalls = new Counter({
      name: 'vop_controller_event_loop_stalls_total',
      help: 'Times the main thread was blocked for a second or more (each is logged with its length).',
      registers,
    });
    this.leaseExpirations = new Counter({
      name: 'vop_controller_lease_expirations_total',
      help: 'Agent leases that expired (agent marked NotReady).',
      registers,
    });
    this.storeOps = new Histogram({
      name: 'vop_controller_store_operation_duration_seconds',
      help: 'Latency of store operations.',
      labelNames: ['operation'] as const,
      buckets,
      registers,
    });
    this.storeConflicts = new Counter({
      name: 'vop_controller_store_conflicts_total',
      help: 'Store writes refused because the resourceVersion was stale (ABORTED to the client).',
      registers,
    });
    this.storeWatchErrors = new Counter({
      name: 'vop_controller_store_watch_errors_total',
      help: 'Failures of the store watch that keeps this replica current (it reconnects, or relists, on its own).',
      registers,
    });
    this.etcdRequests = new Histogram({
      name: 'vop_controller_etcd_request_duration_seconds',
      help: 'Latency of requests to etcd (retries across members included), by operation and outcome (ok, refused: a compare failed, error).',
      labelNames: ['operation', 'outcome'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    const counts = (): FleetCounts | undefined => this.counts;
    new Gauge({
      name: 'vop_controller_agents',
      help: 'Registered agents by rack and phase.',
      labelNames: ['rack', 'phase'] as const,
      registers,
      collect() {
        this.reset();
        for (const [rack, phase, n] of counts()?.agents() ?? []) this.set({ rack, phase }, n);
      },
    });
    new Gauge({
      name: 'vop_controller_links',
      help: 'Desired links by rack (of the card endpoint) and condition status.',
      labelNames: ['rack', 'condition', 'status'] as const,
      registers,
      collect() {
        this.reset();
        for (const [rack, condition, status, n] of counts()?.links() ?? []) this.set({ rack, condition, status }, n);
      },
    });
    new Gauge({
      name: 'vop_controller_policies',
      help: 'LinkPolicies in the store.',
      registers,
      collect() {
        this.set(counts()?.policies() ?? 0);
      },
    });
    new Gauge({
      name: 'vop_controller_agents_store_conflict',
      help: 'Connected agents that hold their links because this store is not the one they last applied (another cluster id, or an older generation): vopctl adopt.',
      registers,
      collect() {
        this.set(counts()?.storeConflicts() ?? 0);
      },
    });
    new Gauge({
      name: 'vop_controller_sync_streams',
      help: 'Open agent sync streams.',
      registers,
      collect() {
        this.set(counts()?.syncStreams() ?? 0);
      },
    });
  }

  registerQueue(name: QueueName, q: QueueGauges): void {
    this.queues.set(name, q);
  }

  /** Leadership as the elector reports it; `leader` names the leader (this replica or another), "" when none is known. */
  setLeadership(isLeader: boolean, leader: string): void {
    this.isLeader.set(isLeader ? 1 : 0);
    if (leader !== '' && leader !== this.lastLeader) {
      if (this.lastLeader !== '') this.leaderChanges.inc();
      this.lastLeader = leader;
    }
  }

  setCounts(c: FleetCounts): void {
    this.counts = c;
  }
}
