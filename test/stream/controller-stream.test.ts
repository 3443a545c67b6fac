/**
 * Stream links the controller completes (issue 15, items 3 and 4), with real processes: a
 * controller and two agents, each agent in its own network namespace (joined by a veth pair),
 * each registering a data-plane address and a port range apart from its gRPC address. A
 * LinkPolicy whose template names neither address nor secret stamps out a stream link between
 * them: the controller fills the device side's listen address and a port of its range, generates
 * a per-link secret (never returned by Get/List, in no log line), delivers it to both agents over
 * the Sync stream; the link carries console bytes both ways and a blk image through the driver
 * agent's NBD export (512 KiB segments chosen by the agent), checksums equal. Ports: the next link
 * gets the next port, a link past the range is refused naming the field, a deleted link frees its
 * port, a controller restart keeps port and secret. After the store is lost, `vopctl adopt` takes
 * the link back although the agents report its secret redacted: the controller generates a new
 * one, both agents rotate to it, and the link carries bytes again.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { Metadata, status, type ServiceError } from '@grpc/grpc-js';

import { SQLITE_FILE } from '../../controller/src/store/sqlite-store';
import { ControllerServiceClient } from '../../lib/proto/controller';
import { Link, LinkPhase, LinkPolicy, Role, StreamProtocol, type Device } from '../../lib/proto/types';
import { call, decodeStatus, insecure } from '../helpers/grpc';
import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent } from '../agent/helpers';
import { vopctl, waitFor } from '../controller/fleet-helpers';
import { NBD_CMD, NbdClient } from '../devices/helpers';
import { consoleBothWays, nbdcopy, VethPair } from './helpers';

const missing = [...(isRoot() ? [] : ['root']), ...['ip', 'nbdcopy'].filter((c) => !haveCommand(c))];
const skip = requirePrereq(missing.join(', '), missing.length === 0, 'network namespaces and nbdcopy');

const MIB = 1024 * 1024;
const LINK = 'st-card-b';
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The secret an agent stored for a link (its state file, mode 0600), and the file's mode. */
function storedSecret(stateDir: string, link: string): { secret: string; mode: number } {
  const file = path.join(stateDir, 'links', `${link}.json`);
  const env = JSON.parse(readFileSync(file, 'utf8')) as { link: unknown };
  const l = Link.fromJSON(env.link);
  const t = l.spec?.transport?.kind;
  return { secret: t?.$case === 'stream' ? t.value.secret : '', mode: statSync(file).mode & 0o777 };
}

function streamOf(l: Link | undefined): { address: string; listenAddress: string; secret: string } | undefined {
  const t = l?.spec?.transport?.kind;
  return t?.$case === 'stream' ? t.value : undefined;
}

/** nbdcopy with retries while the export comes up (the link may still be connecting). */
interface Write {
  readonly block: number;
  readonly data: Buffer;
  result?: number;
}

/**
 * QD writes of distinct 64 KiB blocks (from `first`) through the NBD export at `sock`, the
 * acknowledgements recorded; `fault` runs from inside the KILL_AFTER-th acknowledgement (so QD-1
 * writes are outstanding) and no write is issued after it. Resolves once the fault ran, with the
 * writes and a function that waits (bounded) for the outstanding ones to settle and closes the client.
 */
async function writesAcrossFault(
  sock: string,
  first: number,
  fault: () => void,
): Promise<{ writes: Write[]; outstanding: number; settle: (ms: number) => Promise<number> }> {
  const BLOCK = 64 * 1024;
  const QD = 8;
  const KILL_AFTER = 48;
  const nbd = await waitFor('the NBD export', () => NbdClient.connect(sock), 60_000, 200);
  const writes: Write[] = [];
  const settled: Promise<void>[] = [];
  let acked = 0;
  let outstanding = -1;
  const issue = (): void => {
    if (outstanding >= 0) return;
    const w: Write = { block: first + writes.length, data: randomBytes(BLOCK) };
    writes.push(w);
    settled.push(
      nbd.request(NBD_CMD.WRITE, BigInt(w.block * BLOCK), BLOCK, w.data).then((r) => {
        w.result = r.error;
        if (r.error === 0) acked++;
        if (acked === KILL_AFTER && outstanding < 0) {
          fault();
          outstanding = writes.filter((x) => x.result === undefined).length;
        }
        issue();
      }),
    );
  };
  for (let i = 0; i < QD; i++) issue();
  await waitFor('the fault', () => outstanding >= 0, 120_000, 20);
  const settle = async (ms: number): Promise<number> => {
    await Promise.race([Promise.all(settled), new Promise((r) => setTimeout(r, ms))]);
    const left = writes.filter((w) => w.result === undefined).length;
    await nbd.close();
    await Promise.all(settled);
    return left;
  };
  return { writes, outstanding, settle };
}

/** Every write the export acknowledged is in the backing file, byte for byte. */
function assertAckedInFile(disk: string, writes: readonly Write[]): void {
  const BLOCK = 64 * 1024;
  const file = readFileSync(disk);
  const acked = writes.filter((w) => w.result === 0);
  assert.ok(acked.length >= 48, `${acked.length} writes acknowledged`);
  for (const w of acked)
    assert.ok(
      file.subarray(w.block * BLOCK, (w.block + 1) * BLOCK).equals(w.data),
      `acknowledged block ${w.block} is in the backing file`,
    );
}

describe('the controller fills stream links: data-plane addresses, port ranges and generated secrets', { skip }, () => {
  let v: VethPair;
  let dir = '';
  let ctlDir = '';
  let stateA = '';
  let stateB = '';
  let ctl: ServerProcess;
  let ctlClient: ControllerServiceClient;
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  let disk = '';
  let sock = '';

  const startController = async (): Promise<void> => {
    ctl = await startServer('controller', [], { stateDir: ctlDir, readyTimeoutMs: 60_000 });
    ctlClient?.close();
    ctlClient = new ControllerServiceClient(ctl.admin, insecure);
  };
  const agentArgs = (name: string, role: 'host' | 'card', ip: string): string[] => [
    '--node-name',
    name,
    '--role',
    role,
    ...(role === 'card' ? ['--host-node', 'host-a'] : []),
    '--rendezvous-dir',
    path.join(dir, `rdv-${name}`),
    '--disk-dir',
    dir,
    '--socket-dir',
    dir,
    '--pty-dir',
    dir,
    '--controller',
    `unix:${ctl.adminSocket}`,
    '--data-plane-address',
    ip,
    '--data-plane-ports',
    '7500-7501',
  ];
  const startA = async (): Promise<void> => {
    srvA = await startServer('agent', agentArgs('host-a', 'host', '10.83.0.1'), {
      stateDir: stateA,
      wrap: ['ip', 'netns', 'exec', v.a],
      readyTimeoutMs: 60_000,
    });
    a = new Agent(srvA.admin);
  };
  const startB = async (): Promise<void> => {
    srvB = await startServer('agent', agentArgs('card-b', 'card', '10.83.0.2'), {
      stateDir: stateB,
      wrap: ['ip', 'netns', 'exec', v.b],
      readyTimeoutMs: 60_000,
    });
    b = new Agent(srvB.admin);
  };
  const getLink = async (name: string): Promise<Link | undefined> => {
    try {
      return (await call(ctlClient, ctlClient.getLink, { name }, new Metadata())).link;
    } catch (err) {
      if ((err as ServiceError).code === status.NOT_FOUND) return undefined;
      throw err;
    }
  };
  const applyLink = (link: Link) => call(ctlClient, ctlClient.applyLink, { link, dryRun: false }, new Metadata());
  const bothReady = async (name: string): Promise<void> => {
    await a.waitPhase(name, LinkPhase.LINK_PHASE_READY, 60_000);
    await b.waitPhase(name, LinkPhase.LINK_PHASE_READY, 60_000);
  };
  const consoleDevice = (name: string): Device => ({
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'console',
      value: {
        deviceBackend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, `${name}-host.pty`) } } },
        driverFrontend: { kind: { $case: 'pty', value: { linkPath: path.join(dir, `${name}-card.pty`) } } },
        log: undefined,
      },
    },
  });
  /** A stream link from host-a (device) to card-b (driver) that names no address and no secret. */
  const bareStreamLink = (name: string): Link => ({
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
      endpoints: [
        { agent: 'host-a', role: Role.ROLE_DEVICE },
        { agent: 'card-b', role: Role.ROLE_DRIVER },
      ],
      transport: {
        kind: {
          $case: 'stream',
          value: {
            protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
            address: '',
            listenAddress: '',
            secret: '',
            allowPlaintext: false,
            idleTimeoutMs: 0,
            disableTls: false,
            tlsPeerName: '',
          },
        },
      },
      devices: [consoleDevice(`${name}-con`)],
    },
    status: undefined,
  });
  const logsHold = (s: string): string[] =>
    [ctl, srvA, srvB].flatMap((p, i) =>
      p.logs.some((r) => JSON.stringify(r).includes(s)) ? [['controller', 'host-a', 'card-b'][i] as string] : [],
    );

  before(async () => {
    v = new VethPair('vsc', 83);
    dir = tempDir('st-ctl');
    ctlDir = tempDir('st-controller');
    stateA = tempDir('st-agent-a');
    stateB = tempDir('st-agent-b');
    disk = path.join(dir, 'disk.img');
    sock = path.join(dir, 'nbd.sock');
    const fd = openSync(disk, 'w', 0o600);
    ftruncateSync(fd, 32 * MIB);
    closeSync(fd);
    await startController();
    await startA();
    await startB();
  });
  after(async () => {
    a?.close();
    b?.close();
    ctlClient?.close();
    await Promise.all([srvA?.stop('SIGKILL'), srvB?.stop('SIGKILL'), ctl?.stop('SIGKILL')]);
    v?.remove();
    for (const d of [dir, ctlDir, stateA, stateB]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('a LinkPolicy stamps a stream link: the controller fills address, port and a write-only generated secret; console both ways and nbdcopy through the driver agent, checksums equal', async () => {
    const policy = LinkPolicy.fromJSON({
      meta: { name: 'st' },
      spec: {
        cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
        hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
        template: {
          cardRole: 'ROLE_DRIVER',
          // A short idle timeout: a path that is down for 5 s ends the connection (then it resets).
          transport: { stream: { protocol: 'STREAM_PROTOCOL_TCP', idleTimeoutMs: 2000 } },
          devices: [
            {
              name: 'con0',
              console: {
                deviceBackend: { pty: { linkPath: path.join(dir, 'host.pty') } },
                driverFrontend: { pty: { linkPath: path.join(dir, 'card.pty') } },
              },
            },
            {
              name: 'disk0',
              // O_DIRECT on the device side: the stream bridge lays request data on 4 KiB boundaries.
              blk: { backing: { path: disk, directIo: true }, export: { unixSocket: sock, exportName: 'vop' } },
            },
          ],
        },
      },
    });
    await call(ctlClient, ctlClient.applyPolicy, { policy, dryRun: false }, new Metadata());
    const stored = await waitFor('the policy stamps the stream link', () => getLink(LINK), 60_000);
    const st = streamOf(stored);
    assert.equal(st?.address, '10.83.0.1:7500', 'the device side agent data-plane address and the first port');
    assert.equal(st?.listenAddress, '10.83.0.1:7500');
    assert.equal(st?.secret, '', 'GetLink never returns the secret');
    const listed = (
      await call(
        ctlClient,
        ctlClient.listLinks,
        { labelSelector: '', agent: '', phase: 0, pageSize: 0, pageToken: '' },
        new Metadata(),
      )
    ).links.find((l) => l.meta?.name === LINK);
    assert.equal(streamOf(listed)?.secret, '', 'ListLinks never returns the secret');

    await bothReady(LINK);
    // Both agents got the same generated secret over the Sync stream, stored 0600.
    const sa = storedSecret(stateA, LINK);
    const sb = storedSecret(stateB, LINK);
    assert.match(sa.secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
    assert.equal(sb.secret, sa.secret, 'both agents hold the same secret');
    assert.equal(sa.mode, 0o600);
    assert.equal(sb.mode, 0o600);
    assert.equal(streamOf((await a.get(LINK)).link)?.secret, '', "the agent's GetLink never returns it");
    const sd = (await b.get(LINK)).link?.status?.stream;
    assert.equal(sd?.peerAddress, '10.83.0.1:7500', 'the driver side dialled the filled address');

    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));

    // A 16 MiB image through the driver agent's NBD export, over the stream link, into the backing file.
    const src = path.join(dir, 'src.img');
    const img = randomBytes(16 * MIB);
    writeFileSync(src, img);
    const uri = `nbd+unix:///vop?socket=${sock}`;
    await nbdcopy(['--flush', src, uri]);
    assert.equal(sha256(readFileSync(disk).subarray(0, img.length)), sha256(img), 'the backing file holds the image');
    const back = path.join(dir, 'back.img');
    await nbdcopy([uri, back]);
    assert.equal(sha256(readFileSync(back).subarray(0, img.length)), sha256(img), 'it reads back through the link');
    const counters = (await b.stats(LINK)).devices.find((d) => d.device === 'disk0');
    assert.ok(counters, 'blk stats on the driver side');

    assert.deepEqual(logsHold(sa.secret), [], 'no log line holds the secret');
    // The controller's store holds it too: owner-only, with its write-ahead log.
    for (const f of ['controller.db', 'controller.db-wal'])
      assert.equal(statSync(path.join(ctlDir, f)).mode & 0o777, 0o600, `${f} is 0600`);
  });

  it('allocates ports from the device agent range: the next link the next port, past the range refused naming the field, a deleted link frees its port', async () => {
    const r1 = await applyLink(bareStreamLink('extra'));
    assert.equal(streamOf(r1.link)?.address, '10.83.0.1:7501');
    assert.equal(streamOf(r1.link)?.secret, '', 'ApplyLink answers without the secret');
    // Applying the same bare spec again keeps port and secret: nothing changes.
    const r2 = await applyLink(bareStreamLink('extra'));
    assert.equal(r2.changed, false, 'a re-apply of the bare spec changes nothing');
    await bothReady('extra');
    await consoleBothWays(path.join(dir, 'extra-con-host.pty'), path.join(dir, 'extra-con-card.pty'));

    await assert.rejects(applyLink(bareStreamLink('more')), (err: ServiceError) => {
      assert.equal(err.code, status.RESOURCE_EXHAUSTED);
      assert.match(err.details, /link\.spec\.transport\.stream\.address/);
      assert.match(err.details, /7500-7501 of agent "host-a" is exhausted/);
      assert.equal(decodeStatus(err).reason, 'DATA_PLANE_PORTS_EXHAUSTED');
      return true;
    });
    assert.equal(await getLink('more'), undefined, 'a refused link is not stored');
    // A policy whose link finds no free port stamps nothing and says why in its Applied condition.
    const p2 = LinkPolicy.fromJSON({
      meta: { name: 'st2' },
      spec: {
        cardSelector: { matchLabels: { 'vop.dev/role': 'card' } },
        hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
        template: {
          cardRole: 'ROLE_DRIVER',
          transport: { stream: { protocol: 'STREAM_PROTOCOL_TCP' } },
          devices: [{ name: 'c', console: {} }],
        },
      },
    });
    await call(ctlClient, ctlClient.applyPolicy, { policy: p2, dryRun: false }, new Metadata());
    const cond = await waitFor('the policy says the ports are exhausted', async () => {
      const p = (await call(ctlClient, ctlClient.getPolicy, { name: 'st2' }, new Metadata())).policy;
      return p?.status?.conditions.find((c) => c.type === 'Applied' && c.reason === 'DataPlanePortsExhausted');
    });
    assert.match(cond.message, /7500-7501 of agent "host-a" is exhausted/);
    assert.equal(await getLink('st2-card-b'), undefined, 'the policy stamped no link without a port');
    await call(ctlClient, ctlClient.deletePolicy, { name: 'st2', resourceVersion: '' }, new Metadata());

    const del = await vopctl(ctl.admin, ['delete', 'link', 'extra']);
    assert.equal(del.code, 0, del.stderr);
    const r3 = await applyLink(bareStreamLink('more'));
    assert.equal(streamOf(r3.link)?.address, '10.83.0.1:7501', 'the deleted link freed its port');
    await bothReady('more');
    const gone = await vopctl(ctl.admin, ['delete', 'link', 'more']);
    assert.equal(gone.code, 0, gone.stderr);
  });

  /** A write and a read of 1 MiB through the export (the link serves again). */
  const serves = async (at: number): Promise<void> => {
    const data = randomBytes(MIB);
    const src = path.join(dir, 'again.bin');
    writeFileSync(src, data);
    const uri = `nbd+unix:///vop?socket=${sock}`;
    await nbdcopy(['--flush', src, uri]);
    assert.equal(sha256(readFileSync(disk).subarray(0, MIB)), sha256(data), `the write reaches the file (${at})`);
  };

  for (const victim of ['device', 'driver'] as const)
    it(`kill -9 of the ${victim} side agent mid-transfer of blk writes over TCP with auth: the link comes back after the restart, no acknowledged write is lost`, async (t) => {
      const first = victim === 'device' ? 64 : 160;
      const srv = victim === 'device' ? srvA : srvB;
      const pid = srv.proc.pid;
      const run1 = await writesAcrossFault(sock, first, () => srv.proc.kill('SIGKILL'));
      await srv.exited();
      (victim === 'device' ? a : b).close();
      await (victim === 'device' ? startA() : startB());
      assert.notEqual((victim === 'device' ? srvA : srvB).proc.pid, pid, 'a new agent process');
      await bothReady(LINK);
      const left = await run1.settle(30_000);
      const failed = run1.writes.filter((w) => w.result !== undefined && w.result !== 0).length;
      t.diagnostic(
        `${run1.writes.length} writes, ${run1.outstanding} outstanding at the kill; afterwards ${failed} failed, ${left} unanswered`,
      );
      assert.ok(run1.outstanding > 0, 'writes were outstanding when the kill landed');
      assertAckedInFile(disk, run1.writes);
      await serves(0);
      // The restarted agent registers its link with the secret emptied (write-only): not drift.
      const metrics = await (await fetch(`http://${ctl.metrics}/metrics`)).text();
      assert.doesNotMatch(metrics, /vop_controller_drift_detected_total\{direction="spec_differs"\} [1-9]/);
    });

  it('veth down for 5 s and up: the link resets and resumes without an agent restart; no acknowledged write is lost', async (t) => {
    const pids = [srvA.proc.pid, srvB.proc.pid];
    const before = (await b.get(LINK)).link?.status?.stream;
    const run1 = await writesAcrossFault(sock, 256, () => v.setUp(false));
    await new Promise((r) => setTimeout(r, 5000));
    v.setUp(true);
    const st = await waitFor(
      'a new connection after the outage',
      async () => {
        const s = (await b.get(LINK)).link?.status?.stream;
        return s && s.state === 'ready' && s.disconnects > (before?.disconnects ?? 0n) ? s : undefined;
      },
      60_000,
    );
    t.diagnostic(`after the outage: ${st.disconnects} disconnects, last error "${st.lastError}"`);
    assert.match(st.lastError, /silent|reset|closed|timed out|refused|EPIPE|ECONNRESET/i, st.lastError);
    await bothReady(LINK);
    const left = await run1.settle(30_000);
    t.diagnostic(`${run1.writes.length} writes, ${run1.outstanding} outstanding at the outage, ${left} unanswered`);
    assertAckedInFile(disk, run1.writes);
    assert.deepEqual([srvA.proc.pid, srvB.proc.pid], pids, 'no agent restarted');
    assert.ok(srvA.proc.exitCode === null && srvB.proc.exitCode === null, 'both agents still run');
    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));
    await serves(1);
  });

  it('over a Unix socket: kill -9 of the device side agent mid-transfer of blk writes, the link comes back, no acknowledged write is lost', async (t) => {
    const uxDisk = path.join(dir, 'ux.img');
    const uxNbd = path.join(dir, 'ux-nbd.sock');
    const fd = openSync(uxDisk, 'w', 0o600);
    ftruncateSync(fd, 32 * MIB);
    closeSync(fd);
    const l = bareStreamLink('ux');
    const spec = l.spec as NonNullable<Link['spec']>;
    spec.transport = {
      kind: {
        $case: 'stream',
        value: {
          protocol: StreamProtocol.STREAM_PROTOCOL_UNIX,
          address: path.join(dir, 'ux.sock'),
          listenAddress: '',
          secret: '',
          allowPlaintext: false,
          idleTimeoutMs: 0,
          disableTls: false,
          tlsPeerName: '',
        },
      },
    };
    spec.devices.push({
      name: 'uxdisk',
      queueSize: 0,
      disableEventIdx: false,
      kind: {
        $case: 'blk',
        value: {
          backing: { path: uxDisk, readOnly: false, directIo: false, serial: '' },
          export: { unixSocket: uxNbd, tcpListen: '', exportName: 'vop' },
        },
      },
    });
    await applyLink(l);
    await bothReady('ux');
    assert.ok(storedSecret(stateA, 'ux').secret.length === 43, 'a generated secret over Unix too');
    const pid = srvA.proc.pid;
    const run1 = await writesAcrossFault(uxNbd, 0, () => srvA.proc.kill('SIGKILL'));
    await srvA.exited();
    a.close();
    await startA();
    assert.notEqual(srvA.proc.pid, pid);
    await bothReady('ux');
    const left = await run1.settle(30_000);
    t.diagnostic(`${run1.writes.length} writes, ${run1.outstanding} outstanding at the kill, ${left} unanswered`);
    assertAckedInFile(uxDisk, run1.writes);
    const del = await vopctl(ctl.admin, ['delete', 'link', 'ux']);
    assert.equal(del.code, 0, del.stderr);
    await bothReady(LINK);
  });

  it('a controller restart keeps port and secret; after the store is lost, adopt generates a new secret both agents rotate to', async () => {
    const before = await getLink(LINK);
    const secret = storedSecret(stateA, LINK).secret;
    await ctl.stop('SIGTERM');
    await startController();
    const again = await waitFor('the link after the restart', () => getLink(LINK), 30_000);
    assert.equal(streamOf(again)?.address, streamOf(before)?.address, 'same port');
    assert.equal(again?.meta?.generation, before?.meta?.generation, 'no new generation');
    // A full desired snapshot reaches the agents after the restart: same secret, no reconnect.
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(storedSecret(stateA, LINK).secret, secret, 'same secret on the device side');
    assert.equal(storedSecret(stateB, LINK).secret, secret, 'same secret on the driver side');

    // Lose the store: the agents keep the link (store identity conflict) and report it redacted.
    await ctl.stop('SIGTERM');
    for (const s of ['', '-wal', '-shm']) rmSync(path.join(ctlDir, SQLITE_FILE + s), { force: true });
    await startController();
    await waitFor('the agents in a store conflict', async () => {
      const r = await vopctl(ctl.admin, ['adopt', '--dry-run']);
      return /agent\/card-b adopted/.test(r.stdout) && /agent\/host-a adopted/.test(r.stdout) ? true : undefined;
    });
    const ad = await vopctl(ctl.admin, ['adopt']);
    assert.equal(ad.code, 0, ad.stderr);
    const adopted = await waitFor('the adopted link', () => getLink(LINK), 30_000);
    assert.equal(streamOf(adopted)?.address, '10.83.0.1:7500', 'the adopted link keeps its address');
    // The controller could not read the secret back: it generated one, and both agents rotate to it.
    const rotated = await waitFor('both agents hold the new secret', async () => {
      const x = storedSecret(stateA, LINK).secret;
      return x !== secret && storedSecret(stateB, LINK).secret === x ? x : undefined;
    });
    assert.match(rotated, /^[A-Za-z0-9_-]{43}$/);
    await bothReady(LINK);
    // The rotation restarted the connection (a new one, whose counters start again).
    await waitFor('the connection ready again', async () => {
      const s = (await b.get(LINK)).link?.status?.stream;
      return s?.state === 'ready' ? s : undefined;
    });
    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));
    assert.deepEqual(logsHold(rotated), [], 'no log line holds the new secret');
    assert.ok(existsSync(sock), 'the export is back');
  });
});
