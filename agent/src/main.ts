#!/usr/bin/env node
/**
 * vop-agent: wiring only. Config, logger, registry, native layer, gRPC server,
 * metrics endpoint, signals.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import path from 'node:path';

import {
  DeviceKind,
  NodeRole,
  TransportKind,
  type AgentAddresses,
  type AgentIdentity,
  type Capabilities,
} from '../../lib/proto/types';
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
import { controllerAddresses, loadAgentConfig, type AgentConfig } from './config';
import { bytePipeStandIns } from './backends/byte-pipe';
import { BackendRegistry } from './backends/device-backend';
import { nbdPolicyFromConfig } from './backends/nbd-policy';
import { openSocketDirToGroup } from './links/socket-dir-group';
import { streamTlsFromConfig } from './links/stream-security';
import { nativeDeviceBackends } from './backends/virtio-backends';
import { LinkManager } from './links/link-manager';
import { LinkStore } from './links/link-store';
import { HostPathPolicy } from './links/path-policy';
import { registerAgentMetrics } from './metrics/agent-metrics';
import { agentServiceBinding } from './rpc/agent-service';
import { loadDataPlane } from './native/addon';
import { ControllerSyncClient } from './sync/sync-client';
import { hasNetAdmin } from './net-admin';
import { installTestHooks } from './test-hooks';

const SHUTDOWN_GRACE_MS = 3000;
const SHUTDOWN_DEADLINE_MS = 8000;

const ROLE: Record<AgentConfig['node']['role'], NodeRole> = {
  host: NodeRole.NODE_ROLE_HOST,
  card: NodeRole.NODE_ROLE_CARD,
  vm: NodeRole.NODE_ROLE_VM,
};

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--version')) {
    process.stdout.write(`vop-agent ${VOP_VERSION}\n`);
    return;
  }
  let loaded;
  try {
    loaded = loadAgentConfig(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vop-agent: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (argv.includes('--help')) return;
  const config = loaded.config;
  const log = createRootLogger('vop-agent', config.logLevel as 'info');
  log.info({ node: config.node.name, configFile: loaded.configFile, sources: loaded.sources }, 'starting vop-agent');
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  const security = loadServerSecurity(config, log);
  // The parent (/run/vop by default) also holds the admin socket: searchable, not 0700.
  mkdirSync(path.dirname(config.rendezvousDir), { recursive: true, mode: 0o755 });
  mkdirSync(config.rendezvousDir, { recursive: true, mode: 0o700 });
  chmodSync(config.rendezvousDir, 0o700);
  // The roots link specs may use (created owner-only when missing; an existing one keeps its mode).
  const hp = config.hostPaths;
  for (const dir of [...hp.diskDirs, hp.socketDir, hp.logDir, hp.ptyDir])
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (hp.socketDirGroup !== undefined) openSocketDirToGroup(hp.socketDir, hp.socketDirGroup);
  const paths = new HostPathPolicy(hp, config.rendezvousDir);
  log.info({ hostPaths: hp }, 'host path roots');

  const streamTls = streamTlsFromConfig(config);
  if (streamTls) log.info({ field: streamTls.field, cert: streamTls.cert }, 'stream links use TLS 1.3 by default');
  const dataPlane = loadDataPlane(log.child({ component: 'native' }));
  const nativeVersion = dataPlane.available ? dataPlane.version : 'unavailable';
  const links = new LinkManager({
    nodeName: config.node.name,
    rendezvousDir: config.rendezvousDir,
    dataPlane,
    backends: new BackendRegistry([...bytePipeStandIns(), ...nativeDeviceBackends(paths, nbdPolicyFromConfig(config))]),
    paths,
    store: new LinkStore(config.stateDir, log.child({ component: 'link-store' })),
    log: log.child({ component: 'link-manager' }),
    limits: config.limits,
    vhostUser: config.vhostUser,
    streamTls,
  });
  links.restore();
  installTestHooks(process.env, log);

  const registry = createRegistry();
  registerAgentMetrics(registry, links, { version: VOP_VERSION, nativeVersion });
  const streams = new StreamTracker();
  const kit = createHandlerKit(log.child({ component: 'rpc' }), streams);
  const startTime = new Date();
  /** Where other agents reach this agent's stream links (registered; the controller fills links from it). */
  const streamPlane = {
    dataPlane: config.dataPlane?.address ?? '',
    dataPlanePorts: config.dataPlane ? { ...config.dataPlane.ports } : undefined,
  };
  let addresses: AgentAddresses = { grpc: '', metrics: '', ...streamPlane };
  /** The controller sync, once started (GetInfo reports its conditions). */
  const syncRef: { client?: ControllerSyncClient } = {};
  const identity = (): AgentIdentity => ({
    nodeName: config.node.name,
    rack: config.node.rack,
    slot: config.node.slot,
    role: ROLE[config.node.role],
    hostNode: config.node.hostNode,
    labels: config.node.labels,
  });
  const capabilities = (): Capabilities => ({
    transports: [
      TransportKind.TRANSPORT_KIND_SHM,
      TransportKind.TRANSPORT_KIND_PCI_BAR,
      TransportKind.TRANSPORT_KIND_STREAM,
    ],
    deviceKinds: [DeviceKind.DEVICE_KIND_NET, DeviceKind.DEVICE_KIND_CONSOLE, DeviceKind.DEVICE_KIND_BLK],
    netAdmin: hasNetAdmin(),
  });
  const binding = agentServiceBinding(
    kit,
    {
      identity,
      capabilities,
      addresses: () => addresses,
      version: VOP_VERSION,
      nativeVersion,
      startTime,
      conditions: () => syncRef.client?.conditions() ?? [],
    },
    links,
    config.limits,
  );

  const grpc = await startGrpcServer({
    log: log.child({ component: 'grpc' }),
    registry,
    listen: config.grpcListen,
    services: [binding],
    tls: security.tls,
    roles: config.roles,
    plaintextRole: config.plaintextRole,
    streams,
    adminSocket: config.adminSocket,
    denylist: security.denylist,
  });
  const metrics = await startMetricsServer({
    listen: config.metricsListen,
    registry,
    healthy: () => true,
    log: log.child({ component: 'metrics' }),
    tls: security.metricsTls,
  });
  addresses = { grpc: formatHostPort(grpc.address), metrics: formatHostPort(metrics.address), ...streamPlane };
  log.info({ grpc: addresses.grpc, metrics: addresses.metrics, admin: grpc.adminSocket }, 'vop-agent ready');
  const controllerTls = config.controller?.tls;
  const sync = config.controller
    ? new ControllerSyncClient({
        controllers: controllerAddresses(config.controller),
        tls: controllerTls
          ? {
              credentials: channelCredentials(security.certificateFiles(controllerTls, 'controller.tls')),
              serverName: controllerTls.serverName,
            }
          : undefined,
        links,
        log: log.child({ component: 'sync' }),
        stateDir: config.stateDir,
        identity,
        addresses: () => addresses,
        capabilities,
        version: VOP_VERSION,
        maxLinksPerAgent: config.limits.maxLinksPerAgent,
      })
    : undefined;
  syncRef.client = sync;
  sync?.start();

  onShutdownSignal(log, SHUTDOWN_DEADLINE_MS, async () => {
    sync?.stop();
    await grpc.shutdown(SHUTDOWN_GRACE_MS);
    links.shutdown();
    await metrics.close();
    security.close();
  });
}

main().catch((err: unknown) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`vop-agent: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`vop-agent: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
