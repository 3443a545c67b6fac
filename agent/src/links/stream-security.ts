/**
 * How a stream link authenticates its peer on this agent (docs/stream-protocol.md "TLS"):
 *  - TLS 1.3 with mutual certificates, on by default when this agent has stream certificates
 *    (`streamTls`, else `tls` when it has a `ca`) and the link does not say `disable_tls`; the
 *    peer's certificate must chain to the CA and carry the peer's identity (the other endpoint's
 *    agent name, or `tls_peer_name`) as a DNS subjectAltName. TLS alone authenticates; a secret
 *    given too is checked inside TLS as well (both ends must then have it).
 *  - Without TLS: the HMAC secret, or plaintext with `allow_plaintext` set explicitly.
 * The certificate files come from the agent's own config (never from a link spec) and are read
 * by the C core at each handshake, so a rotated certificate is used by the next connection.
 */
import { statSync } from 'node:fs';
import path from 'node:path';

import type { Link, LinkSpec, StreamTransport } from '../../../lib/proto/types';
import { ConfigError } from '../../../lib/src/config';
import { invalidArgument } from '../../../lib/src/errors';
import type { StreamTlsRequest } from './data-plane';

/** This agent's stream certificates, or null when it has none. */
export interface StreamTlsFiles {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
  /** The config key they came from ("streamTls" or "tls"), for messages. */
  readonly field: string;
}

interface TlsFileConfig {
  readonly ca?: string | undefined;
  readonly cert: string;
  readonly key: string;
}

/**
 * The certificates stream links use: `streamTls`, else the node's `tls` when it has a `ca`
 * (mutual TLS needs one). Checked at start: absolute paths, regular files, and a key that
 * neither group nor others may read (a ConfigError naming the key otherwise).
 */
export function streamTlsFromConfig(config: {
  readonly streamTls?: { readonly ca: string; readonly cert: string; readonly key: string } | undefined;
  readonly tls?: TlsFileConfig | undefined;
}): StreamTlsFiles | null {
  const src = config.streamTls
    ? { ...config.streamTls, field: 'streamTls' }
    : config.tls?.ca
      ? { ca: config.tls.ca, cert: config.tls.cert, key: config.tls.key, field: 'tls' }
      : null;
  if (!src) return null;
  const files: StreamTlsFiles = {
    ca: path.resolve(src.ca),
    cert: path.resolve(src.cert),
    key: path.resolve(src.key),
    field: src.field,
  };
  for (const k of ['ca', 'cert', 'key'] as const) {
    let st;
    try {
      st = statSync(files[k]);
    } catch (err) {
      throw new ConfigError(`${src.field}.${k}: ${files[k]}: ${(err as Error).message}`);
    }
    if (!st.isFile()) throw new ConfigError(`${src.field}.${k}: ${files[k]} is not a regular file`);
    if (k === 'key' && (st.mode & 0o077) !== 0)
      throw new ConfigError(
        `${src.field}.key: ${files.key} has mode 0${(st.mode & 0o777).toString(8)}; a private key must not be readable by group or others (chmod 600)`,
      );
  }
  return files;
}

/** The identity the peer's certificate must carry: the other endpoint's agent, else tls_peer_name. */
export function streamPeerIdentity(spec: LinkSpec, t: StreamTransport, nodeName: string): string {
  return spec.endpoints.find((e) => e.agent !== nodeName)?.agent ?? t.tlsPeerName;
}

/** TLS for this link on this agent, or null (no certificates, or disable_tls). */
export function streamTlsFor(
  spec: LinkSpec,
  t: StreamTransport,
  nodeName: string,
  files: StreamTlsFiles | null,
): StreamTlsRequest | null {
  if (!files || t.disableTls) return null;
  return { ca: files.ca, cert: files.cert, key: files.key, peerId: streamPeerIdentity(spec, t, nodeName) };
}

/**
 * At apply: a stream link must be authenticated on this agent. INVALID_ARGUMENT naming the field
 * when TLS would run with no identity to check, or when neither TLS (no certificates here) nor a
 * secret nor allow_plaintext protects it.
 */
export function checkStreamSecurity(
  link: Link & { spec: LinkSpec },
  nodeName: string,
  files: StreamTlsFiles | null,
  field = 'link',
): void {
  const k = link.spec.transport?.kind;
  if (k?.$case !== 'stream') return;
  const t = k.value;
  const f = `${field}.spec.transport.stream`;
  const other = link.spec.endpoints.find((e) => e.agent !== nodeName)?.agent;
  if (other !== undefined && t.tlsPeerName !== '' && t.tlsPeerName !== other)
    throw invalidArgument([
      {
        field: `${f}.tls_peer_name`,
        description: `must be empty (or "${other}") when the far end is agent "${other}": its certificate must carry its agent name`,
      },
    ]);
  if (files && !t.disableTls && streamPeerIdentity(link.spec, t, nodeName) === '')
    throw invalidArgument([
      {
        field: `${f}.tls_peer_name`,
        description:
          'is required with TLS when the link has no other agent endpoint: the name the peer certificate carries',
      },
    ]);
  if (!files && !t.disableTls && t.secret === '' && !t.allowPlaintext)
    throw invalidArgument([
      {
        field: `${f}.secret`,
        description: `is required unless allow_plaintext is set explicitly: this agent "${nodeName}" has no stream certificates (streamTls, or tls with a ca) for TLS, so the link would be unauthenticated`,
      },
    ]);
}
