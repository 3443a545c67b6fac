/**
 * The controller relays console sessions with no more than the caller's own rights: a
 * real controller and two real agents (mutual TLS everywhere) with a console link
 * between them. A reader cannot take the writer slot through the controller (and the
 * agent never sees a write request for it), a card's certificate (role agent) cannot
 * attach at all, and a reader that does not read its stream is cut off by the agent's
 * per-session backlog instead of being buffered for, with both servers' memory bounded.
 */
import assert from 'node:assert/strict';
import { openSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { ReadStream } from 'node:tty';

import { Metadata, status, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';

import type { AttachConsoleResponse as AgentConsoleResponse } from '../../lib/proto/agent';
import type { AttachConsoleRequest, AttachConsoleResponse } from '../../lib/proto/controller';
import { LinkPhase } from '../../lib/proto/types';
import { dataPlaneMissing, waitFor } from '../controller/fleet-helpers';
import { call, decodeStatus } from '../helpers/grpc';
import { ctlApply, link, rssBytes, startSecureFleet, type SecureFleet } from './limits-fixtures';

type Session = ClientDuplexStream<AttachConsoleRequest, AttachConsoleResponse>;

interface Attached {
  readonly session: Session;
  /** The attached message, or the error the session ended with before it. */
  readonly first: Promise<AttachConsoleResponse | ServiceError>;
  readonly ended: Promise<ServiceError | null>;
  output: number;
}

function attach(
  fleet: SecureFleet,
  who: string,
  open: { write: boolean; replayBytes?: number },
  paused = false,
): Attached {
  const session = fleet.ctl(who).attachConsole();
  const a: Attached = {
    session,
    output: 0,
    first: new Promise((resolve) => {
      session.once('data', (m: AttachConsoleResponse) => resolve(m));
      session.once('error', (e: ServiceError) => resolve(e));
    }),
    ended: new Promise((resolve) => {
      session.on('error', (e: ServiceError) => resolve(e));
      session.on('end', () => resolve(null));
    }),
  };
  session.on('data', (m: AttachConsoleResponse) => {
    if (m.msg?.$case === 'output') a.output += m.msg.value.length;
  });
  if (paused) session.once('data', () => session.pause());
  session.write({
    msg: {
      $case: 'open',
      value: { link: 'con-link', device: 'con0', write: open.write, replayBytes: open.replayBytes ?? 0 },
    },
  });
  return a;
}

function isError(x: AttachConsoleResponse | ServiceError): x is ServiceError {
  return x instanceof Error;
}

describe('the controller console relay', () => {
  let fleet: SecureFleet;
  before(async () => {
    fleet = await startSecureFleet({ agents: ['host-1', 'card-1'] });
    await fleet.startAgent('host-1', { limits: { consoleBacklogBytes: 65536 } });
    await fleet.startAgent('card-1', { role: 'card', host: 'host-1' });
    const h = fleet.agents.get('host-1');
    if (h && dataPlaneMissing(h)) throw new Error('the native data plane is not built');
    const admin = fleet.ctl('ops-admin');
    await ctlApply(admin, link('con-link', 'host-1', 'card-1'));
    await waitFor(
      'con-link Ready',
      async () =>
        (await call(admin, admin.getLink, { name: 'con-link' }, new Metadata())).link?.status?.phase ===
        LinkPhase.LINK_PHASE_READY,
      90_000,
    );
  });
  after(async () => {
    await fleet?.stop();
  });

  it('refuses a console reader the writer slot through the controller', async () => {
    const asWriter = attach(fleet, 'ops-reader', { write: true });
    const denied = await asWriter.first;
    assert.ok(isError(denied), 'a reader got the writer slot');
    assert.equal(denied.code, status.PERMISSION_DENIED, denied.details);
    assert.equal(decodeStatus(denied).reason, 'CONSOLE_WRITE_DENIED');
    // Read-only is fine, and the agent was not asked for the slot: an admin still gets it.
    const reader = attach(fleet, 'ops-reader', { write: false });
    const r = await reader.first;
    assert.ok(!isError(r) && r.msg?.$case === 'attached', `reader not attached: ${JSON.stringify(r)}`);
    assert.equal(r.msg.value.writer, false);
    assert.equal(r.msg.value.agent, 'host-1');
    const writer = attach(fleet, 'ops-admin', { write: true });
    const w = await writer.first;
    assert.ok(!isError(w) && w.msg?.$case === 'attached', `admin not attached: ${JSON.stringify(w)}`);
    assert.equal(w.msg.value.writer, true, 'the reader session holds the writer slot on the agent');
    // Input on the read-only session is refused by the relay.
    reader.session.write({ msg: { $case: 'input', value: Buffer.from('rm -rf /\n') } });
    const ended = await reader.ended;
    assert.equal(ended?.code, status.FAILED_PRECONDITION);
    assert.equal(decodeStatus(ended).reason, 'NOT_CONSOLE_WRITER');
    writer.session.end();
    await writer.ended;
  });

  it('refuses an agent-role certificate any console attach', async () => {
    for (const write of [false, true]) {
      const a = attach(fleet, 'card-1', { write });
      const e = await a.first;
      assert.ok(isError(e), 'a card attached a console');
      assert.equal(e.code, status.PERMISSION_DENIED, e.details);
    }
  });

  it('relays only to the device-side agent that reports the link, never to the other side', async () => {
    // host-1 runs ghost-link as its driver side; the device side "nobody" never registered.
    const admin = fleet.ctl('ops-admin');
    await ctlApply(admin, link('ghost-link', 'nobody', 'host-1'));
    const session = admin.attachConsole();
    const err = await new Promise<ServiceError>((resolve, reject) => {
      session.on('error', resolve);
      session.on('data', () => reject(new Error('the console was relayed')));
      session.write({
        msg: { $case: 'open', value: { link: 'ghost-link', device: '', write: false, replayBytes: 0 } },
      });
    });
    assert.equal(err.code, status.FAILED_PRECONDITION, err.details);
    assert.equal(decodeStatus(err).reason, 'LINK_NOT_ON_AGENT');
    assert.match(err.details, /agent "nobody"/);
    await call(admin, admin.deleteLink, { name: 'ghost-link', resourceVersion: '' }, new Metadata());
  });

  it('stops reading the agent when the client does not drain; the agent ends the session at its backlog limit', async (t) => {
    const slow = attach(fleet, 'ops-reader', { write: false }, true);
    const first = await slow.first;
    assert.ok(!isError(first), 'the reader was not attached');
    // The card's side of the console is a pty on card-1: what a program there writes is
    // console output on host-1, which serves it to the relay.
    const probe = fleet.agentClient('card-1', 'ops-reader').attachConsole();
    probe.on('error', () => undefined);
    const ptyPath = await new Promise<string>((resolve) => {
      probe.once('data', (m: AgentConsoleResponse) =>
        resolve(m.msg?.$case === 'attached' ? m.msg.value.devicePath : ''),
      );
      probe.write({
        msg: { $case: 'open', value: { link: 'con-link', device: 'con0', write: false, replayBytes: 0 } },
      });
    });
    probe.cancel();
    assert.match(ptyPath, /^\/dev\/pts\/\d+$/);
    const fd = openSync(ptyPath, 'r+');
    const tty = new ReadStream(fd);
    tty.setRawMode(true);
    tty.on('data', () => undefined);
    const ctlPid = fleet.controller.proc.pid as number;
    const hostPid = fleet.agents.get('host-1')?.proc.pid as number;
    const base = { ctl: rssBytes(ctlPid), host: rssBytes(hostPid) };
    let peak = { ...base };
    const host = fleet.agents.get('host-1');
    // The agent logs the session it ends (its status waits behind the unread output).
    const cut = (): boolean =>
      (host?.logs ?? []).some(
        (l) => l.method === 'AttachConsole' && JSON.stringify(l.err ?? '').includes('console output backlog exceeded'),
      );
    const chunk = Buffer.alloc(16 * 1024, 0x41);
    let sent = 0;
    try {
      // Feed until the agent ends the slow session (or 64 MiB, far past every buffer on the way).
      while (sent < 64 * 1024 * 1024 && !cut()) {
        try {
          sent += writeSync(fd, chunk);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
          await new Promise((r) => setTimeout(r, 5));
        }
        if (sent % (1024 * 1024) < chunk.length)
          peak = { ctl: Math.max(peak.ctl, rssBytes(ctlPid)), host: Math.max(peak.host, rssBytes(hostPid)) };
      }
    } finally {
      tty.destroy();
    }
    assert.ok(cut(), `the agent did not end the session after ${sent} bytes`);
    slow.session.resume();
    const err = await slow.ended;
    assert.equal(err?.code, status.RESOURCE_EXHAUSTED, err?.details);
    assert.match(err?.details ?? '', /console output backlog exceeded 65536 bytes \(limit consoleBacklogBytes\)/);
    const mib = (b: number): number => Math.round(b / 1048576);
    t.diagnostic(
      `fed ${Math.round(sent / 1024)} KiB; the slow reader got ${Math.round(slow.output / 1024)} KiB before it was cut off; RSS growth controller +${mib(peak.ctl - base.ctl)} MiB, host-1 +${mib(peak.host - base.host)} MiB`,
    );
    assert.ok(slow.output < sent, 'everything was delivered: the reader was never slow');
    assert.ok(peak.ctl - base.ctl < 48 * 1024 * 1024, 'the controller buffered console output');
    assert.ok(peak.host - base.host < 48 * 1024 * 1024, 'the agent buffered console output');
  });
});
