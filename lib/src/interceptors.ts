/**
 * Server interceptors: RPC metrics (go-grpc-prometheus names), access logging and
 * authorization by client-certificate identity. One interceptor each, composed by
 * createGrpcServer().
 */
import {
  ResponderBuilder,
  ServerInterceptingCall,
  ServerListenerBuilder,
  status as GrpcStatus,
  type ServerInterceptor,
} from '@grpc/grpc-js';
import { Counter, Histogram, type Registry } from 'prom-client';

import type { Logger } from './logger';
import { CALLER_ROLE_METADATA_KEY, roleAllows, type AccessPolicy } from './auth';

type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

function grpcType(requestStream: boolean, responseStream: boolean): GrpcType {
  if (requestStream && responseStream) return 'bidi_stream';
  if (requestStream) return 'client_stream';
  if (responseStream) return 'server_stream';
  return 'unary';
}

/** Splits "/pkg.Service/Method". */
export function splitPath(path: string): { service: string; method: string } {
  const parts = path.split('/');
  return { service: parts[1] ?? '', method: parts[2] ?? '' };
}

export function rpcMetricsInterceptor(registry: Registry): ServerInterceptor {
  const labelNames = ['grpc_type', 'grpc_service', 'grpc_method'] as const;
  const started = new Counter({
    name: 'grpc_server_started_total',
    help: 'RPCs started on the server.',
    labelNames,
    registers: [registry],
  });
  const handled = new Counter({
    name: 'grpc_server_handled_total',
    help: 'RPCs completed on the server, by status code.',
    labelNames: [...labelNames, 'grpc_code'] as const,
    registers: [registry],
  });
  const seconds = new Histogram({
    name: 'grpc_server_handling_seconds',
    help: 'Time from RPC start to status, in seconds.',
    labelNames,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const received = new Counter({
    name: 'grpc_server_msg_received_total',
    help: 'Stream messages received.',
    labelNames,
    registers: [registry],
  });
  const sent = new Counter({
    name: 'grpc_server_msg_sent_total',
    help: 'Stream messages sent.',
    labelNames,
    registers: [registry],
  });

  return (methodDescriptor, call) => {
    const { service, method } = splitPath(methodDescriptor.path);
    const labels = {
      grpc_type: grpcType(methodDescriptor.requestStream, methodDescriptor.responseStream),
      grpc_service: service,
      grpc_method: method,
    };
    const t0 = process.hrtime.bigint();
    started.inc(labels);
    const listener = new ServerListenerBuilder()
      .withOnReceiveMessage((msg, next) => {
        received.inc(labels);
        next(msg);
      })
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendMessage((msg, next) => {
        sent.inc(labels);
        next(msg);
      })
      .withSendStatus((status, next) => {
        handled.inc({ ...labels, grpc_code: GrpcStatus[status.code] ?? String(status.code) });
        seconds.observe(labels, Number(process.hrtime.bigint() - t0) / 1e9);
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

export function accessLogInterceptor(log: Logger): ServerInterceptor {
  return (methodDescriptor, call) => {
    const t0 = process.hrtime.bigint();
    const responder = new ResponderBuilder()
      .withSendStatus((status, next) => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const fields = {
          method: methodDescriptor.path,
          code: GrpcStatus[status.code],
          durationMs: Math.round(ms * 1000) / 1000,
          peer: call.getPeer(),
        };
        if (status.code === GrpcStatus.INTERNAL || status.code === GrpcStatus.UNKNOWN) log.warn(fields, 'rpc failed');
        else log.debug(fields, 'rpc');
        next(status);
      })
      .build();
    return new ServerInterceptingCall(call, responder);
  };
}

/**
 * Refuses calls whose caller lacks the role the method needs. Health and reflection
 * (both versions) always pass so probes and grpcurl work for any authenticated peer.
 */
export function authzInterceptor(policy: AccessPolicy, log: Logger): ServerInterceptor {
  return (methodDescriptor, call) => {
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const identity = policy.identify(call.getAuthContext());
        const decision = roleAllows(policy, identity, methodDescriptor.path);
        if (decision !== true) {
          log.info({ method: methodDescriptor.path, identity: identity.name, role: identity.role }, 'rpc refused');
          call.sendStatus({ code: decision.code, details: decision.message });
          return;
        }
        metadata.remove(CALLER_ROLE_METADATA_KEY);
        metadata.set(CALLER_ROLE_METADATA_KEY, identity.role);
        next(metadata);
      })
      .build();
    const responder = new ResponderBuilder().withStart((next) => next(listener)).build();
    return new ServerInterceptingCall(call, responder);
  };
}
