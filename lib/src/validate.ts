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
  type LinkPolicySpec,
  type LinkSpec,
  type LinkTemplate,
  type NetBackend,
  type ConsoleBackend,
  type StreamTransport,
  type PciBarTransport,
  PciDoorbellMode,
  type Transport,
  SelectorOperator,
  StreamProtocol,
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

/** Queue pairs a vhost_user net device may offer (8 virtqueues, VOP_VHU_MAX_QUEUES). */
export const MAX_VHOST_QUEUE_PAIRS = 4;

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
  controllerFills = false,
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
      checkPciBar(v, `${field}.pci_bar`, k.value, limits);
      break;
    case 'pciEpf':
      if (k.value.controller === '') v.add(`${field}.pci_epf.controller`, 'is required');
      if (k.value.function === '') v.add(`${field}.pci_epf.function`, 'is required');
      if (k.value.bar > 5) v.add(`${field}.pci_epf.bar`, 'must be 0-5');
      break;
    case 'stream':
      checkStreamTransport(v, `${field}.stream`, k.value, controllerFills);
      break;
    case 'vhostUser':
      checkAbsolutePath(v, `${field}.vhost_user.socket_path`, k.value.socketPath, true, MAX_SOCKET_PATH_BYTES);
      if (k.value.queuePairs > MAX_VHOST_QUEUE_PAIRS)
        v.add(`${field}.vhost_user.queue_pairs`, `must be 0 (1 pair) to ${MAX_VHOST_QUEUE_PAIRS}`);
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

/** IPv4 "a.b.c.d:port" with port 1..65535. */
const IPV4_PORT = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}:(\d{1,5})$/;
/** A certificate's DNS name: labels of a-z, 0-9 and "-", dot-separated, at most 253 bytes. */
const DNS_NAME_RE = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
/** vsock "cid:port" (decimal; "any" as the CID of a listen address). */
const VSOCK_CID_PORT = /^(any|0|[1-9]\d{0,9}):([1-9]\d{0,9})$/;
/** Bytes of a stream secret (HMAC-SHA256 key). */
export const STREAM_SECRET_MIN_BYTES = 16;
export const STREAM_SECRET_MAX_BYTES = 256;

function checkStreamAddress(
  v: ViolationList,
  field: string,
  protocol: StreamProtocol,
  a: string,
  required: boolean,
): void {
  if (a === '') {
    if (required) v.add(field, 'is required');
    return;
  }
  if (protocol === StreamProtocol.STREAM_PROTOCOL_UNIX) {
    checkAbsolutePath(v, field, a, true, MAX_SOCKET_PATH_BYTES);
    return;
  }
  if (protocol === StreamProtocol.STREAM_PROTOCOL_VSOCK) {
    const m = VSOCK_CID_PORT.exec(a);
    const cid = m?.[1] === 'any' ? 0 : Number(m?.[1] ?? -1);
    const port = Number(m?.[2] ?? 0);
    if (!m || cid > 0xfffffffe || port < 1 || port > 0xfffffffe)
      v.add(
        field,
        `"${a}" must be a vsock CID and port, CID:PORT (CID 0-4294967294 or "any" to listen on every CID; 1 is local loopback, 2 the host), e.g. 3:7400`,
      );
    return;
  }
  const m = IPV4_PORT.exec(a);
  const port = m ? Number(m[m.length - 1]) : 0;
  if (!m || port < 1 || port > 65535)
    v.add(field, `"${a}" must be an IPv4 address and a port 1-65535, e.g. 10.0.0.2:7400`);
}

/**
 * `controllerFills`: the spec goes to a controller, which fills an empty TCP address (from the
 * device side agent's data plane) and an empty secret (generated); agents need the address.
 */
function checkStreamTransport(v: ViolationList, field: string, t: StreamTransport, controllerFills: boolean): void {
  if (
    t.protocol !== StreamProtocol.STREAM_PROTOCOL_UNSPECIFIED &&
    t.protocol !== StreamProtocol.STREAM_PROTOCOL_TCP &&
    t.protocol !== StreamProtocol.STREAM_PROTOCOL_UNIX &&
    t.protocol !== StreamProtocol.STREAM_PROTOCOL_VSOCK
  )
    v.add(`${field}.protocol`, `unknown protocol ${String(t.protocol)}`);
  // The controller fills TCP addresses only (a Unix path or a vsock CID is the spec's to name).
  const fillsAddress =
    controllerFills &&
    (t.protocol === StreamProtocol.STREAM_PROTOCOL_TCP || t.protocol === StreamProtocol.STREAM_PROTOCOL_UNSPECIFIED);
  checkStreamAddress(v, `${field}.address`, t.protocol, t.address, !fillsAddress);
  if (fillsAddress && t.address === '' && t.listenAddress !== '')
    v.add(`${field}.listen_address`, 'must be empty when address is (the controller fills both)');
  checkStreamAddress(v, `${field}.listen_address`, t.protocol, t.listenAddress, false);
  const n = Buffer.byteLength(t.secret);
  // Without TLS the secret is the only authentication. With TLS (the default when the agents
  // have certificates) each agent checks at apply that it has them (agent/src/links/stream-security.ts).
  // Through a controller an empty secret is generated (controller/src/state/stream-endpoints.ts).
  if (n === 0 && !t.allowPlaintext && t.disableTls && !controllerFills)
    v.add(
      `${field}.secret`,
      'is required with disable_tls unless allow_plaintext is set explicitly (the link would be unauthenticated)',
    );
  else if (n !== 0 && (n < STREAM_SECRET_MIN_BYTES || n > STREAM_SECRET_MAX_BYTES))
    v.add(`${field}.secret`, `must be ${STREAM_SECRET_MIN_BYTES}..${STREAM_SECRET_MAX_BYTES} bytes (got ${n})`);
  if (t.tlsPeerName !== '' && !DNS_NAME_RE.test(t.tlsPeerName))
    v.add(`${field}.tls_peer_name`, `"${t.tlsPeerName}" must be a DNS name (a-z, 0-9, "-", ".", at most 253 bytes)`);
  if (t.tlsPeerName !== '' && t.disableTls) v.add(`${field}.tls_peer_name`, 'must be empty with disable_tls');
  if (t.idleTimeoutMs !== 0 && (t.idleTimeoutMs < 1000 || t.idleTimeoutMs > 600000))
    v.add(`${field}.idle_timeout_ms`, `${t.idleTimeoutMs} must be 0 (15000) or between 1000 and 600000`);
}

const PCI_ADDRESS_RE = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/i;
/** The smallest window and the page a pci-bar window's offset and size are multiples of. */
const PCI_PAGE = 4096;
/** ivshmem: vectors per peer, the doorbell register's 16-bit peer id (native/include/vop/ivshmem.h). */
const IVSHMEM_MAX_VECTORS = 64;
const IVSHMEM_MAX_ID = 65535;

/**
 * A pci-bar transport (docs/transports.md): each endpoint's way to the window, who holds the
 * memory (the holder joins an ivshmem server; the other maps a BAR), who creates the window, the
 * doorbell vector, and that each side can be told when its peer rang (a side whose peer cannot
 * ring it must poll).
 */
function checkPciBar(v: ViolationList, field: string, t: PciBarTransport, limits: SpecLimits): void {
  // The fields of the first pci-bar message: pci_address moved into the accesses; the doorbell
  // register is the ivshmem-doorbell one (BAR0 + 12), the only layout implemented.
  if (t.pciAddress !== '')
    v.add(`${field}.pci_address`, 'is replaced by device_access.pci_address / driver_access.pci_address');
  if (t.doorbellBar !== 0)
    v.add(`${field}.doorbell_bar`, 'must be 0: the doorbell registers are BAR0 (ivshmem-doorbell)');
  if (t.doorbellOffsetBytes !== 0n && t.doorbellOffsetBytes !== 12n)
    v.add(`${field}.doorbell_offset_bytes`, 'must be 0 or 12: the ivshmem-doorbell register at BAR0 + 12');
  if (t.bar > 5) v.add(`${field}.bar`, 'must be 0-5');
  if (t.offsetBytes % BigInt(PCI_PAGE) !== 0n)
    v.add(`${field}.offset_bytes`, `${t.offsetBytes} must be a multiple of ${PCI_PAGE}`);
  if (
    t.sizeBytes !== 0n &&
    (t.sizeBytes % BigInt(PCI_PAGE) !== 0n ||
      t.sizeBytes < BigInt(MIN_WINDOW_BYTES) ||
      t.sizeBytes > BigInt(limits.maxWindowBytes))
  )
    v.add(
      `${field}.size_bytes`,
      `${t.sizeBytes} must be 0 (the rest of the BAR) or a multiple of ${PCI_PAGE} between ${MIN_WINDOW_BYTES} and ${limits.maxWindowBytes} (limit maxWindowBytes)`,
    );
  const roles = [Role.ROLE_UNSPECIFIED, Role.ROLE_DEVICE, Role.ROLE_DRIVER];
  if (!roles.includes(t.memoryHolder))
    v.add(`${field}.memory_holder`, 'must be ROLE_DEVICE, ROLE_DRIVER or ROLE_UNSPECIFIED (neither: an NTB window)');
  if (!roles.includes(t.windowCreator))
    v.add(`${field}.window_creator`, 'must be ROLE_DEVICE, ROLE_DRIVER or ROLE_UNSPECIFIED (the device side)');
  const vectors = t.vectors === 0 ? t.vector + 1 : t.vectors;
  if (t.vector >= IVSHMEM_MAX_VECTORS) v.add(`${field}.vector`, `must be below ${IVSHMEM_MAX_VECTORS}`);
  else if (vectors > IVSHMEM_MAX_VECTORS || t.vector >= vectors)
    v.add(`${field}.vectors`, `must be 0 (vector + 1) or in (vector, ${IVSHMEM_MAX_VECTORS}]`);
  if (t.pollMaxUs > 1_000_000) v.add(`${field}.poll_max_us`, 'must be at most 1000000 (1 s)');
  const access = { device: t.deviceAccess, driver: t.driverAccess };
  const holder = t.memoryHolder === Role.ROLE_DEVICE ? 'device' : t.memoryHolder === Role.ROLE_DRIVER ? 'driver' : '';
  for (const side of ['device', 'driver'] as const) {
    const a = access[side];
    const f = `${field}.${side}_access`;
    if (!a) {
      v.add(f, 'is required: set one of ivshmem_socket, pci_address, bar_path');
      continue;
    }
    const ways = [a.ivshmemSocket, a.pciAddress, a.barPath].filter((x) => x !== '').length;
    if (ways !== 1) {
      v.add(f, `set exactly one of ivshmem_socket, pci_address, bar_path (${ways} set)`);
      continue;
    }
    checkAbsolutePath(v, `${f}.ivshmem_socket`, a.ivshmemSocket, false, MAX_SOCKET_PATH_BYTES);
    checkAbsolutePath(v, `${f}.bar_path`, a.barPath, false);
    checkAbsolutePath(v, `${f}.doorbell_path`, a.doorbellPath, false);
    if (a.pciAddress !== '' && !PCI_ADDRESS_RE.test(a.pciAddress))
      v.add(`${f}.pci_address`, `${quoteShort(a.pciAddress)} must look like 0000:03:00.0`);
    if (a.doorbellPath !== '' && a.barPath === '')
      v.add(`${f}.doorbell_path`, 'goes with bar_path (vfio finds the doorbell registers in BAR0 itself)');
    if (a.writeCombining && a.barPath === '') v.add(`${f}.write_combining`, 'goes with bar_path (a resourceN_wc file)');
    const modes = [
      PciDoorbellMode.PCI_DOORBELL_MODE_UNSPECIFIED,
      PciDoorbellMode.PCI_DOORBELL_MODE_INTERRUPT,
      PciDoorbellMode.PCI_DOORBELL_MODE_POLL,
    ];
    if (!modes.includes(a.doorbell))
      v.add(`${f}.doorbell`, 'must be PCI_DOORBELL_MODE_INTERRUPT or PCI_DOORBELL_MODE_POLL');
    else if (a.barPath !== '' && a.doorbell !== PciDoorbellMode.PCI_DOORBELL_MODE_POLL)
      v.add(
        `${f}.doorbell`,
        'must be PCI_DOORBELL_MODE_POLL with bar_path: a BAR mapped through a file has no interrupt path (use pci_address, vfio, for MSI-X)',
      );
    if (a.peerId !== undefined && a.peerId > IVSHMEM_MAX_ID) v.add(`${f}.peer_id`, `must be at most ${IVSHMEM_MAX_ID}`);
    // The memory holder joins the server; the other side maps the memory through a BAR.
    if (holder === side && a.ivshmemSocket === '')
      v.add(
        f,
        `the memory holder (memory_holder ${Role[t.memoryHolder]}) reaches the memory as a peer of the ivshmem server: set ivshmem_socket`,
      );
    if (holder !== '' && holder !== side && a.ivshmemSocket !== '')
      v.add(
        f,
        `the ${side} side maps the holder's memory through a BAR: set pci_address or bar_path, not ivshmem_socket`,
      );
  }
  // A side that waits for interrupts needs a peer that can ring it.
  for (const side of ['device', 'driver'] as const) {
    const me = access[side];
    const other = access[side === 'device' ? 'driver' : 'device'];
    if (!me || !other || me.doorbell === PciDoorbellMode.PCI_DOORBELL_MODE_POLL) continue;
    const otherSide = side === 'device' ? 'driver' : 'device';
    const canRing =
      other.ivshmemSocket !== '' ||
      ((other.pciAddress !== '' || other.doorbellPath !== '') && other.peerId !== undefined);
    if (!canRing)
      v.add(
        `${field}.${side}_access.doorbell`,
        `must be PCI_DOORBELL_MODE_POLL: the ${otherSide} side cannot ring it (it needs ivshmem_socket, or doorbell registers (pci_address or doorbell_path) and peer_id)`,
      );
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
  } else if (k.$case === 'datagram') {
    checkAbsolutePath(v, `${field}.datagram.path`, k.value.path, true, MAX_SOCKET_PATH_BYTES);
    checkAbsolutePath(v, `${field}.datagram.peer_path`, k.value.peerPath, true, MAX_SOCKET_PATH_BYTES);
  } else {
    // which link and whether this agent drives it: the agent checks (it knows its links)
    checkName(v, `${field}.vop_link.link`, k.value.link);
    checkName(v, `${field}.vop_link.device`, k.value.device);
  }
}

/**
 * A net backend naming another link (vop_link) belongs only in a vhost_user link's
 * device_backend: on a link between agents each side has its own TAP or socket.
 */
function checkNoVopLink(v: ViolationList, field: string, devices: LinkSpec['devices'], vhost: boolean): void {
  devices.forEach((d, i) => {
    if (d.kind?.$case !== 'net') return;
    if (!vhost && d.kind.value.deviceBackend?.kind?.$case === 'vopLink')
      v.add(
        `${field}[${i}].net.device_backend.vop_link`,
        'only a vhost_user link may send its frames to another link; use a tap or a datagram socket here',
      );
    if (d.kind.value.driverFrontend?.kind?.$case === 'vopLink')
      v.add(
        `${field}[${i}].net.driver_frontend.vop_link`,
        "is allowed only in a vhost_user link's device_backend; use a tap or a datagram socket here",
      );
  });
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
    v.add(
      `${field}.devices[0].net.device_backend`,
      'is required on a vhost_user link (a TAP, a datagram socket or vop_link)',
    );
  if (k?.$case === 'blk' && k.value.export)
    v.add(`${field}.devices[0].blk.export`, 'must be empty on a vhost_user link (the front-end is the driver)');
  const t = spec.transport?.kind;
  if (t?.$case === 'vhostUser' && t.value.queuePairs > 1 && k?.$case !== 'net')
    v.add(`${field}.transport.vhost_user.queue_pairs`, 'queue pairs are for a net device; a blk device serves 1 queue');
}

export function checkLinkSpec(
  v: ViolationList,
  field: string,
  spec: LinkSpec | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
  controllerFills = false,
): void {
  if (!spec) {
    v.add(field, 'is required');
    return;
  }
  if (spec.transport?.kind?.$case === 'vhostUser') {
    checkVhostUserLink(v, field, spec);
    checkTransport(v, `${field}.transport`, spec.transport, limits);
    checkDevices(v, `${field}.devices`, spec.devices, limits);
    checkNoVopLink(v, `${field}.devices`, spec.devices, true);
    return;
  }
  checkNoVopLink(v, `${field}.devices`, spec.devices, false);
  // A pci-bar link may have one agent endpoint: its far end is no agent (vop-card on a card),
  // named through the transport (its access and ivshmem id); it plays the other role.
  const card = spec.transport?.kind?.$case === 'pciBar' && spec.endpoints.length === 1;
  if (card) {
    const e = spec.endpoints[0] as LinkSpec['endpoints'][0];
    checkName(v, `${field}.endpoints[0].agent`, e.agent);
    if (e.role !== Role.ROLE_DEVICE && e.role !== Role.ROLE_DRIVER)
      v.add(`${field}.endpoints[0].role`, 'must be ROLE_DEVICE or ROLE_DRIVER');
  } else if (spec.endpoints.length !== 2) {
    v.add(
      `${field}.endpoints`,
      `must have exactly 2 endpoints (1 for a pci_bar link to vop-card), has ${spec.endpoints.length}`,
    );
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
  checkTransport(v, `${field}.transport`, spec.transport, limits, controllerFills);
  if (spec.devices.length === 0) v.add(`${field}.devices`, 'at least one device is required');
  checkDevices(v, `${field}.devices`, spec.devices, limits);
}

/** Validates a Link as sent by a client (status is ignored). Throws INVALID_ARGUMENT. */
export function validateLink(
  link: Link | undefined,
  limits: SpecLimits = DEFAULT_LIMITS,
  field = 'link',
  controllerFills = false,
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
    checkLinkSpec(v, `${field}.spec`, link.spec, limits, controllerFills);
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
  controllerFills = true,
  /** Host-node pairing: the template names the card's role. */
  needsCardRole = true,
): void {
  if (!t) {
    v.add(field, 'is required');
    return;
  }
  checkLabels(v, `${field}.labels`, t.labels);
  if (needsCardRole && t.cardRole !== Role.ROLE_DEVICE && t.cardRole !== Role.ROLE_DRIVER)
    v.add(`${field}.card_role`, 'must be ROLE_DEVICE or ROLE_DRIVER');
  checkTransport(v, `${field}.transport`, t.transport, limits, controllerFills);
  // A template stamps out many links: a secret in it would be shared by all of them (and returned
  // with the policy). The controller generates one per link, write-only (stream-endpoints.ts).
  const k = t.transport?.kind;
  if (k?.$case === 'stream' && k.value.secret !== '')
    v.add(
      `${field}.transport.stream.secret`,
      'must be empty in a policy template: the controller generates a secret per link (write-only, delivered to both agents); one secret shared by every stamped link is refused',
    );
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
    else checkPolicySpec(v, `${field}.spec`, p.spec, limits);
  }
  v.throwIfAny();
}

/** Pairs an explicit pairing may list. */
export const MAX_POLICY_PAIRS = 1024;

/**
 * A policy spec: the pairing (LinkPolicySpec.pairing, docs/controller.md "Policies") and the
 * template. Peer and explicit pairings join agents that share no host, so their links can only be
 * stream links over TCP whose address, port and secret the controller fills per link.
 */
function checkPolicySpec(v: ViolationList, field: string, s: LinkPolicySpec, limits: SpecLimits): void {
  const pairing = s.pairing;
  if (pairing === undefined || pairing.$case === 'hostNode') {
    if (!s.cardSelector) v.add(`${field}.card_selector`, 'is required');
    checkSelector(v, `${field}.card_selector`, s.cardSelector);
    checkSelector(v, `${field}.host_selector`, s.hostSelector);
    checkTemplate(v, `${field}.template`, s.template, limits);
    return;
  }
  const how = pairing.$case === 'peer' ? 'peer' : 'agent_pairs';
  const other = `with ${how} pairing (${field}.${how} selects the agents)`;
  if (s.cardSelector) v.add(`${field}.card_selector`, `must be unset ${other}`);
  if (s.hostSelector) v.add(`${field}.host_selector`, `must be unset ${other}`);
  if (pairing.$case === 'peer') {
    if (!pairing.value.deviceSelector) v.add(`${field}.peer.device_selector`, 'is required');
    if (!pairing.value.driverSelector) v.add(`${field}.peer.driver_selector`, 'is required');
    checkSelector(v, `${field}.peer.device_selector`, pairing.value.deviceSelector);
    checkSelector(v, `${field}.peer.driver_selector`, pairing.value.driverSelector);
  } else {
    const pairs = pairing.value.pairs;
    if (pairs.length === 0) v.add(`${field}.agent_pairs.pairs`, 'at least one pair is required');
    if (pairs.length > MAX_POLICY_PAIRS)
      v.add(`${field}.agent_pairs.pairs`, `${pairs.length} pairs: at most ${MAX_POLICY_PAIRS}`);
    const seen = new Set<string>();
    pairs.slice(0, MAX_POLICY_PAIRS).forEach((pr, i) => {
      const f = `${field}.agent_pairs.pairs[${i}]`;
      checkName(v, `${f}.device`, pr.device);
      checkName(v, `${f}.driver`, pr.driver);
      if (pr.device !== '' && pr.device === pr.driver) v.add(f, `device and driver are both "${pr.device}"`);
      const key = `${pr.device}/${pr.driver}`;
      if (seen.has(key)) v.add(f, `the pair device "${pr.device}", driver "${pr.driver}" is listed twice`);
      seen.add(key);
    });
  }
  const t = s.template;
  checkTemplate(v, `${field}.template`, t, limits, true, false);
  if (!t) return;
  if (t.cardRole !== Role.ROLE_UNSPECIFIED)
    v.add(`${field}.template.card_role`, `must be unset ${other}: the pairing names the device and driver sides`);
  const k = t.transport?.kind;
  if (k && k.$case !== 'stream') {
    const why =
      k.$case === 'vhostUser'
        ? 'a vhost_user link has one endpoint'
        : 'it needs memory or a PCI function the two agents share, which only a card and its host have';
    v.add(
      `${field}.template.transport.${snake(k.$case)}`,
      `${how} pairing joins agents that share no host: only transport stream works (${why}); use host_node pairing for it`,
    );
  } else if (k) {
    const st = k.value;
    if (
      st.protocol !== StreamProtocol.STREAM_PROTOCOL_TCP &&
      st.protocol !== StreamProtocol.STREAM_PROTOCOL_UNSPECIFIED
    )
      v.add(
        `${field}.template.transport.stream.protocol`,
        `must be STREAM_PROTOCOL_TCP with ${how} pairing (a Unix socket or vsock address cannot join agents on different machines)`,
      );
    if (st.address !== '' || st.listenAddress !== '')
      v.add(
        `${field}.template.transport.stream.${st.address !== '' ? 'address' : 'listen_address'}`,
        `must be empty with ${how} pairing: the controller fills each link's address and port from its device agent's data-plane range`,
      );
  }
}

/** "pciBar" -> "pci_bar": the proto field name of a oneof case. */
function snake(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
