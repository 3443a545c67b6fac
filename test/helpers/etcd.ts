/**
 * A real etcd for tests: one or three members of Debian's etcd-server (3.4) on free
 * loopback ports, data directories in one temp directory, each member's log in a file
 * there. Members can be killed, paused (SIGSTOP) and restarted; close() kills every
 * member and removes the directory. A process exit hook kills members a crashed test
 * left behind.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

import { tempDir } from './servers';

export const ETCD_BIN = '/usr/bin/etcd';
export const ETCDCTL_BIN = '/usr/bin/etcdctl';

const execFileP = promisify(execFile);

export interface EtcdTls {
  readonly ca: string;
  /** Server certificate and key of every member (SANs must cover 127.0.0.1). */
  readonly cert: string;
  readonly key: string;
  /** Require client certificates signed by `ca` (--client-cert-auth). */
  readonly clientCertAuth?: boolean;
}

export interface EtcdOptions {
  readonly members?: 1 | 3;
  /** --max-txn-ops (etcd's default is 128). */
  readonly maxTxnOps?: number;
  /** Client TLS (peers stay plaintext on loopback). */
  readonly tls?: EtcdTls;
  readonly extraArgs?: readonly string[];
  /** Milliseconds to wait for the cluster to report healthy. */
  readonly readyTimeoutMs?: number;
}

export interface EtcdMember {
  readonly name: string;
  /** HOST:PORT of the client URL. */
  readonly endpoint: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  readonly logFile: string;
  proc: ChildProcess | null;
}

export interface EtcdCluster {
  readonly dir: string;
  readonly members: readonly EtcdMember[];
  /** Every member's HOST:PORT, in member order. */
  readonly endpoints: readonly string[];
  /** SIGKILLs member i and waits for it to exit. */
  kill(i: number): Promise<void>;
  /** SIGSTOP / SIGCONT member i. */
  pause(i: number): void;
  resume(i: number): void;
  /** Starts member i again on its data directory and waits until it answers /health. */
  restart(i: number): Promise<void>;
  /** `etcdctl snapshot save FILE` against the first running member (an online backup; plaintext clusters). */
  snapshotSave(file: string): Promise<void>;
  /**
   * Restores every member from a snapshot, as an operator restores a backup: kills the members,
   * `etcdctl snapshot restore` into fresh data directories (same names, peer URLs and token),
   * starts them again and waits until they are healthy.
   */
  restoreSnapshot(file: string): Promise<void>;
  /** Index of the member that is the raft leader (asked over /v3/maintenance/status of each running member). */
  leader(): Promise<number>;
  /** Waits until member i (default: every running member) answers /health with true. */
  waitHealthy(i?: number, timeoutMs?: number): Promise<void>;
  /** Value of a gauge or counter (no labels) on member i's /metrics, NaN if absent. */
  metric(i: number, name: string): Promise<number>;
  /** The tail of member i's log (for assertion messages). */
  log(i: number): string;
  close(): Promise<void>;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function killAllOnExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const p of live) {
      try {
        p.kill('SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

/** A loopback port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });
}

function request(
  m: EtcdMember,
  tls: EtcdTls | undefined,
  method: 'GET' | 'POST',
  urlPath: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const opts = {
      method,
      host: '127.0.0.1',
      port: Number(m.endpoint.split(':')[1]),
      path: urlPath,
      timeout: 2000,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
    };
    const onRes = (res: http.IncomingMessage): void => {
      let data = '';
      res.on('data', (c: Buffer) => (data += c.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    };
    const req = tls
      ? https.request(
          {
            ...opts,
            servername: 'localhost',
            ca: readFileSync(tls.ca),
            cert: readFileSync(tls.cert),
            key: readFileSync(tls.key),
          },
          onRes,
        )
      : http.request(opts, onRes);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdCluster> {
  killAllOnExit();
  const n = opts.members ?? 1;
  const dir = tempDir('etcd');
  const members: EtcdMember[] = [];
  const scheme = opts.tls ? 'https' : 'http';
  for (let i = 0; i < n; i++) {
    const cp = await freePort();
    const pp = await freePort();
    members.push({
      name: `m${i}`,
      endpoint: `127.0.0.1:${cp}`,
      clientUrl: `${scheme}://127.0.0.1:${cp}`,
      peerUrl: `http://127.0.0.1:${pp}`,
      dataDir: path.join(dir, `m${i}`),
      logFile: path.join(dir, `m${i}.log`),
      proc: null,
    });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  const token = path.basename(dir);

  const spawnMember = (m: EtcdMember, state: 'new' | 'existing'): void => {
    mkdirSync(m.dataDir, { recursive: true, mode: 0o700 });
    const args = [
      '--name',
      m.name,
      '--data-dir',
      m.dataDir,
      '--listen-client-urls',
      m.clientUrl,
      '--advertise-client-urls',
      m.clientUrl,
      '--listen-peer-urls',
      m.peerUrl,
      '--initial-advertise-peer-urls',
      m.peerUrl,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-token',
      token,
      '--initial-cluster-state',
      state,
      '--logger',
      'zap',
      '--log-outputs',
      'stderr',
      '--max-txn-ops',
      String(opts.maxTxnOps ?? 128),
      ...(opts.tls
        ? [
            '--trusted-ca-file',
            opts.tls.ca,
            '--cert-file',
            opts.tls.cert,
            '--key-file',
            opts.tls.key,
            ...(opts.tls.clientCertAuth ? ['--client-cert-auth'] : []),
          ]
        : []),
      ...(opts.extraArgs ?? []),
    ];
    const fd = openSync(m.logFile, 'a');
    const proc = spawn(ETCD_BIN, args, { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    live.add(proc);
    proc.once('exit', () => live.delete(proc));
    m.proc = proc;
  };

  const running = (m: EtcdMember): boolean => m.proc !== null && m.proc.exitCode === null && m.proc.signalCode === null;

  const memberHealthy = async (m: EtcdMember): Promise<boolean> => {
    try {
      const r = await request(m, opts.tls, 'GET', '/health');
      return r.status === 200 && (JSON.parse(r.body) as { health?: string }).health === 'true';
    } catch {
      return false;
    }
  };

  const cluster: EtcdCluster = {
    dir,
    members,
    endpoints: members.map((m) => m.endpoint),
    async kill(i) {
      const m = members[i];
      if (!m?.proc || !running(m)) return;
      const exited = new Promise<void>((r) => m.proc?.once('exit', () => r()));
      m.proc.kill('SIGCONT');
      m.proc.kill('SIGKILL');
      await exited;
    },
    pause(i) {
      members[i]?.proc?.kill('SIGSTOP');
    },
    resume(i) {
      members[i]?.proc?.kill('SIGCONT');
    },
    async restart(i) {
      const m = members[i];
      if (!m) throw new Error(`no etcd member ${i}`);
      await cluster.kill(i);
      spawnMember(m, 'existing');
      await cluster.waitHealthy(i);
    },
    async snapshotSave(file) {
      if (opts.tls) throw new Error('snapshotSave: plaintext clusters only');
      const m = members.find(running);
      if (!m) throw new Error('snapshotSave: no etcd member runs');
      await execFileP(ETCDCTL_BIN, ['--endpoints', m.clientUrl, 'snapshot', 'save', file], {
        env: { ...process.env, ETCDCTL_API: '3' },
      });
    },
    async restoreSnapshot(file) {
      for (let i = 0; i < members.length; i++) await cluster.kill(i);
      for (const m of members) {
        rmSync(m.dataDir, { recursive: true, force: true });
        await execFileP(
          ETCDCTL_BIN,
          [
            'snapshot',
            'restore',
            file,
            '--name',
            m.name,
            '--data-dir',
            m.dataDir,
            '--initial-cluster',
            initialCluster,
            '--initial-cluster-token',
            token,
            '--initial-advertise-peer-urls',
            m.peerUrl,
          ],
          { env: { ...process.env, ETCDCTL_API: '3' } },
        );
      }
      for (const m of members) spawnMember(m, 'new');
      await cluster.waitHealthy();
    },
    async leader() {
      for (const [i, m] of members.entries()) {
        if (!running(m)) continue;
        try {
          const r = await request(m, opts.tls, 'POST', '/v3/maintenance/status', '{}');
          const st = JSON.parse(r.body) as { header?: { member_id?: string }; leader?: string };
          if (st.leader !== undefined && st.leader === st.header?.member_id) return i;
        } catch {
          /* not answering: not the leader we can use */
        }
      }
      return -1;
    },
    async waitHealthy(i, timeoutMs = opts.readyTimeoutMs ?? 30_000) {
      const deadline = Date.now() + timeoutMs;
      const which = i === undefined ? members.filter(running) : [members[i]].filter((m) => m !== undefined);
      for (const m of which) {
        while (!(await memberHealthy(m))) {
          if (!running(m)) throw new Error(`etcd ${m.name} exited: ${cluster.log(members.indexOf(m))}`);
          if (Date.now() > deadline)
            throw new Error(`etcd ${m.name} not healthy in ${timeoutMs} ms: ${cluster.log(members.indexOf(m))}`);
          await sleep(50);
        }
      }
    },
    async metric(i, name) {
      const m = members[i];
      if (!m) return NaN;
      const r = await request(m, opts.tls, 'GET', '/metrics');
      const line = r.body.split('\n').find((l) => l.startsWith(`${name} `));
      return line === undefined ? NaN : Number(line.slice(name.length + 1));
    },
    log(i) {
      const m = members[i];
      if (!m) return '';
      try {
        return readFileSync(m.logFile, 'utf8').split('\n').slice(-15).join('\n');
      } catch {
        return '';
      }
    },
    async close() {
      await Promise.all(members.map((_, i) => cluster.kill(i)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    for (const m of members) spawnMember(m, 'new');
    await cluster.waitHealthy();
  } catch (err) {
    await cluster.close();
    throw err;
  }
  return cluster;
}
