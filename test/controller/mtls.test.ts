/**
 * The controller with mutual TLS: agents dial it with their own certificates and
 * register under their certificate name only; vopctl as admin may apply, as reader may
 * only read (exit code 7 otherwise); a client without a certificate is refused.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { credentials, Metadata } from '@grpc/grpc-js';

import { ControllerServiceClient } from '../../lib/proto/controller';
import { AgentPhase } from '../../lib/proto/types';
import { call } from '../helpers/grpc';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { freePort, vopctl, waitFor } from './fleet-helpers';

async function openssl(dir: string, args: string[]): Promise<void> {
  const r = await run('openssl', args, { cwd: dir });
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

async function makeCert(dir: string, cn: string, server: boolean): Promise<void> {
  await openssl(dir, [
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${cn}-key.pem`,
    '-out',
    `${cn}.csr`,
    '-subj',
    `/CN=${cn}`,
  ]);
  const ext = path.join(dir, `${cn}.ext`);
  writeFileSync(
    ext,
    server
      ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
      : 'extendedKeyUsage=clientAuth\n',
  );
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${cn}.csr`,
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca-key.pem',
    '-CAcreateserial',
    '-out',
    `${cn}.pem`,
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
}

describe('vop-controller with mutual TLS', () => {
  let dir: string;
  let ctl: ServerProcess;
  let addr: string;
  const agents: ServerProcess[] = [];

  const startAgent = async (name: string, cert: string, role: string, host?: string): Promise<ServerProcess> => {
    const cfg = path.join(dir, `${name}-agent.yaml`);
    writeFileSync(
      cfg,
      [
        'node:',
        `  name: ${name}`,
        '  rack: r01',
        `  role: ${role}`,
        ...(host ? [`  hostNode: ${host}`] : []),
        `rendezvousDir: ${path.join(dir, 'rdv')}`,
        'controller:',
        `  address: ${addr}`,
        '  tls:',
        `    ca: ${path.join(dir, 'ca.pem')}`,
        `    cert: ${path.join(dir, `${cert}.pem`)}`,
        `    key: ${path.join(dir, `${cert}-key.pem`)}`,
        '',
      ].join('\n'),
    );
    const a = await startServer('agent', ['--config', cfg], { readyTimeoutMs: 60_000 });
    agents.push(a);
    return a;
  };

  before(async () => {
    dir = tempDir('ctl-mtls');
    await openssl(dir, [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      'ca-key.pem',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=ca',
    ]);
    for (const [cn, server] of [
      ['controller', true],
      ['ops-admin', false],
      ['ops-reader', false],
      ['host-1', false],
      ['card-1', false],
      ['card-9', false],
    ] as const)
      await makeCert(dir, cn, server);
    addr = `127.0.0.1:${await freePort()}`;
    const cfg = path.join(dir, 'controller.yaml');
    writeFileSync(
      cfg,
      [
        'tls:',
        `  ca: ${path.join(dir, 'ca.pem')}`,
        `  cert: ${path.join(dir, 'controller.pem')}`,
        `  key: ${path.join(dir, 'controller-key.pem')}`,
        'roles:',
        '  admin: [ops-admin]',
        '  reader: [ops-reader]',
        '  agent: [host-1, card-1, card-9]',
        '',
      ].join('\n'),
    );
    ctl = await startServer('controller', ['--config', cfg, '--grpc-listen', addr], { readyTimeoutMs: 60_000 });
  });
  after(async () => {
    for (const a of agents) await a.stop('SIGKILL');
    await ctl.stop('SIGKILL');
  });

  const tls = (who: string): string[] => [
    '--tls-ca',
    path.join(dir, 'ca.pem'),
    '--tls-cert',
    path.join(dir, `${who}.pem`),
    '--tls-key',
    path.join(dir, `${who}-key.pem`),
  ];

  it('accepts agents registering under their own certificate name and refuses impersonation', async () => {
    await startAgent('host-1', 'host-1', 'host');
    await startAgent('card-1', 'card-1', 'card', 'host-1');
    const impostor = await startAgent('card-2', 'card-9', 'card', 'host-1');
    const pem = (f: string): Buffer => readFileSync(path.join(dir, `${f}.pem`));
    const admin = new ControllerServiceClient(
      addr,
      credentials.createSsl(pem('ca'), pem('ops-admin-key'), pem('ops-admin')),
    );
    try {
      await waitFor('host-1 and card-1 Ready', async () => {
        const r = await call(
          admin,
          admin.listAgents,
          { labelSelector: '', rack: '', phase: AgentPhase.AGENT_PHASE_READY, pageSize: 0, pageToken: '' },
          new Metadata(),
        );
        return r.agents.map((a) => a.meta?.name).join(',') === 'card-1,host-1';
      });
      await waitFor('the impostor refused', () =>
        impostor.logs.some(
          (l) => typeof l.reason === 'string' && l.reason.includes('may not register as agent "card-2"'),
        ),
      );
      const all = await call(
        admin,
        admin.listAgents,
        { labelSelector: '', rack: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      );
      assert.deepEqual(
        all.agents.map((a) => a.meta?.name),
        ['card-1', 'host-1'],
      );
    } finally {
      admin.close();
    }
  });

  it('lets vopctl apply as admin, only read as reader, and refuses no certificate', async () => {
    const f = path.join(dir, 'p.yaml');
    writeFileSync(
      f,
      'kind: LinkPolicy\nmeta: {name: tls}\nspec: {card_selector: {match_labels: {vop.dev/rack: r01}}, template: {card_role: ROLE_DRIVER, transport: {shm: {}}, devices: [{name: console, console: {}}]}}\n',
    );
    const denied = await vopctl(addr, [...tls('ops-reader'), 'apply', '-f', f]);
    assert.equal(denied.code, 7, denied.stderr);
    assert.match(denied.stderr, /role reader/);
    const ok = await vopctl(addr, [...tls('ops-admin'), 'apply', '-f', f]);
    assert.equal(ok.code, 0, ok.stderr);
    const read = await vopctl(addr, [...tls('ops-reader'), 'get', 'links', '-o', 'name']);
    assert.equal(read.code, 0, read.stderr);
    await waitFor(
      'link stamped',
      async () =>
        (await vopctl(addr, [...tls('ops-reader'), 'get', 'links', '-o', 'name'])).stdout === 'link/tls-card-1\n',
    );
    const none = await vopctl(addr, ['--tls-ca', path.join(dir, 'ca.pem'), 'get', 'links']);
    assert.notEqual(none.code, 0);
  });
});
