/** Listen/dial addresses in HOST:PORT form (IPv6 hosts in brackets). */

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
