/**
 * The store identity as etcd holds it (etcd-keys.ts: P meta/cluster-id, and P meta/generation
 * whose mod_revision is the generation), read in one linearizable range over any etcd client:
 * the store's own, or the election thread's (etcd-election-worker.ts), which a busy main thread
 * does not hold up.
 */
import type { Etcd3 } from 'etcd3';

import { prefixEnd, withRetry } from './etcd-client';
import type { EtcdKeys } from './etcd-keys';
import type { StoreIdentity } from './store';

export async function readEtcdIdentity(client: Etcd3, keys: EtcdKeys, timeoutMs: number): Promise<StoreIdentity> {
  const res = await withRetry('identity', timeoutMs, false, (deadline) =>
    client.kv.range({ key: keys.watchStart, range_end: prefixEnd(keys.watchStart) }, { deadline }),
  );
  let clusterId = '';
  let generation = 0n;
  for (const kv of res.kvs) {
    const k = keys.parse(kv.key);
    if (k.type === 'cluster-id') clusterId = kv.value.toString('utf8');
    else if (k.type === 'generation') generation = BigInt(kv.mod_revision);
  }
  return { clusterId, generation };
}
