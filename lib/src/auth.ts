/**
 * Identities and roles. Each listener has its own policy:
 *
 * - the local admin Unix socket: every caller is "unix-socket" with role admin (the
 *   socket's file permissions are the check);
 * - TCP with mutual TLS: the caller is named by its client certificate (subject CN,
 *   else the first DNS SAN) and the configured lists map names to roles; a name on the
 *   deny-list is refused (UNAUTHENTICATED) whatever its role;
 * - plaintext TCP (loopback only unless allowed): every caller is "anonymous" with
 *   plaintextRole, reader by default.
 *
 *   admin  - may call everything
 *   reader - may call read-only methods (Get*, List*, Watch*), watch consoles, health, reflection
 *   agent  - may call vop.controller.v1.AgentSyncService and health, nothing else
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context';

import { ServerError } from './errors';

export type Role = 'admin' | 'reader' | 'agent' | 'none';

export interface Identity {
  readonly name: string;
  readonly role: Role;
  /** The name is on the deny-list: every call is refused. */
  readonly denied?: boolean;
  /** Named by a client certificate (its open streams end when the name is denied). */
  readonly certificate?: boolean;
}

export interface AccessPolicy {
  identify(ctx: AuthContext): Identity;
  /** Methods ("/pkg.Service/Method") a reader may call. */
  readonly readOnlyMethods: ReadonlySet<string>;
}

/** Reachable by any peer that passed the TLS handshake and is not denied. */
const HEALTH_SERVICE_PREFIX = '/grpc.health.v1.Health/';
/** Reachable by readers and admins (grpcurl list/describe). */
const REFLECTION_SERVICES = ['/grpc.reflection.v1.ServerReflection/', '/grpc.reflection.v1alpha.ServerReflection/'];
const AGENT_SERVICE_PREFIX = '/vop.controller.v1.AgentSyncService/';

export interface RoleMap {
  readonly admin: readonly string[];
  readonly reader: readonly string[];
  readonly agent: readonly string[];
}

/** Name of the peer from its certificate, or null when there is none. */
export function peerName(ctx: AuthContext): string | null {
  const cert = ctx.sslPeerCertificate;
  if (!cert || !cert.subject) return null;
  const cn = cert.subject.CN;
  if (typeof cn === 'string' && cn.length > 0) return cn;
  const san = cert.subjectaltname
    ?.split(',')
    .map((s: string) => s.trim())
    .find((s: string) => s.startsWith('DNS:'));
  return san ? san.slice(4) : null;
}

export function createAccessPolicy(opts: {
  readonly tls: boolean;
  readonly roles: RoleMap;
  /** Role of a caller without a certificate (plaintext). */
  readonly anonymousRole: Role;
  readonly readOnlyMethods: ReadonlySet<string>;
  /** Certificate names refused at once (the deny-list). */
  readonly denied?: (name: string) => boolean;
}): AccessPolicy {
  const byName = new Map<string, Role>();
  for (const n of opts.roles.reader) byName.set(n, 'reader');
  for (const n of opts.roles.agent) byName.set(n, 'agent');
  for (const n of opts.roles.admin) byName.set(n, 'admin');
  return {
    readOnlyMethods: opts.readOnlyMethods,
    identify(ctx: AuthContext): Identity {
      const name = peerName(ctx);
      if (name === null) return { name: 'anonymous', role: opts.tls ? 'none' : opts.anonymousRole };
      return {
        name,
        role: byName.get(name) ?? byName.get('*') ?? 'none',
        certificate: true,
        denied: opts.denied?.(name) ?? false,
      };
    },
  };
}

/** Identity of a caller on the local admin Unix socket: whoever could open it. */
export const UNIX_SOCKET_IDENTITY: Identity = { name: 'unix-socket', role: 'admin' };

/** Policy of the admin Unix socket: every caller is admin. */
export function localAdminPolicy(readOnlyMethods: ReadonlySet<string>): AccessPolicy {
  return { readOnlyMethods, identify: () => UNIX_SOCKET_IDENTITY };
}

export type Decision = true | { code: GrpcStatus; message: string };

export function roleAllows(policy: AccessPolicy, identity: Identity, path: string): Decision {
  if (identity.denied)
    return { code: GrpcStatus.UNAUTHENTICATED, message: `certificate "${identity.name}" is on the deny-list` };
  if (path.startsWith(HEALTH_SERVICE_PREFIX)) return true;
  switch (identity.role) {
    case 'admin':
      return true;
    case 'agent':
      if (path.startsWith(AGENT_SERVICE_PREFIX)) return true;
      return {
        code: GrpcStatus.PERMISSION_DENIED,
        message: `identity "${identity.name}" (role agent) may only call AgentSyncService and health, not ${path}`,
      };
    case 'reader':
      if (policy.readOnlyMethods.has(path) || REFLECTION_SERVICES.some((p) => path.startsWith(p))) return true;
      return {
        code: GrpcStatus.PERMISSION_DENIED,
        message: `identity "${identity.name}" (role reader) may not call ${path}; it needs role admin`,
      };
    case 'none':
      return { code: GrpcStatus.PERMISSION_DENIED, message: `identity "${identity.name}" has no role on this server` };
    default: {
      const never: never = identity.role;
      throw new Error(`unknown role ${String(never)}`);
    }
  }
}

/**
 * Methods a reader may call: the RPCs whose name starts with Get, List or Watch, and
 * AttachConsole, whose handlers give the writer slot to admins only (see callerRole).
 */
export function readOnlyMethodsOf(servicePaths: readonly string[]): Set<string> {
  return new Set(servicePaths.filter((p) => /\/(Get|List|Watch)[A-Z]/.test(p) || p.endsWith('/AttachConsole')));
}

/**
 * Request metadata key under which the authz interceptor passes the caller's role to
 * handlers. The interceptor always overwrites it, so a client cannot set it.
 */
export const CALLER_ROLE_METADATA_KEY = 'x-vop-caller-role';

/** Role of the caller of a call that passed the authz interceptor ('none' if absent). */
export function callerRole(metadata: { get(key: string): unknown[] }): Role {
  const v = metadata.get(CALLER_ROLE_METADATA_KEY)[0];
  return v === 'admin' || v === 'reader' || v === 'agent' ? v : 'none';
}

/** A console open asking for the writer slot needs role admin; throws PERMISSION_DENIED otherwise. */
export function assertConsoleWriteAllowed(
  metadata: { get(key: string): unknown[] },
  open: { readonly write: boolean; readonly link: string; readonly device: string },
): void {
  if (!open.write || callerRole(metadata) === 'admin') return;
  throw new ServerError(
    GrpcStatus.PERMISSION_DENIED,
    'the console writer slot needs role admin; readers may attach without write',
    {
      reason: 'CONSOLE_WRITE_DENIED',
      metadata: { link: open.link, device: open.device },
    },
  );
}
