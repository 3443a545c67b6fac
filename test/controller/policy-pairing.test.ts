/**
 * Unit tests of LinkPolicy pairing (controller/src/reconcile/policy-render.ts) and of its
 * validation (lib/src/validate.ts): peer pairing gives every driver agent one link to one device
 * agent, deterministically (the same for any order of the agents), spread over the device agents,
 * sticky (a driver keeps its device agent while it matches; unrelated agents change nothing),
 * respecting cordon; agent_pairs stamps the listed pairs; names stay unique when two pairs would
 * share "<policy>-<driver>-<device>"; templates that cannot work across hosts, and a secret in any
 * template, are refused naming the field.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { LinkPolicy, NodeRole, Role, type Agent, type AgentIdentity, type Link } from '../../lib/proto/types';
import { type ServerError } from '../../lib/src/errors';
import { validateLink, validatePolicy } from '../../lib/src/validate';
import { parseManifests, readManifestText } from '../../controller/src/vopctl/manifest';
import { repoPath } from '../../lib/src/paths';
import { redactPolicy } from '../../lib/src/redact';
import { pairLinkName, renderPolicy, renderPolicyPlan } from '../../controller/src/reconcile/policy-render';
import { agentLabels } from '../../controller/src/state/agent-labels';

type Entry = { agent: Agent; labels: Record<string, string> };

function agent(nodeName: string, labels: Record<string, string>, unschedulable = false): [string, Entry] {
  const identity: AgentIdentity = {
    nodeName,
    rack: 'r1',
    slot: 0,
    role: NodeRole.NODE_ROLE_HOST,
    hostNode: '',
    labels,
  };
  return [
    nodeName,
    {
      agent: {
        meta: undefined,
        spec: { unschedulable, drain: false },
        status: {
          phase: 1,
          identity,
          addresses: undefined,
          capabilities: undefined,
          version: '',
          lastHeartbeatTime: undefined,
          leaseDuration: undefined,
          conditions: [],
          ackedVersion: 0n,
        },
      },
      labels: agentLabels(identity),
    },
  ];
}

const streamTemplate = {
  transport: { stream: { protocol: 'STREAM_PROTOCOL_TCP' } },
  devices: [{ name: 'con0', console: { deviceBackend: { pty: {} }, driverFrontend: { pty: {} } } }],
};

function peerPolicy(name = 'p', over: Record<string, unknown> = {}): LinkPolicy {
  return LinkPolicy.fromJSON({
    meta: { name, generation: 1 },
    spec: {
      peer: { deviceSelector: { matchLabels: { tier: 'store' } }, driverSelector: { matchLabels: { tier: 'app' } } },
      template: streamTemplate,
      ...over,
    },
  });
}

const pairs = (links: { name: string; card: string; host: string }[]): string[] =>
  links.map((l) => `${l.name} ${l.card}->${l.host}`).sort();

const fleet = (): Map<string, Entry> =>
  new Map([
    agent('s1', { tier: 'store' }),
    agent('s2', { tier: 'store' }),
    agent('a1', { tier: 'app' }),
    agent('a2', { tier: 'app' }),
    agent('a3', { tier: 'app' }),
    agent('a4', { tier: 'app' }),
  ]);

/** Render with the links of `prev` as the policy's stored links. */
function render(p: LinkPolicy, agents: Map<string, Entry>, prev: { link: Link }[] = []) {
  const owned = prev.map((r) => r.link);
  return renderPolicyPlan({ policy: p, agents, existing: (n) => owned.some((l) => l.meta?.name === n), owned });
}

describe('peer pairing', () => {
  it('gives every driver agent exactly one stream link to a device agent, spread evenly, never to itself', () => {
    const out = render(peerPolicy(), fleet());
    assert.equal(out.links.length, 4);
    assert.deepEqual(out.unpaired, []);
    const drivers = out.links.map((l) => l.card).sort();
    assert.deepEqual(drivers, ['a1', 'a2', 'a3', 'a4'], 'one link per driver');
    const perDevice = new Map<string, number>();
    for (const l of out.links) perDevice.set(l.host, (perDevice.get(l.host) ?? 0) + 1);
    assert.deepEqual([...perDevice.values()], [2, 2], `spread: ${JSON.stringify([...perDevice])}`);
    for (const l of out.links) {
      assert.equal(l.name, `p-${l.card}-${l.host}`);
      assert.deepEqual(l.link.spec?.endpoints, [
        { agent: l.host, role: Role.ROLE_DEVICE },
        { agent: l.card, role: Role.ROLE_DRIVER },
      ]);
      assert.equal(l.link.meta?.managedBy, 'policy/p');
      assert.deepEqual(l.link.meta?.labels, {
        'vop.dev/policy': 'p',
        'vop.dev/device-agent': l.host,
        'vop.dev/driver-agent': l.card,
      });
      validateLink(l.link, undefined, 'link', true);
    }
    // An agent both selectors select is never paired with itself.
    const both = new Map([agent('x', { tier: 'store' }), agent('y', { tier: 'app' })]);
    both.set('z', agent('z', { tier: 'store' })[1]);
    (both.get('z') as Entry).labels.tier = 'store';
    const self = render(
      peerPolicy('p', {
        peer: {
          deviceSelector: { matchLabels: { 'vop.dev/role': 'host' } },
          driverSelector: { matchLabels: { tier: 'app' } },
        },
      }),
      both,
    );
    assert.ok(self.links.every((l) => l.card !== l.host));
  });

  it('is deterministic: the same links whatever order the agents come in', () => {
    const a = fleet();
    const b = new Map([...a].reverse());
    assert.deepEqual(pairs(render(peerPolicy(), a).links), pairs(render(peerPolicy(), b).links));
  });

  it('is sticky: a re-render with the stored links, new unrelated agents, a new device agent and the loss of another driver keep every remaining link', () => {
    const first = render(peerPolicy(), fleet()).links;
    const grown = fleet();
    for (const e of [agent('other', { tier: 'web' }), agent('s0', { tier: 'store' }), agent('s9', { tier: 'store' })])
      grown.set(e[0], e[1]);
    grown.delete('a4');
    const again = render(peerPolicy(), grown, first).links;
    assert.deepEqual(
      pairs(again),
      pairs(first.filter((l) => l.card !== 'a4')),
      'same pairs and names, the gone driver dropped',
    );
    // A new driver goes to a device agent with the fewest links (s0 or s9, which have none).
    grown.set('a5', agent('a5', { tier: 'app' })[1]);
    const withNew = render(peerPolicy(), grown, again).links;
    const a5 = withNew.find((l) => l.card === 'a5');
    assert.ok(a5 && ['s0', 's9'].includes(a5.host), `a5 -> ${a5?.host}`);
  });

  it('moves a driver whose device agent is gone or no longer selected, and only that driver', () => {
    const first = render(peerPolicy(), fleet()).links;
    const gone = first[0]?.host as string;
    const agents = fleet();
    agents.delete(gone);
    const after = render(peerPolicy(), agents, first).links;
    assert.equal(after.length, 4);
    assert.ok(after.every((l) => l.host !== gone));
    for (const l of first.filter((x) => x.host !== gone))
      assert.ok(
        after.some((x) => x.name === l.name),
        `${l.name} kept`,
      );
  });

  it('cordon: a cordoned driver gets no new link, a cordoned device agent no new driver; existing links stay; no device agent left is reported', () => {
    const agents = fleet();
    agents.set('a1', agent('a1', { tier: 'app' }, true)[1]);
    agents.set('s1', agent('s1', { tier: 'store' }, true)[1]);
    const out = render(peerPolicy(), agents);
    assert.ok(!out.links.some((l) => l.card === 'a1'), 'no new link for the cordoned driver');
    assert.ok(
      out.links.every((l) => l.host === 's2'),
      'no new link on the cordoned device agent',
    );
    assert.deepEqual(out.unpaired, [], 'a cordoned driver is not a failure');
    // Links that exist stay when their agents are cordoned afterwards.
    const before = render(peerPolicy(), fleet()).links;
    const kept = render(peerPolicy(), agents, before).links;
    assert.deepEqual(pairs(kept), pairs(before));
    // Every device agent cordoned: new drivers are unpaired and say so.
    const none = fleet();
    none.set('s1', agent('s1', { tier: 'store' }, true)[1]);
    none.set('s2', agent('s2', { tier: 'store' }, true)[1]);
    assert.deepEqual(render(peerPolicy(), none).unpaired, ['a1', 'a2', 'a3', 'a4']);
  });

  it('places a new driver on a device agent with room under maxLinksPerAgent, and reports the drivers no device agent has room for', () => {
    // s1 and s2 hold one link each elsewhere; the limit is 2: each takes one more driver.
    const full = (_agent: string, planned: number): boolean => 1 + planned > 2;
    const agents = fleet();
    const out = renderPolicyPlan({ policy: peerPolicy(), agents, existing: () => false, owned: [], full });
    assert.deepEqual(out.links.map((l) => l.host).sort(), ['s1', 's2']);
    assert.equal(out.unpaired.length, 2, 'two drivers found no room');
  });

  it('keeps link names unique when two pairs share "<policy>-<driver>-<device>", and stable afterwards', () => {
    const agents = new Map([
      agent('a-b', { tier: 'app' }),
      agent('a', { tier: 'app' }),
      agent('c', { tier: 'store' }),
      agent('b-c', { tier: 'store' }),
    ]);
    const p = LinkPolicy.fromJSON({
      meta: { name: 'p' },
      spec: {
        agentPairs: {
          pairs: [
            { device: 'c', driver: 'a-b' },
            { device: 'b-c', driver: 'a' },
          ],
        },
        template: streamTemplate,
      },
    });
    const out = render(p, agents).links;
    assert.equal(new Set(out.map((l) => l.name)).size, 2, out.map((l) => l.name).join(' '));
    assert.ok(out.some((l) => l.name === 'p-a-b-c'));
    assert.ok(
      out.some((l) => l.name === pairLinkName('p', 'a-b', 'c', true) || l.name === pairLinkName('p', 'a', 'b-c', true)),
    );
    // With the stored links, the names stay; when the plain-named pair goes, the other keeps its name.
    assert.deepEqual(pairs(render(p, agents, out).links), pairs(out));
    const hashed = out.find((l) => l.name !== 'p-a-b-c') as (typeof out)[number];
    const plain = out.find((l) => l.name === 'p-a-b-c') as (typeof out)[number];
    agents.delete(plain.card);
    const rest = render(p, agents, [hashed]).links;
    assert.deepEqual(pairs(rest), pairs([hashed]));
  });
});

describe('agent_pairs pairing', () => {
  it('stamps one link per listed pair once both agents are registered; cordon gives no new link', () => {
    const p = LinkPolicy.fromJSON({
      meta: { name: 'x' },
      spec: {
        agentPairs: {
          pairs: [
            { device: 's1', driver: 'a1' },
            { device: 's1', driver: 'a2' },
            { device: 'a3', driver: 's2' },
            { device: 'nobody', driver: 'a4' },
          ],
        },
        template: streamTemplate,
      },
    });
    const agents = fleet();
    const out = render(p, agents);
    assert.deepEqual(pairs(out.links), ['x-a1-s1 a1->s1', 'x-a2-s1 a2->s1', 'x-s2-a3 s2->a3']);
    assert.equal(out.waiting, 1);
    agents.set('a2', agent('a2', { tier: 'app' }, true)[1]);
    assert.ok(!render(p, agents).links.some((l) => l.card === 'a2'));
    assert.ok(
      render(p, agents, out.links).links.some((l) => l.card === 'a2'),
      'an existing link stays',
    );
  });
});

describe('policy validation', () => {
  const refused = (p: LinkPolicy, field: string, msg: RegExp): void => {
    assert.throws(
      () => validatePolicy(p),
      (err: ServerError) => {
        const v = err.fieldViolations.find((x) => x.field === field);
        assert.ok(v, `${field} in ${JSON.stringify(err.fieldViolations)}`);
        assert.match(v.description, msg);
        return true;
      },
    );
  };

  it('accepts peer and agent_pairs stream templates, and the host_node default', () => {
    validatePolicy(peerPolicy());
    validatePolicy(
      LinkPolicy.fromJSON({
        meta: { name: 'x' },
        spec: { agentPairs: { pairs: [{ device: 's1', driver: 'a1' }] }, template: streamTemplate },
      }),
    );
    validatePolicy(
      LinkPolicy.fromJSON({
        meta: { name: 'h' },
        spec: { hostNode: {}, cardSelector: {}, template: { ...streamTemplate, cardRole: 'ROLE_DRIVER' } },
      }),
    );
  });

  it('deploy/examples/peer-policy.yaml parses (vopctl manifests) and validates: a peer and an agent_pairs policy', () => {
    const file = repoPath('deploy', 'examples', 'peer-policy.yaml');
    const ms = parseManifests(readManifestText(file), file);
    assert.deepEqual(
      ms.map((m) => (m.kind === 'LinkPolicy' ? m.policy.spec?.pairing?.$case : m.kind)),
      ['peer', 'agentPairs'],
    );
    for (const m of ms) if (m.kind === 'LinkPolicy') validatePolicy(m.policy);
  });

  it('refuses a secret in any template, naming policy.spec.template.transport.stream.secret', () => {
    const secret = 'a-secret-of-enough-bytes-0123456789';
    refused(
      peerPolicy('p', { template: { ...streamTemplate, transport: { stream: { secret } } } }),
      'policy.spec.template.transport.stream.secret',
      /controller generates a secret per link/,
    );
    refused(
      LinkPolicy.fromJSON({
        meta: { name: 'h' },
        spec: {
          cardSelector: {},
          template: { ...streamTemplate, cardRole: 'ROLE_DRIVER', transport: { stream: { secret } } },
        },
      }),
      'policy.spec.template.transport.stream.secret',
      /controller generates a secret per link/,
    );
  });

  it('a policy stored before the rule, with a template secret: its links get none from it (each keeps or gets its own) and views return it empty', () => {
    const secret = 'a-secret-from-an-older-controller-0123';
    const old = peerPolicy('p', { template: { ...streamTemplate, transport: { stream: { secret } } } });
    for (const l of render(old, fleet()).links) {
      const t = l.link.spec?.transport?.kind;
      assert.equal(t?.$case === 'stream' ? t.value.secret : undefined, '', `${l.name} carries no template secret`);
    }
    const view = redactPolicy(old).spec?.template?.transport?.kind;
    assert.equal(view?.$case === 'stream' ? view.value.secret : undefined, '');
    const kept = old.spec?.template?.transport?.kind;
    assert.equal(kept?.$case === 'stream' ? kept.value.secret : undefined, secret, 'the stored object is not modified');
  });

  it('refuses transports that need a shared host with peer or agent_pairs pairing, naming the field', () => {
    refused(
      peerPolicy('p', { template: { ...streamTemplate, transport: { shm: {} } } }),
      'policy.spec.template.transport.shm',
      /only transport stream/,
    );
    refused(
      peerPolicy('p', { template: { ...streamTemplate, transport: { pciBar: { bar: 2 } } } }),
      'policy.spec.template.transport.pci_bar',
      /only transport stream/,
    );
    refused(
      peerPolicy('p', { template: { ...streamTemplate, transport: { vhostUser: { socketPath: '/run/vop/x.sock' } } } }),
      'policy.spec.template.transport.vhost_user',
      /one endpoint/,
    );
    refused(
      peerPolicy('p', {
        template: {
          ...streamTemplate,
          transport: { stream: { protocol: 'STREAM_PROTOCOL_UNIX', address: '/run/x.sock' } },
        },
      }),
      'policy.spec.template.transport.stream.protocol',
      /STREAM_PROTOCOL_TCP/,
    );
    refused(
      peerPolicy('p', { template: { ...streamTemplate, transport: { stream: { address: '10.0.0.1:7400' } } } }),
      'policy.spec.template.transport.stream.address',
      /controller fills each link's address/,
    );
  });

  it('refuses the fields of another pairing, missing selectors and bad pairs', () => {
    refused(peerPolicy('p', { cardSelector: {} }), 'policy.spec.card_selector', /must be unset with peer pairing/);
    refused(
      peerPolicy('p', { template: { ...streamTemplate, cardRole: 'ROLE_DRIVER' } }),
      'policy.spec.template.card_role',
      /must be unset/,
    );
    refused(peerPolicy('p', { peer: { driverSelector: {} } }), 'policy.spec.peer.device_selector', /is required/);
    const bad = LinkPolicy.fromJSON({
      meta: { name: 'x' },
      spec: {
        agentPairs: {
          pairs: [
            { device: 's1', driver: 's1' },
            { device: 's1', driver: 'a1' },
            { device: 's1', driver: 'a1' },
            { device: 'Bad_Name', driver: 'a2' },
          ],
        },
        template: streamTemplate,
      },
    });
    refused(bad, 'policy.spec.agent_pairs.pairs[0]', /both "s1"/);
    refused(bad, 'policy.spec.agent_pairs.pairs[2]', /listed twice/);
    refused(bad, 'policy.spec.agent_pairs.pairs[3].device', /./);
  });
});

// renderPolicy (the links alone) is the plan's links.
void renderPolicy;
