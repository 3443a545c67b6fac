/** Version of the native addon, or "unavailable" when it failed to load. */
import { repoPath } from '../../lib/src/paths';

export function loadNativeVersion(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const addon = require(repoPath('native', 'build', 'Release', 'vop_native.node')) as { version(): string };
    return addon.version();
  } catch {
    return 'unavailable';
  }
}
