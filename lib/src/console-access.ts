/**
 * Who may attach a console (agent and controller apply the same rule): admins, and
 * readers without the writer slot. The agent role (a card's certificate) and callers
 * without a role are refused before anything is opened.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

import { callerRole } from './auth';
import { ServerError } from './errors';

export function assertConsoleCaller(metadata: { get(key: string): unknown[] }): void {
  const role = callerRole(metadata);
  if (role === 'admin' || role === 'reader') return;
  throw new ServerError(
    GrpcStatus.PERMISSION_DENIED,
    `role ${role} may not attach consoles; it needs role reader (read-only) or admin`,
    { reason: 'CONSOLE_ATTACH_DENIED', metadata: { role } },
  );
}
