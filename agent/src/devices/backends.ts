/**
 * Real device backends for the agent's link manager (BackendRegistry): a
 * device whose spec names its local surfaces (blk: a backing file; net: a
 * TAP or datagram backend; console: a pty, socket or log) is served by the
 * native device backends; anything else keeps the byte-pipe stand-in.
 *
 * Until the native link worker can host device backends on the link's own
 * window (it owns that window's doorbell), each real device runs on a
 * sidecar shm window next to it, /dev/shm/vop-dev-<link hash>-<devId>, which
 * the link's window creator creates and the other side attaches: the link
 * window still carries the stand-in entry, so link phases, readiness and
 * resets work as before, while the device's buffers move on the sidecar.
 */
import { rmSync } from 'node:fs';

import type { Device } from '../../../lib/gen/vop/types/v1/types';
import { bytePipeStandIn, type BackendContext, type BackendInstance, type ConsolePort, type DeviceBackend, type DeviceKindName } from '../links/device-backend';
import { DeviceHost, type DeviceOptions } from './device-host';
import { decodeQueueCounters, VIRTIO_QUEUE_INDEX } from './queue-counters';

const RECENT_BYTES = 64 * 1024;

function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/** Sidecar window of one device of one link (same path on both agents of an shm link). */
export function sidecarWindowPath(link: string, devId: number): string {
  return `/dev/shm/vop-dev-${fnv(link)}-${devId.toString(16)}`;
}

/**
 * True when the spec names the local surfaces of BOTH roles, so both agents
 * (which see the same spec) make the same choice between native and stand-in.
 */
export function nativeEligible(device: Device): boolean {
  const k = device.kind;
  switch (k?.$case) {
    case 'blk':
      return !!k.value.backing && k.value.backing.path !== '' && !!k.value.export && (k.value.export.unixSocket !== '' || k.value.export.tcpListen !== '');
    case 'net':
      return !!k.value.deviceBackend?.kind && !!k.value.driverFrontend?.kind;
    case 'console':
      return (!!k.value.deviceBackend?.kind || (!!k.value.log && k.value.log.path !== '')) && !!k.value.driverFrontend?.kind;
    default:
      return false;
  }
}

/**
 * Default TAP name of a device on one endpoint: unique per link, device and role, so that
 * both endpoints of a link, and the same device name on several links, can share one OS
 * (the local fleet) without colliding. "vop" + 8 hex + "d"/"r" fits IFNAMSIZ.
 */
export function defaultTapName(link: string, device: string, role: 'device' | 'driver'): string {
  return `vop${fnv(`${link}/${device}`)}${role === 'device' ? 'd' : 'r'}`;
}

/** Default MAC of a net device: locally administered unicast (02:...), derived from link and device. */
export function defaultMac(link: string, device: string): string {
  const h = fnv(`${link}/${device}`) + fnv(`${device}/${link}`).slice(0, 2);
  return `02:${(h.match(/../g) ?? []).slice(0, 5).join(':')}`;
}

/** The native options for this endpoint's role, or null when the device keeps the stand-in. */
export function deviceOptionsFor(device: Device, role: 'device' | 'driver', devId: number, link = ''): DeviceOptions | null {
  const k = device.kind;
  if (!k || !nativeEligible(device)) return null;
  const queueSize = device.queueSize === 0 ? undefined : device.queueSize;
  switch (k.$case) {
    case 'blk': {
      const blk = k.value;
      if (!blk.backing || blk.backing.path === '') return null;
      if (role === 'device') {
        return { kind: 'blk', role, id: devId, file: blk.backing.path, readOnly: blk.backing.readOnly, direct: blk.backing.directIo, ...(blk.backing.serial !== '' ? { serial: blk.backing.serial } : {}) };
      }
      const ex = blk.export;
      const port = ex && ex.tcpListen !== '' ? Number(ex.tcpListen.slice(ex.tcpListen.lastIndexOf(':') + 1)) : undefined;
      if (!ex || (ex.unixSocket === '' && port === undefined)) return null;
      return { kind: 'blk', role, id: devId, readOnly: blk.backing.readOnly, ...(ex.unixSocket !== '' ? { nbdSocket: ex.unixSocket } : {}), ...(port !== undefined ? { nbdTcpPort: port } : {}), ...(ex.exportName !== '' ? { exportName: ex.exportName } : {}) };
    }
    case 'net': {
      const net = k.value;
      const be = role === 'device' ? net.deviceBackend : net.driverFrontend;
      if (!be?.kind) return null;
      const common = { kind: 'net' as const, role, id: devId, ...(queueSize !== undefined ? { queueSize } : {}), ...(net.mtu !== 0 ? { mtu: net.mtu } : {}), mac: net.mac !== '' ? net.mac : defaultMac(link, device.name) };
      if (be.kind.$case === 'tap') return { ...common, tap: be.kind.value.name !== '' ? be.kind.value.name : defaultTapName(link, device.name, role) };
      return { ...common, datagram: { local: be.kind.value.path, peer: be.kind.value.peerPath } };
    }
    case 'console': {
      const con = k.value;
      const be = role === 'device' ? con.deviceBackend : con.driverFrontend;
      if (!be?.kind && !(role === 'device' && con.log && con.log.path !== '')) return null;
      const o: { kind: 'console'; role: 'device' | 'driver'; id: number; ptyLink?: string; unixSocket?: string; logFile?: string; logMaxBytes?: number; logFiles?: number } = { kind: 'console', role, id: devId };
      if (be?.kind?.$case === 'pty' && be.kind.value.linkPath !== '') o.ptyLink = be.kind.value.linkPath;
      if (be?.kind?.$case === 'unixSocket' && role === 'device') o.unixSocket = be.kind.value.path;
      if (role === 'device' && con.log && con.log.path !== '') {
        o.logFile = con.log.path;
        if (con.log.maxBytes !== 0n) o.logMaxBytes = Number(con.log.maxBytes);
        if (con.log.maxFiles !== 0) o.logFiles = Math.min(con.log.maxFiles, 100);
      }
      return o;
    }
    default:
      return null;
  }
}

function consolePort(host: DeviceHost, id: number, devicePath: string): { port: ConsolePort; stop: () => void } {
  const stream = host.console(id);
  const listeners = new Set<(chunk: Uint8Array) => void>();
  let recent = Buffer.alloc(0);
  const detach = stream.attachReader((chunk) => {
    recent = Buffer.concat([recent, chunk]);
    if (recent.length > RECENT_BYTES) recent = recent.subarray(recent.length - RECENT_BYTES);
    for (const l of listeners) l(chunk);
  }, 50);
  const writer = stream.acquireWriter(); // the agent's attach RPC enforces one writer at a time
  return {
    port: {
      onOutput(listener) {
        listeners.add(listener);
        return () => listeners.delete(listener);
      },
      write(data) {
        writer.write(data);
      },
      recent(max) {
        return recent.subarray(Math.max(0, recent.length - max));
      },
      devicePath,
    },
    stop: () => {
      detach();
      writer.release();
    },
  };
}

/** A backend serving real devices, falling back to the stand-in for unconfigured ones. */
export function nativeDeviceBackend(kind: DeviceKindName): DeviceBackend {
  const standIn = bytePipeStandIn(kind);
  return {
    kind,
    nativeSpec: (device, role, annotations) => standIn.nativeSpec(device, role, annotations),
    // A sidecar left by a killed predecessor must go before the peer can bind to it.
    reclaim: (link, devId) => rmSync(sidecarWindowPath(link, devId), { force: true }),
    async start(ctx: BackendContext): Promise<BackendInstance> {
      const opts = deviceOptionsFor(ctx.device, ctx.role, ctx.devId, ctx.link);
      if (!opts) return standIn.start(ctx);
      const window = sidecarWindowPath(ctx.link, ctx.devId);
      const creator = ctx.window.side === 'creator';
      if (creator) rmSync(window, { force: true });
      const host = await DeviceHost.open({ window, ...(creator ? { createMiB: kind === 'console' ? 8 : 96 } : {}), devices: [opts] });
      ctx.log.info({ window, kind, role: ctx.role }, 'native device backend started');
      const reasons = host.reasonNames();
      const ep = host.endpoints();
      const pty = ep[`pty${ctx.devId}`] ?? '';
      const con = kind === 'console' ? consolePort(host, ctx.devId, pty) : null;
      return {
        endpoints: { backend: 'native', sidecarWindow: window, ...ep },
        console: con?.port ?? null,
        queueCounters(queue) {
          const index = VIRTIO_QUEUE_INDEX[kind][queue];
          if (index === undefined) return null;
          const c = host.queueStats(ctx.devId, index);
          return c ? decodeQueueCounters(index, c, reasons) : null;
        },
        counters() {
          const out: Record<string, bigint> = {};
          for (const [dev, c] of Object.entries(host.stats())) for (const [k, v] of Object.entries(c)) out[`${dev}_${k}`] = BigInt(v);
          return out;
        },
        async stop() {
          con?.stop();
          host.close();
          if (creator) rmSync(window, { force: true });
        },
      };
    },
  };
}

/** Real backends for all three kinds (register them over the stand-ins). */
export function nativeDeviceBackends(): DeviceBackend[] {
  return (['net', 'console', 'blk'] as const).map(nativeDeviceBackend);
}
