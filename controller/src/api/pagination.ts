/**
 * List pagination: results sorted by name; the page token is opaque (base64url of the
 * kind and the last name returned), so a listing stays stable while objects change.
 */
import { invalidArgument } from '../../../lib/src/errors';

export const DEFAULT_PAGE_SIZE = 500;
export const MAX_PAGE_SIZE = 5000;

export function paginate<T>(
  kind: string,
  items: readonly T[],
  nameOf: (t: T) => string,
  pageSize: number,
  pageToken: string,
): { page: T[]; next: string } {
  let after = '';
  if (pageToken !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.from(pageToken, 'base64url').toString('utf8'));
    } catch {
      parsed = undefined;
    }
    const p = parsed as { k?: unknown; a?: unknown } | undefined;
    if (!p || p.k !== kind || typeof p.a !== 'string')
      throw invalidArgument([{ field: 'page_token', description: 'is not a token returned by this list call' }]);
    after = p.a;
  }
  const size = pageSize === 0 ? DEFAULT_PAGE_SIZE : Math.min(pageSize, MAX_PAGE_SIZE);
  const sorted = [...items].sort((a, b) => (nameOf(a) < nameOf(b) ? -1 : nameOf(a) > nameOf(b) ? 1 : 0));
  const start = after === '' ? 0 : sorted.findIndex((t) => nameOf(t) > after);
  const page = start < 0 ? [] : sorted.slice(start, start + size);
  const last = page[page.length - 1];
  const next =
    start >= 0 && start + size < sorted.length && last !== undefined
      ? Buffer.from(JSON.stringify({ k: kind, a: nameOf(last) })).toString('base64url')
      : '';
  return { page, next };
}
