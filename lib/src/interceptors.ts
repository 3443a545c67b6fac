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

/** A call that the server can end from outside (a deny-list change). */
class RevocableCall extends ServerInterceptingCall {
  /** The listener toward the handler; valid once started. */
  private upstream: Parameters<ServerInterceptingCall['start']>[0] | undefined;

  override start(listener: Parameters<ServerInterceptingCall['start']>[0]): void {
    this.upstream = listener;
    super.start(listener);
  }

  /** Ends the call with `code` and tells the handler it was cancelled (its stream cleans up). */
  revoke(code: GrpcStatus, details: string): void {
    this.sendStatus({ code, details });
    this.upstream?.onCancel();
  }
}

/** Calls in progress per certificate name, so a denied name's open streams can be ended. */
export class OpenCalls {
  private readonly byName = new Map<string, Set<RevocableCall>>();

  add(name: string, call: RevocableCall): void {
    let set = this.byName.get(name);
    if (!set) this.byName.set(name, (set = new Set()));
    set.add(call);
  }

  remove(name: string, call: RevocableCall): void {
    const set = this.byName.get(name);
    if (!set) return;
    set.delete(call);
    if (set.size === 0) this.byName.delete(name);
  }

  count(name: string): number {
    return this.byName.get(name)?.size ?? 0;
  }

  /** Ends every open call of `name` with UNAUTHENTICATED; returns how many. */
  revoke(name: string, details: string): number {
    const set = this.byName.get(name);
    if (!set) return 0;
    this.byName.delete(name);
    for (const c of set) c.revoke(GrpcStatus.UNAUTHENTICATED, details);
    return set.size;
  }
}

/**
 * Refuses calls whose caller lacks the role the method needs (see roleAllows: health
 * for every caller that is not denied, reflection for readers and admins). Calls of
 * certificate identities are tracked in `open` while they run.
 */
export function authzInterceptor(policy: AccessPolicy, log: Logger, open?: OpenCalls): ServerInterceptor {
  return (methodDescriptor, call) => {
    let tracked: string | undefined;
    const untrack = (): void => {
      if (tracked !== undefined) open?.remove(tracked, revocable);
      tracked = undefined;
    };
    const listener = new ServerListenerBuilder()
      .withOnReceiveMetadata((metadata, next) => {
        const identity = policy.identify(call.getAuthContext());
        const decision = roleAllows(policy, identity, methodDescriptor.path);
        if (decision !== true) {
          log.info(
            { method: methodDescriptor.path, identity: identity.name, role: identity.role, denied: identity.denied },
            'rpc refused',
          );
          call.sendStatus({ code: decision.code, details: decision.message });
          return;
        }
        if (identity.certificate && open) {
          tracked = identity.name;
          open.add(identity.name, revocable);
        }
        metadata.remove(CALLER_ROLE_METADATA_KEY);
        metadata.set(CALLER_ROLE_METADATA_KEY, identity.role);
        next(metadata);
      })
      .withOnCancel(untrack)
      .build();
    const responder = new ResponderBuilder()
      .withStart((next) => next(listener))
      .withSendStatus((status, next) => {
        untrack();
        next(status);
      })
      .build();
    const revocable = new RevocableCall(call, responder);
    return revocable;
  };
}
