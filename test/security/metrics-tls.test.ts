/**
 * Metrics and /sd/agents off loopback (the Kubernetes manifests): HTTPS, and only a
 * client certificate with role reader or admin may read them (/healthz stays open for
 * probes). A real Prometheus runs deploy/prometheus/prometheus-kubernetes.yml (with only
 * the addresses and file paths changed) against a controller and an agent serving that
 * way, discovers the agent through HTTPS service discovery and scrapes both.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { rmSync } from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import YAML from 'yaml';

import { repoPath } from '../../lib/src/paths';
import { freePort, waitFor } from '../controller/fleet-helpers';
import { testPki, type TestPki } from '../helpers/pki';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

/** Temporary directories of this file (servers' state directories included), removed at the end. */
const dirs: string[] = [];
function tmp(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}
function removeDirs(...more: (string | undefined)[]): void {
  for (const d of [...dirs, ...more]) if (d) rmSync(d, { recursive: true, force: true });
}

function get(url: string, pki: TestPki, who: string | null): Promise<number> {
  return new Promise((resolve, reject) => {
    const f = who === null ? null : pki.files(who);
    const req = https.get(
      url,
      {
        ca: pki.ca.certPem,
        ...(f ? { cert: readFileSync(f.cert), key: readFileSync(f.key) } : {}),
        agent: false,
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
  });
}

async function promQuery(base: string, q: string): Promise<{ metric: Record<string, string> }[]> {
  const res = await fetch(`${base}/api/v1/query?query=${encodeURIComponent(q)}`);
  const body = (await res.json()) as { status: string; data?: { result: { metric: Record<string, string> }[] } };
  return body.data?.result ?? [];
}

describe('metrics over HTTPS with client certificates', () => {
  let pki: TestPki;
  let ctl: ServerProcess;
  let agent: ServerProcess;
  let prom: ChildProcess | undefined;

  before(async () => {
    pki = await testPki(['vop-controller', 'host-1', 'prometheus', 'ops-admin']);
    const dir = tmp('metrics-tls');
    const tlsLines = (name: string, indent = ''): string[] => {
      const f = pki.files(name);
      return [`${indent}  ca: ${f.ca}`, `${indent}  cert: ${f.cert}`, `${indent}  key: ${f.key}`];
    };
    const ctlCfg = path.join(dir, 'controller.yaml');
    writeFileSync(
      ctlCfg,
      [
        'tls:',
        ...tlsLines('vop-controller'),
        'metricsTls:',
        ...tlsLines('vop-controller'),
        'roles: { admin: [ops-admin], reader: [prometheus], agent: [host-1] }',
        '',
      ].join('\n'),
    );
    const ctlAddr = `127.0.0.1:${await freePort()}`;
    ctl = await startServer('controller', ['--config', ctlCfg, '--grpc-listen', ctlAddr], { readyTimeoutMs: 60_000 });
    const agentCfg = path.join(dir, 'agent.yaml');
    writeFileSync(
      agentCfg,
      [
        'node: { name: host-1 }',
        'tls:',
        ...tlsLines('host-1'),
        'metricsTls:',
        ...tlsLines('host-1'),
        'roles: { admin: [vop-controller], reader: [prometheus] }',
        'controller:',
        `  address: ${ctlAddr}`,
        '  tls:',
        ...tlsLines('host-1', '  '),
        '',
      ].join('\n'),
    );
    agent = await startServer('agent', ['--config', agentCfg, '--rendezvous-dir', tmp('rdv')], {
      readyTimeoutMs: 60_000,
    });
  });

  after(async () => {
    if (prom && prom.exitCode === null && prom.signalCode === null) {
      const p = prom;
      const gone = new Promise((resolve) => p.once('exit', resolve));
      p.kill('SIGKILL');
      await gone;
    }
    await agent?.stop('SIGKILL');
    await ctl?.stop('SIGKILL');
    removeDirs(pki?.dir, agent?.stateDir, ctl?.stateDir);
  });

  it('refuses /metrics and /sd/agents without a reader certificate, and keeps /healthz open', async () => {
    for (const srv of [ctl, agent]) {
      const base = `https://${srv.metrics}`;
      assert.equal(await get(`${base}/metrics`, pki, null), 401, 'no client certificate');
      assert.equal(await get(`${base}/metrics`, pki, 'host-1'), 403, 'an agent certificate');
      assert.equal(await get(`${base}/metrics`, pki, 'prometheus'), 200);
      assert.equal(await get(`${base}/healthz`, pki, null), 200);
      // Plain HTTP is not spoken at all.
      await assert.rejects(fetch(`http://${srv.metrics}/metrics`));
    }
    assert.equal(await get(`https://${ctl.metrics}/sd/agents`, pki, null), 401);
    assert.equal(await get(`https://${ctl.metrics}/sd/agents`, pki, 'host-1'), 403);
    assert.equal(await get(`https://${ctl.metrics}/sd/agents`, pki, 'ops-admin'), 200);
  });

  it('is scraped by Prometheus with the shipped Kubernetes scrape config (tls_config)', async () => {
    const shipped = YAML.parse(readFileSync(repoPath('deploy', 'prometheus', 'prometheus-kubernetes.yml'), 'utf8')) as {
      global: Record<string, unknown>;
      rule_files?: string[];
      scrape_configs: {
        scheme: string;
        tls_config: Record<string, string>;
        static_configs?: { targets: string[] }[];
        http_sd_configs?: { url: string; refresh_interval: string; tls_config: Record<string, string> }[];
      }[];
    };
    const f = pki.files('prometheus');
    const files = (t: Record<string, string>): void => {
      assert.deepEqual(Object.keys(t).sort(), ['ca_file', 'cert_file', 'key_file']);
      t.ca_file = f.ca;
      t.cert_file = f.cert;
      t.key_file = f.key;
    };
    shipped.global.scrape_interval = '2s';
    shipped.global.scrape_timeout = '2s';
    shipped.rule_files = [repoPath('deploy', 'prometheus', 'alerts.yml')];
    for (const sc of shipped.scrape_configs) {
      assert.equal(sc.scheme, 'https');
      files(sc.tls_config);
      if (sc.static_configs) sc.static_configs = [{ targets: [ctl.metrics] }];
      for (const sd of sc.http_sd_configs ?? []) {
        assert.match(sd.url, /^https:\/\/.*\/sd\/agents$/);
        sd.url = `https://${ctl.metrics}/sd/agents`;
        sd.refresh_interval = '1s';
        files(sd.tls_config);
      }
    }
    const dir = tmp('prom-tls');
    const cfg = path.join(dir, 'prometheus.yml');
    writeFileSync(cfg, YAML.stringify(shipped));
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    prom = spawn(
      'prometheus',
      [
        `--config.file=${cfg}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      { stdio: 'ignore' },
    );
    await waitFor('Prometheus ready', async () => (await fetch(`${base}/-/ready`).catch(() => undefined))?.ok, 30_000);
    const up = await waitFor(
      'controller and agent scraped over HTTPS',
      async () => {
        const r = await promQuery(base, 'up == 1');
        return r.length === 2 ? r : undefined;
      },
      60_000,
      500,
    );
    assert.deepEqual(up.map((v) => v.metric.job).sort(), ['vop-agents', 'vop-controller']);
    assert.equal(up.find((v) => v.metric.job === 'vop-agents')?.metric.node, 'host-1');
  });
});
