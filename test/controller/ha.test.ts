/**
 * Two vop-controller replicas on a three-member etcd, as real processes, with three agents
 * (a host and two cards) running console links; one etcd cluster serves every check.
 *
 * - kill -9 the leader: the other replica takes over, the agents reconnect to it on their own,
 *   no link is reset, the console byte stream read at the driver side's pty (the data
 *   plane, not the controller's relay) has no gap and no duplicate, and a vopctl given both
 *   replicas completes a change through the failover;
 * - SIGSTOP the leader past its lease: the other takes over and a link is changed there; the old
 *   leader, resumed, writes nothing (no desired-state key in etcd moves past the revision read
 *   before it woke), steps down, and the link keeps the new leader's spec;
 * - kill etcd's leader member: both replicas keep serving reads and the leader applies changes;
 * - lose etcd's quorum: both replicas keep serving reads, neither leads (vop_controller_is_leader 0
 *   on both), and deploy/prometheus/alerts.yml's VopNoControllerLeader, fed the values scraped
 *   from the replicas, fires; with a leader's values it does not; quorum back, a leader again.
 */
import assert from 'node:assert/strict';
import { existsSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import tty from 'node:tty';

import { Metadata } from '@grpc/grpc-js';

import { ETCD_DEFAULTS, prefixEnd } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import { ControllerServiceClient, type GetControllerStatusResponse } from '../../lib/proto/controller';
import { AgentPhase, LinkPhase, type Link } from '../../lib/proto/types';
import { startEtcd, type EtcdCluster } from '../helpers/etcd';
import { call, insecure } from '../helpers/grpc';
import { repoPath } from '../../lib/src/paths';
import { promtoolPath, run, tempDir } from '../helpers/servers';
import { agentLinks, dataPlaneMissing, startFleet, vopctl, waitFor, type Fleet } from './fleet-helpers';

const AGENTS = ['host-1', 'card-1', 'card-2'];
const PREFIX = '/ha/';
const LEADER_LEASE_SECONDS = 3;

/**
 * A counter stream written into the device side's console socket and read back at the driver
 * side's console (the pty the driver agent serves, opened raw: 8-bit clean, no echo): every
 * 4-byte word is the next integer, so a gap or a duplicate shows as a wrong word.
 */
class ConsoleStream {
  private readonly writer: net.Socket;
  private readonly reader: tty.ReadStream;
  private sentWords = 0;
  private receivedBytes = 0;
  private pending = Buffer.alloc(0);
  private bad: string | undefined;
  private timer: NodeJS.Timeout | undefined;

  private constructor(writer: net.Socket, reader: tty.ReadStream) {
    this.writer = writer;
    this.reader = reader;
    reader.on('data', (d: Buffer) => this.take(d));
    reader.on('error', (e) => (this.bad ??= `reader: ${e.message}`));
    writer.on('error', (e) => (this.bad ??= `writer: ${e.message}`));
  }

  static async open(deviceSocket: string, driverPty: string): Promise<ConsoleStream> {
    // The reader first: console output with nobody attached is dropped.
    await waitFor(`driver pty ${driverPty}`, () => existsSync(driverPty));
    const reader = new tty.ReadStream(openSync(driverPty, 'r+'));
    reader.setRawMode(true);
    await new Promise((r) => setTimeout(r, 300));
    const writer = await waitFor(`console socket ${deviceSocket}`, () => {
      return new Promise<net.Socket | undefined>((resolve) => {
        const s = net.createConnection(deviceSocket);
        s.once('connect', () => resolve(s));
        s.once('error', () => resolve(undefined));
      });
    });
    return new ConsoleStream(writer, reader);
  }

  private take(d: Buffer): void {
    this.pending = Buffer.concat([this.pending, d]);
    let off = 0;
    for (; off + 4 <= this.pending.length; off += 4) {
      const w = this.pending.readUInt32BE(off);
      const want = (this.receivedBytes + off) / 4;
      if (w !== want && this.bad === undefined)
        this.bad = `word ${want} read as ${w} (${w < want ? 'a duplicate' : 'a gap'})`;
    }
    this.receivedBytes += off;
    this.pending = this.pending.subarray(off);
  }

  /** Writes 256 words every 20 ms while the socket takes them. */
  start(): void {
    this.timer = setInterval(() => {
      if (this.writer.writableLength > 64 * 1024) return;
      const b = Buffer.alloc(1024);
      for (let i = 0; i < 256; i++) b.writeUInt32BE(this.sentWords++, i * 4);
      this.writer.write(b);
    }, 20);
  }

  get received(): number {
    return this.receivedBytes;
  }

  /** Stops writing and waits until every word written was read; returns how many. */
  async finish(): Promise<number> {
    clearInterval(this.timer);
    await waitFor(
      `every console word read (${this.sentWords * 4} bytes written)`,
      () => this.bad !== undefined || this.receivedBytes + this.pending.length >= this.sentWords * 4,
      30_000,
    );
    assert.equal(this.bad, undefined, this.bad);
    assert.equal(this.receivedBytes, this.sentWords * 4, 'no byte more, none missing');
    return this.sentWords;
  }

  close(): void {
    clearInterval(this.timer);
    this.writer.destroy();
    this.reader.destroy();
  }
}

function consoleLink(name: string, card: string, devices: unknown[]): string {
  return JSON.stringify({
    kind: 'Link',
    meta: { name },
    spec: {
      endpoints: [
        { agent: 'host-1', role: 'ROLE_DEVICE' },
        { agent: card, role: 'ROLE_DRIVER' },
      ],
      transport: { shm: {} },
      devices,
    },
  });
}

describe('two controller replicas on a three-member etcd', () => {
  let etcd: EtcdCluster;
  let fleet: Fleet;
  const sockets = tempDir('ha-sk');
  const manifests = tempDir('ha-m');
  const admins: ControllerServiceClient[] = [];
  let tlsArgs: string[] = [];

  const status = (i: number): Promise<GetControllerStatusResponse> => {
    const c = admins[i] as ControllerServiceClient;
    return call(c, c.getControllerStatus, {}, new Metadata());
  };
  /** The replica that leads and serves (its term started), other than `not`. */
  const waitLeader = (not = -1): Promise<number> =>
    waitFor(
      'a replica that leads',
      async () => {
        for (let i = 0; i < admins.length; i++) {
          if (i === not) continue;
          if ((await status(i).catch(() => undefined))?.leader) return i + 1;
        }
        return undefined;
      },
      60_000,
    ).then((x) => x - 1);
  /** Every agent streams to replica i and is Ready there. */
  const waitAgentsOn = async (i: number, since = 0): Promise<void> => {
    const addr = fleet.replicaAddrs[i] as string;
    for (const name of AGENTS)
      await waitFor(
        `${name} registered with replica ${i} (${addr})`,
        () =>
          fleet.agents
            .get(name)
            ?.logs.slice(since)
            .some((l) => l.msg === 'registered with the controller' && l.controller === addr),
        90_000,
      );
    const c = admins[i] as ControllerServiceClient;
    await waitFor(`agents Ready on replica ${i}`, async () => {
      const r = await call(
        c,
        c.listAgents,
        { labelSelector: '', rack: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      );
      return (
        r.agents.length === AGENTS.length && r.agents.every((a) => a.status?.phase === AgentPhase.AGENT_PHASE_READY)
      );
    });
  };
  const logMark = (): number => Math.min(...AGENTS.map((n) => fleet.agents.get(n)?.logs.length ?? 0));
  const snapshot = async (): Promise<Map<string, Link>> => {
    const m = new Map<string, Link>();
    for (const a of AGENTS) for (const l of await agentLinks(fleet, a)) m.set(`${a}/${l.meta?.name ?? ''}`, l);
    return m;
  };
  const assertNotReset = async (before: Map<string, Link>, keys: string[]): Promise<void> => {
    const now = await snapshot();
    for (const k of keys) {
      const b = before.get(k);
      const a = now.get(k);
      assert.ok(b && a, `${k} runs`);
      assert.equal(a.status?.phase, LinkPhase.LINK_PHASE_READY, `${k} Ready`);
      assert.equal(a.status?.epoch, b.status?.epoch, `${k} was not restarted`);
      assert.equal(a.status?.resetCount, b.status?.resetCount, `${k} was not reset`);
    }
  };
  const apply = async (servers: string, name: string, text: string): Promise<void> => {
    const file = path.join(manifests, `${name}.yaml`);
    writeFileSync(file, text);
    const r = await vopctl(servers, [...tlsArgs, '--timeout', '60', 'apply', '-f', file]);
    assert.equal(r.code, 0, r.stderr);
  };
  const both = (): string => fleet.replicaAddrs.join(',');
  const devicesOn = async (agent: string, link: string): Promise<number | undefined> =>
    (await agentLinks(fleet, agent)).find((l) => l.meta?.name === link)?.spec?.devices.length;

  before(async () => {
    etcd = await startEtcd({ members: 3 });
    fleet = await startFleet({
      replicas: 2,
      leaseSeconds: 15,
      admins: ['vopctl'],
      agentArgs: ['--socket-dir', sockets, '--pty-dir', sockets],
      configLines: [
        'store:',
        '  kind: etcd',
        `  endpoints: [${etcd.endpoints.join(', ')}]`,
        `  prefix: ${PREFIX}`,
        '  requestTimeoutSeconds: 5',
        `  leaderLeaseSeconds: ${LEADER_LEASE_SECONDS}`,
      ],
    });
    for (const a of fleet.replicaAdmins) admins.push(new ControllerServiceClient(a, insecure));
    const tls = await fleet.certificate('vopctl');
    tlsArgs = ['--tls-ca', tls.ca, '--tls-cert', tls.cert, '--tls-key', tls.key];
    await fleet.startAgent('host-1', 'host');
    for (const c of ['card-1', 'card-2']) await fleet.startAgent(c, 'card', 'host-1');
    const leader = await waitLeader();
    await waitAgentsOn(leader);
    await apply(
      both(),
      'con-1',
      consoleLink('con-1', 'card-1', [
        {
          name: 'console',
          console: {
            deviceBackend: { unixSocket: { path: path.join(sockets, 'dev.sock') } },
            driverFrontend: { pty: { linkPath: path.join(sockets, 'drv.pty') } },
          },
        },
      ]),
    );
    await apply(both(), 'con-2', consoleLink('con-2', 'card-2', [{ name: 'console', console: {} }]));
    const missing = [...fleet.agents].filter(([, a]) => dataPlaneMissing(a)).map(([n]) => n);
    assert.deepEqual(missing, [], 'agents without the native data plane (run npm run build)');
    await waitFor(
      'con-1 and con-2 Ready on the agents',
      async () => {
        const s = await snapshot();
        return (
          ['host-1/con-1', 'host-1/con-2', 'card-1/con-1', 'card-2/con-2'].every(
            (k) => s.get(k)?.status?.phase === LinkPhase.LINK_PHASE_READY,
          ) && s.size === 4
        );
      },
      60_000,
    );
  });
  after(async () => {
    for (const c of admins) c.close();
    for (const r of fleet?.replicas ?? []) r?.proc.kill('SIGCONT');
    await fleet?.stop();
    await etcd?.close();
    rmSync(sockets, { recursive: true, force: true });
    rmSync(manifests, { recursive: true, force: true });
  });

  it('kill -9 of the leader: the other replica takes over, agents reconnect, no link resets, the console stream has no gap, vopctl follows', async (t) => {
    const old = await waitLeader();
    const next = 1 - old;
    const before = await snapshot();
    const stream = await ConsoleStream.open(path.join(sockets, 'dev.sock'), path.join(sockets, 'drv.pty'));
    try {
      stream.start();
      await waitFor('console words flowing', () => stream.received > 4096);
      const mark = logMark();
      const killedAt = Date.now();
      await fleet.replicas[old]?.stop('SIGKILL');
      // vopctl given both replicas, right after the kill: it finds the new leader on its own.
      await apply(
        both(),
        'con-2',
        consoleLink('con-2', 'card-2', [{ name: 'console', console: {} }]).replace(
          '"meta":{"name":"con-2"}',
          '"meta":{"name":"con-2","labels":{"failover":"1"}}',
        ),
      );
      const applied = Date.now();
      assert.equal(await waitLeader(old), next);
      await waitAgentsOn(next, mark);
      t.diagnostic(
        `kill -9 to vopctl apply done: ${((applied - killedAt) / 1000).toFixed(1)} s; to every agent registered: ${((Date.now() - killedAt) / 1000).toFixed(1)} s`,
      );
      const got = await vopctl(both(), [...tlsArgs, 'get', 'links', '-l', 'failover=1', '-o', 'name']);
      assert.equal(got.code, 0, got.stderr);
      assert.equal(got.stdout, 'link/con-2\n');
      await new Promise((r) => setTimeout(r, 1000));
      const words = await stream.finish();
      t.diagnostic(`console: ${words} words (${words * 4} bytes) read in order across the failover`);
    } finally {
      stream.close();
    }
    await assertNotReset(before, ['host-1/con-1', 'card-1/con-1', 'host-1/con-2', 'card-2/con-2']);
    // The killed replica comes back as a follower that names the leader.
    await fleet.startReplica(old);
    await waitFor('the restarted replica follows', async () => {
      const s = await status(old);
      return !s.leader && s.leaderAddress === fleet.replicaAddrs[next];
    });
  });

  it('SIGSTOP of the leader past its lease: the other takes over and changes a link; the old one, resumed, writes nothing and steps down', async (t) => {
    const old = await waitLeader();
    const next = 1 - old;
    const proc = fleet.replicas[old]?.proc;
    assert.ok(proc);
    const mark = logMark();
    proc.kill('SIGSTOP');
    try {
      assert.equal(await waitLeader(old), next);
      // A change on the new leader: con-2 gets a second console.
      await apply(
        fleet.replicaAddrs[next] as string,
        'con-2',
        consoleLink('con-2', 'card-2', [
          { name: 'console', console: {} },
          { name: 'console2', console: {} },
        ]),
      );
      // The agents leave the paused leader (their keepalive notices) and take the change.
      await waitAgentsOn(next, mark);
      await waitFor(
        'card-2 runs con-2 with two consoles',
        async () => (await devicesOn('card-2', 'con-2')) === 2,
        60_000,
      );
      await waitFor(
        'con-2 Ready again',
        async () => (await snapshot()).get('card-2/con-2')?.status?.phase === LinkPhase.LINK_PHASE_READY,
      );
    } catch (err) {
      proc.kill('SIGCONT');
      throw err;
    }
    const direct = new EtcdStore({ ...ETCD_DEFAULTS, endpoints: [...etcd.endpoints], prefix: PREFIX });
    try {
      const p = Buffer.from(`${PREFIX}meta/`);
      const desired = async (): Promise<{ revision: bigint; keys: { key: string; mod: bigint }[] }> => {
        const r = await direct.client.kv.range({ key: p, range_end: prefixEnd(Buffer.from(`${PREFIX}objects/`)) });
        return {
          revision: BigInt(r.header.revision),
          keys: r.kvs.map((kv) => ({ key: Buffer.from(kv.key).toString(), mod: BigInt(kv.mod_revision) })),
        };
      };
      await new Promise((r) => setTimeout(r, 1000));
      const before = await desired();
      proc.kill('SIGCONT');
      await waitFor('the resumed replica steps down and follows', async () => {
        const s = await status(old);
        return !s.leader && s.leaderAddress === fleet.replicaAddrs[next];
      });
      const oldLogs = fleet.replicas[old]?.logs ?? [];
      assert.ok(
        oldLogs.some((l) => l.msg === 'lost leadership: stepping down' || l.code === 'FENCED'),
        'the old leader logged that it stepped down',
      );
      // Give a late write every chance to land, then read etcd: nothing of the desired state moved.
      await new Promise((r) => setTimeout(r, 2000));
      const afterwards = await desired();
      const moved = afterwards.keys.filter((k) => k.mod > before.revision);
      assert.deepEqual(
        moved,
        [],
        `no desired-state key written after the old leader woke (revision ${before.revision})`,
      );
      t.diagnostic(`etcd revision ${before.revision} before SIGCONT, ${afterwards.revision} after the step-down`);
    } finally {
      await direct.close();
    }
    // The link keeps the new leader's spec, on both replicas and on the agent.
    for (const i of [old, next]) {
      const c = admins[i] as ControllerServiceClient;
      const l = (await call(c, c.getLink, { name: 'con-2' }, new Metadata())).link;
      assert.equal(l?.spec?.devices.length, 2, `replica ${i} serves the new spec`);
    }
    assert.equal(await devicesOn('card-2', 'con-2'), 2);
  });

  it("kill of etcd's leader member: both replicas keep serving, the leader applies a change", async (t) => {
    const leader = await waitLeader();
    const member = await waitFor('an etcd leader', async () => {
      const i = await etcd.leader();
      return i >= 0 ? i + 1 : undefined;
    }).then((x) => x - 1);
    const killedAt = Date.now();
    await etcd.kill(member);
    await apply(both(), 'con-2', consoleLink('con-2', 'card-2', [{ name: 'console', console: {} }]));
    t.diagnostic(`etcd leader member killed; change applied after ${((Date.now() - killedAt) / 1000).toFixed(1)} s`);
    await waitFor('card-2 runs con-2 with one console', async () => (await devicesOn('card-2', 'con-2')) === 1, 60_000);
    for (let i = 0; i < admins.length; i++) {
      const r = await vopctl(fleet.replicaAdmins[i] as string, ['get', 'links', 'con-2', '-o', 'json']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((JSON.parse(r.stdout) as { spec: { devices: unknown[] } }[])[0]?.spec.devices.length, 1);
    }
    // With this test's 3 s leader lease, an etcd election under load may also move leadership
    // (a renewal in flight to the killed member): allowed, as long as a replica leads.
    const now = await waitLeader();
    t.diagnostic(now === leader ? 'leadership stayed where it was' : `leadership moved to replica ${now}`);
  });

  it('etcd without quorum: no replica leads, reads are served, VopNoControllerLeader fires on the scraped values; quorum back, a leader again', async (t) => {
    const scrape = async (i: number): Promise<{ isLeader: number; changes: number }> => {
      const text = await (await fetch(`http://${fleet.replicas[i]?.metrics ?? ''}/metrics`)).text();
      const value = (name: string): number => {
        const m = new RegExp(`^${name} ([0-9.e+-]+)$`, 'm').exec(text);
        assert.ok(m, `${name} on replica ${i}`);
        return Number(m[1]);
      };
      return { isLeader: value('vop_controller_is_leader'), changes: value('vop_controller_leader_changes_total') };
    };
    const leader = await waitLeader();
    const healthy = [await scrape(0), await scrape(1)];
    assert.deepEqual(
      healthy.map((x) => x.isLeader),
      [0, 1].map((i) => (i === leader ? 1 : 0)),
      'exactly the leader reports 1',
    );
    assert.ok(healthy[leader] && healthy[leader].changes >= 1, 'the leader counted the failovers it saw');
    // Two members down (one was killed above): no quorum.
    const down = etcd.members.map((m, i) =>
      m.proc && m.proc.exitCode === null && m.proc.signalCode === null ? -1 : i,
    );
    const running = etcd.members.map((_, i) => i).filter((i) => !down.includes(i));
    await etcd.kill(running[0] as number);
    const lost = await waitFor(
      'both replicas report vop_controller_is_leader 0',
      async () => {
        const v = [await scrape(0), await scrape(1)];
        return v.every((x) => x.isLeader === 0) ? v : undefined;
      },
      60_000,
    );
    for (const i of [0, 1]) {
      const st = await status(i);
      assert.equal(st.leader, false);
      const r = await vopctl(fleet.replicaAdmins[i] as string, ['get', 'links', '-o', 'name']);
      assert.equal(r.code, 0, `replica ${i} serves reads from its cache: ${r.stderr}`);
      assert.equal(r.stdout, 'link/con-1\nlink/con-2\n');
    }
    // The alert rule on those values: a leader for 3 minutes, then none for 4.
    const dir = tempDir('ha-rules');
    try {
      const series = (i: number): string =>
        `${Array(3).fill(healthy[i]?.isLeader).join(' ')} ${Array(4).fill(lost[i]?.isLeader).join(' ')}`;
      const file = path.join(dir, 'leader.test.yml');
      writeFileSync(
        file,
        [
          'rule_files:',
          `  - ${repoPath('deploy', 'prometheus', 'alerts.yml')}`,
          'evaluation_interval: 1m',
          'tests:',
          '  - interval: 1m',
          '    input_series:',
          ...[0, 1].flatMap((i) => [
            `      - series: 'vop_controller_is_leader{instance="c${i}"}'`,
            `        values: '${series(i)}'`,
            `      - series: 'up{job="vop-controller", instance="c${i}"}'`,
            "        values: '1 1 1 1 1 1 1'",
          ]),
          '    alert_rule_test:',
          '      - eval_time: 2m',
          '        alertname: VopNoControllerLeader',
          '        exp_alerts: []',
          '      - eval_time: 4m',
          '        alertname: VopNoControllerLeader',
          '        exp_alerts: []',
          '      - eval_time: 6m',
          '        alertname: VopNoControllerLeader',
          '        exp_alerts:',
          '          - exp_labels:',
          '              severity: critical',
          '            exp_annotations:',
          '              summary: Controller replicas are up but none holds leadership.',
          '              runbook: docs/operations.md#vopnocontrollerleader',
          '',
        ].join('\n'),
      );
      const r = await run(promtoolPath(), ['test', 'rules', file]);
      assert.equal(r.code, 0, `promtool: ${r.stdout}${r.stderr}`);
      t.diagnostic(
        `scraped is_leader: with a leader ${healthy.map((x) => x.isLeader).join(',')}, without quorum ${lost.map((x) => x.isLeader).join(',')}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // Quorum back: a replica leads again.
    await etcd.restart(running[0] as number);
    for (const i of down) if (i >= 0) await etcd.restart(i);
    const again = await waitLeader();
    t.diagnostic(`leader after quorum came back: replica ${again}`);
  });
});
