/**
 * Identities and roles. With mutual TLS the caller is named by its client
 * certificate (subject CN, else the first DNS SAN); the configured lists map names
 * to roles. Without TLS every caller is "anonymous" with the configured role
 * (admin by default, which is why plaintext binds to loopback by default).
 *
 *   admin  - may call everything
 *   reader - may call read-only methods (Get*, List*, Watch*) and watch consoles
 *   agent  - may call vop.controller.v1.AgentSyncService (agents dialling in)
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { AuthContext } from '@grpc/grpc-js/build/src/auth-context';

import { ServerError } from './errors';

export type Role = 'admin' | 'reader' | 'agent' | 'none';

export interface Identity {
  readonly name: string;
  readonly role: Role;
}

export interface AccessPolicy {
  identify(ctx: AuthContext): Identity;
  /** Methods ("/pkg.Service/Method") a reader may call. */
  readonly readOnlyMethods: ReadonlySet<string>;
}

/** Always reachable by any peer that passed the TLS handshake. */
const PROBE_SERVICES = [
  '/grpc.health.v1.Health/',
  '/grpc.reflection.v1.ServerReflection/',
  '/grpc.reflection.v1alpha.ServerReflection/',
];
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
  /** Role of a caller without a certificate (plaintext), default admin. */
  readonly anonymousRole: Role;
  readonly readOnlyMethods: ReadonlySet<string>;
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
      return { name, role: byName.get(name) ?? byName.get('*') ?? 'none' };
    },
  };
}

export type Decision = true | { code: GrpcStatus; message: string };

export function roleAllows(policy: AccessPolicy, identity: Identity, path: string): Decision {
  if (PROBE_SERVICES.some((p) => path.startsWith(p))) return true;
  switch (identity.role) {
    case 'admin':
      return true;
    case 'agent':
      if (path.startsWith(AGENT_SERVICE_PREFIX) || policy.readOnlyMethods.has(path)) return true;
      return {
        code: GrpcStatus.PERMISSION_DENIED,
        message: `identity "${identity.name}" (role agent) may not call ${path}`,
      };
    case 'reader':
      if (policy.readOnlyMethods.has(path)) return true;
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
