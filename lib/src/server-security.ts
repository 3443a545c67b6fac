/**
 * The security material of a vop server, loaded once from its config: the gRPC TLS
 * certificates, the metrics endpoint's certificates and the deny-list, all reloaded
 * without a restart when their files change and on SIGHUP.
 */
import type { z } from 'zod';

import { CertificateFiles, type CertificatePaths } from './cert-files';
import type { denylistSchema, metricsTlsSchema, rolesSchema, tlsSchema } from './config';
import { DenyList } from './deny-list';
import type { ServerTls } from './grpc-server';
import type { Logger } from './logger';
import type { MetricsServerOptions } from './metrics';

export interface ServerSecurityConfig {
  readonly tls?: z.output<typeof tlsSchema> | undefined;
  readonly metricsTls?: z.output<typeof metricsTlsSchema> | undefined;
  readonly denylist: z.output<typeof denylistSchema>;
  readonly roles: z.output<typeof rolesSchema>;
}

export interface ServerSecurity {
  readonly tls: ServerTls | undefined;
  readonly denylist: DenyList;
  readonly metricsTls: MetricsServerOptions['tls'];
  /** Re-reads every certificate file and the deny-list (what SIGHUP does). */
  reload(): void;
  /** Loads more certificate files (a client's) that reload with the others. */
  certificateFiles(paths: CertificatePaths, field: string): CertificateFiles;
  close(): void;
}

/** Loads the files (a ConfigError naming the field on failure) and installs the SIGHUP handler. */
export function loadServerSecurity(config: ServerSecurityConfig, log: Logger): ServerSecurity {
  const files: CertificateFiles[] = [];
  const tls = config.tls
    ? {
        files: new CertificateFiles(
          { ca: config.tls.ca, cert: config.tls.cert, key: config.tls.key },
          log.child({ component: 'tls' }),
          'tls',
        ),
        requireClientCert: config.tls.requireClientCert,
      }
    : undefined;
  if (tls) files.push(tls.files);
  const denylist = new DenyList(config.denylist, log.child({ component: 'denylist' }));
  let metricsTls: MetricsServerOptions['tls'];
  if (config.metricsTls) {
    const m = new CertificateFiles(
      { ca: config.metricsTls.ca, cert: config.metricsTls.cert, key: config.metricsTls.key },
      log.child({ component: 'metrics-tls' }),
      'metricsTls',
    );
    files.push(m);
    const readers = new Set([...config.roles.admin, ...config.roles.reader]);
    metricsTls = {
      files: m,
      authorize: (name) => !denylist.has(name) && (readers.has(name) || readers.has('*')),
    };
  }
  const reload = (): void => {
    for (const f of files) f.reload();
    denylist.reload();
  };
  const onHup = (): void => {
    log.info('SIGHUP: reloading certificates and the deny-list');
    reload();
  };
  process.on('SIGHUP', onHup);
  return {
    tls,
    denylist,
    metricsTls,
    reload,
    certificateFiles(paths, field) {
      const f = new CertificateFiles(paths, log.child({ component: 'tls', field }), field);
      files.push(f);
      return f;
    },
    close() {
      process.off('SIGHUP', onHup);
      for (const f of files) f.close();
      denylist.close();
    },
  };
}
