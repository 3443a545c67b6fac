/**
 * vop-agent configuration: flags > VOP_AGENT_* environment > YAML file > defaults.
 * See deploy/examples/agent.yaml for a commented example.
 */
import os from 'node:os';
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
import { ViolationList } from '../../lib/src/errors';
import { limitsSchema } from '../../lib/src/limits';
import { NAME_RE } from '../../lib/src/validate';
import { checkAgentLabels, checkOptionalName } from '../../lib/src/validate-registration';

export const AGENT_DEFAULTS = {
  grpcListen: '127.0.0.1:7411',
  metricsListen: '127.0.0.1:9411',
  stateDir: '/var/lib/vop-agent',
  logLevel: 'info',
};

const nodeNameSchema = z.string().regex(NAME_RE, 'must be a DNS-1123 label (a-z, 0-9, "-", 1-63 characters)');

export const agentConfigSchema = z
  .object({
    ...serverBaseShape,
    /** This node's identity in the fleet. */
    node: z
      .object({
        name: nodeNameSchema,
        rack: z.string().default(''),
        slot: z.number().int().min(0).max(65535).default(0),
        role: z.enum(['host', 'card', 'vm']).default('host'),
        /** For cards and VMs: the node name of the host they sit in. */
        hostNode: z.string().default(''),
        labels: z.record(z.string(), z.string()).default({}),
      })
      .strict()
      // The rules the controller applies to a registration (lib/src/validate-registration.ts),
      // so that a node the controller would refuse does not start.
      .superRefine((node, ctx) => {
        const v = new ViolationList();
        checkOptionalName(v, 'rack', node.rack);
        checkOptionalName(v, 'hostNode', node.hostNode);
        checkAgentLabels(v, 'labels', node.labels);
        for (const i of v.items) ctx.addIssue({ code: 'custom', path: [i.field], message: i.description });
      }),
    /** Limits on links, devices, windows, queues, streams and watchers (lib/src/limits.ts). */
    limits: limitsSchema,
    /** Directory shared with co-located agents for shm rendezvous (0700). */
    rendezvousDir: z.string().min(1).default('/run/vop'),
    /** vop-controller to dial; absent: the agent runs standalone. */
    controller: z
      .object({
        address: z.string().min(1),
        tls: z
          .object({
            ca: z.string().min(1),
            cert: z.string().min(1),
            key: z.string().min(1),
            serverName: z.string().optional(),
          })
          .strict()
          .optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export type AgentConfig = z.output<typeof agentConfigSchema>;

export const AGENT_FLAGS: readonly FlagSpec[] = [
  ...SERVER_BASE_FLAGS,
  { flag: 'node-name', path: ['node', 'name'], type: 'string', help: 'node name of this agent (default: hostname)' },
  { flag: 'rack', path: ['node', 'rack'], type: 'string', help: 'rack this node sits in' },
  { flag: 'role', path: ['node', 'role'], type: 'string', help: 'host|card|vm' },
  { flag: 'host-node', path: ['node', 'hostNode'], type: 'string', help: 'for a card or VM: its host node name' },
  { flag: 'rendezvous-dir', path: ['rendezvousDir'], type: 'string', help: 'shared directory for shm link rendezvous' },
  {
    flag: 'controller',
    path: ['controller', 'address'],
    type: 'string',
    help: 'vop-controller address HOST:PORT to dial',
  },
];

function defaultNodeName(): string {
  const h = os.hostname().toLowerCase().split('.')[0] ?? 'node';
  const cleaned = h.replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '');
  return cleaned === '' ? 'node' : cleaned.slice(0, 63);
}

export function loadAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv): LoadedConfig<AgentConfig> {
  const loaded = loadConfig({
    program: 'vop-agent',
    schema: agentConfigSchema,
    flags: AGENT_FLAGS,
    envPrefix: 'VOP_AGENT',
    defaults: { ...AGENT_DEFAULTS, node: { name: defaultNodeName() } },
    argv,
    env,
  });
  checkListenSecurity(loaded.config);
  return {
    ...loaded,
    config: {
      ...loaded.config,
      stateDir: path.resolve(loaded.config.stateDir),
      rendezvousDir: path.resolve(loaded.config.rendezvousDir),
    },
  };
}
