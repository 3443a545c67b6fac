/**
 * WatchLinks: the current links as ADDED (unless updates_only), a SYNCED marker, then
 * ADDED/MODIFIED/DELETED as links change and link events (type UNSPECIFIED with
 * `event` set). A link whose labels stop matching the selector is reported DELETED.
 * The stream ends cleanly when the client cancels or the server shuts down; a watcher
 * that does not read is ended with RESOURCE_EXHAUSTED once watchBacklogEvents messages
 * wait for it (lib/src/watch-backlog.ts).
 */
import type { ServerWritableStream } from '@grpc/grpc-js';

import type { WatchLinksRequest, WatchLinksResponse } from '../../../lib/proto/agent';
import { WatchEventType, type LabelSelector, type Link } from '../../../lib/proto/types';
import { DEFAULT_LIMITS } from '../../../lib/src/limits';
import { writeWithBackpressure } from '../../../lib/src/rpc-handlers';
import { selectorMatches } from '../../../lib/src/selector';
import { WatchBacklog } from '../../../lib/src/watch-backlog';
import type { LinkManagerApi } from '../links/link-manager-api';

function msg(type: WatchEventType, link: Link | undefined, rv: string): WatchLinksResponse {
  return { type, link, event: undefined, resourceVersion: rv };
}

export async function watchLinks(
  links: LinkManagerApi,
  selector: LabelSelector,
  updatesOnly: boolean,
  call: ServerWritableStream<WatchLinksRequest, WatchLinksResponse>,
  outer: AbortSignal,
  backlogEvents: number = DEFAULT_LIMITS.watchBacklogEvents,
): Promise<void> {
  const backlog = new WatchBacklog<WatchLinksResponse>(backlogEvents, outer);
  const signal = backlog.signal;
  const visible = new Set<string>();
  const push = (m: WatchLinksResponse): void => backlog.push(m);
  // Subscribing and listing happen in the same turn, so no change falls between them.
  const unsubscribe = links.subscribe((c) => {
    switch (c.type) {
      case 'upsert': {
        const name = c.link.meta?.name ?? '';
        const rv = c.link.meta?.resourceVersion ?? '';
        if (selectorMatches(selector, c.link.meta?.labels ?? {})) {
          push(
            msg(
              visible.has(name) ? WatchEventType.WATCH_EVENT_TYPE_MODIFIED : WatchEventType.WATCH_EVENT_TYPE_ADDED,
              c.link,
              rv,
            ),
          );
          visible.add(name);
        } else if (visible.delete(name)) push(msg(WatchEventType.WATCH_EVENT_TYPE_DELETED, c.link, rv));
        break;
      }
      case 'delete':
        if (visible.delete(c.link.meta?.name ?? ''))
          push(msg(WatchEventType.WATCH_EVENT_TYPE_DELETED, c.link, c.link.meta?.resourceVersion ?? ''));
        break;
      case 'event':
        if (visible.has(c.event.link))
          push({
            type: WatchEventType.WATCH_EVENT_TYPE_UNSPECIFIED,
            link: undefined,
            event: c.event,
            resourceVersion: '',
          });
        break;
      default: {
        const never: never = c;
        throw new Error(`unknown change ${JSON.stringify(never)}`);
      }
    }
  });
  try {
    const snapshot = links.list().filter((l) => selectorMatches(selector, l.meta?.labels ?? {}));
    let maxRv = 0n;
    for (const l of snapshot) {
      visible.add(l.meta?.name ?? '');
      const rv = l.meta?.resourceVersion ?? '';
      if (/^\d+$/.test(rv) && BigInt(rv) > maxRv) maxRv = BigInt(rv);
    }
    if (!updatesOnly)
      for (const l of snapshot)
        await writeWithBackpressure(
          call,
          msg(WatchEventType.WATCH_EVENT_TYPE_ADDED, l, l.meta?.resourceVersion ?? ''),
          signal,
        );
    await writeWithBackpressure(call, msg(WatchEventType.WATCH_EVENT_TYPE_SYNCED, undefined, maxRv.toString()), signal);
    while (!signal.aborted) {
      const next = backlog.shift();
      if (next) await writeWithBackpressure(call, next, signal);
      else await backlog.wait();
    }
    backlog.throwIfOverflowed();
  } finally {
    unsubscribe();
    backlog.dispose();
  }
}
