/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) served from the
 * FileDescriptorSet that `buf build` writes to proto/vop.binpb, so that grpcurl sees
 * exactly the schema the code was generated from. @grpc/reflection 1.0.4 rebuilds
 * descriptors through protobufjs and loses google.protobuf well-known types and
 * cross-file imports (grpc-node #2958, #3018); serving the compiled set avoids that.
 */
import { readFileSync } from 'node:fs';

import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { createFileRegistry, type FileRegistry } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import type { DescFile } from '@bufbuild/protobuf';
import {
  status as GrpcStatus,
  type Server,
  type ServerDuplexStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';

import {
  ServerReflectionService,
  type ServerReflectionRequest,
  type ServerReflectionResponse,
} from '../proto/grpc-reflection';
import { repoPath } from './paths';

/** The compiled descriptor set of every .proto the servers use. */
export const DESCRIPTOR_SET_PATH = repoPath('proto', 'vop.binpb');

let cachedRegistry: FileRegistry | undefined;

export function loadDescriptorRegistry(): FileRegistry {
  cachedRegistry ??= createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(DESCRIPTOR_SET_PATH)));
  return cachedRegistry;
}

export class ReflectionIndex {
  private readonly registry: FileRegistry;
  private readonly encoded = new Map<string, Buffer>();

  /** `services`: fully-qualified names of the services the server actually serves. */
  constructor(
    readonly services: readonly string[],
    registry: FileRegistry = loadDescriptorRegistry(),
  ) {
    this.registry = registry;
  }

  /** The file and its transitive imports, encoded, file first. */
  fileWithDeps(file: DescFile): Buffer[] {
    const out: Buffer[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile): void => {
      if (seen.has(f.name)) return;
      seen.add(f.name);
      out.push(this.encode(f));
      for (const d of f.dependencies) visit(d);
    };
    visit(file);
    return out;
  }

  private encode(f: DescFile): Buffer {
    let b = this.encoded.get(f.name);
    if (!b) {
      b = Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto));
      this.encoded.set(f.name, b);
    }
    return b;
  }

  fileByName(name: string): DescFile | undefined {
    return (
      this.registry.getFile(name.endsWith('.proto') ? name.slice(0, -'.proto'.length) : name) ??
      this.registry.getFile(name)
    );
  }

  fileContainingSymbol(symbol: string): DescFile | undefined {
    const sym = symbol.startsWith('.') ? symbol.slice(1) : symbol;
    const direct = this.registry.get(sym);
    if (direct) return direct.file;
    // "pkg.Service.Method" or "pkg.Message.field": look up the parent.
    const dot = sym.lastIndexOf('.');
    if (dot > 0) {
      const parent = this.registry.get(sym.slice(0, dot));
      if (parent?.kind === 'service' && parent.methods.some((m) => m.name === sym.slice(dot + 1))) return parent.file;
      if (parent?.kind === 'message' && parent.fields.some((f) => f.name === sym.slice(dot + 1))) return parent.file;
    }
    return undefined;
  }

  answer(req: ServerReflectionRequest): ServerReflectionResponse {
    const base = { validHost: req.host, originalRequest: req };
    const notFound = (msg: string): ServerReflectionResponse => ({
      ...base,
      messageResponse: { $case: 'errorResponse', value: { errorCode: GrpcStatus.NOT_FOUND, errorMessage: msg } },
    });
    const files = (f: DescFile): ServerReflectionResponse => ({
      ...base,
      messageResponse: { $case: 'fileDescriptorResponse', value: { fileDescriptorProto: this.fileWithDeps(f) } },
    });
    const r = req.messageRequest;
    switch (r?.$case) {
      case 'listServices':
        return {
          ...base,
          messageResponse: {
            $case: 'listServicesResponse',
            value: { service: this.services.map((name) => ({ name })) },
          },
        };
      case 'fileByFilename': {
        const f = this.fileByName(r.value);
        return f ? files(f) : notFound(`file "${r.value}" not found`);
      }
      case 'fileContainingSymbol': {
        const f = this.fileContainingSymbol(r.value);
        return f ? files(f) : notFound(`symbol "${r.value}" not found`);
      }
      case 'fileContainingExtension':
        return notFound(`extension ${r.value.extensionNumber} of "${r.value.containingType}" not found`);
      case 'allExtensionNumbersOfType': {
        const t = this.registry.getMessage(r.value);
        if (!t) return notFound(`type "${r.value}" not found`);
        return {
          ...base,
          messageResponse: {
            $case: 'allExtensionNumbersResponse',
            value: { baseTypeName: r.value, extensionNumber: [] },
          },
        };
      }
      case undefined:
        return {
          ...base,
          messageResponse: {
            $case: 'errorResponse',
            value: { errorCode: GrpcStatus.INVALID_ARGUMENT, errorMessage: 'empty reflection request' },
          },
        };
      default: {
        const never: never = r;
        throw new Error(`unhandled reflection request ${JSON.stringify(never)}`);
      }
    }
  }
}

const V1ALPHA_NAME = 'grpc.reflection.v1alpha.ServerReflection';
const V1_NAME = 'grpc.reflection.v1.ServerReflection';

/** The same wire messages under the v1alpha service path. */
const ServerReflectionV1AlphaService: ServiceDefinition = {
  serverReflectionInfo: {
    ...ServerReflectionService.serverReflectionInfo,
    path: `/${V1ALPHA_NAME}/ServerReflectionInfo`,
  },
};

export const REFLECTION_SERVICE_NAMES = [V1_NAME, V1ALPHA_NAME] as const;

/** Registers both reflection versions on `server`. */
export function addReflection(server: Server, index: ReflectionIndex): void {
  const handler = (call: ServerDuplexStream<ServerReflectionRequest, ServerReflectionResponse>): void => {
    call.on('data', (req: ServerReflectionRequest) => {
      call.write(index.answer(req));
    });
    call.on('end', () => call.end());
    call.on('error', () => undefined);
  };
  const impl: UntypedServiceImplementation = { serverReflectionInfo: handler };
  server.addService(ServerReflectionService, impl);
  server.addService(ServerReflectionV1AlphaService, impl);
}
