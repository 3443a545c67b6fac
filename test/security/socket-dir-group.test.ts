/**
 * hostPaths.socketDirGroup: a front-end that runs as another user (QEMU under libvirt) reaches a
 * vhost_user socket the link opened to its group, and nothing else in the socket directory. A real
 * vop-agent makes socketDir 0710 for the group; a process of another uid in that group (setpriv)
 * connects to the link's 0660 socket, a process outside the group cannot, and the member cannot list
 * the directory. A socketDir the group could not reach (inside the 0700 state directory) stops the
 * agent at start with a message naming the field and the blocking directory.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Link, LinkPhase, Role } from '../../lib/proto/types';
import { Agent } from '../agent/helpers';
import { requirePrereq } from '../helpers/prereq';
import { MAIN_JS, startServer, tempDir, type ServerProcess } from '../helpers/servers';

/** A group and a user the test runs the "front-end" as: daemon (gid 1) and nobody (uid 65534). */
const GROUP = 1;
const OTHER_UID = 65534;
const SETPRIV = '/usr/bin/setpriv';
const SOCAT = '/usr/bin/socat';

/** Connects to sock as uid OTHER_UID with gid `gid` only; the exit status and stderr. */
function connectAs(gid: number, sock: string): { code: number | null; stderr: string } {
  const r = spawnSync(
    SETPRIV,
    [`--reuid=${OTHER_UID}`, `--regid=${gid}`, '--clear-groups', SOCAT, '-u', 'OPEN:/dev/null', `UNIX-CONNECT:${sock}`],
    { encoding: 'utf8', timeout: 10_000 },
  );
  return { code: r.status, stderr: r.stderr };
}

function vhostLink(name: string, socketPath: string, dgram: string): Link {
  return Link.fromPartial({
    meta: { name },
    spec: {
      endpoints: [{ agent: 'host-a', role: Role.ROLE_DEVICE }],
      transport: {
        kind: {
          $case: 'vhostUser',
          value: { socketPath, client: false, socketMode: 0o660, socketGroup: String(GROUP), queuePairs: 0 },
        },
      },
      devices: [
        {
          name: 'eth0',
          kind: {
            $case: 'net',
            value: {
              deviceBackend: {
                kind: { $case: 'datagram', value: { path: `${dgram}-a`, peerPath: `${dgram}-b` } },
              },
            },
          },
        },
      ],
    },
  });
}

describe(
  'hostPaths.socketDirGroup lets a front-end of another user reach the sockets opened to its group',
  { skip: requirePrereq('setpriv and socat', existsSync(SETPRIV) && existsSync(SOCAT), 'util-linux and socat') },
  () => {
    let base = '';
    let socketDir = '';
    let srv: ServerProcess;
    let agent: Agent;

    before(async () => {
      base = tempDir('sockgrp');
      chmodSync(base, 0o755); // searchable by everyone, like /run/vop
      socketDir = path.join(base, 'sockets');
      const cfg = path.join(base, 'agent.yaml');
      writeFileSync(cfg, ['hostPaths:', `  socketDir: ${socketDir}`, `  socketDirGroup: "${GROUP}"`, ''].join('\n'));
      srv = await startServer('agent', ['--config', cfg, '--node-name', 'host-a', '--rendezvous-dir', `${base}/rdv`], {
        stateDir: tempDir('sockgrp-state'),
      });
      agent = new Agent(srv.admin);
    });
    after(async () => {
      agent.close();
      await srv.stop();
    });

    it('makes socketDir 0710 for the group; a member of another uid connects to a 0660 vhost socket, others cannot', async () => {
      const st = statSync(socketDir);
      assert.equal(st.mode & 0o777, 0o710);
      assert.equal(st.gid, GROUP);
      const sock = path.join(socketDir, 'vm1.sock');
      await agent.apply(vhostLink('vm1', sock, path.join(socketDir, 'vm1-dgram')));
      await agent.waitPhase('vm1', LinkPhase.LINK_PHASE_CONNECTING, 20_000);
      assert.ok(lstatSync(sock).isSocket());
      const member = connectAs(GROUP, sock);
      assert.equal(member.code, 0, `a member of group ${GROUP} connects: ${member.stderr}`);
      const outsider = connectAs(OTHER_UID, sock);
      assert.notEqual(outsider.code, 0, 'a process outside the group cannot connect');
      assert.match(outsider.stderr, /Permission denied/);
      const list = spawnSync(SETPRIV, [`--reuid=${OTHER_UID}`, `--regid=${GROUP}`, '--clear-groups', 'ls', socketDir], {
        encoding: 'utf8',
      });
      assert.notEqual(list.status, 0, 'the member cannot list the socket directory');
      // The link still serves a front-end afterwards: the member's empty connection ended only itself.
      assert.equal((await agent.get('vm1')).link?.status?.phase, LinkPhase.LINK_PHASE_CONNECTING);
      await agent.delete('vm1');
    });

    it('refuses to start when the group could not reach socketDir, naming the field and the directory', () => {
      const state = tempDir('sockgrp-closed'); // 0700: nobody else may search it
      const inner = path.join(state, 'sockets');
      mkdirSync(inner);
      const cfg = path.join(state, 'agent.yaml');
      writeFileSync(cfg, ['hostPaths:', `  socketDir: ${inner}`, `  socketDirGroup: "${GROUP}"`, ''].join('\n'));
      const r = spawnSync(
        process.execPath,
        [
          MAIN_JS.agent,
          '--config',
          cfg,
          '--node-name',
          'host-b',
          '--state-dir',
          state,
          '--admin-socket',
          path.join(state, 'admin.sock'),
          '--rendezvous-dir',
          `${base}/rdv-b`,
          '--grpc-listen',
          '127.0.0.1:0',
          '--metrics-listen',
          '127.0.0.1:0',
        ],
        { encoding: 'utf8', timeout: 30_000 },
      );
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /hostPaths\.socketDirGroup: members of group 1 cannot reach/);
      assert.ok(r.stderr.includes(`${state} is mode 0700`), r.stderr);
    });
  },
);
