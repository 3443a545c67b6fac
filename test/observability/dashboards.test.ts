/**
 * Offline lint of the shipped Grafana dashboards and Prometheus rules: valid JSON,
 * stable unique uids, a datasource variable used by every panel, every PromQL
 * expression accepted by promtool, and every metric name present in docs/metrics.md.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import YAML from 'yaml';

import { repoPath } from '../../lib/src/paths';
import { metricNamesIn, readCatalogue, seriesNames } from '../helpers/catalogue';
import { promtoolPath, run, tempDir } from '../helpers/servers';

interface Target {
  refId: string;
  expr: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: { name: string; type: string; query: unknown }[] };
  panels: Panel[];
}

const DASH_DIR = repoPath('deploy', 'grafana', 'dashboards');
/** Names Prometheus itself provides. */
const BUILTIN_METRICS = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped']);

function dashboards(): { file: string; d: Dashboard }[] {
  return readdirSync(DASH_DIR)
    .filter((f) => f.endsWith('.json'))
    .map((f) => ({ file: f, d: JSON.parse(readFileSync(path.join(DASH_DIR, f), 'utf8')) as Dashboard }));
}

function allPanels(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Replaces Grafana variables with values PromQL accepts. */
function concretize(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range/g, '5m')
    .replace(/\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?/g, '.*');
}

function knownSeries(): Set<string> {
  return new Set([...readCatalogue().flatMap(seriesNames), ...BUILTIN_METRICS]);
}

describe('Grafana dashboards', () => {
  it('ship at least the fleet overview and link detail dashboards with stable, unique uids', () => {
    const ds = dashboards();
    const uids = ds.map((x) => x.d.uid);
    assert.deepEqual([...uids].sort(), ['vop-fleet-overview', 'vop-link-detail']);
    for (const { file, d } of ds) {
      assert.match(d.uid, /^[a-z0-9-]{1,40}$/, `${file}: uid`);
      assert.ok(d.schemaVersion >= 36, `${file}: schemaVersion ${d.schemaVersion} is older than Grafana 9.x`);
      assert.ok(d.title.startsWith('vop / '), `${file}: title`);
    }
  });

  it('have a Prometheus datasource variable that every panel and target uses', () => {
    for (const { file, d } of dashboards()) {
      const dsVar = d.templating.list.find((v) => v.type === 'datasource');
      assert.ok(dsVar, `${file}: no datasource variable`);
      assert.equal(dsVar.query, 'prometheus', `${file}: datasource variable type`);
      const ids = new Set<number>();
      for (const p of allPanels(d)) {
        assert.ok(!ids.has(p.id), `${file}: duplicate panel id ${p.id}`);
        ids.add(p.id);
        assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${file}: panel "${p.title}" is wider than the grid`);
        if (p.type === 'row') continue;
        assert.equal(p.datasource?.uid, `\${${dsVar.name}}`, `${file}: panel "${p.title}" datasource`);
        assert.ok((p.targets ?? []).length > 0, `${file}: panel "${p.title}" has no query`);
        for (const t of p.targets ?? [])
          assert.equal(
            t.datasource?.uid ?? `\${${dsVar.name}}`,
            `\${${dsVar.name}}`,
            `${file}: "${p.title}" target ${t.refId}`,
          );
      }
    }
  });

  it('use only PromQL that promtool parses and only metrics from the catalogue', async () => {
    const known = knownSeries();
    const rules: { record: string; expr: string }[] = [];
    for (const { file, d } of dashboards()) {
      for (const p of allPanels(d)) {
        for (const t of p.targets ?? []) {
          rules.push({ record: `vop:lint:${rules.length}`, expr: concretize(t.expr) });
          for (const name of metricNamesIn(t.expr))
            assert.ok(known.has(name), `${file}: panel "${p.title}" uses "${name}", which is not in docs/metrics.md`);
        }
      }
    }
    const dir = tempDir('dash-lint');
    const file = path.join(dir, 'rules.yml');
    writeFileSync(file, YAML.stringify({ groups: [{ name: 'dashboard-lint', rules }] }));
    const r = await run(promtoolPath(), ['check', 'rules', file]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Template-variable queries too.
    for (const { file: f, d } of dashboards()) {
      for (const v of d.templating.list) {
        if (v.type !== 'query') continue;
        const q = (v.query as { query: string }).query;
        const inner = /label_values\(([^,]+),/.exec(q)?.[1] ?? '';
        for (const name of metricNamesIn(inner))
          assert.ok(known.has(name), `${f}: variable ${v.name} uses unknown metric ${name}`);
      }
    }
  });
});

describe('Prometheus configuration and alert rules', () => {
  const dir = repoPath('deploy', 'prometheus');
  it('pass promtool check config and check rules', async () => {
    const promtool = promtoolPath();
    const c = await run(promtool, ['check', 'config', path.join(dir, 'prometheus.yml')]);
    assert.equal(c.code, 0, c.stdout + c.stderr);
    const r = await run(promtool, ['check', 'rules', path.join(dir, 'alerts.yml')]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('alert on every failure mode the operations guide covers, using only catalogued metrics', () => {
    const doc = YAML.parse(readFileSync(path.join(dir, 'alerts.yml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string; annotations: { runbook?: string } }[] }[];
    };
    const rules = doc.groups.flatMap((g) => g.rules);
    const names = rules.map((r) => r.alert).sort();
    for (const a of [
      'VopAgentLeaseLost',
      'VopControllerDown',
      'VopLinkFlapping',
      'VopLinkNotReady',
      'VopQueueBroken',
      'VopReconcileErrors',
    ])
      assert.ok(names.includes(a), `missing alert ${a}`);
    const known = knownSeries();
    const ops = readFileSync(repoPath('docs', 'operations.md'), 'utf8');
    for (const r of rules) {
      for (const n of metricNamesIn(r.expr))
        assert.ok(known.has(n), `alert ${r.alert} uses "${n}", not in docs/metrics.md`);
      const anchor = r.annotations.runbook?.split('#')[1];
      assert.ok(anchor, `alert ${r.alert} has no runbook link`);
      assert.match(ops, new RegExp(`^### ${r.alert}$`, 'm'), `docs/operations.md has no section for ${r.alert}`);
    }
  });
});

describe('PromQL metric-name extraction used by these checks', () => {
  it('finds metrics and skips functions, labels, keywords and durations', () => {
    assert.deepEqual(
      metricNamesIn(
        'histogram_quantile(0.99, sum by (le, op) (rate(vop_blk_request_duration_seconds_bucket{link=~"$link", x="up"}[5m]))) or vector(0) and on(rack) up',
      ),
      ['vop_blk_request_duration_seconds_bucket', 'up'],
    );
  });
});
