/**
 * The façade's checks of a device config (native.ts DeviceConfigDto) before anything
 * native runs: TypeError for a wrong type, RangeError for a value out of range, each
 * naming the property ("device.net.mtu ..."). The C binding re-checks cheaply and
 * answers -EINVAL; the limits come from C (constants()), not from copies here.
 */
import { isIP } from 'node:net';

import { BLK_SERIAL_MAX_BYTES, IFNAME_MAX_BYTES, MAC_RE } from '../../../lib/src/limits';
import type { ConstantsDto, DeviceConfigDto, PipeMode, Role } from './native';

type Limits = Pick<ConstantsDto, 'queueMaxSize' | 'pathMax' | 'netnsNameMax'>;

/** virtio-blk: entries one request may take (header, data, status), vop/dev_backend.h. */
export const BLK_ENTRIES_PER_REQUEST = 4;
const MAX_BUF = 64 * 1024 * 1024;
const BLK_SEG_MAX = 16 * 1024 * 1024;
const NET_RXBUF_MAX = 65536 + 12 + 14 + 4;
const PEM_PATH_MAX = 510;
const EXPORT_NAME_MAX = 199;
const NETNS_NAME = /^[A-Za-z0-9_.-]+$/;

/** Which pipe modes each role may use on queue 0 (tx) and queue 1 (rx). */
const PIPE_MODES: Record<Role, { tx: readonly PipeMode[]; rx: readonly PipeMode[] }> = {
  driver: { tx: ['off', 'source'], rx: ['off', 'sink'] },
  device: { tx: ['off', 'sink', 'echo'], rx: ['off', 'source'] },
};

function int(field: string, v: unknown, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${field} must be an integer`);
  if (v < min || v > max) throw new RangeError(`${field} must be in [${min}, ${max}], got ${v}`);
}

function bool(field: string, v: unknown): void {
  if (typeof v !== 'boolean') throw new TypeError(`${field} must be a boolean`);
}

function pow2(field: string, v: number, min: number, max: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`${field} must be an integer`);
  if (v < min || v > max || (v & (v - 1)) !== 0)
    throw new RangeError(`${field} must be a power of two in [${min}, ${max}], got ${v}`);
}

function str(field: string, v: unknown, maxBytes: number): string {
  if (typeof v !== 'string') throw new TypeError(`${field} must be a string`);
  if (v.includes('\0')) throw new TypeError(`${field} must not contain NUL`);
  if (Buffer.byteLength(v) > maxBytes) throw new RangeError(`${field} must be at most ${maxBytes} bytes`);
  return v;
}

function path(field: string, v: unknown, l: Limits): void {
  const p = str(field, v, l.pathMax - 1);
  if (!p.startsWith('/')) throw new RangeError(`${field} must be an absolute path, got "${p}"`);
}

function optPath(field: string, v: unknown, l: Limits): void {
  if (v !== null) path(field, v, l);
}

function absent(field: string, v: unknown, why: string): void {
  if (v !== null) throw new TypeError(`${field} must be null ${why}`);
}

function present<T>(field: string, v: T | null, why: string): T {
  if (v === null || typeof v !== 'object') throw new TypeError(`${field} must be an object ${why}`);
  return v;
}

/**
 * Checks every property of d (field: how to name it, "device" by default). Throws
 * TypeError or RangeError with the property's name; returns nothing.
 */
export function checkDeviceConfig(d: DeviceConfigDto, l: Limits, field = 'device'): void {
  int(`${field}.devId`, d.devId, 1, 0xffffffff);
  if (d.role !== 'driver' && d.role !== 'device') throw new TypeError(`${field}.role must be 'driver' or 'device'`);
  bool(`${field}.eventIdx`, d.eventIdx);
  if (d.queueSize !== 0)
    pow2(`${field}.queueSize`, d.queueSize, d.kind === 'blk' ? BLK_ENTRIES_PER_REQUEST : 1, l.queueMaxSize);
  else int(`${field}.queueSize`, d.queueSize, 0, 0);
  const role = d.role;
  switch (d.kind) {
    case 'pipe': {
      int(`${field}.bufSize`, d.bufSize, 1, MAX_BUF);
      bool(`${field}.indirect`, d.indirect);
      bool(`${field}.verify`, d.verify);
      int(`${field}.msgSize`, d.msgSize, d.verify ? 16 : 1, d.bufSize);
      int(`${field}.segs`, d.segs, 1, 16);
      if (!PIPE_MODES[role].tx.includes(d.tx))
        throw new RangeError(`${field}.tx mode '${d.tx}' is not valid for the ${role} role`);
      if (!PIPE_MODES[role].rx.includes(d.rx))
        throw new RangeError(`${field}.rx mode '${d.rx}' is not valid for the ${role} role`);
      if (d.tx === 'echo' && d.rx !== 'off')
        throw new RangeError(`${field}.rx must be 'off' when tx is 'echo' (echo fills queue 1)`);
      if (typeof d.count !== 'bigint' || d.count < 0n) throw new RangeError(`${field}.count must be a bigint >= 0`);
      int(`${field}.maxInflight`, d.maxInflight, 0, 0xffffffff);
      int(`${field}.batch`, d.batch, 0, l.queueMaxSize);
      return;
    }
    case 'blk': {
      if (d.segBytes !== 0) {
        int(`${field}.segBytes`, d.segBytes, 4096, BLK_SEG_MAX);
        if (d.segBytes % 4096 !== 0) throw new RangeError(`${field}.segBytes must be a multiple of 4096`);
      }
      bool(`${field}.readOnly`, d.readOnly);
      if (role === 'device') {
        absent(`${field}.nbd`, d.nbd, 'for the device role');
        const f = present(`${field}.file`, d.file, 'for the device role (the backing file)');
        path(`${field}.file.path`, f.path, l);
        optPath(`${field}.file.root`, f.root, l);
        bool(`${field}.file.blockDevice`, f.blockDevice);
        bool(`${field}.file.direct`, f.direct);
        int(`${field}.file.ioThreads`, f.ioThreads, 0, 32);
        if (f.serial !== null) str(`${field}.file.serial`, f.serial, BLK_SERIAL_MAX_BYTES);
        return;
      }
      absent(`${field}.file`, d.file, 'for the driver role');
      const n = present(`${field}.nbd`, d.nbd, 'for the driver role (the NBD export)');
      optPath(`${field}.nbd.unixPath`, n.unixPath, l);
      optPath(`${field}.nbd.unixRoot`, n.unixRoot, l);
      int(`${field}.nbd.tcpPort`, n.tcpPort, -1, 65535);
      if (n.unixPath === null && n.tcpPort === 0)
        throw new TypeError(`${field}.nbd needs unixPath or a tcpPort (-1: any free port)`);
      if (n.tcpHost !== null && isIP(n.tcpHost) === 0)
        throw new TypeError(`${field}.nbd.tcpHost must be an IPv4 or IPv6 address, got "${n.tcpHost}"`);
      if (n.exportName !== null) str(`${field}.nbd.exportName`, n.exportName, EXPORT_NAME_MAX);
      bool(`${field}.nbd.tcpPlaintext`, n.tcpPlaintext);
      if (n.tls !== null) {
        for (const k of ['cert', 'key'] as const) str(`${field}.nbd.tls.${k}`, n.tls[k], PEM_PATH_MAX);
        if (n.tls.ca !== null) str(`${field}.nbd.tls.ca`, n.tls.ca, PEM_PATH_MAX);
        if (!Array.isArray(n.tls.clients)) throw new TypeError(`${field}.nbd.tls.clients must be an array of names`);
        for (const c of n.tls.clients)
          if (typeof c !== 'string' || !/^[^,\s\0]{1,254}$/.test(c))
            throw new RangeError(`${field}.nbd.tls.clients must be names of 1..254 bytes without "," or spaces`);
        if (Buffer.byteLength(n.tls.clients.join(',')) > 1023)
          throw new RangeError(`${field}.nbd.tls.clients must be at most 1023 bytes joined`);
      }
      return;
    }
    case 'net': {
      if (d.mtu !== 0) int(`${field}.mtu`, d.mtu, 68, 65535);
      if (d.mac !== '') {
        if (typeof d.mac !== 'string' || !MAC_RE.test(d.mac))
          throw new TypeError(`${field}.mac must look like 02:00:00:00:00:01, got "${String(d.mac)}"`);
        if ((parseInt(d.mac.slice(0, 2), 16) & 1) !== 0) throw new RangeError(`${field}.mac must be unicast`);
      }
      bool(`${field}.offloads`, d.offloads);
      if (d.rxBufBytes !== 0) {
        if (role !== 'driver') throw new TypeError(`${field}.rxBufBytes is for the driver role`);
        int(`${field}.rxBufBytes`, d.rxBufBytes, 64, NET_RXBUF_MAX);
      }
      if ((d.tap === null) === (d.datagram === null))
        throw new TypeError(`${field}.tap or ${field}.datagram must be set, not both`);
      if (d.tap !== null) {
        const name = str(`${field}.tap.name`, d.tap.name, IFNAME_MAX_BYTES);
        if (/[/:\s]/.test(name)) throw new RangeError(`${field}.tap.name must not contain "/", ":" or spaces`);
        if (d.tap.netns !== null) {
          const ns = str(`${field}.tap.netns`, d.tap.netns, l.netnsNameMax);
          if (!NETNS_NAME.test(ns) || ns === '.' || ns === '..')
            throw new RangeError(`${field}.tap.netns must be a namespace name under /run/netns, got "${ns}"`);
        }
        return;
      }
      path(`${field}.datagram.local`, d.datagram?.local, l);
      path(`${field}.datagram.peer`, d.datagram?.peer, l);
      optPath(`${field}.datagram.root`, d.datagram?.root ?? null, l);
      return;
    }
    case 'console': {
      bool(`${field}.pty`, d.pty);
      optPath(`${field}.ptyLink`, d.ptyLink, l);
      optPath(`${field}.ptyRoot`, d.ptyRoot, l);
      if (d.ptyLink !== null && !d.pty) throw new TypeError(`${field}.ptyLink needs pty`);
      optPath(`${field}.unixPath`, d.unixPath, l);
      optPath(`${field}.unixRoot`, d.unixRoot, l);
      if (role === 'driver') {
        absent(`${field}.log`, d.log, 'for the driver role');
        absent(`${field}.unixPath`, d.unixPath, 'for the driver role');
        if (!d.pty) throw new TypeError(`${field}.pty must be true for the driver role`);
        return;
      }
      if (d.log !== null) {
        path(`${field}.log.path`, d.log.path, l);
        optPath(`${field}.log.root`, d.log.root, l);
        if (d.log.maxBytes !== 0) int(`${field}.log.maxBytes`, d.log.maxBytes, 4096, 2 ** 40);
        int(`${field}.log.files`, d.log.files, 0, 100);
      }
      return;
    }
    default: {
      const never: never = d;
      throw new TypeError(`${field}.kind must be 'pipe', 'blk', 'net' or 'console', got ${String(never)}`);
    }
  }
}
