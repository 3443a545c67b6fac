/**
 * Two real agent processes on one machine over the real native layer: an shm link
 * with a console and a blk device (byte-pipe stand-ins until the device backends are
 * exposed through the façade) applied on both sides, data moving with verification,
 * stats, watch events, delete freeing the window; kill -9 and restart of either side
 * during traffic; a blocked JavaScript event loop that does not stop the data plane.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status } from '@grpc/grpc-js';

import { LinkPhase, WatchEventType, type Link } from '../../lib/proto/types';
import { call, expectGrpcError } from '../helpers/grpc';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, bytePipeDevice, makeLink, testDiskDir } from './helpers';

const STREAM = { 'vop.dev/bytepipe-traffic': 'stream' };
/** How long the test hook blocks agent A's event loop. */
const BLOCK_MS = 5000;

function traffic(name: string): Link {
  return makeLink(name, {
    devices: [bytePipeDevice('con0', 'console'), bytePipeDevice('disk0', 'blk')],
    annotations: STREAM,
  });
}

/** Sum of the verified messages a side has received on all devices, and verification failures. */
async function received(agent: Agent, link: string): Promise<{ rx: bigint; bad: bigint; buffers: bigint }> {
  const s = await agent.stats(link);
  let rx = 0n;
  let bad = 0n;
  let buffers = 0n;
  for (const d of s.devices) {
    rx += d.counters.rx_msgs ?? 0n;
    bad += d.counters.bad_msgs ?? 0n;
    for (const q of d.queues) buffers += q.buffers;
  }
  return { rx, bad, buffers };
}

/**
 * Messages received over `ms`, summed over 4 steps: on a heavily loaded machine a
 * starved worker can make the peer declare it gone once (the link resets, counters
 * restart), which must not hide that data moves.
 */
async function flowing(agent: Agent, link: string, ms = 1000): Promise<bigint> {
  let moved = 0n;
  let prev = (await received(agent, link)).rx;
  for (let i = 0; i < 4; i++) {
    await new Promise((r) => setTimeout(r, ms / 4));
    const cur = await received(agent, link);
    assert.equal(cur.bad, 0n, 'no verification failure');
    if (cur.rx > prev) moved += cur.rx - prev;
    prev = cur.rx;
  }
  return moved;
}

describe('two agents on one machine', () => {
  const rdv = tempDir('rdv2');
  const stateA = tempDir('state-a');
  const stateB = tempDir('state-b');
  const env = { VOP_AGENT_TEST_HOOKS: '1', VOP_AGENT_TEST_BLOCK_MS: String(BLOCK_MS) };
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  const startA = async (): Promise<void> => {
    srvA = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, '--disk-dir', testDiskDir()], {
      stateDir: stateA,
      env,
    });
    a = new Agent(srvA.admin);
  };
  const startB = async (): Promise<void> => {
    srvB = await startServer('agent', ['--node-name', 'card-b', '--rendezvous-dir', rdv, '--disk-dir', testDiskDir()], {
      stateDir: stateB,
      env,
    });
    b = new Agent(srvB.admin);
  };
  before(async () => {
    await Promise.all([startA(), startB()]);
  });
  after(async () => {
    a.close();
    b.close();
    await Promise.all([srvA.stop('SIGTERM'), srvB.stop('SIGTERM')]);
  });

  it('brings an shm link up on both sides, moves verified data, reports stats and events, and frees the window on delete', async () => {
    assert.ok(statSync(rdv).isDirectory());
    const w = a.watch();
    try {
      await w.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED);
      // The driver side first: it waits for the window the device side creates.
      const rb = await b.apply(traffic('duo'));
      await new Promise((r) => setTimeout(r, 100));
      const peer = (await b.get('duo')).link?.status?.conditions.find((c) => c.type === 'PeerConnected');
      assert.equal(peer?.reason, 'WaitingForPeer');
      await a.apply(traffic('duo'));
      await a.waitPhase('duo', LinkPhase.LINK_PHASE_READY, 5000);
      await b.waitPhase('duo', LinkPhase.LINK_PHASE_READY, 5000);
      assert.equal(rb.changed, true);
      await w.waitFor(
        (m) =>
          m.type === WatchEventType.WATCH_EVENT_TYPE_MODIFIED && m.link?.status?.phase === LinkPhase.LINK_PHASE_READY,
      );
      const win = path.join(rdv, 'duo.win');
      assert.ok(existsSync(win));
      assert.equal(statSync(win).mode & 0o777, 0o600);

      assert.ok((await flowing(a, 'duo')) > 0n, 'device side receives');
      assert.ok((await flowing(b, 'duo')) > 0n, 'driver side receives');
      const stats = await b.stats('duo');
      assert.deepEqual(
        stats.devices.map((d) => d.device),
        ['con0', 'disk0'],
      );
      const q = stats.devices[0]?.queues ?? [];
      assert.deepEqual(
        q.map((x) => `${x.name}/${x.direction}`),
        ['transmitq/transmit', 'receiveq/receive'],
      );
      assert.ok((q[0]?.bytes ?? 0n) > 0n && (q[1]?.buffers ?? 0n) > 0n);
      assert.ok(stats.sampleTime instanceof Date);

      const metrics = await (await fetch(`http://${srvB.metrics}/metrics`)).text();
      const m = /vop_queue_buffers_total\{link="duo",device="con0",queue="receiveq",direction="rx"\} (\d+)/.exec(
        metrics,
      );
      assert.ok(m && Number(m[1]) > 0, 'per-queue counters at scrape time');

      // Hot add on both sides: the running devices are not reset. (A peer declared gone
      // because an overloaded machine starved its worker would reset the link: that shows
      // as a PeerGone/PeerRestarted event and is not what this checks.)
      const resetsBefore = (await b.get('duo')).link?.status?.resetCount ?? 0;
      const wb = b.watch();
      await wb.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED);
      const eventsBefore = w.messages.length;
      const before = await received(b, 'duo');
      const grown = makeLink('duo', {
        devices: [bytePipeDevice('con0', 'console'), bytePipeDevice('disk0', 'blk'), bytePipeDevice('con1', 'console')],
        annotations: STREAM,
      });
      await a.apply(grown);
      await b.apply(grown);
      await a.waitPhase('duo', LinkPhase.LINK_PHASE_READY, 5000);
      await b.waitPhase('duo', LinkPhase.LINK_PHASE_READY, 5000);
      const afterAdd = await received(b, 'duo');
      const peerTrouble = [...w.messages.slice(eventsBefore), ...wb.messages].some(
        (m) => m.event?.reason === 'PeerGone' || m.event?.reason === 'PeerRestarted',
      );
      wb.stream.cancel();
      if (!peerTrouble) {
        assert.ok(afterAdd.rx > before.rx, 'counters kept counting: no reset of the other devices');
        assert.equal((await b.get('duo')).link?.status?.resetCount, resetsBefore);
      }
      assert.ok(
        w.messages.slice(eventsBefore).some((m) => m.event?.reason === 'DeviceAdded'),
        'DeviceAdded event',
      );
      await a.delete('duo');
      await b.delete('duo');
      assert.ok(!existsSync(win), 'window file removed');
      await w.waitFor((x) => x.type === WatchEventType.WATCH_EVENT_TYPE_DELETED && x.link?.meta?.name === 'duo');
    } finally {
      w.stream.cancel();
    }
  });

  it("uses a link's own shm directory, created owner-only", async () => {
    // Inside the agents' rendezvous directory: a link's shm directory may not lie elsewhere.
    const dir = path.join(rdv, 'links', 'x');
    const link = makeLink('own', { dir, devices: [bytePipeDevice('con0')] });
    await Promise.all([a.apply(link), b.apply(link)]);
    await a.waitPhase('own', LinkPhase.LINK_PHASE_READY, 5000);
    await b.waitPhase('own', LinkPhase.LINK_PHASE_READY, 5000);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(path.join(dir, 'own.win')).mode & 0o777, 0o600);
    await Promise.all([a.delete('own'), b.delete('own')]);
    assert.ok(!existsSync(path.join(dir, 'own.win')));
  });

  it('keeps data moving while an agent blocks its JavaScript event loop for 5 s', async () => {
    await Promise.all([a.apply(traffic('busy')), b.apply(traffic('busy'))]);
    await a.waitPhase('busy', LinkPhase.LINK_PHASE_READY, 5000);
    await b.waitPhase('busy', LinkPhase.LINK_PHASE_READY, 5000);
    const tBlock = Date.now();
    srvA.proc.kill('SIGUSR2');
    await new Promise((r) => setTimeout(r, 200));
    // Agent A's event loop is blocked: its gRPC server cannot answer, yet B keeps
    // receiving what A's native worker produces and A's worker keeps consuming.
    const probe = await expectGrpcError(call(a.client, a.client.getInfo, {}, new Metadata(), 300));
    assert.equal(probe.code, status.DEADLINE_EXCEEDED, 'agent A is really blocked');
    const moved = await flowing(b, 'busy', 1000);
    assert.ok(Date.now() - tBlock < BLOCK_MS, 'measured inside the blocked window');
    assert.ok(moved > 0n, `data kept flowing (${moved} messages in 1 s)`);
    await a.waitPhase('busy', LinkPhase.LINK_PHASE_READY, 10_000);
    assert.equal(
      (await b.get('busy')).link?.status?.phase,
      LinkPhase.LINK_PHASE_READY,
      'a blocked loop is not a dead peer',
    );
    await Promise.all([a.delete('busy'), b.delete('busy')]);
  });

  for (const victim of ['driver', 'device'] as const) {
    it(`recovers by itself when the ${victim}-side agent is killed with SIGKILL during traffic and restarted`, async () => {
      const name = `kill-${victim}`;
      await Promise.all([a.apply(traffic(name)), b.apply(traffic(name))]);
      await a.waitPhase(name, LinkPhase.LINK_PHASE_READY, 5000);
      await b.waitPhase(name, LinkPhase.LINK_PHASE_READY, 5000);
      assert.ok((await flowing(b, name)) > 0n);
      const survivor = victim === 'driver' ? () => a : () => b;
      if (victim === 'driver') {
        b.close();
        await srvB.stop('SIGKILL');
      } else {
        a.close();
        await srvA.stop('SIGKILL');
      }
      // The survivor notices (heartbeat stalls) and says so.
      const t0 = Date.now();
      for (;;) {
        const l = (await survivor().get(name)).link;
        const pc = l?.status?.conditions.find((c) => c.type === 'PeerConnected');
        if (pc?.reason === 'PeerGone' || pc?.reason === 'WaitingForPeer') break;
        if (Date.now() - t0 > 5000)
          throw new Error(`survivor did not notice: phase ${l?.status?.phase} ${pc?.reason} ${pc?.message}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const t1 = Date.now();
      if (victim === 'driver') await startB();
      else await startA();
      await a.waitPhase(name, LinkPhase.LINK_PHASE_READY, 5000);
      await b.waitPhase(name, LinkPhase.LINK_PHASE_READY, 5000);
      const recoveryMs = Date.now() - t1;
      if (victim === 'device') {
        assert.ok(
          srvA.logs.some((l) => l.msg === 're-attached to the existing window' && l.link === name),
          'the restarted creator took its window side back',
        );
      }
      assert.ok(recoveryMs < 5000, `back to Ready ${recoveryMs} ms after the restart`);
      assert.ok((await flowing(a, name)) > 0n, 'data flows again (device side)');
      assert.ok((await flowing(b, name)) > 0n, 'data flows again (driver side)');
      assert.ok(((await survivor().get(name)).link?.status?.resetCount ?? 0) >= 1);
      await Promise.all([a.delete(name), b.delete(name)]);
    });
  }
});
