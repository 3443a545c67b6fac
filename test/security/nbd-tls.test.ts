/**
 * NBD over TCP requires TLS (issue 11, item 3). Two real vop-agent processes with mTLS
 * certificates made here: host-a serves a blk device from a disk image, card-b exports it
 * over NBD on TCP loopback. Attacks: a plaintext client (nbdinfo, and a raw client that
 * skips STARTTLS or floods options), client certificates from another CA, from the CA but
 * without an allowed name, and none at all; an agent without certificates asked for a TCP
 * export. Each is refused and the disk is not read (the device side's read counter does
 * not move). nbdcopy over nbds:// moves a disk image with matching checksums.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { credentials, status, type ChannelCredentials } from '@grpc/grpc-js';

import { LinkPhase, type Device, type Link } from '../../lib/proto/types';
import { Agent, makeLink } from '../agent/helpers';
import { decodeStatus, expectGrpcError } from '../helpers/grpc';
import { haveCommand, requirePrereq } from '../helpers/prereq';
import { run, startServer, tempDir, type ServerProcess } from '../helpers/servers';

const MIB = 1024 * 1024;
const DISK_BYTES = 32 * MIB;

const TOOLS = ['nbdinfo', 'nbdcopy', 'openssl'];
const missing = TOOLS.filter((t) => !haveCommand(t));

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function openssl(dir: string, args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`);
}

function makeCa(dir: string, name: string): void {
  openssl(
    dir,
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
      '-keyout',
      `${name}-key.pem`,
      '-out',
      `${name}.pem`,
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
    ]),
  );
}

/** file.pem / file-key.pem with subject CN=cn, signed by ca; a server certificate names 127.0.0.1. */
function makeCert(dir: string, ca: string, file: string, cn: string, server: boolean): void {
  openssl(
    dir,
    ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'].concat([
      '-keyout',
      `${file}-key.pem`,
      '-out',
      `${file}.csr`,
      '-subj',
      `/CN=${cn}`,
    ]),
  );
  writeFileSync(
    path.join(dir, `${file}.ext`),
    server
      ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n'
      : 'extendedKeyUsage=clientAuth\n',
  );
  openssl(
    dir,
    ['x509', '-req', '-in', `${file}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}-key.pem`].concat([
      '-CAcreateserial',
      '-out',
      `${file}.pem`,
      '-days',
      '2',
      '-extfile',
      `${file}.ext`,
    ]),
  );
}

/** A libnbd tls-certificates directory: the CA that signed the server, and a client identity. */
function nbdCertDir(dir: string, name: string, client: string | null): string {
  const d = path.join(dir, `nbd-${name}`);
  mkdirSync(d, { mode: 0o700 });
  copyFileSync(path.join(dir, 'ca.pem'), path.join(d, 'ca-cert.pem'));
  if (client) {
    copyFileSync(path.join(dir, `${client}.pem`), path.join(d, 'client-cert.pem'));
    copyFileSync(path.join(dir, `${client}-key.pem`), path.join(d, 'client-key.pem'));
  }
  return d;
}

function agentConfig(dir: string, node: string, rdv: string, tls: boolean): string {
  const cfg = path.join(dir, `${node}.yaml`);
  const lines = [
    'node:',
    `  name: ${node}`,
    `rendezvousDir: ${rdv}`,
    'hostPaths:',
    `  diskDirs: [${path.join(dir, 'disks')}]`,
  ];
  if (tls)
    lines.push(
      'tls:',
      `  ca: ${path.join(dir, 'ca.pem')}`,
      `  cert: ${path.join(dir, `${node}.pem`)}`,
      `  key: ${path.join(dir, `${node}-key.pem`)}`,
      'roles:',
      '  admin: [ops-admin]',
    );
  writeFileSync(cfg, lines.join('\n') + '\n');
  return cfg;
}

function blkDevice(disk: string, tcpListen: string): Device {
  return {
    name: 'disk0',
    queueSize: 0,
    disableEventIdx: false,
    kind: {
      $case: 'blk',
      value: {
        backing: { path: disk, readOnly: false, directIo: false, serial: 'nbd-tls' },
        export: { unixSocket: '', tcpListen, exportName: 'vop' },
      },
    },
  };
}

/** A raw NBD client that reads exactly what it asks for, or learns that the server closed. */
class RawNbd {
  private buf = Buffer.alloc(0);
  private closed = false;
  private wake: (() => void) | null = null;
  readonly sock: net.Socket;
  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => undefined);
  }
  static connect(port: number): Promise<RawNbd> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new RawNbd(s)));
      s.once('error', reject);
    });
  }
  /** n bytes, or null when the server closed first. */
  async read(n: number, timeoutMs = 10_000): Promise<Buffer | null> {
    const end = Date.now() + timeoutMs;
    while (this.buf.length < n) {
      if (this.closed) return null;
      if (Date.now() > end) throw new Error(`raw NBD: no ${n} bytes in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }
  /** Resolves with every byte received until the server closes. */
  async untilClosed(timeoutMs = 10_000): Promise<Buffer> {
    const end = Date.now() + timeoutMs;
    while (!this.closed) {
      if (Date.now() > end) throw new Error(`raw NBD: server did not close in ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
    return this.buf;
  }
  write(b: Buffer): void {
    if (!this.closed) this.sock.write(b);
  }
  /** Greeting and client flags (fixed newstyle, no zeroes). */
  async hello(): Promise<void> {
    const g = await this.read(18);
    assert.ok(g, 'greeting');
    assert.equal(g.subarray(0, 16).toString('latin1'), 'NBDMAGICIHAVEOPT');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(3);
    this.write(f);
  }
  option(opt: number, data: Buffer = Buffer.alloc(0)): void {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(opt, 8);
    h.writeUInt32BE(data.length, 12);
    this.write(Buffer.concat([h, data]));
  }
  /** One option reply header: option and reply type (payload skipped). */
  async reply(): Promise<{ opt: number; type: number } | null> {
    const h = await this.read(20);
    if (!h) return null;
    const len = h.readUInt32BE(16);
    if (len > 0 && !(await this.read(len))) return null;
    return { opt: h.readUInt32BE(8), type: h.readUInt32BE(12) };
  }
  close(): void {
    this.sock.destroy();
  }
}

const NBD_OPT_EXPORT_NAME = 1;
const NBD_OPT_LIST = 3;
const NBD_OPT_INFO = 6;
const NBD_OPT_GO = 7;
const NBD_REP_ERR_TLS_REQD = 0x80000005;

/** NBD_OPT_GO / NBD_OPT_INFO data for export name and no info requests. */
function goData(name: string): Buffer {
  const n = Buffer.from(name);
  const b = Buffer.alloc(4 + n.length + 2);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  return b;
}

/** An NBD_CMD_READ request of len bytes at 0. */
function readRequest(len: number): Buffer {
  const r = Buffer.alloc(28);
  r.writeUInt32BE(0x25609513, 0);
  r.writeUInt16BE(0, 6);
  r.writeBigUInt64BE(1n, 8);
  r.writeUInt32BE(len, 24);
  return r;
}

describe(
  'NBD export over TCP requires TLS',
  { skip: requirePrereq(missing.join(', '), missing.length === 0, 'NBD client tools (libnbd-bin) and openssl') },
  () => {
    const dir = tempDir('nbdtls');
    const rdv = path.join(dir, 'rdv');
    const disk = path.join(dir, 'disks', 'disk.img');
    let srvA: ServerProcess;
    let srvB: ServerProcess;
    let a: Agent;
    let b: Agent;
    let port = 0;
    let creds: ChannelCredentials;
    let link: Link;

    /** Bytes the device side has read from the disk image for this link (its blk counters). */
    const bytesRead = async (): Promise<bigint> => {
      const st = await a.stats('nbd');
      const c = st.devices.find((d) => d.device === 'disk0')?.counters ?? {};
      assert.ok('bytes_read' in c, `device-side counters: ${Object.keys(c).join(' ')}`);
      return BigInt(c.bytes_read ?? 0);
    };

    before(async () => {
      mkdirSync(rdv, { mode: 0o700 });
      mkdirSync(path.join(dir, 'disks'), { mode: 0o700 });
      makeCa(dir, 'ca');
      makeCa(dir, 'rogue-ca');
      makeCert(dir, 'ca', 'host-a', 'host-a', true);
      makeCert(dir, 'ca', 'card-b', 'card-b', true);
      makeCert(dir, 'ca', 'ops-admin', 'ops-admin', false);
      makeCert(dir, 'ca', 'card-x', 'card-x', false); // a card of the fleet: signed by the CA, no admin name
      makeCert(dir, 'rogue-ca', 'rogue-admin', 'ops-admin', false); // the right name, the wrong CA
      writeFileSync(disk, randomBytes(DISK_BYTES), { mode: 0o600 });
      srvA = await startServer('agent', ['--config', agentConfig(dir, 'host-a', rdv, true)], {
        stateDir: path.join(dir, 'state-a'),
      });
      srvB = await startServer('agent', ['--config', agentConfig(dir, 'card-b', rdv, true)], {
        stateDir: path.join(dir, 'state-b'),
      });
      creds = credentials.createSsl(
        readFileSync(path.join(dir, 'ca.pem')),
        readFileSync(path.join(dir, 'ops-admin-key.pem')),
        readFileSync(path.join(dir, 'ops-admin.pem')),
      );
      a = new Agent(srvA.grpc, creds);
      b = new Agent(srvB.grpc, creds);
      link = makeLink('nbd', { devices: [blkDevice(disk, '127.0.0.1:0')] });
      await Promise.all([a.apply(link), b.apply(link)]);
      const lb = await b.waitPhase('nbd', LinkPhase.LINK_PHASE_READY, 30_000);
      await a.waitPhase('nbd', LinkPhase.LINK_PHASE_READY, 30_000);
      const ep = lb.status?.devices.find((d) => d.name === 'disk0')?.endpoints ?? {};
      const key = Object.keys(ep).find((k) => /^nbd\d+-port$/.test(k));
      port = Number(key ? ep[key] : 0);
      assert.ok(port > 0, `the driver side reports its TCP port: ${JSON.stringify(ep)}`);
    });

    after(async () => {
      a?.close();
      b?.close();
      await Promise.all([srvA?.stop('SIGTERM'), srvB?.stop('SIGTERM')]);
      rmSync(dir, { recursive: true, force: true });
    });

    it('refuses plaintext NBD over TCP: nbdinfo without TLS and a raw client skipping STARTTLS read nothing', async () => {
      const before0 = await bytesRead();
      const info = await run('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/vop`], { timeoutMs: 30_000 });
      assert.notEqual(info.code, 0, 'nbdinfo without TLS fails');
      assert.doesNotMatch(info.stdout, /export-size/, 'not even the size is disclosed');
      const list = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${port}`], { timeoutMs: 30_000 });
      assert.notEqual(list.code, 0, 'no export list without TLS');
      assert.doesNotMatch(list.stdout, /vop/);

      // LIST, INFO and GO get NBD_REP_ERR_TLS_REQD; NBD_OPT_EXPORT_NAME (which cannot be refused) closes.
      const c1 = await RawNbd.connect(port);
      await c1.hello();
      for (const [opt, data] of [
        [NBD_OPT_LIST, Buffer.alloc(0)],
        [NBD_OPT_INFO, goData('vop')],
        [NBD_OPT_GO, goData('')],
      ] as const) {
        c1.option(opt, data);
        assert.deepEqual(await c1.reply(), { opt, type: NBD_REP_ERR_TLS_REQD });
      }
      c1.option(NBD_OPT_EXPORT_NAME, Buffer.from('vop'));
      c1.write(readRequest(4096)); // and read at once, as if transmission had started
      const leaked = await c1.untilClosed();
      assert.equal(leaked.length, 0, 'closed without the export size or any data');
      c1.close();

      // A client that keeps sending options without STARTTLS is cut off.
      const c2 = await RawNbd.connect(port);
      await c2.hello();
      let answered = 0;
      for (let i = 0; i < 40; i++) {
        c2.option(NBD_OPT_LIST);
        const r = await c2.reply();
        if (!r) break;
        assert.equal(r.type, NBD_REP_ERR_TLS_REQD);
        answered++;
      }
      assert.ok(answered <= 16, `closed after at most 16 options before TLS, answered ${answered}`);
      await c2.untilClosed();
      c2.close();
      assert.equal(await bytesRead(), before0, 'the device side read nothing from the disk');
    });

    it('moves a disk image with nbdcopy over nbds:// (mutual TLS) with matching checksums', async () => {
      const certs = nbdCertDir(dir, 'admin', 'ops-admin');
      const uri = `nbds://127.0.0.1:${port}/vop?tls-certificates=${certs}`;
      const info = await run('nbdinfo', [uri], { timeoutMs: 30_000 });
      assert.equal(info.code, 0, info.stderr);
      assert.match(info.stdout, /with TLS/);
      const src = path.join(dir, 'src.img');
      const data = randomBytes(DISK_BYTES);
      writeFileSync(src, data);
      const put = await run('nbdcopy', ['--flush', src, uri], { timeoutMs: 120_000 });
      assert.equal(put.code, 0, put.stderr);
      const back = path.join(dir, 'back.img');
      const get = await run('nbdcopy', [uri, back], { timeoutMs: 120_000 });
      assert.equal(get.code, 0, get.stderr);
      assert.equal(sha256(readFileSync(back)), sha256(data), 'read back over TLS');
      assert.equal(sha256(readFileSync(disk)), sha256(data), "the device side's backing file");
    });

    it('refuses a client certificate from another CA, a CA-signed one without an allowed name, and none', async () => {
      const before0 = await bytesRead();
      const cases = [
        nbdCertDir(dir, 'rogue', 'rogue-admin'),
        nbdCertDir(dir, 'card', 'card-x'),
        nbdCertDir(dir, 'none', null),
      ];
      for (const certs of cases) {
        const r = await run('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/vop?tls-certificates=${certs}`], {
          timeoutMs: 30_000,
        });
        assert.notEqual(r.code, 0, `${path.basename(certs)}: refused`);
        assert.doesNotMatch(r.stdout, /export-size/, `${path.basename(certs)}: nothing disclosed`);
        assert.match(r.stderr, /TLS|tls|certificate/i, `${path.basename(certs)}: ${r.stderr}`);
      }
      assert.equal(await bytesRead(), before0, 'the device side read nothing from the disk');
    });

    it('refuses at apply time a TCP export on an agent without TLS certificates, and a non-loopback plaintext one', async () => {
      const state = tempDir('nbdtls-plain');
      const plainCfg = agentConfig(dir, 'card-c', rdv, false);
      const spec = (listen: string): Link =>
        makeLink('plain', { driver: 'card-c', devices: [blkDevice(disk, listen)] });
      let srvC = await startServer('agent', ['--config', plainCfg], { stateDir: state });
      try {
        const c = new Agent(srvC.admin);
        const err = decodeStatus(await expectGrpcError(c.apply(spec('127.0.0.1:0'))));
        assert.equal(err.code, status.FAILED_PRECONDITION, err.message);
        assert.equal(err.reason, 'NBD_TCP_NEEDS_TLS');
        assert.match(err.message, /link\.spec\.devices\[0\]\.blk\.export\.tcp_listen/);
        assert.match(err.message, /requires TLS/);
        assert.equal((await c.list()).links.length, 0, 'nothing applied');
        c.close();
        await srvC.stop('SIGTERM');
        assert.deepEqual(
          readdirSync(state).filter((f) => f.endsWith('.json')),
          [],
          'nothing stored in the state directory',
        );

        // The operator allows plaintext TCP: on loopback only.
        srvC = await startServer('agent', ['--config', plainCfg, '--nbd-allow-plaintext-tcp'], { stateDir: state });
        const c2 = new Agent(srvC.admin);
        const wide = decodeStatus(await expectGrpcError(c2.apply(spec('0.0.0.0:10809'))));
        assert.equal(wide.code, status.FAILED_PRECONDITION, wide.message);
        assert.match(wide.message, /non-loopback address 0\.0\.0\.0 requires TLS/);
        const ok = await c2.apply(spec('127.0.0.1:0'), false, true);
        assert.equal(ok.changed, true, 'a loopback plaintext export is accepted (dry run)');
        c2.close();
      } finally {
        await srvC.stop('SIGTERM');
        rmSync(state, { recursive: true, force: true });
      }
    });
  },
);
