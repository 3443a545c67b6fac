/** Chooses the desired-state store backend from the configuration. */
import { ConfigError } from '../../../lib/src/config';
import type { ControllerConfig } from '../config';
import { SqliteStore } from './sqlite-store';
import type { DesiredStateStore } from './store';

export function openStore(config: ControllerConfig): DesiredStateStore {
  switch (config.store.kind) {
    case 'sqlite':
      return new SqliteStore(config.stateDir);
    case 'etcd':
      throw new ConfigError(
        'store.kind "etcd" is not available in this build yet (several controller replicas come in a later release); use "sqlite"',
      );
    default:
      throw new ConfigError('store.kind must be sqlite or etcd');
  }
}
