/**
 * The API schema vopctl knows without asking a server: proto/vop.binpb, the FileDescriptorSet `buf build`
 * writes from proto/ (the same file every vop server answers reflection from). It backs `vopctl list`,
 * `describe SYMBOL` and `call`, so they work on machines without grpcurl or .proto files.
 *
 * Two readers of the one file, each for what it does well:
 *   - @grpc/proto-loader (loadFileDescriptorSetFromBuffer) turns it into gRPC method definitions: the
 *     services, their methods, the HTTP/2 path and the streaming kind of each. `list` and the method a
 *     `call` dials come from there.
 *   - @bufbuild/protobuf's registry gives the message descriptors: the proto3 JSON mapping of requests
 *     and responses (strict: an unknown field or a wrong type is an error naming it; protobufjs, behind
 *     proto-loader's own serializers, drops unknown and snake_case fields silently) and `describe`.
 */
import { readFileSync } from 'node:fs';

import {
  createFileRegistry,
  fromBinary,
  ScalarType,
  type DescEnum,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescMethod,
  type DescOneof,
  type DescService,
  type FileRegistry,
} from '@bufbuild/protobuf';
import { FileDescriptorSetSchema } from '@bufbuild/protobuf/wkt';
import { loadFileDescriptorSetFromBuffer, type MethodDefinition, type PackageDefinition } from '@grpc/proto-loader';

import { DESCRIPTOR_SET_PATH } from '../../../lib/src/reflection';
import { CliError, EXIT } from './exit-codes';

/** One method as `call` needs it. */
export interface MethodRef {
  /** "vop.controller.v1.ControllerService" */
  readonly service: string;
  /** "ListLinks" */
  readonly name: string;
  /** "/vop.controller.v1.ControllerService/ListLinks" */
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly input: DescMessage;
  readonly output: DescMessage;
}

type ServiceDefinition = Record<string, MethodDefinition<object, object>>;

function isService(def: PackageDefinition[string]): def is ServiceDefinition {
  return !('format' in def);
}

export class ApiSchema {
  private readonly services = new Map<string, ServiceDefinition>();

  private constructor(
    packages: PackageDefinition,
    readonly registry: FileRegistry,
  ) {
    for (const [name, def] of Object.entries(packages)) if (isService(def)) this.services.set(name, def);
  }

  /** Loads the descriptor set (default: the installed proto/vop.binpb). */
  static load(file: string = DESCRIPTOR_SET_PATH): ApiSchema {
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new CliError(`cannot read the API schema ${file}: ${(err as Error).message}`, EXIT.ERROR);
    }
    return new ApiSchema(
      loadFileDescriptorSetFromBuffer(bytes),
      createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes)),
    );
  }

  /** Fully-qualified service names, sorted. */
  serviceNames(): string[] {
    return [...this.services.keys()].sort();
  }

  /** "Service" or "pkg.Service" -> the fully-qualified name; NOT_FOUND names the choices. */
  resolveService(text: string): string {
    if (this.services.has(text)) return text;
    const matches = this.serviceNames().filter((s) => s.endsWith(`.${text}`));
    if (matches.length === 1) return matches[0] as string;
    throw new CliError(
      matches.length > 1
        ? `service "${text}" is ambiguous: ${matches.join(', ')}`
        : `no service "${text}" in the API schema; services: ${this.serviceNames().join(', ')}`,
      EXIT.NOT_FOUND,
    );
  }

  /** Method names of a service (as declared), sorted. */
  methodNames(service: string): string[] {
    return Object.keys(this.services.get(this.resolveService(service)) ?? {}).sort();
  }

  /** "Service/Method" or "Service.Method" (the service fully qualified or unique) -> the method. */
  resolveMethod(text: string): MethodRef {
    const cut = text.includes('/') ? text.lastIndexOf('/') : text.lastIndexOf('.');
    if (cut <= 0 || cut === text.length - 1)
      throw new CliError(
        `"${text}" is not SERVICE/METHOD (e.g. vop.controller.v1.ControllerService/ListLinks)`,
        EXIT.USAGE,
      );
    const service = this.resolveService(text.slice(0, cut).replace(/^\//, ''));
    const name = text.slice(cut + 1);
    const def = this.services.get(service)?.[name];
    const desc = this.registry.getService(service)?.methods.find((m) => m.name === name);
    if (!def || !desc)
      throw new CliError(
        `no method "${name}" in ${service}; methods: ${this.methodNames(service).join(', ')}`,
        EXIT.NOT_FOUND,
      );
    return {
      service,
      name,
      path: def.path,
      requestStream: def.requestStream,
      responseStream: def.responseStream,
      input: desc.input,
      output: desc.output,
    };
  }

  /**
   * A fully-qualified name, or a unique suffix of one ("ControllerService", "types.v1.LinkSpec"), as
   * the registry knows it; members (methods, fields) keep the name they were asked by.
   */
  private qualify(name: string): string {
    if (this.registry.get(name)) return name;
    const matches: string[] = [];
    for (const t of this.registry)
      if (t.kind !== 'extension' && t.typeName.endsWith(`.${name}`)) matches.push(t.typeName);
    if (matches.length > 1) throw new CliError(`"${name}" is ambiguous: ${matches.sort().join(', ')}`, EXIT.NOT_FOUND);
    return matches[0] ?? name;
  }

  /** A service, method, message, enum or field (fully qualified or a unique suffix), as proto source. */
  describe(symbol: string): string {
    let name = symbol.replace(/^\./, '').replace('/', '.');
    if (!this.registry.get(name)) {
      const dot = name.lastIndexOf('.');
      const whole = this.qualify(name);
      name = whole !== name || dot <= 0 ? whole : `${this.qualify(name.slice(0, dot))}.${name.slice(dot + 1)}`;
    }
    const found = this.registry.get(name);
    if (found?.kind === 'service') return `${name} is a service:\n${serviceText(found)}`;
    if (found?.kind === 'message') return `${name} is a message:\n${messageText(found, '')}`;
    if (found?.kind === 'enum') return `${name} is an enum:\n${enumText(found, '')}`;
    const dot = name.lastIndexOf('.');
    const parent = dot > 0 ? this.registry.get(name.slice(0, dot)) : undefined;
    const member = name.slice(dot + 1);
    if (parent?.kind === 'service') {
      const m = parent.methods.find((x) => x.name === member);
      if (m) return `${name} is a method:\n${comments(m.parent.file, methodPath(m), '')}${methodText(m)}\n`;
    }
    if (parent?.kind === 'message') {
      const f = parent.fields.find((x) => x.name === member || x.jsonName === member);
      if (f) return `${name} is a field:\n${comments(f.parent.file, fieldPath(f), '')}${fieldText(f)}\n`;
    }
    throw new CliError(
      `no symbol "${symbol}" in the API schema (a service, method, message, enum or field; ` +
        `vopctl list shows the services)`,
      EXIT.NOT_FOUND,
    );
  }
}

// ---- proto source text -------------------------------------------------------------------------

/** Source-info paths (descriptor.proto field numbers) of the elements describe prints comments for. */
function messagePath(m: DescMessage): number[] {
  if (m.parent) return [...messagePath(m.parent), 3, m.parent.nestedMessages.indexOf(m)];
  return [4, m.file.messages.indexOf(m)];
}
function enumPath(e: DescEnum): number[] {
  if (e.parent) return [...messagePath(e.parent), 4, e.parent.nestedEnums.indexOf(e)];
  return [5, e.file.enums.indexOf(e)];
}
function fieldPath(f: DescField): number[] {
  return [...messagePath(f.parent), 2, f.parent.proto.field.indexOf(f.proto)];
}
function methodPath(m: DescMethod): number[] {
  return [6, m.parent.file.services.indexOf(m.parent), 2, m.parent.methods.indexOf(m)];
}

/** The leading comment of the element at `path`, as // lines with `indent`. */
function comments(file: DescFile, path: readonly number[], indent: string): string {
  const loc = file.proto.sourceCodeInfo?.location.find(
    (l) => l.path.length === path.length && l.path.every((v, i) => v === path[i]),
  );
  const text = loc?.leadingComments?.trim() ?? '';
  if (text === '') return '';
  return `${text
    .split('\n')
    .map((l) => `${indent}//${l.trimEnd() === '' ? '' : ` ${l.trim()}`}`)
    .join('\n')}\n`;
}

function scalarName(s: ScalarType): string {
  return (ScalarType[s] ?? String(s)).toLowerCase();
}

function typeText(f: DescField): string {
  switch (f.fieldKind) {
    case 'scalar':
      return scalarName(f.scalar);
    case 'enum':
      return `.${f.enum.typeName}`;
    case 'message':
      return `.${f.message.typeName}`;
    case 'list':
      return `repeated ${f.listKind === 'scalar' ? scalarName(f.scalar) : f.listKind === 'enum' ? `.${f.enum.typeName}` : `.${f.message.typeName}`}`;
    case 'map':
      return `map<${scalarName(f.mapKey)}, ${f.mapKind === 'scalar' ? scalarName(f.scalar) : f.mapKind === 'enum' ? `.${f.enum.typeName}` : `.${f.message.typeName}`}>`;
  }
}

function fieldText(f: DescField): string {
  return `${f.proto.proto3Optional ? 'optional ' : ''}${typeText(f)} ${f.name} = ${f.number};`;
}

function methodText(m: DescMethod): string {
  const req = m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming' ? 'stream ' : '';
  const res = m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming' ? 'stream ' : '';
  return `rpc ${m.name} ( ${req}.${m.input.typeName} ) returns ( ${res}.${m.output.typeName} );`;
}

function serviceText(s: DescService): string {
  const body = s.methods.map((m) => `${comments(s.file, methodPath(m), '  ')}  ${methodText(m)}\n`).join('');
  return `${comments(s.file, [6, s.file.services.indexOf(s)], '')}service ${s.name} {\n${body}}\n`;
}

function enumText(e: DescEnum, indent: string): string {
  const body = e.values
    .map((v, i) => `${comments(e.file, [...enumPath(e), 2, i], `${indent}  `)}${indent}  ${v.name} = ${v.number};\n`)
    .join('');
  return `${comments(e.file, enumPath(e), indent)}${indent}enum ${e.name} {\n${body}${indent}}\n`;
}

function messageText(m: DescMessage, indent: string): string {
  const inner = `${indent}  `;
  const field = (f: DescField, ind: string): string => `${comments(m.file, fieldPath(f), ind)}${ind}${fieldText(f)}\n`;
  const oneof = (o: DescOneof): string =>
    `${inner}oneof ${o.name} {\n${o.fields.map((f) => field(f, `${inner}  `)).join('')}${inner}}\n`;
  const body =
    m.members.map((x) => (x.kind === 'oneof' ? oneof(x) : field(x, inner))).join('') +
    m.nestedEnums.map((e) => enumText(e, inner)).join('') +
    m.nestedMessages.map((n) => messageText(n, inner)).join('');
  return `${comments(m.file, messagePath(m), indent)}${indent}message ${m.name} {\n${body}${indent}}\n`;
}
