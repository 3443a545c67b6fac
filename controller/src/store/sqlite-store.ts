/**
 * Embedded backend of the desired-state store: better-sqlite3 in WAL mode with
 * synchronous=FULL, one file in the state directory. Each commit is its own revision with its CAS check, run in a
 * savepoint; the commits asked for in one turn of the event loop share one SQLite transaction and so one fsync
 * (group commit), and none resolves before that transaction is durable.
 *
 * One process owns the file, so the watch is in memory: the recent commits' events are
 * kept (HISTORY_EVENTS, HISTORY_BYTES), a watch from before them resyncs, and leader election is the
 * one-process kind (local-election.ts).
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import path from 'node:path';

import Database from 'better-sqlite3';

import type { LeaderElector } from './leader-election';
import { LocalElection } from './local-election';
import {
  isDesiredKind,
  StoreConflictError,
  StoreFencedError,
  StoreUnavailableError,
  type CommitOptions,
  type DesiredStateStore,
  type ObjectKind,
  type StoreEvent,
  type StoreIdentity,
  type StoreOp,
  type StoreSnapshot,
  type StoredObject,
  type StoreWatch,
  type WatchBatch,
  type WatchHandlers,
} from './store';

export const SQLITE_FILE = 'controller.db';

/** Events kept for watches from a past revision; older ones resync. */
export const HISTORY_EVENTS = 10_000;
/**
 * Object bytes those events may hold at most: events carry whole objects (up to 256 KiB of
 * annotations each), so a count alone would let the history hold gigabytes.
 */
export const HISTORY_BYTES = 16 * 1024 * 1024;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  revision INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (kind, name)
) STRICT;
CREATE TABLE IF NOT EXISTS identity (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('schema', 1);
-- A file from before generations existed: its last desired change is at most its revision.
INSERT OR IGNORE INTO meta (key, value) SELECT 'generation', value FROM meta WHERE key = 'revision';
`;

/** A commit waiting for the next group transaction. */
interface PendingCommit {
  readonly ops: readonly StoreOp[];
  readonly options: CommitOptions;
  readonly resolve: (rev: bigint) => void;
  readonly reject: (err: unknown) => void;
  outcome?: { ok: true; rev: bigint; events: StoreEvent[] } | { ok: false; err: unknown };
}

interface Watcher {
  readonly handlers: WatchHandlers;
  closed: boolean;
}

function eventBytes(e: StoreEvent): number {
  return e.type === 'put' ? e.data.byteLength : 0;
}

export class SqliteStore implements DesiredStateStore {
  readonly maxOpsPerCommit = Number.MAX_SAFE_INTEGER;
  private readonly db: Database.Database;
  private rev: bigint;
  private gen: bigint;
  private readonly clusterId: string;
  private readonly stmtGetRev: Database.Statement<[string, string], { revision: bigint }>;
  private readonly stmtPut: Database.Statement<[string, string, bigint, Uint8Array]>;
  private readonly stmtDelete: Database.Statement<[string, string]>;
  private readonly stmtSetMeta: Database.Statement<[bigint, string]>;
  private readonly txn: (ops: readonly StoreOp[]) => { rev: bigint; gen: bigint };
  private readonly groupTxn: (group: readonly PendingCommit[]) => void;
  private pending: PendingCommit[] = [];
  private flushScheduled = false;
  private closed = false;
  private readonly election = new LocalElection();
  private readonly watchers = new Set<Watcher>();
  /** Events after `historyFrom` (every one of them), oldest first. */
  private history: StoreEvent[] = [];
  /** Object bytes the events in `history` carry. */
  private historyBytes = 0;
  private historyFrom: bigint;

  constructor(stateDir: string) {
    const file = path.join(stateDir, SQLITE_FILE);
    // The store holds write-only fields (stream links' secrets): owner-only whatever the umask or an
    // older version left. SQLite creates its -wal and -shm files with the database file's mode.
    closeSync(openSync(file, 'a', 0o600));
    for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL: every commit is fsynced before it returns, so an acknowledged write survives a
    // power loss (NORMAL in WAL mode may lose the last transactions).
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.defaultSafeIntegers(true);
    this.db.exec(SCHEMA);
    // The cluster id is chosen once, when the file is created (or first opened by a version with identities).
    this.db.prepare("INSERT OR IGNORE INTO identity (key, value) VALUES ('cluster_id', ?)").run(randomUUID());
    this.clusterId =
      this.db.prepare<[], { value: string }>("SELECT value FROM identity WHERE key = 'cluster_id'").get()?.value ?? '';
    const meta = (key: string): bigint =>
      this.db.prepare<[string], { value: bigint }>('SELECT value FROM meta WHERE key = ?').get(key)?.value ?? 0n;
    this.rev = meta('revision');
    this.gen = meta('generation');
    this.historyFrom = this.rev;
    this.stmtGetRev = this.db.prepare('SELECT revision FROM objects WHERE kind = ? AND name = ?');
    this.stmtPut = this.db.prepare(
      'INSERT INTO objects (kind, name, revision, data) VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET revision = excluded.revision, data = excluded.data',
    );
    this.stmtDelete = this.db.prepare('DELETE FROM objects WHERE kind = ? AND name = ?');
    this.stmtSetMeta = this.db.prepare('UPDATE meta SET value = ? WHERE key = ?');
    this.txn = this.db.transaction((ops: readonly StoreOp[]): { rev: bigint; gen: bigint } => {
      for (const op of ops) {
        if (op.expected === undefined) continue;
        const actual = this.stmtGetRev.get(op.kind, op.name)?.revision ?? 0n;
        if (actual !== op.expected) throw new StoreConflictError(op.kind, op.name, op.expected, actual);
      }
      const next = this.rev + 1n;
      for (const op of ops) {
        if (op.op === 'put') this.stmtPut.run(op.kind, op.name, next, op.data);
        else this.stmtDelete.run(op.kind, op.name);
      }
      this.stmtSetMeta.run(next, 'revision');
      let gen = this.gen;
      if (ops.some((op) => isDesiredKind(op.kind))) {
        gen = next;
        this.stmtSetMeta.run(gen, 'generation');
      }
      return { rev: next, gen };
    });
    // Nested transaction functions run as savepoints: a conflict undoes only its own commit.
    this.groupTxn = this.db.transaction((group: readonly PendingCommit[]): void => {
      for (const c of group) {
        if (c.options.fence && !this.election.holds(c.options.fence)) {
          c.outcome = { ok: false, err: new StoreFencedError(c.options.fence) };
          continue;
        }
        try {
          const { rev, gen } = this.txn(c.ops);
          this.rev = rev;
          this.gen = gen;
          const events: StoreEvent[] = c.ops.map((op) =>
            op.op === 'put'
              ? { type: 'put', kind: op.kind, name: op.name, revision: rev, data: op.data }
              : { type: 'delete', kind: op.kind, name: op.name, revision: rev },
          );
          c.outcome = { ok: true, rev, events };
        } catch (err) {
          if (!(err instanceof StoreConflictError)) throw err;
          c.outcome = { ok: false, err };
        }
      }
    });
  }

  async loadAll(): Promise<StoredObject[]> {
    return this.readAll();
  }

  async loadSnapshot(): Promise<StoreSnapshot> {
    return { revision: this.rev, identity: this.identity(), objects: this.readAll() };
  }

  private readAll(): StoredObject[] {
    const rows = this.db
      .prepare<[], { kind: string; name: string; revision: bigint; data: Buffer }>(
        'SELECT kind, name, revision, data FROM objects ORDER BY kind, name',
      )
      .all();
    return rows.map((r) => ({ kind: r.kind as ObjectKind, name: r.name, revision: r.revision, data: r.data }));
  }

  commit(ops: readonly StoreOp[], options: CommitOptions = {}): Promise<bigint> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('the store is closed', false));
    return new Promise<bigint>((resolve, reject) => {
      this.pending.push({ ops, options, resolve, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** Runs every pending commit in one transaction (one fsync), then settles them and feeds the watches in order. */
  private flush(): void {
    this.flushScheduled = false;
    const group = this.pending;
    this.pending = [];
    if (group.length === 0) return;
    const before = { rev: this.rev, gen: this.gen };
    try {
      this.groupTxn(group);
    } catch (err) {
      // The transaction as a whole failed (I/O, disk full): nothing of the group was written.
      this.rev = before.rev;
      this.gen = before.gen;
      const failure = new StoreUnavailableError(`sqlite commit failed: ${(err as Error).message}`, false, {
        cause: err,
      });
      for (const c of group) c.reject(failure);
      return;
    }
    for (const c of group) {
      const o = c.outcome;
      if (o === undefined || !o.ok) {
        c.reject(o?.err ?? new Error('commit not run'));
        continue;
      }
      this.remember(o.events);
      const batch: WatchBatch = { type: 'events', revision: o.rev, identity: this.identity(), events: o.events };
      for (const w of this.watchers) this.deliver(w, batch);
      c.resolve(o.rev);
    }
  }

  private remember(events: readonly StoreEvent[]): void {
    this.history.push(...events);
    for (const e of events) this.historyBytes += eventBytes(e);
    if (this.history.length <= HISTORY_EVENTS && this.historyBytes <= HISTORY_BYTES) return;
    let drop = 0;
    let bytes = this.historyBytes;
    while (drop < this.history.length && (this.history.length - drop > HISTORY_EVENTS || bytes > HISTORY_BYTES))
      bytes -= eventBytes(this.history[drop++] as StoreEvent);
    // Never split one commit: drop through the end of the revision the cut falls in.
    const cutRev = this.history[drop - 1]?.revision ?? this.historyFrom;
    while (this.history[drop]?.revision === cutRev) bytes -= eventBytes(this.history[drop++] as StoreEvent);
    this.history = this.history.slice(drop);
    this.historyBytes = bytes;
    this.historyFrom = cutRev;
  }

  /** In order, after the current call stack (a commit's caller runs first), never after close(). */
  private deliver(w: Watcher, batch: WatchBatch): void {
    queueMicrotask(() => {
      if (!w.closed) w.handlers.onBatch(batch);
    });
  }

  revision(): bigint {
    return this.rev;
  }

  identity(): StoreIdentity {
    return { clusterId: this.clusterId, generation: this.gen };
  }

  async readIdentity(): Promise<StoreIdentity> {
    return this.identity();
  }

  watch(fromRevision: bigint, handlers: WatchHandlers): StoreWatch {
    const w: Watcher = { handlers, closed: false };
    if (fromRevision < this.historyFrom) {
      this.deliver(w, {
        type: 'resync',
        revision: this.rev,
        identity: this.identity(),
        objects: this.readAll(),
        reason: 'compacted',
      });
    } else if (fromRevision < this.rev) {
      let i = this.history.findIndex((e) => e.revision > fromRevision);
      while (i >= 0 && i < this.history.length) {
        const r = this.history[i]?.revision ?? 0n;
        const events: StoreEvent[] = [];
        while (i < this.history.length && this.history[i]?.revision === r) events.push(this.history[i++] as StoreEvent);
        this.deliver(w, { type: 'events', revision: r, identity: this.identity(), events });
      }
    }
    this.watchers.add(w);
    return {
      close: () => {
        w.closed = true;
        this.watchers.delete(w);
      },
    };
  }

  async compact(revision: bigint): Promise<void> {
    // As etcd: the changes at `revision` itself stay watchable.
    const keepFrom = revision - 1n;
    if (keepFrom <= this.historyFrom) return;
    this.history = this.history.filter((e) => e.revision > keepFrom);
    this.historyBytes = this.history.reduce((n, e) => n + eventBytes(e), 0);
    this.historyFrom = keepFrom > this.rev ? this.rev : keepFrom;
  }

  elector(value: string): LeaderElector {
    return this.election.elector(value);
  }

  async close(): Promise<void> {
    this.closed = true;
    this.flush();
    for (const w of this.watchers) w.closed = true;
    this.watchers.clear();
    this.db.close();
  }
}
