/**
 * Where the controller's state lives in etcd, all under one configurable prefix P:
 *
 *   P election/NAME/LEASE-HEX   one key per candidate, bound to its lease (leader election)
 *   P meta/cluster-id           the store's cluster id (created with the store)
 *   P meta/generation           rewritten by every commit that changes desired state; its mod_revision is the generation
 *   P objects/KIND/NAME         one key per object (KIND: link, policy, agent); mod_revision = resourceVersion
 *
 * "meta/" sorts before "objects/", so one watch of [P meta/, end of P objects/) sees
 * identity changes and objects in one ordered stream, and not the election's keys.
 */
import { prefixEnd } from './etcd-client';
import { OBJECT_KINDS, type ObjectKind } from './store';

export type ParsedKey =
  | { readonly type: 'object'; readonly kind: ObjectKind; readonly name: string }
  | { readonly type: 'cluster-id' }
  | { readonly type: 'generation' }
  | { readonly type: 'other' };

export class EtcdKeys {
  readonly clusterId: Buffer;
  readonly generation: Buffer;
  readonly objectsStart: Buffer;
  readonly objectsEnd: Buffer;
  readonly watchStart: Buffer;
  readonly watchEnd: Buffer;
  private readonly objectsPrefix: string;
  private readonly metaPrefix: string;

  constructor(readonly prefix: string) {
    this.metaPrefix = `${prefix}meta/`;
    this.objectsPrefix = `${prefix}objects/`;
    this.clusterId = Buffer.from(`${this.metaPrefix}cluster-id`);
    this.generation = Buffer.from(`${this.metaPrefix}generation`);
    this.objectsStart = Buffer.from(this.objectsPrefix);
    this.objectsEnd = prefixEnd(this.objectsStart);
    this.watchStart = Buffer.from(this.metaPrefix);
    this.watchEnd = this.objectsEnd;
  }

  object(kind: ObjectKind, name: string): Buffer {
    return Buffer.from(`${this.objectsPrefix}${kind}/${name}`);
  }

  /** Prefix of the candidates' keys of one election. */
  election(name: string): Buffer {
    return Buffer.from(`${this.prefix}election/${name}/`);
  }

  parse(key: Buffer): ParsedKey {
    const k = key.toString('utf8');
    if (k.startsWith(this.objectsPrefix)) {
      const rest = k.slice(this.objectsPrefix.length);
      const slash = rest.indexOf('/');
      const kind = rest.slice(0, slash) as ObjectKind;
      if (slash > 0 && OBJECT_KINDS.includes(kind)) return { type: 'object', kind, name: rest.slice(slash + 1) };
      return { type: 'other' };
    }
    if (key.equals(this.clusterId)) return { type: 'cluster-id' };
    if (key.equals(this.generation)) return { type: 'generation' };
    return { type: 'other' };
  }
}
