/**
 * Assembles a vop gRPC server: interceptors (metrics, access log, authz), the
 * services, grpc.health.v1 and reflection (v1 + v1alpha), and a bounded graceful
 * shutdown. One server, two kinds of listener, each with its own authz policy:
 *
 * - TCP: mutual TLS with certificates that reload on change (roles by certificate
 *   name, the deny-list), or loopback plaintext (plaintextRole, reader by default);
 * - the local admin Unix socket (mode 0660): every caller is admin.
 */
import {
  experimental,
  Server,
  ServerCredentials,
  type ServerInterceptor,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import type { Registry } from 'prom-client';

import { bindAdminSocket, type AdminSocket } from './admin-socket';
import { createAccessPolicy, localAdminPolicy, readOnlyMethodsOf, type RoleMap } from './auth';
import { serverCredentials, type CertificateFiles } from './cert-files';
import type { DenyList } from './deny-list';
import { accessLogInterceptor, authzInterceptor, OpenCalls, rpcMetricsInterceptor } from './interceptors';
import type { Logger } from './logger';
import { formatHostPort, type HostPort } from './net';
import { addReflection, ReflectionIndex, REFLECTION_SERVICE_NAMES } from './reflection';
import { type StreamTracker } from './rpc-handlers';

export const HEALTH_SERVICE_NAME = 'grpc.health.v1.Health';

export interface ServiceBinding {
  /** Fully-qualified name, e.g. "vop.agent.v1.AgentService". */
  readonly name: string;
  readonly definition: ServiceDefinition;
  readonly implementation: UntypedServiceImplementation;
}

export interface ServerTls {
  /** Server certificate, key and the CA for client certificates; reloaded on change. */
  readonly files: CertificateFiles;
  readonly requireClientCert: boolean;
}

export interface GrpcServerOptions {
  readonly log: Logger;
  readonly registry: Registry;
  readonly listen: HostPort;
  readonly services: readonly ServiceBinding[];
  readonly tls?: ServerTls | undefined;
  readonly roles: RoleMap;
  readonly plaintextRole: 'admin' | 'reader' | 'none';
  readonly streams: StreamTracker;
  /** The local admin endpoint; path "" (or absent) = none. */
  readonly adminSocket?: { readonly path: string; readonly group?: string | undefined } | undefined;
  readonly denylist?: DenyList | undefined;
}

export interface RunningGrpcServer {
  readonly server: Server;
  readonly address: HostPort;
  /** Path of the admin Unix socket, or null. */
  readonly adminSocket: string | null;
  readonly health: HealthImplementation;
  /** Calls in progress per certificate name. */
  readonly openCalls: OpenCalls;
  /** Health NOT_SERVING, end streams, tryShutdown bounded by graceMs, then force. */
  shutdown(graceMs: number): Promise<void>;
}

const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export async function startGrpcServer(opts: GrpcServerOptions): Promise<RunningGrpcServer> {
  const methodPaths = opts.services.flatMap((s) => Object.values(s.definition).map((m) => m.path));
  const readOnlyMethods = readOnlyMethodsOf(methodPaths);
  const denylist = opts.denylist;
  const policy = createAccessPolicy({
    tls: opts.tls !== undefined,
    roles: opts.roles,
    anonymousRole: opts.plaintextRole,
    readOnlyMethods,
    ...(denylist ? { denied: (name: string) => denylist.has(name) } : {}),
  });
  const openCalls = new OpenCalls();
  // Interceptors are per listener (credentials), so each listener has its own authz.
  const common: ServerInterceptor[] = [rpcMetricsInterceptor(opts.registry), accessLogInterceptor(opts.log)];
  const tcpInterceptors = [...common, authzInterceptor(policy, opts.log, openCalls)];
  const unixInterceptors = [...common, authzInterceptor(localAdminPolicy(readOnlyMethods), opts.log)];
  const unsubscribeDeny = denylist?.onDenied((names) => {
    for (const name of names) {
      const n = openCalls.revoke(name, `certificate "${name}" is on the deny-list`);
      opts.log.warn({ identity: name, calls: n }, 'denied certificate: open calls ended');
    }
  });
  const server = new Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.keepalive_timeout_ms': 10_000,
    'grpc.max_concurrent_streams': 1000,
  });

  const statusMap: ServingStatusMap = { '': 'SERVING' };
  for (const s of opts.services) statusMap[s.name] = 'SERVING';
  const health = new HealthImplementation(statusMap);
  health.addToServer(server);

  for (const s of opts.services) server.addService(s.definition, s.implementation);
  addReflection(
    server,
    new ReflectionIndex([...opts.services.map((s) => s.name), HEALTH_SERVICE_NAME, ...REFLECTION_SERVICE_NAMES]),
  );

  const creds = opts.tls
    ? serverCredentials(opts.tls.files, opts.tls.requireClientCert, tcpInterceptors)
    : experimental.createServerCredentialsWithInterceptors(ServerCredentials.createInsecure(), tcpInterceptors);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatHostPort(opts.listen), creds, (err, p) => (err ? reject(err) : resolve(p)));
  });
  const address = { host: opts.listen.host, port };
  let admin: AdminSocket | undefined;
  if (opts.adminSocket && opts.adminSocket.path !== '') {
    admin = await bindAdminSocket(
      server,
      experimental.createServerCredentialsWithInterceptors(ServerCredentials.createInsecure(), unixInterceptors),
      opts.adminSocket.path,
      opts.adminSocket.group,
    );
  }
  opts.log.info(
    {
      address: formatHostPort(address),
      tls: opts.tls !== undefined,
      mtls: opts.tls?.files.hasCa ?? false,
      plaintextRole: opts.tls ? undefined : opts.plaintextRole,
      adminSocket: admin?.path ?? null,
      denied: denylist?.size ?? 0,
    },
    'gRPC server listening',
  );

  let shuttingDown: Promise<void> | undefined;
  return {
    server,
    address,
    adminSocket: admin?.path ?? null,
    health,
    openCalls,
    shutdown(graceMs: number): Promise<void> {
      shuttingDown ??= new Promise<void>((resolve) => {
        unsubscribeDeny?.();
        health.setStatus('', 'NOT_SERVING');
        for (const s of opts.services) health.setStatus(s.name, 'NOT_SERVING');
        opts.streams.closeAll();
        const timer = setTimeout(() => {
          opts.log.warn({ graceMs }, 'graceful gRPC shutdown timed out; forcing');
          server.forceShutdown();
          admin?.unlink();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          admin?.unlink();
          resolve();
        });
      });
      return shuttingDown;
    },
  };
}
