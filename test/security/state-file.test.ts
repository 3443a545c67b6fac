/**
 * State on disk (issue 11, item 5), against real vop-agent processes: a link whose state file
 * is truncated or corrupt stays listed after a restart (phase Failed, StateUnreadable=True, no
 * data plane) and the file is kept aside for the operator; a stored spec the agent now
 * refuses stays listed the same way; a write that fills the disk (a short write) leaves the
 * old state file byte-identical instead of replacing it with a truncated one.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';

import { status } from '@grpc/grpc-js';

import { ConditionStatus, LinkPhase, WatchEventType, type Link } from '../../lib/proto/types';
import { Agent, bytePipeDevice, makeLink } from '../agent/helpers';
import { decodeStatus, expectGrpcError } from '../helpers/grpc';
import { prereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

const cond = (l: Link | undefined, type: string) => l?.status?.conditions.find((c) => c.type === type);

function consoleLink(name: string, extra: { annotations?: Record<string, string> } = {}): Link {
  return makeLink(name, { devices: [bytePipeDevice('con0', 'console')], ...extra });
}

async function start(
  stateDir: string,
  rdv: string,
  args: string[] = [],
): Promise<{ srv: ServerProcess; agent: Agent }> {
  const srv = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv, ...args], { stateDir });
  return { srv, agent: new Agent(srv.admin) };
}

async function stop(x: { srv: ServerProcess; agent: Agent }): Promise<void> {
  x.agent.close();
  await x.srv.stop('SIGTERM');
}

describe('link state files', () => {
  it('keeps a link whose state file was truncated listed after a restart, with the file kept aside', async () => {
    const stateDir = tempDir('state-trunc');
    const rdv = tempDir('state-trunc-rdv');
    let x = await start(stateDir, rdv);
    try {
      for (const n of ['keep-1', 'trunc-1', 'gone-1']) await x.agent.apply(consoleLink(n));
      await stop(x);
      const dir = path.join(stateDir, 'links');
      const orig = readFileSync(path.join(dir, 'trunc-1.json'));
      const truncated = orig.subarray(0, Math.floor(orig.length / 2));
      writeFileSync(path.join(dir, 'trunc-1.json'), truncated);
      const otherFormat = Buffer.from(JSON.stringify({ format: 'vop.agent.link/v0', link: {} }));
      writeFileSync(path.join(dir, 'gone-1.json'), otherFormat);

      x = await start(stateDir, rdv);
      const names = (await x.agent.list()).links.map((l) => l.meta?.name);
      assert.deepEqual(names, ['gone-1', 'keep-1', 'trunc-1'], 'no link vanished');
      const t = (await x.agent.get('trunc-1')).link;
      assert.equal(t?.status?.phase, LinkPhase.LINK_PHASE_FAILED);
      const su = cond(t, 'StateUnreadable');
      assert.equal(su?.status, ConditionStatus.CONDITION_STATUS_TRUE);
      assert.equal(su?.reason, 'StateFileUnreadable');
      assert.equal(cond(t, 'Ready')?.status, ConditionStatus.CONDITION_STATUS_FALSE);
      assert.equal(cond(t, 'Ready')?.reason, 'StateFileUnreadable');
      // The file is kept aside, byte for byte, and the message says where.
      const aside = readdirSync(dir).filter((f) => f.startsWith('trunc-1.json.corrupt-'));
      assert.equal(aside.length, 1, readdirSync(dir).join(' '));
      assert.ok(!existsSync(path.join(dir, 'trunc-1.json')));
      assert.deepEqual(readFileSync(path.join(dir, aside[0] ?? '')), truncated);
      assert.ok(su?.message.includes(path.join(dir, aside[0] ?? '')), su?.message);
      assert.match(cond((await x.agent.get('gone-1')).link, 'StateUnreadable')?.message ?? '', /unknown format/);
      assert.equal(cond((await x.agent.get('keep-1')).link, 'StateUnreadable'), undefined, 'the intact link is fine');

      // Visible to watchers and to Prometheus too; no data plane behind it.
      const w = x.agent.watch();
      try {
        await w.waitFor(
          (m) => m.type === WatchEventType.WATCH_EVENT_TYPE_ADDED && m.link?.meta?.name === 'trunc-1',
          10_000,
        );
      } finally {
        w.stream.cancel();
      }
      const metrics = await (await fetch(`http://${x.srv.metrics}/metrics`)).text();
      assert.match(metrics, /vop_link_state\{link="trunc-1",state="Failed"\} 1/);
      assert.match(metrics, /vop_link_condition\{link="trunc-1",condition="StateUnreadable",status="True"\} 1/);
      assert.deepEqual((await x.agent.stats('trunc-1')).devices, []);
      const reset = decodeStatus(await expectGrpcError(x.agent.reset('trunc-1')));
      assert.equal(reset.code, status.FAILED_PRECONDITION);
      assert.equal(reset.reason, 'STATE_UNREADABLE');

      // Applying it again clears it; deleting the other one removes it; the kept files stay.
      const again = await x.agent.apply(consoleLink('trunc-1'));
      assert.equal(again.changed, true);
      const t2 = (await x.agent.get('trunc-1')).link;
      assert.equal(cond(t2, 'StateUnreadable'), undefined);
      assert.notEqual(t2?.status?.phase, LinkPhase.LINK_PHASE_FAILED);
      assert.equal(JSON.parse(readFileSync(path.join(dir, 'trunc-1.json'), 'utf8')).format, 'vop.agent.link/v1');
      await x.agent.delete('gone-1');
      assert.equal((await expectGrpcError(x.agent.get('gone-1'))).code, status.NOT_FOUND);
      assert.equal(readdirSync(dir).filter((f) => f.includes('.corrupt-')).length, 2, 'both kept for the operator');
      await stop(x);

      x = await start(stateDir, rdv);
      const after = (await x.agent.list()).links;
      assert.deepEqual(
        after.map((l) => l.meta?.name),
        ['keep-1', 'trunc-1'],
      );
      assert.ok(after.every((l) => cond(l, 'StateUnreadable') === undefined));
    } finally {
      await stop(x);
      rmSync(stateDir, { recursive: true, force: true });
      rmSync(rdv, { recursive: true, force: true });
    }
  });

  it('keeps a stored link whose host path the agent now refuses listed, with the reason', async () => {
    const stateDir = tempDir('state-refused');
    const rdv = tempDir('state-refused-rdv');
    const disks = tempDir('state-refused-disks');
    writeFileSync(path.join(disks, 'disk.img'), Buffer.alloc(1 << 20));
    const link = makeLink('moved-1', {
      devices: [
        {
          name: 'disk0',
          queueSize: 0,
          disableEventIdx: false,
          kind: {
            $case: 'blk',
            value: {
              backing: { path: path.join(disks, 'disk.img'), readOnly: false, directIo: false, serial: '' },
              export: undefined,
            },
          },
        },
      ],
    });
    let x = await start(stateDir, rdv, ['--disk-dir', disks]);
    try {
      await x.agent.apply(link);
      await stop(x);
      // The operator narrowed the disk root to its default: the stored path is outside it now.
      x = await start(stateDir, rdv);
      const l = (await x.agent.get('moved-1')).link;
      assert.equal(l?.status?.phase, LinkPhase.LINK_PHASE_FAILED);
      const su = cond(l, 'StateUnreadable');
      assert.equal(su?.reason, 'StoredSpecRefused');
      assert.ok(su?.message.includes('link.spec.devices[0].blk.backing.path'), su?.message);
      assert.ok(su?.message.includes(path.join(stateDir, 'disks')), su?.message);
      assert.equal(l?.spec?.devices.length, 1, 'the stored spec is shown');
      assert.ok(existsSync(path.join(stateDir, 'links', 'moved-1.json')), 'a readable file stays in place');
      await stop(x);
      x = await start(stateDir, rdv, ['--disk-dir', disks]);
      assert.equal(cond((await x.agent.get('moved-1')).link, 'StateUnreadable'), undefined, 'restored again');
    } finally {
      await stop(x);
      for (const d of [stateDir, rdv, disks]) rmSync(d, { recursive: true, force: true });
    }
  });

  it('leaves the old state file intact when the disk fills up during a write', async (t: TestContext) => {
    const mnt = tempDir('state-full');
    const rdv = tempDir('state-full-rdv');
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', mnt], { encoding: 'utf8' });
    if (mounted.status !== 0) {
      rmSync(mnt, { recursive: true, force: true });
      rmSync(rdv, { recursive: true, force: true });
      prereq(t, 'a tmpfs mount (root)', false, mounted.stderr.trim());
      return;
    }
    let x: { srv: ServerProcess; agent: Agent } | undefined;
    try {
      x = await start(mnt, rdv);
      await x.agent.apply(consoleLink('full-1'));
      const file = path.join(mnt, 'links', 'full-1.json');
      const orig = readFileSync(file);
      // Fill the filesystem, then free exactly one page: the next state file gets a short
      // write (4096 bytes of a larger body) followed by ENOSPC.
      writeFileSync(path.join(mnt, 'pad'), Buffer.alloc(4096));
      const fd = openSync(path.join(mnt, 'filler'), 'w');
      try {
        const chunk = Buffer.alloc(4096);
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        closeSync(fd);
      }
      unlinkSync(path.join(mnt, 'pad'));
      const big = { note: 'x'.repeat(12_000) };
      const err = decodeStatus(await expectGrpcError(x.agent.apply(consoleLink('full-1', { annotations: big }))));
      assert.equal(err.code, status.UNAVAILABLE);
      assert.equal(err.reason, 'STATE_WRITE_FAILED');
      assert.deepEqual(readFileSync(file), orig, 'the old state file is byte-identical');
      assert.deepEqual(readdirSync(path.join(mnt, 'links')), ['full-1.json'], 'no temp file left behind');
      assert.deepEqual((await x.agent.get('full-1')).link?.meta?.annotations, {}, 'nothing changed in memory');

      unlinkSync(path.join(mnt, 'filler'));
      await x.agent.apply(consoleLink('full-1', { annotations: big }));
      await stop(x);
      x = await start(mnt, rdv);
      const l = (await x.agent.get('full-1')).link;
      assert.deepEqual(l?.meta?.annotations, big, 'the later write is what a restart reads');
      assert.equal(cond(l, 'StateUnreadable'), undefined);
    } finally {
      if (x) await stop(x);
      spawnSync('umount', [mnt]);
      rmSync(mnt, { recursive: true, force: true });
      rmSync(rdv, { recursive: true, force: true });
    }
  });
});
