/**
 * One prom-client Registry per process (never the global one), served over HTTP at
 * /metrics next to /healthz. Extra routes (the controller's Prometheus HTTP service
 * discovery) plug in through `routes`.
 *
 * With `tls` the endpoint is HTTPS with certificates that reload on change; when the
 * files include a CA, every path but /healthz needs a client certificate that
 * `authorize` accepts (a reader or admin name not on the deny-list).
 */
import http from 'node:http';
import https from 'node:https';
import type { TLSSocket } from 'node:tls';

import { collectDefaultMetrics, Registry } from 'prom-client';

import { peerName } from './auth';
import type { CertificateFiles } from './cert-files';
import type { Logger } from './logger';
import type { HostPort } from './net';

export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void> | void;

export interface MetricsServerOptions {
  readonly listen: HostPort;
  readonly registry: Registry;
  /** Liveness: false answers /healthz with 503. */
  readonly healthy: () => boolean;
  readonly routes?: ReadonlyMap<string, RouteHandler>;
  readonly log: Logger;
  readonly tls?:
    | {
        readonly files: CertificateFiles;
        /** Whether the client certificate's name may read /metrics and the routes. */
        readonly authorize: (name: string) => boolean;
      }
    | undefined;
}

export interface MetricsServer {
  /** Actual bound address (port 0 resolves here). */
  readonly address: HostPort;
  close(): Promise<void>;
}

/** null when the request may go on; otherwise the HTTP status to answer with. */
function refusal(req: http.IncomingMessage, tls: NonNullable<MetricsServerOptions['tls']>): 401 | 403 | null {
  if (!tls.files.hasCa) return null;
  const socket = req.socket as TLSSocket;
  if (!socket.authorized) return 401;
  const name = peerName({ sslPeerCertificate: socket.getPeerCertificate() });
  return name !== null && tls.authorize(name) ? null : 403;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const tls = opts.tls;
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const handle = async (): Promise<void> => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      const refused = tls && path !== '/healthz' ? refusal(req, tls) : null;
      if (refused !== null) {
        res
          .writeHead(refused, { 'content-type': 'text/plain' })
          .end(refused === 401 ? 'a client certificate is required\n' : 'this certificate may not read metrics\n');
        return;
      }
      if (path === '/metrics') {
        const body = await opts.registry.metrics();
        res.writeHead(200, { 'content-type': opts.registry.contentType }).end(body);
        return;
      }
      if (path === '/healthz') {
        const ok = opts.healthy();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not ready\n');
        return;
      }
      const route = opts.routes?.get(path);
      if (route) {
        await route(req, res);
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    };
    handle().catch((err: unknown) => {
      opts.log.error({ err, path }, 'metrics endpoint failed');
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error\n');
    });
  };
  let server: http.Server | https.Server;
  if (tls) {
    const secure = https.createServer(
      { ...tls.files.secureContextOptions(), requestCert: tls.files.hasCa, rejectUnauthorized: false },
      onRequest,
    );
    const off = tls.files.onChange(() => secure.setSecureContext(tls.files.secureContextOptions()));
    secure.once('close', off);
    server = secure;
  } else {
    server = http.createServer(onRequest);
  }
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.listen.port, opts.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.listen.port;
  return {
    address: { host: opts.listen.host, port },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
