/**
 * vopctl list / describe / call: the generic caller built on proto/vop.binpb (no grpcurl, no .proto
 * files), against a real vop-controller and a real vop-agent through their admin Unix sockets, the
 * same connection options as every other vopctl command.
 */
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { repoPath } from '../../lib/src/paths';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

const VOPCTL = repoPath('dist', 'controller', 'src', 'vopctl', 'main.js');

function vopctl(
  args: readonly string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(process.execPath, [VOPCTL, ...args], input === undefined ? {} : { input });
}

const LINK = {
  link: {
    meta: { name: 'via-call', labels: { team: 'generic' } },
    spec: {
      endpoints: [
        { agent: 'h1', role: 'ROLE_DEVICE' },
        { agent: 'c1', role: 'ROLE_DRIVER' },
      ],
      transport: { shm: {} },
      devices: [{ name: 'console', console: {} }],
    },
  },
};

describe('vopctl list, describe and call (proto/vop.binpb through @grpc/proto-loader)', () => {
  let controller: ServerProcess;
  let agent: ServerProcess;
  let dir: string;

  before(async () => {
    dir = tempDir('vopctl-call');
    controller = await startServer('controller', [], { readyTimeoutMs: 60_000 });
    agent = await startServer('agent', ['--node-name', 'generic-a', '--rendezvous-dir', path.join(dir, 'rdv')], {
      readyTimeoutMs: 60_000,
    });
  });
  after(async () => {
    await Promise.all([controller?.stop('SIGKILL'), agent?.stop('SIGKILL')]);
    for (const d of [dir, controller?.stateDir, agent?.stateDir])
      if (d !== undefined) rmSync(d, { recursive: true, force: true });
  });

  it('lists the services of the schema and the methods of one, without dialling a server', async () => {
    const all = await vopctl(['--server', 'unix:/nonexistent/never.sock', 'list']);
    assert.equal(all.code, 0, all.stderr);
    assert.deepEqual(all.stdout.trim().split('\n'), [
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
      'vop.agent.v1.AgentService',
      'vop.controller.v1.AgentSyncService',
      'vop.controller.v1.ControllerService',
    ]);
    const methods = await vopctl(['list', 'AgentService']);
    assert.equal(methods.code, 0, methods.stderr);
    assert.ok(methods.stdout.split('\n').includes('vop.agent.v1.AgentService.GetInfo'), methods.stdout);
    assert.ok(methods.stdout.split('\n').includes('vop.agent.v1.AgentService.WatchLinks'), methods.stdout);
    const unknown = await vopctl(['list', 'NoSuchService']);
    assert.equal(unknown.code, 4);
    assert.match(unknown.stderr, /no service "NoSuchService" in the API schema; services: grpc\.health\.v1\.Health/);
  });

  it('describes services, methods, messages and enums as proto source with their comments', async () => {
    const msg = await vopctl(['describe', 'vop.controller.v1.ListLinksRequest']);
    assert.equal(msg.code, 0, msg.stderr);
    assert.match(msg.stdout, /^vop\.controller\.v1\.ListLinksRequest is a message:\n/);
    assert.match(msg.stdout, /\n {2}string label_selector = 1;\n/);
    assert.match(msg.stdout, /\n {2}\.vop\.types\.v1\.LinkPhase phase = 3;\n/);
    assert.match(msg.stdout, /\/\/ Only links with an endpoint on this agent\.\n {2}string agent = 2;/);
    const svc = await vopctl(['describe', 'vop.controller.v1.ControllerService']);
    assert.equal(svc.code, 0, svc.stderr);
    assert.match(
      svc.stdout,
      /rpc WatchLinks \( \.vop\.controller\.v1\.WatchLinksRequest \) returns \( stream \.vop\.controller\.v1\.WatchLinksResponse \);/,
    );
    const oneof = await vopctl(['describe', 'vop.types.v1.Device']);
    assert.match(oneof.stdout, /oneof kind \{\n {4}\.vop\.types\.v1\.NetDevice net = 10;/);
    const en = await vopctl(['describe', 'vop.types.v1.LinkPhase']);
    assert.match(en.stdout, /^vop\.types\.v1\.LinkPhase is an enum:\n[\s\S]*LINK_PHASE_READY = 4;/);
    const field = await vopctl(['describe', 'vop.types.v1.ObjectMeta.labels']);
    assert.match(field.stdout, /map<string, string> labels = 2;/);
    const short = await vopctl(['describe', 'ControllerService/ListLinks']);
    assert.equal(short.code, 0, short.stderr);
    assert.match(short.stdout, /^vop\.controller\.v1\.ControllerService\.ListLinks is a method:\nrpc ListLinks /);
    const ambiguous = await vopctl(['describe', 'AttachConsoleRequest']);
    assert.equal(ambiguous.code, 4);
    assert.match(
      ambiguous.stderr,
      /"AttachConsoleRequest" is ambiguous: vop\.agent\.v1\.AttachConsoleRequest, vop\.controller\.v1\.AttachConsoleRequest/,
    );
    const missing = await vopctl(['describe', 'vop.types.v1.NoSuchMessage']);
    assert.equal(missing.code, 4);
    assert.match(missing.stderr, /no symbol "vop\.types\.v1\.NoSuchMessage" in the API schema/);
  });

  it('calls unary methods of the controller and of an agent with the same connection options', async () => {
    const file = path.join(dir, 'apply.json');
    writeFileSync(file, JSON.stringify(LINK));
    const applied = await vopctl([
      '--server',
      controller.admin,
      'call',
      'ControllerService/ApplyLink',
      '-d',
      `@${file}`,
    ]);
    assert.equal(applied.code, 0, applied.stderr);
    const res = JSON.parse(applied.stdout) as {
      link: { meta: { name: string; generation: string } };
      changed: boolean;
    };
    assert.equal(res.link.meta.name, 'via-call');
    assert.equal(res.link.meta.generation, '1');
    assert.equal(res.changed, true);
    // Proto field names (snake_case) are accepted as the proto3 JSON mapping requires; stdin with @-.
    const listed = await vopctl(
      ['--server', controller.admin, 'call', 'vop.controller.v1.ControllerService/ListLinks', '-d', '@-'],
      '{"label_selector": "team=generic"}',
    );
    assert.equal(listed.code, 0, listed.stderr);
    const names = (JSON.parse(listed.stdout) as { links: { meta: { name: string } }[] }).links.map((l) => l.meta.name);
    assert.deepEqual(names, ['via-call']);
    const none = await vopctl([
      '--server',
      controller.admin,
      'call',
      'ControllerService/ListLinks',
      '-d',
      '{"labelSelector": "team=nobody"}',
    ]);
    assert.equal(none.code, 0, none.stderr);
    assert.deepEqual(JSON.parse(none.stdout), {});
    const info = await vopctl(['--server', agent.admin, 'call', 'vop.agent.v1.AgentService.GetInfo']);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /"nodeName": "generic-a"/);
  });

  it('streams a server-streaming call one JSON object per line until the deadline', async () => {
    const r = await vopctl([
      '--server',
      controller.admin,
      '--timeout',
      '2',
      'call',
      'ControllerService/WatchLinks',
      '-d',
      '{"labelSelector": "team=generic"}',
    ]);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 2, r.stdout);
    const [added, synced] = lines.map((l) => JSON.parse(l) as { type: string; link?: { meta: { name: string } } });
    assert.equal(added?.type, 'WATCH_EVENT_TYPE_ADDED');
    assert.equal(added?.link?.meta.name, 'via-call');
    assert.equal(synced?.type, 'WATCH_EVENT_TYPE_SYNCED');
    assert.equal(r.code, 6, r.stderr);
    assert.match(
      r.stderr,
      /DEADLINE_EXCEEDED: the stream was still open at the deadline \(--timeout 2 s\) after 2 message/,
    );
  });

  it('refuses a bad method, bad JSON and unknown fields with clear errors and exit codes, before dialling', async () => {
    // A socket that does not exist: each refusal below happens before anything is dialled.
    const nowhere = ['--server', 'unix:/nonexistent/never.sock'];
    const method = await vopctl([...nowhere, 'call', 'ControllerService/NoSuchMethod']);
    assert.equal(method.code, 4);
    assert.match(
      method.stderr,
      /no method "NoSuchMethod" in vop\.controller\.v1\.ControllerService; methods: AdoptAgents, ApplyLink, /,
    );
    const shape = await vopctl([...nowhere, 'call', 'ControllerService']);
    assert.equal(shape.code, 2);
    assert.match(shape.stderr, /"ControllerService" is not SERVICE\/METHOD/);
    const notJson = await vopctl([...nowhere, 'call', 'ControllerService/GetLink', '-d', '{name: x}']);
    assert.equal(notJson.code, 3);
    assert.match(notJson.stderr, /the request is not JSON/);
    const unknown = await vopctl([...nowhere, 'call', 'ControllerService/GetLink', '-d', '{"nmae": "x"}']);
    assert.equal(unknown.code, 3);
    assert.match(unknown.stderr, /does not fit vop\.controller\.v1\.GetLinkRequest: .*key "nmae" is unknown/);
    const wrongType = await vopctl([...nowhere, 'call', 'ControllerService/ListLinks', '-d', '{"phase": "READY"}']);
    assert.equal(wrongType.code, 3);
    assert.match(wrongType.stderr, /does not fit vop\.controller\.v1\.ListLinksRequest/);
    const stream = await vopctl([...nowhere, 'call', 'ControllerService/AttachConsole']);
    assert.equal(stream.code, 2);
    assert.match(stream.stderr, /streams requests from the client/);
    // Only a well-formed request dials: then the missing socket is the error.
    const down = await vopctl([...nowhere, 'call', 'ControllerService/GetLink', '-d', '{"name": "x"}']);
    assert.equal(down.code, 6);
    assert.match(down.stderr, /cannot reach the server at unix:\/nonexistent\/never\.sock/);
  });

  it("reports the server's refusal with its status, reason and field violations", async () => {
    const bad = await vopctl([
      '--server',
      controller.admin,
      'call',
      'ControllerService/GetLink',
      '-d',
      '{"name": "Bad_Name"}',
    ]);
    assert.equal(bad.code, 3, bad.stderr);
    assert.match(bad.stderr, /"Bad_Name" must be a DNS-1123 label.*\[INVALID_ARGUMENT\]/);
    const missing = await vopctl([
      '--server',
      controller.admin,
      'call',
      'ControllerService/GetLink',
      '-d',
      '{"name": "nope"}',
    ]);
    assert.equal(missing.code, 4, missing.stderr);
    assert.match(missing.stderr, /link "nope" not found \[LINK_NOT_FOUND\]/);
  });
});
