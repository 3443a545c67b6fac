/**
 * The worker thread of ThreadedEtcdElector (etcd-election-thread.ts): campaigns with its own
 * etcd client (etcd-election.ts), so that the lease keepalives and the campaign run while the
 * controller's main thread is busy. It publishes, in shared memory, the term it leads (0: none)
 * and the instant (process.hrtime, microseconds) after which the lease may have expired, and
 * posts every change of state; the main thread checks both before it trusts a 'leader' state.
 */
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';

import { createEtcdClient, type EtcdStoreConfig } from './etcd-client';
import { EtcdElector } from './etcd-election';
import { EtcdKeys } from './etcd-keys';
import { readEtcdIdentity } from './etcd-identity';
import type { Fence, LeaderState } from './leader-election';
import type { StoreIdentity } from './store';

export interface ElectionWorkerData {
  /** Marks the thread this module runs in (the main thread imports it for its types and slots). */
  readonly vopElectionWorker: true;
  readonly cfg: EtcdStoreConfig;
  readonly value: string;
  readonly ttlSeconds: number;
  readonly name: string;
  /** BigInt64Array(2) over it: [term led, lease deadline in hrtime microseconds]. */
  readonly shared: SharedArrayBuffer;
}

export type ToElectionWorker =
  | { readonly op: 'campaign' }
  | { readonly op: 'drop'; readonly fence: Fence }
  | { readonly op: 'resign' | 'close' | 'identity'; readonly id: number };

export type FromElectionWorker =
  | { readonly type: 'state'; readonly state: LeaderState; readonly term: bigint }
  | { readonly type: 'error'; readonly message: string }
  | { readonly type: 'done'; readonly id: number; readonly identity?: StoreIdentity; readonly error?: string };

/** Slots of the shared array. */
export const SHARED_TERM = 0;
export const SHARED_DEADLINE_US = 1;

export function hrNowUs(): bigint {
  return process.hrtime.bigint() / 1000n;
}

function main(port: MessagePort, data: ElectionWorkerData): void {
  const shared = new BigInt64Array(data.shared);
  const post = (m: FromElectionWorker): void => port.postMessage(m);
  const client = createEtcdClient(data.cfg);
  const keys = new EtcdKeys(data.cfg.prefix);
  const elector = new EtcdElector(
    client,
    keys,
    data.value,
    { ttlSeconds: data.ttlSeconds, name: data.name, onError: (err) => post({ type: 'error', message: err.message }) },
    data.cfg.requestTimeoutSeconds * 1000,
    () => undefined,
  );
  elector.onRenewed = (deadline) => {
    const us = hrNowUs() + BigInt(Math.floor((deadline - performance.now()) * 1000));
    Atomics.store(shared, SHARED_DEADLINE_US, us);
  };
  let term = 0n;
  elector.observe((state) => {
    // The term first, so that the main thread never sees a leader message before its term.
    if (state.role === 'leader') Atomics.store(shared, SHARED_TERM, ++term);
    else Atomics.store(shared, SHARED_TERM, 0n);
    post({ type: 'state', state, term: state.role === 'leader' ? term : 0n });
  });
  port.on('message', (m: ToElectionWorker) => {
    switch (m.op) {
      case 'campaign':
        elector.campaign();
        return;
      case 'drop':
        elector.dropTerm(m.fence);
        return;
      case 'identity':
        readEtcdIdentity(client, keys, data.cfg.requestTimeoutSeconds * 1000).then(
          (identity) => post({ type: 'done', id: m.id, identity }),
          (err: unknown) => post({ type: 'done', id: m.id, error: String(err) }),
        );
        return;
      case 'resign':
        void elector.resign().finally(() => post({ type: 'done', id: m.id }));
        return;
      case 'close':
        void elector.close().finally(() => {
          client.close();
          post({ type: 'done', id: m.id });
          port.close();
        });
        return;
    }
  });
}

if (!isMainThread && parentPort && (workerData as Partial<ElectionWorkerData> | null)?.vopElectionWorker === true)
  main(parentPort, workerData as ElectionWorkerData);
