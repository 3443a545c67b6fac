/**
 * The local admin endpoint is a Unix socket (issue 11, item 3 and the README): the
 * README's grpcurl calls made over the socket with `buf curl --unix-socket` (grpcurl is
 * not installable here) and the README's vopctl calls through it; the socket's mode and
 * group; and the safe creation rules (never replace a non-socket, never steal a live
 * socket, clean up a stale one).
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { repoPath } from '../../lib/src/paths';
import { bufCurl, run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

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

function vopctl(args: readonly string[], env: NodeJS.ProcessEnv = {}): ReturnType<typeof run> {
  return run(process.execPath, [repoPath('dist', 'controller', 'src', 'vopctl', 'main.js'), ...args], { env });
}

describe('the admin Unix socket', () => {
  let dir: string;
  let ctl: ServerProcess;
  let agent: ServerProcess;
  let ctlSock: string;
  let agentSock: string;

  before(async () => {
    dir = tmp('sock');
    ctlSock = path.join(dir, 'run', 'controller.sock');
    agentSock = path.join(dir, 'run', 'agent.sock');
    ctl = await startServer('controller', [], { adminSocket: ctlSock, readyTimeoutMs: 60_000 });
    // The agent dials the controller through the controller's socket (allowed in plaintext).
    agent = await startServer(
      'agent',
      ['--node-name', 'host-a', '--rendezvous-dir', tmp('rdv'), '--controller', `unix:${ctlSock}`],
      { adminSocket: agentSock, readyTimeoutMs: 60_000 },
    );
  });

  after(async () => {
    await agent?.stop('SIGTERM');
    await ctl?.stop('SIGTERM');
    removeDirs(agent?.stateDir, ctl?.stateDir);
  });

  it("answers the README's grpcurl calls over the socket (buf curl --unix-socket)", async () => {
    const list = await bufCurl(`unix:${agentSock}`, ['--list-services']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok(list.stdout.split('\n').includes('vop.agent.v1.AgentService'), list.stdout);
    const describe = await bufCurl(`unix:${agentSock}`, ['--list-methods']);
    assert.equal(describe.code, 0, describe.stderr);
    assert.match(describe.stdout, /vop\.agent\.v1\.AgentService\/ApplyLink/);
    const info = await bufCurl(`unix:${agentSock}/vop.agent.v1.AgentService/GetInfo`, [], '{}');
    assert.equal(info.code, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { identity: { nodeName: string } }).identity.nodeName, 'host-a');
    const health = await bufCurl(`unix:${ctlSock}/grpc.health.v1.Health/Check`, [], '{"service":""}');
    assert.equal(health.code, 0, health.stderr);
    assert.match(health.stdout, /SERVING/);
    const agents = await bufCurl(`unix:${ctlSock}/vop.controller.v1.ControllerService/ListAgents`, [], '{}');
    assert.equal(agents.code, 0, agents.stderr);
    assert.match(agents.stdout, /"host-a"/);
    // An admin call: a dry-run ApplyLink reaches validation (INVALID_ARGUMENT), not PERMISSION_DENIED.
    const apply = await bufCurl(
      `unix:${agentSock}/vop.agent.v1.AgentService/ApplyLink`,
      [],
      JSON.stringify({ link: { meta: { name: 'x' } }, dryRun: true }),
    );
    assert.match(apply.stdout + apply.stderr, /invalid_argument/);
  });

  it("runs the README's vopctl calls through the controller's socket (--server unix:PATH, a bare path, VOPCTL_SERVER)", async () => {
    const policy = repoPath('deploy', 'examples', 'rack-policy.yaml');
    const applied = await vopctl(['--server', `unix:${ctlSock}`, 'apply', '-f', policy]);
    assert.equal(applied.code, 0, applied.stderr);
    const agents = await vopctl(['--server', ctlSock, 'get', 'agents', '-o', 'name']);
    assert.equal(agents.code, 0, agents.stderr);
    assert.equal(agents.stdout, 'agent/host-a\n');
    const env = { VOPCTL_SERVER: `unix:${ctlSock}` };
    const policies = await vopctl(['get', 'policies', '-o', 'name'], env);
    assert.equal(policies.code, 0, policies.stderr);
    assert.equal(policies.stdout, 'policy/r07-console\npolicy/r07-net\n');
    const links = await vopctl(['get', 'links', '-o', 'wide'], env);
    assert.equal(links.code, 0, links.stderr);
    const cordon = await vopctl(['cordon', 'host-a'], env);
    assert.equal(cordon.code, 0, cordon.stderr);
    const uncordon = await vopctl(['uncordon', 'host-a'], env);
    assert.equal(uncordon.code, 0, uncordon.stderr);
    // Over plaintext TCP the same write is refused: that port gives role reader only.
    const tcp = await vopctl(['--server', ctl.grpc, 'cordon', 'host-a']);
    assert.equal(tcp.code, 7, tcp.stderr);
    assert.match(tcp.stderr, /role reader/);
  });

  it('creates the socket with mode 0660 and its parent directory when missing', () => {
    for (const s of [ctlSock, agentSock]) {
      const st = statSync(s);
      assert.ok(st.isSocket());
      assert.equal(st.mode & 0o777, 0o660);
    }
    assert.equal(statSync(path.dirname(ctlSock)).mode & 0o777, 0o755);
  });

  it('gives the socket to the configured group (its members are admin)', async () => {
    const d = tmp('sock-group');
    const sock = path.join(d, 'g', 'agent.sock');
    const a = await startServer(
      'agent',
      ['--node-name', 'grp', '--rendezvous-dir', tmp('rdv'), '--admin-socket-group', 'nogroup'],
      { adminSocket: sock },
    );
    dirs.push(a.stateDir);
    try {
      const gid = Number(
        readFileSync('/etc/group', 'utf8')
          .split('\n')
          .find((l) => l.startsWith('nogroup:'))
          ?.split(':')[2],
      );
      assert.equal(statSync(sock).gid, gid);
      assert.equal(statSync(sock).mode & 0o777, 0o660);
      assert.equal(statSync(path.dirname(sock)).gid, gid);
      assert.equal(statSync(path.dirname(sock)).mode & 0o777, 0o750);
    } finally {
      await a.stop('SIGTERM');
    }
  });

  it('refuses to replace a file at the socket path that is not a socket, and leaves it intact', async () => {
    const d = tmp('sock-file');
    const target = path.join(d, 'agent.sock');
    writeFileSync(target, 'precious\n', { mode: 0o600 });
    const r = await run(process.execPath, [
      repoPath('dist', 'agent', 'src', 'main.js'),
      '--node-name',
      'x',
      '--state-dir',
      d,
      '--grpc-listen',
      '127.0.0.1:0',
      '--metrics-listen',
      '127.0.0.1:0',
      '--rendezvous-dir',
      tmp('rdv'),
      '--admin-socket',
      target,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /adminSocket\.path: .*agent\.sock exists and is not a socket; refusing to replace it/);
    assert.equal(readFileSync(target, 'utf8'), 'precious\n');
  });

  it('refuses a socket another live server holds, and takes over a stale one left by a crash', async () => {
    const r = await run(process.execPath, [
      repoPath('dist', 'agent', 'src', 'main.js'),
      '--node-name',
      'x',
      '--state-dir',
      tmp('sock-live'),
      '--grpc-listen',
      '127.0.0.1:0',
      '--metrics-listen',
      '127.0.0.1:0',
      '--rendezvous-dir',
      tmp('rdv'),
      '--admin-socket',
      agentSock,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /adminSocket\.path: .*agent\.sock is in use by another process/);
    // The first agent still answers on it.
    const info = await bufCurl(`unix:${agentSock}/vop.agent.v1.AgentService/GetInfo`, [], '{}');
    assert.equal(info.code, 0, info.stderr);

    const d = tmp('sock-stale');
    const sock = path.join(d, 'agent.sock');
    const crashed = await startServer('agent', ['--node-name', 'crash', '--rendezvous-dir', tmp('rdv')], {
      adminSocket: sock,
    });
    await crashed.stop('SIGKILL');
    dirs.push(crashed.stateDir);
    assert.ok(statSync(sock).isSocket(), 'a crash leaves the socket file behind');
    const next = await startServer('agent', ['--node-name', 'crash', '--rendezvous-dir', tmp('rdv')], {
      adminSocket: sock,
    });
    dirs.push(next.stateDir);
    try {
      const again = await bufCurl(`unix:${sock}/vop.agent.v1.AgentService/GetInfo`, [], '{}');
      assert.equal(again.code, 0, again.stderr);
    } finally {
      await next.stop('SIGTERM');
    }
    assert.throws(() => statSync(sock), /ENOENT/, 'a clean stop removes the socket');
  });
});
