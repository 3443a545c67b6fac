/**
 * The contract between the agent's link manager (which owns links and their data
 * plane) and its clients: the AgentService handlers and the controller sync client.
 * Both call only this interface.
 */
import type { DeviceStats, Link, LinkEvent } from '../../../lib/proto/types';

/** Who owns a link: direct API use, or the controller (managed links refuse direct changes unless forced). */
export type LinkOwner = { readonly kind: 'direct' } | { readonly kind: 'controller'; readonly managedBy: string };

export interface ApplyOptions {
  readonly owner: LinkOwner;
  /** Apply even if the link is managed by someone else. */
  readonly force: boolean;
  /** Validate and compute the result without changing anything. */
  readonly dryRun: boolean;
}

export interface ApplyResult {
  readonly link: Link;
  /** False when the spec was identical (idempotent apply). */
  readonly changed: boolean;
}

export type LinkChange =
  | { readonly type: 'upsert'; readonly link: Link }
  | { readonly type: 'delete'; readonly link: Link }
  | { readonly type: 'event'; readonly event: LinkEvent };

export interface LinkManagerApi {
  /** Creates or updates; throws ServerError (INVALID_ARGUMENT, ABORTED on stale resource_version, FAILED_PRECONDITION...). */
  apply(link: Link, opts: ApplyOptions): Promise<ApplyResult>;
  get(name: string): Link | undefined;
  list(): Link[];
  delete(
    name: string,
    opts: { readonly owner: LinkOwner; readonly force: boolean; readonly resourceVersion: string },
  ): Promise<void>;
  reset(name: string, reason: string): Promise<Link>;
  stats(name: string): DeviceStats[];
  /** Subscribes to changes; returns an unsubscribe function. Listeners must not throw. */
  subscribe(listener: (change: LinkChange) => void): () => void;
}
