/**
 * Splits one DesiredLinks version into messages of at most `maxBytes` encoded bytes
 * each (a single link larger than that travels alone), so a snapshot of any size fits
 * gRPC's message limit. Every part carries the version and full_snapshot; all but the
 * last set `more`. The agent applies the version only once it holds every part.
 */
import { DesiredLinks } from '../../../lib/proto/controller';
import { Link } from '../../../lib/proto/types';
import type { DesiredVersion } from '../state/agent-runtime';

/** Tag, length prefix and slack per repeated entry. */
const ENTRY_OVERHEAD = 8;
/** Version, flags, the store identity and the message's own framing. */
const MESSAGE_OVERHEAD = 128;

/** Every part carries the version, full_snapshot, the store identity and adopt. */
export function chunkDesired(d: DesiredVersion, maxBytes: number): DesiredLinks[] {
  const { version, fullSnapshot, upserts, deletes, storeIdentity, adopt } = d;
  const empty = (): DesiredLinks => ({
    version,
    fullSnapshot,
    upserts: [],
    deletes: [],
    more: false,
    storeIdentity,
    adopt,
  });
  const parts: DesiredLinks[] = [];
  let cur = empty();
  let size = MESSAGE_OVERHEAD;
  const add = (bytes: number, put: (d: DesiredLinks) => void): void => {
    if (size + bytes > maxBytes && (cur.upserts.length > 0 || cur.deletes.length > 0)) {
      parts.push(cur);
      cur = empty();
      size = MESSAGE_OVERHEAD;
    }
    put(cur);
    size += bytes;
  };
  for (const l of upserts) add(Link.encode(l).finish().length + ENTRY_OVERHEAD, (d) => d.upserts.push(l));
  for (const n of deletes) add(Buffer.byteLength(n) + ENTRY_OVERHEAD, (d) => d.deletes.push(n));
  parts.push(cur);
  for (let i = 0; i < parts.length - 1; i++) (parts[i] as DesiredLinks).more = true;
  return parts;
}

/** Encoded size of a DesiredLinks message (tests and logs). */
export function desiredBytes(d: DesiredLinks): number {
  return DesiredLinks.encode(d).finish().length;
}
