/**
 * `npm run fleet`, the README's first command: a controller, a host and two card agents
 * as separate processes with a throwaway CA (mutual TLS everywhere), a policy giving
 * each card a console and a blk link (net as root), a summary of where to look, vopctl
 * over the controller's admin Unix socket, and a clean stop on Ctrl-C (SIGINT). With --ha, a
 * three-member etcd and two controller replicas, one of them leading.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';

import { repoPath } from '../../lib/src/paths';
import { isRoot, prereq } from '../helpers/prereq';
import { run, tempDir } from '../helpers/servers';
import { waitFor } from './fleet-helpers';

interface Printed {
  meta: { name: string };
  status?: { conditions?: { type: string; status: string }[] };
}

function readyOf(l: Printed): string {
  return l.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'missing';
}

const PORTS = [7400, 9400, 7411, 7412, 7413, 9411, 9412, 9413];

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

describe('npm run fleet', () => {
  it('starts a local fleet whose links come up, prints where to look, and stops cleanly on Ctrl-C', async (t) => {
    const busy = [];
    for (const p of PORTS) if (!(await portFree(p))) busy.push(p);
    if (!prereq(t, `free ports ${PORTS.join(', ')}`, busy.length === 0, `in use: ${busy.join(', ')}`)) return;
    const stateDir = tempDir('local-fleet');
    const proc = spawn(
      process.execPath,
      [repoPath('dist', 'controller', 'src', 'demo-fleet', 'main.js'), '--state-dir', stateDir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    try {
      await waitFor('the summary', () => out.includes('Ctrl-C stops the fleet.') || proc.exitCode !== null, 60_000);
      assert.match(out, /Ctrl-C stops the fleet\./, `stdout: ${out}\nstderr: ${err}`);
      // As root (CI) the fleet adds a net link per card (TAP on both sides).
      const names = ['console', 'disk', ...(isRoot() ? ['net'] : [])].flatMap((p) => [`${p}-card-1`, `${p}-card-2`]);
      for (const name of names) assert.match(out, new RegExp(`${name}\\s+Ready=(TRUE|FALSE|UNKNOWN)`), out);
      const socket = path.join(stateDir, 'controller.sock');
      // "links come up": every link of every policy reaches Ready=True, as the controller reports it.
      const vopctlMain = repoPath('dist', 'controller', 'src', 'vopctl', 'main.js');
      let last = '';
      await waitFor(
        `links ${names.join(', ')} Ready=True`,
        async () => {
          const r = await run(process.execPath, [vopctlMain, 'get', 'links', '-o', 'json'], {
            env: { VOPCTL_SERVER: `unix:${socket}` },
          });
          if (r.code !== 0) return false;
          const links = JSON.parse(r.stdout) as Printed[];
          last = links.map((l) => `${l.meta.name}: ${readyOf(l)}`).join(', ');
          return (
            links.length === names.length &&
            names.every((n) => links.some((l) => l.meta.name === n && readyOf(l) === 'CONDITION_STATUS_TRUE'))
          );
        },
        90_000,
      ).catch((e: unknown) => assert.fail(`${String(e)}; last: ${last}`));
      assert.match(out, /vopctl\/main\.js get links/);
      assert.ok(out.includes(`export VOPCTL_SERVER=unix:${socket}`), out);
      assert.ok(out.includes(`grpcurl -unix -plaintext ${socket} `), out);
      assert.match(out, /http:\/\/127\.0\.0\.1:9400\/metrics/);
      // The throwaway PKI: directory 0700, every file 0600.
      const pki = path.join(stateDir, 'pki');
      assert.equal(statSync(pki).mode & 0o777, 0o700);
      for (const f of ['ca.pem', 'vop-controller-key.pem', 'host-1-key.pem', 'card-1.pem', 'ops-admin-key.pem'])
        assert.equal(statSync(path.join(pki, f)).mode & 0o777, 0o600, f);
      assert.equal(statSync(socket).mode & 0o777, 0o660);
      // All three agents hold a sync stream (over mutual TLS: their configs have no other way in).
      const res = await fetch('http://127.0.0.1:9400/metrics');
      assert.match(await res.text(), /vop_controller_sync_streams 3/);
      // vopctl through the admin socket (VOPCTL_SERVER), as the summary says.
      const ctl = await run(process.execPath, [vopctlMain, 'get', 'agents', '-o', 'name'], {
        env: { VOPCTL_SERVER: `unix:${socket}` },
      });
      assert.equal(ctl.code, 0, ctl.stderr);
      assert.equal(ctl.stdout, 'agent/card-1\nagent/card-2\nagent/host-1\n');
      // Plaintext TCP is not a way in: the controller's gRPC port speaks only TLS.
      const plain = await run(process.execPath, [vopctlMain, '--server', '127.0.0.1:7400', 'get', 'agents'], {
        timeoutMs: 30_000,
      });
      assert.notEqual(plain.code, 0);
      proc.kill('SIGINT');
      assert.equal(await exited, 0);
      assert.match(out, /fleet: stopped/);
      assert.doesNotMatch(err, /exited \(code/);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });

  it('--ha: a three-member etcd and two controller replicas, one leading, the same agents; stops cleanly on Ctrl-C', async (t) => {
    const ports = [
      7400, 7401, 9400, 9401, 7411, 7412, 7413, 9411, 9412, 9413, 23790, 23791, 23792, 23800, 23801, 23802,
    ];
    const busy = [];
    for (const p of ports) if (!(await portFree(p))) busy.push(p);
    if (!prereq(t, `free ports ${ports.join(', ')}`, busy.length === 0, `in use: ${busy.join(', ')}`)) return;
    if (!prereq(t, 'etcd', existsSync('/usr/bin/etcd'), 'install the Debian package etcd-server')) return;
    const stateDir = tempDir('local-fleet-ha');
    const proc = spawn(
      process.execPath,
      [repoPath('dist', 'controller', 'src', 'demo-fleet', 'main.js'), '--ha', '--cards', '1', '--state-dir', stateDir],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
    proc.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    try {
      await waitFor('the summary', () => out.includes('Ctrl-C stops the fleet.') || proc.exitCode !== null, 120_000);
      assert.match(out, /Ctrl-C stops the fleet\./, `stdout: ${out}\nstderr: ${err}`);
      const sockets = [1, 2].map((i) => `unix:${path.join(stateDir, `controller-${i}.sock`)}`).join(',');
      assert.ok(out.includes(`export VOPCTL_SERVER=${sockets}`), out);
      for (const m of ['etcd-0', 'etcd-1', 'etcd-2', 'controller-1', 'controller-2'])
        assert.match(out, new RegExp(`  ${m} `));
      const vopctlMain = repoPath('dist', 'controller', 'src', 'vopctl', 'main.js');
      const env = { VOPCTL_SERVER: sockets };
      await waitFor(
        'every link Ready=True through either replica',
        async () => {
          const r = await run(process.execPath, [vopctlMain, 'get', 'links', '-o', 'json'], { env });
          if (r.code !== 0) return false;
          const links = JSON.parse(r.stdout) as Printed[];
          return links.length >= 2 && links.every((l) => readyOf(l) === 'CONDITION_STATUS_TRUE');
        },
        90_000,
      );
      const st = await run(process.execPath, [vopctlMain, 'status'], { env });
      assert.equal(st.code, 0, st.stderr);
      const rows = st.stdout.trim().split('\n').slice(1);
      assert.equal(rows.length, 2, st.stdout);
      assert.equal(rows.filter((r) => /\sleader\s/.test(r)).length, 1, `one leader: ${st.stdout}`);
      assert.equal(rows.filter((r) => /\sfollower\s/.test(r)).length, 1, `one follower: ${st.stdout}`);
      assert.ok(
        rows.every((r) => /\setcd\s/.test(r)),
        st.stdout,
      );
      proc.kill('SIGINT');
      assert.equal(await exited, 0);
      assert.match(out, /fleet: stopped/);
      assert.doesNotMatch(err, /exited \(code/);
      for (const p of [23790, 7400, 7401]) assert.ok(await portFree(p), `port ${p} released`);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });
});
