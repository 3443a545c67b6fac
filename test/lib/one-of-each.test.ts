/**
 * Unit tests of the helpers agent and controller share from lib/: spec equality, status equality,
 * backoff, FNV-1a and the data-plane limits. Each is the only implementation of its concept, so
 * these pin the behaviour both sides rely on.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ConditionStatus,
  DeviceKind,
  LinkPhase,
  LinkPolicySpec,
  Role,
  TransportStatus,
  type LinkSpec,
  type LinkStatus,
} from '../../lib/proto/types';
import { backoffDelayMs, Backoff } from '../../lib/src/backoff';
import { fnv1a32, fnv1a32Hex } from '../../lib/src/fnv';
import {
  DEFAULT_QUEUE_SIZE,
  HARD_LIMITS,
  isGroupMac,
  MAC_RE,
  MAX_DEVICES_PER_WINDOW,
  VIRTQUEUE_MAX_SIZE,
} from '../../lib/src/limits';
import { linkSpecEqual, protoEqual } from '../../lib/src/proto-equal';
import { conditionEqual, linkStatusEqual } from '../../lib/src/status-equal';

function spec(mac: string): LinkSpec {
  return {
    endpoints: [
      { agent: 'host-1', role: Role.ROLE_DEVICE },
      { agent: 'card-1', role: Role.ROLE_DRIVER },
    ],
    transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: 0n } } },
    devices: [
      {
        name: 'net0',
        queueSize: 0,
        disableEventIdx: false,
        kind: {
          $case: 'net',
          value: { mac, mtu: 0, deviceBackend: undefined, driverFrontend: undefined, offloads: false },
        },
      },
    ],
  };
}

function status(over: Partial<LinkStatus> = {}): LinkStatus {
  return {
    phase: LinkPhase.LINK_PHASE_READY,
    observedGeneration: 2n,
    conditions: [
      {
        type: 'Ready',
        status: ConditionStatus.CONDITION_STATUS_TRUE,
        reason: 'LinkReady',
        message: 'ok',
        observedGeneration: 2n,
        lastTransitionTime: new Date(1000),
      },
    ],
    devices: [
      {
        name: 'net0',
        kind: DeviceKind.DEVICE_KIND_NET,
        ready: true,
        endpoints: { tap: 'vop0' },
        conditions: [],
        negotiatedFeatures: 0n,
      },
    ],
    epoch: 1n,
    resetCount: 0,
    lastTransitionTime: new Date(1000),
    endpointPhases: {},
    stream: undefined,
    transport: undefined,
    ...over,
  };
}

describe('spec equality (lib/src/proto-equal.ts)', () => {
  it('calls equal specs equal, a changed field different, and undefined the empty spec', () => {
    assert.ok(linkSpecEqual(spec('02:00:00:00:00:01'), spec('02:00:00:00:00:01')));
    assert.ok(!linkSpecEqual(spec('02:00:00:00:00:01'), spec('02:00:00:00:00:02')));
    assert.ok(linkSpecEqual(undefined, { endpoints: [], transport: undefined, devices: [] }));
    assert.ok(!linkSpecEqual(undefined, spec('02:00:00:00:00:01')));
  });

  it('calls messages whose maps differ only in insertion order equal', () => {
    const a = LinkPolicySpec.fromPartial({ cardSelector: { matchLabels: { a: '1', b: '2' } } });
    const b = LinkPolicySpec.fromPartial({ cardSelector: { matchLabels: { b: '2', a: '1' } } });
    assert.notDeepEqual(LinkPolicySpec.encode(a).finish(), LinkPolicySpec.encode(b).finish());
    assert.ok(protoEqual(LinkPolicySpec, a, b));
    const c = LinkPolicySpec.fromPartial({ cardSelector: { matchLabels: { b: '2', a: '3' } } });
    assert.ok(!protoEqual(LinkPolicySpec, a, c));
  });
});

describe('status equality (lib/src/status-equal.ts)', () => {
  it('ignores timestamps and nothing else', () => {
    const base = status();
    const later = status({ lastTransitionTime: new Date(9000) });
    later.conditions = later.conditions.map((c) => ({ ...c, lastTransitionTime: new Date(9000) }));
    assert.ok(linkStatusEqual(base, later));
    assert.ok(conditionEqual(base.conditions[0]!, later.conditions[0]!));
    assert.ok(!linkStatusEqual(base, status({ phase: LinkPhase.LINK_PHASE_DEGRADED })));
    assert.ok(!linkStatusEqual(base, status({ observedGeneration: 3n })));
    assert.ok(!linkStatusEqual(base, status({ resetCount: 1 })));
    assert.ok(!linkStatusEqual(base, status({ endpointPhases: { a: LinkPhase.LINK_PHASE_READY } })));
    const pci = TransportStatus.fromPartial({ kind: 'pci-bar', peerId: -1 });
    assert.ok(linkStatusEqual(status({ transport: pci }), status({ transport: { ...pci } })));
    assert.ok(!linkStatusEqual(status({ transport: pci }), status({ transport: { ...pci, peerId: 2 } })));
    assert.ok(!linkStatusEqual(base, status({ transport: pci })));
    const otherTap = status();
    otherTap.devices = [{ ...otherTap.devices[0]!, endpoints: { tap: 'vop1' } }];
    assert.ok(!linkStatusEqual(base, otherTap));
    const otherMessage = status();
    otherMessage.conditions = [{ ...otherMessage.conditions[0]!, message: 'changed' }];
    assert.ok(!linkStatusEqual(base, otherMessage));
    assert.ok(linkStatusEqual(undefined, undefined));
    assert.ok(!linkStatusEqual(undefined, base));
  });
});

describe('backoff (lib/src/backoff.ts)', () => {
  it('doubles from the initial delay to the cap, within the jitter range', () => {
    const policy = { initialMs: 100, maxMs: 1000, jitter: [0.8, 1.2] as const };
    for (let i = 0; i < 200; i++) {
      for (const [retry, base] of [
        [0, 100],
        [1, 200],
        [3, 800],
        [4, 1000],
        [60, 1000],
        [5000, 1000],
      ] as const) {
        const d = backoffDelayMs(policy, retry);
        assert.ok(d >= Math.floor(base * 0.8) && d <= Math.ceil(base * 1.2), `retry ${retry}: ${d}`);
      }
    }
    const up = { initialMs: 5, maxMs: 30_000, jitter: [1, 1.2] as const };
    for (let i = 0; i < 200; i++) assert.ok(backoffDelayMs(up, 2) >= 20);
  });

  it('counts retries until reset', () => {
    const b = new Backoff({ initialMs: 10, maxMs: 1000, jitter: [1, 1] });
    assert.deepEqual([b.next(), b.next(), b.next()], [10, 20, 40]);
    assert.equal(b.retries, 3);
    b.reset();
    assert.equal(b.next(), 10);
  });
});

describe('FNV-1a (lib/src/fnv.ts)', () => {
  it('matches the published 32-bit test vectors', () => {
    assert.equal(fnv1a32(''), 0x811c9dc5);
    assert.equal(fnv1a32('a'), 0xe40c292c);
    assert.equal(fnv1a32('foobar'), 0xbf9cf968);
    assert.equal(fnv1a32Hex('a'), 'e40c292c');
    assert.equal(fnv1a32Hex('').length, 8);
  });
});

describe('data-plane limits (lib/src/limits.ts)', () => {
  it('bound the configurable maxima and recognise unicast MACs', () => {
    assert.equal(HARD_LIMITS.maxQueueSize, VIRTQUEUE_MAX_SIZE);
    assert.equal(HARD_LIMITS.maxDevicesPerLink, MAX_DEVICES_PER_WINDOW);
    assert.ok(DEFAULT_QUEUE_SIZE <= VIRTQUEUE_MAX_SIZE);
    assert.ok(MAC_RE.test('02:00:00:00:00:01') && MAC_RE.test('52:54:00:AB:cd:ef'));
    assert.ok(!MAC_RE.test('02-00-00-00-00-01') && !MAC_RE.test('02:00:00:00:00'));
    assert.ok(!isGroupMac('02:00:00:00:00:01'));
    assert.ok(isGroupMac('01:00:5e:00:00:01') && isGroupMac('ff:ff:ff:ff:ff:ff'));
  });
});
