/**
 * Validation of what an agent registers on its Sync stream (and of the same fields in
 * the agent's own config): names as DNS-1123 labels, labels bounded in count and
 * size, addresses as HOST:PORT, and the stored part of a registration bounded in
 * bytes. The controller refuses a registration that fails with INVALID_ARGUMENT naming
 * every bad field, before anything is stored.
 */
import { isIP } from 'node:net';

import type { Register } from '../proto/controller';
import { AgentAddresses, AgentIdentity, Capabilities, DeviceKind, NodeRole, TransportKind } from '../proto/types';
import { ViolationList } from './errors';
import {
  HOSTNAME_RE,
  MAX_CAPABILITY_ENTRIES,
  MAX_REGISTRATION_BYTES,
  MAX_VERSION_LENGTH,
  NAME_RE,
  RESERVED_LABEL_PREFIX,
  type Limits,
} from './limits';
import { parseHostPort } from './net';
import { checkLabels, checkName, quoteShort } from './validate';

const NODE_ROLES = new Set<number>([
  NodeRole.NODE_ROLE_UNSPECIFIED,
  NodeRole.NODE_ROLE_HOST,
  NodeRole.NODE_ROLE_CARD,
  NodeRole.NODE_ROLE_VM,
]);
const TRANSPORT_KINDS = new Set<number>([
  TransportKind.TRANSPORT_KIND_UNSPECIFIED,
  TransportKind.TRANSPORT_KIND_SHM,
  TransportKind.TRANSPORT_KIND_PCI_BAR,
  TransportKind.TRANSPORT_KIND_PCI_EPF,
  TransportKind.TRANSPORT_KIND_STREAM,
  TransportKind.TRANSPORT_KIND_VHOST_USER,
]);
const DEVICE_KINDS = new Set<number>([
  DeviceKind.DEVICE_KIND_UNSPECIFIED,
  DeviceKind.DEVICE_KIND_NET,
  DeviceKind.DEVICE_KIND_CONSOLE,
  DeviceKind.DEVICE_KIND_BLK,
]);

/** '' or a DNS-1123 label (rack, host node). */
export function checkOptionalName(v: ViolationList, field: string, s: string): void {
  if (s !== '' && !NAME_RE.test(s))
    v.add(
      field,
      `${quoteShort(s)} must be empty or a DNS-1123 label: 1-63 characters of a-z, 0-9 and "-", starting and ending alphanumeric`,
    );
}

/** Agent labels: as any labels, and none in the reserved vop.dev/ prefix (those are synthetic). */
export function checkAgentLabels(v: ViolationList, field: string, labels: Record<string, string>): void {
  checkLabels(v, field, labels);
  for (const k of Object.keys(labels))
    if (k.startsWith(RESERVED_LABEL_PREFIX))
      v.add(
        `${field}[${k.slice(0, 64)}]`,
        `the ${RESERVED_LABEL_PREFIX} prefix is reserved for the labels vop derives from the identity`,
      );
}

export function checkAgentIdentity(v: ViolationList, field: string, id: AgentIdentity): void {
  checkName(v, `${field}.node_name`, id.nodeName);
  checkOptionalName(v, `${field}.rack`, id.rack);
  if (id.slot > 65535) v.add(`${field}.slot`, `${id.slot} must be at most 65535`);
  if (!NODE_ROLES.has(id.role)) v.add(`${field}.role`, 'must be NODE_ROLE_HOST, NODE_ROLE_CARD or NODE_ROLE_VM');
  checkOptionalName(v, `${field}.host_node`, id.hostNode);
  checkAgentLabels(v, `${field}.labels`, id.labels);
}

/** '' or HOST:PORT with an IP literal or an RFC 1123 host name and a port 1-65535. */
export function checkAddress(v: ViolationList, field: string, addr: string): void {
  if (addr === '') return;
  if (addr.length > 300) {
    v.add(field, `${quoteShort(addr)} is not HOST:PORT`);
    return;
  }
  const hp = parseHostPort(addr);
  if (typeof hp === 'string') {
    v.add(field, hp);
    return;
  }
  if (isIP(hp.host) === 0 && !HOSTNAME_RE.test(hp.host))
    v.add(field, `host ${quoteShort(hp.host)} must be an IP address or a DNS name`);
  if (hp.port === 0) v.add(field, 'port must be 1-65535');
}

/** A data-plane address (IPv4, no port: stream links are IPv4 today) and its port range, both or neither. */
export function checkDataPlane(v: ViolationList, field: string, a: AgentAddresses | undefined): void {
  const addr = a?.dataPlane ?? '';
  const r = a?.dataPlanePorts;
  if (addr !== '' && isIP(addr) !== 4)
    v.add(`${field}.data_plane`, `${quoteShort(addr)} must be an IPv4 address without a port, e.g. 10.0.0.2`);
  if (addr === '' && r) v.add(`${field}.data_plane`, 'is required with data_plane_ports');
  if (addr !== '' && !r) v.add(`${field}.data_plane_ports`, 'is required with data_plane');
  if (r && (r.first < 1 || r.last > 65535 || r.first > r.last))
    v.add(`${field}.data_plane_ports`, `${r.first}-${r.last} must be a range within 1-65535 with first <= last`);
}

/** Bytes a registration stores (identity, addresses, capabilities, version). */
export function storedRegistrationBytes(reg: Register): number {
  return (
    (reg.identity ? AgentIdentity.encode(reg.identity).finish().length : 0) +
    (reg.addresses ? AgentAddresses.encode(reg.addresses).finish().length : 0) +
    (reg.capabilities ? Capabilities.encode(reg.capabilities).finish().length : 0) +
    Buffer.byteLength(reg.version)
  );
}

/** Throws INVALID_ARGUMENT naming every bad field of a Register; changes nothing. */
export function validateRegistration(reg: Register, limits: Pick<Limits, 'maxLinksPerAgent'>): void {
  const v = new ViolationList();
  const f = 'register';
  const bytes = storedRegistrationBytes(reg);
  if (bytes > MAX_REGISTRATION_BYTES)
    v.add(f, `identity, addresses, capabilities and version take ${bytes} bytes; at most ${MAX_REGISTRATION_BYTES}`);
  if (!reg.identity) v.add(`${f}.identity`, 'is required');
  else checkAgentIdentity(v, `${f}.identity`, reg.identity);
  checkAddress(v, `${f}.addresses.grpc`, reg.addresses?.grpc ?? '');
  checkAddress(v, `${f}.addresses.metrics`, reg.addresses?.metrics ?? '');
  checkDataPlane(v, `${f}.addresses`, reg.addresses);
  const caps = reg.capabilities;
  if (caps) {
    if (caps.transports.length > MAX_CAPABILITY_ENTRIES || caps.transports.some((t) => !TRANSPORT_KINDS.has(t)))
      v.add(`${f}.capabilities.transports`, `must list at most ${MAX_CAPABILITY_ENTRIES} known transport kinds`);
    if (caps.deviceKinds.length > MAX_CAPABILITY_ENTRIES || caps.deviceKinds.some((k) => !DEVICE_KINDS.has(k)))
      v.add(`${f}.capabilities.device_kinds`, `must list at most ${MAX_CAPABILITY_ENTRIES} known device kinds`);
  }
  if (reg.version.length > MAX_VERSION_LENGTH || !/^[\x21-\x7e]*$/.test(reg.version))
    v.add(`${f}.version`, `must be at most ${MAX_VERSION_LENGTH} printable ASCII characters without spaces`);
  if (reg.links.length > limits.maxLinksPerAgent)
    v.add(
      `${f}.links`,
      `reports ${reg.links.length} links; at most ${limits.maxLinksPerAgent} per agent (limit maxLinksPerAgent)`,
    );
  else {
    const seen = new Set<string>();
    reg.links.forEach((l, i) => {
      const name = l.meta?.name ?? '';
      checkName(v, `${f}.links[${i}].meta.name`, name);
      if (seen.has(name)) v.add(`${f}.links[${i}].meta.name`, `duplicate link name "${name}"`);
      seen.add(name);
    });
  }
  v.throwIfAny();
}
