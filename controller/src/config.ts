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
import { ETCD_DEFAULTS } from './store/etcd-client';

/** A DesiredLinks version larger than this is sent as several messages (agents that assemble them). */
export const DEFAULT_SYNC_CHUNK_BYTES = 4 * 1024 * 1024;
/** Agent registrations the leader admits per second, and at once (config syncAdmission). */
export const DEFAULT_REGISTRATIONS_PER_SECOND = 2000;
export const DEFAULT_REGISTRATION_BURST = 1000;

const ETCD_ENDPOINT = /^(https?:\/\/)?([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$/;

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
            /** The members, HOST:PORT or http(s)://HOST:PORT; the client fails over between them. */
            endpoints: z
              .array(z.string().regex(ETCD_ENDPOINT, 'must be HOST:PORT, http://HOST:PORT or https://HOST:PORT'))
              .min(1),
            /** Every key of this controller lives under it; replicas of one fleet share it. */
            prefix: z
              .string()
              .regex(/^[!-~]*\/$/, 'must be printable ASCII without spaces and end with "/"')
              .default(ETCD_DEFAULTS.prefix),
            /** TLS to etcd: the CA of its members, and a client certificate when etcd has --client-cert-auth. */
            tls: z
              .object({ ca: z.string().min(1), cert: z.string().min(1).optional(), key: z.string().min(1).optional() })
              .strict()
              .refine((t) => (t.cert === undefined) === (t.key === undefined), {
                message: 'cert and key go together',
                path: ['key'],
              })
              .optional(),
            /** Deadline of one store call, retries across members included. */
            requestTimeoutSeconds: z.number().min(0.1).max(300).default(ETCD_DEFAULTS.requestTimeoutSeconds),
            /** etcd's --max-txn-ops: a commit of the controller takes at most this minus 2 objects. */
            maxTxnOps: z.number().int().min(8).max(1_000_000).default(ETCD_DEFAULTS.maxTxnOps),
            /** Lease of the leader: a replica that stops renewing it loses leadership this long after. */
            leaderLeaseSeconds: z.number().int().min(2).max(300).default(ETCD_DEFAULTS.leaderLeaseSeconds),
          })
          .strict()
          .refine((s) => s.tls === undefined || !s.endpoints.some((e) => e.startsWith('http://')), {
            message: 'store.tls is set: endpoints must not use http://',
            path: ['endpoints'],
          }),
      ])
      .default({ kind: 'sqlite' }),
    /**
     * HOST:PORT agents and clients reach this replica at: what a replica that does not lead names
     * as the leader's address. Default: the gRPC listen address as bound (set it when that is a
     * wildcard such as 0.0.0.0, or behind NAT).
     */
    advertiseAddress: z
      .string()
      .regex(/^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$/, 'must be HOST:PORT')
      .optional(),
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
    /**
     * Agent registrations the leader admits (sync/registration-admission.ts): more are refused with
     * RESOURCE_EXHAUSTED and a retry time, so a whole fleet reconnecting at once (a failover) is taken
     * at a pace the leader keeps up with. registrationsPerSecond 0: unlimited.
     */
    syncAdmission: z
      .object({
        registrationsPerSecond: z.number().int().min(0).max(1_000_000).default(DEFAULT_REGISTRATIONS_PER_SECOND),
        burst: z.number().int().min(1).max(1_000_000).default(DEFAULT_REGISTRATION_BURST),
      })
      .strict()
      .default({ registrationsPerSecond: DEFAULT_REGISTRATIONS_PER_SECOND, burst: DEFAULT_REGISTRATION_BURST }),
  })
  .strict();

export type ControllerConfig = z.output<typeof controllerConfigSchema>;

export const CONTROLLER_FLAGS: readonly FlagSpec[] = [
  ...SERVER_BASE_FLAGS,
  {
    flag: 'advertise-address',
    path: ['advertiseAddress'],
    type: 'string',
    help: 'HOST:PORT agents and clients reach this replica at (default: the gRPC address as bound)',
  },
];

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
