/**
 * A real vop-controller on the etcd store (one replica; several replicas with leader
 * election come with the reconciler wiring): what it applies is in etcd, one key per
 * object with the resourceVersion as etcd's mod_revision, and a controller started on
 * an empty state directory serves the same objects at the same resourceVersions.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ETCD_DEFAULTS } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import { startEtcd, type EtcdCluster } from '../helpers/etcd';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { vopctl } from './fleet-helpers';

const LINK = `kind: Link
meta: {name: l1, labels: {team: a}}
spec:
  endpoints: [{agent: h1, role: ROLE_DEVICE}, {agent: c1, role: ROLE_DRIVER}]
  transport: {shm: {}}
  devices: [{name: console, console: {}}]
---
kind: LinkPolicy
meta: {name: p1}
spec:
  card_selector: {match_labels: {vop.dev/rack: r99}}
  template: {card_role: ROLE_DRIVER, transport: {shm: {}}, devices: [{name: console, console: {}}]}
`;

interface Obj {
  meta: { name: string; resourceVersion?: string; resource_version?: string };
}
const rvOf = (o: Obj | undefined): string => o?.meta.resourceVersion ?? o?.meta.resource_version ?? '';

describe('vop-controller on the etcd store', () => {
  let etcd: EtcdCluster;
  let dir: string;
  const servers: ServerProcess[] = [];
  before(async () => {
    etcd = await startEtcd({ members: 1 });
    dir = tempDir('controller-etcd');
  });
  after(async () => {
    for (const s of servers) await s.stop('SIGKILL');
    for (const s of servers) rmSync(s.stateDir, { recursive: true, force: true });
    await etcd.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (): Promise<ServerProcess> => {
    const cfg = path.join(dir, 'controller.yaml');
    writeFileSync(
      cfg,
      `store:\n  kind: etcd\n  endpoints: [${etcd.endpoints.join(', ')}]\n  prefix: /e2e/\n  requestTimeoutSeconds: 5\n`,
    );
    const s = await startServer('controller', ['--config', cfg], { readyTimeoutMs: 60_000 });
    servers.push(s);
    return s;
  };

  it('stores what it applies in etcd and serves it again from a fresh state directory', async () => {
    const c1 = await start();
    const manifest = path.join(dir, 'objects.yaml');
    writeFileSync(manifest, LINK);
    let r = await vopctl(c1.admin, ['apply', '-f', manifest]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'link/l1 created\npolicy/p1 created\n');
    r = await vopctl(c1.admin, ['get', 'links', 'l1', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const rv = rvOf((JSON.parse(r.stdout) as Obj[])[0]);
    assert.match(rv, /^[1-9][0-9]*$/);

    // In etcd: one key per object, the resourceVersion as its mod_revision.
    const direct = new EtcdStore({ ...ETCD_DEFAULTS, endpoints: etcd.endpoints, prefix: '/e2e/' });
    try {
      const snap = await direct.loadSnapshot();
      assert.deepEqual(
        snap.objects.map((o) => `${o.kind}/${o.name}`),
        ['link/l1', 'policy/p1'],
      );
      assert.equal(String(snap.objects[0]?.revision), rv);
      const raw = await direct.client.kv.range({ key: direct.keys.object('link', 'l1') });
      assert.equal(raw.kvs[0]?.mod_revision, rv);
      assert.ok(snap.identity.generation >= BigInt(rv), 'desired-state writes moved the generation');
    } finally {
      await direct.close();
    }

    await c1.stop();
    const c2 = await start();
    assert.notEqual(c2.stateDir, c1.stateDir);
    r = await vopctl(c2.admin, ['get', 'links', 'l1', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(rvOf((JSON.parse(r.stdout) as Obj[])[0]), rv, 'same object, same resourceVersion');
    r = await vopctl(c2.admin, ['apply', '-f', manifest]);
    assert.equal(r.stdout, 'link/l1 unchanged\npolicy/p1 unchanged\n');
    // Compare-and-swap goes through to etcd: a stale resourceVersion changes nothing.
    r = await vopctl(c2.admin, ['delete', 'link', 'l1', '--resource-version', '1']);
    assert.equal(r.code, 5, r.stderr);
    r = await vopctl(c2.admin, ['delete', 'link', 'l1', '--resource-version', rv]);
    assert.equal(r.code, 0, r.stderr);
    r = await vopctl(c2.admin, ['get', 'links', 'l1']);
    assert.equal(r.code, 4);
  });
});
