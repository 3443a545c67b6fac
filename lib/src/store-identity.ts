/**
 * The store identity rule, one definition for the agent (which enforces it) and the controller
 * (which reports it): an agent that applied desired state from a store (cluster id X, generation
 * G) applies a later version only from the same store at generation G or later. Another cluster id
 * (the store was wiped, replaced, or another etcd prefix is read) or an older generation (a backup
 * was restored) is a conflict: the agent keeps every link it runs and applies nothing until an
 * operator adopts it (docs/controller.md, "Store identity").
 */
export interface StoreIdentityLike {
  readonly clusterId: string;
  readonly generation: bigint;
}

export type StoreConflictReason = 'ClusterIdChanged' | 'GenerationBehind';

export interface StoreConflict {
  readonly reason: StoreConflictReason;
  /** One sentence: what the agent applied last and what is presented now. */
  readonly message: string;
}

/**
 * The conflict between what an agent last applied and what a controller presents, or undefined
 * when the agent may apply (nothing applied yet, no identity presented: a controller from before
 * identities, or the same store at the same or a later generation).
 */
export function storeConflict(
  applied: StoreIdentityLike | undefined,
  presented: StoreIdentityLike | undefined,
): StoreConflict | undefined {
  if (!applied || applied.clusterId === '' || !presented || presented.clusterId === '') return undefined;
  if (presented.clusterId !== applied.clusterId)
    return {
      reason: 'ClusterIdChanged',
      message: `the store has cluster id ${presented.clusterId} (generation ${presented.generation}), but this agent last applied cluster id ${applied.clusterId} (generation ${applied.generation}): the store was wiped or replaced`,
    };
  if (presented.generation < applied.generation)
    return {
      reason: 'GenerationBehind',
      message: `the store is at generation ${presented.generation}, older than generation ${applied.generation} this agent last applied (cluster id ${applied.clusterId}): an older copy of the store (a restored backup)`,
    };
  return undefined;
}
