/**
 * "Same status": equality of observed status in everything but timestamps, the one definition the
 * agent (is this worth a status update to the controller) and the controller (is this a change
 * watchers should see) use. A condition's lastTransitionTime and a status's lastTransitionTime only
 * record when something changed, so they never make two statuses differ.
 */
import type { Condition, DeviceStatus, LinkStatus, StreamStatus, TransportStatus } from '../proto/types';

/** Conditions equal in type, status, reason, message and observed generation. */
export function conditionEqual(a: Condition, b: Condition): boolean {
  return (
    a.type === b.type &&
    a.status === b.status &&
    a.reason === b.reason &&
    a.message === b.message &&
    a.observedGeneration === b.observedGeneration
  );
}

function conditionsEqual(a: readonly Condition[], b: readonly Condition[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!conditionEqual(a[i] as Condition, b[i] as Condition)) return false;
  return true;
}

function recordEqual<V>(a: Readonly<Record<string, V>>, b: Readonly<Record<string, V>>): boolean {
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  for (const k of ka) if (!Object.prototype.hasOwnProperty.call(b, k) || a[k] !== b[k]) return false;
  return true;
}

function deviceEqual(a: DeviceStatus, b: DeviceStatus): boolean {
  return (
    a.name === b.name &&
    a.kind === b.kind &&
    a.ready === b.ready &&
    a.negotiatedFeatures === b.negotiatedFeatures &&
    recordEqual(a.endpoints, b.endpoints) &&
    conditionsEqual(a.conditions, b.conditions)
  );
}

/**
 * A stream connection's state, peer, counts and last error; its RTT and byte counters move all the
 * time and are read live (Get, metrics), so they alone never make a status update.
 */
function streamEqual(a: StreamStatus | undefined, b: StreamStatus | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return (
    a.state === b.state &&
    a.peerAddress === b.peerAddress &&
    a.connections === b.connections &&
    a.disconnects === b.disconnects &&
    a.lastError === b.lastError
  );
}

/** Every field of TransportStatus is a scalar: equal when each is. */
function transportEqual(a: TransportStatus | undefined, b: TransportStatus | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  const ka = Object.keys(a) as (keyof TransportStatus)[];
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

/** True when two link statuses differ in nothing but timestamps (undefined equals only undefined). */
export function linkStatusEqual(a: LinkStatus | undefined, b: LinkStatus | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (
    a.phase !== b.phase ||
    a.observedGeneration !== b.observedGeneration ||
    a.epoch !== b.epoch ||
    a.resetCount !== b.resetCount ||
    a.devices.length !== b.devices.length ||
    !conditionsEqual(a.conditions, b.conditions) ||
    !recordEqual(a.endpointPhases, b.endpointPhases) ||
    !streamEqual(a.stream, b.stream) ||
    !transportEqual(a.transport, b.transport)
  )
    return false;
  for (let i = 0; i < a.devices.length; i++)
    if (!deviceEqual(a.devices[i] as DeviceStatus, b.devices[i] as DeviceStatus)) return false;
  return true;
}
