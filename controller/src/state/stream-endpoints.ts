/**
 * What the controller fills in a stream link's spec (issue 15, items 3 and 4), so that a
 * LinkPolicy can stamp out stream links between any two agents and nobody has to invent
 * addresses or secrets:
 *
 *   - address and listen_address (TCP, when the spec leaves address empty): the device side
 *     agent's registered data-plane address (AgentAddresses.data_plane) and a port of its
 *     range (data_plane_ports). The port is stored in the link's spec, so it is stable across
 *     reconciles and controller restarts (a re-render keeps the port the link has while it is
 *     still in the agent's range at the same address) and free again once the link is deleted.
 *   - secret (when the spec gives none and allow_plaintext is not set): the secret the stored
 *     link has, else 32 bytes from the CSPRNG (base64url). It travels to both agents in their
 *     desired links (the Sync stream) and is write-only like a user-given one (lib/src/redact.ts).
 *
 * Ports handed out but not yet in the cache (a write in flight) are reserved here, so that an
 * ApplyLink and a policy pass at the same time never give one port to two links.
 */
import { randomBytes } from 'node:crypto';

import { Role, StreamProtocol, type LinkSpec, type StreamTransport } from '../../../lib/proto/types';
import type { ObjectCache } from './object-cache';

/** Bytes of entropy of a controller-generated stream secret. */
export const GENERATED_SECRET_BYTES = 32;

export type StreamFillReason = 'NoDataPlaneAddress' | 'DataPlanePortsExhausted';

/** A stream spec the controller cannot complete; `reason` is the condition reason. */
export class StreamFillError extends Error {
  constructor(
    readonly reason: StreamFillReason,
    readonly agent: string,
    message: string,
  ) {
    super(message);
  }
}

export interface StreamFill {
  readonly spec: LinkSpec;
  /** Drops this fill's port reservation (call once the write is committed or abandoned). */
  readonly release: () => void;
}

function streamOf(spec: LinkSpec | undefined): StreamTransport | undefined {
  const k = spec?.transport?.kind;
  return k?.$case === 'stream' ? k.value : undefined;
}

function isTcp(t: StreamTransport): boolean {
  return t.protocol === StreamProtocol.STREAM_PROTOCOL_TCP || t.protocol === StreamProtocol.STREAM_PROTOCOL_UNSPECIFIED;
}

/** "a.b.c.d:port" -> [host, port], else undefined. */
function hostPort(a: string): [string, number] | undefined {
  const i = a.lastIndexOf(':');
  if (i <= 0) return undefined;
  const port = Number(a.slice(i + 1));
  return Number.isInteger(port) && port > 0 ? [a.slice(0, i), port] : undefined;
}

function deviceAgent(spec: LinkSpec): string {
  return spec.endpoints.find((e) => e.role === Role.ROLE_DEVICE)?.agent ?? '';
}

/** A fresh secret: 32 CSPRNG bytes as base64url (43 characters, within 16..256 bytes). */
export function generateSecret(): string {
  return randomBytes(GENERATED_SECRET_BYTES).toString('base64url');
}

export class StreamEndpoints {
  /** Ports handed out whose link is not in the cache yet, per agent. */
  private readonly pending = new Map<string, Set<number>>();

  constructor(
    private readonly cache: ObjectCache,
    /** Names of the links with an endpoint on an agent (FleetState's index). */
    private readonly linksOf: (agent: string) => ReadonlySet<string>,
  ) {}

  /** Ports the agent's stream links listen on (every link but `except`), plus reservations. */
  private usedPorts(agent: string, except: string): Set<number> {
    const used = new Set(this.pending.get(agent));
    for (const ln of this.linksOf(agent)) {
      if (ln === except) continue;
      const spec = this.cache.links.get(ln)?.obj.spec;
      const t = streamOf(spec);
      if (!spec || !t || !isTcp(t) || deviceAgent(spec) !== agent) continue;
      const hp = hostPort(t.listenAddress !== '' ? t.listenAddress : t.address);
      if (hp) used.add(hp[1]);
    }
    return used;
  }

  /**
   * The spec with what the controller fills (the same object when there is nothing to fill).
   * `prev` is the spec the stored link has now (its port and secret are kept). Throws
   * StreamFillError when the device agent registered no data-plane address or its range is full.
   */
  fill(name: string, spec: LinkSpec, prev: LinkSpec | undefined): StreamFill {
    const t = streamOf(spec);
    const none = { spec, release: () => undefined };
    if (!t) return none;
    const p = streamOf(prev);
    let next: StreamTransport = t;
    if (t.secret === '' && !t.allowPlaintext)
      next = { ...next, secret: p && p.secret !== '' ? p.secret : generateSecret() };
    let release = (): void => undefined;
    if (t.address === '' && isTcp(t)) {
      const agent = deviceAgent(spec);
      const a = this.cache.agents.get(agent)?.obj.status?.addresses;
      const host = a?.dataPlane ?? '';
      const range = a?.dataPlanePorts;
      if (host === '' || !range)
        throw new StreamFillError(
          'NoDataPlaneAddress',
          agent,
          `the device side agent "${agent}" registered no data-plane address and port range (dataPlane in its config); name transport.stream.address in the spec or configure the agent`,
        );
      const used = this.usedPorts(agent, name);
      const old = p && isTcp(p) && deviceAgent(prev as LinkSpec) === agent ? hostPort(p.address) : undefined;
      let port = 0;
      if (old && old[0] === host && old[1] >= range.first && old[1] <= range.last && !used.has(old[1])) port = old[1];
      for (let q = range.first; port === 0 && q <= range.last; q++) if (!used.has(q)) port = q;
      if (port === 0)
        throw new StreamFillError(
          'DataPlanePortsExhausted',
          agent,
          `the data-plane port range ${range.first}-${range.last} of agent "${agent}" is exhausted (every port is held by a stream link); widen dataPlane.ports or delete a link`,
        );
      next = { ...next, address: `${host}:${port}`, listenAddress: `${host}:${port}` };
      let set = this.pending.get(agent);
      if (!set) this.pending.set(agent, (set = new Set()));
      set.add(port);
      release = () => {
        set.delete(port);
        if (set.size === 0 && this.pending.get(agent) === set) this.pending.delete(agent);
      };
    }
    if (next === t) return none;
    return { spec: { ...spec, transport: { kind: { $case: 'stream', value: next } } }, release };
  }
}
