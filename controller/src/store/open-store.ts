/** Chooses the desired-state store backend from the configuration. */
import { ConfigError } from '../../../lib/src/config';
import type { ControllerConfig } from '../config';
import { EtcdStore, type EtcdStoreOptions } from './etcd-store';
import { SqliteStore } from './sqlite-store';
import type { DesiredStateStore } from './store';

export function openStore(config: ControllerConfig, opts: { etcd?: EtcdStoreOptions } = {}): DesiredStateStore {
  const store = config.store;
  switch (store.kind) {
    case 'sqlite':
      return new SqliteStore(config.stateDir);
    case 'etcd':
      // Connects lazily: the first loadAll/loadSnapshot reads (or creates) the cluster id.
      return new EtcdStore(store, opts.etcd);
    default:
      throw new ConfigError('store.kind must be sqlite or etcd');
  }
}
