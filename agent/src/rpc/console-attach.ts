/**
 * AttachConsole: a bidirectional session bound to one console device. The first
 * client message opens it; any number of sessions read the output, one at a time
 * holds the writer slot (asked for with open.write) and may send input. Admins and
 * readers attach; only admins get the writer slot.
 *
 * The device's output reaches every session (and the log) whether or not a session
 * reads, so one slow session must not hold the console back: output it does not
 * drain is queued for it up to consoleBacklogBytes, and one byte more ends that
 * session with RESOURCE_EXHAUSTED (reattach with replay_bytes to catch up). Input is
 * read only as fast as the console takes it.
 */
import { status as GrpcStatus, type ServerDuplexStream } from '@grpc/grpc-js';

import type { AttachConsoleRequest, AttachConsoleResponse } from '../../../lib/proto/agent';
import { assertConsoleWriteAllowed } from '../../../lib/src/auth';
import { assertConsoleCaller } from '../../../lib/src/console-access';
import { failedPrecondition, invalidArgument, notFound, ServerError, ViolationList } from '../../../lib/src/errors';
import { DEFAULT_LIMITS } from '../../../lib/src/limits';
import { writeWithBackpressure } from '../../../lib/src/rpc-handlers';
import { checkName } from '../../../lib/src/validate';
import type { LinkManager } from '../links/link-manager';

/** While the console's input buffer is full, input is retried this often. */
export const INPUT_RETRY_MS = 10;

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
  backlogBytes: number = DEFAULT_LIMITS.consoleBacklogBytes,
): Promise<void> {
  assertConsoleCaller(call.metadata);
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
  let off = null as (() => void) | null;
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
    await new Promise<void>((resolve, reject) => {
      // Output not yet taken by the stream (bounded by backlogBytes).
      const queued: Buffer[] = [];
      let queuedBytes = 0;
      let blocked = false;
      let failed = false;
      const flush = (): void => {
        blocked = false;
        while (queued.length > 0 && !signal.aborted) {
          const c = queued.shift() as Buffer;
          queuedBytes -= c.length;
          if (!call.write({ msg: { $case: 'output', value: c } })) {
            blocked = true;
            call.once('drain', flush);
            return;
          }
        }
      };
      off = port.onOutput((chunk) => {
        if (signal.aborted || failed) return;
        const c = Buffer.from(chunk);
        if (blocked) {
          if (queuedBytes + c.length > backlogBytes) {
            failed = true;
            queued.length = 0;
            queuedBytes = 0;
            off?.();
            reject(
              new ServerError(
                GrpcStatus.RESOURCE_EXHAUSTED,
                `console output backlog exceeded ${backlogBytes} bytes (limit consoleBacklogBytes): the session did not read its stream; attach again with replay_bytes`,
                {
                  reason: 'CONSOLE_BACKLOG_EXCEEDED',
                  metadata: { link: open.link, device: open.device, limit: 'consoleBacklogBytes' },
                },
              ),
            );
            return;
          }
          queued.push(c);
          queuedBytes += c.length;
          return;
        }
        if (!call.write({ msg: { $case: 'output', value: c } })) {
          blocked = true;
          call.once('drain', flush);
        }
      });
      // Input is read only as fast as the console takes it: while its buffer is full the
      // rest of the chunk waits (and the stream is not read), in order.
      const input: Buffer[] = [];
      const pushInput = (): void => {
        while (input.length > 0 && !signal.aborted && !failed) {
          const head = input[0] as Buffer;
          const n = port.write(head);
          if (n < head.length) {
            input[0] = head.subarray(n);
            call.pause();
            setTimeout(pushInput, INPUT_RETRY_MS).unref();
            return;
          }
          input.shift();
        }
        call.resume();
      };
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
        input.push(Buffer.from(m.msg.value));
        if (input.length === 1) pushInput();
      });
      call.on('end', () => resolve());
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  } finally {
    off?.();
    sessions.release(key, token);
  }
}
