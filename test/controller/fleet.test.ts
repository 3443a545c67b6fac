/**
 * The fleet control plane with real processes: one vop-controller on the embedded store
 * and three vop-agents (a host and two cards in rack r07) dialling it over the Sync
 * stream. Nothing is mocked.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';

import type { WatchAgentsResponse } from '../../lib/proto/controller';

import { AgentPhase, ConditionStatus, Link, LinkPhase } from '../../lib/proto/types';
import { call } from '../helpers/grpc';
import { tempDir } from '../helpers/servers';
import {
  agentLinks,
  condition,
  dataPlaneMissing,
  getAgent,
  listLinks,
  policyFromJson,
  startFleet,
  vopctl,
  waitFor,
  type Fleet,
} from './fleet-helpers';

const CARDS = ['card-1', 'card-2'];

/** Verified messages the agent's side of the link received over `ms` (the byte-pipe checks every one). */
async function flowing(fleet: Fleet, agent: string, link: string, ms = 300): Promise<bigint> {
  const c = fleet.agentClient(agent);
  const rx = async (): Promise<{ rx: bigint; bad: bigint }> => {
    const s = await call(c, c.getStats, { link }, new Metadata());
    let r = 0n;
    let bad = 0n;
    for (const d of s.devices) {
      r += d.counters.rx_msgs ?? 0n;
      bad += d.counters.bad_msgs ?? 0n;
    }
    return { rx: r, bad };
  };
  const a = await rx();
  await new Promise((r) => setTimeout(r, ms));
  const b = await rx();
  assert.equal(b.bad, 0n, 'no verification failure');
  return b.rx - a.rx;
}

/**
 * The controller never re-applies or resets a link it did not change: the agent-side
 * resourceVersion stays. The data plane's own peer-liveness check may restart a link
 * under CPU starvation (PeerGone/PeerRestarted); that is reported, anything else fails.
 */
function assertUntouched(fleet: Fleet, agent: string, b: Link, a: Link, t: { diagnostic(s: string): void }): void {
  const name = a.meta?.name ?? '';
  assert.equal(a.meta?.resourceVersion, b.meta?.resourceVersion, `${agent}/${name} was not re-applied`);
  assert.equal(a.meta?.generation, b.meta?.generation);
  if (a.status?.epoch === b.status?.epoch && a.status?.resetCount === b.status?.resetCount) return;
  const logs = [...fleet.agents].flatMap(([n, p]) =>
    p.logs.filter((r) => r.link === name && r.level !== 'debug').map((r) => [n, r.time, r.msg, r.reason ?? '']),
  );
  const resets = (fleet.agents.get(agent)?.logs ?? [])
    .filter((r) => r.link === name && r.msg === 'Ready -> Resetting')
    .map((r) => String(r.reason));
  assert.ok(
    resets.length > 0 && resets.every((r) => r === 'PeerGone' || r === 'PeerRestarted'),
    `${agent}/${name} was not restarted: ${JSON.stringify(logs)}`,
  );
  t.diagnostic(`${agent}/${name}: the data plane restarted it itself (${resets.join(', ')}), not the controller`);
}

function consolePolicy(name: string, devices: unknown[]): unknown {
  return {
    meta: { name },
    spec: {
      cardSelector: { matchLabels: { 'vop.dev/rack': 'r07' } },
      hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
      template: { cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices },
    },
  };
}

const CONSOLE = { name: 'console', console: { deviceBackend: { pty: {} }, driverFrontend: { pty: {} } } };

async function applyPolicy(fleet: Fleet, obj: unknown): Promise<void> {
  await call(fleet.ctl, fleet.ctl.applyPolicy, { policy: policyFromJson(obj), dryRun: false }, new Metadata());
}

/** Links of the policy exist on the controller and both agents have applied them (Synced=True). */
async function waitSynced(fleet: Fleet, policy: string, count: number, generation?: bigint): Promise<Link[]> {
  return waitFor(`${count} links of ${policy} Synced`, async () => {
    const links = await listLinks(fleet, `vop.dev/policy=${policy}`);
    if (links.length !== count) return undefined;
    const ok = links.every(
      (l) =>
        condition(l, 'Synced') === ConditionStatus.CONDITION_STATUS_TRUE &&
        (generation === undefined || l.meta?.generation === generation),
    );
    return ok ? links : undefined;
  });
}

/** Every link of the policy is Ready on the controller (both agents' data planes run it). */
async function waitReady(fleet: Fleet, policy: string, count: number): Promise<void> {
  assertDataPlane(fleet);
  await waitFor(
    `${count} links of ${policy} Ready`,
    async () => {
      const links = await listLinks(fleet, `vop.dev/policy=${policy}`);
      return (
        links.length === count &&
        links.every(
          (l) =>
            condition(l, 'Ready') === ConditionStatus.CONDITION_STATUS_TRUE &&
            l.status?.phase === LinkPhase.LINK_PHASE_READY,
        )
      );
    },
    60_000,
  );
}

/** The native addon is part of the build: an agent without it fails the test at once, saying so. */
function assertDataPlane(fleet: Fleet): void {
  const missing = [...fleet.agents].filter(([, a]) => dataPlaneMissing(a)).map(([n]) => n);
  assert.deepEqual(missing, [], 'agents without the native data plane (run npm run build)');
}

/** The agents' root for blk backing files (--disk-dir). */
const BLK_DIR = tempDir('blk');

describe('vop-controller with three agents', () => {
  let fleet: Fleet;
  before(async () => {
    fleet = await startFleet({ leaseSeconds: 2, agentArgs: ['--disk-dir', BLK_DIR] });
    await fleet.startAgent('host-1', 'host');
    for (const c of CARDS) await fleet.startAgent(c, 'card', 'host-1');
    await waitFor('three agents Ready', async () => {
      const phases = await Promise.all(
        ['host-1', ...CARDS].map(async (n) => (await getAgent(fleet, n).catch(() => undefined))?.status?.phase),
      );
      return phases.every((p) => p === AgentPhase.AGENT_PHASE_READY);
    });
  });
  after(async () => {
    await fleet.stop();
  });

  it('stamps out a link per host/card pair from a policy and both agents run it', async () => {
    await applyPolicy(fleet, consolePolicy('con', [CONSOLE]));
    const links = await waitSynced(fleet, 'con', 2);
    assert.deepEqual(links.map((l) => l.meta?.name).sort(), ['con-card-1', 'con-card-2']);
    for (const l of links) {
      assert.equal(l.meta?.managedBy, 'policy/con');
      const card = l.spec?.endpoints.find((e) => e.agent !== 'host-1')?.agent ?? '';
      assert.ok(CARDS.includes(card));
      assert.equal(l.status?.observedGeneration, l.meta?.generation);
    }
    const onHost = (await agentLinks(fleet, 'host-1')).map((l) => l.meta?.name).sort();
    assert.deepEqual(onHost, ['con-card-1', 'con-card-2']);
    for (const c of CARDS) {
      const onCard = await agentLinks(fleet, c);
      assert.deepEqual(
        onCard.map((l) => l.meta?.name),
        [`con-${c}`],
      );
      assert.equal(onCard[0]?.meta?.managedBy, 'policy/con');
    }
    await waitReady(fleet, 'con', 2);
    const r = await vopctl(fleet.controllerAdmin, ['get', 'links', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const printed = JSON.parse(r.stdout) as { meta: { name: string }; status: { conditions: { type: string }[] } }[];
    assert.deepEqual(printed.map((l) => l.meta.name).sort(), ['con-card-1', 'con-card-2']);
    assert.ok(
      printed.every(
        (l) =>
          l.status.conditions.some((c) => c.type === 'Ready') && l.status.conditions.some((c) => c.type === 'Synced'),
      ),
    );
    const d = await vopctl(fleet.controllerAdmin, ['describe', 'link', 'con-card-1']);
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /Conditions:\n\s+TYPE\s+STATUS/);
    assert.match(d.stdout, /Stats:\n\s+host-1 \(device\):\n\s+device console \(console\)/);
    assert.match(d.stdout, /card-1 \(driver\):\n\s+device console/);
    // Console attach through the controller to the device-side agent (stdin at EOF detaches).
    const con = await vopctl(fleet.controllerAdmin, ['console', 'con-card-1'], '');
    assert.equal(con.code, 0, con.stderr);
    assert.match(con.stderr, /attached to con-card-1\/console on host-1 \(read-only\)/);
    const noLink = await vopctl(fleet.controllerAdmin, ['console', 'nope'], '');
    assert.equal(noLink.code, 4, noLink.stderr);
    const agents = await vopctl(fleet.controllerAdmin, ['get', 'agents', '-l', 'vop.dev/role=card', '-o', 'name']);
    assert.equal(agents.stdout, 'agent/card-1\nagent/card-2\n');
  });

  it('rolls out a template change without touching links the change does not affect', async (t) => {
    const blkFile = path.join(BLK_DIR, 'disk.img');
    writeFileSync(blkFile, Buffer.alloc(1 << 20));
    await applyPolicy(fleet, consolePolicy('disk', [{ name: 'vda', blk: { backing: { path: blkFile } } }]));
    await waitSynced(fleet, 'disk', 2);
    const before = new Map((await agentLinks(fleet, 'host-1')).map((l) => [l.meta?.name ?? '', l]));
    // Change the disk template: add a console next to the disk.
    await applyPolicy(
      fleet,
      consolePolicy('disk', [
        { name: 'vda', blk: { backing: { path: blkFile } } },
        { ...CONSOLE, name: 'log' },
      ]),
    );
    const changed = await waitSynced(fleet, 'disk', 2, 2n);
    assert.ok(changed.every((l) => l.spec?.devices.length === 2));
    const after = new Map((await agentLinks(fleet, 'host-1')).map((l) => [l.meta?.name ?? '', l]));
    for (const c of CARDS) {
      const name = `con-${c}`;
      const b = before.get(name);
      const a = after.get(name);
      assert.ok(b && a, name);
      assertUntouched(fleet, 'host-1', b, a, t);
      const d = after.get(`disk-${c}`);
      assert.equal(d?.spec?.devices.length, 2, 'the agent runs the new template');
    }
  });

  it('removes the links of a deleted policy from the controller and the agents', async () => {
    await call(fleet.ctl, fleet.ctl.deletePolicy, { name: 'disk', resourceVersion: '' }, new Metadata());
    await waitFor(
      'disk links gone from the controller',
      async () => (await listLinks(fleet, 'vop.dev/policy=disk')).length === 0,
    );
    await waitFor('disk links gone from the agents', async () => {
      for (const a of ['host-1', ...CARDS])
        if ((await agentLinks(fleet, a)).some((l) => l.meta?.name?.startsWith('disk-'))) return false;
      return true;
    });
    assert.equal((await listLinks(fleet, 'vop.dev/policy=con')).length, 2, 'other policies keep their links');
  });

  it('keeps links and their data flowing when the controller is killed -9, and a restart resets none', async (t) => {
    // A direct (non-policy) link whose byte-pipe devices carry verified traffic.
    const traffic = Link.fromJSON({
      meta: { name: 'traffic', annotations: { 'vop.dev/bytepipe-traffic': 'stream' } },
      spec: {
        endpoints: [
          { agent: 'host-1', role: 'ROLE_DEVICE' },
          { agent: 'card-1', role: 'ROLE_DRIVER' },
        ],
        transport: { shm: {} },
        devices: [{ name: 'con0', console: {} }],
      },
    });
    await call(fleet.ctl, fleet.ctl.applyLink, { link: traffic, dryRun: false }, new Metadata());
    await waitFor(
      'traffic link Synced',
      async () =>
        condition(
          (await listLinks(fleet)).find((l) => l.meta?.name === 'traffic'),
          'Synced',
        ) === ConditionStatus.CONDITION_STATUS_TRUE,
    );
    assertDataPlane(fleet);
    await waitFor(
      'traffic link Ready',
      async () =>
        condition(
          (await listLinks(fleet)).find((l) => l.meta?.name === 'traffic'),
          'Ready',
        ) === ConditionStatus.CONDITION_STATUS_TRUE,
    );

    const before = new Map<string, Link>();
    for (const a of ['host-1', ...CARDS])
      for (const l of await agentLinks(fleet, a)) before.set(`${a}/${l.meta?.name ?? ''}`, l);
    assert.equal(before.size, 6);
    assert.ok((await flowing(fleet, 'card-1', 'traffic')) > 0n, 'data flows before the kill');
    await fleet.controller.stop('SIGKILL');
    assert.ok(
      (await flowing(fleet, 'card-1', 'traffic', 1000)) > 0n,
      'data keeps flowing while the controller is down',
    );
    for (const a of ['host-1', ...CARDS]) {
      for (const l of await agentLinks(fleet, a)) {
        const b = before.get(`${a}/${l.meta?.name ?? ''}`);
        assert.ok(b, 'still there while the controller is down');
        assert.equal(l.status?.phase, b.status?.phase);
      }
    }
    await fleet.startController();
    await waitSynced(fleet, 'con', 2);
    await waitFor('agents re-registered', async () => {
      const phases = await Promise.all(
        ['host-1', ...CARDS].map(async (n) => (await getAgent(fleet, n))?.status?.phase),
      );
      return phases.every((p) => p === AgentPhase.AGENT_PHASE_READY);
    });
    await waitFor('status converged: every link Ready', async () =>
      (await listLinks(fleet)).every((l) => condition(l, 'Ready') === ConditionStatus.CONDITION_STATUS_TRUE),
    );
    assert.ok((await flowing(fleet, 'card-1', 'traffic')) > 0n, 'data flows after the restart');
    for (const a of ['host-1', ...CARDS]) {
      for (const l of await agentLinks(fleet, a)) {
        const b = before.get(`${a}/${l.meta?.name ?? ''}`);
        assert.ok(b);
        assertUntouched(fleet, a, b, l, t);
      }
    }
    await call(fleet.ctl, fleet.ctl.deleteLink, { name: 'traffic', resourceVersion: '' }, new Metadata());
    await waitFor(
      'traffic link gone from card-1',
      async () => !(await agentLinks(fleet, 'card-1')).some((l) => l.meta?.name === 'traffic'),
    );
  });

  it('marks a killed agent NotReady with Unknown link conditions, then restores its links and corrects drift', async () => {
    await applyPolicy(fleet, {
      ...(consolePolicy('gone', [CONSOLE]) as object),
      spec: {
        ...(consolePolicy('gone', [CONSOLE]) as { spec: object }).spec,
        cardSelector: { matchLabels: { 'vop.dev/node': 'card-1' } },
      },
    });
    await waitSynced(fleet, 'gone', 1);
    const watch = fleet.ctl.watchAgents({ labelSelector: 'vop.dev/node=card-1', updatesOnly: true });
    const phases: AgentPhase[] = [];
    watch.on('data', (e: WatchAgentsResponse) => {
      if (e.agent?.status) phases.push(e.agent.status.phase);
    });
    watch.on('error', () => undefined);
    await fleet.agents.get('card-1')?.stop('SIGKILL');
    await waitFor(
      'card-1 NotReady',
      async () => (await getAgent(fleet, 'card-1'))?.status?.phase === AgentPhase.AGENT_PHASE_NOT_READY,
      15_000,
    );
    await waitFor('WatchAgents reports NotReady', () => phases.includes(AgentPhase.AGENT_PHASE_NOT_READY));
    watch.cancel();
    // Drift the other way: card-1 still runs gone-card-1, which is no longer desired.
    await call(fleet.ctl, fleet.ctl.deletePolicy, { name: 'gone', resourceVersion: '' }, new Metadata());
    const l = await waitFor(
      'con-card-1 Ready Unknown',
      async () => {
        const links = await listLinks(fleet, 'vop.dev/policy=con');
        const x = links.find((y) => y.meta?.name === 'con-card-1');
        return condition(x, 'Ready') === ConditionStatus.CONDITION_STATUS_UNKNOWN ? x : undefined;
      },
      15_000,
    );
    assert.equal(l.status?.conditions.find((c) => c.type === 'Ready')?.reason, 'AgentLeaseExpired');
    assert.equal(
      condition(
        (await listLinks(fleet, 'vop.dev/policy=con')).find((y) => y.meta?.name === 'con-card-2'),
        'AgentsReady',
      ),
      ConditionStatus.CONDITION_STATUS_TRUE,
    );

    // Drift while card-1 is away: someone force-deletes a managed link on the host.
    const host = fleet.agentClient('host-1');
    await call(host, host.deleteLink, { name: 'con-card-2', resourceVersion: '', force: true }, new Metadata());
    await waitFor('con-card-2 restored on host-1', async () =>
      (await agentLinks(fleet, 'host-1')).some((x) => x.meta?.name === 'con-card-2'),
    );

    await fleet.startAgent('card-1', 'card', 'host-1');
    await waitFor(
      'card-1 Ready again',
      async () => (await getAgent(fleet, 'card-1'))?.status?.phase === AgentPhase.AGENT_PHASE_READY,
    );
    await waitSynced(fleet, 'con', 2);
    assert.deepEqual(
      (await agentLinks(fleet, 'card-1')).map((x) => x.meta?.name),
      ['con-card-1'],
    );
    const metrics = await (await fetch(`http://${fleet.controller.metrics}/metrics`)).text();
    assert.match(metrics, /vop_controller_drift_detected_total\{direction="missing_on_agent"\} [1-9]/);
    assert.match(metrics, /vop_controller_drift_detected_total\{direction="extra_on_agent"\} [1-9]/);
    assert.match(metrics, /vop_controller_lease_expirations_total [1-9]/);
  });

  it('cordons and drains an agent: no new links, then its links are removed', async () => {
    let r = await vopctl(fleet.controllerAdmin, ['cordon', 'card-2']);
    assert.equal(r.code, 0, r.stderr);
    await applyPolicy(fleet, consolePolicy('extra', [CONSOLE]));
    await waitSynced(fleet, 'extra', 1);
    assert.deepEqual(
      (await listLinks(fleet, 'vop.dev/policy=extra')).map((l) => l.meta?.name),
      ['extra-card-1'],
      'the cordoned card gets no new link',
    );
    r = await vopctl(fleet.controllerAdmin, ['drain', 'card-2']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /con-card-2/);
    await waitFor(
      'card-2 drained',
      async () => (await getAgent(fleet, 'card-2'))?.status?.phase === AgentPhase.AGENT_PHASE_DRAINED,
    );
    assert.deepEqual(await agentLinks(fleet, 'card-2'), []);
    r = await vopctl(fleet.controllerAdmin, ['uncordon', 'card-2']);
    assert.equal(r.code, 0, r.stderr);
    await waitSynced(fleet, 'extra', 2);
    await waitSynced(fleet, 'con', 2);
  });

  it('gives a card that registers later the links of every matching policy', async () => {
    await fleet.startAgent('card-3', 'card', 'host-1');
    await waitSynced(fleet, 'con', 3);
    await waitSynced(fleet, 'extra', 3);
    assert.deepEqual((await agentLinks(fleet, 'card-3')).map((l) => l.meta?.name).sort(), [
      'con-card-3',
      'extra-card-3',
    ]);
  });

  it('resumes an agent that restarts from its acknowledged version: no snapshot, nothing re-applied', async () => {
    await waitFor('card-3 acknowledged', async () => (await getAgent(fleet, 'card-3'))?.status?.ackedVersion !== 0n);
    const acked = (await getAgent(fleet, 'card-3'))?.status?.ackedVersion;
    const before = await agentLinks(fleet, 'card-3');
    await fleet.agents.get('card-3')?.stop('SIGTERM');
    const again = await fleet.startAgent('card-3', 'card', 'host-1');
    await waitFor('card-3 registered again', () => again.logs.some((l) => l.msg === 'registered with the controller'));
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(again.logs.find((l) => l.msg === 'registered with the controller')?.ackedVersion, String(acked));
    assert.deepEqual(
      again.logs.filter((l) => l.msg === 'desired links applied'),
      [],
      'nothing to send: the agent was up to date',
    );
    assert.deepEqual(
      (await agentLinks(fleet, 'card-3')).map((l) => [l.meta?.name, l.meta?.resourceVersion]),
      before.map((l) => [l.meta?.name, l.meta?.resourceVersion]),
    );
    const r = await vopctl(fleet.controllerAdmin, ['delete', 'agent', 'card-3']);
    assert.equal(r.code, 5);
    assert.match(r.stderr, /still holds 2 link\(s\); drain it first.*\[AGENT_HAS_LINKS\]/);
  });
});
