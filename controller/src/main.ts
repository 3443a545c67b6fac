#!/usr/bin/env node
/**
 * vop-controller: wiring only. Config, logger, registry, store and object cache, the replica
 * (leader election; while leading, a term with fleet state, reconcile loop and sync sessions),
 * views, gRPC server, metrics endpoint, signals.
 */
import { mkdirSync } from 'node:fs';

import type { Agent } from '../../lib/proto/types';
import { ConfigError } from '../../lib/src/config';
import { channelCredentials } from '../../lib/src/cert-files';
import { startGrpcServer } from '../../lib/src/grpc-server';
import { createRootLogger } from '../../lib/src/logger';
import { createRegistry, startMetricsServer } from '../../lib/src/metrics';
import { formatHostPort } from '../../lib/src/net';
import { createHandlerKit, StreamTracker } from '../../lib/src/rpc-handlers';
import { loadServerSecurity } from '../../lib/src/server-security';
import { onShutdownSignal } from '../../lib/src/shutdown';
import { VOP_VERSION } from '../../lib/src/version';
import { loadControllerConfig } from './config';
import { HTTP_SD_PATH, httpSdRoute } from './discovery/http-sd';
import { AgentClients } from './api/agent-clients';
import { controllerServiceBinding } from './api/controller-service';
import { ControllerMetrics } from './metrics/controller-metrics';
import { watchLoopStalls } from './metrics/loop-stalls';
import { Replica } from './replica/replica';
import { ObjectCache } from './state/object-cache';
import { openStore } from './store/open-store';
import { agentSyncServiceBinding } from './sync/agent-sync-service';
import { fleetCounts } from './views/fleet-counts';
import { FleetViews } from './views/fleet-views';

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
  const security = loadServerSecurity(config, log);

  const registry = createRegistry();
  const metrics = new ControllerMetrics(registry, { version: VOP_VERSION, store: config.store.kind });
  const stopStallWatch = watchLoopStalls(log.child({ component: 'loop' }), () => metrics.loopStalls.inc());
  const storeLog = log.child({ component: 'store' });
  const store = openStore(config, {
    etcd: {
      onRequest: (operation, seconds, outcome) => metrics.etcdRequests.observe({ operation, outcome }, seconds),
    },
  });
  const cache = new ObjectCache(store, metrics);
  await cache.load();
  log.info(
    {
      store: config.store.kind,
      links: cache.links.size,
      policies: cache.policies.size,
      agents: cache.agents.size,
      revision: String(cache.revision()),
      clusterId: cache.identity().clusterId,
      generation: String(cache.identity().generation),
    },
    'desired state loaded',
  );
  const leaseMs = config.leaseSeconds * 1000;
  // The replica is created once the gRPC address is known (it is the elector's value); the
  // services reach it through this holder.
  const holder: { replica?: Replica } = {};
  const need = (): Replica => {
    if (!holder.replica) throw new Error('the replica is not started yet');
    return holder.replica;
  };
  const replicaRef = {
    requireLeader: () => need().requireLeader(),
    current: () => holder.replica?.current(),
    leaderAddress: () => holder.replica?.leaderAddress() ?? '',
    get address(): string {
      return holder.replica?.address ?? '';
    },
  };
  const views = new FleetViews(cache, {
    fleet: () => replicaRef.current()?.fleet,
    leaderAddress: () => replicaRef.leaderAddress(),
  });
  metrics.setCounts(fleetCounts(cache, () => replicaRef.current()?.fleet));
  // The controller dials agents with its own certificate (it reloads with the server's).
  const agentClients = new AgentClients(security.tls ? channelCredentials(security.tls.files) : undefined);
  const streams = new StreamTracker();
  const kit = createHandlerKit(log.child({ component: 'rpc' }), streams);
  const grpc = await startGrpcServer({
    log: log.child({ component: 'grpc' }),
    registry,
    listen: config.grpcListen,
    services: [
      controllerServiceBinding(kit, {
        cache,
        views,
        replica: replicaRef,
        storeKind: config.store.kind,
        agentClients,
        limits: config.limits,
        log: log.child({ component: 'api' }),
      }),
      agentSyncServiceBinding(kit, {
        sessions: () => replicaRef.requireLeader().sessions,
        metrics,
        log: log.child({ component: 'sync' }),
        adminNames: config.roles.admin,
        limits: config.limits,
        chunkBytes: config.syncChunkBytes,
        // Half the admission rate: refusing costs a stream too, and a fleet looking for its leader
        // should leave the replica that is about to lead the time to catch up.
        refusalsPerSecond: Math.ceil(config.syncAdmission.registrationsPerSecond / 2),
      }),
    ],
    tls: security.tls,
    roles: config.roles,
    plaintextRole: config.plaintextRole,
    streams,
    adminSocket: config.adminSocket,
    denylist: security.denylist,
  });
  const address = config.advertiseAddress ?? formatHostPort(grpc.address);
  const replica = new Replica(
    cache,
    store.elector(address, {
      onError: (err) => storeLog.warn({ err: err.message }, 'leader election: transient failure (campaigning on)'),
    }),
    metrics,
    log.child({ component: 'replica', replica: address }),
    {
      address,
      leaseMs,
      limits: config.limits,
      admission: {
        ratePerSecond: config.syncAdmission.registrationsPerSecond,
        burst: config.syncAdmission.burst,
      },
    },
  );
  holder.replica = replica;
  replica.start();
  const metricsServer = await startMetricsServer({
    listen: config.metricsListen,
    registry,
    healthy: () => true,
    // Live views: phase and heartbeat come from the fleet state, not the stored record.
    routes: new Map([
      [
        HTTP_SD_PATH,
        httpSdRoute(() =>
          [...cache.agents.keys()].map((n) => views.agentView(n)).filter((a): a is Agent => a !== undefined),
        ),
      ],
    ]),
    log: log.child({ component: 'metrics' }),
    tls: security.metricsTls,
  });
  log.info(
    {
      grpc: formatHostPort(grpc.address),
      metrics: formatHostPort(metricsServer.address),
      admin: grpc.adminSocket,
    },
    'vop-controller ready',
  );

  onShutdownSignal(log, SHUTDOWN_DEADLINE_MS, async () => {
    // Resign first: another replica takes over at once, while this one finishes its calls.
    stopStallWatch();
    await replica.stop();
    await grpc.shutdown(SHUTDOWN_GRACE_MS);
    agentClients.close();
    cache.close();
    await store.close();
    await metricsServer.close();
    security.close();
  });
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`vop-controller: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`vop-controller: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
