/** Builders and clients shared by the agent tests. */
import { closeSync, existsSync, mkdirSync, openSync, ftruncateSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Metadata, type ChannelCredentials, type ClientReadableStream } from '@grpc/grpc-js';

import { resolveHostPaths } from '../../agent/src/config';
import { HostPathPolicy } from '../../agent/src/links/path-policy';
import { AgentServiceClient, type WatchLinksResponse } from '../../lib/proto/agent';
import { Role, type Device, type Link, type LinkPhase } from '../../lib/proto/types';
import { call, insecure } from '../helpers/grpc';

/**
 * The directory of testDisk(): agents that get links with it are started with
 * `--disk-dir testDiskDir()` (their allowed root for blk backing files).
 */
export function testDiskDir(): string {
  const d = path.join(os.tmpdir(), `vop-test-disks-${process.pid}`);
  mkdirSync(d, { recursive: true, mode: 0o700 });
  return d;
}

/** A sparse 16 MiB disk image shared by the tests' blk devices (the device side opens it). */
export function testDisk(): string {
  const p = path.join(testDiskDir(), 'disk.img');
  if (!existsSync(p)) {
    const fd = openSync(p, 'w', 0o600);
    ftruncateSync(fd, 16 * 1024 * 1024);
    closeSync(fd);
  }
  return p;
}

/** The host path policy of a test agent with state in stateDir whose disks live in testDiskDir(). */
export function testPathPolicy(stateDir: string, rendezvousDir: string): HostPathPolicy {
  return new HostPathPolicy(
    resolveHostPaths(stateDir, { diskDirs: [testDiskDir()], blockDevices: [], netns: [], barDirs: [] }),
    rendezvousDir,
  );
}

export function bytePipeDevice(name: string, kind: 'console' | 'blk' | 'net' = 'console', queueSize = 256): Device {
  switch (kind) {
    case 'console':
      return {
        name,
        queueSize,
        disableEventIdx: false,
        kind: { $case: 'console', value: { deviceBackend: undefined, driverFrontend: undefined, log: undefined } },
      };
    case 'blk':
      return {
        name,
        queueSize,
        disableEventIdx: false,
        kind: {
          $case: 'blk',
          value: { backing: { path: testDisk(), readOnly: false, directIo: false, serial: '' }, export: undefined },
        },
      };
    case 'net':
      return {
        name,
        queueSize,
        disableEventIdx: false,
        kind: {
          $case: 'net',
          value: { mac: '', mtu: 0, offloads: false, deviceBackend: undefined, driverFrontend: undefined },
        },
      };
  }
}

export function makeLink(
  name: string,
  opts: {
    device?: string;
    driver?: string;
    devices?: Device[];
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    rv?: string;
    dir?: string;
  } = {},
): Link {
  return {
    meta: {
      name,
      labels: opts.labels ?? {},
      annotations: opts.annotations ?? {},
      generation: 0n,
      resourceVersion: opts.rv ?? '',
      createTime: undefined,
      updateTime: undefined,
      managedBy: '',
    },
    spec: {
      endpoints: [
        { agent: opts.device ?? 'host-a', role: Role.ROLE_DEVICE },
        { agent: opts.driver ?? 'card-b', role: Role.ROLE_DRIVER },
      ],
      transport: { kind: { $case: 'shm', value: { directory: opts.dir ?? '', windowSizeBytes: 0n } } },
      devices: opts.devices ?? [bytePipeDevice('con0', 'console'), bytePipeDevice('disk0', 'blk')],
    },
    status: undefined,
  };
}

export class Agent {
  readonly client: AgentServiceClient;
  constructor(address: string, creds: ChannelCredentials = insecure, options: Record<string, string> = {}) {
    this.client = new AgentServiceClient(address, creds, options);
  }
  apply(link: Link, force = false, dryRun = false) {
    return call(this.client, this.client.applyLink, { link, force, dryRun }, new Metadata());
  }
  get(name: string) {
    return call(this.client, this.client.getLink, { name }, new Metadata());
  }
  list(labelSelector = '', pageSize = 0, pageToken = '') {
    return call(this.client, this.client.listLinks, { labelSelector, pageSize, pageToken }, new Metadata());
  }
  delete(name: string, resourceVersion = '', force = false) {
    return call(this.client, this.client.deleteLink, { name, resourceVersion, force }, new Metadata());
  }
  reset(name: string, reason = '') {
    return call(this.client, this.client.resetLink, { name, reason }, new Metadata());
  }
  addDevice(link: string, device: Device, resourceVersion = '') {
    return call(this.client, this.client.addDevice, { link, device, resourceVersion, force: false }, new Metadata());
  }
  removeDevice(link: string, device: string, resourceVersion = '') {
    return call(this.client, this.client.removeDevice, { link, device, resourceVersion, force: false }, new Metadata());
  }
  stats(link: string) {
    return call(this.client, this.client.getStats, { link }, new Metadata());
  }
  info() {
    return call(this.client, this.client.getInfo, {}, new Metadata());
  }
  watch(
    labelSelector = '',
    updatesOnly = false,
  ): {
    stream: ClientReadableStream<WatchLinksResponse>;
    messages: WatchLinksResponse[];
    waitFor(pred: (m: WatchLinksResponse) => boolean, timeoutMs?: number): Promise<WatchLinksResponse>;
  } {
    const stream = this.client.watchLinks({ labelSelector, updatesOnly });
    const messages: WatchLinksResponse[] = [];
    const waiters: { pred: (m: WatchLinksResponse) => boolean; resolve: (m: WatchLinksResponse) => void }[] = [];
    stream.on('data', (m: WatchLinksResponse) => {
      messages.push(m);
      for (const w of [...waiters]) {
        if (w.pred(m)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    stream.on('error', () => undefined);
    return {
      stream,
      messages,
      waitFor(pred, timeoutMs = 10_000) {
        const hit = messages.find(pred);
        if (hit) return Promise.resolve(hit);
        return new Promise((resolve, reject) => {
          const t = setTimeout(
            () => reject(new Error(`watch: no matching message in ${timeoutMs} ms; got ${messages.length}`)),
            timeoutMs,
          );
          waiters.push({
            pred,
            resolve: (m) => {
              clearTimeout(t);
              resolve(m);
            },
          });
        });
      },
    };
  }
  /** Polls GetLink until the phase matches. */
  async waitPhase(name: string, phase: LinkPhase, timeoutMs = 10_000): Promise<Link> {
    const t0 = Date.now();
    let last: Link | undefined;
    while (Date.now() - t0 < timeoutMs) {
      last = (await this.get(name)).link;
      if (last?.status?.phase === phase) return last;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(
      `link ${name} did not reach phase ${phase}; last status ${JSON.stringify(last?.status, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}`,
    );
  }
  close(): void {
    this.client.close();
  }
}
