/**
 * Loads the data plane behind the DataPlane port: the native façade in
 * agent/src/native/ once it is built, otherwise a data plane that fails links with
 * reason DataPlaneUnavailable (the agent still serves its API and state).
 */
import type { Logger } from '../../../lib/src/logger';
import type { DataPlane } from './data-plane';
import { unavailableDataPlane } from './unavailable-data-plane';

export function loadDataPlane(log: Logger): DataPlane {
  const dp = unavailableDataPlane('the native façade (agent/src/native) is not available in this build');
  log.warn({ reason: dp.version }, 'native data plane unavailable; links will report DataPlaneUnavailable');
  return dp;
}
