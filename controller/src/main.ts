#!/usr/bin/env node
/**
 * vop-controller: wiring only. Config, logger, registry, store, reconciler, gRPC
 * server, metrics endpoint, signals.
 */
import { mkdirSync } from 'node:fs';

import { ConfigError } from '../../lib/src/config';
import { startGrpcServer } from '../../lib/src/grpc-server';
import { createRootLogger } from '../../lib/src/logger';
import { createRegistry, startMetricsServer } from '../../lib/src/metrics';
import { formatHostPort } from '../../lib/src/net';
import { createHandlerKit, StreamTracker } from '../../lib/src/rpc-handlers';
import { onShutdownSignal } from '../../lib/src/shutdown';
import { VOP_VERSION } from '../../lib/src/version';
import { loadControllerConfig } from './config';
import { agentSyncServiceBinding, controllerServiceBinding } from './rpc/controller-service';

const SHUTDOWN_GRACE_MS = 3000;
const SHUTDOWN_DEADLINE_MS = 8000;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--version')) {
    process.stdout.write(`vop-controller ${VOP_VERSION}\n`);
    return;
  }
  let loaded;
  try {
    loaded = loadControllerConfig(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vop-controller: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (argv.includes('--help')) return;
  const config = loaded.config;
  const log = createRootLogger('vop-controller', config.logLevel as 'info');
  log.info({ configFile: loaded.configFile, sources: loaded.sources }, 'starting vop-controller');
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });

  const registry = createRegistry();
  const streams = new StreamTracker();
  const kit = createHandlerKit(log.child({ component: 'rpc' }), streams);
  const grpc = await startGrpcServer({
    log: log.child({ component: 'grpc' }),
    registry,
    listen: config.grpcListen,
    services: [controllerServiceBinding(kit), agentSyncServiceBinding(kit)],
    tls: config.tls,
    roles: config.roles,
    plaintextRole: config.plaintextRole,
    streams,
  });
  const metrics = await startMetricsServer({ listen: config.metricsListen, registry, healthy: () => true, log: log.child({ component: 'metrics' }) });
  log.info({ grpc: formatHostPort(grpc.address), metrics: formatHostPort(metrics.address) }, 'vop-controller ready');

  onShutdownSignal(log, SHUTDOWN_DEADLINE_MS, async () => {
    await grpc.shutdown(SHUTDOWN_GRACE_MS);
    await metrics.close();
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`vop-controller: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
