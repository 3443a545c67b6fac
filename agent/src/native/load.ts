/**
 * Loads the addon from native/build/Release/vop_native.node, relative to the package
 * root (compiled JS lives in dist/agent/src/native/, so the root is found by walking
 * up to package.json, see lib/src/paths.ts), once per process, and registers
 * NativeError as the class native failures are thrown as.
 */
import { repoPath } from '../../../lib/src/paths';
import { NativeError } from './errors';
import type * as Native from './native';

/** The addon's exports, typed by the declaration-only contract. */
export type NativeModule = typeof Native;

export const ADDON_PATH = repoPath('native', 'build', 'Release', 'vop_native.node');

let cached: NativeModule | null = null;

/** The addon; throws NativeError code "NATIVE_UNAVAILABLE" if it cannot be loaded. */
export function loadNative(): NativeModule {
  if (cached !== null) return cached;
  let mod: NativeModule;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    mod = require(ADDON_PATH) as NativeModule;
  } catch (err) {
    throw new NativeError(
      `cannot load ${ADDON_PATH}: ${err instanceof Error ? err.message : String(err)}`,
      'NATIVE_UNAVAILABLE',
      0,
    );
  }
  mod.setErrorClass(NativeError);
  cached = mod;
  return mod;
}
