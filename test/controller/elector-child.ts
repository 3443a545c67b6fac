/**
 * A controller replica reduced to its leadership, as a process a test can SIGSTOP:
 * opens the etcd store, campaigns, and prints every LeaderState as a JSON line. On
 * stdin, `write NAME DATA` commits a put of link NAME with the fence it held when it
 * last led (not re-checking that it still leads: a reconciler pass that started while
 * it led does the same), and prints the outcome; `exit` resigns and exits.
 *
 * argv: ENDPOINTS(comma-separated) PREFIX VALUE TTL_SECONDS
 */
import readline from 'node:readline';

import { ETCD_DEFAULTS } from '../../controller/src/store/etcd-client';
import { EtcdStore } from '../../controller/src/store/etcd-store';
import type { Fence } from '../../controller/src/store/leader-election';
import { StoreFencedError } from '../../controller/src/store/store';

const [endpoints = '', prefix = '/vop/', value = 'child', ttl = '2'] = process.argv.slice(2);

const say = (o: Record<string, unknown>): void => {
  process.stdout.write(`${JSON.stringify(o, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
};

async function main(): Promise<void> {
  const store = new EtcdStore({ ...ETCD_DEFAULTS, endpoints: endpoints.split(','), prefix });
  await store.loadSnapshot();
  const elector = store.elector(value, { ttlSeconds: Number(ttl) });
  let heldFence: Fence | null = null;
  elector.observe((s) => {
    if (s.role === 'leader') heldFence = s.fence;
    say({ state: s });
  });
  elector.campaign();
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const [cmd, name = '', data = ''] = line.trim().split(' ');
    if (cmd === 'exit') break;
    if (cmd !== 'write') continue;
    if (!heldFence) {
      say({ write: 'never-led' });
      continue;
    }
    try {
      const rev = await store.commit([{ op: 'put', kind: 'link', name, data: Buffer.from(data) }], {
        fence: heldFence,
      });
      say({ write: 'ok', revision: rev });
    } catch (err) {
      say({ write: err instanceof StoreFencedError ? 'fenced' : 'error', error: String(err) });
    }
  }
  await elector.close();
  await store.close();
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  },
);
