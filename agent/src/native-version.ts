/** Version of the native addon, or "unavailable" when it failed to load. */
import { loadNative } from './native/load';

export function loadNativeVersion(): string {
  try {
    return loadNative().version();
  } catch {
    return 'unavailable';
  }
}
