/**
 * GetInfo's capabilities.net_admin says whether the agent holds CAP_NET_ADMIN in its effective
 * set (what creating a TAP needs), not whether it runs as root: real vop-agent processes started
 * through setpriv as the shipped unit runs it (an unprivileged user with CAP_NET_ADMIN as an
 * ambient capability), as that user without it, and as root with CAP_NET_ADMIN dropped from the
 * bounding set. Each answer is checked against the process's own /proc/PID/status.
 */
import assert from 'node:assert/strict';
import { chownSync, chmodSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { effectiveCapabilities, hasNetAdmin } from '../../agent/src/net-admin';
import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent } from './helpers';

/** nobody/nogroup: an unprivileged user that exists on every Debian machine. */
const UID = 65534;
const GID = 65534;

const status = (eff: string): string => `Name:\tnode\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t${eff}\n`;

describe('net_admin from the effective capability set', () => {
  it('reads CAP_NET_ADMIN (bit 12) from CapEff, not the uid', () => {
    assert.equal(hasNetAdmin(status('0000000000001000')), true);
    assert.equal(hasNetAdmin(status('000001ffffffffff')), true);
    assert.equal(hasNetAdmin(status('000001ffffffefff')), false, 'root without CAP_NET_ADMIN');
    assert.equal(hasNetAdmin(status('0000000000000000')), false);
    assert.equal(hasNetAdmin('Name:\tnode\n'), false, 'no CapEff line');
    assert.equal(effectiveCapabilities(status('0000000000003000')), 0x3000n);
  });
});

const missing = [...(isRoot() ? [] : ['root']), ...(haveCommand('setpriv') ? [] : ['setpriv (util-linux)'])];

describe(
  'vop-agent GetInfo capabilities.net_admin under setpriv',
  {
    skip: requirePrereq(missing.join(', '), missing.length === 0, 'to start agents with other users and capabilities'),
  },
  () => {
    /** Start an agent under setpriv with its directories owned by `uid`; GetInfo, then stop. */
    async function netAdminOf(uid: number, setpriv: string[]): Promise<{ netAdmin: boolean; capEff: bigint | null }> {
      const state = tempDir('netadmin');
      const rdv = path.join(state, 'rdv');
      for (const d of [state]) {
        chownSync(d, uid, uid === 0 ? 0 : GID);
        chmodSync(d, 0o700);
      }
      let srv: ServerProcess | null = null;
      let agent: Agent | null = null;
      try {
        srv = await startServer('agent', ['--node-name', 'caps', '--rendezvous-dir', rdv], {
          stateDir: state,
          wrap: ['setpriv', ...setpriv, '--'],
          readyTimeoutMs: 60_000,
        });
        agent = new Agent(srv.admin);
        const info = await agent.info();
        const proc = readFileSync(`/proc/${srv.proc.pid}/status`, 'utf8');
        assert.match(proc, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'), 'the agent runs as the user setpriv set');
        return { netAdmin: info.capabilities?.netAdmin ?? false, capEff: effectiveCapabilities(proc) };
      } finally {
        agent?.close();
        await srv?.stop('SIGTERM');
      }
    }

    it('is true for an unprivileged user with CAP_NET_ADMIN as an ambient capability (the shipped unit)', async () => {
      const r = await netAdminOf(UID, [
        `--reuid=${UID}`,
        `--regid=${GID}`,
        '--clear-groups',
        '--inh-caps=-all,+net_admin',
        '--ambient-caps=-all,+net_admin',
      ]);
      assert.equal(r.capEff, 1n << 12n, 'CapEff holds CAP_NET_ADMIN and nothing else');
      assert.equal(r.netAdmin, true);
    });

    it('is false for the same user without the capability', async () => {
      const r = await netAdminOf(UID, [`--reuid=${UID}`, `--regid=${GID}`, '--clear-groups', '--inh-caps=-all']);
      assert.equal(r.capEff, 0n);
      assert.equal(r.netAdmin, false);
    });

    it('is false for root with CAP_NET_ADMIN dropped from the bounding set', async () => {
      const r = await netAdminOf(0, ['--bounding-set=-net_admin', '--inh-caps=-all']);
      assert.ok(r.capEff !== null && r.capEff !== 0n, 'root keeps its other capabilities');
      assert.equal((r.capEff >> 12n) & 1n, 0n);
      assert.equal(r.netAdmin, false);
    });
  },
);
