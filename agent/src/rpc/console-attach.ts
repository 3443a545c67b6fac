/**
 * AttachConsole: a bidirectional session bound to one console device. The first
 * client message opens it; any number of sessions read the output, one at a time
 * holds the writer slot (asked for with open.write) and may send input.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';

import type { AttachConsoleRequest, AttachConsoleResponse } from '../../../lib/gen/vop/agent/v1/agent';
import { assertConsoleWriteAllowed } from '../../../lib/src/auth';
import { failedPrecondition, invalidArgument, notFound, ViolationList } from '../../../lib/src/errors';
import { writeWithBackpressure } from '../../../lib/src/rpc-handlers';
import { checkName } from '../../../lib/src/validate';
import type { LinkManager } from '../links/link-manager';

/** Writer slots per "link/device". */
export class ConsoleSessions {
  private readonly writers = new Map<string, symbol>();

  acquire(key: string): symbol | null {
    if (this.writers.has(key)) return null;
    const token = Symbol(key);
    this.writers.set(key, token);
    return token;
  }

  release(key: string, token: symbol | null): void {
    if (token && this.writers.get(key) === token) this.writers.delete(key);
  }
}

function firstMessage(
  call: ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>,
  signal: AbortSignal,
): Promise<AttachConsoleRequest | null> {
  return new Promise((resolve) => {
    const done = (m: AttachConsoleRequest | null): void => {
      call.off('data', onData);
      call.off('end', onEnd);
      signal.removeEventListener('abort', onEnd);
      resolve(m);
    };
    const onData = (m: AttachConsoleRequest): void => done(m);
    const onEnd = (): void => done(null);
    call.on('data', onData);
    call.on('end', onEnd);
    signal.addEventListener('abort', onEnd, { once: true });
  });
}

export async function attachConsole(
  links: LinkManager,
  sessions: ConsoleSessions,
  agent: string,
  call: ServerDuplexStream<AttachConsoleRequest, AttachConsoleResponse>,
  signal: AbortSignal,
): Promise<void> {
  const first = await firstMessage(call, signal);
  if (!first) return;
  if (first.msg?.$case !== 'open')
    throw invalidArgument([{ field: 'open', description: 'the first message must be open' }]);
  const open = first.msg.value;
  const v = new ViolationList();
  checkName(v, 'open.link', open.link);
  checkName(v, 'open.device', open.device);
  v.throwIfAny();
  assertConsoleWriteAllowed(call.metadata, open);
  const rt = links.runtime(open.link);
  if (!rt) throw notFound('link', open.link);
  const { found, port } = rt.consoleOf(open.device);
  if (!found) throw notFound('device', open.device);
  if (rt.deviceKind(open.device) !== 'console')
    throw failedPrecondition('NOT_A_CONSOLE', `device "${open.device}" is not a console`, {
      link: open.link,
      device: open.device,
    });
  if (!port) {
    throw failedPrecondition(
      'CONSOLE_NOT_RUNNING',
      `console "${open.device}" of link "${open.link}" has no running console backend (link is ${rt.state})`,
      {
        link: open.link,
        device: open.device,
      },
    );
  }
  const key = `${open.link}/${open.device}`;
  const token = open.write ? sessions.acquire(key) : null;
  if (open.write && !token)
    throw failedPrecondition('CONSOLE_WRITER_BUSY', `another session holds the writer slot of ${key}`, {
      link: open.link,
      device: open.device,
    });
  let off: (() => void) | null = null;
  try {
    await writeWithBackpressure(
      call,
      { msg: { $case: 'attached', value: { writer: token !== null, devicePath: port.devicePath, agent } } },
      signal,
    );
    if (open.replayBytes > 0) {
      const past = port.recent(open.replayBytes);
      if (past.length > 0)
        await writeWithBackpressure(call, { msg: { $case: 'output', value: Buffer.from(past) } }, signal);
    }
    off = port.onOutput((chunk) => {
      if (!signal.aborted) call.write({ msg: { $case: 'output', value: Buffer.from(chunk) } });
    });
    await new Promise<void>((resolve, reject) => {
      call.on('data', (m: AttachConsoleRequest) => {
        if (m.msg?.$case !== 'input') return;
        if (!token) {
          reject(
            failedPrecondition('NOT_CONSOLE_WRITER', 'this session did not ask for the writer slot (open.write)', {
              link: open.link,
              device: open.device,
            }),
          );
          return;
        }
        port.write(m.msg.value);
      });
      call.on('end', () => resolve());
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  } finally {
    off?.();
    sessions.release(key, token);
  }
}
