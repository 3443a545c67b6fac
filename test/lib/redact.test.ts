/**
 * Write-only fields: redactSpec empties a stream link's secret (what Get, List, Watch and Apply
 * answers of agent and controller return) and leaves everything else, and other transports, alone.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { StreamProtocol, type LinkSpec } from '../../lib/proto/types';
import { redactSpec } from '../../lib/src/redact';

function spec(secret: string): LinkSpec {
  return {
    endpoints: [],
    devices: [],
    transport: {
      kind: {
        $case: 'stream',
        value: {
          protocol: StreamProtocol.STREAM_PROTOCOL_TCP,
          address: '10.0.0.1:7400',
          listenAddress: '',
          secret,
          allowPlaintext: false,
          idleTimeoutMs: 0,
          disableTls: false,
          tlsPeerName: '',
        },
      },
    },
  };
}

describe('redactSpec', () => {
  it('empties the stream secret without touching the stored spec or the other fields', () => {
    const s = spec('a-secret-of-sixteen+');
    const r = redactSpec(s);
    const k = r?.transport?.kind;
    assert.equal(k?.$case, 'stream');
    assert.equal(k?.$case === 'stream' ? k.value.secret : 'x', '');
    assert.equal(k?.$case === 'stream' ? k.value.address : '', '10.0.0.1:7400');
    const orig = s.transport?.kind;
    assert.equal(
      orig?.$case === 'stream' ? orig.value.secret : '',
      'a-secret-of-sixteen+',
      'the input is not modified',
    );
    assert.ok(!JSON.stringify(r).includes('a-secret-of-sixteen+'));
  });

  it('returns specs without a secret and other transports as they are', () => {
    const plain = spec('');
    assert.equal(redactSpec(plain), plain);
    const shm: LinkSpec = {
      endpoints: [],
      devices: [],
      transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: 0n } } },
    };
    assert.equal(redactSpec(shm), shm);
    assert.equal(redactSpec(undefined), undefined);
  });
});
