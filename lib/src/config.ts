/**
 * Configuration loading shared by vop-agent and vop-controller.
 *
 * Precedence, highest first: command-line flags, environment (PREFIX_UPPER_SNAKE of
 * the flag name), the YAML config file (--config), then the schema's defaults. The
 * merged object is validated once with a zod schema; an error names the field and
 * where its value came from, and the process refuses to start.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import YAML from 'yaml';
import { z } from 'zod';

import { LOG_LEVELS } from './logger';
import { isLoopback, parseHostPort, type HostPort } from './net';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** A flag: `--grpc-listen` sets the top-level path ["grpcListen"], `--tls-cert` sets ["tls","cert"]. */
export interface FlagSpec {
  readonly flag: string;
  readonly path: readonly string[];
  readonly type: 'string' | 'boolean';
  readonly help: string;
}

export const hostPortSchema = z.string().transform((s, ctx): HostPort => {
  const hp = parseHostPort(s);
  if (typeof hp === 'string') {
    ctx.addIssue({ code: 'custom', message: hp });
    return z.NEVER;
  }
  return hp;
});

export const logLevelSchema = z.enum(LOG_LEVELS as [string, ...string[]]);

export const tlsSchema = z
  .object({
    /** PEM CA bundle that client certificates must chain to; enables mutual TLS. */
    ca: z.string().min(1).optional(),
    cert: z.string().min(1),
    key: z.string().min(1),
    /** Require and verify a client certificate (mutual TLS). */
    requireClientCert: z.boolean().default(true),
  })
  .strict();

/**
 * The local admin endpoint: a Unix socket, mode 0660, owned by the process's user and
 * `group`. Whoever can open it is admin (the docker/containerd convention).
 */
export const adminSocketSchema = z
  .object({
    /** Absolute path of the socket; "" turns the endpoint off. */
    path: z.union([
      z.literal(''),
      z
        .string()
        .startsWith('/', 'must be an absolute path')
        .max(100, 'must be at most 100 bytes (a Unix socket path is limited to 107)'),
    ]),
    /** Group (name or numeric gid) that owns the socket; its members are admin. Default: the process's group. */
    group: z.string().min(1).optional(),
  })
  .strict();

/**
 * Certificate names refused at once (a compromised card): new calls get
 * UNAUTHENTICATED and open streams of that name are ended. `file` holds one name per
 * line (# comments); it is re-read when it changes and on SIGHUP.
 */
export const denylistSchema = z
  .object({
    names: z.array(z.string().min(1)).default([]),
    file: z.string().min(1).optional(),
  })
  .strict()
  .default({ names: [] });

/** HTTPS for /metrics and /sd/*: a client certificate with role reader or admin is required; /healthz stays open. */
export const metricsTlsSchema = z
  .object({
    cert: z.string().min(1),
    key: z.string().min(1),
    /** CA for client certificates; without it anyone reaching the port may scrape. */
    ca: z.string().min(1).optional(),
  })
  .strict();

export const rolesSchema = z
  .object({
    admin: z.array(z.string().min(1)).default([]),
    reader: z.array(z.string().min(1)).default([]),
    agent: z.array(z.string().min(1)).default([]),
  })
  .strict()
  .default({ admin: [], reader: [], agent: [] });

/** Options every vop server has. */
export const serverBaseShape = {
  grpcListen: hostPortSchema,
  metricsListen: hostPortSchema,
  stateDir: z.string().min(1),
  logLevel: logLevelSchema.default('info'),
  tls: tlsSchema.optional(),
  roles: rolesSchema,
  /** Role of callers without a client certificate when TLS is off (admins use the Unix socket). */
  plaintextRole: z.enum(['admin', 'reader', 'none']).default('reader'),
  adminSocket: adminSocketSchema,
  denylist: denylistSchema,
  metricsTls: metricsTlsSchema.optional(),
  /** Allow plaintext gRPC on a non-loopback address (off: refuse to start). */
  allowInsecureListen: z.boolean().default(false),
};

export const SERVER_BASE_FLAGS: readonly FlagSpec[] = [
  { flag: 'grpc-listen', path: ['grpcListen'], type: 'string', help: 'gRPC listen address HOST:PORT' },
  {
    flag: 'metrics-listen',
    path: ['metricsListen'],
    type: 'string',
    help: 'HTTP /metrics and /healthz listen address HOST:PORT',
  },
  { flag: 'state-dir', path: ['stateDir'], type: 'string', help: 'directory for persistent state' },
  { flag: 'log-level', path: ['logLevel'], type: 'string', help: `log level (${LOG_LEVELS.join('|')})` },
  { flag: 'tls-cert', path: ['tls', 'cert'], type: 'string', help: 'PEM server certificate' },
  { flag: 'tls-key', path: ['tls', 'key'], type: 'string', help: 'PEM server key' },
  { flag: 'tls-ca', path: ['tls', 'ca'], type: 'string', help: 'PEM CA for client certificates (mutual TLS)' },
  {
    flag: 'admin-socket',
    path: ['adminSocket', 'path'],
    type: 'string',
    help: 'local admin endpoint (Unix socket, mode 0660; "" = off)',
  },
  {
    flag: 'admin-socket-group',
    path: ['adminSocket', 'group'],
    type: 'string',
    help: 'group owning the admin socket (its members are admin)',
  },
  {
    flag: 'denylist-file',
    path: ['denylist', 'file'],
    type: 'string',
    help: 'file of denied certificate names, one a line (re-read on change and SIGHUP)',
  },
];

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function setPath(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let cur = obj;
  for (let i = 0; i < path.length - 1; i++) {
    const k = path[i] as string;
    const next = cur[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[path[path.length - 1] as string] = value;
}

export interface LoadedConfig<T> {
  readonly config: T;
  /** Where each top-level value came from, for the start-up log. */
  readonly sources: Readonly<Record<string, 'flag' | 'env' | 'file' | 'default'>>;
  readonly configFile: string | null;
}

export interface LoadOptions<S extends z.ZodType> {
  readonly program: string;
  readonly schema: S;
  readonly flags: readonly FlagSpec[];
  /** e.g. "VOP_AGENT": --grpc-listen is read from VOP_AGENT_GRPC_LISTEN. */
  readonly envPrefix: string;
  readonly defaults: Record<string, unknown>;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Objects merge key by key; anything else in `over` replaces `base`. */
function deepMerge(base: unknown, over: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(over)) return over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = deepMerge(base[k], v);
  return out;
}

function envName(prefix: string, flag: string): string {
  return `${prefix}_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export function usage<S extends z.ZodType>(opts: Pick<LoadOptions<S>, 'program' | 'flags' | 'envPrefix'>): string {
  const lines = [`usage: ${opts.program} [--config FILE] [flags]`, '', 'flags (environment variable in brackets):'];
  lines.push(`  --config FILE`.padEnd(28) + ` YAML config file [${opts.envPrefix}_CONFIG]`);
  for (const f of opts.flags) {
    lines.push(
      `  --${f.flag}${f.type === 'string' ? ' VALUE' : ''}`.padEnd(28) +
        ` ${f.help} [${envName(opts.envPrefix, f.flag)}]`,
    );
  }
  lines.push('  --help'.padEnd(28) + ' this text', '  --version'.padEnd(28) + ' print the version');
  lines.push('', 'precedence: flags, then environment, then config file, then defaults');
  return lines.join('\n');
}

/** Parses argv/env/file into a validated config, or throws ConfigError naming the field. */
export function loadConfig<S extends z.ZodType>(opts: LoadOptions<S>): LoadedConfig<z.output<S>> {
  const options: Record<string, { type: 'string' | 'boolean' }> = {
    config: { type: 'string' },
    help: { type: 'boolean' },
    version: { type: 'boolean' },
  };
  for (const f of opts.flags) options[f.flag] = { type: f.type };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...opts.argv], options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n\n${usage(opts)}`);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;

  const merged: Record<string, unknown> = structuredClone(opts.defaults);
  const sources: Record<string, 'flag' | 'env' | 'file' | 'default'> = {};
  for (const k of Object.keys(merged)) sources[k] = 'default';

  const configFile = (values.config as string | undefined) ?? opts.env[`${opts.envPrefix}_CONFIG`] ?? null;
  if (configFile !== null) {
    let text: string;
    try {
      text = readFileSync(configFile, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${configFile}: ${(err as Error).message}`);
    }
    let doc: Json;
    try {
      doc = YAML.parse(text, { strict: true, uniqueKeys: true }) as Json;
    } catch (err) {
      throw new ConfigError(`config file ${configFile} is not valid YAML: ${(err as Error).message}`);
    }
    if (doc !== null && (typeof doc !== 'object' || Array.isArray(doc))) {
      throw new ConfigError(`config file ${configFile}: top level must be a mapping`);
    }
    for (const [k, v] of Object.entries(doc ?? {})) {
      merged[k] = deepMerge(merged[k], v);
      sources[k] = 'file';
    }
  }
  for (const f of opts.flags) {
    const raw = opts.env[envName(opts.envPrefix, f.flag)];
    if (raw === undefined || raw === '') continue;
    setPath(merged, f.path, f.type === 'boolean' ? /^(1|true|yes|on)$/i.test(raw) : raw);
    sources[f.path[0] as string] = 'env';
  }
  for (const f of opts.flags) {
    const v = values[f.flag];
    if (v === undefined) continue;
    setPath(merged, f.path, v);
    sources[f.path[0] as string] = 'flag';
  }

  const result = opts.schema.safeParse(merged);
  if (!result.success) {
    const msgs = result.error.issues.map((i) => {
      const field = i.path.map(String).join('.') || '(root)';
      const src = sources[String(i.path[0])] ?? 'config';
      return `  ${field}: ${i.message} (from ${src === 'file' ? `config file ${configFile}` : src})`;
    });
    throw new ConfigError(`invalid configuration:\n${msgs.join('\n')}`);
  }
  return { config: result.data, sources, configFile };
}

/** Start-up rule: plaintext gRPC only on loopback unless explicitly allowed. */
export function checkListenSecurity(c: { grpcListen: HostPort; tls?: unknown; allowInsecureListen: boolean }): void {
  if (c.tls === undefined && !isLoopback(c.grpcListen.host) && !c.allowInsecureListen) {
    throw new ConfigError(
      `grpcListen: plaintext gRPC on non-loopback address ${c.grpcListen.host} is refused; configure tls or set allowInsecureListen: true`,
    );
  }
}
