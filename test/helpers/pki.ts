/** A throwaway CA for tests: ca.pem plus <name>.pem / <name>-key.pem per name, in a 0700 directory. */
import { readFileSync } from 'node:fs';

import { credentials, type ChannelCredentials } from '@grpc/grpc-js';

import { ThrowawayCa, writeCa, writeIssued } from '../../lib/src/throwaway-pki';
import { tempDir } from './servers';

export interface TestPki {
  readonly dir: string;
  readonly ca: ThrowawayCa;
  readonly caFile: string;
  /** Issues (again, with a new key) the certificate of `name`, replacing its files by rename. */
  issue(name: string): Promise<{ cert: string; key: string }>;
  files(name: string): { ca: string; cert: string; key: string };
  /** gRPC client credentials presenting `name`'s certificate. */
  creds(name: string): ChannelCredentials;
}

export async function testPki(names: readonly string[]): Promise<TestPki> {
  const dir = tempDir('pki');
  const ca = await ThrowawayCa.create('vop test CA');
  const caFile = writeCa(dir, ca);
  const issued = new Map<string, { cert: string; key: string }>();
  const pki: TestPki = {
    dir,
    ca,
    caFile,
    async issue(name) {
      const f = writeIssued(dir, name, await ca.issue(name, { dns: ['localhost'], ips: ['127.0.0.1'] }));
      issued.set(name, f);
      return f;
    },
    files(name) {
      const f = issued.get(name);
      if (!f) throw new Error(`no certificate issued for ${name}`);
      return { ca: caFile, ...f };
    },
    creds(name) {
      const f = pki.files(name);
      return credentials.createSsl(readFileSync(caFile), readFileSync(f.key), readFileSync(f.cert));
    },
  };
  for (const n of names) await pki.issue(n);
  return pki;
}
