/**
 * Unit tests of controller/src/state/stream-endpoints.ts (what the controller fills in a stream
 * link's spec), on a stand-in for the object cache holding agents and links: the port comes from
 * the device side agent's range and is kept across re-renders, ports reserved by a write in flight
 * are not handed out twice, an exhausted range and a missing data plane throw with the reason,
 * a secret is kept or generated (32 bytes), and nothing is filled where the spec names it.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Role, StreamProtocol, type Agent, type Link, type LinkSpec } from '../../lib/proto/types';
import { validateLink } from '../../lib/src/validate';
import type { ObjectCache } from '../../controller/src/state/object-cache';
import { StreamEndpoints, StreamFillError } from '../../controller/src/state/stream-endpoints';

function spec(
  over: Partial<{ address: string; secret: string; protocol: StreamProtocol; plain: boolean }> = {},
): LinkSpec {
  return {
    endpoints: [
      { agent: 'host', role: Role.ROLE_DEVICE },
      { agent: 'card', role: Role.ROLE_DRIVER },
    ],
    transport: {
      kind: {
        $case: 'stream',
        value: {
          protocol: over.protocol ?? StreamProtocol.STREAM_PROTOCOL_TCP,
          address: over.address ?? '',
          listenAddress: '',
          secret: over.secret ?? '',
          allowPlaintext: over.plain ?? false,
          idleTimeoutMs: 0,
          disableTls: false,
          tlsPeerName: '',
        },
      },
    },
    devices: [{ name: 'c', queueSize: 0, disableEventIdx: false, kind: { $case: 'console', value: {} as never } }],
  };
}

function stream(s: LinkSpec): { address: string; listenAddress: string; secret: string } {
  const k = s.transport?.kind;
  if (k?.$case !== 'stream') throw new Error('not a stream spec');
  return k.value;
}

/** A stand-in cache: agents with data planes, links by name, and the per-agent link index. */
function fixture(dataPlane = '10.0.0.1', first = 7400, last = 7401) {
  const links = new Map<string, { obj: Link }>();
  const agents = new Map<string, { obj: Agent }>();
  const status = (dp: string): Agent =>
    ({
      status: {
        addresses: { grpc: '', metrics: '', dataPlane: dp, dataPlanePorts: dp ? { first, last } : undefined },
      },
    }) as Agent;
  agents.set('host', { obj: status(dataPlane) });
  agents.set('card', { obj: status('') });
  const byAgent = (a: string): ReadonlySet<string> =>
    new Set([...links].filter(([, l]) => l.obj.spec?.endpoints.some((e) => e.agent === a)).map(([n]) => n));
  const se = new StreamEndpoints({ links, agents } as unknown as ObjectCache, byAgent);
  const store = (name: string, s: LinkSpec): void => {
    links.set(name, { obj: { meta: undefined, spec: s, status: undefined } });
  };
  return { se, store, links, agents, status };
}

describe('StreamEndpoints: what the controller fills in a stream link', () => {
  it('fills address and listen address from the device agent data plane and generates a 32-byte secret; the result passes agent validation', () => {
    const { se } = fixture();
    const f = se.fill('l1', spec(), undefined);
    const t = stream(f.spec);
    assert.equal(t.address, '10.0.0.1:7400');
    assert.equal(t.listenAddress, '10.0.0.1:7400');
    assert.equal(Buffer.from(t.secret, 'base64url').length, 32);
    validateLink({ meta: { name: 'l1', labels: {}, annotations: {} } as never, spec: f.spec, status: undefined });
    f.release();
  });

  it('keeps the port and secret the stored link has across re-renders, and hands out the next free port to another link', () => {
    const { se, store } = fixture();
    const first = se.fill('l1', spec(), undefined);
    store('l1', first.spec);
    first.release();
    const again = se.fill('l1', spec(), first.spec);
    assert.equal(stream(again.spec).address, '10.0.0.1:7400');
    assert.equal(stream(again.spec).secret, stream(first.spec).secret);
    const other = se.fill('l2', spec(), undefined);
    assert.equal(stream(other.spec).address, '10.0.0.1:7401');
    assert.notEqual(stream(other.spec).secret, stream(first.spec).secret, 'one secret per link');
  });

  it('never hands out a port reserved by a write in flight; releasing it frees it', () => {
    const { se } = fixture('10.0.0.1', 7400, 7400);
    const a = se.fill('a', spec(), undefined);
    assert.throws(
      () => se.fill('b', spec(), undefined),
      (e: unknown) =>
        e instanceof StreamFillError && e.reason === 'DataPlanePortsExhausted' && /7400-7400/.test(e.message),
    );
    a.release();
    assert.equal(stream(se.fill('b', spec(), undefined).spec).address, '10.0.0.1:7400');
  });

  it('refuses a device agent that registered no data plane, naming the agent and the config field', () => {
    const { se, agents, status } = fixture();
    agents.set('host', { obj: status('') });
    assert.throws(
      () => se.fill('l1', spec(), undefined),
      (e: unknown) =>
        e instanceof StreamFillError && e.reason === 'NoDataPlaneAddress' && /"host".*dataPlane/.test(e.message),
    );
  });

  it('moves a link to the new address when the agent registers another data plane', () => {
    const { se, store, agents, status } = fixture();
    const f = se.fill('l1', spec(), undefined);
    store('l1', f.spec);
    f.release();
    agents.set('host', { obj: status('10.0.0.9') });
    assert.equal(stream(se.fill('l1', spec(), f.spec).spec).address, '10.0.0.9:7400');
  });

  it('fills nothing the spec names: a given address and secret, a plaintext link, a Unix socket', () => {
    const { se } = fixture();
    const given = spec({ address: '10.1.1.1:9000', secret: 'x'.repeat(20) });
    assert.equal(se.fill('l1', given, undefined).spec, given);
    const plain = se.fill('l2', spec({ address: '10.1.1.1:9001', plain: true }), undefined);
    assert.equal(stream(plain.spec).secret, '');
    const ux = se.fill(
      'l3',
      spec({ protocol: StreamProtocol.STREAM_PROTOCOL_UNIX, address: '/run/x.sock' }),
      undefined,
    );
    assert.equal(stream(ux.spec).address, '/run/x.sock');
    assert.equal(
      Buffer.from(stream(ux.spec).secret, 'base64url').length,
      32,
      'a Unix link gets a generated secret too',
    );
  });
});
