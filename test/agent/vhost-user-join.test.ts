/**
 * Issue 14: a vhost_user link joined (`net.device_backend.vop_link`) to the net device of an shm
 * link the agent drives is level-triggered (agent/src/links/vop-link-join.ts): it may exist
 * without the link it names, and that link may be deleted under it.
 *
 * With two real agents (A drives `wire`, B serves it; A also holds `vm`, the vhost_user link
 * joined to wire's eth0) and dpdk-testpmd as the front-end:
 * - vm applied before wire is accepted: Ready=False JoinedLinkMissing, no socket yet; once wire
 *   is applied the socket opens by itself and testpmd's frames cross wire to B;
 * - wire deleted under the running vm: vm goes Degraded, Ready=False JoinedLinkMissing (an event
 *   names the link), testpmd keeps its rings and the frames it sends are dropped and counted;
 * - wire applied again: vm is Ready again by itself and frames reach B again; wire deleted once
 *   more, testpmd stopped: every frame testpmd sent is counted once by vm (forwarded + dropped =
 *   testpmd's TX).
 * Through a controller (ApplyLink/DeleteLink, the agents syncing over mutual TLS): vm alone
 * first (a desired version of its own), then wire; both deleted target first; both applied
 * target first and deleted vm first: each time the agent converges (both links or none, vm's
 * socket open or gone) and the controller shows vm Synced=True (no rejection by the agent).
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';

import { ConditionStatus, LinkPhase, Role, type Device, type Link, type NetBackend } from '../../lib/proto/types';
import { sh } from '../devices/helpers';
import { call } from '../helpers/grpc';
import { requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { startTestpmd, TESTPMD } from '../helpers/testpmd';
import { agentLinks, condition, listLinks, startFleet, waitFor, type Fleet } from '../controller/fleet-helpers';
import { Agent } from './helpers';

function meta(name: string): Link['meta'] {
  return {
    name,
    labels: {},
    annotations: {},
    generation: 0n,
    resourceVersion: '',
    createTime: undefined,
    updateTime: undefined,
    managedBy: '',
  };
}

const dgram = (p: string, peer: string): NetBackend => ({
  kind: { $case: 'datagram', value: { path: p, peerPath: peer } },
});

function netDevice(name: string, deviceBackend: NetBackend, driverFrontend: NetBackend | undefined): Device {
  return {
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: { $case: 'net', value: { mac: '', mtu: 0, offloads: false, deviceBackend, driverFrontend } },
  };
}

/** wire: B serves eth0 (its backend a datagram socket nobody reads: B drops and counts), A drives it (a datagram frontend vm joins). */
function wireLink(sockA: string, sockB: string, a = 'host-a', b = 'host-b'): Link {
  return {
    meta: meta('wire'),
    spec: {
      endpoints: [
        { agent: b, role: Role.ROLE_DEVICE },
        { agent: a, role: Role.ROLE_DRIVER },
      ],
      transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: 0n } } },
      devices: [
        netDevice(
          'eth0',
          dgram(path.join(sockB, 'wire-b.dgram'), path.join(sockB, 'nobody.dgram')),
          dgram(path.join(sockA, 'wire.dgram'), path.join(sockA, 'vm.dgram')),
        ),
      ],
    },
    status: undefined,
  };
}

function vmLink(sock: string, a = 'host-a'): Link {
  return {
    meta: meta('vm'),
    spec: {
      endpoints: [{ agent: a, role: Role.ROLE_DEVICE }],
      transport: {
        kind: {
          $case: 'vhostUser',
          value: { socketPath: sock, client: false, socketMode: 0, socketGroup: '', queuePairs: 0 },
        },
      },
      devices: [netDevice('eth0', { kind: { $case: 'vopLink', value: { link: 'wire', device: 'eth0' } } }, undefined)],
    },
    status: undefined,
  };
}

const readyCond = (l: Link | undefined): { status: ConditionStatus | undefined; reason: string } => {
  const c = l?.status?.conditions.find((x) => x.type === 'Ready');
  return { status: c?.status, reason: c?.reason ?? '' };
};

const show = (l: Link | undefined): string =>
  JSON.stringify(l?.status, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));

/** Sum of the buffers of every queue of `name` on agent `ag` (0 when the link is not there). */
async function buffers(ag: Agent, name: string): Promise<bigint> {
  try {
    return ((await ag.stats(name)).devices[0]?.queues ?? []).reduce((s, q) => s + q.buffers, 0n);
  } catch {
    return 0n;
  }
}

async function until<T>(what: string, fn: () => Promise<T | false>, timeoutMs = 60_000): Promise<T> {
  return waitFor(what, fn, timeoutMs, 50);
}

describe(
  'a vhost_user link joined to a link the agent drives follows that link: waits for it, degrades without it, recovers by itself',
  { skip: requirePrereq('dpdk-testpmd', existsSync(TESTPMD), `${TESTPMD} (Debian package dpdk-dev)`) },
  () => {
    let dir: string;
    let sockA: string;
    let sockB: string;
    let srvA: ServerProcess | undefined;
    let srvB: ServerProcess | undefined;
    let a: Agent;
    let b: Agent;

    before(async () => {
      dir = tempDir('vhost-join');
      sockA = path.join(dir, 'sock-a');
      sockB = path.join(dir, 'sock-b');
      const rdv = path.join(dir, 'rdv');
      for (const d of [sockA, sockB, rdv]) mkdirSync(d, { recursive: true, mode: 0o700 });
      const cfgA = path.join(dir, 'agent-a.yaml');
      // testpmd --no-huge memory cannot be sealed
      writeFileSync(cfgA, `vhostUser:\n  allowUnsealedMemory: true\nhostPaths:\n  socketDir: ${sockA}\n`);
      srvA = await startServer('agent', ['--config', cfgA, '--node-name', 'host-a', '--rendezvous-dir', rdv], {
        stateDir: path.join(dir, 'state-a'),
      });
      srvB = await startServer('agent', ['--node-name', 'host-b', '--rendezvous-dir', rdv, '--socket-dir', sockB], {
        stateDir: path.join(dir, 'state-b'),
      });
      a = new Agent(srvA.admin);
      b = new Agent(srvB.admin);
    });

    after(async () => {
      a?.close();
      b?.close();
      await srvA?.stop('SIGTERM');
      await srvB?.stop('SIGTERM');
      if (dir) sh('rm', ['-rf', dir]);
    });

    it('vm before wire, wire deleted and applied again under testpmd: every frame counted, Ready again by itself', async () => {
      const sock = path.join(sockA, 'vm.sock');
      const events = a.watch('', true);
      try {
        await a.apply(vmLink(sock));
        const waiting = await until('vm waits for wire', async () => {
          const l = (await a.get('vm')).link;
          return readyCond(l).reason === 'JoinedLinkMissing' && l !== undefined ? l : false;
        });
        assert.equal(readyCond(waiting).status, ConditionStatus.CONDITION_STATUS_FALSE);
        assert.match(waiting.status?.conditions.find((c) => c.type === 'Ready')?.message ?? '', /link "wire"/);
        assert.equal(existsSync(sock), false, 'no socket before the link it joins is there');

        await b.apply(wireLink(sockA, sockB));
        await a.apply(wireLink(sockA, sockB));
        await a.waitPhase('wire', LinkPhase.LINK_PHASE_READY, 60_000);
        await until('vm opens its socket once wire is there', async () => {
          const l = (await a.get('vm')).link;
          return existsSync(sock) && readyCond(l).reason !== 'JoinedLinkMissing' && l !== undefined;
        });

        const pmd = startTestpmd(sock, `vhj${process.pid}`);
        try {
          await a.waitPhase('vm', LinkPhase.LINK_PHASE_READY, 60_000);
          await until('frames cross wire to B', async () => (await buffers(b, 'wire')) > 1000n);

          // wire goes away under the running vm
          await a.delete('wire');
          await b.delete('wire');
          const degraded = await a.waitPhase('vm', LinkPhase.LINK_PHASE_DEGRADED, 30_000);
          assert.deepEqual(readyCond(degraded), {
            status: ConditionStatus.CONDITION_STATUS_FALSE,
            reason: 'JoinedLinkMissing',
          });
          await events.waitFor(
            (m) => m.event?.reason === 'JoinedLinkMissing' && m.event.link === 'vm' && /"wire"/.test(m.event.message),
            10_000,
          );
          const dropped0 = (await a.stats('vm')).devices[0]?.counters.tx_dropped ?? 0n;
          await until('frames sent meanwhile are dropped and counted', async () => {
            const d = (await a.stats('vm')).devices[0]?.counters.tx_dropped ?? 0n;
            return d > dropped0 + 100n;
          });
          assert.equal(existsSync(sock), true, 'the front-end keeps its socket');

          // wire back: vm is Ready again by itself, frames reach B again
          await b.apply(wireLink(sockA, sockB));
          await a.apply(wireLink(sockA, sockB));
          const ready = await a.waitPhase('vm', LinkPhase.LINK_PHASE_READY, 60_000);
          assert.equal(readyCond(ready).status, ConditionStatus.CONDITION_STATUS_TRUE, show(ready));
          await until('frames cross the new wire to B', async () => (await buffers(b, 'wire')) > 1000n);
          // wire goes once more before testpmd stops: with nothing to send to, no batch is held
          // under the datagram socket's back-pressure when testpmd stops the rings (a held batch
          // is rewound, not counted, and testpmd counted it as sent), so the counts below are exact
          await a.delete('wire');
          await b.delete('wire');
          await a.waitPhase('vm', LinkPhase.LINK_PHASE_DEGRADED, 30_000);
          const dropped1 = (await a.stats('vm')).devices[0]?.counters.tx_dropped ?? 0n;
          await until('dropped again', async () => {
            const d = (await a.stats('vm')).devices[0]?.counters.tx_dropped ?? 0n;
            return d > dropped1 + 100n;
          });
        } catch (err) {
          await pmd.kill();
          throw new Error(
            `${String(err)}; vm: ${show((await a.get('vm')).link)}; testpmd: ${pmd.output().slice(-1500)}`,
          );
        }
        const { tx } = await pmd.stop();
        const st = (await a.stats('vm')).devices[0];
        const txq = st?.queues.find((q) => q.name === 'tx');
        assert.equal(txq?.buffers, tx, 'every frame testpmd sent went through vm once');
        const c = st?.counters ?? {};
        assert.equal((c.tx_frames ?? 0n) + (c.tx_dropped ?? 0n), tx, 'forwarded + dropped = sent');
        assert.ok((c.tx_frames ?? 0n) > 0n && (c.tx_dropped ?? 0n) > 0n);
        console.log(
          `testpmd ${tx} frames into vm: ${c.tx_frames} forwarded, ${c.tx_dropped} dropped while wire was gone`,
        );
        await a.delete('vm');
        assert.equal(existsSync(sock), false, 'the socket goes with the link');
      } finally {
        events.stream.cancel();
      }
    });
  },
);

describe('a controller syncs a vhost_user link and the link it joins in any order, without a stuck state', () => {
  let fleet: Fleet | undefined;
  let sockDir: string;

  before(async () => {
    sockDir = tempDir('vhost-join-ctl');
    fleet = await startFleet({ agentArgs: ['--socket-dir', sockDir] });
    await fleet.startAgent('host-a', 'host');
    await fleet.startAgent('host-b', 'host');
  });

  after(async () => {
    const f = fleet;
    await f?.stop();
    const dirs = f
      ? [f.controllerStateDir, f.rendezvous, f.pkiDir, ...[...f.agents.values()].map((a) => a.stateDir)]
      : [];
    for (const d of [sockDir, ...dirs]) if (d) sh('rm', ['-rf', d]);
  });

  it('vm alone then wire, target deleted first, both again target first, vm deleted first: the agent converges each time', async () => {
    const f = fleet as Fleet;
    const sock = path.join(sockDir, 'vm.sock');
    const wire = wireLink(sockDir, sockDir);
    const vm = vmLink(sock);
    const apply = (l: Link) => call(f.ctl, f.ctl.applyLink, { link: l, dryRun: false }, new Metadata());
    const del = (name: string) => call(f.ctl, f.ctl.deleteLink, { name, resourceVersion: '' }, new Metadata());
    const onA = async (): Promise<Map<string, Link>> =>
      new Map((await agentLinks(f, 'host-a')).map((l) => [l.meta?.name ?? '', l]));
    const vmSynced = async (): Promise<boolean> =>
      condition(
        (await listLinks(f)).find((l) => l.meta?.name === 'vm'),
        'Synced',
      ) === ConditionStatus.CONDITION_STATUS_TRUE;
    const bothUp = async (what: string): Promise<void> => {
      await until(
        what,
        async () => {
          const m = await onA();
          const v = m.get('vm');
          return (
            m.has('wire') &&
            existsSync(sock) &&
            readyCond(v).reason !== 'JoinedLinkMissing' &&
            (await vmSynced()) &&
            true
          );
        },
        60_000,
      ).catch(async (e: unknown) => assert.fail(`${String(e)}; vm on host-a: ${show((await onA()).get('vm'))}`));
    };
    const bothGone = async (what: string): Promise<void> => {
      await until(what, async () => (await onA()).size === 0 && !existsSync(sock), 60_000);
    };

    // vm alone: the agent accepts it (a version of its own) and waits for wire
    await apply(vm);
    await until(
      'vm on host-a, waiting for wire',
      async () => readyCond((await onA()).get('vm')).reason === 'JoinedLinkMissing' && (await vmSynced()),
    );
    await apply(wire);
    await bothUp('vm opens once the controller syncs wire');

    await del('wire');
    await until('vm waits again once wire is deleted', async () => {
      const m = await onA();
      return !m.has('wire') && readyCond(m.get('vm')).reason === 'JoinedLinkMissing';
    });
    await del('vm');
    await bothGone('both gone (wire deleted first)');

    // target first, then vm, back to back (one desired version or two)
    await apply(wire);
    await apply(vm);
    await bothUp('both up again (wire applied first)');
    await del('vm');
    await del('wire');
    await bothGone('both gone (vm deleted first)');

    // both at once, vm first
    await apply(vm);
    await apply(wire);
    await bothUp('both up (vm applied first, back to back)');
    await Promise.all([del('wire'), del('vm')]);
    await bothGone('both gone (deleted together)');
    assert.equal((await agentLinks(f, 'host-b')).length, 0, 'host-b holds nothing either');
  });
});
