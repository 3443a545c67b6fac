/**
 * Unit tests of the stream transport's validation (lib/src/validate.ts, shared by controller and
 * agent): vsock addresses (CID:PORT, "any" to listen), the authentication rules with TLS (a link
 * without a secret is left to each agent, which checks it has certificates; with disable_tls it
 * needs a secret or allow_plaintext), and tls_peer_name.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { StreamProtocol, type StreamTransport } from '../../lib/proto/types';
import { ViolationList } from '../../lib/src/errors';
import { checkTransport } from '../../lib/src/validate';

function violations(t: Partial<StreamTransport>): string[] {
  const v = new ViolationList();
  const value: StreamTransport = {
    protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
    address: '10.0.0.1:7400',
    listenAddress: '',
    secret: '',
    allowPlaintext: false,
    idleTimeoutMs: 0,
    disableTls: false,
    tlsPeerName: '',
    ...t,
  };
  checkTransport(v, 'link.spec.transport', { kind: { $case: 'stream', value } });
  return v.items.map((i) => `${i.field}: ${i.description}`);
}

describe('stream transport validation', () => {
  it('accepts vsock CID:PORT addresses and "any" as the CID of a listen address', () => {
    const vsock = StreamProtocol.STREAM_PROTOCOL_VSOCK;
    assert.deepEqual(violations({ protocol: vsock, address: '3:7400' }), []);
    assert.deepEqual(violations({ protocol: vsock, address: '1:5000', listenAddress: 'any:5000' }), []);
    assert.deepEqual(violations({ protocol: vsock, address: '4294967294:4294967294' }), []);
  });

  it('refuses malformed vsock addresses, naming the field and the form', () => {
    const vsock = StreamProtocol.STREAM_PROTOCOL_VSOCK;
    for (const a of ['10.0.0.1:7400', '3', ':5', '3:0', '3:-1', 'x:5', '03:5', '4294967295:5', '3:4294967295']) {
      const got = violations({ protocol: vsock, address: a });
      assert.equal(got.length, 1, `${a}: ${got.join('; ')}`);
      assert.match(
        got[0] ?? '',
        /^link\.spec\.transport\.stream\.address: ".*" must be a vsock CID and port, CID:PORT/,
      );
    }
  });

  it('leaves a link without a secret to the agents (TLS), but needs a secret or allow_plaintext with disable_tls', () => {
    assert.deepEqual(violations({}), []);
    assert.match(
      violations({ disableTls: true }).join(),
      /stream\.secret: is required with disable_tls unless allow_plaintext/,
    );
    assert.deepEqual(violations({ disableTls: true, allowPlaintext: true }), []);
    assert.deepEqual(violations({ disableTls: true, secret: 'x'.repeat(16) }), []);
  });

  it('checks tls_peer_name: a DNS name, and not with disable_tls', () => {
    assert.deepEqual(violations({ tlsPeerName: 'card-b.rack-1' }), []);
    assert.match(violations({ tlsPeerName: 'Card B' }).join(), /tls_peer_name: "Card B" must be a DNS name/);
    assert.match(
      violations({ tlsPeerName: 'card-b', disableTls: true, allowPlaintext: true }).join(),
      /tls_peer_name: must be empty with disable_tls/,
    );
  });
});
