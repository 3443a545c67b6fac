/**
 * LinkPolicy peer pairing with real processes (issue 15, item 4: "a LinkPolicy can stamp out
 * stream links between any two agents"): a controller and agents in two network namespaces
 * joined by a veth pair, none of them a card/host pair. Device side agents (label tier=store, in
 * namespace a, each with its own data-plane port range) and driver side agents (tier=app, cards
 * of a host that is not registered, in namespace b). A policy with `peer` pairing, applied with
 * vopctl from YAML, gives every driver agent one stream link to one device agent: spread over the
 * device agents, each link with a port of its device agent's range and its own generated secret,
 * Ready on both sides, console bytes both ways. A new device agent (cordoned) and a new driver
 * agent register: the existing links stay as they are and the new driver gets no link on the
 * cordoned agent. A controller restart keeps every pair, name, port and secret. A drained device
 * agent's drivers move to the other device agents (the links elsewhere stay). Deleting the
 * policy removes the links from the controller and the agents and frees the ports. Refusals:
 * a secret in a template (also in a dry run), shm / pci_bar / vhost_user with peer pairing, each
 * INVALID_ARGUMENT naming the field, nothing stored.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

import { ControllerServiceClient } from '../../lib/proto/controller';
import { ConditionStatus, Link, LinkPhase, LinkPolicy, Role, StreamProtocol } from '../../lib/proto/types';
import { call, decodeStatus, insecure } from '../helpers/grpc';
import { isRoot, haveCommand, requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent } from '../agent/helpers';
import { vopctl, waitFor } from '../controller/fleet-helpers';
import { consoleBothWays, VethPair } from './helpers';

const missing = [...(isRoot() ? [] : ['root']), ...(haveCommand('ip') ? [] : ['ip'])];
const skip = requirePrereq(missing.join(', '), missing.length === 0, 'network namespaces');

const POLICY = 'pp';
const NET = 84;
const DEVICE_IP = `10.${NET}.0.1`;

interface Running {
  srv: ServerProcess;
  client: Agent;
  state: string;
}

function streamOf(l: Link | undefined): { address: string; listenAddress: string; secret: string } | undefined {
  const t = l?.spec?.transport?.kind;
  return t?.$case === 'stream' ? t.value : undefined;
}

/** The secret an agent stored for a link (its state file). */
function storedSecret(stateDir: string, link: string): string {
  const env = JSON.parse(readFileSync(path.join(stateDir, 'links', `${link}.json`), 'utf8')) as { link: unknown };
  return streamOf(Link.fromJSON(env.link))?.secret ?? '';
}

/** The pty path an agent serves for a link's console device (DeviceStatus.endpoints pty<ID>). */
async function ptyOf(a: Agent, link: string): Promise<string> {
  return waitFor(`the pty of ${link}`, async () => {
    const d = (await a.get(link)).link?.status?.devices.find((x) => x.name === 'con0');
    return Object.entries(d?.endpoints ?? {}).find(([k]) => /^pty\d+$/.test(k))?.[1];
  });
}

const expectInvalid = (field: string, msg: RegExp) => (err: ServiceError) => {
  assert.equal(err.code, status.INVALID_ARGUMENT, err.message);
  const v = decodeStatus(err).fieldViolations.find((x) => x.field === field);
  assert.ok(v, `${field} in ${JSON.stringify(decodeStatus(err).fieldViolations)}`);
  assert.match(v.description, msg);
  return true;
};

describe('LinkPolicy peer pairing: stream links between agents that share no host', { skip }, () => {
  let v: VethPair;
  let dir = '';
  let ctlDir = '';
  let ctl: ServerProcess;
  let ctlClient: ControllerServiceClient;
  const agents = new Map<string, Running>();
  /** The links of the policy as first stamped: name -> [device agent, driver agent, address, generation]. */
  let firstLinks = new Map<string, [string, string, string, bigint]>();
  const secrets = new Map<string, string>();

  const startController = async (): Promise<void> => {
    ctl = await startServer('controller', [], { stateDir: ctlDir, readyTimeoutMs: 60_000 });
    ctlClient?.close();
    ctlClient = new ControllerServiceClient(ctl.admin, insecure);
  };
  /** A device agent (tier=store) in namespace a, or a driver agent (tier=app, a card of an unregistered host) in b. */
  const startAgent = async (name: string, tier: 'store' | 'app', ports = ''): Promise<Running> => {
    const state = tempDir(`pp-${name}`);
    const cfg = path.join(state, 'agent.yaml');
    writeFileSync(cfg, `node:\n  labels:\n    tier: ${tier}\n`);
    const args = [
      '--config',
      cfg,
      '--node-name',
      name,
      '--role',
      tier === 'store' ? 'host' : 'card',
      ...(tier === 'app' ? ['--host-node', 'rack-host-9'] : []),
      '--rendezvous-dir',
      path.join(dir, `rdv-${name}`),
      '--socket-dir',
      dir,
      '--pty-dir',
      dir,
      '--controller',
      `unix:${ctl.adminSocket}`,
      ...(tier === 'store' ? ['--data-plane-address', DEVICE_IP, '--data-plane-ports', ports] : []),
    ];
    const srv = await startServer('agent', args, {
      stateDir: state,
      wrap: ['ip', 'netns', 'exec', tier === 'store' ? v.a : v.b],
      readyTimeoutMs: 60_000,
    });
    const r = { srv, client: new Agent(srv.admin), state };
    agents.set(name, r);
    return r;
  };
  const md = (): Metadata => new Metadata();
  const getPolicy = async (name: string): Promise<LinkPolicy | undefined> => {
    try {
      return (await call(ctlClient, ctlClient.getPolicy, { name }, md())).policy;
    } catch (err) {
      if ((err as ServiceError).code === status.NOT_FOUND) return undefined;
      throw err;
    }
  };
  const policyLinks = async (): Promise<Link[]> =>
    (
      await call(
        ctlClient,
        ctlClient.listLinks,
        { labelSelector: `vop.dev/policy=${POLICY}`, agent: '', phase: 0, pageSize: 0, pageToken: '' },
        md(),
      )
    ).links.sort((x, y) => (x.meta?.name ?? '').localeCompare(y.meta?.name ?? ''));
  const pairOf = (l: Link): [string, string] => [
    l.spec?.endpoints.find((e) => e.role === Role.ROLE_DEVICE)?.agent ?? '',
    l.spec?.endpoints.find((e) => e.role === Role.ROLE_DRIVER)?.agent ?? '',
  ];
  /** Both agents run the link and report it Ready (they learn of it over the Sync stream, a moment later). */
  const bothReady = async (l: Link): Promise<void> => {
    const name = l.meta?.name ?? '';
    for (const a of pairOf(l))
      await waitFor(
        `${name} Ready on ${a}`,
        async () => {
          try {
            return (await agents.get(a)?.client.get(name))?.link?.status?.phase === LinkPhase.LINK_PHASE_READY;
          } catch (err) {
            if ((err as ServiceError).code === status.NOT_FOUND) return undefined;
            throw err;
          }
        },
        60_000,
      );
  };
  const snapshot = (links: readonly Link[]): Map<string, [string, string, string, bigint]> =>
    new Map(
      links.map((l) => [l.meta?.name ?? '', [...pairOf(l), streamOf(l)?.address ?? '', l.meta?.generation ?? 0n]]),
    );

  const peerManifest = (): string =>
    [
      'kind: LinkPolicy',
      'meta:',
      `  name: ${POLICY}`,
      'spec:',
      '  peer:',
      '    deviceSelector: { matchLabels: { tier: store } }',
      '    driverSelector: { matchLabels: { tier: app } }',
      '  template:',
      '    transport:',
      '      stream: { protocol: STREAM_PROTOCOL_TCP, idleTimeoutMs: 5000 }',
      '    devices:',
      '      - name: con0',
      '        console: { deviceBackend: { pty: {} }, driverFrontend: { pty: {} } }',
      '',
    ].join('\n');

  before(async () => {
    v = new VethPair('vpp', NET);
    dir = tempDir('pp');
    ctlDir = tempDir('pp-controller');
    await startController();
    await Promise.all([
      startAgent('store-1', 'store', '7600-7601'),
      startAgent('store-2', 'store', '7610-7611'),
      startAgent('app-1', 'app'),
      startAgent('app-2', 'app'),
    ]);
  });
  after(async () => {
    for (const a of agents.values()) a.client.close();
    ctlClient?.close();
    await Promise.all([...[...agents.values()].map((a) => a.srv.stop('SIGKILL')), ctl?.stop('SIGKILL')]);
    v?.remove();
    for (const d of [dir, ctlDir, ...[...agents.values()].map((a) => a.state)])
      if (d) rmSync(d, { recursive: true, force: true });
  });

  it('refuses a secret in a template (also in a dry run) and transports that need a shared host, naming the field; nothing is stored', async () => {
    const secret = 'one-secret-for-every-link-0123456789';
    const withSecret = LinkPolicy.fromJSON({
      meta: { name: 'sec' },
      spec: {
        cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
        template: {
          cardRole: 'ROLE_DRIVER',
          transport: { stream: { protocol: 'STREAM_PROTOCOL_TCP', secret } },
          devices: [{ name: 'c', console: {} }],
        },
      },
    });
    for (const dryRun of [true, false])
      await assert.rejects(
        call(ctlClient, ctlClient.applyPolicy, { policy: withSecret, dryRun }, md()),
        expectInvalid('policy.spec.template.transport.stream.secret', /controller generates a secret per link/),
      );
    assert.equal(await getPolicy('sec'), undefined, 'the refused policy is not stored');
    const peerWith = (transport: unknown): LinkPolicy =>
      LinkPolicy.fromJSON({
        meta: { name: 'bad' },
        spec: {
          peer: {
            deviceSelector: { matchLabels: { tier: 'store' } },
            driverSelector: { matchLabels: { tier: 'app' } },
          },
          template: { transport, devices: [{ name: 'c', console: {} }] },
        },
      });
    const cases: [unknown, string, RegExp][] = [
      [{ shm: {} }, 'policy.spec.template.transport.shm', /only transport stream works/],
      [{ pciBar: { bar: 2 } }, 'policy.spec.template.transport.pci_bar', /only transport stream works/],
      [
        { vhostUser: { socketPath: path.join(dir, 'vu.sock') } },
        'policy.spec.template.transport.vhost_user',
        /one endpoint/,
      ],
    ];
    for (const [t, field, msg] of cases)
      await assert.rejects(
        call(ctlClient, ctlClient.applyPolicy, { policy: peerWith(t), dryRun: false }, md()),
        expectInvalid(field, msg),
      );
    // vopctl shows the same refusal, naming the field.
    const f = path.join(dir, 'bad.yaml');
    writeFileSync(
      f,
      peerManifest().replace('stream: { protocol: STREAM_PROTOCOL_TCP, idleTimeoutMs: 5000 }', 'shm: {}'),
    );
    const r = await vopctl(ctl.admin, ['apply', '-f', f]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /policy\.spec\.template\.transport\.shm/);
    assert.equal(await getPolicy('bad'), undefined);
    assert.equal(await getPolicy(POLICY), undefined);
    assert.deepEqual(await policyLinks(), []);
  });

  it('stamps one stream link per driver agent, spread over the device agents, each with its own port and secret; Ready on both sides, console bytes both ways', async () => {
    const f = path.join(dir, 'peer.yaml');
    writeFileSync(f, peerManifest());
    const ap = await vopctl(ctl.admin, ['apply', '-f', f]);
    assert.equal(ap.code, 0, ap.stderr);
    const links = await waitFor(
      'two links',
      async () => {
        const l = await policyLinks();
        return l.length === 2 ? l : undefined;
      },
      60_000,
    );
    const pairs = links.map(pairOf);
    assert.deepEqual(pairs.map((p) => p[1]).sort(), ['app-1', 'app-2'], 'one link per driver agent');
    assert.deepEqual(pairs.map((p) => p[0]).sort(), ['store-1', 'store-2'], 'spread over the device agents');
    for (const l of links) {
      const [dev, drv] = pairOf(l);
      assert.equal(l.meta?.name, `${POLICY}-${drv}-${dev}`);
      assert.equal(l.meta?.managedBy, `policy/${POLICY}`);
      assert.equal(l.meta?.labels['vop.dev/device-agent'], dev);
      assert.equal(l.meta?.labels['vop.dev/driver-agent'], drv);
      const st = streamOf(l);
      assert.equal(
        st?.address,
        `${DEVICE_IP}:${dev === 'store-1' ? 7600 : 7610}`,
        'the first port of its device agent',
      );
      assert.equal(st?.secret, '', 'never returned');
    }
    for (const l of links) await bothReady(l);
    for (const l of links) {
      const name = l.meta?.name ?? '';
      const [dev, drv] = pairOf(l);
      const s = storedSecret(agents.get(dev)?.state ?? '', name);
      assert.match(s, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(storedSecret(agents.get(drv)?.state ?? '', name), s, 'both agents hold the link secret');
      secrets.set(name, s);
      const dp = await ptyOf(agents.get(dev)?.client as Agent, name);
      const rp = await ptyOf(agents.get(drv)?.client as Agent, name);
      await consoleBothWays(dp, rp);
    }
    assert.equal(new Set(secrets.values()).size, 2, 'one secret per link');
    const p = await waitFor('the policy status', async () => {
      const x = await getPolicy(POLICY);
      return x?.status?.conditions.find((c) => c.type === 'Ready')?.status === ConditionStatus.CONDITION_STATUS_TRUE
        ? x
        : undefined;
    });
    assert.equal(p.status?.matchedPairs, 2);
    const applied = p.status?.conditions.find((c) => c.type === 'Applied');
    assert.equal(applied?.reason, 'LinksStamped');
    assert.match(applied?.message ?? '', /2 link\(s\) for 2 matching driver\/device pair/);
    const table = await vopctl(ctl.admin, ['get', 'policies']);
    assert.match(table.stdout, new RegExp(`${POLICY}\\s+peer\\s+2`));
    firstLinks = snapshot(links);
  });

  it('a new device agent (cordoned) and a new driver agent register: the existing links stay as they are, the new driver gets no link on the cordoned agent', async () => {
    await startAgent('store-3', 'store', '7620-7621');
    await waitFor('store-3 registered', async () => {
      const r = await vopctl(ctl.admin, ['get', 'agents', 'store-3']);
      return r.code === 0;
    });
    const c = await vopctl(ctl.admin, ['cordon', 'store-3']);
    assert.equal(c.code, 0, c.stderr);
    await startAgent('app-3', 'app');
    const links = await waitFor(
      'three links',
      async () => {
        const l = await policyLinks();
        return l.length === 3 ? l : undefined;
      },
      60_000,
    );
    const mine = links.find((l) => pairOf(l)[1] === 'app-3') as Link;
    const dev = pairOf(mine)[0];
    assert.ok(dev === 'store-1' || dev === 'store-2', `app-3 got ${dev}, not the cordoned store-3`);
    assert.equal(
      streamOf(mine)?.address,
      `${DEVICE_IP}:${dev === 'store-1' ? 7601 : 7611}`,
      'the next port of its range',
    );
    const now = snapshot(links);
    for (const [n, want] of firstLinks) assert.deepEqual(now.get(n), want, `${n} unchanged`);
    await bothReady(mine);
    await consoleBothWays(
      await ptyOf(agents.get(dev)?.client as Agent, mine.meta?.name ?? ''),
      await ptyOf(agents.get('app-3')?.client as Agent, mine.meta?.name ?? ''),
    );
    firstLinks = now;
  });

  it('a controller restart keeps every pair, name, port and secret', async () => {
    await ctl.stop('SIGTERM');
    await startController();
    const p = await waitFor(
      'the policy observed again',
      async () => {
        const x = await getPolicy(POLICY);
        return x?.status?.conditions.some((c) => c.type === 'Applied') ? x : undefined;
      },
      60_000,
    );
    assert.equal(p.status?.matchedPairs, 3);
    assert.deepEqual(snapshot(await policyLinks()), firstLinks, 'same pairs, names, ports, generations');
    for (const l of await policyLinks()) {
      await bothReady(l);
      const name = l.meta?.name ?? '';
      if (secrets.has(name)) assert.equal(storedSecret(agents.get(pairOf(l)[0])?.state ?? '', name), secrets.get(name));
    }
  });

  it('drain of a device agent moves its drivers to the other device agents (the uncordoned one with the fewest links first); the other links stay', async () => {
    const u = await vopctl(ctl.admin, ['uncordon', 'store-3']);
    assert.equal(u.code, 0, u.stderr);
    const moved = [...firstLinks].filter(([, [dev]]) => dev === 'store-1');
    assert.ok(moved.length > 0, 'store-1 had a link');
    const dr = await vopctl(ctl.admin, ['drain', 'store-1']);
    assert.equal(dr.code, 0, dr.stderr);
    const links = await waitFor(
      'every driver linked again, none on store-1',
      async () => {
        const l = await policyLinks();
        const drivers = l.map((x) => pairOf(x)[1]).sort();
        return l.length === 3 && drivers.join() === 'app-1,app-2,app-3' && l.every((x) => pairOf(x)[0] !== 'store-1')
          ? l
          : undefined;
      },
      60_000,
    );
    const now = snapshot(links);
    for (const [n, want] of firstLinks) if (want[0] !== 'store-1') assert.deepEqual(now.get(n), want, `${n} unchanged`);
    const onStore3 = links.filter((l) => pairOf(l)[0] === 'store-3');
    assert.ok(onStore3.length >= 1, 'the device agent without links took a moved driver');
    assert.equal(streamOf(onStore3[0])?.address, `${DEVICE_IP}:7620`);
    for (const l of links) await bothReady(l);
    const l3 = onStore3[0] as Link;
    await consoleBothWays(
      await ptyOf(agents.get('store-3')?.client as Agent, l3.meta?.name ?? ''),
      await ptyOf(agents.get(pairOf(l3)[1])?.client as Agent, l3.meta?.name ?? ''),
    );
    firstLinks = now;
  });

  it('deleting the policy removes its links from the controller and both agents and frees the ports', async () => {
    const d = await vopctl(ctl.admin, ['delete', 'policy', POLICY]);
    assert.equal(d.code, 0, d.stderr);
    await waitFor('the links deleted', async () => ((await policyLinks()).length === 0 ? true : undefined), 60_000);
    for (const [name, [dev, drv]] of firstLinks)
      for (const a of [dev, drv])
        await waitFor(
          `${name} gone from ${a}`,
          async () => {
            try {
              await agents.get(a)?.client.get(name);
              return undefined;
            } catch (err) {
              return (err as ServiceError).code === status.NOT_FOUND ? true : undefined;
            }
          },
          60_000,
        );
    // store-2's first port, held by a policy link until now, is free again: a bare stream link gets it.
    assert.ok([...firstLinks.values()].some(([dev, , addr]) => dev === 'store-2' && addr === `${DEVICE_IP}:7610`));
    const bare = Link.fromPartial({
      meta: { name: 'after-pp' },
      spec: {
        endpoints: [
          { agent: 'store-2', role: Role.ROLE_DEVICE },
          { agent: 'app-1', role: Role.ROLE_DRIVER },
        ],
        transport: { kind: { $case: 'stream', value: { protocol: StreamProtocol.STREAM_PROTOCOL_TCP } } },
        devices: [{ name: 'c', kind: { $case: 'console', value: {} } }],
      },
    });
    const r = await call(ctlClient, ctlClient.applyLink, { link: bare, dryRun: true }, md());
    assert.equal(streamOf(r.link)?.address, `${DEVICE_IP}:7610`, 'the port the policy link held is free');
  });
});
