/**
 * Assembles a vop gRPC server: interceptors (authz, metrics, access log), the
 * services, grpc.health.v1 and reflection (v1 + v1alpha), TLS or loopback plaintext,
 * and a bounded graceful shutdown.
 */
import { readFileSync } from 'node:fs';

import {
  Server,
  ServerCredentials,
  type ServerInterceptor,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatusMap } from 'grpc-health-check';
import type { Registry } from 'prom-client';

import { createAccessPolicy, readOnlyMethodsOf, type RoleMap } from './auth';
import { accessLogInterceptor, authzInterceptor, rpcMetricsInterceptor } from './interceptors';
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

export interface TlsFiles {
  readonly ca?: string | undefined;
  readonly cert: string;
  readonly key: string;
  readonly requireClientCert: boolean;
}

export interface GrpcServerOptions {
  readonly log: Logger;
  readonly registry: Registry;
  readonly listen: HostPort;
  readonly services: readonly ServiceBinding[];
  readonly tls?: TlsFiles | undefined;
  readonly roles: RoleMap;
  readonly plaintextRole: 'admin' | 'reader' | 'none';
  readonly streams: StreamTracker;
}

export interface RunningGrpcServer {
  readonly server: Server;
  readonly address: HostPort;
  readonly health: HealthImplementation;
  /** Health NOT_SERVING, end streams, tryShutdown bounded by graceMs, then force. */
  shutdown(graceMs: number): Promise<void>;
}

const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export async function startGrpcServer(opts: GrpcServerOptions): Promise<RunningGrpcServer> {
  const methodPaths = opts.services.flatMap((s) => Object.values(s.definition).map((m) => m.path));
  const policy = createAccessPolicy({
    tls: opts.tls !== undefined,
    roles: opts.roles,
    anonymousRole: opts.plaintextRole,
    readOnlyMethods: readOnlyMethodsOf(methodPaths),
  });
  const interceptors: ServerInterceptor[] = [
    rpcMetricsInterceptor(opts.registry),
    accessLogInterceptor(opts.log),
    authzInterceptor(policy, opts.log),
  ];
  const server = new Server({
    interceptors,
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
    ? ServerCredentials.createSsl(
        opts.tls.ca ? readFileSync(opts.tls.ca) : null,
        [{ cert_chain: readFileSync(opts.tls.cert), private_key: readFileSync(opts.tls.key) }],
        opts.tls.requireClientCert && opts.tls.ca !== undefined,
      )
    : ServerCredentials.createInsecure();

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(formatHostPort(opts.listen), creds, (err, p) => (err ? reject(err) : resolve(p)));
  });
  const address = { host: opts.listen.host, port };
  opts.log.info(
    { address: formatHostPort(address), tls: opts.tls !== undefined, mtls: Boolean(opts.tls?.ca) },
    'gRPC server listening',
  );

  let shuttingDown: Promise<void> | undefined;
  return {
    server,
    address,
    health,
    shutdown(graceMs: number): Promise<void> {
      shuttingDown ??= new Promise<void>((resolve) => {
        health.setStatus('', 'NOT_SERVING');
        for (const s of opts.services) health.setStatus(s.name, 'NOT_SERVING');
        opts.streams.closeAll();
        const timer = setTimeout(() => {
          opts.log.warn({ graceMs }, 'graceful gRPC shutdown timed out; forcing');
          server.forceShutdown();
          resolve();
        }, graceMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      return shuttingDown;
    },
  };
}
