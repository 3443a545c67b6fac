/** The agent's deployment files: the systemd unit verifies and the example config is valid. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { loadAgentConfig } from '../../agent/src/config';
import { loadControllerConfig } from '../../controller/src/config';
import { repoPath } from '../../lib/src/paths';
import { run } from '../helpers/servers';

describe('vop-agent deployment files', () => {
  it('deploy/systemd/vop-agent.service passes systemd-analyze verify', async () => {
    const r = await run('systemd-analyze', ['verify', repoPath('deploy', 'systemd', 'vop-agent.service')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  });

  it('grants only what the built transports use: TAP (CAP_NET_ADMIN, /dev/net/tun) and its own directories', () => {
    const unit = readFileSync(repoPath('deploy', 'systemd', 'vop-agent.service'), 'utf8');
    const directives = unit.split('\n').filter((l) => !l.startsWith('#'));
    const has = (re: RegExp): boolean => directives.some((l) => re.test(l));
    for (const re of [
      /^NoNewPrivileges=yes/,
      /^ProtectSystem=strict/,
      /^ProtectKernelTunables=yes/,
      /^DevicePolicy=closed/,
      /^DeviceAllow=\/dev\/net\/tun rw$/,
      /^CapabilityBoundingSet=CAP_NET_ADMIN$/,
      /^AmbientCapabilities=CAP_NET_ADMIN$/,
      /^ExecStart=.* --admin-socket \/run\/vop\/agent\.sock/,
      /^ExecReload=\/bin\/kill -HUP \$MAINPID/,
    ]) {
      assert.ok(has(re), `unit has ${re.source}`);
    }
    // Nothing for the transports that are not built (pci-bar/pci-epf: VFIO, UIO, PCI sysfs, configfs).
    for (const re of [
      /^PrivateDevices=yes/,
      /^MemoryDenyWriteExecute=yes/,
      /^DeviceAllow=.*(vfio|uio)/,
      /^ReadWritePaths=/,
      /^LimitMEMLOCK=/,
      /CAP_IPC_LOCK|CAP_SYS_ADMIN/,
      /AF_VSOCK/,
    ])
      assert.ok(!has(re), `unit must not have ${re.source}`);
  });

  it('deploy/systemd/vop-controller.service passes systemd-analyze verify and serves its admin socket', async () => {
    const file = repoPath('deploy', 'systemd', 'vop-controller.service');
    const r = await run('systemd-analyze', ['verify', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
    const unit = readFileSync(file, 'utf8');
    assert.match(unit, /^ExecStart=.* --admin-socket \/run\/vop\/controller\.sock/m);
    assert.match(unit, /^CapabilityBoundingSet=$/m);
  });

  it('deploy/examples/agent.yaml validates against the schema, with metrics on loopback and no plaintext admin', () => {
    const loaded = loadAgentConfig(['--config', repoPath('deploy', 'examples', 'agent.yaml')], {});
    assert.equal(loaded.config.node.name, 'host-a');
    assert.equal(loaded.config.tls?.ca, '/etc/vop/pki/ca.pem');
    assert.deepEqual(loaded.config.roles.reader, ['grafana-probe', 'ops-reader']);
    assert.equal(loaded.config.metricsListen.host, '127.0.0.1');
    assert.equal(loaded.config.plaintextRole, 'reader');
    assert.equal(loaded.config.adminSocket.path, '/run/vop/agent.sock');
    assert.deepEqual(loaded.config.roles.agent, []);
  });

  it('deploy/examples/controller.yaml validates against the schema, with metrics and /sd/agents on loopback', () => {
    const loaded = loadControllerConfig(['--config', repoPath('deploy', 'examples', 'controller.yaml')], {});
    assert.equal(loaded.config.metricsListen.host, '127.0.0.1');
    assert.equal(loaded.config.adminSocket.path, '/run/vop/controller.sock');
    assert.equal(loaded.config.plaintextRole, 'reader');
    assert.ok(!loaded.config.roles.agent.includes('*'), 'the agent role is granted by name, not to every certificate');
  });
});
