/**
 * Long-lived streams (watches, console sessions) per client identity, bounded by the
 * maxStreamsPerClient limit. A client is its certificate name when it has one, else the
 * IP it connects from, else "local" (Unix socket callers). The stream past the limit
 * is refused with RESOURCE_EXHAUSTED before it holds anything.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context';

import { peerName } from './auth';
import { ServerError } from './errors';
import { peerIpOf } from './net';

/** The identity a quota is kept for. */
export function clientKey(call: { getPeer(): string; getAuthContext(): AuthContext }): string {
  const name = peerName(call.getAuthContext());
  if (name !== null) return `certificate ${name}`;
  const ip = peerIpOf(call.getPeer());
  return ip === '' ? 'local' : `address ${ip}`;
}

export class StreamQuota {
  private readonly open = new Map<string, number>();

  constructor(
    private readonly max: number,
    /** What the streams are, for the refusal ("watch and console streams"). */
    private readonly what: string,
  ) {}

  /** Takes one slot for `client`; returns its release function (idempotent). */
  acquire(client: string): () => void {
    const n = this.open.get(client) ?? 0;
    if (n >= this.max) {
      throw new ServerError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `client ${client} already has ${n} ${this.what} open (limit maxStreamsPerClient = ${this.max}); close one first`,
        { reason: 'STREAM_LIMIT_EXCEEDED', metadata: { limit: 'maxStreamsPerClient', max: String(this.max) } },
      );
    }
    this.open.set(client, n + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(client) ?? 1) - 1;
      if (left <= 0) this.open.delete(client);
      else this.open.set(client, left);
    };
  }

  /** Streams open for a client (tests, metrics). */
  count(client: string): number {
    return this.open.get(client) ?? 0;
  }
}
