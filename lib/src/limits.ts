/**
 * Limits shared by vop-agent and vop-controller, in one place. Every size and count a
 * caller, a peer or a card can make the other side hold has a limit here; the
 * configurable ones appear under `limits:` in both config files with the defaults
 * below, and a value above the hard maximum (what the wire format or the data plane
 * can carry at all) is refused at start-up.
 *
 * A request over a limit is refused with INVALID_ARGUMENT (a field violation) when
 * one object is too big, or RESOURCE_EXHAUSTED when a count of objects or streams is
 * full; either way the message names the limit by its config key.
 */
import { z } from 'zod';

/** The configurable limits (config key = field name). */
export interface Limits {
  /** Links one agent runs (agent: its own links; controller: links with an endpoint on the agent). */
  readonly maxLinksPerAgent: number;
  /** Devices one link carries. */
  readonly maxDevicesPerLink: number;
  /** Window size of an shm link, explicit (window_size_bytes) or computed from the devices. */
  readonly maxWindowBytes: number;
  /** Entries of one virtqueue (queue_size). */
  readonly maxQueueSize: number;
  /** Watch and console streams open at once per client identity. */
  readonly maxStreamsPerClient: number;
  /** Events queued for one watcher that does not read; beyond it the watch is ended. */
  readonly watchBacklogEvents: number;
  /** Console output queued for one attached session that does not read; beyond it the session is ended. */
  readonly consoleBacklogBytes: number;
}

// ---- data plane: what virtio, Linux and the window layout allow (the native layer checks them too) ----

/** Largest virtqueue: a split ring's index is 16 bits and its size a power of two (virtio 1.2, 2.7). */
export const VIRTQUEUE_MAX_SIZE = 32_768;
/** Entries of a virtqueue whose queue_size is 0. */
export const DEFAULT_QUEUE_SIZE = 256;
/** Devices one window's device table holds. */
export const MAX_DEVICES_PER_WINDOW = 32;
/** Linux interface names (TAP): IFNAMSIZ (16) less the terminating NUL. */
export const IFNAME_MAX_BYTES = 15;
/** virtio-blk serial, the GET_ID answer (VIRTIO_BLK_ID_BYTES). */
export const BLK_SERIAL_MAX_BYTES = 20;
/** A MAC address written as six colon-separated hex pairs (02:00:00:00:00:01). */
export const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i;

/** True for a group (multicast or broadcast) MAC: the I/G bit of the first octet; a NIC's own address must be unicast. */
export function isGroupMac(mac: string): boolean {
  return (parseInt(mac.slice(0, 2), 16) & 1) === 1;
}

/** What the wire format and the data plane can carry at all; config values may not exceed these. */
export const HARD_LIMITS: Limits = {
  maxLinksPerAgent: 65_536,
  maxDevicesPerLink: MAX_DEVICES_PER_WINDOW,
  maxWindowBytes: 4 * 1024 * 1024 * 1024,
  maxQueueSize: VIRTQUEUE_MAX_SIZE,
  maxStreamsPerClient: 10_000,
  watchBacklogEvents: 1_000_000,
  consoleBacklogBytes: 64 * 1024 * 1024,
};

export const DEFAULT_LIMITS: Limits = {
  maxLinksPerAgent: 256,
  maxDevicesPerLink: 32,
  maxWindowBytes: 256 * 1024 * 1024,
  maxQueueSize: 4096,
  maxStreamsPerClient: 64,
  watchBacklogEvents: 10_000,
  consoleBacklogBytes: 1024 * 1024,
};

/** Smallest explicit window_size_bytes (the header, device table and one ring need it). */
export const MIN_WINDOW_BYTES = 65_536;

// ---- fixed limits of objects and registrations (not configurable) --------------------

/** Labels on one object (link, policy, agent registration). */
export const MAX_LABELS = 64;
/** Label value length (Kubernetes). */
export const MAX_LABEL_VALUE_LENGTH = 63;
/** Total bytes of keys and values of one object's annotations (Kubernetes: 256 KiB). */
export const MAX_ANNOTATIONS_BYTES = 256 * 1024;
/** Encoded size of what a registration stores: identity, addresses, capabilities, version. */
export const MAX_REGISTRATION_BYTES = 16 * 1024;
/** Agent software version string. */
export const MAX_VERSION_LENGTH = 128;
/** Entries of each capabilities list (transports, device kinds). */
export const MAX_CAPABILITY_ENTRIES = 16;
/** Label keys and annotation keys in the vop.dev/ prefix are set by vop itself. */
export const RESERVED_LABEL_PREFIX = 'vop.dev/';

// ---- patterns --------------------------------------------------------------------------

/** DNS-1123 label: node, rack, link, device and policy names. */
export const NAME_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Kubernetes label key: optional DNS-1123 subdomain prefix (<= 253) and "/", then a name (<= 63). */
export const LABEL_KEY_RE = /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
/** Kubernetes label value: empty, or <= 63 of A-Z a-z 0-9 - _ . starting and ending alphanumeric. */
export const LABEL_VALUE_RE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;
/** RFC 1123 host name (for addresses): at most 253 characters of dot-separated DNS labels, case-insensitive. */
export const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*$/;

// ---- config ----------------------------------------------------------------------------

function limitField(key: keyof Limits, min: number, pow2 = false) {
  let n = z
    .number()
    .int()
    .min(min)
    .max(HARD_LIMITS[key], `must be at most ${HARD_LIMITS[key]} (the hard maximum of ${key})`);
  if (pow2) n = n.refine((x) => (x & (x - 1)) === 0, 'must be a power of two');
  return n.default(DEFAULT_LIMITS[key]);
}

/** `limits:` in the agent and controller config files; every key optional. */
export const limitsSchema = z
  .object({
    maxLinksPerAgent: limitField('maxLinksPerAgent', 1),
    maxDevicesPerLink: limitField('maxDevicesPerLink', 1),
    maxWindowBytes: limitField('maxWindowBytes', MIN_WINDOW_BYTES),
    maxQueueSize: limitField('maxQueueSize', 2, true),
    maxStreamsPerClient: limitField('maxStreamsPerClient', 1),
    watchBacklogEvents: limitField('watchBacklogEvents', 1),
    consoleBacklogBytes: limitField('consoleBacklogBytes', 4096),
  })
  .strict()
  .prefault({});
