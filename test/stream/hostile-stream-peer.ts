/**
 * A hostile stream peer for tests against a running vop-agent: it speaks the real handshake of
 * docs/stream-protocol.md (HELLO, AUTH with HMAC-SHA256 over the link's secret, DEV_INFO/READY as
 * the side it plays) over a TCP socket and then sends whatever the test tells it to. It plays the
 * driver side (dials a device-side agent's listen address) or the device side (accepts where a
 * driver-side agent dials; its device table is the DEV_INFO frames it recorded as a driver of a
 * device-side agent with the same devices).
 */
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';

export const MSG = {
  HELLO: 0x01,
  AUTH: 0x02,
  DEV_INFO: 0x03,
  READY: 0x04,
  DEV_START: 0x10,
  DEV_RESET: 0x11,
  CHAINS: 0x20,
  USED: 0x21,
  PING: 0x30,
  PONG: 0x31,
  ERROR: 0x3f,
} as const;

const MAGIC = 0x53504f56; // "VOPS"
const HDR = 8;

/** One frame: the 8-byte header (le32 len, type, flags 0, reserved 0) and its payload. */
export function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(HDR);
  h.writeUInt32LE(payload.length, 0);
  h.writeUInt8(type, 4);
  return Buffer.concat([h, payload]);
}

/** HELLO: magic, version 1.0, side, auth 1, max_frame, max_segs 64, nonce. */
export function hello(side: 0 | 1, nonce: Buffer, maxFrame = 1 << 20): Buffer {
  const p = Buffer.alloc(52);
  p.writeUInt32LE(MAGIC, 0);
  p.writeUInt16LE(1, 4);
  p.writeUInt16LE(0, 6);
  p.writeUInt8(side, 8);
  p.writeUInt8(1, 9);
  p.writeUInt32LE(maxFrame, 12);
  p.writeUInt32LE(64, 16);
  nonce.copy(p, 20);
  return frame(MSG.HELLO, p);
}

/** AUTH's MAC: HMAC-SHA256(secret, "vop-stream-auth-v1" || side || nonce_of_side || nonce_of_other). */
export function authMac(secret: string, side: number, nonceSide: Buffer, nonceOther: Buffer): Buffer {
  return createHmac('sha256', Buffer.from(secret))
    .update(Buffer.concat([Buffer.from('vop-stream-auth-v1'), Buffer.from([side]), nonceSide, nonceOther]))
    .digest();
}

/** What a DEV_INFO frame says (raw: the payload, replayed as-is when playing the device side). */
export interface DevInfo {
  readonly raw: Buffer;
  readonly devId: number;
  readonly deviceType: number;
  readonly features: bigint;
  readonly queues: { size: number; maxChain: number }[];
}

function parseDevInfo(p: Buffer): DevInfo {
  const n = p.readUInt16LE(16);
  const queues = [];
  for (let q = 0; q < n; q++) queues.push({ size: p.readUInt16LE(20 + 8 * q), maxChain: p.readUInt32LE(24 + 8 * q) });
  return { raw: p, devId: p.readUInt32LE(0), deviceType: p.readUInt32LE(4), features: p.readBigUInt64LE(8), queues };
}

/** DEV_START: dev_id, gen, features. */
export function devStart(devId: number, gen: number, features: bigint): Buffer {
  const p = Buffer.alloc(16);
  p.writeUInt32LE(devId, 0);
  p.writeUInt32LE(gen, 4);
  p.writeBigUInt64LE(features, 8);
  return frame(MSG.DEV_START, p);
}

/** The 12-byte batch header CHAINS and USED frames start with: dev_id, gen, queue, count. */
function batchHeader(devId: number, gen: number, queue: number, count: number): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(devId, 0);
  h.writeUInt32LE(gen, 4);
  h.writeUInt16LE(queue, 8);
  h.writeUInt16LE(count, 10);
  return h;
}

/** A CHAINS frame of chains with one readable segment each: [id, bytes]. */
export function chains(devId: number, gen: number, queue: number, list: readonly [number, Buffer][]): Buffer {
  const parts: Buffer[] = [batchHeader(devId, gen, queue, list.length)];
  for (const [id, bytes] of list) {
    const c = Buffer.alloc(8);
    c.writeUInt16LE(id, 0);
    c.writeUInt8(1, 2);
    c.writeUInt8(0, 3);
    c.writeUInt32LE(bytes.length, 4);
    parts.push(c, bytes);
  }
  return frame(MSG.CHAINS, Buffer.concat(parts));
}

/** A CHAINS frame of chains with writable segments only: [id, segment lengths]. */
export function writableChains(devId: number, gen: number, queue: number, list: readonly [number, number[]][]): Buffer {
  const parts: Buffer[] = [];
  const h = Buffer.alloc(12);
  h.writeUInt32LE(devId, 0);
  h.writeUInt32LE(gen, 4);
  h.writeUInt16LE(queue, 8);
  h.writeUInt16LE(list.length, 10);
  parts.push(h);
  for (const [id, segs] of list) {
    const c = Buffer.alloc(4 + 4 * segs.length);
    c.writeUInt16LE(id, 0);
    c.writeUInt8(0, 2);
    c.writeUInt8(segs.length, 3);
    segs.forEach((l, k) => c.writeUInt32LE(l, 4 + 4 * k));
    parts.push(c);
  }
  return frame(MSG.CHAINS, Buffer.concat(parts));
}

/** A USED frame of entries [id, len] without payload bytes beyond len zero bytes. */
export function used(devId: number, gen: number, queue: number, list: readonly [number, number][]): Buffer {
  const parts: Buffer[] = [batchHeader(devId, gen, queue, list.length)];
  for (const [id, len] of list) {
    const e = Buffer.alloc(8 + len);
    e.writeUInt16LE(id, 0);
    e.writeUInt32LE(len, 4);
    parts.push(e);
  }
  return frame(MSG.USED, Buffer.concat(parts));
}

/** A 16-byte message of the agent's byte-pipe stand-in (verified by its sink): seq, length 16, checksum 0. */
export function pipeMessage(seq: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(BigInt(seq), 0);
  b.writeUInt32LE(16, 8);
  return b;
}

export interface Frame {
  readonly type: number;
  readonly payload: Buffer;
}

/** One TCP connection of the hostile peer, with a frame reader. */
export class HostilePeer {
  private buf: Buffer = Buffer.alloc(0);
  private frames: Frame[] = [];
  private wake: (() => void) | null = null;
  /** Bytes received (all of them, also while frames are not taken). */
  bytesIn = 0;
  /** The reason of an ERROR frame the agent sent, if any. */
  errorReason = '';
  /** Called for every frame after the handshake instead of queueing it (e.g. to count USED entries). */
  onFrame: ((f: Frame) => void) | null = null;
  readonly closed: Promise<void>;
  private isClosed = false;

  private constructor(readonly sock: net.Socket) {
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => this.feed(d));
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.isClosed = true;
        this.wake?.();
        resolve();
      };
      sock.once('close', done);
      sock.once('end', done);
      sock.on('error', () => undefined);
    });
  }

  /** Dial a device-side agent's listen address (the hostile plays the driver side). */
  static dial(port: number, host = '127.0.0.1'): Promise<HostilePeer> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => {
        s.off('error', reject);
        resolve(new HostilePeer(s));
      });
      s.once('error', reject);
    });
  }

  /** Wrap a socket a test server accepted (the hostile plays the device side). */
  static of(sock: net.Socket): HostilePeer {
    return new HostilePeer(sock);
  }

  get ended(): boolean {
    return this.isClosed || this.sock.destroyed;
  }

  private feed(d: Buffer): void {
    this.bytesIn += d.length;
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let off = 0;
    while (this.buf.length - off >= HDR) {
      const len = this.buf.readUInt32LE(off);
      if (this.buf.length - off < HDR + len) break;
      const f = { type: this.buf.readUInt8(off + 4), payload: this.buf.subarray(off + HDR, off + HDR + len) };
      off += HDR + len;
      if (f.type === MSG.ERROR) this.errorReason = f.payload.subarray(4).toString('latin1');
      if (this.onFrame) this.onFrame(f);
      else this.frames.push(f);
    }
    this.buf = off === this.buf.length ? Buffer.alloc(0) : Buffer.from(this.buf.subarray(off));
    this.wake?.();
  }

  /** The next frame (PINGs are answered, PONGs skipped), or an error when the connection ends first. */
  async next(timeoutMs = 10_000): Promise<Frame> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.shift();
      if (f) {
        if (f.type === MSG.PING) {
          void this.write(frame(MSG.PONG, f.payload));
          continue;
        }
        if (f.type === MSG.PONG) continue;
        return f;
      }
      if (this.isClosed) throw new Error(`the agent closed the connection (${this.errorReason || 'no ERROR frame'})`);
      const left = end - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a frame from the agent');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = null;
    }
  }

  /** Write bytes; resolves when the kernel took them (or the connection is gone). */
  write(b: Buffer): Promise<void> {
    if (this.ended) return Promise.resolve();
    return new Promise((resolve) => {
      if (this.sock.write(b)) resolve();
      else {
        const done = (): void => {
          this.sock.off('drain', done);
          this.sock.off('close', done);
          resolve();
        };
        this.sock.once('drain', done);
        this.sock.once('close', done);
      }
    });
  }

  /** Stop reading the socket: the agent's bytes pile up in the kernel, then in its own tx buffer. */
  stopReading(): void {
    this.sock.pause();
  }

  /**
   * The handshake as `side` with the link's secret. As the driver side it returns the device
   * table the agent sent; as the device side it sends `table` (recorded DEV_INFO payloads).
   */
  async handshake(secret: string, side: 0 | 1, table: readonly DevInfo[] = []): Promise<DevInfo[]> {
    const mine = randomBytes(32);
    await this.write(hello(side, mine));
    const h = await this.next();
    if (h.type !== MSG.HELLO) throw new Error(`expected HELLO, got type ${h.type}`);
    const theirs = h.payload.subarray(20, 52);
    await this.write(frame(MSG.AUTH, authMac(secret, side, mine, theirs)));
    const a = await this.next();
    if (a.type !== MSG.AUTH) throw new Error(`expected AUTH, got type ${a.type}`);
    if (!a.payload.equals(authMac(secret, 1 - side, theirs, mine)))
      throw new Error('the agent does not know the secret');
    const ready = Buffer.alloc(4);
    if (side === 1) {
      for (const d of table) await this.write(frame(MSG.DEV_INFO, d.raw));
      ready.writeUInt32LE(table.length, 0);
      await this.write(frame(MSG.READY, ready));
      const r = await this.next();
      if (r.type !== MSG.READY) throw new Error(`expected READY, got type ${r.type}`);
      return [...table];
    }
    const got: DevInfo[] = [];
    for (;;) {
      const f = await this.next();
      if (f.type === MSG.READY) break;
      if (f.type !== MSG.DEV_INFO) throw new Error(`expected DEV_INFO, got type ${f.type}`);
      got.push(parseDevInfo(Buffer.from(f.payload)));
    }
    ready.writeUInt32LE(got.length, 0);
    await this.write(frame(MSG.READY, ready));
    return got;
  }

  /** Wait (bounded) until the agent ended the connection. */
  async waitEnded(timeoutMs = 20_000): Promise<boolean> {
    if (this.ended) return true;
    let t: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.closed.then(() => true),
      new Promise<boolean>((res) => (t = setTimeout(() => res(false), timeoutMs))),
    ]);
    clearTimeout(t);
    return r;
  }

  destroy(): void {
    this.sock.destroy();
  }
}
