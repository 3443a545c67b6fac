/**
 * Where vopctl connects and how: --server, then $VOPCTL_SERVER, then the config file
 * ($VOPCTL_CONFIG or ~/.config/vop/vopctl.yaml: { server, tls: { ca, cert, key } }),
 * then the controller's admin Unix socket (unix:/run/vop/controller.sock; whoever may
 * open it is admin). A server that is a path or unix:PATH is a Unix socket; HOST:PORT
 * is TCP (plaintext is read-only there; use mutual TLS). TLS files come from
 * --tls-ca/--tls-cert/--tls-key, then the same file. Every call has a deadline.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  credentials,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import YAML from 'yaml';

import { BadRequest, ErrorInfo, Status } from '../../../lib/proto/google-rpc';
import { ControllerServiceClient } from '../../../lib/proto/controller';
import { CliError, EXIT, exitCodeForStatus } from './exit-codes';

export const DEFAULT_SERVER = 'unix:/run/vop/controller.sock';

/** "/run/x.sock" -> "unix:/run/x.sock"; anything else unchanged. */
export function serverTarget(server: string): string {
  return server.startsWith('/') ? `unix:${server}` : server;
}
export const DEFAULT_TIMEOUT_MS = 15_000;

export interface ConnectionFlags {
  readonly server?: string | undefined;
  readonly tlsCa?: string | undefined;
  readonly tlsCert?: string | undefined;
  readonly tlsKey?: string | undefined;
  readonly timeoutMs: number;
}

interface FileConfig {
  server?: string;
  tls?: { ca?: string; cert?: string; key?: string };
}

function loadFileConfig(env: NodeJS.ProcessEnv): FileConfig {
  const file = env.VOPCTL_CONFIG ?? path.join(os.homedir(), '.config', 'vop', 'vopctl.yaml');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    if (env.VOPCTL_CONFIG) throw new CliError(`cannot read config file ${file}`, EXIT.USAGE);
    return {};
  }
  const parsed: unknown = YAML.parse(text);
  if (parsed === null || typeof parsed !== 'object') return {};
  return parsed;
}

/** Where to connect and with which credentials (every command, every server). */
export interface Target {
  /** grpc-js target: "unix:PATH" or "HOST:PORT". */
  readonly server: string;
  readonly credentials: ChannelCredentials;
}

/** --server / $VOPCTL_SERVER / config file / the admin socket, and the TLS files from the same sources. */
export function resolveTarget(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Target {
  const file = loadFileConfig(env);
  const server = serverTarget(flags.server ?? env.VOPCTL_SERVER ?? file.server ?? DEFAULT_SERVER);
  const ca = flags.tlsCa ?? env.VOPCTL_TLS_CA ?? file.tls?.ca;
  const cert = flags.tlsCert ?? env.VOPCTL_TLS_CERT ?? file.tls?.cert;
  const key = flags.tlsKey ?? env.VOPCTL_TLS_KEY ?? file.tls?.key;
  if (!ca && !cert && !key) return { server, credentials: credentials.createInsecure() };
  try {
    return {
      server,
      credentials: credentials.createSsl(
        ca ? readFileSync(ca) : null,
        key ? readFileSync(key) : null,
        cert ? readFileSync(cert) : null,
      ),
    };
  } catch (err) {
    throw new CliError(`cannot load TLS files: ${(err as Error).message}`, EXIT.USAGE);
  }
}

/** A unary method of a generated client, in the overload that takes metadata and call options. */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

export interface Connection {
  readonly server: string;
  /** The generated ControllerService client. */
  readonly client: ControllerServiceClient;
  readonly timeoutMs: number;
  /**
   * One unary call with the connection's deadline; a failure becomes a CliError. Pass the client's
   * method bound to it, e.g. `conn.unary(ctl.listLinks.bind(ctl), request)`: request and response
   * types come from the generated client.
   */
  unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req): Promise<Res>;
  close(): void;
}

export function connect(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Connection {
  const { server, credentials: creds } = resolveTarget(flags, env);
  const client = new ControllerServiceClient(server, creds);
  return {
    server,
    client,
    timeoutMs: flags.timeoutMs,
    unary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req): Promise<Res> {
      return new Promise<Res>((resolve, reject) => {
        method(request, new Metadata(), { deadline: Date.now() + flags.timeoutMs }, (err, res) => {
          if (err) reject(toCliError(err, server));
          else resolve(res);
        });
      });
    },
    close: () => client.close(),
  };
}

/**
 * Turns a gRPC error into a one-line message naming the reason and each bad field. `what` names the
 * server in messages about reaching it ("the controller" for the controller's commands).
 */
export function toCliError(err: ServiceError, server: string, what = 'the controller'): CliError {
  const code = exitCodeForStatus(err.code);
  if (code === EXIT.UNAVAILABLE && /EACCES/.test(err.details)) {
    return new CliError(
      `cannot open ${what === 'the controller' ? "the controller's" : 'the'} socket ${server}: permission denied (be root or in the socket's group, adminSocket.group)`,
      code,
    );
  }
  if (code === EXIT.UNAVAILABLE && /connect|No connection|ECONNREFUSED|ENOENT|Deadline/i.test(err.details)) {
    return new CliError(`cannot reach ${what} at ${server}: ${err.details} (use --server or VOPCTL_SERVER)`, code);
  }
  let reason = '';
  const fields: string[] = [];
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (raw instanceof Buffer) {
    try {
      for (const d of Status.decode(raw).details) {
        if (d.typeUrl.endsWith('/google.rpc.ErrorInfo')) reason = ErrorInfo.decode(d.value).reason;
        if (d.typeUrl.endsWith('/google.rpc.BadRequest'))
          for (const v of BadRequest.decode(d.value).fieldViolations) fields.push(`  ${v.field}: ${v.description}`);
      }
    } catch {
      /* details are optional */
    }
  }
  const head = `${err.details}${reason ? ` [${reason}]` : ''}`;
  return new CliError(fields.length > 1 ? `${head}\n${fields.join('\n')}` : head, code);
}
