/**
 * AgentService against a real vop-agent process: create/read/update/delete of links,
 * idempotent apply, bad requests that change nothing, compare-and-swap, hot device
 * add/remove, the watch stream, restore after a restart and /metrics.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { status, type ServiceError } from '@grpc/grpc-js';

import type { AttachConsoleRequest } from '../../lib/proto/agent';

import { ConditionStatus, LinkPhase, Role, WatchEventType } from '../../lib/proto/types';
import { decodeStatus, expectGrpcError } from '../helpers/grpc';
import {
  promtoolPath,
  run,
  startServer,
  tempDir,
  withoutKnownPromClientLintNames,
  type ServerProcess,
} from '../helpers/servers';
import { Agent, bytePipeDevice, makeLink, testDiskDir } from './helpers';

function storedLinks(stateDir: string): string[] {
  return readdirSync(path.join(stateDir, 'links')).sort();
}

describe('vop-agent AgentService', () => {
  let srv: ServerProcess;
  let agent: Agent;
  let rdv: string;
  before(async () => {
    rdv = tempDir('rdv');
    srv = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, '--disk-dir', testDiskDir()]);
    agent = new Agent(srv.admin);
  });
  after(async () => {
    agent.close();
    await srv.stop('SIGTERM');
  });

  it('applies a link once: the same spec again changes nothing, a new spec bumps the generation', async () => {
    const first = await agent.apply(makeLink('l-idem', { labels: { tier: 'a' } }));
    assert.equal(first.changed, true);
    assert.equal(first.link?.meta?.generation, 1n);
    const rv1 = first.link?.meta?.resourceVersion ?? '';
    assert.notEqual(rv1, '');
    const again = await agent.apply(makeLink('l-idem', { labels: { tier: 'a' } }));
    assert.equal(again.changed, false);
    assert.equal(again.link?.meta?.generation, 1n);
    assert.equal(again.link?.meta?.resourceVersion, rv1);
    const labelsOnly = await agent.apply(makeLink('l-idem', { labels: { tier: 'b' } }));
    assert.equal(labelsOnly.changed, true);
    assert.equal(labelsOnly.link?.meta?.generation, 1n, 'labels are metadata, not spec');
    const grown = await agent.apply(
      makeLink('l-idem', {
        labels: { tier: 'b' },
        devices: [bytePipeDevice('con0'), bytePipeDevice('disk0', 'blk'), bytePipeDevice('con1')],
      }),
    );
    assert.equal(grown.changed, true);
    assert.equal(grown.link?.meta?.generation, 2n);
    const got = await agent.get('l-idem');
    assert.equal(got.link?.spec?.devices.length, 3);
    assert.equal(got.link?.status?.observedGeneration, 2n);
    const types = got.link?.status?.conditions.map((c) => c.type).sort();
    assert.deepEqual(types, ['DevicesReady', 'PeerConnected', 'QueueHealthy', 'Ready']);
    for (const c of got.link?.status?.conditions ?? [])
      assert.notEqual(c.reason, '', `condition ${c.type} has a reason`);
  });

  it('reports a link whose peer never comes with a PeerConnected reason instead of hanging', async () => {
    await agent.apply(makeLink('l-lonely', { driver: 'never-there' }));
    // GetLink answers within its deadline (10 s) while the peer is missing: no call waits for a peer.
    const got = await agent.get('l-lonely');
    const peer = got.link?.status?.conditions.find((c) => c.type === 'PeerConnected');
    assert.ok(peer);
    assert.notEqual(peer.status, ConditionStatus.CONDITION_STATUS_TRUE);
    assert.match(peer.reason, /^(WaitingForPeer|PeerNotResponding)$/);
    assert.notEqual(got.link?.status?.phase, LinkPhase.LINK_PHASE_READY);
    await agent.delete('l-lonely');
  });

  it('rejects bad requests with the right code and field, and changes nothing', async () => {
    await agent.apply(makeLink('l-base'));
    const before = (await agent.list()).links.map((l) => `${l.meta?.name}@${l.meta?.resourceVersion}`);
    const files = storedLinks(srv.stateDir);

    const noKind = makeLink('l-bad1', {
      devices: [{ name: 'x', queueSize: 0, disableEventIdx: false, kind: undefined }],
    });
    let st = decodeStatus(await expectGrpcError(agent.apply(noKind)));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['link.spec.devices[0]'],
    );

    st = decodeStatus(
      await expectGrpcError(agent.apply(makeLink('l-bad2', { devices: [bytePipeDevice('c', 'console', 100)] }))),
    );
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['link.spec.devices[0].queue_size'],
    );

    const bothDevice = makeLink('l-bad3');
    (bothDevice.spec?.endpoints[1] as { role: Role }).role = Role.ROLE_DEVICE;
    st = decodeStatus(await expectGrpcError(agent.apply(bothDevice)));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['link.spec.endpoints[1].role'],
    );

    // Same link name, different pair of agents: a second link claiming an existing id.
    st = decodeStatus(await expectGrpcError(agent.apply(makeLink('l-base', { driver: 'card-z' }))));
    assert.equal(st.code, status.ALREADY_EXISTS);
    assert.equal(st.reason, 'LINK_ALREADY_EXISTS');

    st = decodeStatus(await expectGrpcError(agent.apply(makeLink('l-bad4', { device: 'other-1', driver: 'other-2' }))));
    assert.equal(st.code, status.FAILED_PRECONDITION);
    assert.equal(st.reason, 'LINK_NOT_FOR_THIS_AGENT');

    const stale = makeLink('l-base', { rv: '999999', devices: [bytePipeDevice('con9')] });
    st = decodeStatus(await expectGrpcError(agent.apply(stale)));
    assert.equal(st.code, status.ABORTED);
    assert.equal(st.reason, 'STALE_RESOURCE_VERSION');

    const unsupported = makeLink('l-bad5');
    (unsupported.spec as { transport: unknown }).transport = {
      kind: { $case: 'pciEpf', value: { controller: 'c0', function: 'f0', bar: 0, sizeBytes: 0n } },
    };
    st = decodeStatus(await expectGrpcError(agent.apply(unsupported)));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['link.spec.transport'],
    );

    // A stream link without a secret needs allow_plaintext said explicitly (this agent has no
    // certificates for TLS).
    const plain = makeLink('l-bad6');
    (plain.spec as { transport: unknown }).transport = {
      kind: {
        $case: 'stream',
        value: {
          protocol: 1,
          address: '127.0.0.1:1',
          listenAddress: '',
          secret: '',
          allowPlaintext: false,
          idleTimeoutMs: 0,
          disableTls: false,
          tlsPeerName: '',
        },
      },
    };
    st = decodeStatus(await expectGrpcError(agent.apply(plain)));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['link.spec.transport.stream.secret'],
    );

    st = decodeStatus(await expectGrpcError(agent.get('nope')));
    assert.equal(st.code, status.NOT_FOUND);
    st = decodeStatus(await expectGrpcError(agent.delete('nope')));
    assert.equal(st.code, status.NOT_FOUND);
    st = decodeStatus(await expectGrpcError(agent.get('Bad_Name')));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['name'],
    );

    const dry = await agent.apply(makeLink('l-dry'), false, true);
    assert.equal(dry.changed, true);
    st = decodeStatus(await expectGrpcError(agent.get('l-dry')));
    assert.equal(st.code, status.NOT_FOUND, 'dry run created nothing');

    const after = (await agent.list()).links.map((l) => `${l.meta?.name}@${l.meta?.resourceVersion}`);
    assert.deepEqual(after, before);
    assert.deepEqual(storedLinks(srv.stateDir), files);
    await agent.delete('l-base');
  });

  it('hot-adds and removes devices, refusing duplicates, unknown and last devices', async () => {
    const base = await agent.apply(makeLink('l-hot', { devices: [bytePipeDevice('con0')] }));
    const rv = base.link?.meta?.resourceVersion ?? '';
    const added = await agent.addDevice('l-hot', bytePipeDevice('disk0', 'blk'), rv);
    assert.deepEqual(
      added.link?.spec?.devices.map((d) => d.name),
      ['con0', 'disk0'],
    );
    assert.equal(added.link?.meta?.generation, 2n);
    let st = decodeStatus(await expectGrpcError(agent.addDevice('l-hot', bytePipeDevice('disk0', 'blk'))));
    assert.equal(st.code, status.ALREADY_EXISTS);
    st = decodeStatus(await expectGrpcError(agent.addDevice('l-hot', bytePipeDevice('disk1', 'blk'), rv)));
    assert.equal(st.code, status.ABORTED, 'stale resource_version');
    st = decodeStatus(await expectGrpcError(agent.addDevice('l-hot', bytePipeDevice('d', 'console', 3))));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      st.fieldViolations.map((v) => v.field),
      ['device.queue_size'],
    );
    st = decodeStatus(await expectGrpcError(agent.removeDevice('l-hot', 'nothing')));
    assert.equal(st.code, status.NOT_FOUND);
    const removed = await agent.removeDevice('l-hot', 'con0');
    assert.deepEqual(
      removed.link?.spec?.devices.map((d) => d.name),
      ['disk0'],
    );
    st = decodeStatus(await expectGrpcError(agent.removeDevice('l-hot', 'disk0')));
    assert.equal(st.code, status.FAILED_PRECONDITION);
    assert.equal(st.reason, 'LAST_DEVICE');
    const stats = await agent.stats('l-hot');
    assert.deepEqual(
      stats.devices.map((d) => d.device),
      ['disk0'],
    );
    assert.deepEqual(
      stats.devices[0]?.queues.map((q) => q.name),
      ['requestq', 'completionq'],
      'byte-pipe stand-in queues',
    );
    await agent.delete('l-hot');
  });

  it('lists with a label selector and pages', async () => {
    for (const n of ['p-1', 'p-2', 'p-3']) await agent.apply(makeLink(n, { labels: { group: 'pg', n } }));
    const sel = await agent.list('group=pg,n!=p-2');
    assert.deepEqual(
      sel.links.map((l) => l.meta?.name),
      ['p-1', 'p-3'],
    );
    const page1 = await agent.list('group=pg', 2);
    assert.deepEqual(
      page1.links.map((l) => l.meta?.name),
      ['p-1', 'p-2'],
    );
    assert.equal(page1.nextPageToken, 'p-2');
    const page2 = await agent.list('group=pg', 2, page1.nextPageToken);
    assert.deepEqual(
      page2.links.map((l) => l.meta?.name),
      ['p-3'],
    );
    assert.equal(page2.nextPageToken, '');
    const st = decodeStatus(await expectGrpcError(agent.list('a in (')));
    assert.equal(st.code, status.INVALID_ARGUMENT);
    for (const n of ['p-1', 'p-2', 'p-3']) await agent.delete(n);
  });

  it('watches: snapshot, SYNCED, then ADDED, MODIFIED, events and DELETED', async () => {
    await agent.apply(makeLink('w-old', { labels: { watch: 'yes' } }));
    const w = agent.watch('watch=yes');
    try {
      await w.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED);
      assert.equal(w.messages[0]?.type, WatchEventType.WATCH_EVENT_TYPE_ADDED);
      assert.equal(w.messages[0]?.link?.meta?.name, 'w-old');
      await agent.apply(makeLink('w-new', { labels: { watch: 'yes' } }));
      await w.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_ADDED && m.link?.meta?.name === 'w-new');
      await agent.apply(makeLink('w-unwatched', { labels: { watch: 'no' } }));
      await agent.reset('w-new', 'test');
      await w.waitFor((m) => m.event?.reason === 'LinkReset' && m.event.link === 'w-new');
      await agent.delete('w-new');
      await w.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_DELETED && m.link?.meta?.name === 'w-new');
      assert.ok(!w.messages.some((m) => m.link?.meta?.name === 'w-unwatched'), 'selector filters');
    } finally {
      w.stream.cancel();
      await agent.delete('w-old');
      await agent.delete('w-unwatched');
    }
  });

  it('answers AttachConsole with the right code for each refusal', async () => {
    await agent.apply(makeLink('c-1'));
    const attach = (first: AttachConsoleRequest): Promise<{ code: number; reason: string | null }> =>
      new Promise((resolve) => {
        const s = agent.client.attachConsole();
        s.on('data', () => undefined);
        s.on('error', (err: ServiceError) => resolve({ code: err.code, reason: decodeStatus(err).reason }));
        s.on('end', () => resolve({ code: status.OK, reason: null }));
        s.write(first);
      });
    const open = (link: string, device: string, write = false): AttachConsoleRequest => ({
      msg: { $case: 'open', value: { link, device, write, replayBytes: 0 } },
    });
    assert.deepEqual(await attach({ msg: { $case: 'input', value: Buffer.from('x') } }), {
      code: status.INVALID_ARGUMENT,
      reason: 'INVALID_ARGUMENT',
    });
    assert.deepEqual(await attach(open('nope', 'con0')), { code: status.NOT_FOUND, reason: 'LINK_NOT_FOUND' });
    assert.deepEqual(await attach(open('c-1', 'nope')), { code: status.NOT_FOUND, reason: 'DEVICE_NOT_FOUND' });
    assert.deepEqual(await attach(open('c-1', 'disk0')), { code: status.FAILED_PRECONDITION, reason: 'NOT_A_CONSOLE' });
    // The byte-pipe stand-in has no console surface yet (the console backend is not exposed to the agent).
    assert.deepEqual(await attach(open('c-1', 'con0', true)), {
      code: status.FAILED_PRECONDITION,
      reason: 'CONSOLE_NOT_RUNNING',
    });
    await agent.delete('c-1');
  });

  it('serves /metrics with link state that promtool accepts', async () => {
    await agent.apply(makeLink('m-1'));
    const text = await (await fetch(`http://${srv.metrics}/metrics`)).text();
    assert.match(text, /vop_link_state\{link="m-1",state="[A-Za-z]+"\} 1/);
    assert.match(text, /vop_link_condition\{link="m-1",condition="PeerConnected",status="(True|False|Unknown)"\} 1/);
    assert.match(text, /vop_agent_info\{version="[^"]+",native_version="[^"]+"\} 1/);
    assert.match(text, /vop_queue_buffers_total\{link="m-1",device="con0",queue="receiveq",direction="tx"\} 0/);
    const lint = await run(promtoolPath(), ['check', 'metrics'], { input: withoutKnownPromClientLintNames(text) });
    assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
    await agent.delete('m-1');
    const after = await (await fetch(`http://${srv.metrics}/metrics`)).text();
    assert.doesNotMatch(after, /link="m-1"/, 'a deleted link leaves no series behind');
  });
});

describe('vop-agent restart', () => {
  it('restores its links from the state directory without a controller', async () => {
    const stateDir = tempDir('agent-state');
    const rdv = tempDir('rdv');
    let srv = await startServer(
      'agent',
      ['--node-name', 'host-a', '--rendezvous-dir', rdv, '--disk-dir', testDiskDir()],
      { stateDir },
    );
    let agent = new Agent(srv.admin);
    const applied = await agent.apply(makeLink('r-1', { labels: { keep: 'me' } }));
    await agent.apply(makeLink('r-2'));
    await agent.delete('r-2');
    agent.close();
    await srv.stop('SIGKILL');
    srv = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, '--disk-dir', testDiskDir()], {
      stateDir,
    });
    agent = new Agent(srv.admin);
    try {
      const links = (await agent.list()).links;
      assert.deepEqual(
        links.map((l) => l.meta?.name),
        ['r-1'],
      );
      assert.equal(links[0]?.meta?.resourceVersion, applied.link?.meta?.resourceVersion);
      assert.equal(links[0]?.meta?.generation, 1n);
      assert.deepEqual(links[0]?.meta?.labels, { keep: 'me' });
      const again = await agent.apply(makeLink('r-1', { labels: { keep: 'me' } }));
      assert.equal(again.changed, false, 'restored spec equals the applied one');
      const next = await agent.apply(makeLink('r-1', { labels: { keep: 'too' } }));
      assert.ok(
        BigInt(next.link?.meta?.resourceVersion ?? '0') > BigInt(applied.link?.meta?.resourceVersion ?? '0'),
        'resource versions keep increasing',
      );
    } finally {
      agent.close();
      await srv.stop('SIGTERM');
    }
  });
});
