/**
 * ControllerService and vopctl against a real vop-controller: bad input is refused with
 * a clear message and changes nothing; CAS on resourceVersion; watches send a snapshot,
 * a SYNCED marker, then changes; list calls page and filter.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status } from '@grpc/grpc-js';

import type { WatchLinksResponse } from '../../lib/proto/controller';
import { Link, WatchEventType } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { call, decodeStatus, expectGrpcError } from '../helpers/grpc';
import { tempDir } from '../helpers/servers';
import { listLinks, startFleet, vopctl, waitFor, type Fleet } from './fleet-helpers';

function link(name: string, labels: Record<string, string> = {}): Link {
  return Link.fromJSON({
    meta: { name, labels },
    spec: {
      endpoints: [
        { agent: 'h1', role: 'ROLE_DEVICE' },
        { agent: 'c1', role: 'ROLE_DRIVER' },
      ],
      transport: { shm: {} },
      devices: [{ name: 'console', console: {} }],
    },
  });
}

describe('ControllerService and vopctl', () => {
  let fleet: Fleet;
  let dir: string;
  before(async () => {
    fleet = await startFleet();
    dir = tempDir('manifests');
  });
  after(async () => {
    await fleet.stop();
  });

  const write = (name: string, text: string): string => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  it('applies a manifest with several objects and reports created, unchanged, configured', async () => {
    const f = write(
      'two.yaml',
      `kind: Link
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
`,
    );
    let r = await vopctl(fleet.controllerAdmin, ['apply', '-f', f]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'link/l1 created\npolicy/p1 created\n');
    r = await vopctl(fleet.controllerAdmin, ['apply', '-f', f]);
    assert.equal(r.stdout, 'link/l1 unchanged\npolicy/p1 unchanged\n');
    r = await vopctl(
      fleet.controllerAdmin,
      ['apply', '-f', '-'],
      `kind: Link\nmeta: {name: l1}\nspec:\n  endpoints: [{agent: h1, role: ROLE_DEVICE}, {agent: c1, role: ROLE_DRIVER}]\n  transport: {shm: {}}\n  devices: [{name: console, console: {}}, {name: c2, console: {}}]\n`,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'link/l1 configured\n');
    const got = await call(fleet.ctl, fleet.ctl.getLink, { name: 'l1' }, new Metadata());
    assert.equal(got.link?.meta?.generation, 2n);
  });

  it('refuses bad input with a clear message and exit code, and changes nothing', async () => {
    const before = JSON.stringify((await listLinks(fleet)).map((l) => [l.meta?.name, l.meta?.resourceVersion]));
    const cases: { file: string; text: string; code: number; msg: RegExp }[] = [
      { file: 'yaml.yaml', text: 'kind: Link\nmeta: {name: x\n', code: 3, msg: /invalid YAML/ },
      {
        file: 'unknown.yaml',
        text: 'kind: Link\nmeta: {name: x}\nspec: {endpoints: [], transprot: {}}\n',
        code: 3,
        msg: /key "transprot" is unknown/,
      },
      { file: 'kind.yaml', text: 'kind: Linkk\nmeta: {name: x}\n', code: 3, msg: /kind must be Link or LinkPolicy/ },
      {
        file: 'enum.yaml',
        text: 'kind: Link\nmeta: {name: x}\nspec: {endpoints: [{agent: a, role: ROLE_BOSS}]}\n',
        code: 3,
        msg: /ROLE_BOSS/,
      },
      // The second document is bad: the first must not be applied either.
      {
        file: 'partial.yaml',
        text: 'kind: Link\nmeta: {name: should-not-exist}\nspec: {endpoints: [{agent: h1, role: ROLE_DEVICE}, {agent: c1, role: ROLE_DRIVER}], transport: {shm: {}}, devices: [{name: c, console: {}}]}\n---\nkind: Link\nmeta: {name: y, bogus: 1}\n',
        code: 3,
        msg: /document 2.*key "bogus" is unknown/,
      },
      {
        file: 'invalid.yaml',
        text: 'kind: Link\nmeta: {name: Bad_Name}\nspec: {endpoints: [{agent: h1, role: ROLE_DEVICE}, {agent: c1, role: ROLE_DEVICE}], transport: {shm: {}}, devices: [{name: c, console: {}}]}\n',
        code: 3,
        msg: /link\.meta\.name[\s\S]*link\.spec\.endpoints\[1\]\.role/,
      },
      {
        file: 'selector.yaml',
        text: 'kind: LinkPolicy\nmeta: {name: s}\nspec: {card_selector: {match_expressions: [{key: "bad key", operator: SELECTOR_OPERATOR_IN, values: [a]}]}, template: {card_role: ROLE_DRIVER, transport: {shm: {}}, devices: [{name: c, console: {}}]}}\n',
        code: 3,
        msg: /match_expressions\[0\]\.key/,
      },
    ];
    for (const c of cases) {
      const r = await vopctl(fleet.controllerAdmin, ['apply', '-f', write(c.file, c.text)]);
      assert.equal(r.code, c.code, `${c.file}: ${r.stderr}`);
      assert.match(r.stderr, c.msg, c.file);
      assert.equal(r.stdout, '', c.file);
    }
    const sel = await vopctl(fleet.controllerAdmin, ['get', 'links', '-l', 'tier in (a,']);
    assert.equal(sel.code, 3);
    assert.match(sel.stderr, /invalid selector: unbalanced "\("/);
    const grpcSel = await expectGrpcError(
      call(
        fleet.ctl,
        fleet.ctl.listLinks,
        { labelSelector: 'a in ()', agent: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      ),
    );
    assert.equal(grpcSel.code, status.INVALID_ARGUMENT);
    assert.deepEqual(
      decodeStatus(grpcSel).fieldViolations.map((v) => v.field),
      ['label_selector'],
    );
    const missing = await vopctl(fleet.controllerAdmin, ['get', 'links', 'nope']);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /link "nope" not found \[LINK_NOT_FOUND\]/);
    const usage = await vopctl(fleet.controllerAdmin, ['frobnicate']);
    assert.equal(usage.code, 2);
    const down = await vopctl('127.0.0.1:1', ['get', 'links']);
    assert.equal(down.code, 6);
    assert.match(down.stderr, /cannot reach the controller at 127\.0\.0\.1:1/);
    assert.equal(
      JSON.stringify((await listLinks(fleet)).map((l) => [l.meta?.name, l.meta?.resourceVersion])),
      before,
      'nothing changed',
    );
  });

  it('compare-and-swaps on resourceVersion: a stale one is ABORTED and changes nothing', async () => {
    const cur = (await call(fleet.ctl, fleet.ctl.getLink, { name: 'l1' }, new Metadata())).link as Link;
    const rv = cur.meta?.resourceVersion ?? '';
    const upd = link('l1', { team: 'b' });
    upd.meta = { ...(upd.meta as NonNullable<Link['meta']>), resourceVersion: rv };
    const ok = await call(fleet.ctl, fleet.ctl.applyLink, { link: upd, dryRun: false }, new Metadata());
    assert.notEqual(ok.link?.meta?.resourceVersion, rv);
    const err = await expectGrpcError(
      call(
        fleet.ctl,
        fleet.ctl.applyLink,
        { link: { ...upd, meta: { ...upd.meta, labels: { team: 'c' } } }, dryRun: false },
        new Metadata(),
      ),
    );
    assert.equal(err.code, status.ABORTED);
    assert.equal(decodeStatus(err).reason, 'STALE_RESOURCE_VERSION');
    assert.match(err.details, /re-read and retry/);
    const now = (await call(fleet.ctl, fleet.ctl.getLink, { name: 'l1' }, new Metadata())).link;
    assert.equal(now?.meta?.labels.team, 'b');
    const del = await vopctl(fleet.controllerAdmin, ['delete', 'link', 'l1', '--resource-version', rv]);
    assert.equal(del.code, 5);
    assert.match(del.stderr, /STALE_RESOURCE_VERSION/);
    const stale = write(
      'stale.yaml',
      `kind: Link\nmeta: {name: l1, resourceVersion: "${rv}"}\nspec: {endpoints: [{agent: h1, role: ROLE_DEVICE}, {agent: c1, role: ROLE_DRIVER}], transport: {shm: {}}, devices: [{name: c, console: {}}]}\n`,
    );
    const r = await vopctl(fleet.controllerAdmin, ['apply', '-f', stale]);
    assert.equal(r.code, 5);
    assert.match(r.stderr, /is stale/);
  });

  it('pages and filters list calls', async () => {
    for (let i = 0; i < 7; i++)
      await call(
        fleet.ctl,
        fleet.ctl.applyLink,
        { link: link(`page-${i}`, { tier: i % 2 === 0 ? 'even' : 'odd' }), dryRun: false },
        new Metadata(),
      );
    const seen: string[] = [];
    let pageToken = '';
    do {
      const r = await call(
        fleet.ctl,
        fleet.ctl.listLinks,
        { labelSelector: 'tier', agent: '', phase: 0, pageSize: 3, pageToken },
        new Metadata(),
      );
      assert.ok(r.links.length <= 3);
      seen.push(...r.links.map((l) => l.meta?.name ?? ''));
      pageToken = r.nextPageToken;
    } while (pageToken !== '');
    assert.deepEqual(seen, ['page-0', 'page-1', 'page-2', 'page-3', 'page-4', 'page-5', 'page-6']);
    const odd = await call(
      fleet.ctl,
      fleet.ctl.listLinks,
      { labelSelector: 'tier=odd', agent: '', phase: 0, pageSize: 0, pageToken: '' },
      new Metadata(),
    );
    assert.deepEqual(
      odd.links.map((l) => l.meta?.name),
      ['page-1', 'page-3', 'page-5'],
    );
    const byAgent = await call(
      fleet.ctl,
      fleet.ctl.listLinks,
      { labelSelector: '', agent: 'nobody', phase: 0, pageSize: 0, pageToken: '' },
      new Metadata(),
    );
    assert.deepEqual(byAgent.links, []);
    const bad = await expectGrpcError(
      call(
        fleet.ctl,
        fleet.ctl.listLinks,
        { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: 'garbage' },
        new Metadata(),
      ),
    );
    assert.equal(bad.code, status.INVALID_ARGUMENT);
  });

  it('watches links: snapshot, SYNCED marker, then changes', async () => {
    const stream = fleet.ctl.watchLinks({ labelSelector: 'tier=even', agent: '', updatesOnly: false });
    const events: WatchLinksResponse[] = [];
    stream.on('data', (e: WatchLinksResponse) => events.push(e));
    stream.on('error', () => undefined);
    try {
      await waitFor('SYNCED', () => events.some((e) => e.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED));
      const snap = events.slice(
        0,
        events.findIndex((e) => e.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED),
      );
      assert.deepEqual(
        snap.map((e) => [e.type, e.link?.meta?.name]),
        ['page-0', 'page-2', 'page-4', 'page-6'].map((n) => [WatchEventType.WATCH_EVENT_TYPE_ADDED, n]),
      );
      await call(
        fleet.ctl,
        fleet.ctl.applyLink,
        { link: link('page-8', { tier: 'even' }), dryRun: false },
        new Metadata(),
      );
      await call(fleet.ctl, fleet.ctl.deleteLink, { name: 'page-0', resourceVersion: '' }, new Metadata());
      await waitFor('added and deleted', () =>
        events.some((e) => e.type === WatchEventType.WATCH_EVENT_TYPE_DELETED && e.link?.meta?.name === 'page-0'),
      );
      assert.ok(
        events.some((e) => e.type === WatchEventType.WATCH_EVENT_TYPE_ADDED && e.link?.meta?.name === 'page-8'),
      );
      assert.ok(
        events.every((e) => e.link === undefined || e.link.meta?.labels.tier === 'even'),
        'the selector filters changes too',
      );
    } finally {
      stream.cancel();
    }
  });

  it('streams vopctl watch -o json: snapshot, a synced marker, then changes', async () => {
    const proc = spawn(
      process.execPath,
      [
        repoPath('dist', 'controller', 'src', 'vopctl', 'main.js'),
        '--server',
        fleet.controllerAdmin,
        'watch',
        'links',
        '-l',
        'tier=odd',
        '-o',
        'json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    try {
      const lines = (): { type: string; object: { meta: { name: string } } | null }[] =>
        out
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as { type: string; object: { meta: { name: string } } | null });
      await waitFor('synced', () => lines().some((e) => e.type === 'SYNCED'));
      assert.deepEqual(
        lines().map((e) => [e.type, e.object?.meta.name ?? null]),
        [
          ['ADDED', 'page-1'],
          ['ADDED', 'page-3'],
          ['ADDED', 'page-5'],
          ['SYNCED', null],
        ],
      );
      await call(
        fleet.ctl,
        fleet.ctl.applyLink,
        { link: link('page-9', { tier: 'odd' }), dryRun: false },
        new Metadata(),
      );
      await waitFor('page-9 added', () => lines().some((e) => e.type === 'ADDED' && e.object?.meta.name === 'page-9'));
    } finally {
      proc.kill('SIGINT');
    }
  });

  it('keeps desired state across a controller restart (embedded SQLite store)', async () => {
    const before = (await listLinks(fleet)).map((l) => [
      l.meta?.name,
      l.meta?.resourceVersion,
      String(l.meta?.generation),
    ]);
    await fleet.controller.stop('SIGKILL');
    await fleet.startController();
    const after = (await listLinks(fleet)).map((l) => [
      l.meta?.name,
      l.meta?.resourceVersion,
      String(l.meta?.generation),
    ]);
    assert.deepEqual(after, before);
    const p = await call(fleet.ctl, fleet.ctl.getPolicy, { name: 'p1' }, new Metadata());
    assert.equal(p.policy?.meta?.name, 'p1');
  });
});
