/**
 * A throwaway certificate authority for the local fleet and the tests: an ECDSA P-256
 * CA that lives in memory and issues one certificate per process (server and client
 * use, SANs for the addresses it is dialled on). Made with @peculiar/x509 over Node's
 * WebCrypto, so no openssl CLI is needed. Not for production: production certificates
 * come from the operator's PKI (cert-manager, see deploy/kubernetes/README.md).
 */
import 'reflect-metadata';

import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { webcrypto } from 'node:crypto';

import * as x509 from '@peculiar/x509';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 3600 * 1000;
const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface IssueOptions {
  /** DNS SANs (the CN is always added as one). */
  readonly dns?: readonly string[];
  /** IP SANs, e.g. 127.0.0.1. */
  readonly ips?: readonly string[];
  readonly days?: number;
  /** Validity start; default one minute ago (clock skew). */
  readonly notBefore?: Date;
}

async function keyPem(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

function serial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0] ?? 0) & 0x7f; // positive
  return Buffer.from(b).toString('hex');
}

export class ThrowawayCa {
  private constructor(
    private readonly cert: x509.X509Certificate,
    private readonly keys: CryptoKeyPair,
    readonly certPem: string,
  ) {}

  static async create(name = 'vop throwaway CA', days = 30): Promise<ThrowawayCa> {
    const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const notBefore = new Date(Date.now() - 60_000);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=${name}`,
      notBefore,
      notAfter: new Date(notBefore.getTime() + days * DAY_MS),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new ThrowawayCa(cert, keys, cert.toString('pem'));
  }

  /** A certificate for `cn`, usable as TLS server and client certificate. */
  async issue(cn: string, opts: IssueOptions = {}): Promise<IssuedCertificate> {
    const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
    const notBefore = opts.notBefore ?? new Date(Date.now() - 60_000);
    const names: x509.JsonGeneralName[] = [
      ...[...new Set([cn, ...(opts.dns ?? [])])].map((value) => ({ type: 'dns' as const, value })),
      ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
    ];
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${cn}`,
      issuer: this.cert.subject,
      notBefore,
      notAfter: new Date(notBefore.getTime() + (opts.days ?? 30) * DAY_MS),
      publicKey: keys.publicKey,
      signingKey: this.keys.privateKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH, OID_CLIENT_AUTH]),
        new x509.SubjectAlternativeNameExtension(names),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.cert),
      ],
    });
    return { certPem: cert.toString('pem'), keyPem: await keyPem(keys.privateKey) };
  }
}

/** Writes `<dir>/ca.pem` (0600, dir 0700). */
export function writeCa(dir: string, ca: ThrowawayCa): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const file = path.join(dir, 'ca.pem');
  writeFileSync(file, ca.certPem, { mode: 0o600 });
  return file;
}

/** Writes `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (0600); returns their paths. */
export function writeIssued(dir: string, name: string, issued: IssuedCertificate): { cert: string; key: string } {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = path.join(dir, `${name}.pem`);
  const key = path.join(dir, `${name}-key.pem`);
  // Key first, then certificate: a watcher that sees the new certificate finds its key.
  writeFileSync(`${key}.tmp`, issued.keyPem, { mode: 0o600 });
  writeFileSync(`${cert}.tmp`, issued.certPem, { mode: 0o600 });
  chmodSync(`${key}.tmp`, 0o600);
  chmodSync(`${cert}.tmp`, 0o600);
  renameSync(`${key}.tmp`, key);
  renameSync(`${cert}.tmp`, cert);
  return { cert, key };
}
