/**
 * A hostile stream peer (test/stream/hostile-stream-peer.ts: the real handshake, HMAC with the
 * link's secret, then misbehaviour) against two running vop-agents on loopback TCP. As the driver
 * side it dials a device-side agent's listener and sends an oversized frame length, an unknown
 * message type, a chain id that is already outstanding, a slow-loris handshake, 5 s of tiny CHAINS
 * frames followed by a flood of tiny PINGs, chains that wait for ring room followed by tiny frames
 * until the agent stops reading (its silence timer must not blame the peer meanwhile), and stops
 * reading while the agent has answers to send (a few, then silence; or a stream of them, reusing
 * ids until one is still unanswered because the agent's tx buffer is full);
 * as the device side it listens where a driver-side agent dials and returns a used id that is not
 * outstanding. Each ends that connection with the reason docs/stream-protocol.md lists, in the
 * link's stream status and its PeerConnected condition; the agent stays up, its gRPC answers,
 * another link of the same agents keeps carrying traffic, the attacked links come back Ready with
 * their real peer, and the agent's resident memory (VmRSS) grows by less than one connection's
 * bound while tiny frames flood it, while its queue is at its bound and while its peer does not read.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, StreamProtocol, type Device, type Link } from '../../lib/proto/types';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import {
  chains,
  devStart,
  frame,
  HostilePeer,
  MSG,
  pipeMessage,
  used,
  writableChains,
  type DevInfo,
} from './hostile-stream-peer';

const MIB = 1 << 20;
/** The agent's max_frame (VOP_STREAM_DEF_FRAME): every per-connection buffer is a multiple of it. */
const MAX_FRAME = MIB;
/**
 * What one connection may hold whatever the peer sends (native/devices/stream_bridge.c, top
 * comment): rx buffer max_frame + 8, tx buffer 4 x max_frame + 64 KiB control reserve, 4096 slot
 * segments of 48 bytes, a 64 KiB scratch buffer, frames queued to devices (4 x max_frame,
 * accounted with 64 bytes per frame) plus as much again held by a proxy waiting for ring room.
 */
const CONN_BOUND = MAX_FRAME + 8 + (4 * MAX_FRAME + 64 * 1024) + 4096 * 48 + 64 * 1024 + 2 * 4 * MAX_FRAME;
/** The agent is a Node process: its JS heap moves with the status polls and gRPC calls of the test. */
const JS_SLACK = 16 * MIB;
const RSS_BOUND = CONN_BOUND + JS_SLACK;
const FLOOD_MS = 5000;
const FLOOD_BYTES = 200 * MIB;
const IDLE_MS = 3000;

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m?.[1]) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

function rssParts(pid: number): { anon: number; shmem: number } {
  const t = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB$`, 'm').exec(t)?.[1] ?? 0);
  return { anon: kb('RssAnon'), shmem: kb('RssShmem') };
}

/** The address ranges (and bytes) of a process's mappings of vop windows (memfd "vop-window"). */
function windowMaps(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const l of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    if (!l.includes('memfd:vop-window')) continue;
    const [range = ''] = l.split(' ');
    const [lo = '0', hi = '0'] = range.split('-');
    out.set(range, parseInt(hi, 16) - parseInt(lo, 16));
  }
  return out;
}

/** Samples a process's RSS every 50 ms until stopped: the peak. */
function rssSampler(pid: number): { stop(): number } {
  let peak = rssBytes(pid);
  const t = setInterval(() => {
    peak = Math.max(peak, rssBytes(pid));
  }, 50);
  return {
    stop() {
      clearInterval(t);
      return Math.max(peak, rssBytes(pid));
    },
  };
}

const mb = (n: number): string => (n / MIB).toFixed(1);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function streamLink(
  name: string,
  port: number,
  secret: string,
  devices: Device[],
  opts: { idleMs?: number; annotations?: Record<string, string> } = {},
): Link {
  const l = makeLink(name, { devices, annotations: opts.annotations ?? {} });
  if (!l.spec) throw new Error('no spec');
  l.spec.transport = {
    kind: {
      $case: 'stream',
      value: {
        protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
        address: `127.0.0.1:${port}`,
        listenAddress: '',
        secret,
        allowPlaintext: false,
        idleTimeoutMs: opts.idleMs ?? 0,
        disableTls: false,
        tlsPeerName: '',
      },
    },
  };
  return l;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('a hostile stream peer against a running agent', { timeout: 180_000 }, () => {
  let dir = '';
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  let pHealthy = 0;
  let pVictim = 0;
  let pDrv = 0;
  let pTx = 0;
  /** The device table agent A sends for the victim link (replayed when the hostile plays the device side). */
  let table: DevInfo[] = [];
  const secret = randomBytes(24).toString('hex');
  const victimDevices = (): Device[] => [bytePipeDevice('vc0', 'console')];
  const peers: HostilePeer[] = [];

  before(async () => {
    dir = tempDir('stream-hostile');
    srvA = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', path.join(dir, 'rdv-a')]);
    srvB = await startServer('agent', ['--node-name', 'card-b', '--rendezvous-dir', path.join(dir, 'rdv-b')]);
    a = new Agent(srvA.admin);
    b = new Agent(srvB.admin);
    pHealthy = await freePort();
    pVictim = await freePort();
    pDrv = await freePort();
    pTx = await freePort();
    // A healthy link between the two agents: byte-pipe stand-ins streaming verified messages both ways.
    const healthy = streamLink('healthy', pHealthy, secret, [bytePipeDevice('hp0', 'console')], {
      annotations: { 'vop.dev/bytepipe-traffic': 'stream' },
    });
    await Promise.all([a.apply(healthy), b.apply(healthy)]);
    await a.waitPhase('healthy', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('healthy', LinkPhase.LINK_PHASE_READY, 30_000);
    // The victim: only its device side (agent A) for now; the hostile peer is its driver.
    await a.apply(streamLink('victim', pVictim, secret, victimDevices(), { idleMs: IDLE_MS }));
  });
  after(async () => {
    for (const p of peers) p.destroy();
    a?.close();
    b?.close();
    await Promise.all([srvA?.stop('SIGTERM'), srvB?.stop('SIGTERM')]);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const disconnects = async (ag: Agent, link: string): Promise<bigint> =>
    (await ag.get(link)).link?.status?.stream?.disconnects ?? 0n;

  /** Messages the healthy link's driver side received so far (queue 1, device -> driver). */
  const healthyMessages = async (): Promise<bigint> => {
    const s = await b.stats('healthy');
    return s.devices.flatMap((d) => d.queues).reduce((n, q) => n + q.buffers, 0n);
  };

  /**
   * The connection ended with `want` as the reason: in the link's stream status and in its
   * PeerConnected condition; the agent is up, answers gRPC, and the healthy link still moves.
   */
  async function endedWith(ag: Agent, srv: ServerProcess, link: string, n0: bigint, want: RegExp): Promise<string> {
    const reason = await until(`${link}: a connection ended with ${want}`, async () => {
      const s = (await ag.get(link)).link?.status?.stream;
      return s && s.disconnects > n0 && want.test(s.lastError) ? s.lastError : undefined;
    });
    await until(`${link}: the reason in the PeerConnected condition`, async () => {
      const c = (await ag.get(link)).link?.status?.conditions.find((x) => x.type === 'PeerConnected');
      return c?.reason === 'StreamConnectionFailed' && want.test(c.message) ? true : undefined;
    });
    assert.equal(srv.proc.exitCode, null, 'the agent is still running');
    assert.equal(srv.proc.signalCode, null, 'the agent is still running');
    const info = await ag.info();
    assert.ok(info, 'the agent answers gRPC');
    const m0 = await healthyMessages();
    await until('the healthy link carries more messages', async () =>
      (await healthyMessages()) > m0 + 100n ? true : undefined,
    );
    assert.equal((await b.get('healthy')).link?.status?.phase, LinkPhase.LINK_PHASE_READY, 'the healthy link is Ready');
    console.log(`${link}: ended with "${reason}"`);
    return reason;
  }

  /** The hostile peer as the victim's driver side, past the handshake. */
  async function driver(): Promise<HostilePeer> {
    const p = await HostilePeer.dial(pVictim);
    peers.push(p);
    table = await p.handshake(secret, 0);
    assert.equal(table.length, 1, 'one device described');
    return p;
  }

  /** DEV_START of the victim's device (generation 1, VERSION_1 if offered). */
  async function start(p: HostilePeer): Promise<DevInfo> {
    const d = table[0];
    assert.ok(d);
    await p.write(devStart(d.devId, 1, d.features & (1n << 32n)));
    return d;
  }

  it(
    'an oversized frame length ends the connection with its reason; the agent and its other link stay up',
    { timeout: 60_000 },
    async () => {
      const n = await disconnects(a, 'victim');
      const p = await driver();
      const h = Buffer.alloc(8);
      h.writeUInt32LE(64 * MIB, 0);
      h.writeUInt8(MSG.CHAINS, 4);
      await p.write(h);
      await endedWith(a, srvA, 'victim', n, /frame length exceeds the negotiated max_frame/);
      assert.ok(await p.waitEnded(), 'the agent closed the hostile connection');
      assert.match(p.errorReason, /exceeds the negotiated max_frame/, 'the ERROR frame says why');
    },
  );

  it('an unknown message type ends the connection with its reason', { timeout: 60_000 }, async () => {
    const n = await disconnects(a, 'victim');
    const p = await driver();
    await p.write(frame(0x77, Buffer.alloc(8)));
    await endedWith(a, srvA, 'victim', n, /unknown message type/);
    assert.ok(await p.waitEnded(), 'the agent closed the hostile connection');
  });

  it('a chain id that is already outstanding ends the connection with its reason', { timeout: 60_000 }, async () => {
    const n = await disconnects(a, 'victim');
    const p = await driver();
    const d = await start(p);
    await p.write(
      chains(d.devId, 1, 0, [
        [3, pipeMessage(0)],
        [3, pipeMessage(1)],
      ]),
    );
    await endedWith(a, srvA, 'victim', n, /chain id 3 is already outstanding/);
    assert.ok(await p.waitEnded(), 'the agent closed the hostile connection');
  });

  it(
    'a slow-loris handshake (one byte of HELLO every 400 ms) ends at the handshake deadline',
    { timeout: 60_000 },
    async () => {
      const n = await disconnects(a, 'victim');
      const s = net.connect({ port: pVictim, host: '127.0.0.1' });
      s.on('error', () => undefined);
      s.on('data', () => undefined);
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      const hello = Buffer.alloc(60);
      hello.writeUInt32LE(52, 0);
      hello.writeUInt8(MSG.HELLO, 4);
      let i = 0;
      const drip = setInterval(() => {
        if (i < hello.length && !s.destroyed) s.write(hello.subarray(i, ++i));
      }, 400);
      try {
        await endedWith(a, srvA, 'victim', n, /handshake timed out/);
        await closed;
        assert.ok(i < hello.length, `the handshake ended before the slow peer sent its hello (${i} bytes)`);
      } finally {
        clearInterval(drip);
        s.destroy();
      }
    },
  );

  it(
    'a flood of tiny frames: 5 s of one-chain CHAINS frames keeps memory bounded, then tiny PINGs end it as a control flood',
    { timeout: 60_000 },
    async () => {
      const n = await disconnects(a, 'victim');
      const pid = srvA.proc.pid;
      assert.ok(pid);
      const p = await driver();
      const d = await start(p);
      const qs = d.queues[0]?.size ?? 0;
      assert.ok(qs > 0);
      // Ids come back with USED frames (the byte-pipe sink on the device side completes each message).
      const free: number[] = Array.from({ length: qs }, (_, k) => k);
      let wake: (() => void) | null = null;
      let usedIn = 0;
      p.onFrame = (f) => {
        if (f.type === MSG.PING) void p.write(frame(MSG.PONG, f.payload));
        if (f.type !== MSG.USED) return;
        const cnt = f.payload.readUInt16LE(10);
        let off = 12;
        for (let k = 0; k < cnt; k++) {
          free.push(f.payload.readUInt16LE(off));
          off += 8 + f.payload.readUInt32LE(off + 4);
        }
        usedIn += cnt;
        wake?.();
      };
      const before = rssBytes(pid);
      const sampler = rssSampler(pid);
      const t0 = Date.now();
      let seq = 0;
      let sent = 0;
      let frames = 0;
      while (Date.now() - t0 < FLOOD_MS && sent < FLOOD_BYTES && !p.ended) {
        if (free.length === 0) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, 100);
            wake = () => {
              clearTimeout(t);
              r();
            };
          });
          wake = null;
          continue;
        }
        const batch: Buffer[] = [];
        while (free.length) batch.push(chains(d.devId, 1, 0, [[free.shift() ?? 0, pipeMessage(seq++)]]));
        const buf = Buffer.concat(batch);
        frames += batch.length;
        sent += buf.length;
        await p.write(buf);
      }
      const secs = (Date.now() - t0) / 1000;
      const peak = sampler.stop();
      assert.ok(!p.ended, `the agent served the valid flood (${p.errorReason})`);
      assert.ok(usedIn > 1000, `the agent completed the chains (${usedIn})`);
      // Then tiny PINGs, more than 1024 in a second.
      const ping = frame(MSG.PING, Buffer.alloc(8));
      await p.write(Buffer.concat(Array.from({ length: 4096 }, () => ping)));
      await endedWith(a, srvA, 'victim', n, /control flood/);
      await new Promise((r) => setTimeout(r, 1000));
      const afterRss = rssBytes(pid);
      console.log(
        `tiny-frame flood: ${frames} frames (${mb(sent)} MiB) in ${secs.toFixed(1)} s, ${usedIn} used entries back; ` +
          `agent RSS ${mb(before)} MiB before, peak ${mb(peak)} MiB (+${mb(peak - before)}), ` +
          `${mb(afterRss)} MiB 1 s after the link ended; bound +${mb(RSS_BOUND)} MiB ` +
          `(one connection ${mb(CONN_BOUND)} + JS heap ${mb(JS_SLACK)})`,
      );
      assert.ok(peak - before < RSS_BOUND, `RSS grew ${mb(peak - before)} MiB during the flood`);
      assert.ok(afterRss - before < RSS_BOUND, `RSS is ${mb(afterRss - before)} MiB above the start after the flood`);
    },
  );

  it(
    'a peer that never reads while the agent has answers to send: bounded memory, then the link ends (peer silent)',
    { timeout: 60_000 },
    async () => {
      const n = await disconnects(a, 'victim');
      const pid = srvA.proc.pid;
      assert.ok(pid);
      const p = await driver();
      const d = await start(p);
      p.stopReading();
      const before = rssBytes(pid);
      const sampler = rssSampler(pid);
      // Every id once (each completion is a USED entry the agent must send), and PINGs (each a PONG
      // to send) at 200 a second, under the flood limit, for 2 s: nothing of it is read.
      const qs = d.queues[0]?.size ?? 0;
      await p.write(Buffer.concat(Array.from({ length: qs }, (_, k) => chains(d.devId, 1, 0, [[k, pipeMessage(k)]]))));
      const ping = frame(MSG.PING, Buffer.alloc(8));
      for (let k = 0; k < 20; k++) {
        await p.write(Buffer.concat(Array.from({ length: 20 }, () => ping)));
        await new Promise((r) => setTimeout(r, 100));
      }
      // Then silence: the agent ends the connection after the link's idle timeout.
      await endedWith(a, srvA, 'victim', n, new RegExp(`peer silent for ${IDLE_MS} ms`));
      const peak = sampler.stop();
      console.log(
        `peer that never reads: agent RSS ${mb(before)} MiB before, peak ${mb(peak)} MiB (+${mb(peak - before)}); ` +
          `bound +${mb(RSS_BOUND)} MiB`,
      );
      assert.ok(peak - before < RSS_BOUND, `RSS grew ${mb(peak - before)} MiB`);
      p.destroy();
    },
  );

  it(
    'frames the device cannot take yet pile up to the rx bound, then the agent stops reading: memory stays bounded and its silence timer does not blame the peer',
    { timeout: 60_000 },
    async () => {
      const n = await disconnects(a, 'victim');
      const pid = srvA.proc.pid;
      assert.ok(pid);
      const p = await driver();
      const d = await start(p);
      const qs = d.queues[1]?.size ?? 0;
      assert.ok(qs >= 4);
      // Receive buffers of two writable segments on queue 1 (device -> driver; the idle stand-in never
      // fills them): half the queue's ids take every descriptor of the device side's ring, so the next
      // chain waits for ring room (as an honest driver's chains wait when its ring used indirect
      // descriptors) and every frame behind it is queued: up to 4 x max_frame, then the agent stops
      // reading the socket.
      const ring = Array.from({ length: qs / 2 }, (_, k): [number, number[]] => [k, [8, 8]]);
      await p.write(writableChains(d.devId, 1, 1, ring));
      const tiny = writableChains(d.devId, 1, 1, [[qs / 2, [8, 8]]]);
      const chunk = Buffer.concat(Array.from({ length: 32768 }, () => tiny));
      const before = rssBytes(pid);
      const sampler = rssSampler(pid);
      const t0 = Date.now();
      let sent = 0;
      while (sent < FLOOD_BYTES && Date.now() - t0 < 20_000) {
        const w = p.write(chunk);
        const drained = await Promise.race([w.then(() => true), new Promise((r) => setTimeout(() => r(false), 2000))]);
        if (!drained) break; // the agent stopped reading: TCP backpressure
        sent += chunk.length;
      }
      const peak = sampler.stop();
      console.log(
        `rx backpressure: ${mb(sent)} MiB of ${tiny.length}-byte frames taken before the agent stopped reading; ` +
          `agent RSS ${mb(before)} MiB before, peak ${mb(peak)} MiB (+${mb(peak - before)}); bound +${mb(RSS_BOUND)} MiB`,
      );
      assert.ok(sent < FLOOD_BYTES, 'the agent stopped reading before the flood was through');
      assert.ok(peak - before < RSS_BOUND, `RSS grew ${mb(peak - before)} MiB`);
      // The peer keeps sending (its bytes wait in our socket): not silent, whatever the idle timeout.
      await new Promise((r) => setTimeout(r, IDLE_MS + 1500));
      const st = (await a.get('victim')).link?.status?.stream;
      assert.equal(st?.disconnects, n, `the connection is still up (${st?.lastError ?? ''})`);
      assert.equal(st?.state, 'ready');
      // The peer goes away: the agent notices when it next sends.
      p.destroy();
      await endedWith(a, srvA, 'victim', n, /\b(send|recv): [A-Z]|peer closed the connection/);
    },
  );

  it(
    'a peer that never reads while the agent streams answers: the tx side stays bounded and the reuse of an unanswered id ends it',
    { timeout: 60_000 },
    async () => {
      const pid = srvA.proc.pid;
      assert.ok(pid);
      const maps0 = windowMaps(pid);
      await a.apply(
        streamLink('victim-tx', pTx, secret, victimDevices(), {
          annotations: { 'vop.dev/bytepipe-traffic': 'stream' },
        }),
      );
      const n = await disconnects(a, 'victim-tx');
      const p = await HostilePeer.dial(pTx);
      peers.push(p);
      const [d] = await p.handshake(secret, 0);
      assert.ok(d);
      await p.write(devStart(d.devId, 1, d.features & (1n << 32n)));
      p.stopReading();
      // Receive buffers on queue 1 that the device side's source fills with 256-byte messages: each
      // round reuses every id after 50 ms (the agent frees an id when it queues its used entry), so
      // the agent has used entries to send without end while nothing of it is read.
      const qs = d.queues[1]?.size ?? 0;
      const maxChain = d.queues[1]?.maxChain ?? 0;
      assert.ok(qs > 0 && maxChain >= 256);
      const round = writableChains(
        d.devId,
        1,
        1,
        Array.from({ length: qs }, (_, k): [number, number[]] => [k, [256]]),
      );
      await new Promise((r) => setTimeout(r, 1000)); // the new link's window and backends settle
      const before = rssBytes(pid);
      const parts0 = rssParts(pid);
      const sampler = rssSampler(pid);
      const t0 = Date.now();
      let rounds = 0;
      let ended = false;
      while (Date.now() - t0 < 40_000) {
        if (rounds % 10 === 0) {
          const s = (await a.get('victim-tx')).link?.status?.stream;
          if (s && s.disconnects > n) {
            ended = true;
            break;
          }
        }
        void p.write(round);
        rounds++;
        await new Promise((r) => setTimeout(r, 50));
      }
      const peak = sampler.stop();
      const parts1 = rssParts(pid);
      // The link's private window (a memfd, its size fixed when the link was applied) is touched as
      // the source fills the receive buffers: shared memory the peer cannot grow past that size.
      const windowBytes = [...windowMaps(pid)].filter(([r]) => !maps0.has(r)).reduce((t, [, n]) => t + n, 0);
      console.log(
        `never reads, agent streaming: anonymous +${mb((parts1.anon - parts0.anon) * 1024)} MiB (bound ${mb(RSS_BOUND)}), ` +
          `shared +${mb((parts1.shmem - parts0.shmem) * 1024)} MiB (the link's window: ${mb(windowBytes)} MiB)`,
      );
      const st = (await a.get('victim-tx')).link?.status?.stream;
      console.log(
        `never reads, agent streaming: ${rounds} rounds of ${qs} receive buffers in ${((Date.now() - t0) / 1000).toFixed(1)} s, ` +
          `agent sent ${mb(Number(st?.bytesSent ?? 0n))} MiB; RSS ${mb(before)} MiB before, peak ${mb(peak)} MiB (+${mb(peak - before)}); ` +
          `bound +${mb(RSS_BOUND)} MiB; ended: ${st?.lastError ?? ''}`,
      );
      assert.ok(ended, 'the connection ended');
      assert.ok(windowBytes > 0, 'the new link mapped its window');
      assert.ok(
        (parts1.shmem - parts0.shmem) * 1024 <= windowBytes,
        `shared memory grew ${mb((parts1.shmem - parts0.shmem) * 1024)} MiB, more than the link's ${mb(windowBytes)} MiB window`,
      );
      assert.ok(
        (parts1.anon - parts0.anon) * 1024 < RSS_BOUND,
        `anonymous memory grew ${mb((parts1.anon - parts0.anon) * 1024)} MiB`,
      );
      assert.ok(peak - before < RSS_BOUND + windowBytes, `RSS grew ${mb(peak - before)} MiB`);
      await endedWith(a, srvA, 'victim-tx', n, /already outstanding|control backlog full/);
      p.destroy();
      await a.delete('victim-tx');
    },
  );

  it('the victim link comes back Ready with its real driver', { timeout: 60_000 }, async () => {
    await b.apply(streamLink('victim', pVictim, secret, victimDevices(), { idleMs: IDLE_MS }));
    await a.waitPhase('victim', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('victim', LinkPhase.LINK_PHASE_READY, 30_000);
    await Promise.all([a.delete('victim'), b.delete('victim')]);
  });

  it(
    'as the device side of a driver-side agent: a used id that is not outstanding ends the connection; the real device brings the link back',
    { timeout: 60_000 },
    async () => {
      assert.equal(table.length, 1, 'the device table was recorded from agent A');
      const server = net.createServer();
      const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
      await new Promise<void>((r) => server.listen(pDrv, '127.0.0.1', r));
      try {
        const link = streamLink('victim-drv', pDrv, secret, victimDevices());
        await b.apply(link);
        const p = HostilePeer.of(await accepted);
        peers.push(p);
        // One connection is enough: the driver's redials are refused until the real device listens.
        server.close();
        const n = await disconnects(b, 'victim-drv');
        await p.handshake(secret, 1, table);
        // The driver starts its device (DEV_START) and posts receive buffers on queue 1; queue 0 has none.
        let gen = 0;
        while (gen === 0) {
          const f = await p.next();
          if (f.type === MSG.DEV_START) gen = f.payload.readUInt32LE(4);
        }
        const d = table[0];
        assert.ok(d);
        await p.write(used(d.devId, gen, 0, [[0, 0]]));
        await endedWith(b, srvB, 'victim-drv', n, /used id 0 is not outstanding/);
        assert.ok(await p.waitEnded(), 'the agent closed the hostile connection');
        // The real device side takes the address over: the driver redials and the link is Ready again.
        await a.apply(link);
        await a.waitPhase('victim-drv', LinkPhase.LINK_PHASE_READY, 30_000);
        await b.waitPhase('victim-drv', LinkPhase.LINK_PHASE_READY, 30_000);
        await Promise.all([a.delete('victim-drv'), b.delete('victim-drv')]);
      } finally {
        if (server.listening) server.close();
      }
    },
  );
});
