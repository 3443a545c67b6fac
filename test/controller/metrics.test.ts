/**
 * The controller's /metrics against the catalogue in docs/metrics.md ("Controller"):
 * every listed vop_controller_* and workqueue_* name is exported, nothing unlisted is,
 * label names match, and promtool accepts the exposition.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';

import { repoPath } from '../../lib/src/paths';
import { call } from '../helpers/grpc';
import { promtoolPath, run, withoutKnownPromClientLintNames } from '../helpers/servers';
import { policyFromJson, startFleet, waitFor, type Fleet } from './fleet-helpers';

function catalogue(): Map<string, string[]> {
  const text = readFileSync(repoPath('docs', 'metrics.md'), 'utf8');
  const section = text.slice(text.indexOf('## Controller'));
  const out = new Map<string, string[]>();
  for (const m of section.matchAll(/^\| `((?:vop_controller|workqueue)_[a-z_]+)` \|[^|]*\|[^|]*\|([^|]*)\|/gm)) {
    out.set(m[1] as string, [...(m[2] as string).matchAll(/`([a-z_]+)`/g)].map((x) => x[1] as string).sort());
  }
  return out;
}

describe('vop-controller metrics', () => {
  let fleet: Fleet;
  before(async () => {
    fleet = await startFleet();
    await fleet.startAgent('host-1', 'host');
    await fleet.startAgent('card-1', 'card', 'host-1');
    await call(
      fleet.ctl,
      fleet.ctl.applyPolicy,
      {
        policy: policyFromJson({
          meta: { name: 'm' },
          spec: {
            cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
            template: { cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices: [{ name: 'console', console: {} }] },
          },
        }),
        dryRun: false,
      },
      new Metadata(),
    );
    await waitFor(
      'a link',
      async () =>
        (
          await call(
            fleet.ctl,
            fleet.ctl.listLinks,
            { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: '' },
            new Metadata(),
          )
        ).links.length === 1,
    );
  });
  after(async () => {
    await fleet.stop();
  });

  it('exports exactly the catalogued controller metrics with their labels, and promtool accepts them', async () => {
    const text = await (await fetch(`http://${fleet.controller.metrics}/metrics`)).text();
    const exported = new Map<string, Set<string>>();
    for (const m of text.matchAll(/^# TYPE ((?:vop_controller|workqueue)_[a-z_]+) /gm))
      exported.set(m[1] as string, new Set());
    for (const m of text.matchAll(/^((?:vop_controller|workqueue)_[a-z_]+?)(?:_bucket|_sum|_count)?\{([^}]*)\}/gm)) {
      const name = exported.has(m[1] as string)
        ? (m[1] as string)
        : (m[1] as string).replace(/_(bucket|sum|count)$/, '');
      for (const l of (m[2] as string).matchAll(/([a-z_]+)="/g))
        if (l[1] !== 'le') exported.get(name)?.add(l[1] as string);
    }
    const cat = catalogue();
    assert.ok(cat.size >= 20, `parsed ${cat.size} rows from docs/metrics.md`);
    assert.deepEqual([...exported.keys()].sort(), [...cat.keys()].sort());
    for (const [name, labels] of exported) {
      if (labels.size === 0) continue; // no sample with labels yet
      assert.deepEqual([...labels].sort(), cat.get(name), `labels of ${name}`);
    }
    assert.match(text, /vop_controller_agents\{rack="r07",phase="Ready"\} 2/);
    assert.match(text, /vop_controller_sync_streams 2/);
    const lint = await run(promtoolPath(), ['check', 'metrics'], { input: withoutKnownPromClientLintNames(text) });
    assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
  });
});
