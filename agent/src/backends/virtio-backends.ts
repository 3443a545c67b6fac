/**
 * The virtio device backends for the agent's link manager (BackendRegistry): a device
 * whose spec names its local surfaces (blk: a backing file and an export; net: a TAP
 * or datagram backend on both roles; console: a pty, socket or log) becomes a typed
 * device config (native.ts DeviceConfigDto) that the addon turns straight into the C
 * config structs: it is published in the link's own window with its real virtio type
 * and served by the link's worker, which runs the device handshake, resets and
 * restarts for it. Anything else keeps the byte-pipe stand-in. Every host path reaches
 * the native layer with the root it must lie in (HostPathPolicy), where it is opened
 * beneath that root.
 */
import type { Device } from '../../../lib/proto/types';
import { fnv1a32Hex } from '../../../lib/src/fnv';
import type { ConsoleIo, LinkDevice } from '../links/data-plane';
import type { HostPathPolicy } from '../links/path-policy';
import type { DeviceConfigDto, DeviceEndpointsDto } from '../native/native';
import { bytePipeStandIn } from './byte-pipe';
import { ConsoleStream } from './console-stream';
import {
  devIdOf,
  queueLayout,
  type BackendContext,
  type BackendInstance,
  type ConsolePort,
  type DeviceBackend,
  type DeviceKindName,
  type LinkIdentity,
} from './device-backend';
import {
  checkNbdExport,
  nbdPlaintextAllowed,
  nbdTcpAddress,
  UNIX_ONLY_NBD_POLICY,
  type NbdExportPolicy,
} from './nbd-policy';

const RECENT_BYTES = 64 * 1024;

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
 * Data bytes of one blk request on a stream link. A request is one chain, and a chain must fit
 * one chain slot of the device side: a blk device's queue gets slots of this plus 4 KiB (request
 * header and status byte; native/binding/stream_binding.c), other devices keep 64 KiB + 4 KiB.
 * The driver side's NBD server cuts larger client requests into requests of this size. 512 KiB:
 * a 1 MiB read is 2 chains (bench:stream blk read against qemu-nbd: 0.88-0.92x at 64 KiB,
 * 0.95-0.96x at 256 KiB, 1.06-1.09x at 512 KiB with the streamed NBD replies); the largest power
 * of two whose chain slot fits one default frame (VOP_STREAM_CHAIN_FIT). The cost is 256 slots x
 * 516 KiB of the device side's memfd per blk queue, touched only as slots are used.
 */
export const STREAM_BLK_SEG_BYTES = 512 * 1024;

/**
 * Default TAP name of a device on one endpoint: unique per link, device and role, so that
 * both endpoints of a link, and the same device name on several links, can share one OS
 * (the local fleet) without colliding. "vop" + 8 hex + "d"/"r" fits IFNAMSIZ.
 */
export function defaultTapName(link: string, device: string, role: 'device' | 'driver'): string {
  return `vop${fnv1a32Hex(`${link}/${device}`)}${role === 'device' ? 'd' : 'r'}`;
}

/** Default MAC of a net device: locally administered unicast (02:...), derived from link and device. */
export function defaultMac(link: string, device: string): string {
  const h = fnv1a32Hex(`${link}/${device}`) + fnv1a32Hex(`${device}/${link}`).slice(0, 2);
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
 * The native device config for this endpoint's role, or null when the device keeps the
 * stand-in. policy: the host paths this agent allows; nbd: its NBD export policy (TLS
 * files, client names, plaintext TCP). Throws (RangeError) when a path lies in no root.
 */
export function deviceConfigFor(
  device: Device,
  role: 'device' | 'driver',
  devId: number,
  link: string,
  policy: HostPathPolicy,
  nbd: NbdExportPolicy = UNIX_ONLY_NBD_POLICY,
  blkSegBytes = 0,
): DeviceConfigDto | null {
  const k = device.kind;
  if (!k || !nativeEligible(device)) return null;
  const base = { devId, role, queueSize: device.queueSize, eventIdx: !device.disableEventIdx };
  switch (k.$case) {
    case 'blk': {
      const blk = k.value;
      if (!blk.backing || blk.backing.path === '') return null;
      const shape = { ...base, kind: 'blk' as const, segBytes: blkSegBytes, readOnly: blk.backing.readOnly };
      if (role === 'device') {
        const root = rootOf(policy, 'disk', blk.backing.path);
        return {
          ...shape,
          file: {
            path: blk.backing.path,
            root: 'dir' in root ? root.dir : null,
            blockDevice: !('dir' in root),
            direct: blk.backing.directIo,
            ioThreads: 0,
            serial: blk.backing.serial !== '' ? blk.backing.serial : null,
          },
          nbd: null,
        };
      }
      const ex = blk.export;
      if (!ex) return null;
      const tcp = nbdTcpAddress(ex.tcpListen);
      // Neither a socket nor TCP named: a Unix socket in this agent's socket directory.
      const sock =
        ex.unixSocket !== '' ? ex.unixSocket : tcp === null ? policy.defaultNbdSocket(link, device.name) : '';
      return {
        ...shape,
        file: null,
        nbd: {
          unixPath: sock !== '' ? sock : null,
          unixRoot: sock !== '' ? dirOf(policy, 'socket', sock) : null,
          tcpHost: tcp?.host ?? null,
          // port 0: any free port (-1 natively), reported as the endpoint nbd<ID>-port
          tcpPort: tcp === null ? 0 : tcp.port === 0 ? -1 : tcp.port,
          exportName: ex.exportName !== '' ? ex.exportName : null,
          tls: nbd.tls ? { cert: nbd.tls.cert, key: nbd.tls.key, ca: nbd.tls.ca, clients: [...nbd.clients] } : null,
          tcpPlaintext: tcp !== null && nbdPlaintextAllowed(nbd, tcp.host),
        },
      };
    }
    case 'net': {
      const net = k.value;
      const be = role === 'device' ? net.deviceBackend : net.driverFrontend;
      if (!be?.kind) return null;
      const tap = be.kind.$case === 'tap' ? be.kind.value : null;
      const dgram = be.kind.$case === 'datagram' ? be.kind.value : null;
      return {
        ...base,
        kind: 'net',
        mtu: net.mtu,
        mac: net.mac !== '' ? net.mac : defaultMac(link, device.name),
        offloads: net.offloads,
        tap: tap
          ? {
              name: tap.name !== '' ? tap.name : defaultTapName(link, device.name, role),
              netns: tap.netns !== '' ? tap.netns : null,
            }
          : null,
        datagram: dgram ? { local: dgram.path, peer: dgram.peerPath, root: dirOf(policy, 'socket', dgram.path) } : null,
        rxBufBytes: 0,
      };
    }
    case 'console': {
      const con = k.value;
      const be = role === 'device' ? con.deviceBackend : con.driverFrontend;
      const log = role === 'device' && con.log && con.log.path !== '' ? con.log : null;
      if (!be?.kind && !log) return null;
      const pty = be?.kind?.$case === 'pty' ? be.kind.value : null;
      const unix = role === 'device' && be?.kind?.$case === 'unixSocket' ? be.kind.value.path : null;
      const ptyLink = pty && pty.linkPath !== '' ? pty.linkPath : null;
      return {
        ...base,
        kind: 'console',
        // The driver role always serves a pty (a getty or screen opens its slave).
        pty: role === 'driver' || pty !== null,
        ptyLink,
        ptyRoot: ptyLink !== null ? dirOf(policy, 'pty', ptyLink) : null,
        log: log
          ? {
              path: log.path,
              root: dirOf(policy, 'log', log.path),
              maxBytes: Number(log.maxBytes),
              files: Math.min(log.maxFiles, 100),
            }
          : null,
        unixPath: unix,
        unixRoot: unix !== null ? dirOf(policy, 'socket', unix) : null,
      };
    }
    default:
      return null;
  }
}

/**
 * A backend's local surfaces as DeviceStatus.endpoints reports them: nbd<ID>-size,
 * nbd<ID>-socket, nbd<ID>-port, tap<ID> (and tap<ID>-netns), pty<ID>.
 */
export function endpointMap(devId: number, e: DeviceEndpointsDto): Record<string, string> {
  const out: Record<string, string> = {};
  if (e.nbdSizeBytes !== null) out[`nbd${devId}-size`] = String(e.nbdSizeBytes);
  if (e.nbdSocket !== null) out[`nbd${devId}-socket`] = e.nbdSocket;
  if (e.nbdPort !== null) out[`nbd${devId}-port`] = String(e.nbdPort);
  if (e.tap !== null) out[`tap${devId}`] = e.tap;
  if (e.netns !== null) out[`tap${devId}-netns`] = e.netns;
  if (e.pty !== null) out[`pty${devId}`] = e.pty;
  return out;
}

function consolePort(io: ConsoleIo, id: number, devicePath: string): { port: ConsolePort; stop: () => void } {
  const stream = new ConsoleStream(io, id);
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

/** The link device of device for role, or the reason it cannot be served natively (null: keep the stand-in). */
function virtioDevice(
  kind: DeviceKindName,
  device: Device,
  role: 'device' | 'driver',
  link: LinkIdentity,
  policy: HostPathPolicy,
  nbd: NbdExportPolicy,
): LinkDevice | Error | null {
  const devId = devIdOf(device.name);
  try {
    const seg = link.stream === true ? STREAM_BLK_SEG_BYTES : 0;
    const config = deviceConfigFor(device, role, devId, link.name, policy, nbd, seg);
    if (!config) return null;
    return { devId, role, queues: queueLayout(kind, role), config, resumable: kind === 'blk' };
  } catch (err) {
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
    describe(device, role, link) {
      const key = `${link.name}/${devIdOf(device.name)}`;
      const d = virtioDevice(kind, device, role, link, policy, nbd);
      if (d instanceof Error) invalid.set(key, d.message);
      else invalid.delete(key);
      return d instanceof Error || d === null ? standIn.describe(device, role, link) : d;
    },
    async start(ctx: BackendContext): Promise<BackendInstance> {
      const reason = invalid.get(`${ctx.link}/${ctx.devId}`);
      if (reason !== undefined) throw new Error(`device ${ctx.device.name} cannot be served natively: ${reason}`);
      const first = ctx.window.endpoints(ctx.devId);
      if (!first) return standIn.start(ctx);
      const io = ctx.window.console(ctx.devId);
      const con = io ? consolePort(io, ctx.devId, first.pty ?? '') : null;
      const ep = endpointMap(ctx.devId, first);
      ctx.log.info({ kind, role: ctx.role, endpoints: ep }, 'native device backend serving');
      return {
        // Read at status time: the export's size and port are those of the device as it runs now.
        get endpoints() {
          try {
            const now = ctx.window.endpoints(ctx.devId);
            return { backend: 'native', ...(now ? endpointMap(ctx.devId, now) : ep) };
          } catch {
            return { backend: 'native', ...ep };
          }
        },
        console: con?.port ?? null,
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
