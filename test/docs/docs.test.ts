/**
 * The docs name only what exists. Every Markdown file of the repository (README.md, docs/,
 * deploy/, native/) is read and each name it quotes is looked up where it must live:
 * - a repository path (`test/...`, `native/...`, a link to another page) exists, and a link's
 *   #anchor is a heading of the page it points to;
 * - a metric name (`vop_*`, `workqueue_*`, `grpc_server_*`) is in the catalogue, docs/metrics.md
 *   (which test/observability/prometheus.test.ts checks against the live servers);
 * - a quoted identifier that reads like a reason, a condition, an event or an error code
 *   (`PeerNotResponding`, `LINK_NOT_FOR_THIS_AGENT`) occurs in the code, the proto or the
 *   deploy files, or is a standard name (gRPC status codes, errno and signal names);
 * - a quoted log line ("lines `...`") is a message the agent, controller or lib code logs.
 * Cheap: text only, no process started.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';

import { status } from '@grpc/grpc-js';

import { repoPath } from '../../lib/src/paths';
import { readCatalogue, seriesNames } from '../helpers/catalogue';

const ROOT = repoPath();
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', 'build', 'out', 'gen']);

function walk(dir: string, keep: (f: string) => boolean, out: string[] = []): string[] {
  for (const e of readdirSync(dir)) {
    if (SKIP_DIRS.has(e)) continue;
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) walk(p, keep, out);
    else if (keep(p)) out.push(p);
  }
  return out;
}

/** Every Markdown page of the project (not the test fixtures'). */
const PAGES = [
  repoPath('README.md'),
  ...walk(repoPath('docs'), (f) => f.endsWith('.md')),
  ...walk(repoPath('deploy'), (f) => f.endsWith('.md')),
  ...walk(repoPath('native'), (f) => f.endsWith('.md')),
];

const rel = (p: string): string => path.relative(ROOT, p);

/** Inline code spans of a page, with the line they are on (fenced code blocks included). */
function codeSpans(text: string): { code: string; line: number }[] {
  const out: { code: string; line: number }[] = [];
  text.split('\n').forEach((l, i) => {
    for (const m of l.matchAll(/`([^`]+)`/g)) out.push({ code: m[1] as string, line: i + 1 });
  });
  return out;
}

/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
function anchors(text: string): Set<string> {
  const set = new Set<string>();
  for (const m of text.matchAll(/^#+\s+(.+)$/gm))
    set.add(
      (m[1] as string)
        .trim()
        .toLowerCase()
        .replace(/[^\w\- ]/g, '')
        .replace(/ /g, '-'),
    );
  return set;
}

/** Linux and NBD names the pages quote about the platform (or what vop does not do), not about vop's code. */
const PLATFORM = new Set([
  'MAP_POPULATE',
  'PROT_NONE',
  'SO_PEERCRED',
  'VFIO_NOIOMMU',
  'VFIO_DEVICE_SET_IRQS',
  'NBD_SET_SOCK',
  'BLOCK_STATUS',
]);

const TOP = /^(agent|controller|lib|native|test|deploy|docs|proto|\.ci)\//;
/** Paths in other projects' trees that a page names as such. */
const ELSEWHERE = new Set(['docs/specs/ivshmem-spec.txt' /* QEMU's tree */]);
/** Build outputs and placeholders are not files in the repository. */
const NOT_A_FILE = /[*<>{}$]|\.\.\.|^native\/(out|build)\/|^native\/devices\/out\/|^lib\/gen\/|^dist\//;

describe('docs name only what exists', () => {
  it('every repository path a page quotes exists, and every link and #anchor resolves', () => {
    const missing: string[] = [];
    let checked = 0;
    for (const page of PAGES) {
      const text = readFileSync(page, 'utf8');
      for (const { code, line } of codeSpans(text)) {
        for (const tok of code.split(/[\s,;()]+/)) {
          const p = tok.replace(/[.:]+$/, '').replace(/:\d+$/, '');
          if (!TOP.test(p) || NOT_A_FILE.test(p) || ELSEWHERE.has(p)) continue;
          checked++;
          if (!existsSync(repoPath(p))) missing.push(`${rel(page)}:${line}: \`${p}\``);
        }
      }
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1] as string;
        if (/^[a-z]+:/.test(target)) continue; // http(s), mailto
        const [file, anchor] = target.split('#') as [string, string | undefined];
        const abs = file === '' ? page : path.resolve(path.dirname(page), file);
        if (!existsSync(abs)) {
          missing.push(`${rel(page)}: link to ${target}`);
          continue;
        }
        if (anchor && abs.endsWith('.md') && !anchors(readFileSync(abs, 'utf8')).has(anchor))
          missing.push(`${rel(page)}: link to ${target}: no such heading in ${rel(abs)}`);
      }
    }
    assert.deepEqual(missing, []);
    assert.ok(checked > 100, `only ${checked} paths found: is the pattern still right?`);
  });

  it('every metric name a page quotes is in the catalogue (or, for vop_*, a C identifier of native/)', () => {
    const known = new Set(readCatalogue().flatMap((e) => [e.name, ...seriesNames(e)]));
    // vop_* is also the prefix of the C API: those names must be identifiers of native/.
    for (const f of walk(repoPath('native'), (x) => /\.[ch]$/.test(x)))
      for (const m of readFileSync(f, 'utf8').matchAll(/\bvop_[a-z0-9_]+/g)) known.add(m[0]);
    const unknown: string[] = [];
    for (const page of PAGES) {
      if (page === repoPath('docs', 'metrics.md')) continue;
      const text = readFileSync(page, 'utf8');
      for (const { code, line } of codeSpans(text))
        for (const m of code.matchAll(/\b(?:vop|workqueue|grpc_server)_[a-z0-9_]+/g))
          if (!known.has(m[0]) && !/_$/.test(m[0])) unknown.push(`${rel(page)}:${line}: ${m[0]}`);
    }
    assert.deepEqual(unknown, []);
  });

  it('every reason, condition, event and error code a page quotes occurs in the code', () => {
    // Identifiers of the product: its code, the contract and what it deploys.
    const sources = [
      ...['agent/src', 'controller/src', 'lib/src', 'proto', 'native', 'deploy', '.ci'].flatMap((d) =>
        walk(repoPath(d), (f) => /\.(ts|proto|c|h|ya?ml|json|service|sh|supp)$/.test(f) || f.endsWith('Makefile')),
      ),
      repoPath('package.json'),
    ];
    // The test tools and helpers the guide pages (guest-harness.md, devices.md) document.
    const testTools = [
      ...walk(repoPath('test', 'helpers'), (f) => f.endsWith('.ts')),
      ...walk(repoPath('test'), (f) => /\/tools\/[^/]+\.c$|\/progs\/[^/]+\.c$|test\/native\/[^/]+\.h$/.test(f)),
    ];
    const words = new Set<string>();
    for (const f of [...sources, ...testTools]) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(/[A-Za-z_][A-Za-z0-9_]*/g)) {
        words.add(m[0]);
        // A page may drop a constant's prefix: `QUEUE_BROKEN` for VOP_EV_QUEUE_BROKEN.
        if (/^[A-Z0-9_]+$/.test(m[0]))
          for (let i = m[0].indexOf('_'); i > 0; i = m[0].indexOf('_', i + 1)) words.add(m[0].slice(i + 1));
      }
      // Environment variables are made from flags: --state-dir is VOP_AGENT_STATE_DIR / VOP_CONTROLLER_STATE_DIR.
      for (const m of text.matchAll(/flag: '([a-z][a-z0-9-]*)'/g))
        for (const prefix of ['VOP_AGENT', 'VOP_CONTROLLER'])
          words.add(`${prefix}_${(m[1] as string).toUpperCase().replace(/-/g, '_')}`);
    }
    // Standard names the docs may quote: gRPC status codes, errno and signal names.
    for (const k of Object.keys(status)) words.add(k);
    for (const k of Object.keys(os.constants.errno)) words.add(k);
    for (const k of Object.keys(os.constants.signals)) words.add(k);
    const upperCamel = /^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+$/;
    const upperSnake = /^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$/;
    const unknown: string[] = [];
    for (const page of PAGES) {
      const text = readFileSync(page, 'utf8');
      for (const { code, line } of codeSpans(text)) {
        // The quoted span itself, or each word of "Condition=Reason" / "reason=X" forms.
        for (const tok of code.split(/[\s=,()/:.]+/)) {
          if (!upperCamel.test(tok) && !upperSnake.test(tok)) continue;
          if (/^(VOP|VOPCTL)_[A-Z_]+_$/.test(tok) || tok.endsWith('_')) continue; // a prefix: VOP_AGENT_*
          // The virtio spec's VIRTIO_X is VOP_X in native/.
          if (words.has(tok) || words.has(tok.replace(/^VIRTIO_/, 'VOP_'))) continue;
          if (!PLATFORM.has(tok)) unknown.push(`${rel(page)}:${line}: ${tok}`);
        }
      }
    }
    assert.deepEqual([...new Set(unknown)], []);
  });

  it('every log line a page quotes is a message the code logs', () => {
    // String and template literals of the TypeScript sources, as patterns (${...} matches anything).
    const literals: RegExp[] = [];
    for (const f of ['agent/src', 'controller/src', 'lib/src'].flatMap((d) =>
      walk(repoPath(d), (x) => x.endsWith('.ts')),
    ))
      for (const m of readFileSync(f, 'utf8').matchAll(/'((?:[^'\\\n]|\\.)*)'|`((?:[^`\\]|\\.)*)`/g)) {
        const s = (m[1] ?? m[2] ?? '').replace(/(\\n)+$/, '');
        const fixed = s.split(/\$\{[^}]*\}/);
        if (fixed.join('').length < 4) continue; // too little fixed text to identify a message
        const parts = fixed.map((x) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
        literals.push(new RegExp(`^${parts.join('.+')}$`));
      }
    const unknown: string[] = [];
    let checked = 0;
    for (const page of PAGES) {
      const text = readFileSync(page, 'utf8').replace(/\n\s*/g, ' ');
      for (const m of text.matchAll(/\b(?:lines?|logs)\s+`([^`]+)`/g)) {
        // Placeholders in the quote: upper-case words (REASON, MESSAGE) and "...".
        const quoted = (m[1] as string).replace(/\.\.\./g, 'X').replace(/\b[A-Z]{4,}\b/g, 'X');
        checked++;
        const ok = literals.some((re) => re.test(quoted) || re.test(m[1] as string));
        if (!ok) unknown.push(`${rel(page)}: log line \`${m[1]}\``);
      }
    }
    assert.deepEqual(unknown, []);
    assert.ok(checked >= 5, `only ${checked} quoted log lines found: is the pattern still right?`);
  });
});
