/**
 * Telemetry against real parts: a controller-managed fleet (controller, a host and a
 * card agent as processes) with a live console and disk link, scraped by a real Prometheus
 * that finds the agents through the controller's HTTP service discovery. Also holds
 * the live /metrics of both servers to the catalogue in docs/metrics.md.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata } from '@grpc/grpc-js';
import YAML from 'yaml';

import { ConditionStatus } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { readCatalogue, type CatalogueEntry } from '../helpers/catalogue';
import { call } from '../helpers/grpc';
import { promtoolPath, run, tempDir, withoutKnownPromClientLintNames } from '../helpers/servers';
import {
  condition,
  freePort,
  listLinks,
  policyFromJson,
  startFleet,
  waitFor,
  type Fleet,
} from '../controller/fleet-helpers';

const DIR = tempDir('obs');
const DISK = path.join(DIR, 'disk.img');
const NBD_SOCK = path.join(DIR, 'nbd.sock');

const POLICY = {
  meta: { name: 'obs' },
  spec: {
    cardSelector: { matchLabels: { 'vop.dev/rack': 'r07', 'vop.dev/role': 'card' } },
    hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
    template: {
      cardRole: 'ROLE_DRIVER',
      transport: { shm: {} },
      devices: [
        { name: 'console', console: { deviceBackend: { pty: {} }, driverFrontend: { pty: {} } } },
        { name: 'disk', blk: { backing: { path: DISK }, export: { unixSocket: NBD_SOCK, exportName: 'vop' } } },
      ],
    },
  },
};

interface PromVector {
  metric: Record<string, string>;
  value: [number, string];
}

async function promQuery(base: string, q: string): Promise<PromVector[]> {
  const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { status: string; data?: { result: PromVector[] }; error?: string };
  if (body.status !== 'success') throw new Error(`query ${q}: ${body.error ?? res.status}`);
  return body.data?.result ?? [];
}

/** Parses "# TYPE name type" and sample label names from the text exposition format. */
function exposition(text: string): Map<string, { type: string; labels: Set<string> }> {
  const out = new Map<string, { type: string; labels: Set<string> }>();
  for (const line of text.split('\n')) {
    const t = /^# TYPE (\S+) (\S+)/.exec(line);
    if (t) {
      out.set(t[1] as string, { type: t[2] as string, labels: new Set() });
      continue;
    }
    const s = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/.exec(line);
    if (!s) continue;
    const base = (s[1] as string).replace(/_(bucket|sum|count)$/, '');
    const m = out.get(s[1] as string) ?? out.get(base);
    if (!m) continue;
    for (const kv of (s[2] as string).matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g))
      if (kv[1] !== 'le') m.labels.add(kv[1] as string);
  }
  return out;
}

function checkAgainstCatalogue(section: CatalogueEntry['section'], text: string): string[] {
  const problems: string[] = [];
  const live = exposition(text);
  const cat = readCatalogue().filter((e) => e.section === section);
  for (const e of cat) {
    const m = live.get(e.name);
    if (!m) {
      problems.push(`${section}: ${e.name} is catalogued but not exported`);
      continue;
    }
    if (m.type !== e.type) problems.push(`${section}: ${e.name} is a ${m.type}, catalogued as ${e.type}`);
    for (const l of m.labels)
      if (!e.labels.includes(l))
        problems.push(`${section}: ${e.name} has label "${l}" not in the catalogue (${e.labels.join(', ')})`);
  }
  const names = new Set(cat.map((e) => e.name));
  for (const name of live.keys()) {
    if (/^(vop_|workqueue_|grpc_)/.test(name) && !names.has(name))
      problems.push(`${section}: ${name} is exported but not catalogued`);
  }
  return problems;
}

describe('telemetry of a controller-managed fleet', () => {
  let fleet: Fleet;
  let prom: ChildProcess | undefined;
  let promBase = '';
  let linkName = '';
  let traffic: NodeJS.Timeout | undefined;

  before(async () => {
    writeFileSync(DISK, Buffer.alloc(16 << 20));
    // The policy's disk image and NBD socket lie in DIR: the agents allow it for both.
    fleet = await startFleet({ agentArgs: ['--disk-dir', DIR, '--socket-dir', DIR] });
    await fleet.startAgent('host-1', 'host');
    await fleet.startAgent('card-1', 'card', 'host-1');
    await call(fleet.ctl, fleet.ctl.applyPolicy, { policy: policyFromJson(POLICY), dryRun: false }, new Metadata());
    const links = await waitFor(
      'the policy link Ready',
      async () => {
        const ls = await listLinks(fleet, 'vop.dev/policy=obs');
        return ls.length === 1 && condition(ls[0], 'Ready') === ConditionStatus.CONDITION_STATUS_TRUE ? ls : undefined;
      },
      30_000,
    );
    linkName = links[0]?.meta?.name ?? '';

    // Traffic: a stock NBD client writes to the card's export of the host's disk, every 500 ms.
    let busy = false;
    traffic = setInterval(() => {
      if (busy) return;
      busy = true;
      void run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 256k', `nbd+unix:///vop?socket=${NBD_SOCK}`], {
        timeoutMs: 20_000,
      }).finally(() => {
        busy = false;
      });
    }, 500);

    // Prometheus, configured from the shipped scrape config with only the addresses changed.
    const shipped = YAML.parse(readFileSync(repoPath('deploy', 'prometheus', 'prometheus.yml'), 'utf8')) as {
      global: Record<string, unknown>;
      rule_files?: string[];
      scrape_configs: {
        job_name: string;
        static_configs?: { targets: string[] }[];
        http_sd_configs?: { url: string; refresh_interval: string }[];
      }[];
    };
    // Short intervals so the test sees data quickly; a generous timeout so a loaded machine does not flip `up`.
    shipped.global.scrape_interval = '2s';
    shipped.global.scrape_timeout = '2s';
    shipped.global.evaluation_interval = '2s';
    shipped.rule_files = [repoPath('deploy', 'prometheus', 'alerts.yml')];
    for (const sc of shipped.scrape_configs) {
      if (sc.static_configs) sc.static_configs = [{ targets: [fleet.controller.metrics] }];
      for (const sd of sc.http_sd_configs ?? []) {
        sd.url = `http://${fleet.controller.metrics}/sd/agents`;
        sd.refresh_interval = '1s';
      }
    }
    const dir = tempDir('prom');
    const cfg = path.join(dir, 'prometheus.yml');
    writeFileSync(cfg, YAML.stringify(shipped));
    const port = await freePort();
    promBase = `http://127.0.0.1:${port}`;
    prom = spawn(
      'prometheus',
      [
        `--config.file=${cfg}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: 'ignore' },
    );
    await waitFor(
      'Prometheus ready',
      async () => (await fetch(`${promBase}/-/ready`).catch(() => undefined))?.ok === true,
      30_000,
      250,
    );
  });

  after(async () => {
    if (traffic) clearInterval(traffic);
    prom?.kill('SIGKILL');
    await fleet?.stop();
  });

  it('discovers every agent through HTTP SD and labels it with its rack, node and role', async () => {
    const up = await waitFor(
      'both agents scraped',
      async () => {
        const r = await promQuery(promBase, 'up{job="vop-agents"} == 1');
        return r.length === 2 ? r : undefined;
      },
      60_000,
      500,
    );
    const byNode = new Map(up.map((v) => [v.metric.node, v.metric]));
    assert.equal(byNode.get('host-1')?.rack, 'r07');
    assert.equal(byNode.get('host-1')?.role, 'host');
    assert.equal(byNode.get('card-1')?.rack, 'r07');
    assert.equal(byNode.get('card-1')?.role, 'card');
    assert.equal(byNode.get('card-1')?.host, 'host-1');
    const ctl = await waitFor(
      'the controller scraped',
      async () => {
        const r = await promQuery(promBase, 'up{job="vop-controller"} == 1');
        return r.length === 1 ? r : undefined;
      },
      60_000,
      500,
    );
    assert.equal(ctl[0]?.value[1], '1');
  });

  it('sees the per-queue counters of the live link increase on both agents', async () => {
    const q = `sum by (node) (increase(vop_queue_bytes_total{link="${linkName}"}[10s]))`;
    const r = await waitFor(
      'queue bytes increasing on both agents',
      async () => {
        const v = await promQuery(promBase, q);
        return v.length === 2 && v.every((x) => Number(x.value[1]) > 0) ? v : undefined;
      },
      45_000,
      1000,
    ).catch(async (err: Error) => {
      const dump: string[] = [];
      for (const [name, a] of fleet.agents) {
        const text = await (await fetch(`http://${a.metrics}/metrics`)).text();
        dump.push(
          `${name}:\n${text
            .split('\n')
            .filter((l) => l.startsWith('vop_queue_bytes_total') || l.startsWith('vop_link_state{'))
            .join('\n')}`,
        );
      }
      throw new Error(`${err.message}\n${dump.join('\n')}`);
    });
    assert.deepEqual(r.map((x) => x.metric.node).sort(), ['card-1', 'host-1']);
    const ready = await waitFor(
      'the link Ready on both agents in Prometheus',
      async () => {
        const v = await promQuery(
          promBase,
          `vop_link_condition{link="${linkName}", condition="Ready", status="True"} == 1`,
        );
        return v.length === 2 ? v : undefined;
      },
      30_000,
      1000,
    );
    assert.deepEqual(
      ready.map((x) => x.value[1]),
      ['1', '1'],
    );
    // The device side's blk latency histogram and request counters, kept in C, reach Prometheus.
    const lat = await waitFor(
      'blk write latency observed',
      async () => {
        const v = await promQuery(
          promBase,
          `sum(vop_blk_request_duration_seconds_count{link="${linkName}", op="write"})`,
        );
        return Number(v[0]?.value[1] ?? 0) > 0 ? v : undefined;
      },
      20_000,
      1000,
    );
    assert.ok(Number(lat[0]?.value[1]) > 0);
    const writes = await promQuery(promBase, `sum(vop_blk_requests_total{link="${linkName}", op="write"})`);
    assert.ok(Number(writes[0]?.value[1] ?? 0) >= Number(lat[0]?.value[1]), 'every timed write is counted');
    const agents = await waitFor(
      'both agents Ready in the controller metrics',
      async () => {
        const v = await promQuery(promBase, 'sum(vop_controller_agents{rack="r07", phase="Ready"})');
        return v[0]?.value[1] === '2' ? v : undefined;
      },
      30_000,
      1000,
    );
    assert.equal(agents[0]?.value[1], '2');
  });

  it('logs every line about a link with link and peer fields, and warnings and errors with a stable code', () => {
    for (const [name, a] of fleet.agents) {
      const linkLines = a.logs.filter((l) => typeof l.link === 'string' && l.link !== '');
      assert.ok(linkLines.length > 0, `${name} logged nothing about its link`);
      for (const l of linkLines)
        assert.ok(typeof l.peer === 'string' && l.peer !== '', `${name}: line without peer: ${JSON.stringify(l)}`);
      assert.ok(
        linkLines.some((l) => l.peer === (name === 'host-1' ? 'card-1' : 'host-1')),
        `${name}: peer field names the other agent`,
      );
      for (const l of a.logs) {
        if (typeof l.level === 'string' && ['warn', 'error', 'fatal'].includes(l.level))
          assert.ok(
            typeof l.code === 'string' && l.code !== '',
            `${name}: ${l.level} without code: ${JSON.stringify(l)}`,
          );
      }
    }
  });

  it('exports exactly the catalogued metrics, and promtool accepts both servers', async () => {
    const problems: string[] = [];
    const texts: string[] = [];
    for (const [section, addr] of [
      ['Controller', fleet.controller.metrics],
      ['Agent', fleet.agents.get('host-1')?.metrics ?? ''],
      ['Agent', fleet.agents.get('card-1')?.metrics ?? ''],
    ] as const) {
      const text = await (await fetch(`http://${addr}/metrics`)).text();
      texts.push(text);
      problems.push(...checkAgainstCatalogue(section, text));
    }
    // An agent metric counts as exported if either agent exports it (device counters exist only where the device runs).
    const agentMissing = problems.filter((p) => p.startsWith('Agent:') && p.endsWith('but not exported'));
    const filtered = problems.filter(
      (p) => !agentMissing.includes(p) || agentMissing.filter((q) => q === p).length === 2,
    );
    assert.deepEqual([...new Set(filtered)], []);
    for (const text of texts) {
      const lint = await run(promtoolPath(), ['check', 'metrics'], { input: withoutKnownPromClientLintNames(text) });
      assert.equal(lint.code, 0, lint.stdout + lint.stderr);
    }
  });
});
