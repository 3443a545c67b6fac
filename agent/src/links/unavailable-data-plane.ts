/** The data plane used when the native addon cannot be loaded: links fail with a clear reason. */
import { DataPlaneError, type DataPlane } from './data-plane';

export function unavailableDataPlane(why: string): DataPlane {
  return {
    available: false,
    version: why,
    open() {
      throw new DataPlaneError('NATIVE_UNAVAILABLE', `native data plane unavailable: ${why}`);
    },
  };
}
