/**
 * The one error boundary at the RPC edge. Handlers are written as async functions
 * that return a response or throw; these adapters turn them into grpc-js handlers.
 * A ServerError becomes its status code with google.rpc details; anything else is
 * logged with its stack and answered INTERNAL with a generic message.
 */
import {
  status as GrpcStatus,
  type handleBidiStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerErrorResponse,
  type ServerUnaryCall,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';

import { ServerError } from './errors';

/** Long-lived streams, so that shutdown can end them instead of waiting forever. */
export class StreamTracker {
  private readonly active = new Set<AbortController>();
  private closed = false;

  /** Returns an AbortController that aborts on shutdown (or immediately if closing). */
  open(): AbortController {
    const ac = new AbortController();
    if (this.closed) ac.abort(new Error('server shutting down'));
    else this.active.add(ac);
    return ac;
  }

  release(ac: AbortController): void {
    this.active.delete(ac);
  }

  get size(): number {
    return this.active.size;
  }

  /** Aborts every open stream; later opens abort at once. */
  closeAll(): void {
    this.closed = true;
    for (const ac of this.active) ac.abort(new Error('server shutting down'));
    this.active.clear();
  }
}

/** Maps any thrown value to what grpc-js sends; logs what the client does not see. */
export function toServiceError(err: unknown, log: Logger, method: string): Partial<ServerErrorResponse> {
  if (err instanceof ServerError) {
    return { code: err.code, details: err.message, metadata: err.toMetadata() };
  }
  log.error({ err, method, code: 'INTERNAL' }, 'unhandled error in RPC handler');
  const internal = new ServerError(GrpcStatus.INTERNAL, 'internal error; see server log', { reason: 'INTERNAL' });
  return { code: internal.code, details: internal.message, metadata: internal.toMetadata() };
}

export interface HandlerKit {
  unary<Req, Res>(
    method: string,
    fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
  ): handleUnaryCall<Req, Res>;
  serverStream<Req, Res>(
    method: string,
    fn: (call: ServerWritableStream<Req, Res>, signal: AbortSignal) => Promise<void>,
  ): handleServerStreamingCall<Req, Res>;
  bidi<Req, Res>(
    method: string,
    fn: (call: ServerDuplexStream<Req, Res>, signal: AbortSignal) => Promise<void>,
  ): handleBidiStreamingCall<Req, Res>;
}

export function createHandlerKit(log: Logger, streams: StreamTracker): HandlerKit {
  function endStream(
    call: ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>,
    err: unknown,
    method: string,
  ): void {
    if (call.cancelled || call.destroyed) return;
    if (err === undefined) {
      call.end();
      return;
    }
    const e = toServiceError(err, log, method);
    call.emit('error', e);
  }

  function runStream<C extends ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>>(
    method: string,
    call: C,
    fn: (call: C, signal: AbortSignal) => Promise<void>,
  ): void {
    const ac = streams.open();
    const onCancel = (): void => ac.abort(new Error('cancelled by client'));
    call.on('cancelled', onCancel);
    // A client-stream error (RST, transport closed) must never surface as an uncaught event.
    call.on('error', (err: Error) => {
      log.debug({ err, method }, 'stream error');
      ac.abort(err);
    });
    fn(call, ac.signal)
      .then(
        () => endStream(call, undefined, method),
        (err: unknown) => endStream(call, ac.signal.aborted && !(err instanceof ServerError) ? undefined : err, method),
      )
      .finally(() => {
        streams.release(ac);
        call.off('cancelled', onCancel);
      });
  }

  return {
    unary<Req, Res>(
      method: string,
      fn: (req: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
    ): handleUnaryCall<Req, Res> {
      return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
        fn(call.request, call).then(
          (res) => callback(null, res),
          (err: unknown) => callback(toServiceError(err, log, method)),
        );
      };
    },
    serverStream<Req, Res>(
      method: string,
      fn: (call: ServerWritableStream<Req, Res>, signal: AbortSignal) => Promise<void>,
    ): handleServerStreamingCall<Req, Res> {
      return (call) => runStream(method, call, fn);
    },
    bidi<Req, Res>(
      method: string,
      fn: (call: ServerDuplexStream<Req, Res>, signal: AbortSignal) => Promise<void>,
    ): handleBidiStreamingCall<Req, Res> {
      return (call) => runStream(method, call, fn);
    },
  };
}

/** Writes to a server stream honouring backpressure; rejects when the stream ends or aborts. */
export async function writeWithBackpressure<Res>(
  call: ServerWritableStream<unknown, Res> | ServerDuplexStream<unknown, Res>,
  msg: Res,
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('aborted');
  if (call.write(msg)) return;
  await new Promise<void>((resolve, reject) => {
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onAbort = (): void => {
      cleanup();
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    const cleanup = (): void => {
      call.off('drain', onDrain);
      signal.removeEventListener('abort', onAbort);
    };
    call.on('drain', onDrain);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
