#!/usr/bin/env node
/**
 * `npm run fleet`: a local fleet on this machine, for trying vop. Starts a
 * vop-controller on the embedded store, a "host" agent and two "card" agents as
 * separate processes, applies a policy that gives each card a console and a blk link
 * to the host (and a net link when run as root), prints where to look, and stops
 * everything cleanly on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { credentials, Metadata } from '@grpc/grpc-js';

import { ControllerServiceClient, type ListLinksResponse } from '../../../lib/gen/vop/controller/v1/controller';
import { ConditionStatus, LinkPolicy } from '../../../lib/gen/vop/types/v1/types';
import { repoPath } from '../../../lib/src/paths';

interface Member {
  readonly name: string;
  readonly proc: ChildProcess;
}

const { values } = parseArgs({
  options: {
    'state-dir': { type: 'string', default: path.join(process.cwd(), '.state', 'fleet') },
    'log-level': { type: 'string', default: 'info' },
    cards: { type: 'string', default: '2' },
  },
  strict: true,
});
const stateDir = path.resolve(values['state-dir']);
const logDir = path.join(stateDir, 'logs');
mkdirSync(logDir, { recursive: true, mode: 0o700 });
const cardCount = Math.max(1, Math.min(16, Number(values.cards) || 2));
const isRoot = process.getuid?.() === 0;
const CONTROLLER = '127.0.0.1:7400';

const members: Member[] = [];
let stopping = false;

function start(name: string, main: string, args: string[]): Member {
  const out = openSync(path.join(logDir, `${name}.log`), 'a', 0o600);
  const proc = spawn(process.execPath, [main, '--log-level', values['log-level'], ...args], {
    stdio: ['ignore', out, out],
  });
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
  // Agents first (their links stay persisted), then the controller.
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
  await Promise.all(members.filter((m) => m.name !== 'controller').map(stopOne));
  await Promise.all(members.filter((m) => m.name === 'controller').map(stopOne));
  process.stdout.write('fleet: stopped\n');
}

const controllerMain = repoPath('dist', 'controller', 'src', 'main.js');
const agentMain = repoPath('dist', 'agent', 'src', 'main.js');
const rendezvous = path.join(stateDir, 'rendezvous');

start('controller', controllerMain, [
  '--grpc-listen',
  CONTROLLER,
  '--metrics-listen',
  '127.0.0.1:9400',
  '--state-dir',
  path.join(stateDir, 'controller'),
]);
const agents: { name: string; grpc: string; metrics: string }[] = [
  { name: 'host-1', grpc: '127.0.0.1:7411', metrics: '127.0.0.1:9411' },
];
for (let i = 1; i <= cardCount; i++)
  agents.push({ name: `card-${i}`, grpc: `127.0.0.1:${7411 + i}`, metrics: `127.0.0.1:${9411 + i}` });
for (const a of agents) {
  const isHost = a.name === 'host-1';
  start(a.name, agentMain, [
    '--grpc-listen',
    a.grpc,
    '--metrics-listen',
    a.metrics,
    '--state-dir',
    path.join(stateDir, a.name),
    '--rendezvous-dir',
    rendezvous,
    '--node-name',
    a.name,
    '--rack',
    'r07',
    '--role',
    isHost ? 'host' : 'card',
    ...(isHost ? [] : ['--host-node', 'host-1']),
    '--controller',
    CONTROLLER,
  ]);
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

const client = new ControllerServiceClient(CONTROLLER, credentials.createInsecure());
const unary = <Req, Res>(
  fn: (r: Req, md: Metadata, o: { deadline: number }, cb: (e: Error | null, r?: Res) => void) => unknown,
  req: Req,
): Promise<Res> =>
  new Promise((resolve, reject) =>
    fn.call(client, req, new Metadata(), { deadline: Date.now() + 3000 }, (e, r) =>
      e ? reject(e) : resolve(r as Res),
    ),
  );

async function applyPolicies(): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (const p of policies) {
    for (;;) {
      try {
        await unary(client.applyPolicy.bind(client), { policy: p, dryRun: false });
        break;
      } catch (err) {
        if (Date.now() > deadline || stopping) throw err;
        await new Promise((r) => setTimeout(r, 300));
      }
    }
  }
}

async function summary(): Promise<string> {
  const deadline = Date.now() + 10_000;
  let res: ListLinksResponse = { links: [], nextPageToken: '' };
  while (Date.now() < deadline && !stopping) {
    res = await unary(client.listLinks.bind(client), {
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

applyPolicies()
  .then(summary)
  .then((links) => {
    const vopctl = 'node dist/controller/src/vopctl/main.js';
    process.stdout.write(`vop local fleet (state and logs in ${stateDir})
  controller  gRPC ${CONTROLLER}   metrics http://127.0.0.1:9400/metrics
${agents.map((a) => `  ${a.name.padEnd(10)}  gRPC ${a.grpc}  metrics http://${a.metrics}/metrics`).join('\n')}

policies applied: ${policies.map((p) => p.meta?.name).join(', ')}${isRoot ? '' : ' (run as root for net links too)'}
links:
${links}

try:
  ${vopctl} get agents
  ${vopctl} get links -o wide
  ${vopctl} describe link console-card-1
  ${vopctl} watch links
  ${vopctl} console console-card-1 --write
  npx buf curl --protocol grpc --http2-prior-knowledge http://${CONTROLLER}/vop.controller.v1.ControllerService/ListAgents
  grpcurl -plaintext ${CONTROLLER} vop.controller.v1.ControllerService/ListLinks
  grpcurl -plaintext 127.0.0.1:7411 vop.agent.v1.AgentService/ListLinks
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
