#!/usr/bin/env node
/**
 * `npm run fleet`: a local fleet on this machine, for trying vop. Starts a
 * vop-controller on the embedded store and vop-agent processes, prints where to
 * look, and stops everything cleanly on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { repoPath } from '../../../lib/src/paths';

interface Member {
  readonly name: string;
  readonly proc: ChildProcess;
}

const { values } = parseArgs({
  options: {
    'state-dir': { type: 'string', default: path.join(process.cwd(), '.state', 'fleet') },
    'log-level': { type: 'string', default: 'info' },
  },
  strict: true,
});
const stateDir = path.resolve(values['state-dir']);
const logDir = path.join(stateDir, 'logs');
mkdirSync(logDir, { recursive: true, mode: 0o700 });

const members: Member[] = [];

function start(name: string, main: string, args: string[]): Member {
  const out = openSync(path.join(logDir, `${name}.log`), 'a', 0o600);
  const proc = spawn(process.execPath, [main, '--log-level', values['log-level'], ...args], { stdio: ['ignore', out, out] });
  const m = { name, proc };
  members.push(m);
  proc.on('exit', (code, signal) => {
    if (!stopping) process.stderr.write(`fleet: ${name} exited (code ${code}, signal ${signal}); see ${path.join(logDir, `${name}.log`)}\n`);
  });
  return m;
}

let stopping = false;
async function stopAll(): Promise<void> {
  stopping = true;
  process.stdout.write('\nfleet: stopping...\n');
  await Promise.all(
    [...members].reverse().map(
      (m) =>
        new Promise<void>((resolve) => {
          if (m.proc.exitCode !== null || m.proc.signalCode !== null) return resolve();
          const t = setTimeout(() => m.proc.kill('SIGKILL'), 10_000);
          m.proc.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          m.proc.kill('SIGTERM');
        }),
    ),
  );
  process.stdout.write('fleet: stopped\n');
}

const controllerMain = repoPath('dist', 'controller', 'src', 'main.js');
const agentMain = repoPath('dist', 'agent', 'src', 'main.js');

start('controller', controllerMain, ['--grpc-listen', '127.0.0.1:7400', '--metrics-listen', '127.0.0.1:9400', '--state-dir', path.join(stateDir, 'controller')]);
start('host-1', agentMain, [
  '--grpc-listen', '127.0.0.1:7411', '--metrics-listen', '127.0.0.1:9411',
  '--state-dir', path.join(stateDir, 'host-1'), '--rendezvous-dir', path.join(stateDir, 'rendezvous'),
  '--node-name', 'host-1', '--rack', 'r07', '--role', 'host',
]);

process.stdout.write(`vop local fleet (state and logs in ${stateDir})
  controller  gRPC 127.0.0.1:7400   metrics http://127.0.0.1:9400/metrics
  host-1      gRPC 127.0.0.1:7411   metrics http://127.0.0.1:9411/metrics

try:
  npx buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:7400 --list-services
  npx buf curl --protocol grpc --http2-prior-knowledge http://127.0.0.1:7411/vop.agent.v1.AgentService/GetInfo
  grpcurl -plaintext 127.0.0.1:7411 describe vop.agent.v1.AgentService

Ctrl-C stops the fleet.
`);

process.on('SIGINT', () => void stopAll().then(() => process.exit(0)));
process.on('SIGTERM', () => void stopAll().then(() => process.exit(0)));
