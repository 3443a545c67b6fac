/**
 * A peer that keeps the device table changing cannot keep a real vop-agent busy: the
 * hostile peer program creates a sound window, serves the link's device honestly until
 * the link is Ready, then rewrites seq, entry bodies and generation of the table without
 * end. GetInfo and ListLinks keep answering throughout (the JS thread never waits on a
 * peer-driven loop), the link ends up Failed with the reason DeviceTableUnstable, and the
 * agent stays up.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase } from '../../lib/proto/types';
import { devIdOf } from '../../agent/src/backends/device-backend';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { buildHostilePeer, startHostilePeer, type HostilePeer } from './hostile-peer';

const AGENT = 'card-b';
const LINK = 'churned';

describe('a peer that keeps the device table changing', () => {
  let srv: ServerProcess;
  let agent: Agent;
  let rdv: string;
  let peer: HostilePeer | null = null;

  before(async () => {
    buildHostilePeer();
    rdv = tempDir('rdv-churn');
    srv = await startServer('agent', ['--node-name', AGENT, '--rendezvous-dir', rdv]);
    agent = new Agent(srv.admin);
  });
  after(async () => {
    await peer?.stop();
    agent.close();
    await srv.stop('SIGTERM');
    rmSync(rdv, { recursive: true, force: true });
  });

  it('fails only that link with DeviceTableUnstable while GetInfo and ListLinks keep answering', async () => {
    peer = startHostilePeer(['churn', path.join(rdv, `${LINK}.win`), String(devIdOf('con0')), '64']);
    await peer.waitLine('ready');
    await agent.apply(
      makeLink(LINK, { device: 'evil-host', driver: AGENT, devices: [bytePipeDevice('con0', 'console', 64)] }),
    );
    // The peer behaves until the link is up, so the attack hits a running link.
    await agent.waitPhase(LINK, LinkPhase.LINK_PHASE_READY, 30_000);

    peer.send('churn\n');
    await peer.waitLine('churning');
    let calls = 0;
    let phase: LinkPhase | undefined;
    const t0 = Date.now();
    // Every call has a (generous) 10 s deadline of its own; one that misses it fails the test.
    while (Date.now() - t0 < 60_000) {
      const info = await agent.info();
      assert.equal(info.identity?.nodeName, AGENT);
      const list = await agent.list();
      phase = list.links.find((l) => l.meta?.name === LINK)?.status?.phase;
      calls += 2;
      if (phase === LinkPhase.LINK_PHASE_FAILED) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(phase, LinkPhase.LINK_PHASE_FAILED, 'the link failed');
    assert.ok(calls >= 2, 'the agent answered while the table churned');
    assert.equal(peer.lines.includes('churning'), true);
    assert.equal(peer.proc.exitCode, null, 'the peer was still churning when the link failed');

    const got = (await agent.get(LINK)).link;
    const ready = got?.status?.conditions.find((c) => c.type === 'Ready');
    assert.equal(ready?.reason, 'DeviceTableUnstable');
    assert.match(ready?.message ?? '', /kept rewriting the device table/);
    // The agent is up and answers; the failed link stays failed (no restart loop) until reset.
    assert.equal(srv.proc.exitCode, null);
    assert.equal((await agent.info()).identity?.nodeName, AGENT);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await agent.get(LINK)).link?.status?.phase, LinkPhase.LINK_PHASE_FAILED);
    await agent.delete(LINK);
    await peer.stop();
    peer = null;
  });
});
