#!/usr/bin/env node
/**
 * `npm run fleet`: a local fleet on this machine, for trying vop, set up like
 * production. It makes a throwaway CA and one certificate per process in
 * <state-dir>/pki (files 0600, directory 0700), starts a vop-controller on the
 * embedded store, a "host" agent and two "card" agents as separate processes (agents
 * sync over mutual TLS; their gRPC servers use TLS with the controller as an admin
 * client), applies a policy that gives each card a console and a blk link to the host
 * (and a net link when run as root) through the controller's admin Unix socket,
 * prints where to look, and stops everything cleanly on Ctrl-C. Metrics listen on
 * loopback only.
 *
 * `--ha`: the control plane as in production with replicas: a three-member etcd (Debian's
 * etcd-server, data in <state-dir>/etcd, kept across runs like the SQLite file) and two
 * controller replicas on it (one leads); the agents are given both replicas' addresses.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { credentials, Metadata } from '@grpc/grpc-js';
import YAML from 'yaml';

import { ControllerServiceClient, type ListLinksResponse } from '../../../lib/proto/controller';
import { ConditionStatus, LinkPolicy } from '../../../lib/proto/types';
import { repoPath } from '../../../lib/src/paths';
import { ThrowawayCa, writeCa, writeIssued } from '../../../lib/src/throwaway-pki';

interface Member {
  readonly name: string;
  readonly proc: ChildProcess;
}

const { values } = parseArgs({
  options: {
    'state-dir': { type: 'string', default: path.join(process.cwd(), '.state', 'fleet') },
    'log-level': { type: 'string', default: 'info' },
    cards: { type: 'string', default: '2' },
    ha: { type: 'boolean', default: false },
  },
  strict: true,
});
const stateDir = path.resolve(values['state-dir']);
const logDir = path.join(stateDir, 'logs');
mkdirSync(logDir, { recursive: true, mode: 0o700 });
const pkiDir = path.join(stateDir, 'pki');
const configDir = path.join(stateDir, 'config');
mkdirSync(configDir, { recursive: true, mode: 0o700 });
const cardCount = Math.max(1, Math.min(16, Number(values.cards) || 2));
const isRoot = process.getuid?.() === 0;
const CONTROLLER = '127.0.0.1:7400';
const CONTROLLER_NAME = 'vop-controller';
const OPERATOR = 'ops-admin';
const controllerSocket = path.join(stateDir, 'controller.sock');
const ha = values.ha === true;
const ETCD_BIN = '/usr/bin/etcd';

interface ReplicaSpec {
  readonly name: string;
  readonly grpc: string;
  readonly metrics: string;
  readonly socket: string;
}
const replicas: ReplicaSpec[] = ha
  ? [1, 2].map((i) => ({
      name: `controller-${i}`,
      grpc: `127.0.0.1:${7399 + i}`,
      metrics: `127.0.0.1:${9399 + i}`,
      socket: path.join(stateDir, `controller-${i}.sock`),
    }))
  : [{ name: 'controller', grpc: CONTROLLER, metrics: '127.0.0.1:9400', socket: controllerSocket }];
/** The etcd members of --ha: client ports 2379x, peer ports 2380x, on loopback. */
const etcdMembers = (ha ? [0, 1, 2] : []).map((i) => ({
  name: `etcd-${i}`,
  client: `http://127.0.0.1:${23790 + i}`,
  peer: `http://127.0.0.1:${23800 + i}`,
  dataDir: path.join(stateDir, 'etcd', `etcd-${i}`),
}));

const members: Member[] = [];
let stopping = false;

function start(name: string, main: string, args: string[]): Member {
  return startProcess(name, process.execPath, [main, '--log-level', values['log-level'], ...args]);
}

function startProcess(name: string, cmd: string, args: string[]): Member {
  const out = openSync(path.join(logDir, `${name}.log`), 'a', 0o600);
  const proc = spawn(cmd, args, { stdio: ['ignore', out, out] });
  const m = { name, proc };
  members.push(m);
  proc.on('exit', (code, signal) => {
    if (!stopping)
      process.stderr.write(
        `fleet: ${name} exited (code ${code}, signal ${signal}); see ${path.join(logDir, `${name}.log`)}\n`,
      );
  });
  return m;
}

async function stopAll(): Promise<void> {
  if (stopping) return;
  stopping = true;
  process.stdout.write('\nfleet: stopping...\n');
  // Agents first (their links stay persisted), then the controller replicas, then etcd.
  const stopOne = (m: Member): Promise<void> =>
    new Promise<void>((resolve) => {
      if (m.proc.exitCode !== null || m.proc.signalCode !== null) return resolve();
      const t = setTimeout(() => m.proc.kill('SIGKILL'), 10_000);
      m.proc.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      m.proc.kill('SIGTERM');
    });
  const isController = (m: Member): boolean => m.name.startsWith('controller');
  const isEtcd = (m: Member): boolean => m.name.startsWith('etcd-');
  await Promise.all(members.filter((m) => !isController(m) && !isEtcd(m)).map(stopOne));
  await Promise.all(members.filter(isController).map(stopOne));
  await Promise.all(members.filter(isEtcd).map(stopOne));
  process.stdout.write('fleet: stopped\n');
}

const controllerMain = repoPath('dist', 'controller', 'src', 'main.js');
const agentMain = repoPath('dist', 'agent', 'src', 'main.js');
const rendezvous = path.join(stateDir, 'rendezvous');

interface AgentSpec {
  readonly name: string;
  readonly grpc: string;
  readonly metrics: string;
  readonly socket: string;
}
const agents: AgentSpec[] = [
  { name: 'host-1', grpc: '127.0.0.1:7411', metrics: '127.0.0.1:9411', socket: path.join(stateDir, 'host-1.sock') },
];
for (let i = 1; i <= cardCount; i++)
  agents.push({
    name: `card-${i}`,
    grpc: `127.0.0.1:${7411 + i}`,
    metrics: `127.0.0.1:${9411 + i}`,
    socket: path.join(stateDir, `card-${i}.sock`),
  });

function writeConfig(name: string, config: unknown): string {
  const file = path.join(configDir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify(config), { mode: 0o600 });
  return file;
}

/** A fresh throwaway CA and one certificate per process, every run. */
async function makePki(): Promise<{ ca: string; files: Map<string, { cert: string; key: string }> }> {
  const ca = await ThrowawayCa.create('vop local fleet CA');
  const caFile = writeCa(pkiDir, ca);
  const files = new Map<string, { cert: string; key: string }>();
  for (const name of [CONTROLLER_NAME, OPERATOR, ...agents.map((a) => a.name)])
    files.set(name, writeIssued(pkiDir, name, await ca.issue(name, { dns: ['localhost'], ips: ['127.0.0.1'] })));
  return { ca: caFile, files };
}

/** --ha: the three etcd members, until each answers /health. */
async function startEtcd(): Promise<void> {
  if (!existsSync(ETCD_BIN)) throw new Error(`--ha needs ${ETCD_BIN} (Debian: apt-get install etcd-server)`);
  const cluster = etcdMembers.map((m) => `${m.name}=${m.peer}`).join(',');
  for (const m of etcdMembers) {
    mkdirSync(m.dataDir, { recursive: true, mode: 0o700 });
    // A data directory from an earlier run restarts that member; the cluster flags apply to a new one.
    startProcess(m.name, ETCD_BIN, [
      ...['--name', m.name, '--data-dir', m.dataDir],
      ...['--listen-client-urls', m.client, '--advertise-client-urls', m.client],
      ...['--listen-peer-urls', m.peer, '--initial-advertise-peer-urls', m.peer],
      ...['--initial-cluster', cluster, '--initial-cluster-token', 'vop-local-fleet', '--initial-cluster-state', 'new'],
      ...['--auto-compaction-mode', 'periodic', '--auto-compaction-retention', '5m'],
    ]);
  }
  const deadline = Date.now() + 30_000;
  for (const m of etcdMembers) {
    for (;;) {
      const ok = await fetch(`${m.client}/health`)
        .then(async (r) => ((await r.json()) as { health?: string }).health === 'true')
        .catch(() => false);
      if (ok) break;
      if (Date.now() > deadline || stopping) throw new Error(`etcd member ${m.name} not healthy in 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

async function startMembers(): Promise<void> {
  const pki = await makePki();
  const tlsOf = (name: string): { ca: string; cert: string; key: string } => {
    const f = pki.files.get(name);
    if (!f) throw new Error(`no certificate for ${name}`);
    return { ca: pki.ca, ...f };
  };
  if (ha) await startEtcd();
  for (const r of replicas)
    start(r.name, controllerMain, [
      '--config',
      writeConfig(r.name, {
        grpcListen: r.grpc,
        metricsListen: r.metrics,
        stateDir: path.join(stateDir, r.name),
        adminSocket: { path: r.socket },
        tls: { ...tlsOf(CONTROLLER_NAME), requireClientCert: true },
        roles: { admin: [OPERATOR], reader: [], agent: agents.map((a) => a.name) },
        ...(ha
          ? {
              store: {
                kind: 'etcd',
                endpoints: etcdMembers.map((m) => m.client),
                prefix: '/vop/',
                leaderLeaseSeconds: 6,
              },
            }
          : {}),
      }),
    ]);
  for (const a of agents) {
    const isHost = a.name === 'host-1';
    start(a.name, agentMain, [
      '--config',
      writeConfig(a.name, {
        grpcListen: a.grpc,
        metricsListen: a.metrics,
        stateDir: path.join(stateDir, a.name),
        rendezvousDir: rendezvous,
        adminSocket: { path: a.socket },
        node: { name: a.name, rack: 'r07', role: isHost ? 'host' : 'card', hostNode: isHost ? '' : 'host-1' },
        tls: { ...tlsOf(a.name), requireClientCert: true },
        roles: { admin: [CONTROLLER_NAME, OPERATOR], reader: [], agent: [] },
        controller: { address: replicas.map((r) => r.grpc).join(','), tls: tlsOf(a.name) },
      }),
    ]);
  }
}

// A read-only disk image the host serves to every card, in the host agent's disk root
// (<state-dir>/disks of host-1: backing files elsewhere are refused).
const diskImage = path.join(stateDir, 'host-1', 'disks', 'disk.img');
mkdirSync(path.dirname(diskImage), { recursive: true, mode: 0o700 });
if (!existsSync(diskImage)) writeFileSync(diskImage, Buffer.alloc(16 << 20), { mode: 0o600 });

function policy(name: string, devices: unknown[]): LinkPolicy {
  return LinkPolicy.fromJSON({
    meta: { name, labels: { 'vop.dev/example': 'local-fleet' } },
    spec: {
      cardSelector: { matchLabels: { 'vop.dev/rack': 'r07' } },
      hostSelector: { matchLabels: { 'vop.dev/role': 'host' } },
      template: { cardRole: 'ROLE_DRIVER', transport: { shm: {} }, devices },
    },
  });
}

const policies = [
  policy('console', [{ name: 'console', console: { deviceBackend: { pty: {} }, driverFrontend: { pty: {} } } }]),
  policy('disk', [{ name: 'vda', blk: { backing: { path: diskImage, readOnly: true } } }]),
];
if (isRoot)
  policies.push(
    policy('net', [{ name: 'net0', net: { mtu: 1500, deviceBackend: { tap: {} }, driverFrontend: { tap: {} } } }]),
  );

// The launcher is this machine's operator: it uses the controllers' admin Unix sockets, each in
// turn until one takes the call (with replicas, only the leader takes a change).
const clients = replicas.map((r) => new ControllerServiceClient(`unix:${r.socket}`, credentials.createInsecure()));
type Unary<Req, Res> = (
  r: Req,
  md: Metadata,
  o: { deadline: number },
  cb: (e: Error | null, r?: Res) => void,
) => unknown;
async function unary<Req, Res>(pick: (c: ControllerServiceClient) => Unary<Req, Res>, req: Req): Promise<Res> {
  let last: unknown;
  for (const client of clients) {
    try {
      return await new Promise<Res>((resolve, reject) =>
        pick(client).call(client, req, new Metadata(), { deadline: Date.now() + 3000 }, (e, r) =>
          e ? reject(e) : resolve(r as Res),
        ),
      );
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

async function applyPolicies(): Promise<void> {
  // With replicas, the first election and the leader's catch-up come first.
  const deadline = Date.now() + (ha ? 60_000 : 20_000);
  for (const p of policies) {
    for (;;) {
      try {
        await unary((c) => c.applyPolicy.bind(c), { policy: p, dryRun: false });
        break;
      } catch (err) {
        if (Date.now() > deadline || stopping) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }
}

async function summary(): Promise<string> {
  const deadline = Date.now() + (ha ? 30_000 : 10_000);
  let res: ListLinksResponse = { links: [], nextPageToken: '' };
  while (Date.now() < deadline && !stopping) {
    res = await unary((c) => c.listLinks.bind(c), {
      labelSelector: '',
      agent: '',
      phase: 0,
      pageSize: 0,
      pageToken: '',
    });
    const synced = res.links.filter((l) =>
      l.status?.conditions.some((c) => c.type === 'Synced' && c.status === ConditionStatus.CONDITION_STATUS_TRUE),
    );
    if (res.links.length === policies.length * cardCount && synced.length === res.links.length) break;
    await new Promise((r) => setTimeout(r, 300));
  }
  return res.links
    .map((l) => {
      const ready = l.status?.conditions.find((c) => c.type === 'Ready');
      return `  ${(l.meta?.name ?? '').padEnd(16)} Ready=${ready ? (ConditionStatus[ready.status] ?? '').replace('CONDITION_STATUS_', '') : '?'}${ready && ready.status !== ConditionStatus.CONDITION_STATUS_TRUE ? ` (${ready.reason})` : ''}`;
    })
    .join('\n');
}

process.on('SIGINT', () => void stopAll().then(() => process.exit(0)));
process.on('SIGTERM', () => void stopAll().then(() => process.exit(0)));

startMembers()
  .then(applyPolicies)
  .then(summary)
  .then((links) => {
    const vopctl = 'node dist/controller/src/vopctl/main.js';
    const host = agents[0] as AgentSpec;
    const pem = (n: string): string => path.join(pkiDir, n);
    const sockets = replicas.map((r) => `unix:${r.socket}`).join(',');
    const grpcs = replicas.map((r) => r.grpc).join(',');
    process.stdout.write(`vop local fleet (state and logs in ${stateDir})
${etcdMembers.map((m) => `  ${m.name.padEnd(10)}  client ${m.client}  data ${m.dataDir}`).join('\n')}${ha ? '\n' : ''}${replicas.map((r) => `  ${r.name.padEnd(10)}  gRPC ${r.grpc} (mutual TLS)  admin socket ${r.socket}  metrics http://${r.metrics}/metrics`).join('\n')}
${agents.map((a) => `  ${a.name.padEnd(10)}  gRPC ${a.grpc} (mutual TLS)  admin socket ${a.socket}  metrics http://${a.metrics}/metrics`).join('\n')}
  certificates: ${pkiDir} (a throwaway CA, made anew on every start; ${OPERATOR} is an admin everywhere)

policies applied: ${policies.map((p) => p.meta?.name).join(', ')}${isRoot ? '' : ' (run as root for net links too)'}
links:
${links}

try:
  export VOPCTL_SERVER=${sockets}${ha ? `\n  ${vopctl} status                       # which replica leads; kill it and run this again` : ''}
  ${vopctl} get agents
  ${vopctl} get links -o wide
  ${vopctl} describe link console-card-1
  ${vopctl} watch links
  ${vopctl} console console-card-1 --write
  ${vopctl} --server ${grpcs} --tls-ca ${pem('ca.pem')} --tls-cert ${pem(`${OPERATOR}.pem`)} --tls-key ${pem(`${OPERATOR}-key.pem`)} get agents
  npx buf curl --protocol grpc --http2-prior-knowledge --unix-socket ${replicas[0]?.socket ?? ''} http://localhost/vop.controller.v1.ControllerService/ListAgents
  grpcurl -unix -plaintext ${replicas[0]?.socket ?? ''} vop.controller.v1.ControllerService/ListLinks
  grpcurl -unix -plaintext ${host.socket} vop.agent.v1.AgentService/ListLinks
  curl -s http://127.0.0.1:9400/metrics | grep -E '^(vop_controller|workqueue)_'

Ctrl-C stops the fleet.
`);
  })
  .catch((err: unknown) => {
    process.stderr.write(
      `fleet: could not set up the policies: ${err instanceof Error ? err.message : String(err)}; see ${logDir}\n`,
    );
    void stopAll().then(() => process.exit(1));
  });
