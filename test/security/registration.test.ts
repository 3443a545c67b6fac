/**
 * A card chooses what it registers. These tests play a compromised card (a Sync client
 * holding a real agent certificate) against a real vop-controller with mutual TLS:
 * an oversized or malformed registration is refused with INVALID_ARGUMENT naming the
 * fields and nothing is stored; a registered address that matches neither the card's
 * certificate nor the address it connects from is neither dialled (stats, console) nor
 * published in /sd/agents, while a real agent's own address is.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';

import type { SyncRequest, SyncResponse } from '../../lib/proto/controller';
import {
  ConditionStatus,
  LinkPhase,
  LinkStatus,
  NodeRole,
  type Agent,
  type AgentIdentity,
} from '../../lib/proto/types';
import { waitFor } from '../controller/fleet-helpers';
import { call, decodeStatus } from '../helpers/grpc';
import { ctlApply, link, startSecureFleet, type SecureFleet } from './limits-fixtures';

function identity(name: string, over: Partial<AgentIdentity> = {}): AgentIdentity {
  return { nodeName: name, rack: 'r01', slot: 1, role: NodeRole.NODE_ROLE_CARD, hostNode: '', labels: {}, ...over };
}

/** Opens a Sync stream as `who`, sends a Register, resolves with the first answer or the error. */
function register(
  fleet: SecureFleet,
  who: string,
  reg: { identity: AgentIdentity; grpc?: string; metrics?: string },
): Promise<{ stream: ClientDuplexStream<SyncRequest, SyncResponse>; err: ServiceError | null }> {
  const stream = fleet.sync(who).sync();
  return new Promise((resolve) => {
    stream.once('data', () => resolve({ stream, err: null }));
    stream.once('error', (err: ServiceError) => resolve({ stream, err }));
    stream.write({
      msg: {
        $case: 'register',
        value: {
          identity: reg.identity,
          addresses: { grpc: reg.grpc ?? '', metrics: reg.metrics ?? '', dataPlane: '', dataPlanePorts: undefined },
          capabilities: { transports: [1], deviceKinds: [1, 2, 3], netAdmin: false },
          version: '0.1.0',
          ackedVersion: 0n,
          links: [],
          acceptsChunkedDesired: true,
          appliedIdentity: undefined,
        },
      },
    });
  });
}

/** Every byte the controller's SQLite store holds (database and WAL). */
function storeBytes(fleet: SecureFleet): Buffer {
  const dir = fleet.controller.stateDir;
  return Buffer.concat(
    readdirSync(dir)
      .filter((f) => f.startsWith('controller.db'))
      .map((f) => readFileSync(path.join(dir, f))),
  );
}

/** The agent as the controller returns it, or the error (NOT_FOUND when nothing was stored). */
async function getAgent(fleet: SecureFleet, name: string): Promise<Agent | ServiceError> {
  const c = fleet.ctl('ops-admin');
  try {
    const r = await call(c, c.getAgent, { name }, new Metadata());
    return r.agent ?? (new Error('empty GetAgent answer') as ServiceError);
  } catch (err) {
    return err as ServiceError;
  }
}

function isAgent(x: Agent | ServiceError): x is Agent {
  return !(x instanceof Error);
}

describe('agent registration (controller with mutual TLS)', () => {
  let fleet: SecureFleet;
  before(async () => {
    fleet = await startSecureFleet({ agents: ['card-evil', 'card-ok', 'host-1'] });
  });
  after(async () => {
    await fleet?.stop();
  });

  it('refuses an oversized registration (100 KB rack, 400 KB of labels) and stores nothing', async () => {
    const rack = 'r'.repeat(100_000);
    const labels: Record<string, string> = {};
    for (let i = 0; i < 4000; i++) labels[`k${i}-${'x'.repeat(40)}`] = 'v'.repeat(56);
    const labelBytes = Object.entries(labels).reduce((n, [k, v]) => n + k.length + v.length, 0);
    assert.ok(labelBytes >= 400_000, `labels are ${labelBytes} bytes`);
    const { stream, err } = await register(fleet, 'card-evil', {
      identity: identity('card-evil', { rack, labels }),
      grpc: '127.0.0.1:7411',
      metrics: '169.254.169.254:80',
    });
    stream.cancel();
    assert.ok(err, 'the registration was accepted');
    assert.equal(err.code, status.INVALID_ARGUMENT, err.details);
    const fields = decodeStatus(err).fieldViolations.map((v) => v.field);
    assert.ok(fields.includes('register'), `size not named: ${fields.join(', ')}`);
    assert.ok(fields.includes('register.identity.rack'), fields.join(', '));
    assert.ok(fields.includes('register.identity.labels'), fields.join(', '));
    assert.ok(err.details.length < 2000, 'the refusal echoes the oversized input back');
    // Nothing stored: not in the registry, not in /sd/agents, not in the store's bytes.
    const got = await getAgent(fleet, 'card-evil');
    assert.equal((got as ServiceError).code, status.NOT_FOUND);
    assert.ok(!(await fleet.httpGet('/sd/agents')).includes('169.254.169.254'));
    assert.equal(storeBytes(fleet).indexOf('r'.repeat(1000)), -1, 'the rack string reached the store');
    assert.equal(storeBytes(fleet).indexOf('x'.repeat(40)), -1, 'the labels reached the store');
  });

  it('refuses malformed identity fields and addresses by name and keeps the stored record', async () => {
    // A valid registration first: this is what must survive the bad one.
    const good = await register(fleet, 'card-ok', { identity: identity('card-ok', { rack: 'r07' }) });
    assert.equal(good.err, null, good.err?.details);
    await waitFor('card-ok stored', async () => {
      const a = await getAgent(fleet, 'card-ok');
      return isAgent(a) ? a : undefined;
    });
    good.stream.cancel();
    const labels: Record<string, string> = { 'vop.dev/rack': 'r99', long: 'v'.repeat(64) };
    for (let i = 0; i < 70; i++) labels[`l${i}`] = 'x';
    const { stream, err } = await register(fleet, 'card-ok', {
      identity: identity('card-ok', { rack: 'Rack_7', hostNode: 'Host.1', slot: 70_000, labels }),
      grpc: 'not-an-address',
      metrics: 'host:99999',
    });
    stream.cancel();
    assert.ok(err, 'the registration was accepted');
    assert.equal(err.code, status.INVALID_ARGUMENT);
    const fields = decodeStatus(err).fieldViolations.map((v) => v.field);
    for (const f of [
      'register.identity.rack',
      'register.identity.host_node',
      'register.identity.slot',
      'register.identity.labels',
      'register.addresses.grpc',
      'register.addresses.metrics',
    ])
      assert.ok(fields.includes(f), `${f} not named in ${fields.join(', ')}`);
    // 74 labels: refused for the count alone; then the key and value rules one by one.
    const { stream: s2, err: e2 } = await register(fleet, 'card-ok', {
      identity: identity('card-ok', { labels: { 'vop.dev/rack': 'r99', long: 'v'.repeat(64) } }),
    });
    s2.cancel();
    const f2 = decodeStatus(e2 as ServiceError).fieldViolations.map((v) => v.field);
    assert.deepEqual(f2.sort(), ['register.identity.labels[long]', 'register.identity.labels[vop.dev/rack]']);
    const a = await getAgent(fleet, 'card-ok');
    assert.ok(isAgent(a));
    assert.equal(a.status?.identity?.rack, 'r07', 'the stored record changed');
  });

  it('does not dial or publish a registered address that matches neither the certificate nor the connection', async () => {
    // A decoy where the card points the controller: any connection there is a dial.
    let dials = 0;
    const decoy = net.createServer((s) => {
      dials++;
      s.destroy();
    });
    await new Promise<void>((r) => decoy.listen(0, '127.0.0.2', r));
    const decoyAddr = `127.0.0.2:${(decoy.address() as net.AddressInfo).port}`;
    try {
      // card-evil's certificate names 127.0.0.1 and it connects from 127.0.0.1.
      const { stream, err } = await register(fleet, 'card-evil', {
        identity: identity('card-evil'),
        grpc: decoyAddr,
        metrics: '169.254.169.254:80',
      });
      assert.equal(err, null, `a plausible registration was refused: ${err?.details}`);
      const admin = fleet.ctl('ops-admin');
      await ctlApply(admin, link('evil-link', 'card-evil', 'card-ghost'));
      // The card reports running the link, so only its address stands between it and a dial.
      stream.write({
        msg: {
          $case: 'status',
          value: {
            name: 'evil-link',
            status: LinkStatus.fromPartial({ phase: LinkPhase.LINK_PHASE_READY }),
            deleted: false,
          },
        },
      });
      const rec = await waitFor('card-evil stored', async () => {
        const a = await getAgent(fleet, 'card-evil');
        return isAgent(a) && a.status?.conditions.some((c) => c.type === 'AddressesVerified') ? a : undefined;
      });
      assert.equal(rec.status?.addresses?.grpc, '');
      assert.equal(rec.status?.addresses?.metrics, '');
      const cond = rec.status?.conditions.find((c) => c.type === 'AddressesVerified');
      assert.equal(cond?.status, ConditionStatus.CONDITION_STATUS_FALSE);
      assert.match(cond?.message ?? '', /127\.0\.0\.2/);
      assert.match(cond?.message ?? '', /169\.254\.169\.254:80/);

      const stats = await call(admin, admin.getLinkStats, { name: 'evil-link' }, new Metadata());
      const ep = stats.endpoints.find((e) => e.agent === 'card-evil');
      assert.match(ep?.error ?? '', /^FAILED_PRECONDITION: agent "card-evil" .*matches neither/);

      const attach = (): Promise<ServiceError> => {
        const con = admin.attachConsole();
        return new Promise<ServiceError>((resolve, reject) => {
          con.on('error', resolve);
          con.on('data', () => reject(new Error('the console was relayed')));
          con.write({
            msg: { $case: 'open', value: { link: 'evil-link', device: '', write: false, replayBytes: 0 } },
          });
        });
      };
      // Until the controller has the card's status report, it refuses for that reason instead.
      const conErr = await waitFor('the console refused for the address', async () => {
        const e = await attach();
        return decodeStatus(e).reason === 'LINK_NOT_ON_AGENT' ? undefined : e;
      });
      assert.equal(conErr.code, status.FAILED_PRECONDITION, conErr.details);
      assert.equal(decodeStatus(conErr).reason, 'AGENT_ADDRESS_UNVERIFIED');
      assert.match(conErr.details, /agent "card-evil"/);

      const sd = await fleet.httpGet('/sd/agents');
      assert.ok(!sd.includes('169.254.169.254'), sd);
      assert.ok(!sd.includes('card-evil'), sd);
      assert.equal(dials, 0, 'the controller dialled the address the card registered');
      stream.cancel();

      // A real agent's own address (its certificate's IP, the address it connects from) is used.
      const host = await fleet.startAgent('host-1');
      await ctlApply(admin, link('host-link', 'host-1', 'card-ghost'));
      await waitFor('host-1 in /sd/agents', async () => (await fleet.httpGet('/sd/agents')).includes(host.metrics));
      const hs = await waitFor('host-1 answers stats through the controller', async () => {
        const r = await call(admin, admin.getLinkStats, { name: 'host-link' }, new Metadata());
        const e = r.endpoints.find((x) => x.agent === 'host-1');
        return e && e.error === '' ? e : undefined;
      });
      assert.equal(hs.error, '');
      assert.equal(dials, 0);
    } finally {
      decoy.close();
    }
  });

  it('refuses a Sync stream whose second message names a link with an invalid name', async () => {
    const { stream, err } = await register(fleet, 'card-ok', { identity: identity('card-ok', { rack: 'r07' }) });
    assert.equal(err, null);
    const e = await new Promise<ServiceError>((resolve) => {
      stream.on('error', resolve);
      stream.write({
        msg: { $case: 'status', value: { name: 'x'.repeat(100_000), status: undefined, deleted: false } },
      });
    });
    assert.equal(e.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      decodeStatus(e).fieldViolations.map((v) => v.field),
      ['status.name'],
    );
  });
});
