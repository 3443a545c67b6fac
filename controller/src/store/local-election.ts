/**
 * Leader election inside one process, for the embedded (SQLite) store: one controller
 * is the only writer of its file, so its elector leads as soon as it campaigns. Several
 * electors of one store queue up in campaign order (tests use that), and a resigned
 * leader's fence stops working at once, as on etcd.
 */
import { randomUUID } from 'node:crypto';

import { LeaderStateBox, type Fence, type LeaderElector, type LeaderState } from './leader-election';

export class LocalElection {
  private readonly queue: LocalElector[] = [];
  private readonly id = randomUUID();
  private term = 0n;
  private fence: Fence | null = null;

  /** True while `fence` is the current term's. */
  holds(fence: Fence): boolean {
    return this.fence !== null && this.fence.key === fence.key && this.fence.revision === fence.revision;
  }

  elector(value: string): LeaderElector {
    return new LocalElector(this, value);
  }

  /** @internal */
  join(e: LocalElector): void {
    if (!this.queue.includes(e)) this.queue.push(e);
    this.update();
  }

  /** @internal */
  leave(e: LocalElector): void {
    const i = this.queue.indexOf(e);
    if (i >= 0) this.queue.splice(i, 1);
    e.box.set({ role: 'stopped' });
    this.update();
  }

  private update(): void {
    const head = this.queue[0];
    if (!head) {
      this.fence = null;
      return;
    }
    const st = head.box.get();
    if (st.role !== 'leader') {
      this.term++;
      this.fence = { key: `local/${this.id}/leader`, revision: this.term };
      head.box.set({ role: 'leader', fence: this.fence });
    }
    for (const e of this.queue.slice(1)) e.box.set({ role: 'follower', leader: head.value });
  }
}

class LocalElector implements LeaderElector {
  readonly box = new LeaderStateBox();

  constructor(
    private readonly election: LocalElection,
    readonly value: string,
  ) {}

  campaign(): void {
    this.election.join(this);
  }

  async resign(): Promise<void> {
    this.election.leave(this);
  }

  state(): LeaderState {
    return this.box.get();
  }

  observe(listener: (state: LeaderState) => void): () => void {
    return this.box.observe(listener);
  }

  async close(): Promise<void> {
    await this.resign();
  }
}
