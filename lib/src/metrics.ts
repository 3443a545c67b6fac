/**
 * One prom-client Registry per process (never the global one), served over HTTP at
 * /metrics next to /healthz. Extra routes (the controller's Prometheus HTTP service
 * discovery) plug in through `routes`.
 */
import http from 'node:http';

import { collectDefaultMetrics, Registry } from 'prom-client';

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
}

export interface MetricsServer {
  /** Actual bound address (port 0 resolves here). */
  readonly address: HostPort;
  close(): Promise<void>;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const handle = async (): Promise<void> => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
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
  });
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
