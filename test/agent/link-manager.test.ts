/**
 * Unit tests of the link manager and its lifecycle against a fake data plane (this
 * module only; the real native layer is exercised by the two-agent tests).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';
import pino from 'pino';

import { ConditionStatus, LinkPhase } from '../../lib/proto/types';
import { type ServerError } from '../../lib/src/errors';
import { bytePipeStandIns } from '../../agent/src/backends/byte-pipe';
import { BackendRegistry } from '../../agent/src/backends/device-backend';
import {
  NativeError,
  type DataPlane,
  type DataPlaneEvent,
  type DataPlaneWindow,
  type LinkDevice,
  type PeerView,
  type TransportView,
  type QueueCounters,
} from '../../agent/src/links/data-plane';
import { LinkManager } from '../../agent/src/links/link-manager';
import { LinkStore } from '../../agent/src/links/link-store';
import { tempDir } from '../helpers/servers';
import { bytePipeDevice, makeLink, testPathPolicy } from './helpers';

class FakeWindow implements DataPlaneWindow {
  peerView: PeerView = { state: 'absent', epoch: 0 };
  devices = new Map<number, LinkDevice>();
  broken = new Map<number, string>();
  resets: number[] = [];
  added: number[] = [];
  removed: number[] = [];
  closed = false;
  constructor(
    readonly side: 'creator' | 'attacher',
    readonly onEvent: (e: DataPlaneEvent) => void,
  ) {}
  peer(): PeerView {
    return this.peerView;
  }
  transportView(): TransportView {
    return {
      transport: 'shm',
      mapping: 'wb',
      sizeBytes: 0n,
      ownId: -1,
      peerId: -1,
      signals: 0n,
      interrupts: 0n,
      polls: 0n,
    };
  }
  addDevice(spec: LinkDevice): void {
    this.devices.set(spec.devId, spec);
    this.added.push(spec.devId);
  }
  removeDevice(devId: number): void {
    this.devices.delete(devId);
    this.removed.push(devId);
  }
  deviceReady(devId: number): boolean {
    return this.peerView.state === 'up' && this.devices.has(devId);
  }
  resetDevice(devId: number): void {
    this.resets.push(devId);
    this.broken.delete(devId);
  }
  counters(devId: number): QueueCounters[] {
    const spec = this.devices.get(devId);
    return (spec?.queues ?? []).map((_q, index) => ({
      index,
      size: 256,
      buffers: 0n,
      bytes: 0n,
      notificationsSent: 0n,
      notificationsSuppressed: 0n,
      wakeups: 0n,
      pollNs: 0n,
      sleepNs: 0n,
      errors: new Map<string, bigint>(),
      broken: index === 0 ? (this.broken.get(devId) ?? '') : '',
    }));
  }
  failure(): string | null {
    return null;
  }
  deviceIssue(): string {
    return '';
  }
  replaced(): boolean {
    return false;
  }
  deviceCounters() {
    return null;
  }
  endpoints() {
    return null;
  }
  negotiatedFeatures(): bigint {
    return 0n;
  }
  console() {
    return null;
  }
  workerTimes() {
    return { pollNs: 0n, sleepNs: 0n };
  }
  close(): void {
    this.closed = true;
  }
}

class FakeDataPlane implements DataPlane {
  readonly available = true;
  readonly version = 'fake';
  windows: FakeWindow[] = [];
  windowBytes(): number {
    return 1 << 20;
  }
  failOpens = 0;
  open(req: { side: 'creator' | 'attacher' }, onEvent: (e: DataPlaneEvent) => void): DataPlaneWindow {
    if (this.failOpens > 0) {
      this.failOpens -= 1;
      throw new NativeError('no memory (fake)', 'ENOMEM', 12);
    }
    const w = new FakeWindow(req.side, onEvent);
    this.windows.push(w);
    return w;
  }
  get last(): FakeWindow {
    const w = this.windows[this.windows.length - 1];
    if (!w) throw new Error('no window');
    return w;
  }
}

function setup(node = 'host-a'): { mgr: LinkManager; dp: FakeDataPlane; stateDir: string } {
  const dp = new FakeDataPlane();
  const stateDir = tempDir('lm');
  const log = pino({ level: 'silent' });
  const rendezvousDir = tempDir('lm-rdv');
  const mgr = new LinkManager({
    nodeName: node,
    rendezvousDir,
    dataPlane: dp,
    backends: new BackendRegistry(bytePipeStandIns()),
    paths: testPathPolicy(stateDir, rendezvousDir),
    store: new LinkStore(stateDir, log),
    log,
  });
  return { mgr, dp, stateDir };
}

async function until(pred: () => boolean, ms = 3000): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const direct = { owner: { kind: 'direct' as const }, force: false, dryRun: false };
const phase = (mgr: LinkManager, name: string): LinkPhase | undefined => mgr.get(name)?.status?.phase;
const cond = (mgr: LinkManager, name: string, type: string) =>
  mgr.get(name)?.status?.conditions.find((c) => c.type === type);

describe('link manager lifecycle', () => {
  it('waits for the peer with a reason, then negotiates to Ready', async () => {
    const { mgr, dp } = setup();
    await mgr.apply(makeLink('a'), direct);
    await until(() => cond(mgr, 'a', 'PeerConnected')?.reason === 'WaitingForPeer');
    assert.equal(phase(mgr, 'a'), LinkPhase.LINK_PHASE_CONNECTING);
    assert.equal(dp.last.side, 'creator', 'the device-role side creates the window');
    dp.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr, 'a') === LinkPhase.LINK_PHASE_READY);
    assert.equal(cond(mgr, 'a', 'Ready')?.status, ConditionStatus.CONDITION_STATUS_TRUE);
    assert.equal(cond(mgr, 'a', 'DevicesReady')?.status, ConditionStatus.CONDITION_STATUS_TRUE);
    mgr.shutdown();
  });

  it('the driver-role side waits for the window to appear', async () => {
    const dp = new FakeDataPlane();
    let appear = false;
    const orig = dp.open.bind(dp);
    dp.open = (req, onEvent) => {
      if (!appear) throw new NativeError('no window yet', 'ENOENT', 2);
      return orig(req, onEvent);
    };
    const log = pino({ level: 'silent' });
    const mgr = new LinkManager({
      nodeName: 'card-b',
      rendezvousDir: tempDir('rdv'),
      dataPlane: dp,
      backends: new BackendRegistry(bytePipeStandIns()),
      paths: testPathPolicy(tempDir('lm-paths'), tempDir('rdv')),
      store: new LinkStore(tempDir('lm'), log),
      log,
    });
    await mgr.apply(makeLink('b'), direct);
    await until(() => cond(mgr, 'b', 'PeerConnected')?.reason === 'WaitingForPeer');
    assert.match(cond(mgr, 'b', 'PeerConnected')?.message ?? '', /waiting for the device side to create/);
    appear = true;
    await until(() => dp.windows.length === 1);
    dp.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr, 'b') === LinkPhase.LINK_PHASE_READY);
    assert.equal(dp.last.side, 'attacher');
    mgr.shutdown();
  });

  it('hot add and remove touch only the changed device', async () => {
    const { mgr, dp } = setup();
    await mgr.apply(makeLink('h', { devices: [bytePipeDevice('con0')] }), direct);
    await until(() => dp.windows.length === 1);
    dp.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr, 'h') === LinkPhase.LINK_PHASE_READY);
    const w = dp.last;
    await mgr.apply(makeLink('h', { devices: [bytePipeDevice('con0'), bytePipeDevice('disk0', 'blk')] }), direct);
    await mgr.apply(makeLink('h', { devices: [bytePipeDevice('disk0', 'blk')] }), direct);
    await until(() => phase(mgr, 'h') === LinkPhase.LINK_PHASE_READY);
    assert.equal(dp.windows.length, 1, 'no new window');
    assert.equal(w.added.length, 2);
    assert.equal(w.removed.length, 1);
    assert.deepEqual(w.resets, [], 'no device was reset');
    assert.equal(mgr.get('h')?.status?.resetCount, 0);
    mgr.shutdown();
  });

  it('a broken queue degrades the link, resets that device and recovers', async () => {
    const { mgr, dp } = setup();
    const events: string[] = [];
    mgr.subscribe((c) => {
      if (c.type === 'event') events.push(c.event.reason);
    });
    await mgr.apply(makeLink('q'), direct);
    await until(() => dp.windows.length === 1);
    dp.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr, 'q') === LinkPhase.LINK_PHASE_READY);
    const [devId] = [...dp.last.devices.keys()];
    dp.last.broken.set(devId ?? 0, 'chain_loop');
    dp.last.onEvent({ type: 'queue-broken', devId: devId ?? 0, queue: 0, reason: 'chain_loop' });
    await until(() => events.includes('QueueBroken'));
    await until(() => phase(mgr, 'q') === LinkPhase.LINK_PHASE_READY);
    assert.deepEqual(dp.last.resets, [devId]);
    mgr.shutdown();
  });

  it('peer gone and peer restart reset the link and bring it back', async () => {
    const { mgr, dp } = setup();
    const events: string[] = [];
    mgr.subscribe((c) => {
      if (c.type === 'event') events.push(c.event.reason);
    });
    await mgr.apply(makeLink('p'), direct);
    await until(() => dp.windows.length === 1);
    dp.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr, 'p') === LinkPhase.LINK_PHASE_READY);
    dp.last.peerView = { state: 'gone', epoch: 1 };
    dp.last.onEvent({ type: 'peer-gone' });
    await until(() => cond(mgr, 'p', 'PeerConnected')?.reason === 'PeerGone');
    assert.notEqual(phase(mgr, 'p'), LinkPhase.LINK_PHASE_READY);
    dp.last.peerView = { state: 'up', epoch: 2 };
    await until(() => phase(mgr, 'p') === LinkPhase.LINK_PHASE_READY);
    assert.ok(events.includes('PeerGone'));
    assert.ok((mgr.get('p')?.status?.resetCount ?? 0) >= 1);
    assert.equal(dp.windows.length, 1, 'the creator keeps its window for the peer');
    mgr.shutdown();
  });

  it('failing opens are retried with backoff, then the link fails with RetryBudgetExhausted', async () => {
    const { mgr, dp } = setup();
    dp.failOpens = 2;
    await mgr.apply(makeLink('r'), direct);
    await until(() => dp.windows.length === 1, 5000);
    assert.ok((mgr.get('r')?.status?.resetCount ?? 0) >= 2);
    dp.failOpens = 100;
    await mgr.reset('r', 'test');
    await until(() => phase(mgr, 'r') === LinkPhase.LINK_PHASE_FAILED, 30_000);
    assert.equal(cond(mgr, 'r', 'Ready')?.reason, 'RetryBudgetExhausted');
    dp.failOpens = 0;
    await mgr.reset('r', 'operator fixed it');
    await until(() => phase(mgr, 'r') === LinkPhase.LINK_PHASE_CONNECTING);
    mgr.shutdown();
  });

  it('refuses direct changes to a controller-managed link unless forced', async () => {
    const { mgr } = setup();
    await mgr.apply(makeLink('m'), {
      owner: { kind: 'controller', managedBy: 'controller' },
      force: false,
      dryRun: false,
    });
    assert.equal(mgr.get('m')?.meta?.managedBy, 'controller');
    const change = makeLink('m', { devices: [bytePipeDevice('con0')] });
    await assert.rejects(
      mgr.apply(change, direct),
      (e: ServerError) => e.code === status.FAILED_PRECONDITION && e.reason === 'LINK_MANAGED',
    );
    await assert.rejects(
      mgr.delete('m', { owner: { kind: 'direct' }, force: false, resourceVersion: '' }),
      (e: ServerError) => e.reason === 'LINK_MANAGED',
    );
    const forced = await mgr.apply(change, { ...direct, force: true });
    assert.equal(forced.changed, true);
    assert.equal(forced.link.meta?.managedBy, 'controller');
    await mgr.delete('m', {
      owner: { kind: 'controller', managedBy: 'controller' },
      force: false,
      resourceVersion: '',
    });
    mgr.shutdown();
  });

  it('restores persisted links and starts them', async () => {
    const { mgr, stateDir } = setup();
    await mgr.apply(makeLink('s1'), direct);
    mgr.shutdown();
    const log = pino({ level: 'silent' });
    const dp2 = new FakeDataPlane();
    const mgr2 = new LinkManager({
      nodeName: 'host-a',
      rendezvousDir: tempDir('rdv'),
      dataPlane: dp2,
      backends: new BackendRegistry(bytePipeStandIns()),
      paths: testPathPolicy(stateDir, tempDir('rdv')),
      store: new LinkStore(stateDir, log),
      log,
    });
    assert.equal(mgr2.restore(), 1);
    await until(() => dp2.windows.length === 1);
    dp2.last.peerView = { state: 'up', epoch: 1 };
    await until(() => phase(mgr2, 's1') === LinkPhase.LINK_PHASE_READY);
    mgr2.shutdown();
  });
});
