/** Reads docs/metrics.md (the metric catalogue) and extracts metric names from PromQL. */
import { readFileSync } from 'node:fs';

import { repoPath } from '../../lib/src/paths';

export interface CatalogueEntry {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary';
  readonly labels: readonly string[];
  readonly section: 'Agent' | 'Controller';
}

/** Parses the "| `name` | type | unit | labels | meaning |" rows under "## Agent" and "## Controller". */
export function readCatalogue(): CatalogueEntry[] {
  const text = readFileSync(repoPath('docs', 'metrics.md'), 'utf8');
  const out: CatalogueEntry[] = [];
  let section: CatalogueEntry['section'] | null = null;
  for (const line of text.split('\n')) {
    const h = /^## (Agent|Controller)\b/.exec(line);
    if (h) {
      section = h[1] as CatalogueEntry['section'];
      continue;
    }
    if (/^## /.test(line)) section = null;
    const m = /^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(counter|gauge|histogram|summary)\s*\|[^|]*\|([^|]*)\|/.exec(
      line,
    );
    if (m && section) {
      const labels = [...(m[3] ?? '').matchAll(/`([a-zA-Z_][a-zA-Z0-9_]*)`/g)].map((x) => x[1] as string);
      out.push({ name: m[1] as string, type: m[2] as CatalogueEntry['type'], labels, section });
    }
  }
  return out;
}

/** Series names a catalogue entry produces in the exposition format. */
export function seriesNames(e: CatalogueEntry): string[] {
  return e.type === 'histogram' ? [`${e.name}_bucket`, `${e.name}_sum`, `${e.name}_count`] : [e.name];
}

const PROMQL_KEYWORDS = new Set([
  'by',
  'without',
  'and',
  'or',
  'unless',
  'bool',
  'offset',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'inf',
  'nan',
]);

/** Metric names referenced by a PromQL expression (functions, keywords, labels and literals removed). */
export function metricNamesIn(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""');
  s = s.replace(/\{[^}]*\}/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  s = s.replace(/\[[^\]]*\]/g, ' ');
  const names: string[] = [];
  for (const m of s.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const tok = m[0];
    const rest = s.slice((m.index ?? 0) + tok.length);
    if (/^\s*\(/.test(rest)) continue; // function call
    if (PROMQL_KEYWORDS.has(tok.toLowerCase())) continue;
    if (/^\d/.test(tok)) continue;
    const before = s.slice(0, m.index ?? 0);
    if (/\d$/.test(before)) continue; // duration unit like 5m
    names.push(tok);
  }
  return [...new Set(names)];
}
