/** The agent's deployment files: the systemd unit verifies and the example config is valid. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { loadAgentConfig } from '../../agent/src/config';
import { repoPath } from '../../lib/src/paths';
import { run } from '../helpers/servers';

describe('vop-agent deployment files', () => {
  it('deploy/systemd/vop-agent.service passes systemd-analyze verify', async () => {
    const r = await run('systemd-analyze', ['verify', repoPath('deploy', 'systemd', 'vop-agent.service')]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', 'no warnings');
  });

  it('keeps the hardening that still allows TAP, /dev/shm, PCI sysfs and VFIO', () => {
    const unit = readFileSync(repoPath('deploy', 'systemd', 'vop-agent.service'), 'utf8');
    const directives = unit.split('\n').filter((l) => !l.startsWith('#'));
    const has = (re: RegExp): boolean => directives.some((l) => re.test(l));
    for (const re of [
      /^NoNewPrivileges=yes/,
      /^ProtectSystem=strict/,
      /^DevicePolicy=closed/,
      /^DeviceAllow=\/dev\/net\/tun rw/,
      /^DeviceAllow=char-vfio rw/,
      /^ReadWritePaths=.*\/dev\/shm/,
      /^ReadWritePaths=.*\/sys\/bus\/pci\/devices/,
      /^LimitMEMLOCK=/,
    ]) {
      assert.ok(has(re), `unit has ${re.source}`);
    }
    for (const re of [/^PrivateDevices=yes/, /^ProtectKernelTunables=yes/, /^MemoryDenyWriteExecute=yes/])
      assert.ok(!has(re), `unit must not have ${re.source}`);
  });

  it('deploy/examples/agent.yaml validates against the schema', () => {
    const loaded = loadAgentConfig(['--config', repoPath('deploy', 'examples', 'agent.yaml')], {});
    assert.equal(loaded.config.node.name, 'host-a');
    assert.equal(loaded.config.tls?.ca, '/etc/vop/pki/ca.pem');
    assert.deepEqual(loaded.config.roles.reader, ['grafana-probe', 'ops-reader']);
  });
});
