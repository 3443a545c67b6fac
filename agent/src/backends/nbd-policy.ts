/**
 * The node operator's policy for NBD exports of blk devices (driver role), from the agent
 * config: TLS with the node's certificates (tls.cert, tls.key, tls.ca), which client
 * certificate names may connect, and whether plaintext TCP is allowed at all. A link that
 * asks for an export this policy forbids is refused when it is applied.
 *
 *   Unix socket export: plaintext (the socket's file mode guards it); STARTTLS offered too.
 *   TCP export:         TLS required (NBD STARTTLS, TLS 1.2+, client certificate signed by
 *                       tls.ca and named in nbd.clients, default roles.admin), unless
 *                       nbd.allowPlaintextTcp (then TLS is offered, not required); a
 *                       non-loopback address requires TLS regardless.
 */
import type { Device } from '../../../lib/proto/types';
import { failedPrecondition, invalidArgument } from '../../../lib/src/errors';
import { isLoopback, parseHostPort } from '../../../lib/src/net';
import type { AgentConfig } from '../config';

/** Longest TLS file path the native NBD config takes (bytes). */
export const NBD_TLS_PATH_MAX = 510;
/** Longest client name list the native NBD config takes (bytes, comma-joined). */
export const NBD_TLS_CLIENTS_MAX = 1022;

export interface NbdTlsFiles {
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
}

export interface NbdExportPolicy {
  /** The node's certificate, key and CA; null when the agent config has no tls or no tls.ca. */
  readonly tls: NbdTlsFiles | null;
  /** Why tls is null (for the refusal), or '' when it is set. */
  readonly noTlsReason: string;
  /** Client certificate names allowed over TLS; '*' is any certificate the CA signed. */
  readonly clients: readonly string[];
  readonly allowPlaintextTcp: boolean;
}

/** No TLS, no plaintext TCP: Unix socket exports only (tests and tools without an agent config). */
export const UNIX_ONLY_NBD_POLICY: NbdExportPolicy = {
  tls: null,
  noTlsReason: 'this agent has no tls configured',
  clients: [],
  allowPlaintextTcp: false,
};

export function nbdPolicyFromConfig(config: Pick<AgentConfig, 'tls' | 'roles' | 'nbd'>): NbdExportPolicy {
  const clients = (config.nbd.clients ?? config.roles.admin).filter((n) => /^[^,\s]+$/.test(n));
  const t = config.tls;
  let noTlsReason = '';
  if (!t) noTlsReason = 'this agent has no tls (tls.cert, tls.key, tls.ca) configured';
  else if (!t.ca) noTlsReason = 'this agent has no tls.ca, so NBD clients could not be authenticated';
  else {
    const bad = (['cert', 'key', 'ca'] as const).find((k) => {
      const p = k === 'ca' ? t.ca : t[k];
      return p === undefined || p.includes('\0') || Buffer.byteLength(p) > NBD_TLS_PATH_MAX;
    });
    if (bad) noTlsReason = `tls.${bad} is not usable for NBD (a path over ${NBD_TLS_PATH_MAX} bytes)`;
  }
  return {
    tls: noTlsReason === '' && t?.ca ? { cert: t.cert, key: t.key, ca: t.ca } : null,
    noTlsReason,
    clients,
    allowPlaintextTcp: config.nbd.allowPlaintextTcp,
  };
}

/** Whether a TCP export on host may be served without TLS under policy. */
export function nbdPlaintextAllowed(policy: NbdExportPolicy, host: string): boolean {
  return policy.allowPlaintextTcp && isLoopback(host);
}

/** The TCP listen address of an export in the form the native layer binds ("localhost" -> 127.0.0.1). */
export function nbdTcpAddress(tcpListen: string): { host: string; port: number } | null {
  if (tcpListen === '') return null;
  const hp = parseHostPort(tcpListen);
  if (typeof hp === 'string') return null;
  return { host: hp.host === 'localhost' ? '127.0.0.1' : hp.host, port: hp.port };
}

/**
 * Throws FAILED_PRECONDITION (naming field.blk.export.tcp_listen and the reason) when this
 * agent's policy forbids the device's TCP export. Only the driver role exports.
 */
export function checkNbdExport(
  policy: NbdExportPolicy,
  device: Device,
  role: 'device' | 'driver',
  field: string,
): void {
  const k = device.kind;
  if (role !== 'driver' || k?.$case !== 'blk' || !k.value.export) return;
  const f = `${field}.blk.export.tcp_listen`;
  const listen = k.value.export.tcpListen;
  const addr = nbdTcpAddress(listen);
  if (listen !== '' && !addr) throw invalidArgument([{ field: f, description: `"${listen}" is not HOST:PORT` }]);
  if (!addr) return;
  const loopback = isLoopback(addr.host);
  if (!policy.tls) {
    if (!policy.allowPlaintextTcp)
      throw failedPrecondition(
        'NBD_TCP_NEEDS_TLS',
        `${f}: an NBD export over TCP requires TLS, and ${policy.noTlsReason}; export on a Unix socket (unix_socket), configure tls, or set nbd.allowPlaintextTcp: true (loopback only)`,
        { field: f },
      );
    if (!loopback)
      throw failedPrecondition(
        'NBD_TCP_NEEDS_TLS',
        `${f}: an NBD export on the non-loopback address ${addr.host} requires TLS whatever nbd.allowPlaintextTcp says, and ${policy.noTlsReason}`,
        { field: f },
      );
    return;
  }
  if (policy.clients.length === 0)
    throw failedPrecondition(
      'NBD_NO_CLIENTS',
      `${f}: no client certificate name may use an NBD export on this agent; list them in nbd.clients (default: roles.admin)`,
      { field: f },
    );
  if (Buffer.byteLength(policy.clients.join(',')) > NBD_TLS_CLIENTS_MAX)
    throw failedPrecondition(
      'NBD_CLIENTS_TOO_LONG',
      `${f}: the NBD client names (nbd.clients or roles.admin) exceed ${NBD_TLS_CLIENTS_MAX} bytes together`,
      { field: f },
    );
}
