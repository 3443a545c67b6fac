/**
 * TypeScript façade of the device backends (native/devices): validates and
 * defaults a typed description of the devices one endpoint serves, opens
 * them on a window side, and exposes endpoints, counters and the console
 * stream (several readers, one writer at a time). Buffers never pass
 * through JavaScript except the console bytes a reader asks for.
 */
import { isIP } from 'node:net';

import { loadDeviceNative, type DevHostDeviceDto, type DevHostHandle, type DeviceNative } from './native-devices';

export type DeviceRole = 'device' | 'driver';

export interface BlkDeviceOptions {
  readonly kind: 'blk';
  readonly role: 'device';
  readonly id: number;
  /** Regular file or block device. */
  readonly file: string;
  /**
   * Directory file must lie in: opened beneath it, never through a symlink out, and it must
   * be a regular file (absent: the file's own directory). Ignored with blockDevice.
   */
  readonly fileRoot?: string;
  /** file is an operator-allowed block device, opened by name; it must be one. */
  readonly blockDevice?: boolean;
  readonly readOnly?: boolean;
  /** O_DIRECT. */
  readonly direct?: boolean;
  /** I/O threads, 1..32 (default 4). */
  readonly ioThreads?: number;
  /** GET_ID answer, at most 20 bytes. */
  readonly serial?: string;
}

export interface BlkDriverOptions {
  readonly kind: 'blk';
  readonly role: 'driver';
  readonly id: number;
  /** NBD Unix socket path. */
  readonly nbdSocket?: string;
  /** Directory nbdSocket must lie in (absent: its own directory). */
  readonly socketRoot?: string;
  /** NBD TCP port (-1: any free port). */
  readonly nbdTcpPort?: number;
  /** NBD TCP listen address, an IPv4 or IPv6 literal (default 127.0.0.1). */
  readonly nbdTcpHost?: string;
  /**
   * NBD STARTTLS with these PEM files: offered on both sockets, required on TCP unless
   * nbdTcpPlaintext. Client certificates must chain to ca and carry one of clients' names
   * (CN, else first DNS SAN; '*' any).
   */
  readonly nbdTls?: {
    readonly cert: string;
    readonly key: string;
    readonly ca: string;
    readonly clients: readonly string[];
  };
  /** Allow TCP without TLS (the native layer refuses it anywhere but loopback). */
  readonly nbdTcpPlaintext?: boolean;
  /** Export name (default "vop"; the empty name is always accepted too). */
  readonly exportName?: string;
  /** Request slots, power of two 1..8192 (default 64); creator only. */
  readonly slots?: number;
  /** KiB of data per slot, multiple of 4 (default 512); creator only. */
  readonly segKiB?: number;
  readonly readOnly?: boolean;
}

export interface NetOptions {
  readonly kind: 'net';
  readonly role: DeviceRole;
  readonly id: number;
  /** TAP interface name, or a datagram backend. */
  readonly tap?: string;
  readonly datagram?:
    { readonly local: string; readonly peer: string } | { readonly udpPort: number; readonly udpPeerPort: number };
  /** Directory both Unix datagram paths must lie in (absent: each one's own directory). */
  readonly socketRoot?: string;
  readonly queueSize?: number;
  readonly mtu?: number;
  /** "52:54:00:12:34:56". */
  readonly mac?: string;
  /** Driver role: bytes per receive buffer, 64..65554 (default 65554: one buffer per frame; smaller ones are mergeable). */
  readonly rxBufBytes?: number;
}

export interface ConsoleOptions {
  readonly kind: 'console';
  readonly role: DeviceRole;
  readonly id: number;
  /** Symlink to the pty slave (driver role always has a pty). */
  readonly ptyLink?: string;
  /** Device role: output log (rotated at logMaxBytes, default 1 MiB). */
  readonly logFile?: string;
  readonly logMaxBytes?: number;
  /** Rotated files kept (FILE.1 .. FILE.n), 1..100 (default 1). */
  readonly logFiles?: number;
  /** Device role: Unix socket for attach. */
  readonly unixSocket?: string;
  /** Directories ptyLink, logFile and unixSocket must lie in (absent: each one's own directory). */
  readonly ptyRoot?: string;
  readonly logRoot?: string;
  readonly socketRoot?: string;
}

export type DeviceOptions = BlkDeviceOptions | BlkDriverOptions | NetOptions | ConsoleOptions;

export interface DeviceHostOptions {
  /** Window file (shm). */
  readonly window: string;
  /** Create the window with this many MiB (side 0), or attach when absent. */
  readonly createMiB?: number;
  /** Busy-poll microseconds before sleeping (default 20). */
  readonly spinUs?: number;
  readonly devices: readonly DeviceOptions[];
}

const SAFE = /^[^:\0]+$/;

function str(name: string, v: string): string {
  if (typeof v !== 'string' || v.length === 0 || !SAFE.test(v))
    throw new TypeError(`${name} must be a non-empty string without ':'`);
  return v;
}

function int(name: string, v: number, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max)
    throw new RangeError(`${name} must be an integer in [${min}, ${max}]`);
  return v;
}

function pow2(name: string, v: number, max: number): number {
  int(name, v, 1, max);
  if ((v & (v - 1)) !== 0) throw new RangeError(`${name} must be a power of two`);
  return v;
}

/** Native description ("ID:opts") of one device; throws TypeError/RangeError with the field name. */
export function deviceDescription(d: DeviceOptions): DevHostDeviceDto {
  const id = int('id', d.id, 1, 0xffffffff);
  const o: string[] = [String(id)];
  switch (d.kind) {
    case 'blk':
      if (d.role === 'device') {
        o.push(`file=${str('file', d.file)}`);
        if (d.blockDevice) o.push('blkdev');
        else if (d.fileRoot !== undefined) o.push(`fileroot=${str('fileRoot', d.fileRoot)}`);
        if (d.readOnly) o.push('ro');
        if (d.direct) o.push('direct');
        if (d.ioThreads !== undefined) o.push(`threads=${int('ioThreads', d.ioThreads, 1, 32)}`);
        if (d.serial !== undefined) {
          if (Buffer.byteLength(d.serial) > 20) throw new RangeError('serial must be at most 20 bytes');
          o.push(`serial=${str('serial', d.serial)}`);
        }
        return { kind: 'blk-device', desc: o.join(':') };
      }
      if (d.nbdSocket === undefined && d.nbdTcpPort === undefined)
        throw new TypeError('a blk driver needs nbdSocket or nbdTcpPort');
      if (d.nbdSocket !== undefined) o.push(`unix=${str('nbdSocket', d.nbdSocket)}`);
      if (d.nbdSocket !== undefined && d.socketRoot !== undefined)
        o.push(`sockroot=${str('socketRoot', d.socketRoot)}`);
      if (d.nbdTcpPort !== undefined)
        o.push(`tcp=${d.nbdTcpPort === -1 ? -1 : int('nbdTcpPort', d.nbdTcpPort, 1, 65535)}`);
      if (d.nbdTcpHost !== undefined) {
        if (isIP(d.nbdTcpHost) === 0) throw new TypeError('nbdTcpHost must be an IPv4 or IPv6 address');
        o.push(`tcphost=${d.nbdTcpHost.replace(/:/g, '-')}`); // IPv6 ":" travels as "-", like a MAC
      }
      if (d.nbdTls !== undefined) {
        for (const k of ['cert', 'key', 'ca'] as const) {
          if (Buffer.byteLength(d.nbdTls[k]) > 510) throw new RangeError(`nbdTls.${k} must be at most 510 bytes`);
          o.push(`tls${k}=${str(`nbdTls.${k}`, d.nbdTls[k])}`);
        }
        const names = d.nbdTls.clients.join(',');
        if (d.nbdTls.clients.some((n) => !/^[^,:\s]+$/.test(n)))
          throw new TypeError('nbdTls.clients must be names without ",", ":" or spaces');
        if (Buffer.byteLength(names) > 1022) throw new RangeError('nbdTls.clients must be at most 1022 bytes joined');
        o.push(`tlsnames=${names}`); // empty: nobody
      }
      if (d.nbdTcpPlaintext) o.push('tcpplain');
      if (d.exportName !== undefined && d.exportName !== '') {
        if (Buffer.byteLength(d.exportName) > 190) throw new RangeError('exportName must be at most 190 bytes');
        o.push(`name=${str('exportName', d.exportName)}`);
      }
      if (d.slots !== undefined) o.push(`qsize=${pow2('slots', d.slots, 8192)}`);
      if (d.segKiB !== undefined) {
        int('segKiB', d.segKiB, 4, 16384);
        if (d.segKiB % 4 !== 0) throw new RangeError('segKiB must be a multiple of 4');
        o.push(`seg=${d.segKiB}`);
      }
      if (d.readOnly) o.push('ro');
      return { kind: 'blk-driver', desc: o.join(':') };
    case 'net':
      if (d.datagram !== undefined) {
        if ('local' in d.datagram) {
          o.push(`sock=${str('datagram.local', d.datagram.local)}`, `peer=${str('datagram.peer', d.datagram.peer)}`);
          if (d.socketRoot !== undefined) o.push(`sockroot=${str('socketRoot', d.socketRoot)}`);
        } else
          o.push(
            `udp=${int('datagram.udpPort', d.datagram.udpPort, 1, 65535)}`,
            `udppeer=${int('datagram.udpPeerPort', d.datagram.udpPeerPort, 1, 65535)}`,
          );
      } else {
        const tap = str('tap', d.tap ?? '');
        if (tap.length > 15) throw new RangeError('tap must be at most 15 characters');
        o.push(`tap=${tap}`);
      }
      if (d.queueSize !== undefined) o.push(`qsize=${pow2('queueSize', d.queueSize, 32768)}`);
      if (d.mtu !== undefined) o.push(`mtu=${int('mtu', d.mtu, 68, 65535)}`);
      if (d.mac !== undefined) {
        if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(d.mac))
          throw new TypeError('mac must look like 52:54:00:12:34:56');
        if ((parseInt(d.mac.slice(0, 2), 16) & 1) !== 0) throw new RangeError('mac must be unicast');
        o.push(`mac=${d.mac.replace(/:/g, '-')}`);
      }
      if (d.rxBufBytes !== undefined) {
        if (d.role !== 'driver') throw new TypeError('rxBufBytes is for the driver role');
        o.push(`rxbuf=${int('rxBufBytes', d.rxBufBytes, 64, 65554)}`);
      }
      return { kind: d.role === 'device' ? 'net-device' : 'net-driver', desc: o.join(':') };
    case 'console':
      if (d.ptyLink !== undefined) o.push(`pty=${str('ptyLink', d.ptyLink)}`);
      else if (d.role === 'driver') o.push('pty');
      if (d.ptyLink !== undefined && d.ptyRoot !== undefined) o.push(`ptyroot=${str('ptyRoot', d.ptyRoot)}`);
      if (d.role === 'device') {
        if (d.logFile !== undefined) o.push(`log=${str('logFile', d.logFile)}`);
        if (d.logFile !== undefined && d.logRoot !== undefined) o.push(`logroot=${str('logRoot', d.logRoot)}`);
        if (d.logMaxBytes !== undefined) o.push(`logmax=${int('logMaxBytes', d.logMaxBytes, 4096, 2 ** 40)}`);
        if (d.logFiles !== undefined) o.push(`logfiles=${int('logFiles', d.logFiles, 1, 100)}`);
        if (d.unixSocket !== undefined) o.push(`unix=${str('unixSocket', d.unixSocket)}`);
        if (d.unixSocket !== undefined && d.socketRoot !== undefined)
          o.push(`sockroot=${str('socketRoot', d.socketRoot)}`);
      } else if (d.logFile !== undefined || d.unixSocket !== undefined) {
        throw new TypeError('logFile and unixSocket are for the device role');
      }
      return { kind: d.role === 'device' ? 'con-device' : 'con-driver', desc: o.join(':') };
    default:
      throw new TypeError('unknown device kind');
  }
}

/** Error thrown when a second writer tries to attach to a console. */
export class ConsoleBusyError extends Error {
  readonly code = 'CONSOLE_BUSY';
  constructor(id: number) {
    super(`console ${id} already has a writer`);
    this.name = 'ConsoleBusyError';
  }
}

const CONSOLE_READERS = 4;

/** Reads and writes of one console's native stream (a device host's, or a link window's). */
export interface ConsoleIo {
  read(reader: number, maxBytes: number): { readonly data: Buffer; readonly lost: bigint };
  write(data: Uint8Array): number;
}

/** Console stream of one device: up to 4 readers, one writer at a time. */
export class ConsoleStream {
  private readonly readers = new Set<number>();
  private writer: symbol | null = null;

  constructor(
    private readonly io: ConsoleIo,
    readonly id: number,
  ) {}

  /**
   * Start reading console output: onData gets chunks (and how many bytes
   * were lost if this reader fell behind), polled every pollMs while
   * attached. Returns the detach function.
   */
  attachReader(onData: (chunk: Buffer, lost: bigint) => void, pollMs = 50): () => void {
    let slot = -1;
    for (let i = 0; i < CONSOLE_READERS; i++)
      if (!this.readers.has(i)) {
        slot = i;
        break;
      }
    if (slot < 0) throw new RangeError(`console ${this.id} has ${CONSOLE_READERS} readers already`);
    this.readers.add(slot);
    // skip what is already buffered? No: a new reader starts at the oldest byte still in the ring (replay).
    const timer = setInterval(() => {
      for (;;) {
        const r = this.io.read(slot, 65536);
        if (r.data.length === 0 && r.lost === 0n) return;
        onData(r.data, r.lost);
        if (r.data.length < 65536) return;
      }
    }, pollMs);
    timer.unref();
    return () => {
      clearInterval(timer);
      this.readers.delete(slot);
    };
  }

  /** Take the single writer role; throws ConsoleBusyError if taken. Returns write/release. */
  acquireWriter(): { write(data: Uint8Array): number; release(): void } {
    if (this.writer !== null) throw new ConsoleBusyError(this.id);
    const token = Symbol('writer');
    this.writer = token;
    return {
      write: (data) => {
        if (this.writer !== token) throw new ConsoleBusyError(this.id);
        return this.io.write(data);
      },
      release: () => {
        if (this.writer === token) this.writer = null;
      },
    };
  }
}

/** Devices of one window side (its own window and link worker), for tools and tests; the agent hosts devices on its link windows instead. */
export class DeviceHost {
  private handle: DevHostHandle | null;
  private readonly consoles = new Map<number, ConsoleStream>();

  private constructor(
    private readonly native: DeviceNative,
    handle: DevHostHandle,
    readonly options: DeviceHostOptions,
  ) {
    this.handle = handle;
  }

  /** Validate, then open (create or attach) and start every device. */
  static async open(opts: DeviceHostOptions, native: DeviceNative = loadDeviceNative()): Promise<DeviceHost> {
    str('window', opts.window);
    if (opts.devices.length === 0 || opts.devices.length > 16)
      throw new RangeError('devices must hold 1 to 16 entries');
    const ids = new Set<number>();
    const devices = opts.devices.map((d) => {
      if (ids.has(d.id)) throw new RangeError(`device id ${d.id} is used twice`);
      ids.add(d.id);
      return deviceDescription(d);
    });
    const createBytes = opts.createMiB === undefined ? 0n : BigInt(int('createMiB', opts.createMiB, 1, 65536)) << 20n;
    const spinNs = BigInt(int('spinUs', opts.spinUs ?? 20, 1, 1_000_000)) * 1000n;
    const h = await native.devHostOpen({ path: opts.window, createBytes, spinNs, devices });
    return new DeviceHost(native, h, opts);
  }

  private live(): DevHostHandle {
    if (this.handle === null) throw new Error('device host is closed');
    return this.handle;
  }

  /** { "nbd1-port": "40331", "tap1": "vop0", "pty2": "/dev/pts/3", ... } */
  endpoints(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const line of this.native.devHostEndpoints(this.live()).split('\n')) {
      const sp = line.indexOf(' ');
      if (sp > 0) out[line.slice(0, sp)] = line.slice(sp + 1);
    }
    return out;
  }

  /** Counters per device ("blk1", "net1", "con2"...), read now. */
  stats(): Record<string, Record<string, number>> {
    return JSON.parse(this.native.devHostStats(this.live())) as Record<string, Record<string, number>>;
  }

  /** Ring counters of queue `queue` (virtio queue index) of device `id`; null until it runs. */
  queueStats(id: number, queue: number): BigUint64Array | null {
    return this.native.devHostQueueStats(this.live(), id, queue);
  }

  /** Names of the queue-broken reasons, indexed like the counter block. */
  reasonNames(): string[] {
    return this.native.reasonNames();
  }

  /** Console stream of a console device on this host. */
  console(id: number): ConsoleStream {
    const d = this.options.devices.find((x) => x.id === id && x.kind === 'console');
    if (!d) throw new RangeError(`no console device with id ${id}`);
    let c = this.consoles.get(id);
    if (!c) {
      c = new ConsoleStream(
        {
          read: (reader, max) => this.native.devConsoleRead(this.live(), id, reader, max),
          write: (data) => this.native.devConsoleWrite(this.live(), id, data),
        },
        id,
      );
      this.consoles.set(id, c);
    }
    return c;
  }

  /** Stop the loop, the backends and NBD servers; idempotent. */
  close(): void {
    if (this.handle !== null) this.native.devHostClose(this.handle);
    this.handle = null;
  }
}
