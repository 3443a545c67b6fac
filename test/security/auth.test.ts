/**
 * Who may do what (issue 11, item 3), attacked against real processes:
 *
 * - a local user who is not root or in the socket's group cannot open the admin Unix socket;
 * - a plaintext TCP caller on loopback is a reader: ApplyLink is refused and nothing is applied;
 * - an agent certificate runs its sync stream but cannot list or read links on the controller;
 * - a certificate put on the deny-list is refused at once and its open streams end, no restart;
 * - a renewed server certificate is served to new connections without a restart;
 * - the agent refuses to dial a plaintext controller that is not on loopback.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { X509Certificate } from 'node:crypto';

import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

import { HealthCheckResponse_ServingStatus, HealthClient } from '../../lib/proto/grpc-health';
import { ControllerServiceClient, type WatchLinksResponse } from '../../lib/proto/controller';
import { Agent, makeLink } from '../agent/helpers';
import { freePort, waitFor } from '../controller/fleet-helpers';
import { call, expectGrpcError, insecure } from '../helpers/grpc';
import { testPki, type TestPki } from '../helpers/pki';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

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

/** What an unprivileged local user would try: connect to the socket and call ApplyLink with Node's http2. */
const NOBODY_CLIENT = `
const http2 = require('node:http2'), net = require('node:net');
const s = net.connect(process.argv[1]);
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(0); });
s.on('connect', () => {
  const c = http2.connect('http://localhost', { createConnection: () => s });
  const req = c.request({ ':method': 'POST', ':path': '/vop.agent.v1.AgentService/ApplyLink',
    'content-type': 'application/grpc', te: 'trailers' });
  let st = null;
  req.on('trailers', (t) => { st = t['grpc-status']; });
  req.on('response', (h) => { if (h['grpc-status'] !== undefined) st = h['grpc-status']; });
  req.on('close', () => { console.log(JSON.stringify({ status: st })); process.exit(0); });
  req.end(Buffer.from([0, 0, 0, 0, 0]));
});
`;

function metricValue(text: string, name: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

describe('who may do what', () => {
  let pki: TestPki;
  let agent: ServerProcess;
  let agentSockDir: string;
  let ctl: ServerProcess;
  let ctlAddr: string;
  let denyFile: string;
  let card: ServerProcess | undefined;

  before(async () => {
    pki = await testPki(['vop-controller', 'ops-admin', 'ops-reader', 'card-1']);
    // A plaintext agent (loopback TCP, default plaintextRole) whose admin socket sits in a
    // world-searchable directory: only the socket's own mode keeps other users out.
    agentSockDir = tmp('sockdir');
    chmodSync(agentSockDir, 0o755);
    agent = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', tmp('rdv')], {
      adminSocket: path.join(agentSockDir, 'agent.sock'),
    });
    // A controller with mutual TLS, roles, and a deny-list file.
    const dir = tmp('ctl-auth');
    denyFile = path.join(dir, 'deny', 'denied-names');
    mkdirSync(path.dirname(denyFile), { mode: 0o700 });
    writeFileSync(denyFile, '# compromised cards, one a line\n');
    const f = pki.files('vop-controller');
    const cfg = path.join(dir, 'controller.yaml');
    writeFileSync(
      cfg,
      [
        'tls:',
        `  ca: ${f.ca}`,
        `  cert: ${f.cert}`,
        `  key: ${f.key}`,
        'roles:',
        '  admin: [ops-admin]',
        '  reader: [ops-reader]',
        '  agent: [card-1]',
        'denylist:',
        `  file: ${denyFile}`,
        '',
      ].join('\n'),
    );
    ctlAddr = `127.0.0.1:${await freePort()}`;
    ctl = await startServer('controller', ['--config', cfg, '--grpc-listen', ctlAddr], { readyTimeoutMs: 60_000 });
  });

  after(async () => {
    await card?.stop('SIGKILL');
    await agent?.stop('SIGKILL');
    await ctl?.stop('SIGKILL');
    removeDirs(pki?.dir, card?.stateDir, agent?.stateDir, ctl?.stateDir);
  });

  it('refuses a caller running as uid nobody on the admin Unix socket (EACCES), and it applies nothing', async () => {
    const sock = path.join(agentSockDir, 'agent.sock');
    const r = spawnSync(
      'setpriv',
      ['--reuid', 'nobody', '--regid', 'nogroup', '--clear-groups', process.execPath, '-e', NOBODY_CLIENT, sock],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout.trim()), { error: 'EACCES' });
    // Control: the same program as root (the socket's owner) gets through to the handler.
    const root = spawnSync(process.execPath, ['-e', NOBODY_CLIENT, sock], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(JSON.parse(root.stdout.trim()).status, String(status.INVALID_ARGUMENT));
    const admin = new Agent(agent.admin);
    try {
      assert.deepEqual((await admin.list()).links, []);
    } finally {
      admin.close();
    }
  });

  it('refuses ApplyLink from a plaintext TCP caller on loopback (role reader) and applies nothing', async () => {
    const stateBefore = readdirSync(agent.stateDir).sort();
    const plain = new Agent(agent.grpc, insecure);
    try {
      // A reader may read...
      assert.equal((await plain.info()).identity?.nodeName, 'host-a');
      // ...but not apply, delete or reset.
      const err = await expectGrpcError(plain.apply(makeLink('evil')));
      assert.equal(err.code, status.PERMISSION_DENIED);
      assert.match(err.details, /role reader/);
      assert.equal((await expectGrpcError(plain.delete('evil'))).code, status.PERMISSION_DENIED);
      assert.equal((await expectGrpcError(plain.reset('evil'))).code, status.PERMISSION_DENIED);
    } finally {
      plain.close();
    }
    const admin = new Agent(agent.admin);
    try {
      assert.deepEqual((await admin.list()).links, []);
      assert.equal((await expectGrpcError(admin.get('evil'))).code, status.NOT_FOUND);
    } finally {
      admin.close();
    }
    assert.deepEqual(readdirSync(agent.stateDir).sort(), stateBefore, 'no state file was written');
  });

  it('refuses an agent certificate listing or reading links and agents on the controller', async () => {
    const asAgent = new ControllerServiceClient(ctlAddr, pki.creds('card-1'));
    try {
      const list = await expectGrpcError(
        call(
          asAgent,
          asAgent.listLinks,
          { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: '' },
          new Metadata(),
        ),
      );
      assert.equal(list.code, status.PERMISSION_DENIED);
      assert.match(list.details, /role agent/);
      const get = await expectGrpcError(call(asAgent, asAgent.getLink, { name: 'x' }, new Metadata()));
      assert.equal(get.code, status.PERMISSION_DENIED);
      const agents = await expectGrpcError(
        call(
          asAgent,
          asAgent.listAgents,
          { labelSelector: '', rack: '', phase: 0, pageSize: 0, pageToken: '' },
          new Metadata(),
        ),
      );
      assert.equal(agents.code, status.PERMISSION_DENIED);
    } finally {
      asAgent.close();
    }
    // Health stays open to it; its sync stream works (a real agent with that certificate registers).
    const health = new HealthClient(ctlAddr, pki.creds('card-1'));
    try {
      const h = await call(health, health.check, { service: '' }, new Metadata());
      assert.equal(h.status, HealthCheckResponse_ServingStatus.SERVING);
    } finally {
      health.close();
    }
  });

  it('refuses a certificate at once when it is added to the deny-list file, and ends its open streams, without a restart', async () => {
    // card-1 runs a real agent syncing over mutual TLS; ops-reader holds a watch stream.
    const f = pki.files('card-1');
    const cfg = path.join(tmp('card'), 'agent.yaml');
    writeFileSync(
      cfg,
      [
        'node: { name: card-1, role: card }',
        'controller:',
        `  address: ${ctlAddr}`,
        '  tls:',
        `    ca: ${f.ca}`,
        `    cert: ${f.cert}`,
        `    key: ${f.key}`,
        '',
      ].join('\n'),
    );
    card = await startServer('agent', ['--config', cfg, '--rendezvous-dir', tmp('rdv')], {
      readyTimeoutMs: 60_000,
    });
    const streams = async (): Promise<number | undefined> =>
      metricValue(await (await fetch(`http://${ctl.metrics}/metrics`)).text(), 'vop_controller_sync_streams');
    await waitFor('card-1 registered', async () => (await streams()) === 1);
    const reader = new ControllerServiceClient(ctlAddr, pki.creds('ops-reader'));
    const admin = new ControllerServiceClient(ctlAddr, pki.creds('ops-admin'));
    const ctlPid = ctl.proc.pid;
    try {
      const watch = reader.watchLinks({ labelSelector: '', agent: '', updatesOnly: false });
      const ended = new Promise<ServiceError | 'end'>((resolve) => {
        watch.on('error', (e: ServiceError) => resolve(e));
        watch.on('end', () => resolve('end'));
      });
      await new Promise<WatchLinksResponse>((resolve) => watch.once('data', resolve));

      // The operator denies both names (written elsewhere, renamed into place).
      writeFileSync(`${denyFile}.new`, '# compromised\ncard-1\nops-reader\n');
      renameSync(`${denyFile}.new`, denyFile);

      const why = await ended;
      assert.notEqual(why, 'end');
      assert.equal((why as ServiceError).code, status.UNAUTHENTICATED);
      assert.match((why as ServiceError).details, /deny-list/);
      await waitFor('card-1 sync stream ended', async () => (await streams()) === 0, 20_000);
      const again = await expectGrpcError(
        call(
          reader,
          reader.listLinks,
          { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: '' },
          new Metadata(),
        ),
      );
      assert.equal(again.code, status.UNAUTHENTICATED);
      // card-1 keeps trying and keeps being refused; nobody else is affected.
      await waitFor('the agent told it is denied', () =>
        (card?.logs ?? []).some((l) => typeof l.reason === 'string' && l.reason.includes('UNAUTHENTICATED')),
      );
      assert.equal(await streams(), 0);
      const ok = await call(
        admin,
        admin.listAgents,
        { labelSelector: '', rack: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      );
      assert.ok(Array.isArray(ok.agents));
      assert.equal(ctl.proc.pid, ctlPid);
      assert.equal(ctl.proc.exitCode, null, 'the controller was not restarted');
      assert.ok(ctl.logs.some((l) => l.msg === 'denied certificate: open calls ended' && l.identity === 'ops-reader'));
    } finally {
      reader.close();
      admin.close();
      writeFileSync(denyFile, '');
    }
  });

  it('serves a renewed server certificate to new connections without a restart', async () => {
    const serial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const [host, port] = ctlAddr.split(':');
        const f = pki.files('ops-admin');
        const s = tlsConnect({
          host,
          port: Number(port),
          ca: pki.ca.certPem,
          servername: 'localhost',
          ALPNProtocols: ['h2'],
          cert: readFileSync(f.cert),
          key: readFileSync(f.key),
        });
        s.once('secureConnect', () => {
          const c: PeerCertificate = s.getPeerCertificate();
          s.destroy();
          resolve(c.serialNumber);
        });
        s.once('error', reject);
      });
    const before = await serial();
    const pid = ctl.proc.pid;
    const renewed = await pki.issue('vop-controller'); // new key and serial, files replaced by rename
    const want = new X509Certificate(readFileSync(renewed.cert)).serialNumber;
    assert.notEqual(want, before);
    await waitFor('the new certificate served', async () => (await serial()) === want, 20_000, 200);
    // And gRPC clients keep working against it.
    const admin = new ControllerServiceClient(ctlAddr, pki.creds('ops-admin'));
    try {
      await call(
        admin,
        admin.listLinks,
        { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      );
    } finally {
      admin.close();
    }
    assert.equal(ctl.proc.pid, pid);
    assert.equal(ctl.proc.exitCode, null);
    // SIGHUP (systemctl reload) re-reads certificates and the deny-list; it does not stop the server.
    ctl.proc.kill('SIGHUP');
    await waitFor('the SIGHUP reload logged', () =>
      ctl.logs.some((l) => l.msg === 'SIGHUP: reloading certificates and the deny-list'),
    );
    assert.equal((await serial()) === want && ctl.proc.exitCode === null, true);
  });

  it('refuses to start an agent that would dial a non-loopback controller in plaintext, naming the field', async () => {
    const dir = tmp('plain-ctl');
    const r = await run(process.execPath, [
      'dist/agent/src/main.js',
      '--node-name',
      'x',
      '--state-dir',
      dir,
      '--admin-socket',
      path.join(dir, 'a.sock'),
      '--controller',
      'controller.example:7400',
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /controller\.address: plaintext connection to controller\.example:7400 is refused/);
    assert.ok(!existsSync(path.join(dir, 'a.sock')), 'it never started serving');
  });
});
