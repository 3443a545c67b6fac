/**
 * Domain errors that cross the RPC edge. Handlers throw ServerError (or one of the
 * helpers below); the handler adapter turns it into a canonical gRPC status with a
 * google.rpc.Status in the `grpc-status-details-bin` trailer. Anything else thrown
 * becomes INTERNAL with a generic message (the stack stays in the server log).
 */
import { Metadata, status as GrpcStatus } from '@grpc/grpc-js';

import { type Any } from '../proto/google-protobuf';
import {
  BadRequest,
  ErrorInfo,
  PreconditionFailure,
  type BadRequest_FieldViolation,
  Status,
  type PreconditionFailure_Violation,
} from '../proto/google-rpc';

/** google.rpc.ErrorInfo domain for every vop error. */
export const ERROR_DOMAIN = 'vop.dev';

const TYPE_URL_PREFIX = 'type.googleapis.com/';

export interface FieldViolation {
  /** Dotted path into the request, e.g. `link.spec.devices[1].queue_size`. */
  readonly field: string;
  readonly description: string;
}

export interface ServerErrorOptions {
  /** Stable UPPER_SNAKE_CASE reason for automation (google.rpc.ErrorInfo.reason). */
  readonly reason?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly fieldViolations?: readonly FieldViolation[];
  readonly preconditionViolations?: readonly PreconditionFailure_Violation[];
}

/** An error with a canonical gRPC status code, safe to show to the client. */
export class ServerError extends Error {
  readonly code: GrpcStatus;
  readonly reason: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly fieldViolations: readonly FieldViolation[];
  readonly preconditionViolations: readonly PreconditionFailure_Violation[];

  constructor(code: GrpcStatus, message: string, options: ServerErrorOptions = {}) {
    super(message);
    this.name = 'ServerError';
    this.code = code;
    this.reason = options.reason ?? GrpcStatus[code] ?? 'UNKNOWN';
    this.metadata = options.metadata ?? {};
    this.fieldViolations = options.fieldViolations ?? [];
    this.preconditionViolations = options.preconditionViolations ?? [];
  }

  /** google.rpc.Status carrying ErrorInfo plus BadRequest/PreconditionFailure details. */
  toStatusProto(): Status {
    const details: Any[] = [
      pack(
        'google.rpc.ErrorInfo',
        ErrorInfo.encode({ reason: this.reason, domain: ERROR_DOMAIN, metadata: { ...this.metadata } }).finish(),
      ),
    ];
    if (this.fieldViolations.length > 0) {
      const fieldViolations: BadRequest_FieldViolation[] = this.fieldViolations.map((v) => ({
        field: v.field,
        description: v.description,
        reason: '',
        localizedMessage: undefined,
      }));
      details.push(pack('google.rpc.BadRequest', BadRequest.encode({ fieldViolations }).finish()));
    }
    if (this.preconditionViolations.length > 0) {
      details.push(
        pack(
          'google.rpc.PreconditionFailure',
          PreconditionFailure.encode({ violations: [...this.preconditionViolations] }).finish(),
        ),
      );
    }
    return { code: this.code, message: this.message, details };
  }

  /** Trailer metadata with `grpc-status-details-bin`. */
  toMetadata(): Metadata {
    const md = new Metadata();
    md.set('grpc-status-details-bin', Buffer.from(Status.encode(this.toStatusProto()).finish()));
    return md;
  }
}

function pack(typeName: string, value: Uint8Array): Any {
  return { typeUrl: TYPE_URL_PREFIX + typeName, value: Buffer.from(value) };
}

/** INVALID_ARGUMENT naming every offending field. */
export function invalidArgument(violations: readonly FieldViolation[], message?: string): ServerError {
  const first = violations[0];
  const text = message ?? (first ? `invalid ${first.field}: ${first.description}` : 'invalid request');
  return new ServerError(GrpcStatus.INVALID_ARGUMENT, text, {
    reason: 'INVALID_ARGUMENT',
    fieldViolations: violations,
  });
}

export function notFound(kind: string, name: string): ServerError {
  return new ServerError(GrpcStatus.NOT_FOUND, `${kind} "${name}" not found`, {
    reason: `${kind.toUpperCase()}_NOT_FOUND`,
    metadata: { [kind]: name },
  });
}

export function alreadyExists(kind: string, name: string, detail = ''): ServerError {
  return new ServerError(GrpcStatus.ALREADY_EXISTS, `${kind} "${name}" already exists${detail ? `: ${detail}` : ''}`, {
    reason: `${kind.toUpperCase()}_ALREADY_EXISTS`,
    metadata: { [kind]: name },
  });
}

export function failedPrecondition(
  reason: string,
  message: string,
  metadata: Record<string, string> = {},
): ServerError {
  return new ServerError(GrpcStatus.FAILED_PRECONDITION, message, { reason, metadata });
}

/** Compare-and-swap failure on resource_version: the client re-reads and retries. */
export function staleResourceVersion(kind: string, name: string, expected: string, actual: string): ServerError {
  return new ServerError(
    GrpcStatus.ABORTED,
    `${kind} "${name}" was modified: resource_version ${expected} is stale (current ${actual}); re-read and retry`,
    { reason: 'STALE_RESOURCE_VERSION', metadata: { [kind]: name, expected, actual } },
  );
}

/** Collects field violations while validating a request, then throws once. */
export class ViolationList {
  readonly items: FieldViolation[] = [];

  add(field: string, description: string): void {
    this.items.push({ field, description });
  }

  get empty(): boolean {
    return this.items.length === 0;
  }

  throwIfAny(): void {
    if (this.items.length > 0) throw invalidArgument(this.items);
  }
}

/**
 * The google.rpc.ErrorInfo a vop server attached to a failed call (from the
 * `grpc-status-details-bin` trailer), or undefined when there is none or it does not decode.
 */
export function errorInfoOf(err: { metadata?: Metadata }): ErrorInfo | undefined {
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  if (!(raw instanceof Buffer)) return undefined;
  try {
    for (const d of Status.decode(raw).details)
      if (d.typeUrl === TYPE_URL_PREFIX + 'google.rpc.ErrorInfo') return ErrorInfo.decode(d.value);
  } catch {
    /* details are optional */
  }
  return undefined;
}
