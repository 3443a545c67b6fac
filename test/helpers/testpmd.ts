/**
 * dpdk-testpmd as a vhost-user front-end (virtio-user, txonly): started on a socket, stopped
 * with SIGINT, its final counters parsed. testpmd's stdout is block-buffered into a pipe, so
 * nothing can be waited on there: tests wait on the agent's counters instead.
 */
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';

export const TESTPMD = '/usr/bin/dpdk-testpmd';

export interface TestpmdResult {
  /** TX-packets of the last stats block. */
  readonly tx: bigint;
  /** TX-packets per queue (several queues: testpmd prints one block per stream at exit). */
  readonly perQueue: bigint[];
  readonly out: string;
}

export interface Testpmd {
  /** SIGINT, SIGKILL after 20 s; the counters it printed (throws when it printed none). */
  stop(): Promise<TestpmdResult>;
  /** SIGKILL, nothing parsed. */
  kill(): Promise<void>;
  /** What it printed so far (for error messages). */
  output(): string;
}

/** testpmd txonly into the vhost-user socket `sock` (vdevExtra e.g. ',server=1'); prefix: its runtime dir name. */
export function startTestpmd(sock: string, prefix: string, vdevExtra = '', queues = 1): Testpmd {
  const p = spawn(
    TESTPMD,
    [
      '--no-huge',
      '-m',
      '1024',
      '--no-pci',
      `--file-prefix=${prefix}`,
      '-l',
      '0,1',
      '--vdev',
      `net_virtio_user0,path=${sock},queues=${queues}${vdevExtra}`,
      '--',
      '--forward-mode=txonly',
      `--txq=${queues}`,
      `--rxq=${queues}`,
      '--stats-period',
      '1',
      '--auto-start',
      '--nb-cores=1',
      '--total-num-mbufs=16384',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  p.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  p.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const cleanup = (): void => rmSync(`/var/run/dpdk/${prefix}`, { recursive: true, force: true });
  return {
    output: () => out,
    async kill() {
      p.kill('SIGKILL');
      await exited;
      cleanup();
    },
    async stop() {
      p.kill('SIGINT');
      const killer = setTimeout(() => p.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(killer);
      cleanup();
      const all = [...out.matchAll(/TX-packets:\s+(\d+)/g)];
      const last = all[all.length - 1];
      if (!last) throw new Error(`testpmd printed no TX-packets: ${out.slice(-2000)}`);
      const perQueue: bigint[] = [];
      for (const m of out.matchAll(/TX Port=\s*0\/Queue=\s*(\d+)\s*-+\s*RX-packets:\s*\d+\s+TX-packets:\s*(\d+)/g))
        perQueue[Number(m[1])] = BigInt(m[2] ?? '0');
      return { tx: BigInt(last[1] ?? '0'), out, perQueue };
    },
  };
}
