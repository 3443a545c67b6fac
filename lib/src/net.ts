/** Listen/dial addresses in HOST:PORT form (IPv6 hosts in brackets). */
import { isIP } from 'node:net';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** Parses "HOST:PORT" / "[V6]:PORT"; returns an error string instead of throwing. */
export function parseHostPort(text: string): HostPort | string {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return `"${text}" is not HOST:PORT`;
  const port = Number(m[3]);
  if (port > 65535) return `port ${port} is out of range 0-65535`;
  return { host: m[1] ?? m[2] ?? '', port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

/** Canonical text of an IP ('' if not an IP): IPv4-mapped IPv6 as IPv4, IPv6 compressed and lower-case. */
export function canonicalIp(text: string): string {
  const t = text.trim();
  const v = isIP(t);
  if (v === 4) return t;
  if (v !== 6) return '';
  const c = new URL(`http://[${t}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(c);
  if (!mapped) return c;
  const hi = parseInt(mapped[1] as string, 16);
  const lo = parseInt(mapped[2] as string, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** IP of a grpc-js peer string ("1.2.3.4:5678", "::ffff:1.2.3.4:5678", "[::1]:5678"); '' if none (Unix socket). */
export function peerIpOf(peer: string): string {
  const m = /^\[([^\]]+)\]:\d+$/.exec(peer);
  if (m) return canonicalIp(m[1] as string);
  const i = peer.lastIndexOf(':');
  return i > 0 ? canonicalIp(peer.slice(0, i)) : canonicalIp(peer);
}
