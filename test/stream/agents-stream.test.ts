/**
 * Two real agents, each in its own network namespace, joined by a veth pair, carry a stream link
 * (transport: stream over TCP with HMAC authentication): a virtio-net device with a TAP on each
 * side (ping and iperf3 TCP both ways between the namespaces behind the TAPs) and a console (bytes
 * both ways between the ptys); once more over a Unix socket, with a blk device as well (nbdcopy of
 * an image through the driver agent's NBD export, checksums equal). The secret is write-only (GetLink and ListLinks return it empty, no log line
 * of either agent contains it), status shows the connection (state, peer, RTT, bytes). A second
 * link whose driver side has the wrong secret is refused on both ends with the reason in its
 * status, and a hostile client on its listener (an oversized frame) ends only that connection:
 * the agents stay up and the first link stays Ready.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, StreamProtocol, type Device, type Link } from '../../lib/proto/types';
import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink } from '../agent/helpers';
import { consoleBothWays, iperfBothWays, nbdcopy, pingUntil, tapAndConsoleDevices, tapUp, VethPair } from './helpers';

const MIB = 1 << 20;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const missing = [
  ...(isRoot() ? [] : ['root']),
  ...(existsSync('/dev/net/tun') ? [] : ['/dev/net/tun']),
  ...['ping', 'ip', 'python3', 'iperf3', 'nbdcopy'].filter((c) => !haveCommand(c)),
];
const skip = requirePrereq(missing.join(', '), missing.length === 0, 'network namespaces and TAPs');

function streamLink(name: string, port: number | string, secret: string, devices: Device[]): Link {
  const l = makeLink(name, { devices });
  if (!l.spec) throw new Error('no spec');
  l.spec.transport = {
    kind: {
      $case: 'stream',
      value: {
        protocol: typeof port === 'string' ? StreamProtocol.STREAM_PROTOCOL_UNIX : StreamProtocol.STREAM_PROTOCOL_TCP,
        address: typeof port === 'string' ? port : `10.81.0.1:${port}`,
        listenAddress: '',
        secret,
        allowPlaintext: false,
        idleTimeoutMs: 0,
        disableTls: false,
        tlsPeerName: '',
      },
    },
  };
  return l;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('two agents in two namespaces over a stream link', { skip }, () => {
  let v: VethPair;
  let dir = '';
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  const secret = randomBytes(24).toString('hex');

  before(async () => {
    v = new VethPair('vsg', 81);
    dir = tempDir('stream-agents');
    // One directory is every root of both agents: the Unix link's socket lies in both socketDirs.
    const roots = ['--pty-dir', dir, '--socket-dir', dir, '--disk-dir', dir];
    srvA = await startServer(
      'agent',
      ['--node-name', 'host-a', '--rendezvous-dir', path.join(dir, 'rdv-a'), ...roots],
      {
        wrap: ['ip', 'netns', 'exec', v.a],
      },
    );
    srvB = await startServer(
      'agent',
      ['--node-name', 'card-b', '--rendezvous-dir', path.join(dir, 'rdv-b'), ...roots],
      {
        wrap: ['ip', 'netns', 'exec', v.b],
      },
    );
    a = new Agent(srvA.admin);
    b = new Agent(srvB.admin);
  });
  after(async () => {
    a?.close();
    b?.close();
    await Promise.all([srvA?.stop('SIGTERM'), srvB?.stop('SIGTERM')]);
    v?.remove();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('carries ping between the namespaces behind the TAPs and console bytes both ways, with a write-only secret and the connection in status', async () => {
    const devices: Device[] = tapAndConsoleDevices(dir, 'vsgd', 'vsgr');
    const link = streamLink('st', 7421, secret, devices);
    await Promise.all([a.apply(link), b.apply(link)]);
    const la = await a.waitPhase('st', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('st', LinkPhase.LINK_PHASE_READY, 30_000);

    // Write-only: the secret never comes back.
    const t = la.spec?.transport?.kind;
    assert.equal(t?.$case, 'stream');
    assert.equal(t?.$case === 'stream' ? t.value.secret : 'x', '');
    const listed = (await b.list()).links.find((l) => l.meta?.name === 'st');
    const tb = listed?.spec?.transport?.kind;
    assert.equal(tb?.$case === 'stream' ? tb.value.secret : 'x', '');

    tapUp(v.ns, v.a, 'vsgd', '10.82.0.1/24');
    tapUp(v.ns, v.b, 'vsgr', '10.82.0.2/24');
    assert.ok(await pingUntil(v.ns, v.a, '10.82.0.2'), 'ping from the device side namespace');
    assert.ok(await pingUntil(v.ns, v.b, '10.82.0.1'), 'ping from the driver side namespace');
    iperfBothWays(v, '10.82.0.2', 'TCP stream link');

    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));

    const st = await until('a measured RTT', async () => {
      const s = (await b.get('st')).link?.status?.stream;
      return s && s.rttNs > 0n ? s : undefined;
    });
    assert.equal(st.state, 'ready');
    assert.match(st.peerAddress, /^10\.81\.0\.1:7421$/);
    assert.ok(st.bytesSent > 0n && st.bytesReceived > 0n);
    assert.equal(st.connections, 1n);
    const sa = (await a.get('st')).link?.status?.stream;
    assert.equal(sa?.state, 'ready');
    assert.match(sa?.peerAddress ?? '', /^10\.81\.0\.2:\d+$/);
    console.log(
      `stream status (driver side): rtt ${Number(st.rttNs) / 1000} us, sent ${st.bytesSent}, received ${st.bytesReceived}`,
    );
    // Metrics per link.
    // (the agent's metrics listener is on 127.0.0.1 of its namespace)
    const m = v.ns.exec(v.b, 'python3', [
      '-c',
      `import urllib.request; print(urllib.request.urlopen("http://${srvB.metrics}/metrics").read().decode())`,
    ]).stdout;
    assert.match(m, /^vop_stream_connected\{link="st"\} 1$/m);
    assert.match(m, /^vop_stream_bytes_total\{link="st",direction="sent"\} [1-9]/m);
    assert.match(m, /^vop_stream_connections_total\{link="st"\} 1$/m);
    for (const s of [srvA, srvB])
      assert.ok(!s.logs.some((r) => JSON.stringify(r).includes(secret)), 'no log line holds the secret');
  });

  it('rotates the secret: a new one on the device side alone is refused, on both sides the link is Ready again', async () => {
    const link = (await a.get('st')).link;
    assert.ok(link?.spec);
    const rotated = randomBytes(24).toString('hex');
    const next = streamLink('st', 7421, rotated, link.spec.devices);
    await a.apply(next);
    await until('the old secret refused', async () => {
      const s = (await a.get('st')).link?.status?.stream;
      return s && /authentication failed/.test(s.lastError) ? true : undefined;
    });
    await b.apply(next);
    await a.waitPhase('st', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('st', LinkPhase.LINK_PHASE_READY, 30_000);
    // The restart recreated the TAPs (a link reset closes and reopens the backends).
    tapUp(v.ns, v.a, 'vsgd', '10.82.0.1/24');
    tapUp(v.ns, v.b, 'vsgr', '10.82.0.2/24');
    assert.ok(await pingUntil(v.ns, v.a, '10.82.0.2'), 'traffic with the new secret');
    for (const s of [srvA, srvB])
      assert.ok(!s.logs.some((r) => JSON.stringify(r).includes(rotated)), 'no log line holds the new secret');
  });

  it('refuses a wrong secret on both ends with the reason in status; a hostile client ends only its own connection', async () => {
    const devices: Device[] = [
      {
        name: 'con1',
        queueSize: 0,
        disableEventIdx: false,
        kind: { $case: 'console', value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined } },
      },
    ];
    await a.apply(streamLink('bad', 7423, secret, devices));
    await b.apply(streamLink('bad', 7423, randomBytes(24).toString('hex'), devices));
    const refused = async (ag: Agent): Promise<string> =>
      until('the refusal in status', async () => {
        const s = (await ag.get('bad')).link?.status?.stream;
        return s && /authentication failed/.test(s.lastError) ? s.lastError : undefined;
      });
    assert.match(await refused(a), /authentication failed/);
    assert.match(await refused(b), /authentication failed/);
    // The link's condition says why, on both ends (what `vopctl get` and the controller show).
    for (const ag of [a, b])
      await until('the refusal in the PeerConnected condition', async () => {
        const cond = (await ag.get('bad')).link?.status?.conditions.find((x) => x.type === 'PeerConnected');
        return cond?.reason === 'StreamConnectionFailed' && /authentication failed/.test(cond.message)
          ? true
          : undefined;
      });
    assert.notEqual((await a.get('bad')).link?.status?.phase, LinkPhase.LINK_PHASE_READY);
    await b.delete('bad');

    // A hostile client (from the driver namespace): a hello frame that claims 1 GiB.
    const r = v.ns.exec(v.b, 'python3', [
      '-c',
      'import socket,struct,time\ns=socket.create_connection(("10.81.0.1",7423))\n' +
        's.sendall(struct.pack("<IBBH",1<<30,1,0,0))\ntime.sleep(1)\n',
    ]);
    assert.equal(r.code, 0, r.stderr);
    await until('the hostile connection refused', async () => {
      const s = (await a.get('bad')).link?.status?.stream;
      return s && /exceeds the negotiated max_frame/.test(s.lastError) ? true : undefined;
    });
    assert.equal(srvA.logs.length > 0, true);
    assert.equal((await a.get('st')).link?.status?.phase, LinkPhase.LINK_PHASE_READY, 'the other link stays up');
    assert.ok(await pingUntil(v.ns, v.a, '10.82.0.2'), 'and still carries traffic');
  });

  it('once more over a Unix socket: ping and iperf3 both ways, console bytes both ways, nbdcopy of an image through the driver agent with equal checksums', async () => {
    // The TCP link's TAPs and ptys are reused by name: it goes first.
    await Promise.all([a.delete('st'), b.delete('st'), a.delete('bad')]);
    const disk = path.join(dir, 'ux-disk.img');
    const nbdSock = path.join(dir, 'ux-nbd.sock');
    writeFileSync(disk, Buffer.alloc(8 * MIB));
    const devices: Device[] = [
      ...tapAndConsoleDevices(dir, 'vsgd', 'vsgr'),
      {
        name: 'disk0',
        queueSize: 0,
        disableEventIdx: false,
        kind: {
          $case: 'blk',
          value: {
            backing: { path: disk, readOnly: false, directIo: false, serial: '' },
            export: { unixSocket: nbdSock, tcpListen: '', exportName: 'vop' },
          },
        },
      },
    ];
    const link = streamLink('ux', path.join(dir, 'ux.sock'), secret, devices);
    await Promise.all([a.apply(link), b.apply(link)]);
    await a.waitPhase('ux', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('ux', LinkPhase.LINK_PHASE_READY, 30_000);
    const st = (await b.get('ux')).link?.status?.stream;
    assert.equal(st?.peerAddress, 'unix');
    assert.equal(st?.security, 'hmac', 'authenticated over Unix too');

    tapUp(v.ns, v.a, 'vsgd', '10.82.0.1/24');
    tapUp(v.ns, v.b, 'vsgr', '10.82.0.2/24');
    assert.ok(await pingUntil(v.ns, v.a, '10.82.0.2'), 'ping from the device side namespace');
    assert.ok(await pingUntil(v.ns, v.b, '10.82.0.1'), 'ping from the driver side namespace');
    iperfBothWays(v, '10.82.0.2', 'Unix stream link');

    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));

    const img = randomBytes(4 * MIB);
    const src = path.join(dir, 'ux-src.img');
    writeFileSync(src, img);
    const uri = `nbd+unix:///vop?socket=${nbdSock}`;
    await nbdcopy(['--flush', src, uri]);
    assert.equal(sha256(readFileSync(disk).subarray(0, img.length)), sha256(img), 'the backing file holds the image');
    const back = path.join(dir, 'ux-back.img');
    await nbdcopy([uri, back]);
    assert.equal(sha256(readFileSync(back).subarray(0, img.length)), sha256(img), 'it reads back through the link');
    await Promise.all([a.delete('ux'), b.delete('ux')]);
    assert.ok(!existsSync(path.join(dir, 'ux.sock')), 'the device side removed its socket');
  });
});
