/**
 * vopctl output: aligned tables for people, `-o json` / `-o yaml` (proto JSON field
 * names, enums as names) and `-o name` for scripts.
 */
import YAML from 'yaml';

import {
  Agent,
  AgentPhase,
  ConditionStatus,
  Link,
  LinkPhase,
  LinkPolicy,
  NodeRole,
  Role,
  type Condition,
} from '../../../lib/proto/types';

export type OutputFormat = 'table' | 'wide' | 'json' | 'yaml' | 'name';

export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join('   ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export function age(d: Date | undefined, now = Date.now()): string {
  if (!d) return '-';
  const s = Math.max(0, Math.floor((now - d.getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function enumName(e: Record<number, string>, v: number, prefix: string): string {
  return (e[v] ?? String(v)).replace(prefix, '');
}

function condStatus(cs: readonly Condition[], type: string): string {
  const c = cs.find((x) => x.type === type);
  return c
    ? enumName(ConditionStatus, c.status, 'CONDITION_STATUS_').replace(
        /^(\w)(\w*)$/,
        (_m, a: string, b: string) => a + b.toLowerCase(),
      )
    : '-';
}

export function linkRows(links: readonly Link[], wide: boolean): string[][] {
  const head = ['NAME', 'PHASE', 'READY', 'SYNCED', 'ENDPOINTS', 'DEVICES', 'GEN', 'AGE'];
  if (wide) head.push('MANAGED-BY', 'REASON');
  const rows = [head];
  for (const l of links) {
    const cs = l.status?.conditions ?? [];
    const eps = (l.spec?.endpoints ?? [])
      .map((e) => `${e.agent}(${enumName(Role, e.role, 'ROLE_').toLowerCase()})`)
      .join(',');
    const devs = (l.spec?.devices ?? []).map((d) => `${d.name}:${d.kind?.$case ?? '?'}`).join(',');
    const row = [
      l.meta?.name ?? '',
      enumName(LinkPhase, l.status?.phase ?? 0, 'LINK_PHASE_'),
      condStatus(cs, 'Ready'),
      condStatus(cs, 'Synced'),
      eps,
      devs,
      String(l.meta?.generation ?? 0n),
      age(l.meta?.createTime),
    ];
    if (wide) row.push(l.meta?.managedBy || '-', cs.find((c) => c.type === 'Ready')?.reason ?? '-');
    rows.push(row);
  }
  return rows;
}

export function agentRows(agents: readonly Agent[], wide: boolean): string[][] {
  const head = ['NAME', 'PHASE', 'ROLE', 'RACK', 'SLOT', 'HOST', 'SCHEDULABLE', 'LAST-HEARTBEAT'];
  if (wide) head.push('GRPC', 'METRICS', 'VERSION');
  const rows = [head];
  for (const a of agents) {
    const id = a.status?.identity;
    const row = [
      a.meta?.name ?? '',
      enumName(AgentPhase, a.status?.phase ?? 0, 'AGENT_PHASE_'),
      enumName(NodeRole, id?.role ?? 0, 'NODE_ROLE_').toLowerCase(),
      id?.rack || '-',
      String(id?.slot ?? 0),
      id?.hostNode || '-',
      a.spec?.unschedulable ? 'no' : 'yes',
      age(a.status?.lastHeartbeatTime),
    ];
    if (wide) row.push(a.status?.addresses?.grpc ?? '-', a.status?.addresses?.metrics ?? '-', a.status?.version ?? '-');
    rows.push(row);
  }
  return rows;
}

export function policyRows(policies: readonly LinkPolicy[]): string[][] {
  const rows = [['NAME', 'PAIRING', 'PAIRS', 'READY', 'DEVICES', 'GEN', 'AGE']];
  for (const p of policies) {
    const ready = p.status?.conditions.find((c) => c.type === 'Ready')?.message.split(' ')[0] ?? '-';
    const c = p.spec?.pairing?.$case;
    rows.push([
      p.meta?.name ?? '',
      c === 'peer' ? 'peer' : c === 'agentPairs' ? 'agent-pairs' : 'host-node',
      String(p.status?.matchedPairs ?? 0),
      ready,
      (p.spec?.template?.devices ?? []).map((d) => `${d.name}:${d.kind?.$case ?? '?'}`).join(','),
      String(p.meta?.generation ?? 0n),
      age(p.meta?.createTime),
    ]);
  }
  return rows;
}

export type Kind = 'links' | 'agents' | 'policies';

export function toJson(kind: Kind, obj: Link | Agent | LinkPolicy): unknown {
  if (kind === 'links') return Link.toJSON(obj as Link);
  if (kind === 'agents') return Agent.toJSON(obj as Agent);
  return LinkPolicy.toJSON(obj as LinkPolicy);
}

export function render(kind: Kind, items: readonly (Link | Agent | LinkPolicy)[], format: OutputFormat): string {
  switch (format) {
    case 'json':
      return (
        JSON.stringify(
          items.map((i) => toJson(kind, i)),
          null,
          2,
        ) + '\n'
      );
    case 'yaml':
      return YAML.stringify(items.map((i) => toJson(kind, i)));
    case 'name':
      return items.map((i) => `${kind.replace(/s$/, '').replace(/ie$/, 'y')}/${i.meta?.name ?? ''}\n`).join('');
    case 'table':
    case 'wide':
      if (items.length === 0) return '';
      if (kind === 'links') return table(linkRows(items as Link[], format === 'wide'));
      if (kind === 'agents') return table(agentRows(items as Agent[], format === 'wide'));
      return table(policyRows(items as LinkPolicy[]));
    default:
      throw new Error('unknown format');
  }
}
