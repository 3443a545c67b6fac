/**
 * Which agent addresses the controller may dial (stats, console) and publish
 * (/sd/agents). An agent chooses what it registers, so a registered address is only
 * used when it is backed by evidence the agent cannot choose:
 *
 *   - its host is the IP the agent's Sync stream comes from, or
 *   - its host is an IP SAN or a DNS SAN (a "*." wildcard covers one label) of the
 *     client certificate the agent presented on the Sync stream, or
 *   - its host is "localhost" and the stream comes from a loopback address, or
 *   - its host is unspecified (0.0.0.0, ::): the controller uses the stream's IP.
 *
 * No name is resolved (a DNS answer is not evidence). What passes is stored as the
 * agent's address; what does not is stored as '' with the AddressesVerified condition
 * saying why, so nothing ever dials or publishes it.
 */
import { ConditionStatus, type Agent, type Condition } from '../../../lib/proto/types';
import { canonicalIp, formatHostPort, isLoopback, parseHostPort, peerIpOf } from '../../../lib/src/net';

export const ADDRESSES_VERIFIED = 'AddressesVerified';

/** What the controller knows about an agent's connection, independent of what it claims. */
export interface PeerEvidence {
  /** Canonical IP the Sync stream comes from; '' when unknown (e.g. a Unix socket). */
  readonly peerIp: string;
  /** Canonical IP SANs of the agent's client certificate (none without mutual TLS). */
  readonly sanIps: readonly string[];
  /** Lower-case DNS SANs of the agent's client certificate. */
  readonly sanDns: readonly string[];
}

export interface AddressCheck {
  /** The address to use ('' when none was registered or it is not verified). */
  readonly address: string;
  /** Why a registered address is not used; null when it is (or none was registered). */
  readonly problem: string | null;
}

/** Evidence from a call: its peer address and the SANs of its client certificate. */
export function peerEvidence(call: {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: { subjectaltname?: string } | undefined };
}): PeerEvidence {
  const sans = (call.getAuthContext().sslPeerCertificate?.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  return {
    peerIp: peerIpOf(call.getPeer()),
    sanIps: sans
      .filter((s) => s.startsWith('IP Address:'))
      .map((s) => canonicalIp(s.slice('IP Address:'.length)))
      .filter((s) => s !== ''),
    sanDns: sans.filter((s) => s.startsWith('DNS:')).map((s) => s.slice(4).toLowerCase()),
  };
}

function dnsMatches(host: string, san: string): boolean {
  if (san === host) return true;
  if (!san.startsWith('*.')) return false;
  const dot = host.indexOf('.');
  return dot > 0 && host.slice(dot + 1) === san.slice(2);
}

function evidenceText(ev: PeerEvidence): string {
  const cert =
    ev.sanIps.length + ev.sanDns.length === 0
      ? 'no certificate SANs'
      : `certificate SANs ${[...ev.sanIps.map((s) => `IP:${s}`), ...ev.sanDns.map((s) => `DNS:${s}`)].join(', ')}`;
  return `${cert}; Sync stream from ${ev.peerIp === '' ? 'an unknown address' : ev.peerIp}`;
}

/** Checks one registered address (already format-checked) against the evidence. */
export function verifyAddress(registered: string, ev: PeerEvidence): AddressCheck {
  if (registered === '') return { address: '', problem: null };
  const hp = parseHostPort(registered);
  if (typeof hp === 'string') return { address: '', problem: hp };
  const ip = canonicalIp(hp.host);
  if (ip === '0.0.0.0' || ip === '::') {
    if (ev.peerIp === '')
      return { address: '', problem: `"${registered}" has an unspecified host and the stream's address is unknown` };
    return { address: formatHostPort({ host: ev.peerIp, port: hp.port }), problem: null };
  }
  if (ip !== '') {
    if (ip === ev.peerIp || ev.sanIps.includes(ip))
      return { address: formatHostPort({ host: ip, port: hp.port }), problem: null };
  } else {
    const host = hp.host.toLowerCase();
    if (ev.sanDns.some((san) => dnsMatches(host, san))) return { address: registered, problem: null };
    if (host === 'localhost' && ev.peerIp !== '' && isLoopback(ev.peerIp))
      return { address: registered, problem: null };
  }
  return {
    address: '',
    problem: `"${registered}" matches neither the agent's certificate nor the address it connected from (${evidenceText(ev)})`,
  };
}

/** The AddressesVerified condition stored with a registration. */
export function addressesCondition(
  checks: { readonly grpc: AddressCheck; readonly metrics: AddressCheck },
  generation: bigint,
  now: Date,
): Condition {
  const problems = [
    checks.grpc.problem === null ? null : `gRPC address ${checks.grpc.problem}`,
    checks.metrics.problem === null ? null : `metrics address ${checks.metrics.problem}`,
  ].filter((p): p is string => p !== null);
  return problems.length === 0
    ? {
        type: ADDRESSES_VERIFIED,
        status: ConditionStatus.CONDITION_STATUS_TRUE,
        reason: 'Verified',
        message: 'registered addresses match the agent certificate or its connection address',
        observedGeneration: generation,
        lastTransitionTime: now,
      }
    : {
        type: ADDRESSES_VERIFIED,
        status: ConditionStatus.CONDITION_STATUS_FALSE,
        reason: 'AddressMismatch',
        message: `${problems.join('; ')}: not dialled and not published`,
        observedGeneration: generation,
        lastTransitionTime: now,
      };
}

/**
 * The address of an agent the controller may use, or why not. Records stored before
 * verification existed carry no AddressesVerified condition and are not used until the
 * agent registers again.
 */
export function usableAddress(agent: Agent | undefined, which: 'grpc' | 'metrics'): AddressCheck {
  const st = agent?.status;
  const addr = st?.addresses?.[which] ?? '';
  const cond = st?.conditions.find((c) => c.type === ADDRESSES_VERIFIED);
  if (!cond) {
    return addr === ''
      ? { address: '', problem: `has not registered a ${which === 'grpc' ? 'gRPC' : 'metrics'} address` }
      : {
          address: '',
          problem: 'its addresses were registered before they were verified; waiting for it to register again',
        };
  }
  if (addr !== '') return { address: addr, problem: null };
  if (
    cond.status === ConditionStatus.CONDITION_STATUS_FALSE &&
    cond.message.includes(which === 'grpc' ? 'gRPC address' : 'metrics address')
  )
    return { address: '', problem: cond.message };
  return { address: '', problem: `has not registered a ${which === 'grpc' ? 'gRPC' : 'metrics'} address` };
}
