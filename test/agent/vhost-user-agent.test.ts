/**
 * A real agent serves a link of transport vhost_user (one endpoint, the device role) to a real
 * front-end: DPDK's virtio-user in dpdk-testpmd (txonly) sends into the agent's virtio-net
 * device, whose backend is a TAP in a test namespace. The agent creates the socket in its socket
 * directory with the spec's mode; the link goes Ready while testpmd runs, GetStats counts every
 * frame testpmd transmitted (queue buffers == testpmd's TX-packets, none lost), and it returns to
 * Connecting when testpmd leaves. With queue_pairs 2 and testpmd's queues=2 both tx rings carry
 * traffic and each one's counter equals what testpmd sent on that queue. A hostile front-end (a SET_VRING_NUM of 3) is cut off, the
 * agent stays up and serves testpmd again. Specs the agent cannot serve are refused naming the
 * field: two endpoints, a console device, a socket outside the socket directory, a client-mode
 * socket in a directory the config does not allow.
 */
import assert from 'node:assert/strict';
import { existsSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, Role, type Link } from '../../lib/proto/types';
import { Netns, sh } from '../devices/helpers';
import { requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { startTestpmd, TESTPMD, type TestpmdResult } from '../helpers/testpmd';
import { Agent } from './helpers';

function vhostLink(name: string, socketPath: string, extra: Partial<Link['spec'] & object> = {}): Link {
  return {
    meta: {
      name,
      uid: '',
      generation: 0n,
      resourceVersion: '',
      labels: {},
      annotations: {},
      createdAt: undefined,
      managedBy: '',
    } as unknown as Link['meta'],
    spec: {
      endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
      transport: {
        kind: {
          $case: 'vhostUser',
          value: { socketPath, client: false, socketMode: 0o660, socketGroup: '', queuePairs: 0 },
        },
      },
      devices: [],
      ...extra,
    },
    status: undefined,
  };
}

/**
 * testpmd virtio-user txonly on sock: once `running` resolves (the agent counts its frames),
 * for ms more; its final counters.
 */
async function testpmdTx(
  sock: string,
  prefix: string,
  ms: number,
  running: () => Promise<unknown>,
  vdevExtra = '',
  queues = 1,
): Promise<TestpmdResult> {
  const p = startTestpmd(sock, prefix, vdevExtra, queues);
  try {
    await running();
  } catch (err) {
    await p.kill();
    throw new Error(`${String(err)}; testpmd: ${p.output().slice(-2000)}`);
  }
  await new Promise((r) => setTimeout(r, ms));
  return p.stop();
}

/**
 * Resolves once the agent has counted at least `atLeast` buffers on each of the rings named in
 * `queues` of link `name`: testpmd is then really transmitting. Waiting for Ready alone was racy:
 * the rings run as soon as virtio-user sets them up, but testpmd starts its forwarding lcore
 * later, and on a loaded machine the fixed window after Ready could end before more than one
 * burst was sent ("testpmd sent only 32 frames" at load 14). The window is counted from here.
 */
async function untilCounted(
  agent: Agent,
  name: string,
  queues: readonly string[],
  atLeast: bigint,
  timeoutMs = 60_000,
): Promise<void> {
  const t0 = Date.now();
  let seen: (bigint | undefined)[] = [];
  while (Date.now() - t0 < timeoutMs) {
    const qs = (await agent.stats(name)).devices[0]?.queues ?? [];
    seen = queues.map((n) => qs.find((q) => q.name === n)?.buffers);
    if (seen.every((b) => b !== undefined && b >= atLeast)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`link ${name}: rings ${queues.join(', ')} counted ${seen.join(', ')}, not ${atLeast} each`);
}

describe(
  'an agent serves a vhost_user link to DPDK virtio-user',
  { skip: requirePrereq('dpdk-testpmd', existsSync(TESTPMD), `${TESTPMD} (Debian package dpdk-dev)`) },
  () => {
    let srv: ServerProcess;
    let agent: Agent;
    let dir: string;
    let socketDir: string;
    let ns: Netns;
    let nsName: string;
    const tap = `vhua${process.pid % 10000}`;

    before(async () => {
      dir = tempDir('vhost-agent');
      sh('mkdir', ['-p', path.join(dir, 'frontends')]);
      socketDir = path.join(dir, 'sockets');
      ns = new Netns('vhua', 1);
      nsName = ns.names[0] as string;
      const cfg = path.join(dir, 'agent.yaml');
      writeFileSync(
        cfg,
        [
          'vhostUser:',
          '  allowUnsealedMemory: true', // testpmd --no-huge memory cannot be sealed
          '  maxQueueSize: 1024',
          'hostPaths:',
          `  socketDir: ${socketDir}`,
          `  vhostUserClientDirs: [${path.join(dir, 'frontends')}]`,
          `  netns: [${nsName}]`,
          '',
        ].join('\n'),
      );
      srv = await startServer(
        'agent',
        ['--config', cfg, '--node-name', 'host-a', '--rendezvous-dir', path.join(dir, 'rdv')],
        {
          stateDir: path.join(dir, 'state'),
        },
      );
      agent = new Agent(srv.admin);
    });

    after(async () => {
      agent?.close();
      await srv?.stop('SIGTERM');
      ns?.remove();
      if (dir) sh('rm', ['-rf', dir]);
    });

    const netDevice = {
      name: 'eth0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'net' as const,
        value: {
          mac: '',
          mtu: 0,
          offloads: false,
          deviceBackend: { kind: { $case: 'tap' as const, value: { name: tap, netns: '' } } },
          driverFrontend: undefined,
        },
      },
    };

    it('refuses what a vhost_user link cannot be, naming the field', async () => {
      const sock = path.join(socketDir, 'bad.sock');
      const cases: Array<[Link, RegExp]> = [
        [
          vhostLink('bad-two', sock, {
            endpoints: [
              { agent: 'host-a', role: Role.ROLE_DEVICE },
              { agent: 'card-b', role: Role.ROLE_DRIVER },
            ],
            devices: [netDevice],
          }),
          /link\.spec\.endpoints.*exactly 1 endpoint/,
        ],
        [
          vhostLink('bad-console', sock, {
            devices: [
              {
                name: 'con0',
                queueSize: 0,
                disableEventIdx: false,
                kind: {
                  $case: 'console',
                  value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined },
                },
              } as unknown as Link['spec'] extends infer S ? (S extends { devices: (infer D)[] } ? D : never) : never,
            ],
          }),
          /devices\[0\]\.console.*net and blk/,
        ],
        [vhostLink('bad-outside', '/tmp/elsewhere.sock', { devices: [netDevice] }), /socket_path.*outside/],
        [
          vhostLink('bad-pairs', sock, {
            devices: [netDevice],
            transport: {
              kind: {
                $case: 'vhostUser',
                value: { socketPath: sock, client: false, socketMode: 0, socketGroup: '', queuePairs: 5 },
              },
            },
          }),
          /vhost_user\.queue_pairs.*0 \(1 pair\) to 4/,
        ],
        [
          vhostLink('bad-blk-pairs', sock, {
            devices: [
              {
                name: 'disk0',
                queueSize: 0,
                disableEventIdx: false,
                kind: {
                  $case: 'blk',
                  value: {
                    backing: { path: path.join(dir, 'd.img'), readOnly: false, directIo: false, serial: '' },
                    export: undefined,
                  },
                },
              },
            ],
            transport: {
              kind: {
                $case: 'vhostUser',
                value: { socketPath: sock, client: false, socketMode: 0, socketGroup: '', queuePairs: 2 },
              },
            },
          }),
          /vhost_user\.queue_pairs.*net device/,
        ],
        [
          vhostLink('bad-client', path.join(dir, 'qemu.sock'), {
            devices: [netDevice],
            transport: {
              kind: {
                $case: 'vhostUser',
                value: {
                  socketPath: path.join(dir, 'qemu.sock'),
                  client: true,
                  socketMode: 0,
                  socketGroup: '',
                  queuePairs: 0,
                },
              },
            },
          }),
          /socket_path.*vhostUserClientDirs/,
        ],
        [
          vhostLink('bad-mode', sock, {
            devices: [netDevice],
            transport: {
              kind: {
                $case: 'vhostUser',
                value: { socketPath: sock, client: false, socketMode: 0o666, socketGroup: '', queuePairs: 0 },
              },
            },
          }),
          /socket_mode.*0770/,
        ],
      ];
      for (const [link, re] of cases) {
        await assert.rejects(agent.apply(link), (err: Error) => {
          assert.match(err.message + JSON.stringify(err), re);
          return true;
        });
      }
      assert.equal((await agent.list()).links.length, 0, 'nothing refused was stored');
    });

    it('testpmd txonly into the agent: Ready while it runs, every transmitted frame counted, socket mode kept', async () => {
      const sock = path.join(socketDir, 'vm1-net.sock');
      const link = vhostLink('vm1-net', sock, { devices: [netDevice] });
      link.spec = {
        ...(link.spec as NonNullable<Link['spec']>),
        transport: {
          kind: {
            $case: 'vhostUser',
            value: { socketPath: sock, client: false, socketMode: 0o660, socketGroup: '1', queuePairs: 0 },
          },
        },
        devices: [
          {
            ...netDevice,
            kind: {
              $case: 'net',
              value: {
                ...netDevice.kind.value,
                deviceBackend: { kind: { $case: 'tap', value: { name: tap, netns: nsName } } },
              },
            },
          },
        ],
      };
      await agent.apply(link);
      const connecting = await agent.waitPhase('vm1-net', LinkPhase.LINK_PHASE_CONNECTING, 20_000);
      assert.equal(connecting.status?.devices[0]?.endpoints.socket, sock);
      const st = statSync(sock);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660);
      assert.equal(st.gid, 1, 'socket_group 1 (a number) is the group of the socket file');
      // the TAP sits in the namespace: up, so that the kernel takes the frames
      assert.equal(sh('ip', ['-n', nsName, 'link', 'set', tap, 'up']).code, 0);
      const { tx } = await testpmdTx(sock, `vhua${process.pid}`, 3000, async () => {
        await agent.waitPhase('vm1-net', LinkPhase.LINK_PHASE_READY, 60_000);
        await untilCounted(agent, 'vm1-net', ['tx'], 1001n);
      });
      assert.ok(tx > 1000n, `testpmd sent only ${tx} frames`);
      const stats = (await agent.stats('vm1-net')).devices[0];
      const txq = stats?.queues.find((q) => q.name === 'tx');
      assert.ok(txq, JSON.stringify(stats?.queues.map((q) => q.name)));
      assert.equal(txq.buffers, tx, 'every frame testpmd transmitted went through the ring once');
      const c = stats?.counters ?? {};
      assert.equal(
        (c.tx_frames ?? 0n) + (c.tx_dropped ?? 0n),
        tx,
        JSON.stringify(c, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
      );
      // /metrics shows the link like any other: state and the tx queue's buffers
      const m = await (await fetch(`http://${srv.metrics}/metrics`)).text();
      assert.match(m, /vop_link_state\{[^}]*link="vm1-net"[^}]*\} 1/);
      const buf = new RegExp(`vop_queue_buffers_total\\{[^}]*link="vm1-net"[^}]*queue="tx"[^}]*\\} (\\d+)`).exec(m);
      assert.ok(
        buf,
        m
          .split('\n')
          .filter((l) => l.includes('vm1-net'))
          .join('\n'),
      );
      assert.equal(BigInt(buf[1] ?? '0'), tx);
      await agent.waitPhase('vm1-net', LinkPhase.LINK_PHASE_CONNECTING, 20_000);
      console.log(
        `testpmd txonly through the agent: ${tx} frames, ${c.tx_frames} into the TAP, ${c.tx_dropped} dropped by the TAP`,
      );
    });

    it('a hostile front-end is cut off; the agent stays up and serves testpmd again', async () => {
      const sock = path.join(socketDir, 'vm1-net.sock');
      const closed = await new Promise<boolean>((resolve) => {
        const s = net.connect(sock, () => {
          const b = Buffer.alloc(20);
          b.writeUInt32LE(8, 0); // SET_VRING_NUM
          b.writeUInt32LE(1, 4);
          b.writeUInt32LE(8, 8);
          b.writeUInt32LE(0, 12);
          b.writeUInt32LE(3, 16); // not a power of two
          s.write(b);
        });
        s.on('close', () => resolve(true));
        s.on('error', () => undefined);
        setTimeout(() => resolve(false), 10_000).unref();
      });
      assert.ok(closed, 'the agent kept the hostile connection open');
      const before = (await agent.stats('vm1-net')).devices[0]?.queues.find((q) => q.name === 'tx')?.buffers ?? 0n;
      const { tx } = await testpmdTx(sock, `vhub${process.pid}`, 2000, async () => {
        await agent.waitPhase('vm1-net', LinkPhase.LINK_PHASE_READY, 60_000);
        await untilCounted(agent, 'vm1-net', ['tx'], before + 1n);
      });
      const after = (await agent.stats('vm1-net')).devices[0]?.queues.find((q) => q.name === 'tx')?.buffers ?? 0n;
      assert.equal(after - before, tx);
      const l = (await agent.get('vm1-net')).link;
      assert.ok(l?.status, 'the link is still there');
    });

    it('two queue pairs: testpmd txonly on both queues, each tx ring counted apart and equal to testpmd per queue', async () => {
      const sock = path.join(socketDir, 'vm3-net.sock');
      const link = vhostLink('vm3-net', sock, {
        transport: {
          kind: {
            $case: 'vhostUser',
            value: { socketPath: sock, client: false, socketMode: 0, socketGroup: '', queuePairs: 2 },
          },
        },
        devices: [
          {
            ...netDevice,
            name: 'eth3',
            kind: {
              $case: 'net',
              value: {
                ...netDevice.kind.value,
                deviceBackend: { kind: { $case: 'tap', value: { name: `${tap}m`, netns: nsName } } },
              },
            },
          },
        ],
      });
      await agent.apply(link);
      await agent.waitPhase('vm3-net', LinkPhase.LINK_PHASE_CONNECTING, 20_000);
      assert.equal(sh('ip', ['-n', nsName, 'link', 'set', `${tap}m`, 'up']).code, 0);
      const { tx, perQueue, out } = await testpmdTx(
        sock,
        `vhum${process.pid}`,
        3000,
        async () => {
          await agent.waitPhase('vm3-net', LinkPhase.LINK_PHASE_READY, 60_000);
          await untilCounted(agent, 'vm3-net', ['tx', 'tx1'], 1n);
        },
        '',
        2,
      );
      assert.equal(perQueue.length, 2, `testpmd printed no per-queue stats: ${out.slice(-1500)}`);
      const [q0 = 0n, q1 = 0n] = perQueue;
      assert.ok(q0 > 0n && q1 > 0n, `both queues carried traffic: ${q0} and ${q1}`);
      assert.equal(q0 + q1, tx);
      const stats = (await agent.stats('vm3-net')).devices[0];
      const byName = new Map((stats?.queues ?? []).map((q) => [q.name, q.buffers]));
      assert.deepEqual([...byName.keys()], ['rx', 'tx', 'rx1', 'tx1']);
      assert.equal(byName.get('tx'), q0, 'pair 0: every frame testpmd sent on queue 0 went through tx once');
      assert.equal(byName.get('tx1'), q1, 'pair 1: every frame testpmd sent on queue 1 went through tx1 once');
      const c = stats?.counters ?? {};
      assert.equal((c.tx_frames ?? 0n) + (c.tx_dropped ?? 0n), tx);
      const m = await (await fetch(`http://${srv.metrics}/metrics`)).text();
      const tx1 = new RegExp(`vop_queue_buffers_total\\{[^}]*link="vm3-net"[^}]*queue="tx1"[^}]*\\} (\\d+)`).exec(m);
      assert.equal(BigInt(tx1?.[1] ?? '-1'), q1, 'the second pair in /metrics');
      console.log(
        `testpmd txonly with 2 queues: ${q0} + ${q1} frames, vop tx=${byName.get('tx')} tx1=${byName.get('tx1')}`,
      );
      await agent.delete('vm3-net');
    });

    it('client mode: the agent connects to a front-end that listens in an allowed directory', async () => {
      const sock = path.join(dir, 'frontends', 'vm2.sock');
      const link = vhostLink('vm2-net', sock, {
        transport: {
          kind: {
            $case: 'vhostUser',
            value: { socketPath: sock, client: true, socketMode: 0, socketGroup: '', queuePairs: 0 },
          },
        },
        devices: [
          {
            ...netDevice,
            name: 'eth1',
            kind: {
              $case: 'net',
              value: {
                ...netDevice.kind.value,
                deviceBackend: { kind: { $case: 'tap', value: { name: `${tap}c`, netns: nsName } } },
              },
            },
          },
        ],
      });
      await agent.apply(link);
      await agent.waitPhase('vm2-net', LinkPhase.LINK_PHASE_CONNECTING, 20_000);
      assert.equal(existsSync(sock), false, 'in client mode the agent creates no socket');
      // virtio-user as the server (server=1): it creates the socket, the agent connects (retrying every second)
      const { tx } = await testpmdTx(
        sock,
        `vhuc${process.pid}`,
        2000,
        async () => {
          for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
          sh('ip', ['-n', nsName, 'link', 'set', `${tap}c`, 'up']);
          await agent.waitPhase('vm2-net', LinkPhase.LINK_PHASE_READY, 60_000);
          await untilCounted(agent, 'vm2-net', ['tx'], 1n);
        },
        ',server=1',
      );
      const txq = (await agent.stats('vm2-net')).devices[0]?.queues.find((q) => q.name === 'tx');
      assert.equal(txq?.buffers, tx);
      await agent.delete('vm2-net');
    });
  },
);
