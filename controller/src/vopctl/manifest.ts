/**
 * Reads vopctl manifests: YAML (or JSON) files with one or many documents, each
 *
 *   kind: Link | LinkPolicy
 *   meta: { name: ..., labels: {...} }
 *   spec: { ... }            # proto JSON field names, camelCase or snake_case
 *
 * Parsing is strict: the protobuf JSON parser (from the compiled descriptor set)
 * rejects unknown fields and bad enum values with a message naming them. Every
 * document is parsed before anything is sent, so a bad file changes nothing.
 */
import { readFileSync } from 'node:fs';

import { fromJson, toBinary, type JsonValue } from '@bufbuild/protobuf';
import YAML from 'yaml';

import { Link, LinkPolicy } from '../../../lib/proto/types';
import { loadDescriptorRegistry } from '../../../lib/src/reflection';
import { CliError, EXIT } from './exit-codes';

export type Manifest =
  | { readonly kind: 'Link'; readonly link: Link; readonly where: string }
  | { readonly kind: 'LinkPolicy'; readonly policy: LinkPolicy; readonly where: string };

const KINDS = { Link: 'vop.types.v1.Link', LinkPolicy: 'vop.types.v1.LinkPolicy' } as const;

export function readManifestText(file: string): string {
  try {
    return file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
  } catch (err) {
    throw new CliError(`cannot read ${file}: ${(err as Error).message}`, EXIT.INVALID);
  }
}

export function parseManifests(text: string, file: string): Manifest[] {
  const docs = YAML.parseAllDocuments(text, { prettyErrors: true });
  const out: Manifest[] = [];
  const registry = loadDescriptorRegistry();
  docs.forEach((doc, i) => {
    const where = docs.length > 1 ? `${file} (document ${i + 1})` : file;
    if (doc.errors.length > 0)
      throw new CliError(`${where}: invalid YAML: ${doc.errors[0]?.message ?? 'parse error'}`, EXIT.INVALID);
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value))
      throw new CliError(`${where}: a document must be a mapping with kind, meta and spec`, EXIT.INVALID);
    const { kind, apiVersion, ...rest } = value as Record<string, unknown>;
    if (apiVersion !== undefined && apiVersion !== 'vop.dev/v1')
      throw new CliError(`${where}: apiVersion must be vop.dev/v1 (got ${JSON.stringify(apiVersion)})`, EXIT.INVALID);
    if (kind !== 'Link' && kind !== 'LinkPolicy')
      throw new CliError(`${where}: kind must be Link or LinkPolicy (got ${JSON.stringify(kind)})`, EXIT.INVALID);
    const desc = registry.getMessage(KINDS[kind]);
    if (!desc) throw new CliError(`descriptor of ${KINDS[kind]} missing from proto/vop.binpb`, EXIT.ERROR);
    let bytes: Uint8Array;
    try {
      bytes = toBinary(desc, fromJson(desc, rest as JsonValue, { ignoreUnknownFields: false }));
    } catch (err) {
      throw new CliError(`${where}: ${kind}: ${(err as Error).message}`, EXIT.INVALID);
    }
    if (kind === 'Link') out.push({ kind, link: Link.decode(bytes), where });
    else out.push({ kind, policy: LinkPolicy.decode(bytes), where });
  });
  if (out.length === 0) throw new CliError(`${file}: no objects found`, EXIT.INVALID);
  return out;
}
