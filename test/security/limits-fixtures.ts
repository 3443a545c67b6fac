/**
 * Fixtures for the registration, limits and console-relay security tests: a throwaway
 * CA with one certificate per identity (openssl), a vop-controller and vop-agents that
 * speak mutual TLS to each other, and clients holding those certificates. Everything
 * lives in one temp dir per suite; stop() kills the processes and removes it.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { credentials, Metadata, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import YAML from 'yaml';

import { AgentServiceClient } from '../../lib/proto/agent';
import { AgentSyncServiceClient, ControllerServiceClient } from '../../lib/proto/controller';
import { Role, type Device, type Link } from '../../lib/proto/types';
import { freePort } from '../controller/fleet-helpers';
import { call } from '../helpers/grpc';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

export interface CertSpec {
  readonly cn: string;
  readonly ips?: readonly string[];
  readonly dns?: readonly string[];
  /** serverAuth and clientAuth (agents and the controller serve and dial). */
  readonly server?: boolean;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const r = await run('openssl', args, { cwd: dir });
  if (r.code !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

/** A CA (ca.pem) and, per spec, NAME.pem / NAME-key.pem signed by it. */
export async function makePki(dir: string, certs: readonly CertSpec[]): Promise<void> {
  await openssl(dir, [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca-key.pem',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=vop-test-ca',
  ]);
  for (const c of certs) {
    await openssl(dir, [
      'req',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      `${c.cn}-key.pem`,
      '-out',
      `${c.cn}.csr`,
      '-subj',
      `/CN=${c.cn}`,
    ]);
    const sans = [...(c.ips ?? []).map((ip) => `IP:${ip}`), ...(c.dns ?? []).map((d) => `DNS:${d}`)];
    writeFileSync(
      path.join(dir, `${c.cn}.ext`),
      [
        ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
        `extendedKeyUsage=${c.server ? 'serverAuth,clientAuth' : 'clientAuth'}`,
        '',
      ].join('\n'),
    );
    await openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${c.cn}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca-key.pem',
      '-CAcreateserial',
      '-out',
      `${c.cn}.pem`,
      '-days',
      '2',
      '-extfile',
      `${c.cn}.ext`,
    ]);
  }
}

export interface SecureFleet {
  readonly dir: string;
  readonly controller: ServerProcess;
  readonly controllerAddr: string;
  readonly agents: Map<string, ServerProcess>;
  /** Client credentials of an identity (its certificate). */
  creds(who: string): ChannelCredentials;
  ctl(who: string): ControllerServiceClient;
  sync(who: string): AgentSyncServiceClient;
  agentClient(agent: string, who: string): AgentServiceClient;
  startAgent(
    name: string,
    opts?: { role?: 'host' | 'card'; host?: string; limits?: Record<string, number>; controller?: boolean },
  ): Promise<ServerProcess>;
  /** GET on the controller's metrics port (e.g. /sd/agents). */
  httpGet(p: string): Promise<string>;
  stop(): Promise<void>;
}

/** Identities every secure fleet knows: admins, a reader, the controller. */
const BASE_CERTS: readonly CertSpec[] = [
  { cn: 'controller', ips: ['127.0.0.1'], dns: ['localhost'], server: true },
  { cn: 'ops-admin' },
  { cn: 'ops-reader' },
];

/**
 * A controller with mutual TLS. `agents` are the certificate names with role agent
 * (each gets a certificate for 127.0.0.1 and its own name, usable to serve and dial).
 */
export async function startSecureFleet(opts: {
  agents: readonly string[];
  extraCerts?: readonly CertSpec[];
  controllerConfig?: Record<string, unknown>;
  /** Extra environment of the controller process (e.g. NODE_OPTIONS with a heap cap). */
  controllerEnv?: NodeJS.ProcessEnv;
}): Promise<SecureFleet> {
  const dir = tempDir('sec');
  await makePki(dir, [
    ...BASE_CERTS,
    ...opts.agents.map((a) => ({ cn: a, ips: ['127.0.0.1'], dns: [a], server: true })),
    ...(opts.extraCerts ?? []),
  ]);
  const pem = (f: string): string => path.join(dir, f);
  const controllerAddr = `127.0.0.1:${await freePort()}`;
  const ctlCfg = pem('controller.yaml');
  writeFileSync(
    ctlCfg,
    YAML.stringify({
      tls: { ca: pem('ca.pem'), cert: pem('controller.pem'), key: pem('controller-key.pem') },
      roles: { admin: ['ops-admin'], reader: ['ops-reader'], agent: [...opts.agents] },
      ...opts.controllerConfig,
    }),
  );
  const controller = await startServer('controller', ['--config', ctlCfg, '--grpc-listen', controllerAddr], {
    readyTimeoutMs: 60_000,
    stateDir: pem('state-controller'),
    ...(opts.controllerEnv ? { env: opts.controllerEnv } : {}),
  });
  const agents = new Map<string, ServerProcess>();
  const clients: { close(): void }[] = [];
  const credsOf = (who: string): ChannelCredentials =>
    credentials.createSsl(
      readFileSync(pem('ca.pem')),
      readFileSync(pem(`${who}-key.pem`)),
      readFileSync(pem(`${who}.pem`)),
    );
  const rendezvous = path.join(dir, 'rdv');
  const fleet: SecureFleet = {
    dir,
    controller,
    controllerAddr,
    agents,
    creds: credsOf,
    ctl(who) {
      const c = new ControllerServiceClient(controllerAddr, credsOf(who));
      clients.push(c);
      return c;
    },
    sync(who) {
      const c = new AgentSyncServiceClient(controllerAddr, credsOf(who));
      clients.push(c);
      return c;
    },
    agentClient(agent, who) {
      const a = agents.get(agent);
      if (!a) throw new Error(`no agent ${agent}`);
      const c = new AgentServiceClient(a.grpc, credsOf(who), { 'grpc.max_receive_message_length': 64 << 20 });
      clients.push(c);
      return c;
    },
    async startAgent(name, o = {}) {
      const cfg = pem(`${name}-agent.yaml`);
      writeFileSync(
        cfg,
        YAML.stringify({
          node: { name, rack: 'r01', role: o.role ?? 'host', ...(o.host ? { hostNode: o.host } : {}) },
          rendezvousDir: rendezvous,
          tls: { ca: pem('ca.pem'), cert: pem(`${name}.pem`), key: pem(`${name}-key.pem`) },
          roles: { admin: ['controller', 'ops-admin'], reader: ['ops-reader'] },
          ...(o.controller === false
            ? {}
            : {
                controller: {
                  address: controllerAddr,
                  tls: { ca: pem('ca.pem'), cert: pem(`${name}.pem`), key: pem(`${name}-key.pem`) },
                },
              }),
          ...(o.limits ? { limits: o.limits } : {}),
        }),
      );
      const a = await startServer('agent', ['--config', cfg], {
        readyTimeoutMs: 60_000,
        stateDir: pem(`state-${name}`),
      });
      agents.set(name, a);
      return a;
    },
    httpGet(p) {
      return new Promise((resolve, reject) => {
        http
          .get(`http://${controller.metrics}${p}`, (res) => {
            let body = '';
            res.on('data', (c: Buffer) => (body += c.toString('utf8')));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
    },
    async stop() {
      for (const c of clients) c.close();
      await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
      await controller.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fleet;
}

/**
 * A console with a pty on both sides. 64 entries by default: at the proto's default of 256
 * a real console's buffers (4 KiB each, both queues) take 2 MiB of window, more than the
 * small maxWindowBytes the limit tests run with.
 */
export function consoleDevice(name: string, queueSize = 64): Device {
  return {
    name,
    queueSize,
    disableEventIdx: false,
    kind: {
      $case: 'console',
      value: {
        deviceBackend: { kind: { $case: 'pty', value: { linkPath: '' } } },
        driverFrontend: { kind: { $case: 'pty', value: { linkPath: '' } } },
        log: undefined,
      },
    },
  };
}

export function link(
  name: string,
  device: string,
  driver: string,
  opts: {
    devices?: Device[];
    windowSizeBytes?: bigint;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  } = {},
): Link {
  return {
    meta: {
      name,
      labels: opts.labels ?? {},
      annotations: opts.annotations ?? {},
      generation: 0n,
      resourceVersion: '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: '',
    },
    spec: {
      endpoints: [
        { agent: device, role: Role.ROLE_DEVICE },
        { agent: driver, role: Role.ROLE_DRIVER },
      ],
      transport: { kind: { $case: 'shm', value: { directory: '', windowSizeBytes: opts.windowSizeBytes ?? 0n } } },
      devices: opts.devices ?? [consoleDevice('con0')],
    },
    status: undefined,
  };
}

export async function ctlApply(c: ControllerServiceClient, l: Link, dryRun = false): Promise<unknown> {
  return call(c, c.applyLink, { link: l, dryRun }, new Metadata(), 30_000);
}

export async function agentApply(c: AgentServiceClient, l: Link, dryRun = false): Promise<unknown> {
  return call(c, c.applyLink, { link: l, force: false, dryRun }, new Metadata(), 30_000);
}

/** Resident set size of a process in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** The status of a failed call; throws when the call did not fail. */
export async function failure(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('expected the call to fail');
}
