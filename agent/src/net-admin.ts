/**
 * Whether this process may create TAP devices and enter network namespaces: CAP_NET_ADMIN in its
 * effective capability set, as the kernel reports it in /proc/self/status (CapEff, bit 12). Not
 * the uid: the shipped unit runs as User=vop with AmbientCapabilities=CAP_NET_ADMIN, and root
 * without the capability in its bounding set cannot create a TAP.
 */
import { readFileSync } from 'node:fs';

/** Bit of CAP_NET_ADMIN in the capability sets (linux/capability.h). */
export const CAP_NET_ADMIN = 12;

/** CapEff of a /proc/<pid>/status text as a bit set; null when the line is missing. */
export function effectiveCapabilities(status: string): bigint | null {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  return m?.[1] === undefined ? null : BigInt(`0x${m[1]}`);
}

/** True when CAP_NET_ADMIN is in this process's effective set (false if it cannot be read). */
export function hasNetAdmin(status?: string): boolean {
  let text = status;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/status', 'utf8');
    } catch {
      return false;
    }
  }
  const eff = effectiveCapabilities(text);
  return eff !== null && ((eff >> BigInt(CAP_NET_ADMIN)) & 1n) === 1n;
}
