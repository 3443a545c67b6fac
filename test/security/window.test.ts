/**
 * A hostile window creator against a real vop-agent: the hostile peer program writes a
 * window whose layout is one byte too large somewhere, and the agent is told to attach
 * it (a link whose device side "created" the window). The agent refuses with the field
 * named in the link's conditions, never maps past what it was given, and stays up.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, type Link } from '../../lib/proto/types';
import { devIdOf } from '../../agent/src/backends/device-backend';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { attacherEpoch, buildHostilePeer, startHostilePeer, type HostilePeer } from './hostile-peer';

const AGENT = 'card-b';
const EVIL = 'evil-host';

function cond(link: Link | undefined, type: string): { reason: string; message: string } | undefined {
  return link?.status?.conditions.find((c) => c.type === type);
}

/** Polls GetLink until pred holds (or fails with the last status). */
async function waitLink(agent: Agent, name: string, pred: (l: Link) => boolean, timeoutMs = 20_000): Promise<Link> {
  const t0 = Date.now();
  let last: Link | undefined;
  while (Date.now() - t0 < timeoutMs) {
    last = (await agent.get(name)).link;
    if (last && pred(last)) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `link ${name}: condition not reached; last conditions ${JSON.stringify(last?.status?.conditions.map((c) => [c.type, c.reason, c.message]))}`,
  );
}

describe('a hostile window creator', () => {
  let srv: ServerProcess;
  let agent: Agent;
  let rdv: string;
  const peers: HostilePeer[] = [];

  before(async () => {
    buildHostilePeer();
    rdv = tempDir('rdv-hostile');
    srv = await startServer('agent', ['--node-name', AGENT, '--rendezvous-dir', rdv]);
    agent = new Agent(srv.admin);
  });
  after(async () => {
    for (const p of peers) await p.stop();
    agent.close();
    await srv.stop('SIGTERM');
    rmSync(rdv, { recursive: true, force: true });
  });

  /** Starts the hostile creator of link `name` with `field` one byte too large; applies the link. */
  async function attack(name: string, field: string): Promise<{ peer: HostilePeer; win: string }> {
    const win = path.join(rdv, `${name}.win`);
    const peer = startHostilePeer(['tamper', win, field, String(devIdOf('con0')), '64']);
    peers.push(peer);
    await peer.waitLine('ready');
    await agent.apply(
      makeLink(name, { device: EVIL, driver: AGENT, devices: [bytePipeDevice('con0', 'console', 64)] }),
    );
    return { peer, win };
  }

  async function stillUp(): Promise<void> {
    assert.equal(srv.proc.exitCode, null, 'the agent is still running');
    assert.equal(srv.proc.signalCode, null, 'the agent was not killed by a signal');
    const info = await agent.info();
    assert.equal(info.identity?.nodeName, AGENT, 'GetInfo answers');
  }

  async function cleanup(name: string, peer: HostilePeer): Promise<void> {
    await agent.delete(name);
    await peer.stop();
  }

  it('refuses a window whose data area ends one byte past the mapping, naming the field', async () => {
    const { peer, win } = await attack('evil-data', 'data_size');
    const link = await waitLink(agent, 'evil-data', (l) => cond(l, 'PeerConnected')?.reason === 'WindowRejected');
    const pc = cond(link, 'PeerConnected');
    assert.match(pc?.message ?? '', /data_off\/data_size: data area past the end of the window/);
    assert.match(pc?.message ?? '', /EPROTO/);
    assert.notEqual(link.status?.phase, LinkPhase.LINK_PHASE_READY);
    // Refused before joining: the agent never wrote its side block into that window.
    assert.equal(attacherEpoch(win), 0);
    await stillUp();
    await cleanup('evil-data', peer);
  });

  it('refuses a window whose ring area runs one byte into the data area', async () => {
    const { peer, win } = await attack('evil-ring', 'ring_size');
    const link = await waitLink(agent, 'evil-ring', (l) => cond(l, 'PeerConnected')?.reason === 'WindowRejected');
    assert.match(cond(link, 'PeerConnected')?.message ?? '', /data_off: data area overlaps the ring area/);
    assert.equal(attacherEpoch(win), 0);
    await stillUp();
    await cleanup('evil-ring', peer);
  });

  it('refuses a device whose buffer pool ends one byte past the data area', async () => {
    const { peer } = await attack('evil-pool', 'pool_size');
    // The window itself is sound, so the agent joins it, but never serves that device.
    const link = await waitLink(agent, 'evil-pool', (l) => /refused/.test(cond(l, 'DevicesReady')?.message ?? ''));
    const dr = cond(link, 'DevicesReady');
    assert.equal(dr?.reason, 'DevicesNotReady');
    assert.match(dr?.message ?? '', /con0 \(refused: .*queue pool_off\/pool_size: pool outside the data area/);
    assert.notEqual(link.status?.phase, LinkPhase.LINK_PHASE_READY);
    await stillUp();
    await cleanup('evil-pool', peer);
  });

  it('refuses a device whose config space is one byte larger than 96 bytes', async () => {
    const { peer } = await attack('evil-config', 'config_len');
    const link = await waitLink(agent, 'evil-config', (l) => /refused/.test(cond(l, 'DevicesReady')?.message ?? ''));
    assert.match(cond(link, 'DevicesReady')?.message ?? '', /config_len: larger than the 96-byte config space/);
    await stillUp();
    await cleanup('evil-config', peer);
  });
});
