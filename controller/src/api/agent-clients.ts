/**
 * gRPC clients from the controller to agents' AgentService (stats, console attach),
 * one channel per agent address, reused. With TLS configured the controller presents
 * its own certificate as the client identity (credentials that follow certificate
 * reloads, see lib/src/cert-files.ts). Callers pass only verified addresses
 * (fleet/address-verification.ts usableAddress): what an agent registers is never dialled
 * as such.
 */
import { credentials, type ChannelCredentials } from '@grpc/grpc-js';

import { AgentServiceClient } from '../../../lib/proto/agent';

export class AgentClients {
  private readonly clients = new Map<string, AgentServiceClient>();
  private readonly creds: ChannelCredentials;

  /** `tlsCredentials` undefined: plaintext (agents on loopback in a plaintext setup). */
  constructor(tlsCredentials: ChannelCredentials | undefined) {
    this.creds = tlsCredentials ?? credentials.createInsecure();
  }

  get(address: string): AgentServiceClient {
    let c = this.clients.get(address);
    if (!c) {
      c = new AgentServiceClient(address, this.creds, { 'grpc.max_reconnect_backoff_ms': 5000 });
      this.clients.set(address, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
