/**
 * Where vopctl connects and how: --server, then $VOPCTL_SERVER, then the config file
 * ($VOPCTL_CONFIG or ~/.config/vop/vopctl.yaml: { server | servers, tls: { ca, cert, key } }),
 * then the controller's admin Unix socket (unix:/run/vop/controller.sock; whoever may
 * open it is admin). A server that is a path or unix:PATH is a Unix socket; HOST:PORT
 * is TCP (plaintext is read-only there; use mutual TLS). TLS files come from
 * --tls-ca/--tls-cert/--tls-key, then the same file. Every call has a deadline.
 *
 * Several controller replicas: a comma-separated --server (or $VOPCTL_SERVER, or `servers:`
 * in the file). vopctl asks them who leads (GetControllerStatus) and sends every call to the
 * leader first; a replica that does not lead answers NOT_LEADER with the leader's address, one
 * that cannot be reached is skipped, and until the deadline vopctl keeps trying (a failover
 * takes a lease's time). A mutation is sent again only when it provably was not applied (the
 * replica refused it as not the leader, or the connection was never established).
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import {
  credentials,
  Metadata,
  status as GrpcStatus,
  type CallOptions,
  type ChannelCredentials,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import YAML from 'yaml';

import { BadRequest, ErrorInfo, Status } from '../../../lib/proto/google-rpc';
import { ControllerServiceClient, type GetControllerStatusResponse } from '../../../lib/proto/controller';
import { errorInfoOf } from '../../../lib/src/errors';
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
  servers?: string[];
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
  /** grpc-js target: "unix:PATH" or "HOST:PORT" (the first of `servers`). */
  readonly server: string;
  /** Every server given (controller replicas), in the order given. */
  readonly servers: readonly string[];
  readonly credentials: ChannelCredentials;
}

function splitServers(text: string): string[] {
  return text
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '')
    .map(serverTarget);
}

/** --server / $VOPCTL_SERVER / config file / the admin socket, and the TLS files from the same sources. */
export function resolveTarget(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Target {
  const file = loadFileConfig(env);
  const fromFile = Array.isArray(file.servers) && file.servers.length > 0 ? file.servers.join(',') : file.server;
  const servers = splitServers(flags.server ?? env.VOPCTL_SERVER ?? fromFile ?? DEFAULT_SERVER);
  if (servers.length === 0) throw new CliError('--server names no server', EXIT.USAGE);
  const server = servers[0] as string;
  const ca = flags.tlsCa ?? env.VOPCTL_TLS_CA ?? file.tls?.ca;
  const cert = flags.tlsCert ?? env.VOPCTL_TLS_CERT ?? file.tls?.cert;
  const key = flags.tlsKey ?? env.VOPCTL_TLS_KEY ?? file.tls?.key;
  if (!ca && !cert && !key) return { server, servers, credentials: credentials.createInsecure() };
  try {
    return {
      server,
      servers,
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

/** Picks the method to call from a client, e.g. `(c) => c.listLinks.bind(c)`. */
export type MethodPick<Req, Res> = (client: ControllerServiceClient) => UnaryMethod<Req, Res>;

export interface Connection {
  /** The server calls go to first (the leader, once known). */
  readonly server: string;
  readonly timeoutMs: number;
  /**
   * One unary call with the connection's deadline, to the leader first and on to the other
   * replicas (see the file comment); a failure becomes a CliError. `read`: the call changes
   * nothing, so it may be sent again after any UNAVAILABLE. `idempotent`: sending it twice does
   * what sending it once does (an apply), so an UNAVAILABLE with an unknown outcome (the store
   * lost a member mid-write) is sent again too.
   */
  unary<Req, Res>(
    pick: MethodPick<Req, Res>,
    request: Req,
    opts?: { read?: boolean; idempotent?: boolean },
  ): Promise<Res>;
  /** The client of the server streams go to (the leader when one is known). */
  preferred(): Promise<ControllerServiceClient>;
  /** Asks every server who it is (GetControllerStatus); unreachable ones get their error. */
  statuses(): Promise<{ server: string; status?: GetControllerStatusResponse; error?: ServiceError }[]>;
  close(): void;
}

/** Per-attempt deadline of a read when other replicas remain to be tried (a paused replica never answers). */
const ATTEMPT_TIMEOUT_MS = 5000;
/** Between rounds over every replica while none accepts (an election). */
const ROUND_DELAY_MS = 500;

/** True when the call was refused before anything was done: it may be sent again, elsewhere. */
function notApplied(err: ServiceError): boolean {
  const reason = errorInfoOf(err)?.reason ?? '';
  if (reason === 'NOT_LEADER' || reason === 'STORE_UNAVAILABLE') return true;
  return (
    err.code === GrpcStatus.UNAVAILABLE &&
    /No connection established|ECONNREFUSED|ENOENT|connect ECONN|Failed to connect/i.test(err.details)
  );
}

export function connect(flags: ConnectionFlags, env: NodeJS.ProcessEnv = process.env): Connection {
  const target = resolveTarget(flags, env);
  const creds = target.credentials;
  const clients = new Map<string, ControllerServiceClient>();
  const client = (server: string): ControllerServiceClient => {
    let c = clients.get(server);
    if (!c) clients.set(server, (c = new ControllerServiceClient(server, creds)));
    return c;
  };
  const deadline = Date.now() + flags.timeoutMs;
  let order: string[] = [...target.servers];
  let probed = target.servers.length === 1;

  const callOnce = <Req, Res>(server: string, pick: MethodPick<Req, Res>, request: Req, ms: number): Promise<Res> =>
    new Promise<Res>((resolve, reject) => {
      pick(client(server))(request, new Metadata(), { deadline: Date.now() + ms }, (err, res) =>
        err ? reject(err) : resolve(res),
      );
    });

  const statuses = async (): Promise<
    { server: string; status?: GetControllerStatusResponse; error?: ServiceError }[]
  > =>
    Promise.all(
      target.servers.map(async (server) => {
        try {
          const status = await callOnce(
            server,
            (c) => c.getControllerStatus.bind(c),
            {},
            Math.max(1, Math.min(ATTEMPT_TIMEOUT_MS, deadline - Date.now())),
          );
          return { server, status };
        } catch (err) {
          return { server, error: err as ServiceError };
        }
      }),
    );

  /** Leader first, then the replicas that answered, then the rest, in the order given. */
  const probe = async (): Promise<void> => {
    probed = true;
    const st = await statuses();
    const rank = (x: (typeof st)[number]): number => (x.status?.leader ? 0 : x.status ? 1 : 2);
    order = [...st].sort((a, b) => rank(a) - rank(b)).map((x) => x.server);
    // A leader only a follower knows of (not in the list) goes first too.
    const hint = st.find((x) => x.status && !x.status.leader && x.status.leaderAddress !== '')?.status?.leaderAddress;
    if (hint && !st.some((x) => x.status?.leader)) order = [hint, ...order.filter((s) => s !== hint)];
  };

  const conn: Connection = {
    get server() {
      return order[0] ?? target.server;
    },
    timeoutMs: flags.timeoutMs,
    async unary<Req, Res>(
      pick: MethodPick<Req, Res>,
      request: Req,
      opts: { read?: boolean; idempotent?: boolean } = {},
    ): Promise<Res> {
      if (!probed) await probe();
      let last: ServiceError | undefined;
      for (let round = 0; ; round++) {
        if (round > 0) {
          await new Promise((r) => setTimeout(r, ROUND_DELAY_MS));
          await probe();
        }
        const tried = new Set<string>();
        for (let i = 0; i < order.length; i++) {
          const server = order[i] as string;
          if (tried.has(server)) continue;
          tried.add(server);
          const left = deadline - Date.now();
          if (left <= 0) break;
          try {
            // A read may give up on a replica early and ask the next one; a mutation gets the
            // whole deadline (once sent, its outcome is unknown until it answers: never sent twice).
            const ms = order.length > 1 && opts.read === true ? Math.min(left, ATTEMPT_TIMEOUT_MS) : left;
            return await callOnce(server, pick, request, ms);
          } catch (e) {
            const err = e as ServiceError;
            last = err;
            const again = opts.read === true || opts.idempotent === true;
            const retry = notApplied(err) || (again && err.code === GrpcStatus.UNAVAILABLE);
            const timedOut = err.code === GrpcStatus.DEADLINE_EXCEEDED && order.length > 1 && opts.read === true;
            if (!retry && !timedOut) throw toCliError(err, server);
            // The leader a replica names: tried after the servers given (which the caller has
            // credentials for: an admin socket beats a TCP address that would be read-only).
            const hint = errorInfoOf(err)?.metadata.leader ?? '';
            if (hint !== '' && !tried.has(hint) && !order.includes(hint)) order.push(hint);
          }
        }
        if (deadline - Date.now() <= 0 || !last) break;
      }
      throw toCliError(
        last ??
          ({ code: GrpcStatus.DEADLINE_EXCEEDED, details: 'no attempt', metadata: new Metadata() } as ServiceError),
        order.join(','),
      );
    },
    async preferred() {
      if (!probed) await probe();
      return client(order[0] ?? target.server);
    },
    statuses,
    close: () => {
      for (const c of clients.values()) c.close();
    },
  };
  return conn;
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
