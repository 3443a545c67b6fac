/**
 * Mutual TLS end to end: certificates made here with openssl, an agent configured
 * with CA, cert, key and role lists; admin may mutate, reader may only read and
 * watch, unknown or foreign-CA clients are refused, health stays reachable.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { credentials, Metadata, status, type ChannelCredentials } from '@grpc/grpc-js';

import { HealthCheckResponse_ServingStatus, HealthClient } from '../../lib/proto/grpc-health';
import { WatchEventType } from '../../lib/proto/types';
import { call, expectGrpcError, insecure } from '../helpers/grpc';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink, testDiskDir } from './helpers';

async function openssl(dir: string, args: string[]): Promise<void> {
  // spawnSync: openssl need not read stdin (an async pipe could EPIPE after it exits).
  const r = spawnSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}-key.pem`,
    '-out',
    `${name}.pem`,
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
  ]);
}

async function makeCert(dir: string, ca: string, cn: string, server: boolean): Promise<void> {
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
    `${ca}.pem`,
    '-CAkey',
    `${ca}-key.pem`,
    '-CAcreateserial',
    '-out',
    `${cn}.pem`,
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
}

describe('vop-agent with mutual TLS', () => {
  let dir: string;
  let srv: ServerProcess;
  const creds = (who: string | null): ChannelCredentials =>
    credentials.createSsl(
      readFileSync(path.join(dir, 'ca.pem')),
      who ? readFileSync(path.join(dir, `${who}-key.pem`)) : null,
      who ? readFileSync(path.join(dir, `${who}.pem`)) : null,
    );

  before(async () => {
    dir = tempDir('mtls');
    await makeCa(dir, 'ca');
    await makeCa(dir, 'rogue-ca');
    await makeCert(dir, 'ca', 'agent-server', true);
    await makeCert(dir, 'ca', 'ops-admin', false);
    await makeCert(dir, 'ca', 'ops-reader', false);
    await makeCert(dir, 'ca', 'stranger', false);
    await makeCert(dir, 'rogue-ca', 'rogue-admin', false);
    const cfg = path.join(dir, 'agent.yaml');
    writeFileSync(
      cfg,
      [
        'node:',
        '  name: host-a',
        `rendezvousDir: ${path.join(dir, 'rdv')}`,
        'tls:',
        `  ca: ${path.join(dir, 'ca.pem')}`,
        `  cert: ${path.join(dir, 'agent-server.pem')}`,
        `  key: ${path.join(dir, 'agent-server-key.pem')}`,
        'roles:',
        '  admin: [ops-admin]',
        '  reader: [ops-reader]',
        '',
      ].join('\n'),
    );
    srv = await startServer('agent', ['--config', cfg, '--disk-dir', testDiskDir()]);
  });
  after(async () => {
    await srv.stop('SIGTERM');
  });

  it('lets an admin identity mutate', async () => {
    const admin = new Agent(srv.grpc, creds('ops-admin'));
    try {
      const res = await admin.apply(makeLink('tls-1'));
      assert.equal(res.changed, true);
      await admin.delete('tls-1');
    } finally {
      admin.close();
    }
  });

  it('lets a reader identity read, watch and attach a console read-only, but not call ApplyLink or take the console writer slot', async () => {
    const reader = new Agent(srv.grpc, creds('ops-reader'));
    try {
      const info = await reader.info();
      assert.equal(info.identity?.nodeName, 'host-a');
      await reader.list();
      const w = reader.watch();
      await w.waitFor((m) => m.type === WatchEventType.WATCH_EVENT_TYPE_SYNCED);
      w.stream.cancel();
      const err = await expectGrpcError(reader.apply(makeLink('tls-2')));
      assert.equal(err.code, status.PERMISSION_DENIED);
      const err2 = await expectGrpcError(reader.delete('tls-2'));
      assert.equal(err2.code, status.PERMISSION_DENIED);
      // Console: a reader may attach to watch (the link is unknown here: NOT_FOUND, not PERMISSION_DENIED), never to write.
      const attach = (write: boolean): Promise<number> =>
        new Promise((resolve) => {
          const s = reader.client.attachConsole();
          s.on('data', () => undefined);
          s.on('error', (e: { code: number }) => resolve(e.code));
          s.on('end', () => resolve(-1));
          s.write({
            msg: { $case: 'open', value: { link: 'no-such-link', device: 'console', write, replayBytes: 0 } },
          });
        });
      assert.equal(await attach(false), status.NOT_FOUND);
      assert.equal(await attach(true), status.PERMISSION_DENIED);
      const health = new HealthClient(srv.grpc, creds('ops-reader'));
      const h = await call(health, health.check, { service: '' }, new Metadata());
      assert.equal(h.status, HealthCheckResponse_ServingStatus.SERVING);
      health.close();
    } finally {
      reader.close();
    }
  });

  it('refuses a certificate without a role, a foreign CA, no certificate and plaintext', async () => {
    const stranger = new Agent(srv.grpc, creds('stranger'));
    assert.equal((await expectGrpcError(stranger.list())).code, status.PERMISSION_DENIED);
    stranger.close();
    const rogue = new Agent(
      srv.grpc,
      credentials.createSsl(
        readFileSync(path.join(dir, 'ca.pem')),
        readFileSync(path.join(dir, 'rogue-admin-key.pem')),
        readFileSync(path.join(dir, 'rogue-admin.pem')),
      ),
    );
    assert.equal((await expectGrpcError(rogue.info())).code, status.UNAVAILABLE, 'handshake refused');
    rogue.close();
    const none = new Agent(srv.grpc, creds(null));
    assert.equal((await expectGrpcError(none.info())).code, status.UNAVAILABLE, 'no client certificate');
    none.close();
    const plain = new Agent(srv.grpc, insecure);
    assert.equal((await expectGrpcError(plain.info())).code, status.UNAVAILABLE);
    plain.close();
  });
});
