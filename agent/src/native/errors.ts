/**
 * The one error class native failures surface as. `code` is stable and machine
 * readable: an errno name from the core ("EPROTO", "ENOENT", "EEXIST", "EAGAIN",
 * "ETIMEDOUT", "EBADF" for a closed window, ...) or "UNKNOWN_<n>". The binding
 * constructs it directly (registered through setErrorClass in load.ts).
 */
export class NativeError extends Error {
  readonly code: string;
  readonly errno: number;

  constructor(message: string, code: string, errno: number) {
    super(message);
    this.name = 'NativeError';
    this.code = code;
    this.errno = errno;
  }
}

/** Converts anything thrown by the addon into a NativeError (argument TypeErrors included). */
export function toNativeError(err: unknown): NativeError {
  if (err instanceof NativeError) return err;
  if (err instanceof Error) {
    const code = (err as Error & { code?: unknown }).code;
    return new NativeError(err.message, typeof code === 'string' ? code : 'UNKNOWN', 0);
  }
  return new NativeError(String(err), 'UNKNOWN', 0);
}
