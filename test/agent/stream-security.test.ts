/**
 * Unit tests of how a stream link authenticates on an agent (agent/src/links/stream-security.ts):
 * the certificates from the config (streamTls, else tls with a ca; the key mode checked), TLS on
 * by default with them and its peer identity (the other endpoint's agent name, tls_peer_name only
 * without one), and the refusals at apply (an unauthenticated link, a wrong tls_peer_name).
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

import { Role, StreamProtocol, type Link, type LinkSpec, type StreamTransport } from '../../lib/proto/types';
import { ServerError } from '../../lib/src/errors';
import {
  checkStreamSecurity,
  streamTlsFor,
  streamTlsFromConfig,
  type StreamTlsFiles,
} from '../../agent/src/links/stream-security';
import { makeLink } from './helpers';

const dir = mkdtempSync(path.join(os.tmpdir(), 'stream-security-'));
const file = (name: string, mode = 0o600): string => {
  const p = path.join(dir, name);
  writeFileSync(p, 'x');
  chmodSync(p, mode);
  return p;
};
const FILES: StreamTlsFiles = { ca: '/pki/ca.pem', cert: '/pki/a.pem', key: '/pki/a.key', field: 'streamTls' };

function streamLink(t: Partial<StreamTransport>, endpoints?: LinkSpec['endpoints']): Link & { spec: LinkSpec } {
  const l = makeLink('s1');
  if (!l.spec) throw new Error('no spec');
  if (endpoints) l.spec.endpoints = endpoints;
  l.spec.transport = {
    kind: {
      $case: 'stream',
      value: {
        protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
        address: '10.0.0.1:7400',
        listenAddress: '',
        secret: '',
        allowPlaintext: false,
        idleTimeoutMs: 0,
        disableTls: false,
        tlsPeerName: '',
        ...t,
      },
    },
  };
  return l as Link & { spec: LinkSpec };
}

function refusal(f: () => void): string {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ServerError);
    return `${e.code} ${JSON.stringify(e.fieldViolations)}`;
  }
  return 'accepted';
}

describe('stream link security on an agent', () => {
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('takes streamTls, else tls when it has a ca, and refuses a key readable by others naming it', () => {
    const ca = file('ca.pem', 0o644);
    const cert = file('a.pem', 0o644);
    const key = file('a.key', 0o600);
    assert.equal(streamTlsFromConfig({}), null);
    assert.equal(streamTlsFromConfig({ tls: { cert, key } }), null, 'no ca: no mutual TLS');
    assert.equal(streamTlsFromConfig({ tls: { ca, cert, key } })?.field, 'tls');
    assert.equal(streamTlsFromConfig({ streamTls: { ca, cert, key }, tls: { ca, cert, key } })?.field, 'streamTls');
    const open = file('b.key', 0o640);
    assert.throws(
      () => streamTlsFromConfig({ streamTls: { ca, cert, key: open } }),
      /streamTls\.key: .*b\.key has mode 0640/,
    );
    assert.throws(() => streamTlsFromConfig({ tls: { ca, cert, key: open } }), /tls\.key: .*has mode 0640/);
    assert.throws(
      () => streamTlsFromConfig({ streamTls: { ca, cert: path.join(dir, 'none.pem'), key } }),
      /streamTls\.cert: /,
    );
  });

  it('runs TLS by default with certificates, expecting the other endpoint agent name; disable_tls turns it off', () => {
    const l = streamLink({});
    const t = l.spec.transport?.kind?.$case === 'stream' ? l.spec.transport.kind.value : undefined;
    assert.ok(t);
    assert.deepEqual(streamTlsFor(l.spec, t, 'host-a', FILES), {
      ca: FILES.ca,
      cert: FILES.cert,
      key: FILES.key,
      peerId: 'card-b',
    });
    assert.equal(streamTlsFor(l.spec, t, 'card-b', FILES)?.peerId, 'host-a');
    assert.equal(streamTlsFor(l.spec, { ...t, disableTls: true }, 'host-a', FILES), null);
    assert.equal(streamTlsFor(l.spec, t, 'host-a', null), null);
  });

  it('refuses an unauthenticated link on an agent without certificates, naming the secret field', () => {
    assert.equal(
      refusal(() => checkStreamSecurity(streamLink({}), 'host-a', FILES)),
      'accepted',
    );
    assert.match(
      refusal(() => checkStreamSecurity(streamLink({}), 'host-a', null)),
      /^3 .*link\.spec\.transport\.stream\.secret.*has no stream certificates/,
    );
    assert.equal(
      refusal(() => checkStreamSecurity(streamLink({ secret: 'x'.repeat(16) }), 'host-a', null)),
      'accepted',
    );
    assert.equal(
      refusal(() => checkStreamSecurity(streamLink({ allowPlaintext: true }), 'host-a', null)),
      'accepted',
    );
  });

  it('needs tls_peer_name with one agent endpoint, and refuses one that is not the other agent', () => {
    const one = [{ agent: 'host-a', role: Role.ROLE_DEVICE }];
    assert.match(
      refusal(() => checkStreamSecurity(streamLink({}, one), 'host-a', FILES)),
      /^3 .*tls_peer_name.*is required/,
    );
    assert.equal(
      refusal(() => checkStreamSecurity(streamLink({ tlsPeerName: 'card-x' }, one), 'host-a', FILES)),
      'accepted',
    );
    assert.match(
      refusal(() => checkStreamSecurity(streamLink({ tlsPeerName: 'card-x' }), 'host-a', FILES)),
      /^3 .*tls_peer_name.*must be empty \(or \\"card-b\\"\)/,
    );
  });
});
