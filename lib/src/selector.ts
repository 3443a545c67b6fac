/**
 * Label selectors: the proto form (match_labels + match_expressions) and the string
 * form used by list calls and vopctl: "k=v,k2!=v,k3 in (a,b),k4 notin (c),k5,!k6".
 */
import { SelectorOperator, type LabelSelector, type SelectorRequirement } from '../proto/types';

export class SelectorSyntaxError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SelectorSyntaxError';
  }
}

/** Splits on commas that are not inside parentheses. */
function splitTerms(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (depth < 0) throw new SelectorSyntaxError(`unbalanced ")" in selector "${text}"`);
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw new SelectorSyntaxError(`unbalanced "(" in selector "${text}"`);
  out.push(cur);
  return out.map((s) => s.trim()).filter((s) => s.length > 0);
}

const KEY = String.raw`[A-Za-z0-9][-A-Za-z0-9_./]*`;
const VAL = String.raw`[-A-Za-z0-9_.]*`;

/** Parses the string form; throws SelectorSyntaxError naming the bad term. */
export function parseSelector(text: string): LabelSelector {
  const sel: LabelSelector = { matchLabels: {}, matchExpressions: [] };
  for (const term of splitTerms(text)) {
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^(${KEY})\\s*(==|=)\\s*(${VAL})$`).exec(term))) {
      sel.matchLabels[m[1] as string] = m[3] as string;
    } else if ((m = new RegExp(`^(${KEY})\\s*!=\\s*(${VAL})$`).exec(term))) {
      sel.matchExpressions.push({
        key: m[1] as string,
        operator: SelectorOperator.SELECTOR_OPERATOR_NOT_IN,
        values: [m[2] as string],
      });
    } else if ((m = new RegExp(`^(${KEY})\\s+(in|notin)\\s*\\(([^()]*)\\)$`).exec(term))) {
      const values = (m[3] as string)
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
      if (values.length === 0) throw new SelectorSyntaxError(`"${term}": empty value list`);
      for (const val of values)
        if (!new RegExp(`^${VAL}$`).test(val)) throw new SelectorSyntaxError(`"${term}": bad value "${val}"`);
      sel.matchExpressions.push({
        key: m[1] as string,
        operator: m[2] === 'in' ? SelectorOperator.SELECTOR_OPERATOR_IN : SelectorOperator.SELECTOR_OPERATOR_NOT_IN,
        values,
      });
    } else if ((m = new RegExp(`^!(${KEY})$`).exec(term))) {
      sel.matchExpressions.push({
        key: m[1] as string,
        operator: SelectorOperator.SELECTOR_OPERATOR_DOES_NOT_EXIST,
        values: [],
      });
    } else if ((m = new RegExp(`^(${KEY})$`).exec(term))) {
      sel.matchExpressions.push({
        key: m[1] as string,
        operator: SelectorOperator.SELECTOR_OPERATOR_EXISTS,
        values: [],
      });
    } else {
      throw new SelectorSyntaxError(`cannot parse selector term "${term}"`);
    }
  }
  return sel;
}

function requirementMatches(r: SelectorRequirement, labels: Readonly<Record<string, string>>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const val = labels[r.key];
  switch (r.operator) {
    case SelectorOperator.SELECTOR_OPERATOR_IN:
      return has && r.values.includes(val as string);
    case SelectorOperator.SELECTOR_OPERATOR_NOT_IN:
      return !has || !r.values.includes(val as string);
    case SelectorOperator.SELECTOR_OPERATOR_EXISTS:
      return has;
    case SelectorOperator.SELECTOR_OPERATOR_DOES_NOT_EXIST:
      return !has;
    default:
      return false;
  }
}

/** An empty selector matches everything. */
export function selectorMatches(sel: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!sel) return true;
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false;
  return sel.matchExpressions.every((r) => requirementMatches(r, labels));
}
