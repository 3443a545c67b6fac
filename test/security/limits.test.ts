/**
 * Every size and count a caller or a card can make vop hold has a limit: real agents
 * and a real controller (mutual TLS) configured with small limits refuse one past each
 * limit with RESOURCE_EXHAUSTED or INVALID_ARGUMENT naming it, a watcher that does not
 * read is ended while the server's memory stays bounded, and a sync snapshot larger
 * than gRPC's 16 MiB message limit still reaches its agent (in parts).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';

import type { AgentServiceClient } from '../../lib/proto/agent';
import type { ControllerServiceClient } from '../../lib/proto/controller';
import { LinkPhase, LinkPolicy, Role, type Device, type Link } from '../../lib/proto/types';
import { waitFor } from '../controller/fleet-helpers';
import { call, decodeStatus } from '../helpers/grpc';
import {
  agentApply,
  consoleDevice,
  ctlApply,
  failure,
  link,
  rssBytes,
  startSecureFleet,
  type SecureFleet,
} from './limits-fixtures';

const SMALL = {
  maxLinksPerAgent: 2,
  maxDevicesPerLink: 2,
  maxWindowBytes: 2 * 1024 * 1024,
  maxQueueSize: 256,
  maxStreamsPerClient: 2,
  watchBacklogEvents: 20,
};

function netDevice(name: string, queueSize: number): Device {
  return {
    name,
    queueSize,
    disableEventIdx: false,
    kind: {
      $case: 'net',
      value: { mac: '', mtu: 0, offloads: false, deviceBackend: undefined, driverFrontend: undefined },
    },
  };
}

function expectViolation(err: ServiceError, field: string, limit: RegExp): void {
  assert.equal(err.code, status.INVALID_ARGUMENT, err.details);
  const v = decodeStatus(err).fieldViolations.find((x) => x.field === field);
  assert.ok(v, `no violation of ${field}: ${JSON.stringify(decodeStatus(err).fieldViolations)}`);
  assert.match(v.description, limit);
}

/** A watch stream that is read only when asked (paused from the start). */
interface Watch {
  readonly stream: ClientReadableStream<unknown>;
  /** Resolves with the first message (proves the stream is open). */
  first: Promise<void>;
  /** Resolves with the error the stream ends with (null when it ends cleanly). */
  ended: Promise<ServiceError | null>;
  messages: number;
}

function watchOf(stream: ClientReadableStream<unknown>, paused: boolean): Watch {
  const w: Watch = {
    stream,
    messages: 0,
    first: new Promise((resolve) => stream.once('data', () => resolve())),
    ended: new Promise((resolve) => {
      stream.on('error', (e: ServiceError) => resolve(e));
      stream.on('end', () => resolve(null));
    }),
  };
  stream.on('data', () => w.messages++);
  if (paused) {
    // Take the first message (the stream is open), then stop reading.
    stream.once('data', () => stream.pause());
  }
  return w;
}

describe('limits on the agent', () => {
  let fleet: SecureFleet;
  let admin: AgentServiceClient;
  const A = 'agent-l';
  before(async () => {
    fleet = await startSecureFleet({ agents: [A] });
    await fleet.startAgent(A, { controller: false, limits: SMALL });
    admin = fleet.agentClient(A, 'ops-admin');
  });
  after(async () => {
    await fleet?.stop();
  });

  it('refuses a link past maxLinksPerAgent with RESOURCE_EXHAUSTED naming the limit', async () => {
    await agentApply(admin, link('l1', A, 'peer-x'));
    await agentApply(admin, link('l2', 'peer-x', A));
    const err = await failure(agentApply(admin, link('l3', A, 'peer-x')));
    assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
    assert.match(err.details, /maxLinksPerAgent = 2/);
    const listed = await call(
      admin,
      admin.listLinks,
      { labelSelector: '', pageSize: 0, pageToken: '' },
      new Metadata(),
    );
    assert.deepEqual(
      listed.links.map((l) => l.meta?.name),
      ['l1', 'l2'],
    );
    const stateDir = fleet.agents.get(A)?.stateDir ?? '';
    assert.ok(!existsSync(path.join(stateDir, 'links', 'l3.json')), 'l3 was persisted');
    // Updating a link at the limit is not a new link.
    await agentApply(admin, link('l1', A, 'peer-x', { labels: { v: '2' } }));
  });

  it('refuses a link with one device more than maxDevicesPerLink, naming the limit', async () => {
    const two = [consoleDevice('c0'), consoleDevice('c1')];
    await agentApply(admin, link('l1', A, 'peer-x', { devices: two }), true);
    const err = await failure(
      agentApply(admin, link('l1', A, 'peer-x', { devices: [...two, consoleDevice('c2')] }), true),
    );
    expectViolation(err, 'link.spec.devices', /3 devices; at most 2 .*maxDevicesPerLink/);
  });

  it('refuses a window one byte larger than maxWindowBytes, explicit or automatic, naming the limit', async () => {
    const max = BigInt(SMALL.maxWindowBytes);
    await agentApply(admin, link('l1', A, 'peer-x', { windowSizeBytes: max }), true);
    const err = await failure(agentApply(admin, link('l1', A, 'peer-x', { windowSizeBytes: max + 1n }), true));
    expectViolation(err, 'link.spec.transport.shm.window_size_bytes', /maxWindowBytes/);
    // Automatic size: two net stand-ins with 256-entry queues (and room for one more) need about 2.6 MiB.
    const auto = await failure(
      agentApply(admin, link('l1', A, 'peer-x', { devices: [netDevice('n0', 256), netDevice('n1', 256)] }), true),
    );
    expectViolation(auto, 'link.spec.transport.shm.window_size_bytes', /automatic window .* maxWindowBytes/);
  });

  it('refuses a queue one size (the next power of two) above maxQueueSize, naming the limit', async () => {
    // A byte-pipe stand-in: 256 entries fit the small window (a real console's would not).
    await agentApply(admin, link('l1', A, 'peer-x', { devices: [netDevice('n0', 256)] }), true);
    const err = await failure(agentApply(admin, link('l1', A, 'peer-x', { devices: [netDevice('n0', 512)] }), true));
    expectViolation(err, 'link.spec.devices[0].queue_size', /maxQueueSize/);
    const add = await failure(
      call(
        admin,
        admin.addDevice,
        { link: 'l1', device: consoleDevice('c9', 512), resourceVersion: '', force: false },
        new Metadata(),
      ),
    );
    expectViolation(add, 'device.queue_size', /maxQueueSize/);
  });

  it('refuses a watch stream past maxStreamsPerClient for one identity, not for another', async () => {
    const reader = fleet.agentClient(A, 'ops-reader');
    const w1 = watchOf(reader.watchLinks({ labelSelector: '', updatesOnly: false }), false);
    const w2 = watchOf(reader.watchLinks({ labelSelector: '', updatesOnly: false }), false);
    await Promise.all([w1.first, w2.first]);
    const w3 = watchOf(reader.watchLinks({ labelSelector: '', updatesOnly: false }), false);
    const e3 = await w3.ended;
    assert.equal(e3?.code, status.RESOURCE_EXHAUSTED, e3?.details);
    assert.match(e3?.details ?? '', /certificate ops-reader .*maxStreamsPerClient = 2/);
    // Another identity has its own quota.
    const w4 = watchOf(admin.watchLinks({ labelSelector: '', updatesOnly: false }), false);
    await w4.first;
    // A closed stream frees its slot.
    w1.stream.cancel();
    await waitFor('a slot is free again', async () => {
      const w = watchOf(reader.watchLinks({ labelSelector: '', updatesOnly: false }), false);
      const r = await Promise.race([w.first.then(() => w), w.ended.then(() => undefined)]);
      if (!r) return undefined;
      w.stream.cancel();
      return true;
    });
    for (const w of [w2, w4]) w.stream.cancel();
  });

  it('ends a watcher that does not read once watchBacklogEvents changes wait for it', async () => {
    const slow = watchOf(admin.watchLinks({ labelSelector: '', updatesOnly: false }), true);
    await slow.first;
    const big = { 'vop.dev/blob': 'b'.repeat(16 * 1024) };
    for (let i = 0; i < 400; i++)
      await agentApply(admin, link('l1', A, 'peer-x', { labels: { v: String(i) }, annotations: big }));
    slow.stream.resume();
    const err = await slow.ended;
    assert.equal(err?.code, status.RESOURCE_EXHAUSTED, err?.details);
    assert.match(err?.details ?? '', /watch backlog exceeded 20 events \(limit watchBacklogEvents\)/);
  });
});

describe('a peer window larger than maxWindowBytes', () => {
  let fleet: SecureFleet;
  before(async () => {
    fleet = await startSecureFleet({ agents: ['win-small', 'win-big'] });
    await fleet.startAgent('win-small', { controller: false, limits: { maxWindowBytes: 2 * 1024 * 1024 } });
    await fleet.startAgent('win-big', { controller: false });
  });
  after(async () => {
    await fleet?.stop();
  });

  it('is not mapped by the driver side: the link fails there with the limit named', async () => {
    // The device side (default limits) sizes the window for two 256-entry net devices: ~2.6 MiB.
    const l = link('wide', 'win-big', 'win-small', { devices: [netDevice('n0', 256), netDevice('n1', 256)] });
    await agentApply(fleet.agentClient('win-big', 'ops-admin'), l);
    await agentApply(fleet.agentClient('win-small', 'ops-admin'), l);
    const small = fleet.agents.get('win-small');
    const refused = await waitFor('the driver side refuses the window', () =>
      small?.logs.find((r) => typeof r.message === 'string' && r.message.includes('maxWindowBytes')),
    );
    assert.match(String(refused.message), /is \d+ bytes, more than 2097152 \(limit maxWindowBytes\); not mapped/);
    const c = fleet.agentClient('win-small', 'ops-admin');
    const got = await call(c, c.getLink, { name: 'wide' }, new Metadata());
    assert.notEqual(got.link?.status?.phase, LinkPhase.LINK_PHASE_READY);
  });
});

/** Old-space cap of the controller in 'limits on the controller' (MiB). */
const CONTROLLER_HEAP_MIB = 112;

describe('limits on the controller', () => {
  let fleet: SecureFleet;
  let admin: ControllerServiceClient;
  before(async () => {
    // The heap cap is what makes "memory stays bounded" decisive: the backlog a watcher that
    // does not read would pin without watchBacklogEvents (600 x 240 KiB, see below) does not fit
    // in it, so an unbounded backlog ends the controller with an out-of-memory abort.
    fleet = await startSecureFleet({
      agents: [],
      controllerConfig: { limits: { ...SMALL, watchBacklogEvents: 100 } },
      controllerEnv: { NODE_OPTIONS: `--max-old-space-size=${CONTROLLER_HEAP_MIB}` },
    });
    admin = fleet.ctl('ops-admin');
  });
  after(async () => {
    await fleet?.stop();
  });

  it('refuses a link past maxLinksPerAgent on one agent with RESOURCE_EXHAUSTED naming the agent and limit', async () => {
    await ctlApply(admin, link('c1', 'a1', 'b1'));
    await ctlApply(admin, link('c2', 'b2', 'a1'));
    const err = await failure(ctlApply(admin, link('c3', 'a1', 'b3')));
    assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
    assert.match(err.details, /agent "a1" already holds 2 links \(limit maxLinksPerAgent = 2\)/);
    const got = await failure(call(admin, admin.getLink, { name: 'c3' }, new Metadata()));
    assert.equal(got.code, status.NOT_FOUND);
    await ctlApply(admin, link('c1', 'a1', 'b1', { labels: { v: '2' } }));
  });

  it('refuses devices, window and queue sizes one past their limits in links and policy templates', async () => {
    const three = [consoleDevice('c0'), consoleDevice('c1'), consoleDevice('c2')];
    expectViolation(
      await failure(ctlApply(admin, link('x1', 'p', 'q', { devices: three }))),
      'link.spec.devices',
      /maxDevicesPerLink/,
    );
    expectViolation(
      await failure(ctlApply(admin, link('x1', 'p', 'q', { windowSizeBytes: BigInt(SMALL.maxWindowBytes) + 1n }))),
      'link.spec.transport.shm.window_size_bytes',
      /maxWindowBytes/,
    );
    expectViolation(
      await failure(ctlApply(admin, link('x1', 'p', 'q', { devices: [consoleDevice('c0', 512)] }))),
      'link.spec.devices[0].queue_size',
      /maxQueueSize/,
    );
    await ctlApply(admin, link('x1', 'p', 'q', { devices: [consoleDevice('c0', 256)] }), true);
    const policy = LinkPolicy.fromPartial({
      meta: { name: 'pol' },
      spec: {
        cardSelector: { matchLabels: { 'vop.dev/rack': 'r01' } },
        template: { cardRole: Role.ROLE_DRIVER, transport: link('t', 'p', 'q').spec?.transport, devices: three },
      },
    });
    const perr = await failure(call(admin, admin.applyPolicy, { policy, dryRun: true }, new Metadata()));
    expectViolation(perr, 'policy.spec.template.devices', /maxDevicesPerLink/);
  });

  it('refuses a watch or console stream past maxStreamsPerClient for one identity', async () => {
    const reader = fleet.ctl('ops-reader');
    const w1 = watchOf(reader.watchLinks({ labelSelector: '', agent: '', updatesOnly: false }), false);
    const w2 = watchOf(reader.watchAgents({ labelSelector: '', updatesOnly: false }), false);
    await Promise.all([w1.first, w2.first]);
    const w3 = watchOf(reader.watchLinks({ labelSelector: '', agent: '', updatesOnly: true }), false);
    const e3 = await w3.ended;
    assert.equal(e3?.code, status.RESOURCE_EXHAUSTED, e3?.details);
    assert.match(e3?.details ?? '', /maxStreamsPerClient = 2/);
    const con = reader.attachConsole();
    const ce = await new Promise<ServiceError>((resolve) => {
      con.on('error', resolve);
      con.write({ msg: { $case: 'open', value: { link: 'c1', device: '', write: false, replayBytes: 0 } } });
    });
    assert.equal(ce.code, status.RESOURCE_EXHAUSTED, ce.details);
    w1.stream.cancel();
    w2.stream.cancel();
  });

  it('drops a watcher that does not read while the controller memory stays bounded', async (t) => {
    // Each round creates and deletes a link with 240 KiB of annotations; a DELETED event
    // carries the whole last object, so an unbounded backlog holds 240 KiB per round for
    // a watcher that does not read (about 140 MiB over 600 rounds), more than the controller's
    // whole heap here (CONTROLLER_HEAP_MIB). The bounded backlog holds at most 100 events
    // (about 24 MiB). RSS is only reported: on this shared machine it moved by more than the
    // backlog itself with GC timing, so the heap cap is the assertion.
    const blob = 'z'.repeat(240 * 1024);
    const pid = fleet.controller.proc.pid as number;
    const rounds = async (n: number): Promise<number> => {
      let peak = 0;
      for (let i = 0; i < n; i++) {
        await ctlApply(
          admin,
          link('big', 'a9', 'b9', { labels: { v: String(i) }, annotations: { 'vop.dev/blob': blob } }),
        );
        await call(admin, admin.deleteLink, { name: 'big', resourceVersion: '' }, new Metadata());
        if (i % 10 === 0) peak = Math.max(peak, rssBytes(pid));
      }
      return Math.max(peak, rssBytes(pid));
    };
    const live = watchOf(admin.watchLinks({ labelSelector: '', agent: '', updatesOnly: true }), false);
    const base = rssBytes(pid);
    const warm = await rounds(400);
    const reader = fleet.ctl('ops-reader');
    const slow = watchOf(reader.watchLinks({ labelSelector: '', agent: '', updatesOnly: false }), true);
    await slow.first;
    const loaded = await rounds(600);
    await waitFor('the live watcher saw every change', () => live.messages >= 2 * 1000, 120_000);
    slow.stream.resume();
    const err = await slow.ended;
    assert.equal(err?.code, status.RESOURCE_EXHAUSTED, err?.details);
    assert.match(err?.details ?? '', /watch backlog exceeded 100 events \(limit watchBacklogEvents\)/);
    const mib = (b: number): number => Math.round(b / 1048576);
    t.diagnostic(
      `controller RSS ${mib(base)} MiB; +${mib(warm - base)} MiB after the warm-up; +${mib(loaded - warm)} MiB more with the watcher that does not read`,
    );
    assert.equal(fleet.controller.proc.exitCode, null, 'the controller survived with its heap capped');
    assert.equal(fleet.controller.proc.signalCode, null, 'the controller survived with its heap capped');
    const after = await call(
      admin,
      admin.listLinks,
      { labelSelector: '', agent: '', phase: 0, pageSize: 10, pageToken: '' },
      new Metadata(),
    );
    assert.ok(Array.isArray(after.links), 'the controller still answers');
    live.stream.cancel();
  });
});

describe('sync snapshots larger than one gRPC message', () => {
  let fleet: SecureFleet;
  before(async () => {
    fleet = await startSecureFleet({ agents: ['card-big'] });
  });
  after(async () => {
    await fleet?.stop();
  });

  it('delivers a snapshot of more than 16 MiB to a real agent, in parts, and the agent applies it whole', async () => {
    const admin = fleet.ctl('ops-admin');
    const N = 100;
    const blob = (i: number): string => String(i % 10).repeat(200 * 1024);
    let bytes = 0;
    for (let i = 0; i < N; i++) {
      const l: Link = link(`big-${i}`, 'host-ghost', 'card-big', { annotations: { 'vop.dev/blob': blob(i) } });
      bytes += 200 * 1024;
      await ctlApply(admin, l);
    }
    assert.ok(bytes > 16 * 1024 * 1024, `the snapshot is only ${bytes} bytes`);
    // The agent registers after the links exist: its first desired version is the full snapshot.
    const agent = await fleet.startAgent('card-big', { role: 'card' });
    const all = async (ac = fleet.agentClient('card-big', 'ops-admin')): Promise<Link[]> => {
      const out: Link[] = [];
      let pageToken = '';
      do {
        const r = await call(ac, ac.listLinks, { labelSelector: '', pageSize: 10, pageToken }, new Metadata(), 30_000);
        out.push(...r.links);
        pageToken = r.nextPageToken;
      } while (pageToken !== '');
      return out;
    };
    const got = await waitFor(
      'every link on the agent',
      async () => {
        const ls = await all();
        return ls.length === N ? ls : undefined;
      },
      120_000,
      500,
    );
    for (const l of got) {
      const i = Number((l.meta?.name ?? '').slice('big-'.length));
      assert.equal(l.meta?.annotations['vop.dev/blob'], blob(i), `${l.meta?.name} arrived damaged`);
      assert.equal(l.meta?.managedBy, 'controller');
    }
    const parts = fleet.controller.logs.find((r) => r.msg === 'desired links sent in parts');
    assert.ok(parts && Number(parts.parts) >= 5, `not sent in parts: ${JSON.stringify(parts)}`);
    const acked = await waitFor('the agent acknowledged the snapshot', async () => {
      const a = (await call(admin, admin.getAgent, { name: 'card-big' }, new Metadata())).agent;
      return (a?.status?.ackedVersion ?? 0n) > 0n ? a : undefined;
    });
    assert.ok(acked);
    assert.ok(!agent.logs.some((r) => r.msg === 'desired links rejected'), 'the agent rejected links of the snapshot');
    // The agent re-registers with all 100 links (without their annotations) and stays in sync.
    await agent.stop('SIGKILL');
    const again = await fleet.startAgent('card-big', { role: 'card' });
    await waitFor('registered again', () => again.logs.some((r) => r.msg === 'registered with the controller'), 60_000);
    assert.equal((await all()).length, N);
  });
});
