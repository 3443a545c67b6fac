/**
 * vopctl exit codes: stable, documented in docs/controller.md, for scripts.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

export const EXIT = {
  OK: 0,
  /** Server-side failure without a more specific code (INTERNAL, UNKNOWN, ...). */
  ERROR: 1,
  /** Bad command line. */
  USAGE: 2,
  /** Invalid input: unreadable file, bad YAML, unknown field, INVALID_ARGUMENT from the server. */
  INVALID: 3,
  NOT_FOUND: 4,
  /** Conflict: stale resourceVersion (ABORTED), ALREADY_EXISTS or FAILED_PRECONDITION. */
  CONFLICT: 5,
  /** The controller could not be reached or timed out (UNAVAILABLE, DEADLINE_EXCEEDED). */
  UNAVAILABLE: 6,
  /** UNAUTHENTICATED or PERMISSION_DENIED. */
  DENIED: 7,
} as const;

export function exitCodeForStatus(code: GrpcStatus): number {
  switch (code) {
    case GrpcStatus.INVALID_ARGUMENT:
    case GrpcStatus.OUT_OF_RANGE:
      return EXIT.INVALID;
    case GrpcStatus.NOT_FOUND:
      return EXIT.NOT_FOUND;
    case GrpcStatus.ABORTED:
    case GrpcStatus.ALREADY_EXISTS:
    case GrpcStatus.FAILED_PRECONDITION:
      return EXIT.CONFLICT;
    case GrpcStatus.UNAVAILABLE:
    case GrpcStatus.DEADLINE_EXCEEDED:
      return EXIT.UNAVAILABLE;
    case GrpcStatus.UNAUTHENTICATED:
    case GrpcStatus.PERMISSION_DENIED:
      return EXIT.DENIED;
    default:
      return EXIT.ERROR;
  }
}

/** An error vopctl reports as "vopctl: <message>" and exits with `code`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
