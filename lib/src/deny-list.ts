/**
 * Certificate names that are refused at once: the configured `names` plus the lines of
 * `file` (one name a line, `#` starts a comment). The file is re-read when it changes
 * (a watch on its directory) and on `reload()` (SIGHUP). Listeners learn which names
 * became denied, so that the server can end their open streams.
 *
 * An unreadable file at start-up is a ConfigError; later it keeps the last good list
 * (a half-written or vanished file never un-denies a name).
 */
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';

import { ConfigError } from './config';
import type { Logger } from './logger';

const SETTLE_MS = 100;

export interface DenyListConfig {
  readonly names: readonly string[];
  readonly file?: string | undefined;
}

export function parseDenyFile(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l !== '');
}

export class DenyList {
  private denied: ReadonlySet<string>;
  private readonly listeners = new Set<(added: readonly string[]) => void>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly config: DenyListConfig,
    private readonly log: Logger,
  ) {
    try {
      this.denied = this.read();
    } catch (err) {
      throw new ConfigError(`denylist.file: ${(err as Error).message}`);
    }
    const file = config.file;
    if (file !== undefined) {
      const base = path.basename(file);
      // The directory, not the file: editors and config management replace the file by rename.
      this.watcher = watch(path.dirname(file), { persistent: false }, (_event, name) => {
        if (name === null || name === base || name.startsWith('..')) this.scheduleReload();
      });
      this.watcher.on('error', (err) => this.log.warn({ err, file }, 'deny-list watch failed'));
    }
  }

  private read(): ReadonlySet<string> {
    const names = new Set(this.config.names);
    if (this.config.file !== undefined)
      for (const n of parseDenyFile(readFileSync(this.config.file, 'utf8'))) names.add(n);
    return names;
  }

  has(name: string): boolean {
    return this.denied.has(name);
  }

  get size(): number {
    return this.denied.size;
  }

  /** `fn` gets the names that were not denied before and are now. */
  onDenied(fn: (added: readonly string[]) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private scheduleReload(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reload();
    }, SETTLE_MS);
    this.timer.unref();
  }

  /** Re-reads the file; returns the newly denied names. */
  reload(): readonly string[] {
    let next: ReadonlySet<string>;
    try {
      next = this.read();
    } catch (err) {
      this.log.warn({ err, file: this.config.file }, 'deny-list reload failed; keeping the current list');
      return [];
    }
    const added = [...next].filter((n) => !this.denied.has(n));
    const removed = [...this.denied].filter((n) => !next.has(n));
    this.denied = next;
    if (added.length > 0 || removed.length > 0)
      this.log.warn({ added, removed, total: next.size }, 'deny-list changed');
    if (added.length > 0) for (const fn of this.listeners) fn(added);
    return added;
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
  }
}
