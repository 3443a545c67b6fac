/**
 * Reflection as grpcurl uses it for `describe`: file_containing_symbol on both
 * reflection versions returns the service's file with its transitive imports, so a
 * message with a google.protobuf.Timestamp and a type from vop.types.v1 resolves.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { fromBinary } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import { makeGenericClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';

import {
  ServerReflectionClient,
  ServerReflectionService,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from '../../lib/proto/grpc-reflection';
import { insecure } from '../helpers/grpc';
import { startServer, type ServerProcess } from '../helpers/servers';

const V1ALPHA: ServiceDefinition = {
  serverReflectionInfo: {
    ...ServerReflectionService.serverReflectionInfo,
    path: '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo',
  },
};
const V1AlphaClient = makeGenericClientConstructor(
  V1ALPHA,
  'grpc.reflection.v1alpha.ServerReflection',
) as unknown as typeof ServerReflectionClient;

async function ask(
  client: InstanceType<typeof ServerReflectionClient>,
  req: ServerReflectionRequest['messageRequest'],
): Promise<ServerReflectionResponse> {
  const s = client.serverReflectionInfo();
  const res = new Promise<ServerReflectionResponse>((resolve, reject) => {
    s.once('data', resolve);
    s.once('error', reject);
  });
  s.write({ host: '', messageRequest: req });
  const r = await res;
  s.end();
  return r;
}

function files(r: ServerReflectionResponse): FileDescriptorProto[] {
  assert.equal(r.messageResponse?.$case, 'fileDescriptorResponse', JSON.stringify(r.messageResponse));
  return r.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

describe('server reflection (v1 and v1alpha) from the compiled descriptor set', () => {
  let srv: ServerProcess;
  before(async () => {
    srv = await startServer('agent', ['--node-name', 'refl']);
  });
  after(async () => {
    await srv.stop('SIGKILL');
  });

  for (const [version, Ctor] of [
    ['v1', ServerReflectionClient],
    ['v1alpha', V1AlphaClient],
  ] as const) {
    it(`${version}: describes GetInfo's response with its Timestamp and cross-file types resolvable`, async () => {
      const client = new Ctor(srv.grpc, insecure);
      try {
        const fs = files(await ask(client, { $case: 'fileContainingSymbol', value: 'vop.agent.v1.GetInfoResponse' }));
        const names = fs.map((f) => f.name);
        assert.equal(names[0], 'vop/agent/v1/agent.proto');
        for (const dep of [
          'vop/types/v1/types.proto',
          'google/protobuf/timestamp.proto',
          'google/protobuf/duration.proto',
        ])
          assert.ok(names.includes(dep), `${dep} missing from ${names.join(', ')}`);
        const msg = fs[0]?.messageType.find((m) => m.name === 'GetInfoResponse');
        const field = (n: string): string | undefined => msg?.field.find((f) => f.name === n)?.typeName;
        assert.equal(field('start_time'), '.google.protobuf.Timestamp');
        assert.equal(field('identity'), '.vop.types.v1.AgentIdentity');
        // Method symbols and file names resolve too; unknown symbols get NOT_FOUND.
        assert.equal(
          files(await ask(client, { $case: 'fileContainingSymbol', value: 'vop.agent.v1.AgentService.GetInfo' }))[0]
            ?.name,
          'vop/agent/v1/agent.proto',
        );
        assert.equal(
          files(await ask(client, { $case: 'fileByFilename', value: 'vop/types/v1/types.proto' }))[0]?.name,
          'vop/types/v1/types.proto',
        );
        const missing = await ask(client, { $case: 'fileContainingSymbol', value: 'vop.nope.Missing' });
        assert.equal(missing.messageResponse?.$case, 'errorResponse');
        const list = await ask(client, { $case: 'listServices', value: '' });
        assert.equal(list.messageResponse?.$case, 'listServicesResponse');
      } finally {
        client.close();
      }
    });
  }
});
