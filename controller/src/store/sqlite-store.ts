/**
 * Embedded backend of the desired-state store: better-sqlite3 in WAL mode with
 * synchronous=FULL, one file in the state directory. Synchronous under the hood, so a commit is one transaction and
 * the CAS check runs inside it.
 */
import path from 'node:path';

import Database from 'better-sqlite3';

import { StoreConflictError, type DesiredStateStore, type ObjectKind, type StoreOp, type StoredObject } from './store';

export const SQLITE_FILE = 'controller.db';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS objects (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  revision INTEGER NOT NULL,
  data BLOB NOT NULL,
  PRIMARY KEY (kind, name)
) STRICT;
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0), ('schema', 1);
`;

export class SqliteStore implements DesiredStateStore {
  private readonly db: Database.Database;
  private rev: bigint;
  private readonly stmtGetRev: Database.Statement<[string, string], { revision: bigint }>;
  private readonly stmtPut: Database.Statement<[string, string, bigint, Uint8Array]>;
  private readonly stmtDelete: Database.Statement<[string, string]>;
  private readonly stmtSetRev: Database.Statement<[bigint]>;
  private readonly txn: (ops: readonly StoreOp[]) => bigint;

  constructor(stateDir: string) {
    this.db = new Database(path.join(stateDir, SQLITE_FILE));
    this.db.pragma('journal_mode = WAL');
    // FULL: every commit is fsynced before it returns, so an acknowledged write survives a
    // power loss (NORMAL in WAL mode may lose the last transactions).
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.defaultSafeIntegers(true);
    this.db.exec(SCHEMA);
    const row = this.db.prepare<[], { value: bigint }>("SELECT value FROM meta WHERE key = 'revision'").get();
    this.rev = row?.value ?? 0n;
    this.stmtGetRev = this.db.prepare('SELECT revision FROM objects WHERE kind = ? AND name = ?');
    this.stmtPut = this.db.prepare(
      'INSERT INTO objects (kind, name, revision, data) VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) DO UPDATE SET revision = excluded.revision, data = excluded.data',
    );
    this.stmtDelete = this.db.prepare('DELETE FROM objects WHERE kind = ? AND name = ?');
    this.stmtSetRev = this.db.prepare("UPDATE meta SET value = ? WHERE key = 'revision'");
    this.txn = this.db.transaction((ops: readonly StoreOp[]): bigint => {
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
      this.stmtSetRev.run(next);
      return next;
    });
  }

  async loadAll(): Promise<StoredObject[]> {
    const rows = this.db
      .prepare<[], { kind: string; name: string; revision: bigint; data: Buffer }>(
        'SELECT kind, name, revision, data FROM objects',
      )
      .all();
    return rows.map((r) => ({ kind: r.kind as ObjectKind, name: r.name, revision: r.revision, data: r.data }));
  }

  async commit(ops: readonly StoreOp[]): Promise<bigint> {
    const rev = this.txn(ops);
    this.rev = rev;
    return rev;
  }

  revision(): bigint {
    return this.rev;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
