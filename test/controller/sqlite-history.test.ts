/**
 * The SQLite store's in-memory watch history is bounded in bytes as well as in events: events carry
 * whole objects, so a count alone let a stream of large objects (256 KiB annotations) hold hundreds
 * of MiB (test/security/limits.test.ts measured it as controller RSS). A watch from before what the
 * history still holds gets a resync with the complete state instead.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, describe, it } from 'node:test';

import { HISTORY_BYTES, SqliteStore } from '../../controller/src/store/sqlite-store';
import type { WatchBatch } from '../../controller/src/store/store';
import { tempDir } from '../helpers/servers';

describe('SQLite store watch history', () => {
  const dir = tempDir('sqlite-history');
  const store = new SqliteStore(dir);
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps at most HISTORY_BYTES of objects and resyncs a watch from before them', async () => {
    const big = new Uint8Array(256 * 1024).fill(0x7a);
    const first = await store.commit([{ op: 'put', kind: 'link', name: 'big-0', data: big }]);
    const count = Math.ceil((2 * HISTORY_BYTES) / big.byteLength);
    let last = first;
    for (let i = 1; i < count; i++)
      last = await store.commit([{ op: 'put', kind: 'link', name: `big-${i}`, data: big }]);

    const batches = async (from: bigint): Promise<WatchBatch[]> => {
      const got: WatchBatch[] = [];
      const w = store.watch(from, { onBatch: (b) => got.push(b) });
      await new Promise((r) => setImmediate(r));
      w.close();
      return got;
    };
    const old = await batches(first - 1n);
    assert.equal(old.length, 1);
    assert.equal(old[0]?.type, 'resync');
    if (old[0]?.type === 'resync') {
      assert.equal(old[0].reason, 'compacted');
      assert.equal(old[0].objects.length, count);
    }
    // What the bound allows is still replayed as events.
    const kept = Math.floor(HISTORY_BYTES / big.byteLength);
    const recent = await batches(last - BigInt(kept - 1));
    assert.equal(recent.length, kept - 1);
    assert.ok(recent.every((b) => b.type === 'events'));
  });
});
