/**
 * Real device backends for the agent's link manager (BackendRegistry): a device
 * whose spec names its local surfaces (blk: a backing file and an export; net: a
 * TAP or datagram backend on both roles; console: a pty, socket or log) is a hosted
 * device of the native layer: it is published in the link's own window with its real
 * virtio type and served by the link's worker, which runs the device handshake,
 * resets and restarts for it. Anything else keeps the byte-pipe stand-in.
 */
import type { Device } from '../../../lib/gen/vop/types/v1/types';
import type { HostedDevicePort, NativeDeviceSpec } from '../links/data-plane';
import {
  bytePipeStandIn,
  devIdOf,
  queueLayout,
  type BackendContext,
  type BackendInstance,
  type ConsolePort,
  type DeviceBackend,
  type DeviceKindName,
  type LinkIdentity,
} from '../links/device-backend';
import { NativeError } from '../native/errors';
import { hostedSpec } from '../native/window';
import { ConsoleStream, deviceDescription, type DeviceOptions } from './device-host';

const RECENT_BYTES = 64 * 1024;

function fnv(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

/**
 * True when the spec names the local surfaces of BOTH roles, so both agents
 * (which see the same spec) make the same choice between native and stand-in.
 */
export function nativeEligible(device: Device): boolean {
  const k = device.kind;
  switch (k?.$case) {
    case 'blk':
      return (
        !!k.value.backing &&
        k.value.backing.path !== '' &&
        !!k.value.export &&
        (k.value.export.unixSocket !== '' || k.value.export.tcpListen !== '')
      );
    case 'net':
      return !!k.value.deviceBackend?.kind && !!k.value.driverFrontend?.kind;
    case 'console':
      return (
        (!!k.value.deviceBackend?.kind || (!!k.value.log && k.value.log.path !== '')) && !!k.value.driverFrontend?.kind
      );
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
export function deviceOptionsFor(
  device: Device,
  role: 'device' | 'driver',
  devId: number,
  link = '',
): DeviceOptions | null {
  const k = device.kind;
  if (!k || !nativeEligible(device)) return null;
  const queueSize = device.queueSize === 0 ? undefined : device.queueSize;
  switch (k.$case) {
    case 'blk': {
      const blk = k.value;
      if (!blk.backing || blk.backing.path === '') return null;
      if (role === 'device') {
        return {
          kind: 'blk',
          role,
          id: devId,
          file: blk.backing.path,
          readOnly: blk.backing.readOnly,
          direct: blk.backing.directIo,
          ...(blk.backing.serial !== '' ? { serial: blk.backing.serial } : {}),
        };
      }
      const ex = blk.export;
      const port =
        ex && ex.tcpListen !== '' ? Number(ex.tcpListen.slice(ex.tcpListen.lastIndexOf(':') + 1)) : undefined;
      if (!ex || (ex.unixSocket === '' && port === undefined)) return null;
      return {
        kind: 'blk',
        role,
        id: devId,
        readOnly: blk.backing.readOnly,
        ...(ex.unixSocket !== '' ? { nbdSocket: ex.unixSocket } : {}),
        ...(port !== undefined ? { nbdTcpPort: port } : {}),
        ...(ex.exportName !== '' ? { exportName: ex.exportName } : {}),
      };
    }
    case 'net': {
      const net = k.value;
      const be = role === 'device' ? net.deviceBackend : net.driverFrontend;
      if (!be?.kind) return null;
      const common = {
        kind: 'net' as const,
        role,
        id: devId,
        ...(queueSize !== undefined ? { queueSize } : {}),
        ...(net.mtu !== 0 ? { mtu: net.mtu } : {}),
        mac: net.mac !== '' ? net.mac : defaultMac(link, device.name),
      };
      if (be.kind.$case === 'tap')
        return {
          ...common,
          tap: be.kind.value.name !== '' ? be.kind.value.name : defaultTapName(link, device.name, role),
        };
      return { ...common, datagram: { local: be.kind.value.path, peer: be.kind.value.peerPath } };
    }
    case 'console': {
      const con = k.value;
      const be = role === 'device' ? con.deviceBackend : con.driverFrontend;
      if (!be?.kind && !(role === 'device' && con.log && con.log.path !== '')) return null;
      const o: {
        kind: 'console';
        role: 'device' | 'driver';
        id: number;
        ptyLink?: string;
        unixSocket?: string;
        logFile?: string;
        logMaxBytes?: number;
        logFiles?: number;
      } = { kind: 'console', role, id: devId };
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

function consolePort(
  hosted: HostedDevicePort,
  id: number,
  devicePath: string,
): { port: ConsolePort; stop: () => void } {
  const stream = new ConsoleStream(
    { read: (reader, max) => hosted.consoleRead(reader, max), write: (data) => hosted.consoleWrite(data) },
    id,
  );
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
        return writer.write(data);
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

/** The hosted-device spec of device for role, or the reason it cannot be hosted (null: keep the stand-in). */
function hostedNativeSpec(
  kind: DeviceKindName,
  device: Device,
  role: 'device' | 'driver',
  link: LinkIdentity,
): NativeDeviceSpec | Error | null {
  const devId = devIdOf(device.name);
  let opts: DeviceOptions | null;
  try {
    opts = deviceOptionsFor(device, role, devId, link.name);
    if (!opts) return null;
    const { kind: hostedKind, desc } = deviceDescription(opts);
    const fp = hostedSpec(hostedKind, desc);
    const queues = queueLayout(kind, device, role).map((q, i) => ({ ...q, size: fp.queueSizes[i] ?? q.size }));
    return {
      devId,
      deviceType: fp.deviceType,
      role,
      queues,
      eventIdx: true,
      bufSize: 0,
      traffic: 'idle',
      hosted: { kind: hostedKind, desc, poolBytes: fp.poolBytes, resumable: kind === 'blk' },
    };
  } catch (err) {
    // Without the addon the link reports DataPlaneUnavailable; anything else is this device's fault.
    if (err instanceof NativeError && err.code === 'NATIVE_UNAVAILABLE') return null;
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** A backend serving real devices, falling back to the stand-in for unconfigured ones. */
export function nativeDeviceBackend(kind: DeviceKindName): DeviceBackend {
  const standIn = bytePipeStandIn(kind);
  /** Devices whose spec could not be described natively, by link and device id: start() fails with the reason. */
  const invalid = new Map<string, string>();
  return {
    kind,
    nativeSpec(device, role, link) {
      const key = `${link.name}/${devIdOf(device.name)}`;
      const spec = hostedNativeSpec(kind, device, role, link);
      if (spec instanceof Error) invalid.set(key, spec.message);
      else invalid.delete(key);
      return spec instanceof Error || spec === null ? standIn.nativeSpec(device, role, link) : spec;
    },
    async start(ctx: BackendContext): Promise<BackendInstance> {
      const reason = invalid.get(`${ctx.link}/${ctx.devId}`);
      if (reason !== undefined) throw new Error(`device ${ctx.device.name} cannot be served natively: ${reason}`);
      const hosted = ctx.window.hosted(ctx.devId);
      if (!hosted) return standIn.start(ctx);
      const ep = hosted.endpoints();
      const con = kind === 'console' ? consolePort(hosted, ctx.devId, ep[`pty${ctx.devId}`] ?? '') : null;
      ctx.log.info({ kind, role: ctx.role, endpoints: ep }, 'native device backend serving');
      return {
        // Read at status time: the export's size and port are those of the device as it runs now.
        get endpoints() {
          try {
            return { backend: 'native', ...hosted.endpoints() };
          } catch {
            return { backend: 'native', ...ep };
          }
        },
        console: con?.port ?? null,
        counters() {
          const out: Record<string, bigint> = {};
          for (const [k, v] of Object.entries(hosted.counters())) out[k] = BigInt(v);
          return out;
        },
        async stop() {
          con?.stop();
        },
      };
    },
  };
}

/** Real backends for all three kinds (register them over the stand-ins). */
export function nativeDeviceBackends(): DeviceBackend[] {
  return (['net', 'console', 'blk'] as const).map(nativeDeviceBackend);
}
