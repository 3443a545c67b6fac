/**
 * The reconciler's three keyed work queues, as the parts that enqueue work see them: the sync
 * sessions and the passes add keys; only the reconciler runs workers.
 *
 *   policies  "NAME": render the policy, write the links it owns (policy-pass.ts)
 *   agents    "NAME": deliver the agent's desired links (desired-push.ts)
 *   links     "NAME": aggregate the two agents' reports into the link's status (link-pass.ts)
 */
import type { WorkQueue } from './work-queue';

export interface WorkQueues {
  readonly policies: WorkQueue;
  readonly agents: WorkQueue;
  readonly links: WorkQueue;
}
