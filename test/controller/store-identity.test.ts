/**
 * The store identity rule end to end, with real processes: a controller and two agents (a host
 * and a card) running live console links. The controller's store is lost (the SQLite file
 * deleted, the etcd prefix wiped) or restored from an older backup (a copy of the SQLite file, an
 * `etcdctl snapshot save` restored with `etcdctl snapshot restore`), and the controller restarts
 * on it. No agent deletes a link (the data plane never restarts one); the conflict shows in the
 * agent's StoreIdentity condition (GetInfo) and in the controller's agent status; `vopctl adopt`
 * writes the links the agents run back into the store; and a policy change afterwards (a template
 * change, a deletion) applies normally.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';

import { prefixEnd } from '../../controller/src/store/etcd-client';
import { ETCD_DEFAULTS } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import { SQLITE_FILE } from '../../controller/src/store/sqlite-store';
import { AgentPhase, ConditionStatus, LinkPhase, type Condition, type Link } from '../../lib/proto/types';
import { startEtcd, type EtcdCluster } from '../helpers/etcd';
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

const AGENTS = ['host-1', 'card-1'];
const CONSOLE = { name: 'console', console: {} };

function policy(labels: Record<string, string> = {}): unknown {
  return {
    meta: { name: 'con' },
    spec: {
      cardSelector: { matchLabels: { 'vop.dev/rack': 'r07' } },
      hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
      template: { labels, cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices: [CONSOLE] },
    },
  };
}

const EXTRA = `kind: Link
meta: {name: extra, labels: {team: a}}
spec:
  endpoints: [{agent: host-1, role: ROLE_DEVICE}, {agent: card-1, role: ROLE_DRIVER}]
  transport: {shm: {}}
  devices: [{name: console, console: {}}]
`;

async function applyPolicy(fleet: Fleet, obj: unknown): Promise<void> {
  await call(fleet.ctl, fleet.ctl.applyPolicy, { policy: policyFromJson(obj), dryRun: false }, new Metadata());
}

async function agentConditions(fleet: Fleet, agent: string): Promise<Condition[]> {
  const c = fleet.agentClient(agent);
  return (await call(c, c.getInfo, {}, new Metadata())).conditions;
}

/** Every agent runs `names` Ready (its own view, the data plane's). */
async function waitAgentsRun(fleet: Fleet, names: string[]): Promise<Map<string, Link>> {
  return waitFor(
    `agents run ${names.join(', ')} Ready`,
    async () => {
      const all = new Map<string, Link>();
      for (const a of AGENTS) {
        const links = await agentLinks(fleet, a);
        const got = links.map((l) => l.meta?.name ?? '').sort();
        if (JSON.stringify(got) !== JSON.stringify([...names].sort())) return undefined;
        if (!links.every((l) => l.status?.phase === LinkPhase.LINK_PHASE_READY)) return undefined;
        for (const l of links) all.set(`${a}/${l.meta?.name ?? ''}`, l);
      }
      return all;
    },
    60_000,
  );
}

/**
 * No link the agents ran before was deleted or restarted; before adoption not even re-applied
 * (after it, the agent takes the adopted object's metadata: a new local resourceVersion, the
 * same spec, the data plane untouched).
 */
async function assertKept(fleet: Fleet, before: Map<string, Link>, adopted = false): Promise<void> {
  for (const [key, b] of before) {
    const [agent, name] = key.split('/') as [string, string];
    const a = (await agentLinks(fleet, agent)).find((l) => l.meta?.name === name);
    assert.ok(a, `${key} still runs`);
    assert.equal(a.status?.phase, LinkPhase.LINK_PHASE_READY, `${key} still Ready`);
    if (!adopted) assert.equal(a.meta?.resourceVersion, b.meta?.resourceVersion, `${key} was not re-applied`);
    assert.deepEqual(a.spec, b.spec, `${key} runs the same spec`);
    if (a.status?.epoch === b.status?.epoch && a.status?.resetCount === b.status?.resetCount) continue;
    // The data plane's own peer-liveness check may restart a link under CPU starvation
    // (PeerGone/PeerRestarted, as in fleet.test.ts); any other restart fails.
    const resets = (fleet.agents.get(agent)?.logs ?? [])
      .filter((r) => r.link === name && r.msg === 'Ready -> Resetting')
      .map((r) => String(r.reason));
    assert.ok(
      resets.length > 0 && resets.every((r) => r === 'PeerGone' || r === 'PeerRestarted'),
      `${key} was not restarted (epoch ${b.status?.epoch} -> ${a.status?.epoch}, resets: ${resets.join(', ') || 'none logged'})`,
    );
  }
}

/** Both sides show the conflict with `reason`: the agent's condition and the controller's agent status. */
async function waitConflict(fleet: Fleet, reason: string): Promise<void> {
  for (const a of AGENTS) {
    await waitFor(`${a} reports StoreIdentity False (${reason})`, async () => {
      const c = (await agentConditions(fleet, a)).find((x) => x.type === 'StoreIdentity');
      return c?.status === ConditionStatus.CONDITION_STATUS_FALSE && c.reason === reason ? c : undefined;
    });
    await waitFor(`the controller shows ${a} in conflict (${reason})`, async () => {
      const c = (await getAgent(fleet, a))?.status?.conditions.find((x) => x.type === 'StoreIdentity');
      return c?.status === ConditionStatus.CONDITION_STATUS_FALSE && c.reason === reason ? c : undefined;
    });
  }
}

async function waitAgentsReady(fleet: Fleet): Promise<void> {
  await waitFor('agents Ready on the controller', async () => {
    const phases = await Promise.all(AGENTS.map(async (n) => (await getAgent(fleet, n))?.status?.phase));
    return phases.every((p) => p === AgentPhase.AGENT_PHASE_READY);
  });
}

/** `vopctl adopt`: every agent in conflict adopted; afterwards both sides say the store is accepted. */
async function adopt(fleet: Fleet, expectLinks: string[], created: string[]): Promise<void> {
  const dry = await vopctl(fleet.controllerAdmin, ['adopt', '--dry-run']);
  assert.equal(dry.code, 0, dry.stderr);
  assert.match(dry.stdout, /agent\/card-1 adopted \(dry run\)/);
  for (const l of created)
    assert.equal((await vopctl(fleet.controllerAdmin, ['get', 'links', l])).code, 4, `dry run wrote no ${l}`);
  const r = await vopctl(fleet.controllerAdmin, ['adopt']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /agent\/card-1 adopted/);
  assert.match(r.stdout, /agent\/host-1 adopted/);
  const stored = (await listLinks(fleet)).map((l) => l.meta?.name ?? '').sort();
  assert.deepEqual(stored, [...expectLinks].sort(), 'the store holds every link the agents run');
  for (const l of await listLinks(fleet))
    if (created.includes(l.meta?.name ?? ''))
      assert.equal(l.meta?.annotations['vop.dev/adopted'], 'card-1', `${l.meta?.name} is annotated as adopted`);
  for (const a of AGENTS)
    await waitFor(`${a} accepts the store`, async () => {
      const c = (await agentConditions(fleet, a)).find((x) => x.type === 'StoreIdentity');
      return c?.status === ConditionStatus.CONDITION_STATUS_TRUE;
    });
  const again = await vopctl(fleet.controllerAdmin, ['adopt']);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, 'no agent is in a store identity conflict\n');
}

/** After adoption: the policy is applied again with a template change, and `extra` deleted; both reach the agents. */
async function changeApplies(fleet: Fleet, tier: string): Promise<void> {
  await applyPolicy(fleet, policy({ tier }));
  await waitFor(`con-card-1 labelled tier=${tier} and Synced`, async () => {
    const l = (await listLinks(fleet, `tier=${tier}`)).find((x) => x.meta?.name === 'con-card-1');
    return l?.meta?.managedBy === 'policy/con' && condition(l, 'Synced') === ConditionStatus.CONDITION_STATUS_TRUE && l;
  });
  const r = await vopctl(fleet.controllerAdmin, ['delete', 'link', 'extra']);
  assert.equal(r.code, 0, r.stderr);
  await waitFor('the agents remove extra', async () => {
    for (const a of AGENTS) if ((await agentLinks(fleet, a)).some((l) => l.meta?.name === 'extra')) return false;
    return true;
  });
  // Put it back for the next scenario.
  const manifest = path.join(fleet.controllerStateDir, 'extra.yaml');
  writeFileSync(manifest, EXTRA);
  const put = await vopctl(fleet.controllerAdmin, ['apply', '-f', manifest]);
  assert.equal(put.code, 0, put.stderr);
}

async function startAgents(fleet: Fleet): Promise<void> {
  await fleet.startAgent('host-1', 'host');
  await fleet.startAgent('card-1', 'card', 'host-1');
  await waitAgentsReady(fleet);
}

async function setUp(fleet: Fleet): Promise<Map<string, Link>> {
  await applyPolicy(fleet, policy());
  const manifest = path.join(fleet.controllerStateDir, 'extra.yaml');
  writeFileSync(manifest, EXTRA);
  const r = await vopctl(fleet.controllerAdmin, ['apply', '-f', manifest]);
  assert.equal(r.code, 0, r.stderr);
  const missing = [...fleet.agents].filter(([, a]) => dataPlaneMissing(a)).map(([n]) => n);
  assert.deepEqual(missing, [], 'agents without the native data plane (run npm run build)');
  return waitAgentsRun(fleet, ['con-card-1', 'extra']);
}

describe('the store identity rule on SQLite: a lost or restored store deletes no link', () => {
  let fleet: Fleet;
  const backup = tempDir('ctl-backup');
  const db = (): string => path.join(fleet.controllerStateDir, SQLITE_FILE);
  const removeDb = (): void => {
    for (const suffix of ['', '-wal', '-shm']) rmSync(db() + suffix, { force: true });
  };
  before(async () => {
    fleet = await startFleet({ leaseSeconds: 5 });
    await startAgents(fleet);
  });
  after(async () => {
    await fleet.stop();
    rmSync(backup, { recursive: true, force: true });
  });

  it('restoring an older backup: agents keep the links it lacks, report GenerationBehind, and adopt brings them back', async () => {
    // The backup holds the policy only (an offline copy of the file).
    await applyPolicy(fleet, policy());
    await waitAgentsRun(fleet, ['con-card-1']);
    await fleet.controller.stop();
    mkdirSync(backup, { recursive: true });
    for (const suffix of ['', '-wal'])
      if (existsSync(db() + suffix)) copyFileSync(db() + suffix, path.join(backup, SQLITE_FILE + suffix));
    await fleet.startController();
    // After the backup: one more link.
    const before = await setUp(fleet);

    await fleet.controller.stop();
    removeDb();
    for (const suffix of ['', '-wal'])
      if (existsSync(path.join(backup, SQLITE_FILE + suffix)))
        copyFileSync(path.join(backup, SQLITE_FILE + suffix), db() + suffix);
    await fleet.startController();
    await waitConflict(fleet, 'GenerationBehind');
    assert.equal((await vopctl(fleet.controllerAdmin, ['get', 'links', 'extra'])).code, 4, 'the backup lacks extra');
    await assertKept(fleet, before);

    const st = await vopctl(fleet.controllerAdmin, ['status']);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /leader\s.*\ssqlite\s.*\s2\s*$/m, `two agents in conflict: ${st.stdout}`);

    await adopt(fleet, ['con-card-1', 'extra'], ['extra']);
    await assertKept(fleet, before, true);
    await changeApplies(fleet, 'gold');
    await waitAgentsRun(fleet, ['con-card-1', 'extra']);
  });

  it('deleting the store file: agents keep every link, report ClusterIdChanged, and adopt rebuilds the desired state', async () => {
    const before = await waitAgentsRun(fleet, ['con-card-1', 'extra']);
    await fleet.controller.stop();
    removeDb();
    await fleet.startController();
    await waitConflict(fleet, 'ClusterIdChanged');
    assert.deepEqual(await listLinks(fleet), [], 'the new store is empty');
    await assertKept(fleet, before);

    await adopt(fleet, ['con-card-1', 'extra'], ['con-card-1', 'extra']);
    await assertKept(fleet, before, true);
    await changeApplies(fleet, 'silver');
    await waitAgentsRun(fleet, ['con-card-1', 'extra']);
  });
});

describe('the store identity rule on etcd: a restored snapshot or a wiped prefix deletes no link', () => {
  let etcd: EtcdCluster;
  let fleet: Fleet;
  before(async () => {
    etcd = await startEtcd({ members: 1 });
    fleet = await startFleet({
      leaseSeconds: 5,
      configLines: [
        'store:',
        '  kind: etcd',
        `  endpoints: [${etcd.endpoints.join(', ')}]`,
        '  prefix: /identity/',
        '  requestTimeoutSeconds: 5',
      ],
    });
    await startAgents(fleet);
  });
  after(async () => {
    await fleet?.stop();
    await etcd?.close();
  });

  it('restoring an older etcd snapshot (etcdctl snapshot save, restore): agents keep the links it lacks, report GenerationBehind, and adopt brings them back', async () => {
    // The backup, taken online, holds the policy only.
    await applyPolicy(fleet, policy());
    await waitAgentsRun(fleet, ['con-card-1']);
    const snapshot = path.join(etcd.dir, 'backup.db');
    await etcd.snapshotSave(snapshot);
    // After the backup: one more link.
    const before = await setUp(fleet);

    await fleet.controller.stop();
    await etcd.restoreSnapshot(snapshot);
    await fleet.startController();
    await waitConflict(fleet, 'GenerationBehind');
    assert.equal((await vopctl(fleet.controllerAdmin, ['get', 'links', 'extra'])).code, 4, 'the backup lacks extra');
    await assertKept(fleet, before);

    await adopt(fleet, ['con-card-1', 'extra'], ['extra']);
    await assertKept(fleet, before, true);
    await changeApplies(fleet, 'silver');
    await waitAgentsRun(fleet, ['con-card-1', 'extra']);
  });

  it('wiping the prefix: agents keep every link, report ClusterIdChanged, and adopt rebuilds the desired state', async () => {
    const before = await setUp(fleet);
    await fleet.controller.stop();
    const direct = new EtcdStore({ ...ETCD_DEFAULTS, endpoints: [...etcd.endpoints], prefix: '/identity/' });
    try {
      const p = Buffer.from('/identity/');
      await direct.client.kv.deleteRange({ key: p, range_end: prefixEnd(p) });
      assert.equal((await direct.client.kv.range({ key: p, range_end: prefixEnd(p) })).kvs.length, 0);
    } finally {
      await direct.close();
    }
    await fleet.startController();
    await waitConflict(fleet, 'ClusterIdChanged');
    assert.deepEqual(await listLinks(fleet), [], 'the new store is empty');
    await assertKept(fleet, before);

    await adopt(fleet, ['con-card-1', 'extra'], ['con-card-1', 'extra']);
    await assertKept(fleet, before, true);
    await changeApplies(fleet, 'gold');
    await waitAgentsRun(fleet, ['con-card-1', 'extra']);
  });
});
