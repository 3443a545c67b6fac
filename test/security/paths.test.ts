/**
 * Host paths in link specs (issue 11, item 2): a caller with the admin role may name host
 * paths in a link spec, but only under the roots the node's operator allowed per kind
 * (hostPaths in the agent config; here the defaults under the state directory). Each test
 * performs the attack against a real vop-agent, asserts the refusal names the field and the
 * allowed root, and that the file outside (or the file at the name) is byte-identical
 * afterwards. The last suite plants the files after the link was applied, so that only the
 * native layer (openat2 RESOLVE_BENEATH, own-socket/own-link unlinks) stands in the way.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { status, type ServiceError } from '@grpc/grpc-js';

import { ErrorInfo, PreconditionFailure, Status } from '../../lib/proto/google-rpc';
import { LinkPhase, Role, StreamProtocol, type Device, type Link } from '../../lib/proto/types';
import { Agent } from '../agent/helpers';
import { waitFor } from '../controller/fleet-helpers';
import { decodeStatus, expectGrpcError } from '../helpers/grpc';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';

const sha = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');

/** Field → violation text, from BadRequest and PreconditionFailure, plus the ErrorInfo reason. */
function violations(err: ServiceError): { reason: string | null; byField: Map<string, string>; message: string } {
  const byField = new Map<string, string>();
  const d = decodeStatus(err);
  for (const v of d.fieldViolations) byField.set(v.field, v.description);
  const raw = err.metadata?.get('grpc-status-details-bin')[0];
  let reason = d.reason;
  if (raw instanceof Buffer) {
    for (const any of Status.decode(raw).details) {
      if (any.typeUrl.endsWith('/google.rpc.PreconditionFailure'))
        for (const v of PreconditionFailure.decode(any.value).violations) byField.set(v.subject, v.description);
      if (any.typeUrl.endsWith('/google.rpc.ErrorInfo')) reason = ErrorInfo.decode(any.value).reason;
    }
  }
  return { reason, byField, message: err.details };
}

/** The call fails with code, naming field and (in that field's violation and the message) root. */
async function refused(
  p: Promise<unknown>,
  code: status,
  field: string,
  root: string,
): Promise<{ reason: string | null; text: string }> {
  const err = await expectGrpcError(p);
  assert.equal(err.code, code, `${status[err.code]}: ${err.details}`);
  const v = violations(err);
  const text = v.byField.get(field);
  assert.ok(text !== undefined, `no violation for ${field}: ${JSON.stringify([...v.byField])}`);
  assert.ok(text.includes(root), `the violation of ${field} names the root ${root}: ${text}`);
  assert.ok(v.message.includes(field) && v.message.includes(root), `message names field and root: ${v.message}`);
  return { reason: v.reason, text };
}

function linkOf(name: string, devices: Device[], role: 'device' | 'driver' = 'device'): Link {
  return {
    meta: {
      name,
      labels: {},
      annotations: {},
      generation: 0n,
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: '',
    },
    spec: {
      endpoints:
        role === 'device'
          ? [
              { agent: 'host-a', role: Role.ROLE_DEVICE },
              { agent: 'card-b', role: Role.ROLE_DRIVER },
            ]
          : [
              { agent: 'card-b', role: Role.ROLE_DEVICE },
              { agent: 'host-a', role: Role.ROLE_DRIVER },
            ],
      transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: 0n } } },
      devices,
    },
    status: undefined,
  };
}

function blk(name: string, backing: string, exportSocket: string | null): Device {
  return {
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'blk',
      value: {
        backing: { path: backing, readOnly: false, directIo: false, serial: '' },
        export: exportSocket === null ? undefined : { unixSocket: exportSocket, tcpListen: '', exportName: '' },
      },
    },
  };
}

function consoleDev(
  name: string,
  o: { log?: string; ptyLink?: string; unixSocket?: string; driverPty?: string },
): Device {
  return {
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'console',
      value: {
        deviceBackend:
          o.unixSocket !== undefined
            ? { kind: { $case: 'unixSocket', value: { path: o.unixSocket } } }
            : o.ptyLink !== undefined
              ? { kind: { $case: 'pty', value: { linkPath: o.ptyLink } } }
              : undefined,
        driverFrontend: { kind: { $case: 'pty', value: { linkPath: o.driverPty ?? '' } } },
        log: o.log !== undefined ? { path: o.log, maxBytes: 0n, maxFiles: 0 } : undefined,
      },
    },
  };
}

/** Nothing of name was stored or listed. */
async function nothingApplied(agent: Agent, srv: ServerProcess, name: string): Promise<void> {
  const err = await expectGrpcError(agent.get(name));
  assert.equal(err.code, status.NOT_FOUND);
  assert.ok(!existsSync(path.join(srv.stateDir, 'links', `${name}.json`)), 'no state file');
}

describe('host paths in link specs stay under the roots the operator allowed', () => {
  const outside = tempDir('paths-outside');
  const rdv = tempDir('paths-rdv');
  let srv: ServerProcess;
  let agent: Agent;
  let roots: { disks: string; sockets: string; logs: string; pty: string };

  before(async () => {
    srv = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv]);
    agent = new Agent(srv.admin);
    const s = srv.stateDir;
    roots = {
      disks: path.join(s, 'disks'),
      sockets: path.join(s, 'sockets'),
      logs: path.join(s, 'logs'),
      pty: path.join(s, 'pty'),
    };
    for (const d of Object.values(roots)) assert.equal(statSync(d).mode & 0o777, 0o700, `${d} created 0700`);
  });
  after(async () => {
    agent.close();
    await srv.stop();
    for (const d of [outside, rdv, srv.stateDir]) rmSync(d, { recursive: true, force: true });
  });

  it('refuses /etc/shadow as a blk backing file and leaves it unchanged', async () => {
    const before = sha('/etc/shadow');
    const mtime = statSync('/etc/shadow').mtimeMs;
    const attack = linkOf('shadow', [blk('disk0', '/etc/shadow', '')]);
    await refused(agent.apply(attack), status.INVALID_ARGUMENT, 'link.spec.devices[0].blk.backing.path', roots.disks);
    await refused(
      agent.apply(attack, false, true),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].blk.backing.path',
      roots.disks,
    );
    await nothingApplied(agent, srv, 'shadow');
    assert.equal(sha('/etc/shadow'), before);
    assert.equal(statSync('/etc/shadow').mtimeMs, mtime);
    // The same spec with a disk inside the root is accepted: the refusal is about the path.
    writeFileSync(path.join(roots.disks, 'ok.img'), Buffer.alloc(1 << 20));
    const ok = await agent.apply(linkOf('shadow', [blk('disk0', path.join(roots.disks, 'ok.img'), '')]));
    assert.equal(ok.changed, true);
    await agent.delete('shadow');
  });

  it('refuses a symlink inside the disk root that leads to a file outside it, and the file is unchanged', async () => {
    const secret = path.join(outside, 'secret.img');
    writeFileSync(secret, randomBytes(1 << 20));
    const before = sha(secret);
    symlinkSync(secret, path.join(roots.disks, 'abs.img'));
    symlinkSync(path.relative(roots.disks, secret), path.join(roots.disks, 'rel.img'));
    symlinkSync(outside, path.join(roots.disks, 'dir'));
    for (const p of ['abs.img', 'rel.img', 'dir/secret.img'].map((f) => path.join(roots.disks, f))) {
      const r = await refused(
        agent.apply(linkOf('escape', [blk('disk0', p, '')])),
        status.FAILED_PRECONDITION,
        'link.spec.devices[0].blk.backing.path',
        roots.disks,
      );
      assert.equal(r.reason, 'HOST_PATH_REFUSED');
      assert.match(r.text, /leads out of its root/);
      await nothingApplied(agent, srv, 'escape');
    }
    // Special files: a FIFO in the root is refused, a device outside it names the (empty) block device list.
    const fifo = path.join(roots.disks, 'fifo.img');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const f = await refused(
      agent.apply(linkOf('escape', [blk('disk0', fifo, '')])),
      status.FAILED_PRECONDITION,
      'link.spec.devices[0].blk.backing.path',
      roots.disks,
    );
    assert.match(f.text, /FIFO, not a regular file/);
    const r = await refused(
      agent.apply(linkOf('escape', [blk('disk0', '/dev/sda', '')])),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].blk.backing.path',
      roots.disks,
    );
    assert.match(r.text, /block devices \(none\)/);
    assert.equal(sha(secret), before);
  });

  it('refuses a console log path outside the log root and leaves the target file intact', async () => {
    const keys = path.join(outside, 'authorized_keys');
    writeFileSync(keys, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKey admin@host\n', { mode: 0o600 });
    const before = sha(keys);
    await refused(
      agent.apply(linkOf('log-out', [consoleDev('con0', { log: keys })])),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].console.log.path',
      roots.logs,
    );
    // Through a symlink inside the log root: refused as well.
    symlinkSync(keys, path.join(roots.logs, 'console.log'));
    const r = await refused(
      agent.apply(linkOf('log-out', [consoleDev('con0', { log: path.join(roots.logs, 'console.log') })])),
      status.FAILED_PRECONDITION,
      'link.spec.devices[0].console.log.path',
      roots.logs,
    );
    assert.equal(r.reason, 'HOST_PATH_REFUSED');
    await nothingApplied(agent, srv, 'log-out');
    assert.equal(sha(keys), before);
    assert.equal(readlinkSync(path.join(roots.logs, 'console.log')), keys, 'the symlink is left alone');
  });

  it('refuses a socket path outside the socket root and never deletes a regular file at a socket name', async () => {
    await refused(
      agent.apply(linkOf('sock-out', [consoleDev('con0', { unixSocket: path.join(outside, 'console.sock') })])),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].console.device_backend.unix_socket.path',
      roots.sockets,
    );
    // A datagram peer outside the socket root (frames would go to any socket on the host).
    const net: Device = {
      name: 'net0',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'net',
        value: {
          mac: '',
          mtu: 0,
          offloads: false,
          deviceBackend: {
            kind: {
              $case: 'datagram',
              value: { path: path.join(roots.sockets, 'n.sock'), peerPath: '/run/systemd/notify' },
            },
          },
          driverFrontend: { kind: { $case: 'tap', value: { name: '', netns: '' } } },
        },
      },
    };
    await refused(
      agent.apply(linkOf('sock-out', [net])),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].net.device_backend.datagram.peer_path',
      roots.sockets,
    );
    // A regular file at the NBD socket's name (this agent is the driver side): refused, not deleted.
    const precious = path.join(roots.sockets, 'nbd.sock');
    writeFileSync(precious, 'precious\n');
    const disk = '/srv/elsewhere/disk.img'; // the device side's path: not this agent's business
    const r = await refused(
      agent.apply(linkOf('sock-out', [blk('disk0', disk, precious)], 'driver')),
      status.FAILED_PRECONDITION,
      'link.spec.devices[0].blk.export.unix_socket',
      roots.sockets,
    );
    assert.match(r.text, /regular file, not a socket/);
    // The default export socket (neither socket nor TCP named) lies in the socket root too.
    const dflt = path.join(roots.sockets, 'sock-out-disk0.nbd');
    writeFileSync(dflt, 'also precious\n');
    await refused(
      agent.apply(linkOf('sock-out', [blk('disk0', disk, '')], 'driver')),
      status.FAILED_PRECONDITION,
      'link.spec.devices[0].blk.export.unix_socket',
      roots.sockets,
    );
    await nothingApplied(agent, srv, 'sock-out');
    assert.equal(readFileSync(precious, 'utf8'), 'precious\n');
    assert.equal(readFileSync(dflt, 'utf8'), 'also precious\n');
    unlinkSync(dflt);
    const ok = await agent.apply(linkOf('sock-out', [blk('disk0', disk, '')], 'driver'));
    assert.equal(ok.changed, true, 'with the name free the default socket is accepted');
    await agent.delete('sock-out');
  });

  it('refuses a stream link Unix socket outside the socket root on either side and never deletes a regular file at its name', async () => {
    const victim = path.join(outside, 'victim');
    writeFileSync(victim, 'victim\n');
    const streamOf = (name: string, address: string, role: 'device' | 'driver', listenAddress = ''): Link => ({
      ...linkOf(name, [], role),
      spec: {
        ...(linkOf(name, [], role).spec as NonNullable<Link['spec']>),
        transport: {
          kind: {
            $case: 'stream',
            value: {
              protocol: StreamProtocol.STREAM_PROTOCOL_UNIX,
              address,
              listenAddress,
              secret: 'a-secret-of-sixteen-bytes-or-more',
              allowPlaintext: false,
              idleTimeoutMs: 0,
              disableTls: false,
              tlsPeerName: '',
            },
          },
        },
        devices: [consoleDev('c0', { ptyLink: path.join(roots.pty, `${name}.pty`) })],
      },
    });
    // The listening (device) side would bind there, replacing what is at the name.
    await refused(
      agent.apply(streamOf('st-out', victim, 'device')),
      status.INVALID_ARGUMENT,
      'link.spec.transport.stream.address',
      roots.sockets,
    );
    await refused(
      agent.apply(streamOf('st-out', path.join(roots.sockets, 'in.sock'), 'device', victim)),
      status.INVALID_ARGUMENT,
      'link.spec.transport.stream.listen_address',
      roots.sockets,
    );
    // The dialling (driver) side would connect to any socket on the host.
    await refused(
      agent.apply(streamOf('st-out', '/run/systemd/private', 'driver')),
      status.INVALID_ARGUMENT,
      'link.spec.transport.stream.address',
      roots.sockets,
    );
    // Inside the root, a regular file at the listening name is refused, not replaced.
    const precious = path.join(roots.sockets, 'st.sock');
    writeFileSync(precious, 'precious\n');
    const r = await refused(
      agent.apply(streamOf('st-out', precious, 'device')),
      status.FAILED_PRECONDITION,
      'link.spec.transport.stream.address',
      roots.sockets,
    );
    assert.match(r.text, /regular file, not a socket/);
    await nothingApplied(agent, srv, 'st-out');
    assert.equal(readFileSync(victim, 'utf8'), 'victim\n');
    assert.equal(readFileSync(precious, 'utf8'), 'precious\n');
    // With the name free the link listens there, and its socket goes away with it.
    unlinkSync(precious);
    await agent.apply(streamOf('st-out', precious, 'device'));
    await waitFor('the stream socket is bound', () => lstatSync(precious, { throwIfNoEntry: false })?.isSocket());
    await agent.delete('st-out');
    await waitFor('the stream socket is removed with the link', () => !existsSync(precious));
  });

  it('refuses a pty link path outside its root and never replaces a file with a pty link', async () => {
    const target = path.join(outside, 'root-owned');
    writeFileSync(target, 'root-owned\n');
    await refused(
      agent.apply(linkOf('pty-out', [consoleDev('con0', { ptyLink: target })])),
      status.INVALID_ARGUMENT,
      'link.spec.devices[0].console.device_backend.pty.link_path',
      roots.pty,
    );
    const inside = path.join(roots.pty, 'console');
    writeFileSync(inside, 'root-owned too\n');
    await refused(
      agent.apply(linkOf('pty-out', [consoleDev('con0', { ptyLink: inside })])),
      status.FAILED_PRECONDITION,
      'link.spec.devices[0].console.device_backend.pty.link_path',
      roots.pty,
    );
    await nothingApplied(agent, srv, 'pty-out');
    assert.equal(readFileSync(target, 'utf8'), 'root-owned\n');
    assert.ok(lstatSync(inside).isFile(), 'still a regular file, not a symlink');
    assert.equal(readFileSync(inside, 'utf8'), 'root-owned too\n');
  });

  it('refuses an over-long path instead of truncating it', async () => {
    const listing = (): string => JSON.stringify(Object.values(roots).map((d) => readdirSync(d).sort()));
    const before = listing();
    const longSock = path.join(roots.sockets, `${'s'.repeat(120)}.sock`);
    let err = await expectGrpcError(agent.apply(linkOf('long', [consoleDev('con0', { unixSocket: longSock })])));
    assert.equal(err.code, status.INVALID_ARGUMENT);
    let v = violations(err).byField.get('link.spec.devices[0].console.device_backend.unix_socket.path');
    assert.match(v ?? '', /at most 107 \(longer paths are refused, not truncated\)/);
    const longLog = path.join(roots.logs, `${'l'.repeat(250)}.log`);
    err = await expectGrpcError(agent.apply(linkOf('long', [consoleDev('con0', { log: longLog })])));
    assert.equal(err.code, status.INVALID_ARGUMENT);
    v = violations(err).byField.get('link.spec.devices[0].console.log.path');
    assert.match(v ?? '', /at most 240/);
    await nothingApplied(agent, srv, 'long');
    // Nothing appeared under a truncated name (the socket's first 107 bytes, the log's first 240).
    assert.ok(!existsSync(Buffer.from(longSock).subarray(0, 107).toString()));
    assert.ok(!existsSync(Buffer.from(longLog).subarray(0, 240).toString()));
    assert.equal(listing(), before, 'nothing created in any root');
  });
});

describe('the native layer enforces the roots when files change after a link was applied', () => {
  const outside = tempDir('paths-native-out');
  const rdv = tempDir('paths-native-rdv');
  const stateA = tempDir('paths-native-a');
  const stateB = tempDir('paths-native-b');
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;

  before(async () => {
    srvA = await startServer('agent', ['--node-name', 'host-a', '--rendezvous-dir', rdv], { stateDir: stateA });
    srvB = await startServer('agent', ['--node-name', 'card-b', '--rendezvous-dir', rdv], { stateDir: stateB });
    a = new Agent(srvA.admin);
    b = new Agent(srvB.admin);
  });
  after(async () => {
    a.close();
    b.close();
    await Promise.all([srvA.stop(), srvB.stop()]);
    for (const d of [outside, rdv, stateA, stateB]) rmSync(d, { recursive: true, force: true });
  });

  it('refuses a symlink out of the disk and log roots and a file at a socket or pty link name planted after apply', async () => {
    const A = (kind: string, f: string): string => path.join(stateA, kind, f);
    const B = (kind: string, f: string): string => path.join(stateB, kind, f);
    for (const f of ['d1.img', 'd2.img']) writeFileSync(A('disks', f), Buffer.alloc(1 << 20));
    // One link per attack: a device that cannot be set up resets its whole link.
    const links = [
      linkOf('late-disk', [blk('disk0', A('disks', 'd1.img'), B('sockets', 'd1.nbd'))]),
      linkOf('late-nbd', [blk('disk0', A('disks', 'd2.img'), B('sockets', 'd2.nbd'))]),
      linkOf('late-log', [consoleDev('con0', { log: A('logs', 'late.log') })]),
      linkOf('late-pty', [consoleDev('con0', { ptyLink: A('pty', 'late'), driverPty: B('pty', 'late') })]),
    ];
    await Promise.all(links.flatMap((l) => [a.apply(l), b.apply(l)]));
    for (const l of links) {
      await a.waitPhase(l.meta?.name ?? '', LinkPhase.LINK_PHASE_READY, 20_000);
      await b.waitPhase(l.meta?.name ?? '', LinkPhase.LINK_PHASE_READY, 20_000);
    }
    assert.ok(lstatSync(B('sockets', 'd2.nbd')).isSocket() && lstatSync(A('pty', 'late')).isSymbolicLink());

    // Swap what the links use for an attacker's choice, then make both sides open everything again.
    const secret = path.join(outside, 'secret.img');
    const keys = path.join(outside, 'authorized_keys');
    writeFileSync(secret, randomBytes(1 << 20));
    writeFileSync(keys, 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorKey admin@host\n');
    const secretSha = sha(secret);
    const keysSha = sha(keys);
    const plant = (p: string, what: { link: string } | { file: string }): void => {
      unlinkSync(p);
      if ('link' in what) symlinkSync(what.link, p);
      else writeFileSync(p, what.file);
    };
    plant(A('disks', 'd1.img'), { link: secret });
    plant(A('logs', 'late.log'), { link: keys });
    plant(B('sockets', 'd2.nbd'), { file: 'precious\n' });
    plant(A('pty', 'late'), { file: 'root-owned\n' });
    plant(B('pty', 'late'), { file: 'root-owned\n' });
    const wa = a.watch('', true);
    const wb = b.watch('', true);
    try {
      await Promise.all(
        links.flatMap((l) => [a.reset(l.meta?.name ?? '', 'reopen'), b.reset(l.meta?.name ?? '', 'reopen')]),
      );
      const failed = (w: typeof wa, link: string, code: string) =>
        w.waitFor(
          (m) =>
            m.event?.link === link && m.event.reason === 'DeviceSetupFailed' && m.event.message.includes(`(${code})`),
          20_000,
        );
      await Promise.all([
        failed(wa, 'late-disk', 'EXDEV'), // the disk resolves out of its root
        failed(wa, 'late-log', 'EEXIST'), // a symlink at the log's name is not written through
        failed(wa, 'late-pty', 'EEXIST'), // a file at the pty link's name is not replaced
        failed(wb, 'late-nbd', 'EEXIST'), // a file at the socket's name is not deleted
        failed(wb, 'late-pty', 'EEXIST'),
      ]);
    } finally {
      wa.stream.cancel();
      wb.stream.cancel();
    }
    for (const l of links) {
      assert.notEqual((await a.get(l.meta?.name ?? '')).link?.status?.phase, LinkPhase.LINK_PHASE_READY);
    }
    assert.equal(sha(secret), secretSha, 'the file outside the disk root is unchanged');
    assert.equal(sha(keys), keysSha, 'the file outside the log root is unchanged');
    await Promise.all(links.flatMap((l) => [a.delete(l.meta?.name ?? ''), b.delete(l.meta?.name ?? '')]));
    // Deleting the links removes only what the agents created: everything planted stays.
    assert.equal(readFileSync(B('sockets', 'd2.nbd'), 'utf8'), 'precious\n', 'the file at the socket name');
    assert.equal(readFileSync(A('pty', 'late'), 'utf8'), 'root-owned\n');
    assert.equal(readFileSync(B('pty', 'late'), 'utf8'), 'root-owned\n');
    assert.equal(readlinkSync(A('disks', 'd1.img')), secret);
    assert.equal(readlinkSync(A('logs', 'late.log')), keys);
    assert.equal(sha(secret), secretSha);
    assert.equal(sha(keys), keysSha);
  });
});
