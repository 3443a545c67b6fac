/**
 * Real device backends for the agent's link manager (BackendRegistry): a device
 * whose spec names its local surfaces (blk: a backing file and an export; net: a
 * TAP or datagram backend on both roles; console: a pty, socket or log) is a hosted
 * device of the native layer: it is published in the link's own window with its real
 * virtio type and served by the link's worker, which runs the device handshake,
 * resets and restarts for it. Anything else keeps the byte-pipe stand-in. Every host path
 * reaches the native layer with the root it must lie in (HostPathPolicy), where it is
 * opened beneath that root.
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
import type { HostPathPolicy } from '../links/path-policy';
import { NativeError } from '../native/errors';
import { hostedSpec } from '../native/window';
import { ConsoleStream, deviceDescription, type DeviceOptions } from './device-host';
import {
  checkNbdExport,
  nbdPlaintextAllowed,
  nbdTcpAddress,
  UNIX_ONLY_NBD_POLICY,
  type NbdExportPolicy,
} from './nbd-policy';

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
 * A blk export that names neither a socket nor a TCP address is served on a Unix
 * socket in the driver agent's socket directory (HostPathPolicy.defaultNbdSocket).
 */
export function nativeEligible(device: Device): boolean {
  const k = device.kind;
  switch (k?.$case) {
    case 'blk':
      return !!k.value.backing && k.value.backing.path !== '' && !!k.value.export;
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

/** The root a host path must lie in, as the native options take it; throws when it lies in none. */
function rootOf(
  policy: HostPathPolicy,
  kind: 'disk' | 'socket' | 'log' | 'pty',
  p: string,
): { dir: string } | { blockDevice: string } {
  const r = policy.rootOf(kind, p);
  if (!r) throw new RangeError(`"${p}" is outside the roots allowed here: ${policy.describe(kind)}`);
  return r;
}

function dirOf(policy: HostPathPolicy, kind: 'socket' | 'log' | 'pty', p: string): string {
  const r = rootOf(policy, kind, p);
  if (!('dir' in r)) throw new RangeError(`"${p}" has no root directory`);
  return r.dir;
}

/**
 * The native options for this endpoint's role, or null when the device keeps the stand-in.
 * policy: the host paths this agent allows; nbd: its NBD export policy (TLS files, client
 * names, plaintext TCP).
 */
export function deviceOptionsFor(
  device: Device,
  role: 'device' | 'driver',
  devId: number,
  link: string,
  policy: HostPathPolicy,
  nbd: NbdExportPolicy = UNIX_ONLY_NBD_POLICY,
): DeviceOptions | null {
  const k = device.kind;
  if (!k || !nativeEligible(device)) return null;
  const queueSize = device.queueSize === 0 ? undefined : device.queueSize;
  switch (k.$case) {
    case 'blk': {
      const blk = k.value;
      if (!blk.backing || blk.backing.path === '') return null;
      if (role === 'device') {
        const root = rootOf(policy, 'disk', blk.backing.path);
        return {
          kind: 'blk',
          role,
          id: devId,
          file: blk.backing.path,
          ...('dir' in root ? { fileRoot: root.dir } : { blockDevice: true }),
          readOnly: blk.backing.readOnly,
          direct: blk.backing.directIo,
          ...(blk.backing.serial !== '' ? { serial: blk.backing.serial } : {}),
        };
      }
      const ex = blk.export;
      if (!ex) return null;
      const tcp = nbdTcpAddress(ex.tcpListen);
      // Neither a socket nor TCP named: a Unix socket in this agent's socket directory.
      const sock =
        ex.unixSocket !== '' ? ex.unixSocket : tcp === null ? policy.defaultNbdSocket(link, device.name) : '';
      return {
        kind: 'blk',
        role,
        id: devId,
        readOnly: blk.backing.readOnly,
        ...(sock !== '' ? { nbdSocket: sock, socketRoot: dirOf(policy, 'socket', sock) } : {}),
        // port 0: any free port, reported as the endpoint nbd<ID>-port
        ...(tcp !== null ? { nbdTcpPort: tcp.port === 0 ? -1 : tcp.port, nbdTcpHost: tcp.host } : {}),
        ...(ex.exportName !== '' ? { exportName: ex.exportName } : {}),
        ...(nbd.tls ? { nbdTls: { ...nbd.tls, clients: nbd.clients } } : {}),
        ...(tcp !== null && nbdPlaintextAllowed(nbd, tcp.host) ? { nbdTcpPlaintext: true } : {}),
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
      return {
        ...common,
        datagram: { local: be.kind.value.path, peer: be.kind.value.peerPath },
        socketRoot: dirOf(policy, 'socket', be.kind.value.path),
      };
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
        ptyRoot?: string;
        logRoot?: string;
        socketRoot?: string;
      } = { kind: 'console', role, id: devId };
      if (be?.kind?.$case === 'pty' && be.kind.value.linkPath !== '') {
        o.ptyLink = be.kind.value.linkPath;
        o.ptyRoot = dirOf(policy, 'pty', o.ptyLink);
      }
      if (be?.kind?.$case === 'unixSocket' && role === 'device') {
        o.unixSocket = be.kind.value.path;
        o.socketRoot = dirOf(policy, 'socket', o.unixSocket);
      }
      if (role === 'device' && con.log && con.log.path !== '') {
        o.logFile = con.log.path;
        o.logRoot = dirOf(policy, 'log', o.logFile);
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
  policy: HostPathPolicy,
  nbd: NbdExportPolicy,
): NativeDeviceSpec | Error | null {
  const devId = devIdOf(device.name);
  let opts: DeviceOptions | null;
  try {
    opts = deviceOptionsFor(device, role, devId, link.name, policy, nbd);
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

/**
 * A backend serving real devices, falling back to the stand-in for unconfigured ones.
 * policy: the host paths this agent allows; nbd: its NBD export policy (blk driver role).
 */
export function nativeDeviceBackend(
  kind: DeviceKindName,
  policy: HostPathPolicy,
  nbd: NbdExportPolicy = UNIX_ONLY_NBD_POLICY,
): DeviceBackend {
  const standIn = bytePipeStandIn(kind);
  /** Devices whose spec could not be described natively, by link and device id: start() fails with the reason. */
  const invalid = new Map<string, string>();
  return {
    kind,
    admit(device, role, field) {
      checkNbdExport(nbd, device, role, field);
    },
    nativeSpec(device, role, link) {
      const key = `${link.name}/${devIdOf(device.name)}`;
      const spec = hostedNativeSpec(kind, device, role, link, policy, nbd);
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

/** Real backends for all three kinds (register them over the stand-ins), opening host paths under policy. */
export function nativeDeviceBackends(
  policy: HostPathPolicy,
  nbd: NbdExportPolicy = UNIX_ONLY_NBD_POLICY,
): DeviceBackend[] {
  return (['net', 'console', 'blk'] as const).map((k) => nativeDeviceBackend(k, policy, nbd));
}
