/**
 * FNV-1a, 32 bits, over the UTF-16 code units of a string: the stable hash behind device ids
 * (the same on both agents of a link) and the short names derived from link and device names
 * (TAP names, NBD socket names, default MACs). Not for anything an attacker may want to collide.
 */
const FNV_OFFSET_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

export function fnv1a32(text: string): number {
  let h = FNV_OFFSET_BASIS;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, FNV_PRIME) >>> 0;
  }
  return h;
}

/** fnv1a32 as 8 lower-case hex digits. */
export function fnv1a32Hex(text: string): string {
  return fnv1a32(text).toString(16).padStart(8, '0');
}
