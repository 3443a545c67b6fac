/**
 * vop-agent configuration: flags > VOP_AGENT_* environment > YAML file > defaults.
 * See deploy/examples/agent.yaml for a commented example.
 */
import os from 'node:os';
import path from 'node:path';

import { z } from 'zod';

import {
  checkListenSecurity,
  ConfigError,
  loadConfig,
  SERVER_BASE_FLAGS,
  serverBaseShape,
  type FlagSpec,
  type LoadedConfig,
} from '../../lib/src/config';
import { isLoopback, parseHostPort } from '../../lib/src/net';
import { ViolationList } from '../../lib/src/errors';
import { limitsSchema } from '../../lib/src/limits';
import { NAME_RE } from '../../lib/src/validate';
import { checkAgentLabels, checkOptionalName } from '../../lib/src/validate-registration';

export const AGENT_DEFAULTS = {
  grpcListen: '127.0.0.1:7411',
  metricsListen: '127.0.0.1:9411',
  stateDir: '/var/lib/vop-agent',
  logLevel: 'info',
  adminSocket: { path: '/run/vop/agent.sock' },
};

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

const nodeNameSchema = z.string().regex(NAME_RE, 'must be a DNS-1123 label (a-z, 0-9, "-", 1-63 characters)');

/** Longest socket directory: its sockets' paths must fit sun_path (107 bytes) with room for a name. */
export const MAX_SOCKET_DIR_BYTES = 80;

/** A host directory of the path policy: the native layer takes it in ':'-separated descriptions. */
const hostDirSchema = z
  .string()
  .min(1)
  .refine((p) => !/[\0-\x1f]/.test(p), 'must not contain control characters');

/**
 * Where link specs may put host resources (docs/agent.md "Host paths"). Every default sits
 * under the state directory and is created 0700 at start.
 */
const hostPathsSchema = z
  .object({
    /** Directories blk backing files may lie in (regular files only); a single string is one directory. */
    diskDirs: z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(hostDirSchema)).optional(),
    /** Block devices a blk backing path may name, exactly as listed (e.g. /dev/vdb). */
    blockDevices: z.array(hostDirSchema).default([]),
    /** Unix sockets: NBD exports, console sockets, datagram backends. */
    socketDir: hostDirSchema.optional(),
    /**
     * A group (name or numeric gid) whose members may reach into socketDir: a QEMU that runs as
     * another user (as libvirt runs it) connecting to a vhost_user socket made with socket_mode 0660
     * and that socket_group. socketDir is made 0710 and owned by the group at start; sockets keep
     * their own modes (0600 unless a link says otherwise). Default: socketDir stays 0700.
     */
    socketDirGroup: z
      .string()
      .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/, 'must be a group name or a numeric gid')
      .optional(),
    /** Console logs and their rotated generations. */
    logDir: hostDirSchema.optional(),
    /** Stable symlinks to console ptys. */
    ptyDir: hostDirSchema.optional(),
    /**
     * Directories a vhost_user link in client mode may name its socket in (the front-end,
     * e.g. QEMU with server=on, creates it there); none by default. Server-mode sockets lie
     * in socketDir.
     */
    vhostUserClientDirs: z.array(hostDirSchema).default([]),
    /**
     * Directories a pci-bar link's bar_path and doorbell_path may lie in (sysfs resource files,
     * e.g. /sys/devices/pci0000:00; a test's shared-memory file); none by default. A string is a
     * comma-separated list (the --bar-dir flag).
     */
    barDirs: z
      .preprocess((v) => (typeof v === 'string' ? v.split(',').filter((x) => x !== '') : v), z.array(hostDirSchema))
      .default([]),
    /**
     * Network namespaces (names under /run/netns) a net device's TAP may be moved into; none
     * by default. A string is a comma-separated list (the --netns flag).
     */
    netns: z
      .preprocess(
        (v) => (typeof v === 'string' ? v.split(',').filter((x) => x !== '') : v),
        z.array(
          z
            .string()
            .regex(/^[A-Za-z0-9_.-]{1,63}$/, 'must be a namespace name under /run/netns')
            .refine((n) => n !== '.' && n !== '..', 'must be a namespace name under /run/netns'),
        ),
      )
      .default([]),
  })
  .strict()
  .default({ blockDevices: [], netns: [], vhostUserClientDirs: [], barDirs: [] });

/** The path policy with every default filled in and every path absolute and normalised. */
export interface HostPaths {
  readonly diskDirs: readonly string[];
  readonly blockDevices: readonly string[];
  readonly socketDir: string;
  /** Group allowed to search socketDir (made 0710 for it), or absent. */
  readonly socketDirGroup?: string;
  readonly logDir: string;
  readonly ptyDir: string;
  /** Network namespaces TAPs may be moved into. */
  readonly netns: readonly string[];
  /** Directories of vhost_user client-mode sockets (none when absent). */
  readonly vhostUserClientDirs?: readonly string[];
  /** pci-bar BAR and doorbell register files. */
  readonly barDirs: readonly string[];
}

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
    /** Directory shared with co-located agents for shm rendezvous (0700; its parent holds the admin socket). */
    rendezvousDir: z.string().min(1).default('/run/vop/rendezvous'),
    /**
     * NBD exports of blk devices (driver role). Over TCP an export requires TLS with the
     * node's certificates (tls.cert, tls.key, tls.ca: NBD STARTTLS, client certificates
     * required) unless allowPlaintextTcp; a non-loopback TCP export requires TLS always.
     */
    nbd: z
      .object({
        /** Allow a TCP export without TLS (loopback addresses only). */
        allowPlaintextTcp: z.boolean().default(false),
        /**
         * Client certificate names (subject CN, else first DNS SAN; "*" any the CA signed)
         * that may use a TLS export. Default: the names of roles.admin.
         */
        clients: z
          .array(z.string().regex(/^[^,:\s]+$/, 'must be a certificate name without ",", ":" or spaces'))
          .max(64)
          .optional(),
      })
      .strict()
      .default({ allowPlaintextTcp: false }),
    hostPaths: hostPathsSchema,
    /**
     * Certificates of stream links (TLS 1.3, mutual; docs/stream-protocol.md "TLS"). Default:
     * the node's `tls` when it has a `ca`. The certificate must carry this node's name as a DNS
     * subjectAltName; the key must be mode 0600 or 0400.
     */
    streamTls: z
      .object({
        ca: z.string().min(1),
        cert: z.string().min(1),
        key: z.string().min(1),
      })
      .strict()
      .optional(),
    /** vhost_user links (the device side served to QEMU or DPDK virtio-user over a Unix socket). */
    vhostUser: z
      .object({
        /**
         * Map guest memory the front-end could still shrink (an fd that cannot be sealed with
         * F_SEAL_SHRINK, e.g. DPDK without hugepages): a shrink would kill the agent with SIGBUS.
         * Off by default; QEMU's memory-backend-memfd is sealed.
         */
        allowUnsealedMemory: z.boolean().default(false),
        /** Largest virtqueue a front-end may set up (a power of two, default 1024). */
        maxQueueSize: z
          .number()
          .int()
          .min(2)
          .max(32768)
          .refine((n) => (n & (n - 1)) === 0, 'must be a power of two')
          .default(1024),
      })
      .strict()
      .default({ allowUnsealedMemory: false, maxQueueSize: 1024 }),
    /**
     * Data plane of stream links (separate from the gRPC address): the IPv4 address other agents
     * dial and the ports the controller allocates this agent's stream listeners from. Registered
     * with the controller; without it, a stream link whose device side is this agent must name
     * its address in the spec.
     */
    dataPlane: z
      .object({
        address: z.string().regex(IPV4_RE, 'must be an IPv4 address (no port), e.g. 10.0.0.2'),
        /** "FIRST-LAST" (inclusive) or { first, last }. */
        ports: z.preprocess(
          (v) => {
            if (typeof v !== 'string') return v;
            const m = /^(\d{1,5})-(\d{1,5})$/.exec(v.trim());
            return m ? { first: Number(m[1]), last: Number(m[2]) } : v;
          },
          z
            .object({ first: z.number().int().min(1).max(65535), last: z.number().int().min(1).max(65535) })
            .strict()
            .refine((r) => r.first <= r.last, { message: 'first must not be above last', path: ['last'] }),
        ),
      })
      .strict()
      .optional(),
    /** vop-controller to dial; absent: the agent runs standalone. */
    controller: z
      .object({
        /** HOST:PORT of the controller; several replicas comma-separated ("a:7400,b:7400"). */
        address: z.string().min(1).optional(),
        /** The controller replicas (with `address`, one list); the agent streams to the one that leads. */
        addresses: z.array(z.string().min(1)).max(16).optional(),
        tls: z
          .object({
            ca: z.string().min(1),
            cert: z.string().min(1),
            key: z.string().min(1),
            serverName: z.string().optional(),
          })
          .strict()
          .optional(),
        /** Dial a controller in plaintext on an address that is neither loopback nor a Unix socket. */
        allowInsecure: z.boolean().default(false),
      })
      .strict()
      .refine((c) => controllerAddresses(c).length > 0, {
        message: 'needs address (HOST:PORT, several comma-separated) or addresses (a list)',
        path: ['address'],
      })
      .optional(),
  })
  .strict();

export type AgentConfig = Omit<z.output<typeof agentConfigSchema>, 'hostPaths'> & { readonly hostPaths: HostPaths };

export const AGENT_FLAGS: readonly FlagSpec[] = [
  ...SERVER_BASE_FLAGS,
  { flag: 'node-name', path: ['node', 'name'], type: 'string', help: 'node name of this agent (default: hostname)' },
  { flag: 'rack', path: ['node', 'rack'], type: 'string', help: 'rack this node sits in' },
  { flag: 'role', path: ['node', 'role'], type: 'string', help: 'host|card|vm' },
  { flag: 'host-node', path: ['node', 'hostNode'], type: 'string', help: 'for a card or VM: its host node name' },
  { flag: 'rendezvous-dir', path: ['rendezvousDir'], type: 'string', help: 'shared directory for shm link rendezvous' },
  {
    flag: 'nbd-allow-plaintext-tcp',
    path: ['nbd', 'allowPlaintextTcp'],
    type: 'boolean',
    help: 'allow NBD exports over TCP without TLS (loopback addresses only)',
  },
  {
    flag: 'disk-dir',
    path: ['hostPaths', 'diskDirs'],
    type: 'string',
    help: 'the one directory blk backing files may lie in (default <state-dir>/disks)',
  },
  {
    flag: 'socket-dir',
    path: ['hostPaths', 'socketDir'],
    type: 'string',
    help: 'directory of NBD, console and datagram sockets (default <state-dir>/sockets)',
  },
  {
    flag: 'log-dir',
    path: ['hostPaths', 'logDir'],
    type: 'string',
    help: 'console log directory (default <state-dir>/logs)',
  },
  {
    flag: 'netns',
    path: ['hostPaths', 'netns'],
    type: 'string',
    help: 'network namespaces (under /run/netns, comma-separated) TAPs may be moved into (default none)',
  },
  {
    flag: 'pty-dir',
    path: ['hostPaths', 'ptyDir'],
    type: 'string',
    help: 'pty link directory (default <state-dir>/pty)',
  },
  {
    flag: 'bar-dir',
    path: ['hostPaths', 'barDirs'],
    type: 'string',
    help: 'directories (comma-separated) pci-bar BAR and doorbell files may lie in (default none)',
  },
  {
    flag: 'data-plane-address',
    path: ['dataPlane', 'address'],
    type: 'string',
    help: 'IPv4 address other agents dial for stream links this agent serves (registered with the controller)',
  },
  {
    flag: 'data-plane-ports',
    path: ['dataPlane', 'ports'],
    type: 'string',
    help: "FIRST-LAST: ports the controller allocates this agent's stream listeners from",
  },
  {
    flag: 'controller',
    path: ['controller', 'address'],
    type: 'string',
    help: 'vop-controller address HOST:PORT to dial (several replicas: comma-separated)',
  },
];

function defaultNodeName(): string {
  const h = os.hostname().toLowerCase().split('.')[0] ?? 'node';
  const cleaned = h.replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '');
  return cleaned === '' ? 'node' : cleaned.slice(0, 63);
}

/** Fills the path policy's defaults (under stateDir) and makes every path absolute and normalised. */
export function resolveHostPaths(
  stateDir: string,
  p: Omit<z.output<typeof hostPathsSchema>, 'vhostUserClientDirs'> & { vhostUserClientDirs?: string[] },
): HostPaths {
  const hp: HostPaths = {
    diskDirs: (p.diskDirs ?? [path.join(stateDir, 'disks')]).map((d) => path.resolve(d)),
    blockDevices: p.blockDevices.map((d) => path.resolve(d)),
    socketDir: path.resolve(p.socketDir ?? path.join(stateDir, 'sockets')),
    ...(p.socketDirGroup !== undefined ? { socketDirGroup: p.socketDirGroup } : {}),
    logDir: path.resolve(p.logDir ?? path.join(stateDir, 'logs')),
    ptyDir: path.resolve(p.ptyDir ?? path.join(stateDir, 'pty')),
    netns: [...p.netns],
    vhostUserClientDirs: (p.vhostUserClientDirs ?? []).map((d) => path.resolve(d)),
    barDirs: p.barDirs.map((d) => path.resolve(d)),
  };
  if (Buffer.byteLength(hp.socketDir) > MAX_SOCKET_DIR_BYTES)
    throw new ConfigError(
      `invalid configuration:\n  hostPaths.socketDir: "${hp.socketDir}" is ${Buffer.byteLength(hp.socketDir)} bytes; at most ${MAX_SOCKET_DIR_BYTES} so that socket paths fit 107 bytes`,
    );
  for (const [field, dir] of [
    ...hp.diskDirs.map((d, i) => [`hostPaths.diskDirs[${i}]`, d]),
    ['hostPaths.socketDir', hp.socketDir],
    ['hostPaths.logDir', hp.logDir],
    ['hostPaths.ptyDir', hp.ptyDir],
    ...hp.barDirs.map((d, i) => [`hostPaths.barDirs[${i}]`, d]),
  ] as const) {
    if (/[\0-\x1f]/.test(dir))
      throw new ConfigError(`invalid configuration:\n  ${field}: "${dir}" must not contain control characters`);
  }
  return hp;
}

/**
 * Start-up rule: the agent dials its controller in plaintext only on loopback or a
 * Unix socket, unless controller.allowInsecure says otherwise (the controller sends
 * desired links: whoever sits on the path could make this node run anything).
 */
export function checkControllerSecurity(c: Pick<AgentConfig, 'controller'>): void {
  const ctl = c.controller;
  if (!ctl || ctl.tls || ctl.allowInsecure) return;
  for (const address of controllerAddresses(ctl)) {
    if (address.startsWith('unix:')) continue;
    const hp = parseHostPort(address);
    if (typeof hp !== 'string' && isLoopback(hp.host)) continue;
    throw new ConfigError(
      `controller.address: plaintext connection to ${address} is refused (not loopback or a unix: socket); configure controller.tls or set controller.allowInsecure: true`,
    );
  }
}

/** Every controller address of the config: `address` (comma-separated) then `addresses`, without duplicates. */
export function controllerAddresses(c: {
  address?: string | undefined;
  addresses?: readonly string[] | undefined;
}): string[] {
  const all = [...(c.address ?? '').split(','), ...(c.addresses ?? [])].map((a) => a.trim()).filter((a) => a !== '');
  return [...new Set(all)];
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
  checkControllerSecurity(loaded.config);
  const stateDir = path.resolve(loaded.config.stateDir);
  return {
    ...loaded,
    config: {
      ...loaded.config,
      stateDir,
      rendezvousDir: path.resolve(loaded.config.rendezvousDir),
      hostPaths: resolveHostPaths(stateDir, loaded.config.hostPaths),
    },
  };
}
