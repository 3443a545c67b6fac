/**
 * The one error class native failures surface as, and the one the data-plane port
 * throws (links/data-plane.ts re-exports it). `code` is stable and machine readable:
 * an errno name from the C layer ("EPROTO", "ENOENT", "EEXIST", "EAGAIN",
 * "ETIMEDOUT", "EBADF" for a closed window, ...; native/binding/errors.c holds the
 * one table), "UNKNOWN_<n>", or "NATIVE_UNAVAILABLE" when the addon cannot be
 * loaded. The binding constructs it directly (registered through setErrorClass in
 * load.ts). Argument errors are TypeError/RangeError instead, naming the property.
 */
export class NativeError extends Error {
  readonly code: string;
  readonly errno: number;

  constructor(message: string, code: string, errno = 0) {
    super(message);
    this.name = 'NativeError';
    this.code = code;
    this.errno = errno;
  }
}
