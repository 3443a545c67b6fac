/**
 * The two servers as processes: both start from the built executables, answer health,
 * expose reflection usable without .proto files (buf curl), serve /metrics that promtool
 * accepts, reject invalid fields with field violations, and exit 0 on SIGTERM even with
 * an open watch stream.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { Metadata, status } from '@grpc/grpc-js';

import { HealthCheckResponse_ServingStatus, HealthClient } from '../../lib/proto/grpc-health';
import { AgentServiceClient, type WatchLinksResponse } from '../../lib/proto/agent';
import { ControllerServiceClient } from '../../lib/proto/controller';
import { Role, WatchEventType } from '../../lib/proto/types';
import { call, decodeStatus, expectGrpcError, insecure } from '../helpers/grpc';
import {
  bufCurl,
  promtoolPath,
  run,
  startServer,
  withoutKnownPromClientLintNames,
  type ServerKind,
  type ServerProcess,
} from '../helpers/servers';

const SERVICES: Record<ServerKind, string[]> = {
  agent: ['vop.agent.v1.AgentService'],
  controller: ['vop.controller.v1.ControllerService', 'vop.controller.v1.AgentSyncService'],
};

for (const kind of ['agent', 'controller'] as const) {
  describe(`vop-${kind} server`, () => {
    let srv: ServerProcess;
    before(async () => {
      srv = await startServer(kind, kind === 'agent' ? ['--node-name', 'test-node'] : []);
    });
    after(async () => {
      await srv.stop('SIGKILL');
    });

    it('answers grpc.health.v1 Check with SERVING for the server and each service', async () => {
      const client = new HealthClient(srv.grpc, insecure);
      try {
        for (const service of ['', ...SERVICES[kind]]) {
          const res = await call(client, client.check, { service }, new Metadata());
          assert.equal(res.status, HealthCheckResponse_ServingStatus.SERVING, `service "${service}"`);
        }
      } finally {
        client.close();
      }
    });

    it('lists its services through reflection without .proto files', async () => {
      const r = await bufCurl(srv.grpc, ['--list-services']);
      assert.equal(r.code, 0, r.stderr);
      const listed = r.stdout.trim().split('\n').sort();
      for (const s of [
        ...SERVICES[kind],
        'grpc.health.v1.Health',
        'grpc.reflection.v1.ServerReflection',
        'grpc.reflection.v1alpha.ServerReflection',
      ]) {
        assert.ok(listed.includes(s), `${s} missing from ${listed.join(', ')}`);
      }
    });

    it('describes methods through reflection', async () => {
      const r = await bufCurl(srv.grpc, ['--list-methods']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`${SERVICES[kind][0]}/WatchLinks`));
    });

    it('serves /metrics that promtool check metrics accepts', async () => {
      const res = await fetch(`http://${srv.metrics}/metrics`);
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.match(text, /grpc_server_handled_total/);
      const lint = await run(promtoolPath(), ['check', 'metrics'], { input: withoutKnownPromClientLintNames(text) });
      assert.equal(lint.code, 0, `promtool: ${lint.stdout}${lint.stderr}`);
      const health = await fetch(`http://${srv.metrics}/healthz`);
      assert.equal(health.status, 200);
    });

    it('rejects an invalid link with INVALID_ARGUMENT naming each bad field', async () => {
      const link = {
        meta: {
          name: 'Not_A_Name',
          labels: {},
          annotations: {},
          generation: 0n,
          resourceVersion: '',
          createTime: undefined,
          updateTime: undefined,
          managedBy: '',
        },
        spec: {
          endpoints: [
            { agent: 'a', role: Role.ROLE_DEVICE },
            { agent: 'b', role: Role.ROLE_DEVICE },
          ],
          transport: { kind: { $case: 'shm' as const, value: { directory: '', windowSizeBytes: 0n } } },
          devices: [
            {
              name: 'con',
              queueSize: 100,
              disableEventIdx: false,
              kind: {
                $case: 'console' as const,
                value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined },
              },
            },
          ],
        },
        status: undefined,
      };
      // Admin calls go through the admin Unix socket (plaintext TCP is read-only).
      const client =
        kind === 'agent'
          ? new AgentServiceClient(srv.admin, insecure)
          : new ControllerServiceClient(srv.admin, insecure);
      try {
        const err = await expectGrpcError(
          kind === 'agent'
            ? call(
                client,
                (client as AgentServiceClient).applyLink,
                { link, force: false, dryRun: false },
                new Metadata(),
              )
            : call(client, (client as ControllerServiceClient).applyLink, { link, dryRun: false }, new Metadata()),
        );
        assert.equal(err.code, status.INVALID_ARGUMENT);
        const st = decodeStatus(err);
        assert.equal(st.reason, 'INVALID_ARGUMENT');
        const fields = st.fieldViolations.map((v) => v.field);
        assert.deepEqual(
          fields.sort(),
          ['link.meta.name', 'link.spec.devices[0].queue_size', 'link.spec.endpoints[1].role'].sort(),
        );
      } finally {
        client.close();
      }
    });
  });
}

describe('reflection of messages with well-known and cross-file types', () => {
  it('calls AgentService/GetInfo whose response holds a Timestamp and vop.types.v1 messages', async () => {
    const srv = await startServer('agent', [
      '--node-name',
      'refl-node',
      '--rack',
      'r07',
      '--role',
      'card',
      '--host-node',
      'h1',
    ]);
    try {
      const r = await bufCurl(`${srv.grpc}/vop.agent.v1.AgentService/GetInfo`, [], '{}');
      assert.equal(r.code, 0, r.stderr);
      const info = JSON.parse(r.stdout) as {
        identity: { nodeName: string; rack: string; role: string; hostNode: string };
        startTime: string;
        version: string;
      };
      assert.equal(info.identity.nodeName, 'refl-node');
      assert.equal(info.identity.rack, 'r07');
      assert.equal(info.identity.role, 'NODE_ROLE_CARD');
      assert.equal(info.identity.hostNode, 'h1');
      assert.ok(!Number.isNaN(Date.parse(info.startTime)), `startTime ${info.startTime} is an RFC 3339 timestamp`);
      // A request message from another file, with an enum and a Timestamp in the response path.
      const bad = await bufCurl(
        `${srv.admin}/vop.agent.v1.AgentService/ApplyLink`,
        [],
        JSON.stringify({ link: { meta: { name: 'x' }, spec: { endpoints: [{ agent: 'a', role: 'ROLE_DRIVER' }] } } }),
      );
      assert.notEqual(bad.code, 0);
      assert.match(bad.stdout + bad.stderr, /invalid_argument/);
    } finally {
      await srv.stop('SIGKILL');
    }
  });
});

describe('graceful shutdown', () => {
  for (const kind of ['agent', 'controller'] as const) {
    it(`vop-${kind} exits 0 on SIGTERM with a watch stream open, ending the stream cleanly`, async () => {
      const srv = await startServer(kind, kind === 'agent' ? ['--node-name', 'stop-node'] : []);
      const client =
        kind === 'agent' ? new AgentServiceClient(srv.grpc, insecure) : new ControllerServiceClient(srv.grpc, insecure);
      try {
        const stream = client.watchLinks({ labelSelector: '', updatesOnly: false, agent: '' });
        const ended = new Promise<string>((resolve) => {
          stream.on('error', (e: Error) => resolve(`error: ${e.message}`));
          stream.on('end', () => resolve('end'));
        });
        const synced = await new Promise<WatchLinksResponse>((resolve) => stream.once('data', resolve));
        assert.equal(synced.type, WatchEventType.WATCH_EVENT_TYPE_SYNCED);
        // Not a timing claim: the test's own deadline (run-all's --test-timeout) bounds the wait.
        const { code } = await srv.stop('SIGTERM');
        assert.equal(code, 0);
        assert.equal(await ended, 'end');
      } finally {
        client.close();
      }
    });
  }
});

describe('configuration', () => {
  it('refuses a bad value and names the field', async () => {
    const r = await run(process.execPath, [
      'dist/agent/src/main.js',
      '--grpc-listen',
      'nowhere',
      '--node-name',
      'x',
      '--state-dir',
      '/tmp/vop-cfg-test',
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /grpcListen: "nowhere" is not HOST:PORT \(from flag\)/);
  });
  it('refuses plaintext on a non-loopback address unless allowed', async () => {
    const r = await run(process.execPath, [
      'dist/controller/src/main.js',
      '--grpc-listen',
      '0.0.0.0:0',
      '--state-dir',
      '/tmp/vop-cfg-test',
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /plaintext gRPC on non-loopback address 0\.0\.0\.0 is refused/);
  });
});
