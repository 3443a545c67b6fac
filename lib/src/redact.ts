/**
 * Write-only fields: what Get, List, Watch and status never return. A stream link's secret
 * (StreamTransport.secret) is accepted by Apply, stored with mode 0600 and used by the data plane;
 * every copy of a link that leaves the agent or the controller goes through redactSpec.
 */
import type { LinkPolicy, LinkSpec } from '../proto/types';

/** The spec with write-only fields emptied (the same object when there is nothing to hide). */
export function redactSpec(spec: LinkSpec | undefined): LinkSpec | undefined {
  const k = spec?.transport?.kind;
  if (!spec || k?.$case !== 'stream' || k.value.secret === '') return spec;
  return { ...spec, transport: { kind: { $case: 'stream', value: { ...k.value, secret: '' } } } };
}

/**
 * The policy with its template's stream secret emptied. validatePolicy refuses a secret in a
 * template (the controller generates one per link); a policy stored before that rule may hold one.
 */
export function redactPolicy(p: LinkPolicy): LinkPolicy {
  const tpl = p.spec?.template;
  const k = tpl?.transport?.kind;
  if (!p.spec || !tpl || k?.$case !== 'stream' || k.value.secret === '') return p;
  return {
    ...p,
    spec: {
      ...p.spec,
      template: { ...tpl, transport: { kind: { $case: 'stream', value: { ...k.value, secret: '' } } } },
    },
  };
}
