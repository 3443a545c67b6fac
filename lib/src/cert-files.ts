/**
 * PEM files (CA bundle, certificate, key) that reload without a restart. A
 * `CertificateFiles` watches the directories holding its files (which also sees the
 * `..data` symlink swap of a Kubernetes Secret volume) and re-reads them on any change
 * and on `reload()` (SIGHUP). A new set is published only when it is complete and
 * consistent (the key matches the certificate, the CA parses); otherwise the old set
 * stays in use and a warning is logged.
 *
 * It is a grpc-js CertificateProvider, so gRPC servers (`serverCredentials`) pick up a
 * new certificate for new connections at once, and clients (`channelCredentials`) use
 * it for every new connection. Connections already open keep the certificate they
 * were set up with.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { createSecureContext, rootCertificates } from 'node:tls';

import { experimental, type ChannelCredentials, type ServerCredentials, type ServerInterceptor } from '@grpc/grpc-js';

import { ConfigError } from './config';
import type { Logger } from './logger';

type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

export interface CertificatePaths {
  /** PEM CA bundle; absent: the system roots (clients) or no client-certificate check (servers). */
  readonly ca?: string | undefined;
  readonly cert?: string | undefined;
  readonly key?: string | undefined;
}

interface Loaded {
  readonly ca: Buffer | null;
  readonly cert: Buffer | null;
  readonly key: Buffer | null;
}

/** Changes arriving within this window are read once. */
const SETTLE_MS = 100;

function readSet(files: CertificatePaths): Loaded {
  const read = (p: string | undefined): Buffer | null => (p === undefined ? null : readFileSync(p));
  const set = { ca: read(files.ca), cert: read(files.cert), key: read(files.key) };
  if (set.cert !== null && set.key !== null) {
    const cert = new X509Certificate(set.cert);
    if (!cert.checkPrivateKey(createPrivateKey(set.key)))
      throw new Error(`the key in ${files.key} does not belong to the certificate in ${files.cert}`);
  }
  if (set.ca !== null) new X509Certificate(set.ca);
  // The full check OpenSSL will do when the set is used.
  createSecureContext({ ca: set.ca ?? undefined, cert: set.cert ?? undefined, key: set.key ?? undefined });
  return set;
}

function same(a: Buffer | null, b: Buffer | null): boolean {
  return a === null || b === null ? a === b : a.equals(b);
}

export class CertificateFiles implements experimental.CertificateProvider {
  private current: Loaded;
  private readonly caListeners = new Set<CaListener>();
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly changeListeners = new Set<() => void>();
  private readonly watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;

  /**
   * Reads the files once (a ConfigError naming `field` if they are missing or do not
   * match) and, unless `watch` is false, watches their directories.
   */
  constructor(
    readonly files: CertificatePaths,
    private readonly log: Logger,
    readonly field: string,
    opts: { watch?: boolean } = {},
  ) {
    try {
      this.current = readSet(files);
    } catch (err) {
      throw new ConfigError(`${field}: ${(err as Error).message}`);
    }
    if (opts.watch === false) return;
    const dirs = new Set([files.ca, files.cert, files.key].filter((f) => f !== undefined).map((f) => path.dirname(f)));
    for (const dir of dirs) {
      const w = watch(dir, { persistent: false }, () => this.scheduleReload());
      w.on('error', (err) => this.log.warn({ err, dir }, 'certificate directory watch failed'));
      this.watchers.push(w);
    }
  }

  get hasCa(): boolean {
    return this.current.ca !== null;
  }

  /** Subject of the current certificate, for logs. */
  get subject(): string {
    return this.current.cert === null ? '' : new X509Certificate(this.current.cert).subject;
  }

  /** Called after a new set has been published. */
  onChange(fn: () => void): () => void {
    this.changeListeners.add(fn);
    return () => this.changeListeners.delete(fn);
  }

  private scheduleReload(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reload();
    }, SETTLE_MS);
    this.timer.unref();
  }

  /** Re-reads the files; publishes and returns true when they changed and are valid. */
  reload(): boolean {
    let next: Loaded;
    try {
      next = readSet(this.files);
    } catch (err) {
      this.log.warn({ err, field: this.field }, 'certificate reload failed; keeping the certificates in use');
      return false;
    }
    const prev = this.current;
    if (same(prev.ca, next.ca) && same(prev.cert, next.cert) && same(prev.key, next.key)) return false;
    this.current = next;
    this.log.info({ field: this.field, subject: this.subject }, 'certificates reloaded');
    if (!same(prev.ca, next.ca)) for (const l of this.caListeners) l(this.caUpdate());
    if (!same(prev.cert, next.cert) || !same(prev.key, next.key))
      for (const l of this.identityListeners) l(this.identityUpdate());
    for (const fn of this.changeListeners) fn();
    return true;
  }

  /** Current PEM material, for servers that are not gRPC (the metrics endpoint). */
  secureContextOptions(): { ca?: Buffer; cert?: Buffer; key?: Buffer } {
    const c = this.current;
    return {
      ...(c.ca ? { ca: c.ca } : {}),
      ...(c.cert ? { cert: c.cert } : {}),
      ...(c.key ? { key: c.key } : {}),
    };
  }

  private caUpdate(): experimental.CaCertificateUpdate {
    return { caCertificate: this.current.ca ?? Buffer.from(rootCertificates.join('\n')) };
  }

  private identityUpdate(): experimental.IdentityCertificateUpdate | null {
    const { cert, key } = this.current;
    return cert && key ? { certificate: cert, privateKey: key } : null;
  }

  // grpc-js reads the server's first context before it registers its watcher, so the
  // first update goes out on a microtask, after that registration.
  addCaCertificateListener(listener: CaListener): void {
    this.caListeners.add(listener);
    queueMicrotask(() => {
      if (this.caListeners.has(listener)) listener(this.caUpdate());
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.caListeners.delete(listener);
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.add(listener);
    queueMicrotask(() => {
      if (this.identityListeners.has(listener)) listener(this.identityUpdate());
    });
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.identityListeners.delete(listener);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.watchers) w.close();
    this.watchers.length = 0;
  }
}

/**
 * TLS server credentials that follow `files`, with per-listener interceptors. With a CA
 * a client certificate is requested, and required when `requireClientCert`.
 */
export function serverCredentials(
  files: CertificateFiles,
  requireClientCert: boolean,
  interceptors: ServerInterceptor[],
): ServerCredentials {
  // grpc-js 1.14 passes its first argument on as the identity provider and the second
  // as the CA provider (the parameter names say the opposite); one object serves both.
  const creds = experimental.createCertificateProviderServerCredentials(
    files,
    files.hasCa ? files : null,
    requireClientCert && files.hasCa,
  );
  return experimental.createServerCredentialsWithInterceptors(creds, interceptors);
}

/** TLS client credentials that follow `files` (the key pair is the client certificate). */
export function channelCredentials(files: CertificateFiles): ChannelCredentials {
  return experimental.createCertificateProviderChannelCredentials(files, files.files.cert !== undefined ? files : null);
}
