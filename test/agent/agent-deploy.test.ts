/** The agent's deployment files: the systemd unit verifies and the example config is valid. */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

import { loadAgentConfig } from '../../agent/src/config';
import { loadControllerConfig } from '../../controller/src/config';
import { repoPath } from '../../lib/src/paths';
import { run } from '../helpers/servers';
import { tempDirRemovedAtExit } from '../helpers/temp-dir';

import YAML from 'yaml';

interface K8sObject {
  kind: string;
  metadata: { name: string };
  data?: Record<string, string>;
  spec?: Record<string, unknown>;
}

function k8sObjects(text: string): K8sObject[] {
  return YAML.parseAllDocuments(text)
    .map((d) => d.toJSON() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

interface PodSpec {
  hostNetwork?: boolean;
  containers: {
    name: string;
    env?: { name: string; value?: string }[];
    securityContext?: { privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
  }[];
  volumes: {
    name: string;
    secret?: { secretName: string };
    hostPath?: { path: string };
    persistentVolumeClaim?: { claimName: string };
  }[];
}

function podSpec(o: K8sObject): PodSpec {
  return (o.spec as { template: { spec: PodSpec } }).template.spec;
}

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

  it('deploy/kubernetes: one certificate per node, the controller key only in the controller pod, agents unprivileged with NET_ADMIN only', () => {
    const dir = repoPath('deploy', 'kubernetes');
    const node = readFileSync(path.join(dir, 'agent-node.yaml'), 'utf8')
      .replace(/NODE_NAME/g, 'card-7')
      .replace(/NODE_IP/g, '192.0.2.7');
    const rendered = k8sObjects(node);
    const all = readdirSync(dir)
      .filter((f) => f.endsWith('.yaml') && f !== 'agent-node.yaml')
      .flatMap((f) => k8sObjects(readFileSync(path.join(dir, f), 'utf8')))
      .concat(rendered);
    const cert = rendered.find((o) => o.kind === 'Certificate');
    assert.equal((cert?.spec as { commonName: string }).commonName, 'card-7');
    assert.deepEqual((cert?.spec as { ipAddresses: string[] }).ipAddresses, ['192.0.2.7']);
    assert.equal((cert?.spec as { secretName: string }).secretName, 'vop-agent-card-7');
    const ds = rendered.find((o) => o.kind === 'DaemonSet');
    assert.ok(ds);
    const agentPod = podSpec(ds);
    const secrets = agentPod.volumes.filter((v) => v.secret).map((v) => v.secret?.secretName);
    assert.deepEqual(secrets, ['vop-agent-card-7'], 'the agent mounts its own node certificate and no other secret');
    const agentC = agentPod.containers.find((c) => c.name === 'agent');
    assert.equal(agentC?.securityContext?.privileged, false);
    assert.deepEqual(agentC?.securityContext?.capabilities?.add, ['NET_ADMIN']);
    assert.deepEqual(agentC?.securityContext?.capabilities?.drop, ['ALL']);
    for (const v of agentPod.volumes)
      assert.ok(!/^\/(sys|dev\/vfio)/.test(v.hostPath?.path ?? ''), `no ${v.hostPath?.path} for unbuilt transports`);
    assert.equal(agentC?.env?.find((e) => e.name === 'VOP_AGENT_METRICS_LISTEN')?.value, '$(POD_IP):9411');
    // The controller's key: mounted by the controller Deployment, by nothing else.
    const mounting = all
      .filter((o) => o.kind === 'Deployment' || o.kind === 'DaemonSet')
      .filter((o) => podSpec(o).volumes.some((v) => v.secret?.secretName === 'vop-controller-tls'))
      .map((o) => `${o.kind}/${o.metadata.name}`);
    // controller.yaml and controller-ha.yaml are alternatives: the same Deployment.
    assert.deepEqual([...new Set(mounting)], ['Deployment/vop-controller']);
    // The embedded configs validate; metrics go over HTTPS on the pod address.
    const agentYaml = all.find((o) => o.metadata.name === 'vop-agent-config')?.data?.['agent.yaml'] ?? '';
    const ctlYaml = all.find((o) => o.metadata.name === 'vop-controller-config')?.data?.['controller.yaml'] ?? '';
    const tmp = tempDirRemovedAtExit('vop-k8s-');
    writeFileSync(path.join(tmp, 'agent.yaml'), agentYaml);
    writeFileSync(path.join(tmp, 'controller.yaml'), ctlYaml);
    const a = loadAgentConfig(['--config', path.join(tmp, 'agent.yaml')], {
      VOP_AGENT_NODE_NAME: 'card-7',
      VOP_AGENT_METRICS_LISTEN: '192.0.2.7:9411',
      VOP_AGENT_GRPC_LISTEN: '192.0.2.7:7411',
    }).config;
    assert.ok(a.metricsTls?.ca, 'agent metrics need a client certificate');
    assert.ok(a.controller?.tls, 'the agent syncs over mutual TLS');
    const c = loadControllerConfig(['--config', path.join(tmp, 'controller.yaml')], {
      VOP_CONTROLLER_METRICS_LISTEN: '192.0.2.9:9400',
    }).config;
    assert.ok(c.metricsTls?.ca, 'controller metrics and /sd/agents need a client certificate');
    assert.ok(c.roles.reader.includes('prometheus'));
    assert.equal(a.controller?.tls?.serverName, 'vop-controller.vop-system.svc', 'agents follow a leader by pod IP');
  });

  it('deploy/kubernetes/controller-ha.yaml: two replicas, one per node, on etcd over TLS, each advertising its pod address', () => {
    const objs = k8sObjects(readFileSync(repoPath('deploy', 'kubernetes', 'controller-ha.yaml'), 'utf8'));
    const dep = objs.find((o) => o.kind === 'Deployment');
    assert.ok(dep);
    const spec = dep.spec as { replicas: number; strategy: { type: string } };
    assert.equal(spec.replicas, 2);
    assert.equal(spec.strategy.type, 'RollingUpdate');
    assert.ok(objs.some((o) => o.kind === 'PodDisruptionBudget'));
    const pod = podSpec(dep);
    const c = pod.containers.find((x) => x.name === 'controller');
    assert.equal(c?.env?.find((e) => e.name === 'VOP_CONTROLLER_ADVERTISE_ADDRESS')?.value, '$(POD_IP):7400');
    assert.deepEqual(
      pod.volumes.filter((v) => v.secret).map((v) => v.secret?.secretName),
      ['vop-controller-tls', 'vop-controller-etcd-tls'],
    );
    assert.ok(!pod.volumes.some((v) => v.persistentVolumeClaim), 'no state that must survive a pod');
    const yaml = objs.find((o) => o.metadata.name === 'vop-controller-ha-config')?.data?.['controller.yaml'] ?? '';
    const tmp = tempDirRemovedAtExit('vop-k8s-ha-');
    writeFileSync(path.join(tmp, 'controller.yaml'), yaml);
    const cfg = loadControllerConfig(['--config', path.join(tmp, 'controller.yaml')], {
      VOP_CONTROLLER_METRICS_LISTEN: '192.0.2.9:9400',
      VOP_CONTROLLER_ADVERTISE_ADDRESS: '192.0.2.9:7400',
    }).config;
    assert.equal(cfg.advertiseAddress, '192.0.2.9:7400');
    assert.equal(cfg.store.kind, 'etcd');
    if (cfg.store.kind === 'etcd') {
      assert.ok(cfg.store.tls?.cert, 'etcd over mutual TLS');
      assert.ok(cfg.store.endpoints.every((e) => e.startsWith('https://')));
    }
  });

  it('deploy/examples/controller-ha.yaml validates: an etcd store over TLS and an advertise address', () => {
    const c = loadControllerConfig(['--config', repoPath('deploy', 'examples', 'controller-ha.yaml')], {}).config;
    assert.equal(c.store.kind, 'etcd');
    assert.match(c.advertiseAddress ?? '', /^[0-9.]+:7400$/);
  });
});
