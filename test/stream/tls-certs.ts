/**
 * Test certificates for stream TLS, made with the openssl CLI at test time (EC P-256): a CA and a
 * second, unrelated CA; agent certificates with the agent's name as a DNS subjectAltName (and CN),
 * serverAuth and clientAuth; an expired one. Keys are written 0600.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface CertFiles {
  readonly cert: string;
  readonly key: string;
}

function openssl(dir: string, args: readonly string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

export class TestPki {
  constructor(readonly dir: string) {
    for (const ca of ['ca', 'ca2'])
      openssl(dir, [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
        '-keyout', `${ca}.key`, '-out', `${ca}.pem`, '-days', '2', '-subj', `/CN=vop-test-${ca}`,
      ]); // prettier-ignore
    chmodSync(path.join(dir, 'ca.key'), 0o600);
    chmodSync(path.join(dir, 'ca2.key'), 0o600);
  }

  /** The CA file agents trust. */
  get ca(): string {
    return path.join(this.dir, 'ca.pem');
  }

  /**
   * A certificate for `name` (DNS SAN and CN) stored as `<file>.pem` / `<file>.key`, signed by
   * `ca` ('ca' or 'ca2'), valid for `days` (negative: already expired).
   */
  issue(name: string, opts: { file?: string; ca?: 'ca' | 'ca2'; days?: number } = {}): CertFiles {
    const file = opts.file ?? name;
    const ca = opts.ca ?? 'ca';
    writeFileSync(
      path.join(this.dir, `${file}.cnf`),
      `[v3]\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${name}\n`,
    );
    openssl(this.dir, [
      'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', `${file}.key`, '-out', `${file}.csr`, '-subj', `/CN=${name}`,
    ]); // prettier-ignore
    openssl(this.dir, [
      'x509', '-req', '-in', `${file}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
      '-days', String(opts.days ?? 1), '-extfile', `${file}.cnf`, '-extensions', 'v3', '-out', `${file}.pem`,
    ]); // prettier-ignore
    const key = path.join(this.dir, `${file}.key`);
    chmodSync(key, 0o600);
    return { cert: path.join(this.dir, `${file}.pem`), key };
  }
}
