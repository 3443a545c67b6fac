/**
 * The connection to etcd (npm etcd3, pinned, over grpc-js): several endpoints, TLS,
 * a deadline on every unary call, keepalive pings on streams, and the retry rule.
 *
 * etcd3's own retry policy is turned off: it retries writes after errors that do not
 * prove the request was never applied, which turns a successful compare-and-swap into
 * a false conflict. Here reads retry on any transient failure, across members, until
 * their deadline; writes retry only when etcd never saw them (no connection to that
 * member, no leader, proposal dropped), as etcd's Go client does. Anything else is
 * StoreUnavailableError with `outcomeUnknown` (the watch tells what happened).
 */
import { readFileSync } from 'node:fs';

import { circuitBreaker, ConsecutiveBreaker, handleWhen, isBrokenCircuitError, noop } from 'cockatiel';
import {
  Etcd3,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCInternalError,
  GRPCResourceExhastedError,
  GRPCUnavailableError,
  GRPCUnknownError,
  type IOptions,
} from 'etcd3';

import { Backoff, type BackoffPolicy } from '../../../lib/src/backoff';
import { StoreUnavailableError } from './store';

export interface EtcdTlsConfig {
  /** CA bundle that signed the etcd members' certificates. */
  readonly ca: string;
  /** Client certificate and key (etcd's --client-cert-auth). */
  readonly cert?: string;
  readonly key?: string;
}

export interface EtcdStoreConfig {
  /** HOST:PORT (or http:// / https:// URLs) of the members; the client fails over between them. */
  readonly endpoints: readonly string[];
  /** Every key of this controller lives under it (ends with "/"). */
  readonly prefix: string;
  readonly tls?: EtcdTlsConfig;
  /** Deadline of one store call, retries included. */
  readonly requestTimeoutSeconds: number;
  /** etcd's --max-txn-ops (128 by default); a commit takes at most this minus 2 ops. */
  readonly maxTxnOps: number;
  /** Lease of the leader (leader election). */
  readonly leaderLeaseSeconds: number;
}

export const ETCD_DEFAULTS = {
  prefix: '/vop/',
  requestTimeoutSeconds: 5,
  maxTxnOps: 128,
  leaderLeaseSeconds: 6,
} as const;

/** Objects read per range request when listing. */
export const DEFAULT_PAGE_SIZE = 1000;

/** A watch batch of 1000 revisions can be large; one object is at most etcd's --max-request-bytes (1.5 MiB). */
const MAX_RECEIVE_BYTES = 256 * 1024 * 1024;

/** Errors that mean "this member did not answer": the next call skips it for a second. */
function memberUnreachable(err: Error): boolean {
  if (err instanceof GRPCDeadlineExceededError) return true;
  return (
    err instanceof GRPCUnavailableError &&
    /No connection established|Connection dropped|ECONNREFUSED/i.test(err.message)
  );
}

export function createEtcdClient(cfg: EtcdStoreConfig): Etcd3 {
  const secure = cfg.tls !== undefined || cfg.endpoints.some((e) => e.startsWith('https://'));
  const hosts = cfg.endpoints.map((e) => e.replace(/^https?:\/\//, ''));
  const options: IOptions = {
    hosts: hosts.map((h) => (secure ? `https://${h}` : `http://${h}`)),
    grpcOptions: {
      'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
      'grpc.max_send_message_length': MAX_RECEIVE_BYTES,
      // Finds a member that stopped answering under an open watch within 9 s. Pings only while a
      // call is open, and not more often than etcd's --grpc-keepalive-min-time (5 s) allows.
      'grpc.keepalive_time_ms': 6_000,
      'grpc.keepalive_timeout_ms': 3_000,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2_000,
    },
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + cfg.requestTimeoutSeconds * 1000 }),
    faultHandling: {
      global: noop,
      host: () =>
        circuitBreaker(handleWhen(memberUnreachable), { halfOpenAfter: 1000, breaker: new ConsecutiveBreaker(1) }),
    },
  };
  if (cfg.tls) {
    options.credentials = {
      rootCertificate: readFileSync(cfg.tls.ca),
      ...(cfg.tls.cert ? { certChain: readFileSync(cfg.tls.cert) } : {}),
      ...(cfg.tls.key ? { privateKey: readFileSync(cfg.tls.key) } : {}),
    };
  }
  return new Etcd3(options);
}

/** Never reached etcd, or etcd refused it before proposing it: a write may be sent again. */
export function notSent(err: unknown): boolean {
  if (isBrokenCircuitError(err)) return true;
  if (!(err instanceof Error)) return false;
  return /No connection established|etcdserver: no leader|raft proposal dropped|etcdserver: too many requests|ECONNREFUSED/i.test(
    err.message,
  );
}

/** Transient for a read (send it again, to any member). */
export function transient(err: unknown): boolean {
  return (
    notSent(err) ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCInternalError ||
    err instanceof GRPCCancelledError ||
    err instanceof GRPCUnknownError ||
    err instanceof GRPCResourceExhastedError
  );
}

export function compacted(err: unknown): boolean {
  return err instanceof Error && /required revision has been compacted/.test(err.message);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Between retries of one call: 25 ms doubling to 500 ms, within the call's deadline. */
const RETRY_BACKOFF: BackoffPolicy = { initialMs: 25, maxMs: 500, jitter: [1, 1] };

/**
 * Runs `call` until it succeeds, its error is not transient (reads) or not provably
 * unsent (writes), or the deadline passes. `call` gets the absolute deadline for its gRPC call.
 */
export async function withRetry<T>(
  what: string,
  timeoutMs: number,
  mutation: boolean,
  call: (deadline: number) => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const backoff = new Backoff(RETRY_BACKOFF);
  for (;;) {
    try {
      return await call(deadline);
    } catch (err) {
      const retry = mutation ? notSent(err) : transient(err);
      if (!retry) {
        if (transient(err))
          throw new StoreUnavailableError(`etcd ${what}: outcome unknown: ${String(err)}`, true, { cause: err });
        throw err;
      }
      const delay = backoff.next();
      if (Date.now() + delay >= deadline)
        throw new StoreUnavailableError(`etcd ${what}: no answer in ${timeoutMs} ms: ${String(err)}`, false, {
          cause: err,
        });
      await sleep(delay);
    }
  }
}

/** The key just after every key starting with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}
