/**
 * `vopctl call SERVICE/METHOD [-d JSON|@FILE|@-]`: any unary or server-streaming method of any vop
 * server (the controller, or an agent with --server pointing at its socket), with the request written
 * and the response printed in the proto3 JSON mapping, as grpcurl does, from the schema in
 * api-schema.ts. A unary response is printed as indented JSON; a stream as one JSON object per line.
 *
 * The request is checked against the schema before anything is sent: bad JSON or a field the
 * message does not have is INVALID input (exit 3) naming it. Client- and bidirectional-streaming
 * methods (AttachConsole, Sync) are refused: `vopctl console` is the console client. Unary calls
 * have the --timeout deadline; a stream has one only when --timeout is given, and ends when the
 * server ends it, at the deadline (exit 6), or on Ctrl-C.
 */
import { readFileSync } from 'node:fs';

import { fromBinary, fromJson, toBinary, toJson, type DescMessage, type JsonValue } from '@bufbuild/protobuf';
import { Client, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';

import type { MethodRef } from './api-schema';
import type { Target } from './connection';
import { toCliError } from './connection';
import { CliError, EXIT } from './exit-codes';

export interface CallOptions {
  /** Deadline in ms from the start of the call; undefined: none (streams only). */
  readonly timeoutMs: number | undefined;
  /** Print fields that hold their default value too. */
  readonly emitDefaults: boolean;
  readonly out: (text: string) => void;
  /** Aborts a streaming call (Ctrl-C): it ends without an error. */
  readonly signal?: AbortSignal;
}

/** The -d argument: JSON text, @FILE, or @- for standard input; absent means {}. */
export function readRequestText(data: string | undefined, stdin: () => string): string {
  if (data === undefined) return '{}';
  if (data === '@-') return stdin();
  if (data.startsWith('@')) {
    try {
      return readFileSync(data.slice(1), 'utf8');
    } catch (err) {
      throw new CliError(`cannot read request file ${data.slice(1)}: ${(err as Error).message}`, EXIT.INVALID);
    }
  }
  return data;
}

/** The request as bytes on the wire; INVALID names what in the JSON does not fit the message. */
export function encodeRequest(schema: DescMessage, text: string): Buffer {
  let json: JsonValue;
  try {
    json = JSON.parse(text) as JsonValue;
  } catch (err) {
    throw new CliError(`the request is not JSON: ${(err as Error).message}`, EXIT.INVALID);
  }
  try {
    return Buffer.from(toBinary(schema, fromJson(schema, json)));
  } catch (err) {
    throw new CliError(`the request does not fit ${schema.typeName}: ${(err as Error).message}`, EXIT.INVALID);
  }
}

function decodeResponse(schema: DescMessage, bytes: Buffer, emitDefaults: boolean): JsonValue {
  return toJson(schema, fromBinary(schema, bytes), { alwaysEmitImplicit: emitDefaults });
}

const identity = (b: Buffer): Buffer => b;

export async function callMethod(target: Target, m: MethodRef, request: Buffer, opts: CallOptions): Promise<void> {
  if (m.requestStream)
    throw new CliError(
      `${m.service}/${m.name} streams requests from the client; vopctl call serves unary and server-streaming methods (for a console: vopctl console)`,
      EXIT.USAGE,
    );
  const client = new Client(target.server, target.credentials);
  const options = opts.timeoutMs === undefined ? {} : { deadline: Date.now() + opts.timeoutMs };
  try {
    if (!m.responseStream) {
      const res = await new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest(m.path, identity, identity, request, new Metadata(), options, (err, value) => {
          if (err) reject(toCliError(err, target.server, 'the server'));
          else resolve(value ?? Buffer.alloc(0));
        });
      });
      opts.out(`${JSON.stringify(decodeResponse(m.output, res, opts.emitDefaults), null, 2)}\n`);
      return;
    }
    const stream = client.makeServerStreamRequest(m.path, identity, identity, request, new Metadata(), options);
    const onAbort = (): void => stream.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let received = 0;
    try {
      await new Promise<void>((resolve, reject) => {
        stream.on('data', (b: Buffer) => {
          received++;
          opts.out(`${JSON.stringify(decodeResponse(m.output, b, opts.emitDefaults))}\n`);
        });
        stream.on('error', (err: ServiceError) => {
          if (err.code === GrpcStatus.CANCELLED && opts.signal?.aborted) resolve();
          else if (err.code === GrpcStatus.DEADLINE_EXCEEDED && received > 0)
            reject(
              new CliError(
                `DEADLINE_EXCEEDED: the stream was still open at the deadline (--timeout ${(opts.timeoutMs ?? 0) / 1000} s) after ${received} message(s)`,
                EXIT.UNAVAILABLE,
              ),
            );
          else reject(toCliError(err, target.server, 'the server'));
        });
        stream.on('end', () => resolve());
      });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  } finally {
    client.close();
  }
}
