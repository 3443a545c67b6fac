/**
 * Unit tests of the controller's pure parts: the work queue (dedupe, one worker per
 * key, re-run of keys added while processing, backoff on failure) and policy rendering
 * (pairing rule, selectors over synthetic labels, names, cordon).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { Registry } from 'prom-client';

import {
  NodeRole,
  PciBarTransport,
  PciDoorbellMode,
  Role,
  type Agent,
  type AgentIdentity,
  type LinkPolicy,
} from '../../lib/proto/types';
import { createRootLogger } from '../../lib/src/logger';
import { parseSelector } from '../../lib/src/selector';
import { validateLink, validatePolicy } from '../../lib/src/validate';
import { ControllerMetrics } from '../../controller/src/metrics/controller-metrics';
import { policyLinkName, renderPolicy } from '../../controller/src/reconcile/policy-render';
import { WorkQueue } from '../../controller/src/reconcile/work-queue';
import { agentLabels } from '../../controller/src/state/agent-labels';

const log = createRootLogger('test', 'silent');

describe('WorkQueue', () => {
  it('dedupes waiting keys, never runs one key twice at once, and re-runs a key added while it ran', async () => {
    const q = new WorkQueue('links', log, new ControllerMetrics(new Registry(), { version: 't', store: 'sqlite' }));
    const runs: string[] = [];
    let running = 0;
    let maxConcurrentA = 0;
    let release: (() => void) | undefined;
    q.run(4, async (key) => {
      runs.push(key);
      if (key === 'a') {
        running++;
        maxConcurrentA = Math.max(maxConcurrentA, running);
        if (runs.filter((k) => k === 'a').length === 1) await new Promise<void>((r) => (release = r));
        running--;
      }
    });
    q.add('a');
    q.add('b');
    q.add('b');
    q.add('b');
    await new Promise((r) => setTimeout(r, 20));
    q.add('a'); // while a runs: marked dirty, queued again after it finishes
    q.add('a');
    release?.();
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(runs.sort(), ['a', 'a', 'b']);
    assert.equal(maxConcurrentA, 1);
    assert.ok(q.idle());
    await q.stop();
  });

  it('retries a failing key with growing backoff and forgets it after a success', async () => {
    const q = new WorkQueue('agents', log, new ControllerMetrics(new Registry(), { version: 't', store: 'sqlite' }));
    const times: number[] = [];
    q.run(1, async () => {
      times.push(Date.now());
      if (times.length < 5) throw new Error('transient');
    });
    q.add('k');
    const deadline = Date.now() + 5000;
    while (times.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(times.length, 5);
    const gaps = times.slice(1).map((t, i) => t - (times[i] as number));
    // 5, 10, 20 and 40 ms (+ up to 20 % jitter): at least 75 ms in all, and never sooner than the backoff.
    assert.ok((times[4] as number) - (times[0] as number) >= 75, `backoff: ${gaps.join(',')}`);
    gaps.forEach((g, i) => assert.ok(g >= 5 * 2 ** i - 1, `retry ${i + 1} after ${g} ms`));
    assert.equal(q.retries('k'), 0);
    await q.stop();
  });
});

function agent(
  id: Partial<AgentIdentity> & { nodeName: string },
  unschedulable = false,
): { agent: Agent; labels: Record<string, string> } {
  const identity: AgentIdentity = {
    rack: 'r07',
    slot: 0,
    role: NodeRole.NODE_ROLE_CARD,
    hostNode: '',
    labels: {},
    ...id,
  };
  return {
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
  };
}

function policy(name: string, card: string, host = ''): LinkPolicy {
  return {
    meta: {
      name,
      labels: {},
      annotations: {},
      generation: 1n,
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: '',
    },
    spec: {
      cardSelector: parseSelector(card),
      hostSelector: parseSelector(host),
      pairing: undefined,
      template: {
        labels: { app: 'x' },
        cardRole: Role.ROLE_DRIVER,
        transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: 0n } } },
        devices: [],
      },
    },
    status: undefined,
  };
}

describe('policy rendering', () => {
  const agents = new Map([
    ['h1', agent({ nodeName: 'h1', role: NodeRole.NODE_ROLE_HOST })],
    ['h2', agent({ nodeName: 'h2', role: NodeRole.NODE_ROLE_HOST, rack: 'r08' })],
    ['c1', agent({ nodeName: 'c1', hostNode: 'h1', slot: 1 })],
    ['c2', agent({ nodeName: 'c2', hostNode: 'h1', slot: 2, labels: { gpu: 'yes' } })],
    ['c3', agent({ nodeName: 'c3', hostNode: 'h2', rack: 'r08' })],
    ['v1', agent({ nodeName: 'v1', hostNode: 'h1', role: NodeRole.NODE_ROLE_VM })],
    ['orphan', agent({ nodeName: 'orphan', hostNode: 'nowhere' })],
    ['c4', agent({ nodeName: 'c4', hostNode: 'c1' })],
  ]);

  it('pairs every selected card with the host named in its host_node', () => {
    const out = renderPolicy({ policy: policy('p', 'vop.dev/rack=r07'), agents, existing: () => false });
    assert.deepEqual(out.map((r) => [r.name, r.card, r.host]).sort(), [
      ['p-c1', 'c1', 'h1'],
      ['p-c2', 'c2', 'h1'],
      ['p-v1', 'v1', 'h1'],
    ]);
    const l = out.find((r) => r.name === 'p-c1')?.link;
    assert.deepEqual(l?.spec?.endpoints, [
      { agent: 'h1', role: Role.ROLE_DEVICE },
      { agent: 'c1', role: Role.ROLE_DRIVER },
    ]);
    assert.equal(l?.meta?.managedBy, 'policy/p');
    assert.equal(l?.meta?.labels['vop.dev/policy'], 'p');
    assert.equal(l?.meta?.labels.app, 'x');
  });

  it('a vhost_user template stamps out one endpoint, the host in the device role, with a socket per VM', () => {
    const p = policy('vu', 'vop.dev/role=vm');
    const tpl = p.spec?.template;
    assert.ok(tpl);
    tpl.transport = {
      kind: {
        $case: 'vhostUser',
        value: {
          socketPath: '/run/vop/sockets/{node}-net.sock',
          client: false,
          socketMode: 0o660,
          socketGroup: 'kvm',
          queuePairs: 0,
        },
      },
    };
    const out = renderPolicy({ policy: p, agents, existing: () => false });
    assert.deepEqual(
      out.map((r) => r.name),
      ['vu-v1'],
    );
    const spec = out[0]?.link.spec;
    assert.deepEqual(spec?.endpoints, [{ agent: 'h1', role: Role.ROLE_DEVICE }]);
    assert.deepEqual(spec?.transport?.kind, {
      $case: 'vhostUser',
      value: {
        socketPath: '/run/vop/sockets/v1-net.sock',
        client: false,
        socketMode: 0o660,
        socketGroup: 'kvm',
        queuePairs: 0,
      },
    });
  });

  it('selects on agent labels and synthetic labels, for cards and hosts', () => {
    assert.deepEqual(
      renderPolicy({ policy: policy('p', 'gpu=yes'), agents, existing: () => false }).map((r) => r.name),
      ['p-c2'],
    );
    assert.deepEqual(
      renderPolicy({ policy: policy('p', 'vop.dev/slot in (1,2)', 'vop.dev/node=h1'), agents, existing: () => false })
        .map((r) => r.name)
        .sort(),
      ['p-c1', 'p-c2'],
    );
    assert.deepEqual(
      renderPolicy({ policy: policy('p', 'vop.dev/role=card', 'vop.dev/rack=r08'), agents, existing: () => false }).map(
        (r) => r.name,
      ),
      ['p-c3'],
    );
  });

  it('gives a cordoned agent no new links but keeps its existing ones', () => {
    const cordoned = new Map(agents);
    cordoned.set('c1', agent({ nodeName: 'c1', hostNode: 'h1' }, true));
    assert.ok(
      !renderPolicy({ policy: policy('p', 'vop.dev/rack=r07'), agents: cordoned, existing: () => false }).some(
        (r) => r.card === 'c1',
      ),
    );
    assert.ok(
      renderPolicy({ policy: policy('p', 'vop.dev/rack=r07'), agents: cordoned, existing: (n) => n === 'p-c1' }).some(
        (r) => r.card === 'c1',
      ),
    );
  });

  it('pairs a card with its host on a pci-bar link, per-card resources from placeholders, and the link validates', () => {
    const p = policy('pci', 'vop.dev/rack=r07');
    p.spec!.template!.transport = {
      kind: {
        $case: 'pciBar',
        value: PciBarTransport.fromPartial({
          bar: 2,
          // VOP/MIC: the card (driver) maps the host's memory through BAR2; the host holds it.
          memoryHolder: Role.ROLE_DEVICE,
          deviceAccess: { ivshmemSocket: '/run/vop/sockets/ivshmem-{card}.sock' },
          driverAccess: {
            barPath: '/sys/devices/pci0000:00/0000:00:04.0/resource2',
            doorbellPath: '/sys/devices/pci0000:00/0000:00:04.0/resource0',
            doorbell: PciDoorbellMode.PCI_DOORBELL_MODE_POLL,
            peerId: 0,
          },
        }),
      },
    };
    p.spec!.template!.devices = [
      {
        name: 'con0',
        queueSize: 0,
        disableEventIdx: false,
        kind: { $case: 'console', value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined } },
      },
    ];
    validatePolicy(p);
    const out = renderPolicy({ policy: p, agents, existing: () => false });
    const l = out.find((r) => r.name === 'pci-c2')?.link;
    assert.ok(l);
    assert.deepEqual(l.spec?.endpoints, [
      { agent: 'h1', role: Role.ROLE_DEVICE },
      { agent: 'c2', role: Role.ROLE_DRIVER },
    ]);
    const t = l.spec?.transport?.kind;
    assert.equal(t?.$case, 'pciBar');
    if (t?.$case !== 'pciBar') return;
    assert.equal(t.value.deviceAccess?.ivshmemSocket, '/run/vop/sockets/ivshmem-c2.sock');
    assert.equal(t.value.driverAccess?.barPath, '/sys/devices/pci0000:00/0000:00:04.0/resource2');
    validateLink(l);
  });

  it('names links <policy>-<card>, truncated with a hash to a DNS label', () => {
    assert.equal(policyLinkName('console', 'card-1'), 'console-card-1');
    const long = policyLinkName('a-very-long-policy-name-for-the-rack-console', 'card-with-an-equally-long-name-07');
    assert.ok(long.length <= 63, long);
    assert.match(long, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    assert.notEqual(
      long,
      policyLinkName('a-very-long-policy-name-for-the-rack-console', 'card-with-an-equally-long-name-08'),
    );
  });
});
