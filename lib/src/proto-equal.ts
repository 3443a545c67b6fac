/**
 * "Same desired state": equality of protobuf messages, the one definition agent and controller use
 * (is a spec changed, does an agent run what it was sent). Two messages are equal when they encode to
 * the same bytes; map fields encode in insertion order, so when the bytes differ but not their length
 * (a reordered map keeps it), the canonical JSON (keys sorted) decides.
 */
import { LinkSpec } from '../proto/types';

/** What a generated (ts-proto) message codec offers that equality needs. */
export interface MessageCodec<T> {
  encode(message: T): { finish(): Uint8Array };
  toJSON(message: T): unknown;
  create(): T;
}

function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : value,
  );
}

/** True when a and b are the same message (undefined = the empty message). */
export function protoEqual<T>(codec: MessageCodec<T>, a: T | undefined, b: T | undefined): boolean {
  const ma = a ?? codec.create();
  const mb = b ?? codec.create();
  const ea = codec.encode(ma).finish();
  const eb = codec.encode(mb).finish();
  if (ea.length !== eb.length) return false;
  if (Buffer.compare(ea, eb) === 0) return true;
  return canonicalJson(codec.toJSON(ma)) === canonicalJson(codec.toJSON(mb));
}

/** True when two link specs are the same desired state. */
export function linkSpecEqual(a: LinkSpec | undefined, b: LinkSpec | undefined): boolean {
  return protoEqual(LinkSpec, a, b);
}
