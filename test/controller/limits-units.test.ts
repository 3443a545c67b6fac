/**
 * Unit tests of the pure pieces behind registration and sync limits: which registered
 * addresses count as verified, how a desired version is split into parts, and the admission
 * of registrations (the leader's token bucket and the agent's wait).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { status as GrpcStatus } from '@grpc/grpc-js';

import { retryAfterDelayMs, throttledDelayMs } from '../../agent/src/sync/sync-client';
import { Role, type Link } from '../../lib/proto/types';
import { ServerError } from '../../lib/src/errors';
import { canonicalIp, peerIpOf } from '../../lib/src/net';
import { verifyAddress, type PeerEvidence } from '../../controller/src/sync/address-verification';
import { chunkDesired, desiredBytes } from '../../controller/src/sync/desired-chunks';
import { RegistrationAdmission, RetryPacer } from '../../controller/src/sync/registration-admission';
import type { DesiredVersion } from '../../controller/src/state/agent-runtime';

describe('address verification', () => {
  const ev: PeerEvidence = { peerIp: '10.0.0.5', sanIps: ['10.0.0.6'], sanDns: ['card-1', '*.cards.example'] };

  it('canonicalises peer and SAN addresses (IPv4-mapped IPv6, brackets, ports)', () => {
    assert.equal(canonicalIp('::ffff:127.0.0.1'), '127.0.0.1');
    assert.equal(canonicalIp('0:0:0:0:0:0:0:1'), '::1');
    assert.equal(canonicalIp('card-1'), '');
    assert.equal(peerIpOf('[::1]:5000'), '::1');
    assert.equal(peerIpOf('::ffff:10.0.0.1:443'), '10.0.0.1');
    assert.equal(peerIpOf('10.0.0.1:443'), '10.0.0.1');
    assert.equal(peerIpOf('unknown'), '');
  });

  it('accepts the connection address, an IP or DNS SAN (one-label wildcard) and fills in an unspecified host', () => {
    assert.deepEqual(verifyAddress('10.0.0.5:7411', ev), { address: '10.0.0.5:7411', problem: null });
    assert.deepEqual(verifyAddress('10.0.0.6:7411', ev), { address: '10.0.0.6:7411', problem: null });
    assert.deepEqual(verifyAddress('card-1:7411', ev), { address: 'card-1:7411', problem: null });
    assert.deepEqual(verifyAddress('c7.cards.example:7411', ev), { address: 'c7.cards.example:7411', problem: null });
    assert.deepEqual(verifyAddress('0.0.0.0:9411', ev), { address: '10.0.0.5:9411', problem: null });
    assert.deepEqual(verifyAddress('[::]:9411', ev), { address: '10.0.0.5:9411', problem: null });
    assert.deepEqual(verifyAddress('', ev), { address: '', problem: null });
  });

  it('refuses any other host, naming the evidence', () => {
    for (const a of ['169.254.169.254:80', 'a.b.cards.example:1', 'cards.example:1', 'localhost:7411', '10.0.0.7:1']) {
      const r = verifyAddress(a, ev);
      assert.equal(r.address, '', a);
      assert.match(r.problem ?? '', /matches neither the agent's certificate nor the address it connected from/, a);
      assert.match(r.problem ?? '', /IP:10\.0\.0\.6, DNS:card-1, DNS:\*\.cards\.example; Sync stream from 10\.0\.0\.5/);
    }
    assert.deepEqual(verifyAddress('localhost:7411', { peerIp: '127.0.0.1', sanIps: [], sanDns: [] }), {
      address: 'localhost:7411',
      problem: null,
    });
    assert.match(verifyAddress('0.0.0.0:1', { peerIp: '', sanIps: [], sanDns: [] }).problem ?? '', /unspecified host/);
  });
});

describe('desired-links parts', () => {
  const big = (i: number): Link => ({
    meta: {
      name: `l${i}`,
      labels: {},
      annotations: { 'vop.dev/blob': 'x'.repeat(100_000) },
      generation: 1n,
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: 'controller',
    },
    spec: {
      endpoints: [
        { agent: 'a', role: Role.ROLE_DEVICE },
        { agent: 'b', role: Role.ROLE_DRIVER },
      ],
      transport: undefined,
      devices: [],
    },
    status: undefined,
  });

  const STORE = { clusterId: '0b5e7c8e-1111-4222-8333-944455556666', generation: 41n };
  const version = (v: bigint, fullSnapshot: boolean, upserts: Link[], deletes: string[]): DesiredVersion => ({
    version: v,
    fullSnapshot,
    upserts,
    deletes,
    storeIdentity: STORE,
    adopt: false,
  });

  it('splits a version into parts within the size, in order, marking all but the last', () => {
    const links = Array.from({ length: 10 }, (_, i) => big(i));
    const deletes = Array.from({ length: 1000 }, (_, i) => `gone-${i}`);
    const parts = chunkDesired(version(7n, true, links, deletes), 256 * 1024);
    assert.ok(parts.length >= 4, `${parts.length} parts`);
    for (const [i, p] of parts.entries()) {
      assert.equal(p.version, 7n);
      assert.equal(p.fullSnapshot, true);
      assert.deepEqual(p.storeIdentity, STORE, 'every part carries the store identity');
      assert.equal(p.more, i < parts.length - 1);
      assert.ok(desiredBytes(p) <= 256 * 1024, `part ${i} is ${desiredBytes(p)} bytes`);
    }
    assert.deepEqual(
      parts.flatMap((p) => p.upserts.map((l) => l.meta?.name)),
      links.map((l) => l.meta?.name),
    );
    assert.deepEqual(
      parts.flatMap((p) => p.deletes),
      deletes,
    );
  });

  it('sends a small version as one message and a link larger than a part alone', () => {
    assert.equal(chunkDesired(version(1n, false, [big(0)], ['x']), 4 << 20).length, 1);
    assert.equal(chunkDesired(version(1n, false, [], []), 4 << 20).length, 1);
    const parts = chunkDesired(version(2n, true, [big(0), big(1)], []), 50_000);
    assert.deepEqual(
      parts.map((p) => p.upserts.length),
      [1, 1],
    );
  });
});

describe('registration admission', () => {
  it('admits a burst, then refuses with RESOURCE_EXHAUSTED and retry slots one token apart, and admits again as tokens come back', () => {
    let now = 1000;
    const adm = new RegistrationAdmission({ ratePerSecond: 10, burst: 3 }, () => now);
    for (let i = 0; i < 3; i++) adm.admit(`a${i}`);
    const retries: number[] = [];
    for (let i = 0; i < 3; i++) {
      try {
        adm.admit(`late${i}`);
        assert.fail('admitted past the burst');
      } catch (err) {
        assert.ok(err instanceof ServerError);
        assert.equal(err.code, GrpcStatus.RESOURCE_EXHAUSTED);
        assert.equal(err.reason, 'REGISTRATIONS_THROTTLED');
        assert.match(err.message, /syncAdmission\.registrationsPerSecond/);
        retries.push(Number(err.metadata.retryAfterMs));
      }
    }
    // Each refused agent gets its own slot, 100 ms (one token at 10/s) after the previous one.
    assert.deepEqual(retries, [200, 200, 300]);
    now += 100;
    adm.admit('after-one-token');
    assert.throws(() => adm.admit('again'), /retry in/);
    assert.equal(adm.admitted, 4);
    assert.equal(adm.refused, 4);
    // 0: unlimited.
    const open = new RegistrationAdmission({ ratePerSecond: 0, burst: 1 }, () => now);
    for (let i = 0; i < 1000; i++) open.admit(`x${i}`);
  });

  it('paces retries: slots one rate-interval apart, at least 200 ms and at most 30 s away, moving with time', () => {
    let now = 0;
    const pacer = new RetryPacer(1000, () => now);
    const first = Array.from({ length: 5 }, () => pacer.next());
    assert.deepEqual(first, [200, 200, 200, 200, 200]);
    for (let i = 0; i < 995; i++) pacer.next();
    assert.equal(pacer.next(), 1001, 'the 1001st refusal in one instant comes back after 1 s');
    for (let i = 0; i < 100_000; i++) pacer.next();
    assert.equal(pacer.next(), 30_000, 'capped');
    now += 200_000;
    assert.equal(pacer.next(), 200, 'slots in the past are not handed out');
  });

  it('the agent waits the named retry time scaled by 1 to 1.5 (NOT_LEADER too), throttled only for REGISTRATIONS_THROTTLED', () => {
    assert.equal(
      retryAfterDelayMs({ metadata: { leader: 'a:1', retryAfterMs: '1000' } }, () => 0.5),
      1250,
    );
    assert.equal(retryAfterDelayMs({ metadata: { leader: 'a:1' } }), undefined, 'an older controller names none');
    assert.equal(retryAfterDelayMs({ metadata: { retryAfterMs: 'soon' } }), undefined);
    const info = { reason: 'REGISTRATIONS_THROTTLED', metadata: { retryAfterMs: '400' } };
    assert.equal(
      throttledDelayMs(info, () => 0),
      400,
    );
    assert.equal(
      throttledDelayMs(info, () => 0.999),
      600,
    );
    assert.equal(throttledDelayMs({ reason: 'NOT_LEADER', metadata: { retryAfterMs: '400' } }), undefined);
    assert.equal(throttledDelayMs({ reason: 'REGISTRATIONS_THROTTLED', metadata: {} }), undefined);
    assert.equal(throttledDelayMs(undefined), undefined);
  });
});
