/**
 * Helpers for the fleet tests: a controller on a fixed port (so agents can reconnect
 * to a restarted one), agents dialling it, typed controller calls and polling. Set up
 * like production: a throwaway CA, one certificate per process, agents syncing over
 * mutual TLS and serving TLS with the controller as admin client; the tests' own admin
 * calls go through each server's admin Unix socket.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { Metadata } from '@grpc/grpc-js';

import { AgentServiceClient } from '../../lib/proto/agent';
import { ControllerServiceClient } from '../../lib/proto/controller';
import { type ConditionStatus, LinkPolicy, type Agent, type Link } from '../../lib/proto/types';
import { repoPath } from '../../lib/src/paths';
import { ThrowawayCa, writeCa, writeIssued } from '../../lib/src/throwaway-pki';
import { call, insecure } from '../helpers/grpc';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 45_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export interface Fleet {
  /** Replica 0 (the only one unless `replicas` was given). */
  controller: ServerProcess;
  /** Every controller replica, by index (undefined while one is not started). */
  readonly replicas: (ServerProcess | undefined)[];
  /** Each replica's gRPC TCP address (mutual TLS); agents get them all, comma-separated. */
  readonly replicaAddrs: readonly string[];
  /** Each replica's admin Unix socket as a target. */
  readonly replicaAdmins: readonly string[];
  /** Starts replica i on its own state directory and port. */
  startReplica(i: number): Promise<ServerProcess>;
  /** The controller's gRPC TCP address (mutual TLS). */
  readonly controllerAddr: string;
  /** The controller's admin Unix socket as a target: "unix:PATH". */
  readonly controllerAdmin: string;
  /** ca.pem and one <name>.pem / <name>-key.pem per process. */
  readonly pkiDir: string;
  /** Issues (or returns) the certificate of `name` in pkiDir. */
  certificate(name: string): Promise<{ ca: string; cert: string; key: string }>;
  readonly controllerStateDir: string;
  readonly configFile: string;
  readonly agents: Map<string, ServerProcess>;
  readonly rendezvous: string;
  readonly ctl: ControllerServiceClient;
  startController(): Promise<ServerProcess>;
  startAgent(name: string, role: 'host' | 'card', host?: string): Promise<ServerProcess>;
  agentClient(name: string): AgentServiceClient;
  stop(): Promise<void>;
}

/**
 * A controller and (on startAgent) agents dialling it. `agentArgs` go to every agent, e.g. the
 * host path roots (`--disk-dir DIR`) the policies' paths lie in; `configLines` are appended to
 * the controller's config file (e.g. a `store:` section).
 */
export async function startFleet(
  opts: {
    leaseSeconds?: number;
    agentArgs?: readonly string[];
    configLines?: readonly string[];
    /** Controller replicas on one shared store (an etcd `store:` in configLines); default 1. */
    replicas?: number;
    /** Certificate names given role admin (besides the admin sockets), e.g. a vopctl over TCP. */
    admins?: readonly string[];
  } = {},
): Promise<Fleet> {
  const replicaCount = opts.replicas ?? 1;
  const replicaAddrs: string[] = [];
  const replicaDirs: string[] = [];
  for (let i = 0; i < replicaCount; i++) {
    replicaAddrs.push(`127.0.0.1:${await freePort()}`);
    replicaDirs.push(tempDir('ctl'));
  }
  const controllerAddr = replicaAddrs[0] as string;
  const controllerStateDir = replicaDirs[0] as string;
  const rendezvous = tempDir('rv');
  const pkiDir = tempDir('pki');
  const ca = await ThrowawayCa.create('vop test CA');
  const caFile = writeCa(pkiDir, ca);
  const issued = new Map<string, { ca: string; cert: string; key: string }>();
  const certificate = async (name: string): Promise<{ ca: string; cert: string; key: string }> => {
    let c = issued.get(name);
    if (!c) {
      const files = writeIssued(pkiDir, name, await ca.issue(name, { dns: ['localhost'], ips: ['127.0.0.1'] }));
      issued.set(name, (c = { ca: caFile, ...files }));
    }
    return c;
  };
  const ctlTls = await certificate('vop-controller');
  const configFile = path.join(controllerStateDir, 'controller.yaml');
  writeFileSync(
    configFile,
    [
      `leaseSeconds: ${opts.leaseSeconds ?? 15}`,
      'tls:',
      `  ca: ${ctlTls.ca}`,
      `  cert: ${ctlTls.cert}`,
      `  key: ${ctlTls.key}`,
      'roles:',
      '  agent: ["*"]',
      ...(opts.admins && opts.admins.length > 0 ? [`  admin: [${opts.admins.join(', ')}]`] : []),
      ...(opts.configLines ?? []),
      '',
    ].join('\n'),
  );
  const replicaAdmins = replicaDirs.map((d) => `unix:${path.join(d, 'admin.sock')}`);
  const controllerAdmin = replicaAdmins[0] as string;
  const agentControllers = replicaAddrs.join(',');
  const agents = new Map<string, ServerProcess>();
  const agentDirs = new Map<string, string>();
  const clients = new Map<string, AgentServiceClient>();
  const fleet: Fleet = {
    controller: undefined as unknown as ServerProcess,
    replicas: [],
    replicaAddrs,
    replicaAdmins,
    async startReplica(i) {
      const addr = replicaAddrs[i];
      const dir = replicaDirs[i];
      if (addr === undefined || dir === undefined) throw new Error(`no replica ${i}`);
      const r = await startServer('controller', ['--grpc-listen', addr, '--config', configFile], {
        stateDir: dir,
        readyTimeoutMs: 60_000,
      });
      fleet.replicas[i] = r;
      if (i === 0) fleet.controller = r;
      return r;
    },
    controllerAddr,
    controllerAdmin,
    pkiDir,
    certificate,
    controllerStateDir,
    configFile,
    agents,
    rendezvous,
    ctl: new ControllerServiceClient(controllerAdmin, insecure),
    async startController() {
      return fleet.startReplica(0);
    },
    async startAgent(name, role, host) {
      let dir = agentDirs.get(name);
      if (!dir) agentDirs.set(name, (dir = tempDir(`agent-${name}`)));
      const tls = await certificate(name);
      const agentConfig = path.join(dir, 'agent.yaml');
      writeFileSync(
        agentConfig,
        [
          'tls:',
          `  ca: ${tls.ca}`,
          `  cert: ${tls.cert}`,
          `  key: ${tls.key}`,
          'roles:',
          '  admin: [vop-controller]',
          'controller:',
          `  address: "${agentControllers}"`,
          '  tls:',
          `    ca: ${tls.ca}`,
          `    cert: ${tls.cert}`,
          `    key: ${tls.key}`,
          '',
        ].join('\n'),
      );
      const args = [
        '--config',
        agentConfig,
        '--node-name',
        name,
        '--rack',
        'r07',
        '--role',
        role,
        '--rendezvous-dir',
        rendezvous,
        '--controller',
        agentControllers,
      ];
      if (host) args.push('--host-node', host);
      args.push(...(opts.agentArgs ?? []));
      const a = await startServer('agent', args, { stateDir: dir, readyTimeoutMs: 60_000 });
      agents.set(name, a);
      clients.get(name)?.close();
      clients.delete(name);
      return a;
    },
    agentClient(name) {
      let c = clients.get(name);
      if (!c) {
        const a = agents.get(name);
        if (!a) throw new Error(`no agent ${name}`);
        clients.set(name, (c = new AgentServiceClient(a.admin, insecure)));
      }
      return c;
    },
    async stop() {
      fleet.ctl.close();
      for (const c of clients.values()) c.close();
      await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
      await Promise.all(fleet.replicas.filter((r) => r !== undefined).map((r) => r.stop('SIGKILL')));
    },
  };
  for (let i = 0; i < replicaCount; i++) await fleet.startReplica(i);
  return fleet;
}

export async function listLinks(fleet: Fleet, labelSelector = ''): Promise<Link[]> {
  const r = await call(
    fleet.ctl,
    fleet.ctl.listLinks,
    { labelSelector, agent: '', phase: 0, pageSize: 0, pageToken: '' },
    new Metadata(),
  );
  return r.links;
}

export async function getAgent(fleet: Fleet, name: string): Promise<Agent | undefined> {
  return (await call(fleet.ctl, fleet.ctl.getAgent, { name }, new Metadata())).agent;
}

export async function agentLinks(fleet: Fleet, agent: string): Promise<Link[]> {
  const c = fleet.agentClient(agent);
  return (await call(c, c.listLinks, { labelSelector: '', pageSize: 0, pageToken: '' }, new Metadata())).links;
}

export function condition(l: Link | undefined, type: string): ConditionStatus | undefined {
  return l?.status?.conditions.find((c) => c.type === type)?.status;
}

export function policyFromJson(obj: unknown): LinkPolicy {
  return LinkPolicy.fromJSON(obj);
}

/** True when the agent logged that its native data plane is missing (links cannot become Ready). */
export function dataPlaneMissing(a: ServerProcess): boolean {
  return a.logs.some((l) => l.msg === 'native data plane unavailable; links will report DataPlaneUnavailable');
}

export function vopctl(
  server: string,
  args: readonly string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return run(
    process.execPath,
    [repoPath('dist', 'controller', 'src', 'vopctl', 'main.js'), '--server', server, ...args],
    input === undefined ? {} : { input },
  );
}
