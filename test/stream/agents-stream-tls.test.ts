/**
 * Two real agents, each in its own network namespace joined by a veth pair, with stream
 * certificates (streamTls: a CA, a certificate naming the agent as a DNS subjectAltName, a 0600
 * key; made with the openssl CLI at test time). A stream link with no secret runs TLS 1.3 alone
 * (on by default): ping between the namespaces behind the TAPs and console bytes both ways, the
 * status says TLSv1.3. Then each wrong certificate of the driver side (the agent re-reads its
 * files at each handshake: they are swapped in place) is refused on a second link with the reason
 * in both agents' status and the PeerConnected condition: a certificate of another CA, an expired
 * one, one for another agent; the good one back in place is used by the next connection (no
 * restart); a plaintext peer against the TLS listener is refused too. The agents stay up, and the first link
 * stays Ready and carries traffic. An agent whose key file is readable by others does not start.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { LinkPhase, StreamProtocol, type Device, type Link } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { haveCommand, isRoot, requirePrereq } from '../helpers/prereq';
import { startServer, tempDir, type ServerProcess } from '../helpers/servers';
import { Agent, makeLink } from '../agent/helpers';
import { consoleBothWays, pingUntil, tapAndConsoleDevices, tapUp, VethPair } from './helpers';
import { TestPki, type CertFiles } from './tls-certs';

const missing = [
  ...(isRoot() ? [] : ['root']),
  ...(existsSync('/dev/net/tun') ? [] : ['/dev/net/tun']),
  ...['ping', 'ip', 'openssl'].filter((c) => !haveCommand(c)),
];
const skip = requirePrereq(missing.join(', '), missing.length === 0, 'network namespaces, TAPs and openssl');

function tlsLink(
  name: string,
  port: number,
  devices: Device[],
  extra: { disableTls?: boolean; allowPlaintext?: boolean } = {},
): Link {
  const l = makeLink(name, { devices });
  if (!l.spec) throw new Error('no spec');
  l.spec.transport = {
    kind: {
      $case: 'stream',
      value: {
        protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
        address: `10.61.0.1:${port}`,
        listenAddress: '',
        secret: '',
        allowPlaintext: extra.allowPlaintext ?? false,
        idleTimeoutMs: 0,
        disableTls: extra.disableTls ?? false,
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

const consoleOnly = (name: string): Device[] => [
  {
    name,
    queueSize: 0,
    disableEventIdx: false,
    kind: { $case: 'console', value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined } },
  },
];

describe('two agents in two namespaces over a TLS 1.3 stream link', { skip }, () => {
  let v: VethPair;
  let dir = '';
  let pki: TestPki;
  let srvA: ServerProcess;
  let srvB: ServerProcess;
  let a: Agent;
  let b: Agent;
  let bLive: CertFiles; // agent b's stream certificate files, swapped in place by the refusal test
  let bGood: CertFiles;

  function agentConfig(name: string, files: CertFiles): string {
    const p = path.join(dir, `${name}.yaml`);
    writeFileSync(p, `streamTls:\n  ca: ${pki.ca}\n  cert: ${files.cert}\n  key: ${files.key}\n`);
    return p;
  }

  before(async () => {
    v = new VethPair('vtl', 61);
    dir = tempDir('stream-tls-agents');
    pki = new TestPki(dir);
    const aFiles = pki.issue('host-a');
    bGood = pki.issue('card-b');
    bLive = { cert: path.join(dir, 'b-live.pem'), key: path.join(dir, 'b-live.key') };
    copyFileSync(bGood.cert, bLive.cert);
    copyFileSync(bGood.key, bLive.key);
    chmodSync(bLive.key, 0o600);
    const roots = ['--pty-dir', dir];
    srvA = await startServer(
      'agent',
      [
        '--config',
        agentConfig('host-a', aFiles),
        '--node-name',
        'host-a',
        '--rendezvous-dir',
        path.join(dir, 'rdv-a'),
        ...roots,
      ],
      { wrap: ['ip', 'netns', 'exec', v.a] },
    );
    srvB = await startServer(
      'agent',
      [
        '--config',
        agentConfig('card-b', bLive),
        '--node-name',
        'card-b',
        '--rendezvous-dir',
        path.join(dir, 'rdv-b'),
        ...roots,
      ],
      { wrap: ['ip', 'netns', 'exec', v.b] },
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

  it('carries ping and console bytes both ways over TLS 1.3 alone (no secret), the status saying so', async () => {
    const devices: Device[] = tapAndConsoleDevices(dir, 'vtld', 'vtlr');
    const link = tlsLink('tl', 7441, devices);
    await Promise.all([a.apply(link), b.apply(link)]);
    await a.waitPhase('tl', LinkPhase.LINK_PHASE_READY, 30_000);
    await b.waitPhase('tl', LinkPhase.LINK_PHASE_READY, 30_000);
    tapUp(v.ns, v.a, 'vtld', '10.62.0.1/24');
    tapUp(v.ns, v.b, 'vtlr', '10.62.0.2/24');
    assert.ok(await pingUntil(v.ns, v.a, '10.62.0.2'), 'ping from the device side namespace');
    assert.ok(await pingUntil(v.ns, v.b, '10.62.0.1'), 'ping from the driver side namespace');
    await consoleBothWays(path.join(dir, 'host.pty'), path.join(dir, 'card.pty'));
    for (const ag of [a, b]) {
      const s = (await ag.get('tl')).link?.status?.stream;
      assert.equal(s?.state, 'ready');
      assert.match(s?.security ?? '', /^TLSv1\.3 TLS_/, 'TLS 1.3 alone (no hmac)');
      assert.doesNotMatch(s?.security ?? '', /hmac/);
      assert.equal(s?.connections, 1n);
    }
  });

  it('refuses a certificate of another CA, an expired one, one for another agent and a plaintext peer, each with its reason; the agents and the first link stay up', async () => {
    await a.apply(tlsLink('bad', 7443, consoleOnly('con1')));
    await b.apply(tlsLink('bad', 7443, consoleOnly('con1')));
    await a.waitPhase('bad', LinkPhase.LINK_PHASE_READY, 30_000);

    const lastError = async (ag: Agent, re: RegExp): Promise<string> =>
      until(`${re} in status`, async () => {
        const s = (await ag.get('bad')).link?.status?.stream;
        return s && re.test(s.lastError) ? s.lastError : undefined;
      });
    const swap = (f: CertFiles): void => {
      // The key first: a handshake between the two copies fails (key and certificate differ) and
      // the next one reads the pair.
      copyFileSync(f.key, bLive.key);
      copyFileSync(f.cert, bLive.cert);
    };
    const cases: { what: string; files: CertFiles; device: RegExp; driver: RegExp }[] = [
      {
        what: 'a certificate of another CA',
        files: pki.issue('card-b', { file: 'card-b-ca2', ca: 'ca2' }),
        device: /peer certificate refused: unable to get local issuer certificate/,
        driver: /refused our TLS handshake \(tlsv1 alert unknown ca\)/,
      },
      {
        what: 'an expired certificate',
        files: pki.issue('card-b', { file: 'card-b-expired', days: -1 }),
        device: /peer certificate refused: certificate has expired/,
        driver: /refused our TLS handshake \(sslv3 alert certificate expired\)/,
      },
      {
        what: 'a certificate for another agent',
        files: pki.issue('card-c'),
        device: /peer certificate refused: it does not name card-b/,
        driver: /refused our TLS handshake \(sslv3 alert bad certificate\)/,
      },
    ];
    // The stream connection is up; a reconnect happens on a link reset: swap, then reset it by
    // re-applying with a new idle timeout (a spec change restarts the stream).
    let idle = 20_000;
    for (const c of cases) {
      swap(c.files);
      const l = tlsLink('bad', 7443, consoleOnly('con1'));
      if (l.spec?.transport?.kind?.$case === 'stream') l.spec.transport.kind.value.idleTimeoutMs = idle++;
      await Promise.all([a.apply(l), b.apply(l)]);
      const dev = await lastError(a, c.device);
      const drv = await lastError(b, c.driver);
      // And in the link's condition.
      await until(`${c.what} in the PeerConnected condition`, async () => {
        const cond = (await a.get('bad')).link?.status?.conditions.find((x) => x.type === 'PeerConnected');
        return cond?.reason === 'StreamConnectionFailed' && c.device.test(cond.message) ? true : undefined;
      });
      console.log(`${c.what}: device side "${dev}"; driver side "${drv}"`);
      assert.notEqual((await b.get('bad')).link?.status?.phase, LinkPhase.LINK_PHASE_READY);
    }
    // The good certificate back in place: the next connection uses it (no agent restart).
    swap(bGood);
    {
      const l = tlsLink('bad', 7443, consoleOnly('con1'));
      if (l.spec?.transport?.kind?.$case === 'stream') l.spec.transport.kind.value.idleTimeoutMs = idle++;
      await Promise.all([a.apply(l), b.apply(l)]);
      await b.waitPhase('bad', LinkPhase.LINK_PHASE_READY, 30_000);
      await a.waitPhase('bad', LinkPhase.LINK_PHASE_READY, 30_000);
    }

    // A plaintext peer (the driver side without TLS, explicitly) against the TLS listener.
    await b.apply(tlsLink('bad', 7443, consoleOnly('con1'), { disableTls: true, allowPlaintext: true }));
    const plain = await lastError(a, /the peer does not speak TLS 1\.3/);
    console.log(`a plaintext peer: device side "${plain}"`);

    assert.equal(srvA.proc.exitCode, null, 'agent a is up');
    assert.equal(srvB.proc.exitCode, null, 'agent b is up');
    assert.equal((await a.get('tl')).link?.status?.phase, LinkPhase.LINK_PHASE_READY, 'the first link stays up');
    assert.ok(await pingUntil(v.ns, v.b, '10.62.0.1'), 'and still carries traffic');
    await Promise.all([a.delete('bad'), b.delete('bad')]);
  });

  it('refuses to start an agent whose stream key is readable by others, naming the key and its mode', () => {
    const f = pki.issue('card-d');
    chmodSync(f.key, 0o644);
    const cfg = agentConfig('card-d', f);
    const r = spawnSync(
      process.execPath,
      [
        repoPath('dist', 'agent', 'src', 'main.js'),
        '--config',
        cfg,
        '--state-dir',
        path.join(dir, 'state-d'),
        '--admin-socket',
        '',
      ],
      { encoding: 'utf8', timeout: 30_000 },
    );
    assert.equal(r.status, 2, r.stderr + r.stdout);
    assert.match(r.stderr + r.stdout, /streamTls\.key: .*card-d\.key has mode 0644/);
  });
});
