/**
 * Validation of resources shared by agent and controller. Every check adds a field
 * violation with the proto field path (snake_case, as grpcurl users write it) so the
 * client learns exactly what to fix; nothing is applied unless the list is empty.
 */
import { isIP } from 'node:net';
import path from 'node:path';

import {
  Role,
  type Device,
  type LabelSelector,
  type Link,
  type LinkPolicy,
  type LinkSpec,
  type LinkTemplate,
  type NetBackend,
  type ConsoleBackend,
  type Transport,
  SelectorOperator,
} from '../proto/types';
import { ViolationList } from './errors';
import {
  BLK_SERIAL_MAX_BYTES,
  DEFAULT_LIMITS,
  DEFAULT_QUEUE_SIZE,
  IFNAME_MAX_BYTES,
  isGroupMac,
  LABEL_KEY_RE,
  LABEL_VALUE_RE,
  MAX_ANNOTATIONS_BYTES,
  MAX_LABEL_VALUE_LENGTH,
  MAX_LABELS,
  MAC_RE,
  MIN_WINDOW_BYTES,
  NAME_RE,
  type Limits,
} from './limits';
import { parseHostPort } from './net';

export { NAME_RE };

/** The limits that bound one link spec (agent and controller check the same ones). */
export type SpecLimits = Pick<Limits, 'maxDevicesPerLink' | 'maxWindowBytes' | 'maxQueueSize'>;

/** Longest host file path in a spec (bytes): the agent's native layer refuses longer ones, never truncates. */
export const MAX_HOST_PATH_BYTES = 240;
/** Longest Unix socket path (bytes): sockaddr_un.sun_path holds 108 with the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

export function checkName(v: ViolationList, field: string, name: string): void {
  if (name === '') v.add(field, 'is required');
  else if (!NAME_RE.test(name))
    v.add(
      field,
      `"${name}" must be a DNS-1123 label: 1-63 characters of a-z, 0-9 and "-", starting and ending alphanumeric`,
    );
}

/** Quotes a caller's string in a message without echoing kilobytes of it back. */
export function quoteShort(s: string, max = 64): string {
  return s.length <= max ? `"${s}"` : `"${s.slice(0, max)}..." (${s.length} characters)`;
}

/** At most MAX_LABELS labels; keys as Kubernetes label keys, values <= 63 characters. */
export function checkLabels(v: ViolationList, field: string, labels: Record<string, string>): void {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) {
    v.add(field, `has ${entries.length} labels; at most ${MAX_LABELS} are allowed`);
    return;
  }
  for (const [k, val] of entries) {
    const f = `${field}[${k.length <= 317 ? k : `${k.slice(0, 64)}...`}]`;
    if (!LABEL_KEY_RE.test(k))
      v.add(
        f,
        `label key ${quoteShort(k)} is not a valid label key: an optional DNS subdomain prefix (<= 253) and "/", then <= 63 characters of A-Z, a-z, 0-9, "-", "_", "." starting and ending alphanumeric`,
      );
    if (!LABEL_VALUE_RE.test(val))
      v.add(
        f,
        `label value ${quoteShort(val)} must be <= ${MAX_LABEL_VALUE_LENGTH} characters of A-Z, a-z, 0-9, "-", "_", "." starting and ending alphanumeric`,
      );
  }
}

/** Annotation keys as label keys; keys and values together at most MAX_ANNOTATIONS_BYTES. */
export function checkAnnotations(v: ViolationList, field: string, annotations: Record<string, string>): void {
  let bytes = 0;
  for (const [k, val] of Object.entries(annotations)) {
    bytes += Buffer.byteLength(k) + Buffer.byteLength(val);
    if (!LABEL_KEY_RE.test(k))
      v.add(`${field}[${k.slice(0, 64)}]`, `annotation key ${quoteShort(k)} is not a valid label key`);
  }
  if (bytes > MAX_ANNOTATIONS_BYTES)
    v.add(field, `annotations total ${bytes} bytes; at most ${MAX_ANNOTATIONS_BYTES} bytes are allowed`);
}

/**
 * A host path: absolute, without "..", at most maxBytes. With `normalised` (files and
 * sockets) it must also be normalised and free of control characters: the agent checks it
 * against its allowed roots exactly as written.
 */
function checkAbsolutePath(
  v: ViolationList,
  field: string,
  p: string,
  required: boolean,
  maxBytes = MAX_HOST_PATH_BYTES,
  normalised = true,
): void {
  if (p === '') {
    if (required) v.add(field, 'is required');
    return;
  }
  const bytes = Buffer.byteLength(p);
  if (bytes > maxBytes)
    v.add(field, `is ${bytes} bytes; at most ${maxBytes} (longer paths are refused, not truncated)`);
  else if (!path.isAbsolute(p)) v.add(field, `"${p}" must be an absolute path`);
  else if (p.split('/').includes('..')) v.add(field, `"${p}" must not contain ".."`);
  else if (normalised && (path.posix.normalize(p) !== p || p.endsWith('/')))
    v.add(field, `"${p}" must be normalised (no "//", "/./" or trailing "/")`);
  else if (normalised && /[\0-\x1f\x7f]/.test(p)) v.add(field, 'must not contain control characters');
}

export function checkTransport(
  v: ViolationList,
  field: string,
  t: Transport | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
): void {
  const k = t?.kind;
  if (!k) {
    v.add(field, 'is required: set exactly one of shm, pci_bar, pci_epf, stream, vhost_user');
    return;
  }
  switch (k.$case) {
    case 'shm':
      checkAbsolutePath(v, `${field}.shm.directory`, k.value.directory, false, MAX_HOST_PATH_BYTES, false);
      if (
        k.value.windowSizeBytes !== 0n &&
        (k.value.windowSizeBytes < BigInt(MIN_WINDOW_BYTES) || k.value.windowSizeBytes > BigInt(limits.maxWindowBytes))
      ) {
        v.add(
          `${field}.shm.window_size_bytes`,
          `${k.value.windowSizeBytes} must be 0 (automatic) or between ${MIN_WINDOW_BYTES} and ${limits.maxWindowBytes} (limit maxWindowBytes)`,
        );
      }
      break;
    case 'pciBar':
      if (!/^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i.test(k.value.pciAddress))
        v.add(`${field}.pci_bar.pci_address`, `"${k.value.pciAddress}" must look like 0000:03:00.0`);
      if (k.value.bar > 5) v.add(`${field}.pci_bar.bar`, 'must be 0-5');
      if (k.value.doorbellBar > 5) v.add(`${field}.pci_bar.doorbell_bar`, 'must be 0-5');
      break;
    case 'pciEpf':
      if (k.value.controller === '') v.add(`${field}.pci_epf.controller`, 'is required');
      if (k.value.function === '') v.add(`${field}.pci_epf.function`, 'is required');
      if (k.value.bar > 5) v.add(`${field}.pci_epf.bar`, 'must be 0-5');
      break;
    case 'stream':
      if (k.value.address === '') v.add(`${field}.stream.address`, 'is required');
      break;
    case 'vhostUser':
      checkAbsolutePath(v, `${field}.vhost_user.socket_path`, k.value.socketPath, true, MAX_SOCKET_PATH_BYTES);
      if (k.value.socketMode & ~0o770)
        v.add(
          `${field}.vhost_user.socket_mode`,
          `0${k.value.socketMode.toString(8)} must stay within 0770 (no access for others)`,
        );
      if (k.value.client && (k.value.socketMode !== 0 || k.value.socketGroup !== ''))
        v.add(
          `${field}.vhost_user.client`,
          'socket_mode and socket_group apply to server mode only (in client mode the front-end creates the socket)',
        );
      if (k.value.socketGroup !== '' && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(k.value.socketGroup))
        v.add(`${field}.vhost_user.socket_group`, 'must be a group name or number');
      break;
    default: {
      const never: never = k;
      v.add(field, `unknown transport ${JSON.stringify(never)}`);
    }
  }
}

function checkNetBackend(v: ViolationList, field: string, b: NetBackend | undefined): void {
  const k = b?.kind;
  if (!k) return; // defaults chosen by the agent
  if (k.$case === 'tap') {
    if (Buffer.byteLength(k.value.name) > IFNAME_MAX_BYTES)
      v.add(`${field}.tap.name`, `must be at most ${IFNAME_MAX_BYTES} bytes`);
    if (k.value.name !== '' && !/^[A-Za-z0-9_.-]+$/.test(k.value.name))
      v.add(`${field}.tap.name`, 'may contain only A-Z, a-z, 0-9, "_", "." and "-"');
    if (k.value.netns !== '' && !/^[A-Za-z0-9_.-]+$/.test(k.value.netns))
      v.add(`${field}.tap.netns`, 'must be a namespace name under /run/netns');
  } else {
    checkAbsolutePath(v, `${field}.datagram.path`, k.value.path, true, MAX_SOCKET_PATH_BYTES);
    checkAbsolutePath(v, `${field}.datagram.peer_path`, k.value.peerPath, true, MAX_SOCKET_PATH_BYTES);
  }
}

function checkConsoleBackend(v: ViolationList, field: string, b: ConsoleBackend | undefined): void {
  const k = b?.kind;
  if (!k) return;
  if (k.$case === 'pty') checkAbsolutePath(v, `${field}.pty.link_path`, k.value.linkPath, false);
  else checkAbsolutePath(v, `${field}.unix_socket.path`, k.value.path, true, MAX_SOCKET_PATH_BYTES);
}

export function checkDevice(v: ViolationList, field: string, d: Device, limits: SpecLimits = DEFAULT_LIMITS): void {
  checkName(v, `${field}.name`, d.name);
  const max = limits.maxQueueSize;
  if (d.queueSize !== 0 && (d.queueSize < 2 || d.queueSize > max || (d.queueSize & (d.queueSize - 1)) !== 0)) {
    v.add(
      `${field}.queue_size`,
      `${d.queueSize} must be a power of two between 2 and ${max} (limit maxQueueSize), or 0 for ${Math.min(DEFAULT_QUEUE_SIZE, max)}`,
    );
  }
  const k = d.kind;
  if (!k) {
    v.add(field, 'device kind is required: set exactly one of net, console, blk');
    return;
  }
  switch (k.$case) {
    case 'net':
      if (k.value.mac !== '' && !MAC_RE.test(k.value.mac))
        v.add(`${field}.net.mac`, `"${k.value.mac}" is not a MAC address like 02:00:00:00:00:01`);
      else if (k.value.mac !== '' && isGroupMac(k.value.mac)) v.add(`${field}.net.mac`, 'must be a unicast address');
      if (k.value.mtu !== 0 && (k.value.mtu < 68 || k.value.mtu > 65535))
        v.add(`${field}.net.mtu`, 'must be 0 (1500) or 68-65535');
      checkNetBackend(v, `${field}.net.device_backend`, k.value.deviceBackend);
      checkNetBackend(v, `${field}.net.driver_frontend`, k.value.driverFrontend);
      break;
    case 'console':
      checkConsoleBackend(v, `${field}.console.device_backend`, k.value.deviceBackend);
      checkConsoleBackend(v, `${field}.console.driver_frontend`, k.value.driverFrontend);
      if (k.value.log) {
        checkAbsolutePath(v, `${field}.console.log.path`, k.value.log.path, false);
        if (k.value.log.maxFiles > 100) v.add(`${field}.console.log.max_files`, 'must be at most 100');
      }
      break;
    case 'blk': {
      const b = k.value.backing;
      if (!b) v.add(`${field}.blk.backing`, 'is required');
      else {
        checkAbsolutePath(v, `${field}.blk.backing.path`, b.path, true);
        if (Buffer.byteLength(b.serial) > BLK_SERIAL_MAX_BYTES)
          v.add(`${field}.blk.backing.serial`, `must be at most ${BLK_SERIAL_MAX_BYTES} bytes`);
      }
      const e = k.value.export;
      if (e) {
        checkAbsolutePath(v, `${field}.blk.export.unix_socket`, e.unixSocket, false, MAX_SOCKET_PATH_BYTES);
        if (e.tcpListen !== '') {
          const hp = parseHostPort(e.tcpListen);
          if (typeof hp === 'string') v.add(`${field}.blk.export.tcp_listen`, hp);
          else if (hp.host !== 'localhost' && isIP(hp.host) === 0)
            v.add(`${field}.blk.export.tcp_listen`, `host "${hp.host}" must be an IP address or localhost`);
        }
      }
      break;
    }
    default: {
      const never: never = k;
      v.add(field, `unknown device kind ${JSON.stringify(never)}`);
    }
  }
}

export function checkDevices(
  v: ViolationList,
  field: string,
  devices: readonly Device[],
  limits: SpecLimits = DEFAULT_LIMITS,
): void {
  if (devices.length > limits.maxDevicesPerLink) {
    v.add(
      field,
      `has ${devices.length} devices; at most ${limits.maxDevicesPerLink} devices per link (limit maxDevicesPerLink)`,
    );
    return;
  }
  const seen = new Set<string>();
  devices.forEach((d, i) => {
    checkDevice(v, `${field}[${i}]`, d, limits);
    if (seen.has(d.name)) v.add(`${field}[${i}].name`, `duplicate device name "${d.name}"`);
    seen.add(d.name);
  });
}

/**
 * A vhost_user link: one endpoint, the device role (its driver is the front-end on the
 * socket: QEMU or DPDK, not an agent), and one net or blk device (console has no vhost-user
 * front-end in QEMU).
 */
function checkVhostUserLink(v: ViolationList, field: string, spec: LinkSpec): void {
  if (spec.endpoints.length !== 1) {
    v.add(
      `${field}.endpoints`,
      `a vhost_user link has exactly 1 endpoint (the device role; the front-end on the socket is the driver), has ${spec.endpoints.length}`,
    );
  } else {
    const e = spec.endpoints[0] as LinkSpec['endpoints'][0];
    checkName(v, `${field}.endpoints[0].agent`, e.agent);
    if (e.role !== Role.ROLE_DEVICE) v.add(`${field}.endpoints[0].role`, 'must be ROLE_DEVICE on a vhost_user link');
  }
  if (spec.devices.length !== 1) {
    v.add(`${field}.devices`, `a vhost_user link carries exactly 1 device, has ${spec.devices.length}`);
    return;
  }
  const d = spec.devices[0] as LinkSpec['devices'][0];
  const k = d.kind;
  if (k?.$case === 'console') v.add(`${field}.devices[0].console`, 'vhost_user serves net and blk devices only');
  if (k?.$case === 'net' && !k.value.deviceBackend?.kind)
    v.add(`${field}.devices[0].net.device_backend`, 'is required on a vhost_user link (a TAP or a datagram socket)');
  if (k?.$case === 'blk' && k.value.export)
    v.add(`${field}.devices[0].blk.export`, 'must be empty on a vhost_user link (the front-end is the driver)');
}

export function checkLinkSpec(
  v: ViolationList,
  field: string,
  spec: LinkSpec | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
): void {
  if (!spec) {
    v.add(field, 'is required');
    return;
  }
  if (spec.transport?.kind?.$case === 'vhostUser') {
    checkVhostUserLink(v, field, spec);
    checkTransport(v, `${field}.transport`, spec.transport, limits);
    checkDevices(v, `${field}.devices`, spec.devices, limits);
    return;
  }
  if (spec.endpoints.length !== 2) {
    v.add(`${field}.endpoints`, `must have exactly 2 endpoints, has ${spec.endpoints.length}`);
  } else {
    spec.endpoints.forEach((e, i) => {
      checkName(v, `${field}.endpoints[${i}].agent`, e.agent);
      if (e.role !== Role.ROLE_DEVICE && e.role !== Role.ROLE_DRIVER)
        v.add(`${field}.endpoints[${i}].role`, 'must be ROLE_DEVICE or ROLE_DRIVER');
    });
    const [a, b] = spec.endpoints as [LinkSpec['endpoints'][0], LinkSpec['endpoints'][0]];
    if (a.role === b.role && (a.role === Role.ROLE_DEVICE || a.role === Role.ROLE_DRIVER)) {
      v.add(
        `${field}.endpoints[1].role`,
        `both endpoints claim ${Role[a.role]}; one must be ROLE_DEVICE and the other ROLE_DRIVER`,
      );
    }
    if (a.agent !== '' && a.agent === b.agent)
      v.add(`${field}.endpoints[1].agent`, 'both endpoints name the same agent');
  }
  checkTransport(v, `${field}.transport`, spec.transport, limits);
  if (spec.devices.length === 0) v.add(`${field}.devices`, 'at least one device is required');
  checkDevices(v, `${field}.devices`, spec.devices, limits);
}

/** Validates a Link as sent by a client (status is ignored). Throws INVALID_ARGUMENT. */
export function validateLink(
  link: Link | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
  field = 'link',
): asserts link is Link & { meta: NonNullable<Link['meta']>; spec: LinkSpec } {
  const v = new ViolationList();
  if (!link) v.add(field, 'is required');
  else {
    if (!link.meta) v.add(`${field}.meta`, 'is required');
    else {
      checkName(v, `${field}.meta.name`, link.meta.name);
      checkLabels(v, `${field}.meta.labels`, link.meta.labels);
      checkAnnotations(v, `${field}.meta.annotations`, link.meta.annotations);
    }
    checkLinkSpec(v, `${field}.spec`, link.spec, limits);
  }
  v.throwIfAny();
}

export function checkSelector(v: ViolationList, field: string, s: LabelSelector | undefined): void {
  if (!s) return;
  checkLabels(v, `${field}.match_labels`, s.matchLabels);
  s.matchExpressions.forEach((e, i) => {
    const f = `${field}.match_expressions[${i}]`;
    if (!LABEL_KEY_RE.test(e.key)) v.add(`${f}.key`, `"${e.key}" is not a valid label key`);
    switch (e.operator) {
      case SelectorOperator.SELECTOR_OPERATOR_IN:
      case SelectorOperator.SELECTOR_OPERATOR_NOT_IN:
        if (e.values.length === 0) v.add(`${f}.values`, 'must not be empty for In/NotIn');
        break;
      case SelectorOperator.SELECTOR_OPERATOR_EXISTS:
      case SelectorOperator.SELECTOR_OPERATOR_DOES_NOT_EXIST:
        if (e.values.length > 0) v.add(`${f}.values`, 'must be empty for Exists/DoesNotExist');
        break;
      default:
        v.add(`${f}.operator`, 'must be one of SELECTOR_OPERATOR_IN, _NOT_IN, _EXISTS, _DOES_NOT_EXIST');
    }
  });
}

export function checkTemplate(
  v: ViolationList,
  field: string,
  t: LinkTemplate | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
): void {
  if (!t) {
    v.add(field, 'is required');
    return;
  }
  checkLabels(v, `${field}.labels`, t.labels);
  if (t.cardRole !== Role.ROLE_DEVICE && t.cardRole !== Role.ROLE_DRIVER)
    v.add(`${field}.card_role`, 'must be ROLE_DEVICE or ROLE_DRIVER');
  checkTransport(v, `${field}.transport`, t.transport, limits);
  if (t.devices.length === 0) v.add(`${field}.devices`, 'at least one device is required');
  checkDevices(v, `${field}.devices`, t.devices, limits);
}

export function validatePolicy(
  p: LinkPolicy | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
  field = 'policy',
): asserts p is LinkPolicy & { meta: NonNullable<LinkPolicy['meta']> } {
  const v = new ViolationList();
  if (!p) v.add(field, 'is required');
  else {
    if (!p.meta) v.add(`${field}.meta`, 'is required');
    else {
      checkName(v, `${field}.meta.name`, p.meta.name);
      checkLabels(v, `${field}.meta.labels`, p.meta.labels);
      checkAnnotations(v, `${field}.meta.annotations`, p.meta.annotations);
    }
    if (!p.spec) v.add(`${field}.spec`, 'is required');
    else {
      if (!p.spec.cardSelector) v.add(`${field}.spec.card_selector`, 'is required');
      checkSelector(v, `${field}.spec.card_selector`, p.spec.cardSelector);
      checkSelector(v, `${field}.spec.host_selector`, p.spec.hostSelector);
      checkTemplate(v, `${field}.spec.template`, p.spec.template, limits);
    }
  }
  v.throwIfAny();
}
