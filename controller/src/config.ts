/**
 * vop-controller configuration: flags > VOP_CONTROLLER_* environment > YAML file > defaults.
 * See deploy/examples/controller.yaml for a commented example.
 */
import path from 'node:path';

import { z } from 'zod';

import {
  checkListenSecurity,
  loadConfig,
  SERVER_BASE_FLAGS,
  serverBaseShape,
  type FlagSpec,
  type LoadedConfig,
} from '../../lib/src/config';
import { limitsSchema } from '../../lib/src/limits';

/** A DesiredLinks version larger than this is sent as several messages (agents that assemble them). */
export const DEFAULT_SYNC_CHUNK_BYTES = 4 * 1024 * 1024;

export const CONTROLLER_DEFAULTS = {
  grpcListen: '127.0.0.1:7400',
  metricsListen: '127.0.0.1:9400',
  stateDir: '/var/lib/vop-controller',
  logLevel: 'info',
  adminSocket: { path: '/run/vop/controller.sock' },
};

export const controllerConfigSchema = z
  .object({
    ...serverBaseShape,
    store: z
      .discriminatedUnion('kind', [
        z.object({ kind: z.literal('sqlite') }).strict(),
        z
          .object({
            kind: z.literal('etcd'),
            endpoints: z.array(z.string().min(1)).min(1),
            prefix: z.string().default('/vop/'),
          })
          .strict(),
      ])
      .default({ kind: 'sqlite' }),
    /** Lease an agent holds between heartbeats; missing it marks the agent NotReady. */
    leaseSeconds: z.number().min(1).max(3600).default(15),
    /** Limits on links, streams and watchers (lib/src/limits.ts). */
    limits: limitsSchema,
    /** Largest DesiredLinks message to an agent; bigger versions are split (gRPC's limit is 16 MiB). */
    syncChunkBytes: z
      .number()
      .int()
      .min(1024)
      .max(8 * 1024 * 1024)
      .default(DEFAULT_SYNC_CHUNK_BYTES),
  })
  .strict();

export type ControllerConfig = z.output<typeof controllerConfigSchema>;

export const CONTROLLER_FLAGS: readonly FlagSpec[] = [...SERVER_BASE_FLAGS];

export function loadControllerConfig(argv: readonly string[], env: NodeJS.ProcessEnv): LoadedConfig<ControllerConfig> {
  const loaded = loadConfig({
    program: 'vop-controller',
    schema: controllerConfigSchema,
    flags: CONTROLLER_FLAGS,
    envPrefix: 'VOP_CONTROLLER',
    defaults: { ...CONTROLLER_DEFAULTS },
    argv,
    env,
  });
  checkListenSecurity(loaded.config);
  return { ...loaded, config: { ...loaded.config, stateDir: path.resolve(loaded.config.stateDir) } };
}
