/**
 * Persistence of applied links in the agent's state directory: one JSON file per
 * link under <stateDir>/links/, written atomically (temp file, fsync, rename, fsync
 * of the directory) in a versioned envelope. Only meta and spec are stored; status
 * is rebuilt from the data plane after a restart.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';

import { Link } from '../../../lib/gen/vop/types/v1/types';
import type { Logger } from '../../../lib/src/logger';

/** Envelope format; bump on incompatible change and keep a reader for the old one. */
export const LINK_STORE_FORMAT = 'vop.agent.link/v1';

interface Envelope {
  format: string;
  link: unknown;
}

export interface StoredLink {
  readonly link: Link;
  readonly file: string;
}

export class LinkStore {
  readonly dir: string;

  constructor(
    stateDir: string,
    private readonly log: Logger,
  ) {
    this.dir = path.join(stateDir, 'links');
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
  }

  private fileOf(name: string): string {
    return path.join(this.dir, `${name}.json`);
  }

  /** Loads every stored link; unreadable files are logged and skipped (never fatal). */
  loadAll(): StoredLink[] {
    const out: StoredLink[] = [];
    for (const f of readdirSync(this.dir)) {
      if (!f.endsWith('.json')) continue;
      const file = path.join(this.dir, f);
      try {
        const env = JSON.parse(readFileSync(file, 'utf8')) as Envelope;
        if (env.format !== LINK_STORE_FORMAT) throw new Error(`unknown format "${String(env.format)}"`);
        const link = Link.fromJSON(env.link);
        if (!link.meta || !link.spec || `${link.meta.name}.json` !== f)
          throw new Error('link name does not match the file name');
        out.push({ link: { meta: link.meta, spec: link.spec, status: undefined }, file });
      } catch (err) {
        this.log.error({ err, file }, 'skipping unreadable stored link');
      }
    }
    return out;
  }

  /** Writes meta and spec atomically; throws on I/O error with the old file intact. */
  save(link: Link): void {
    const name = link.meta?.name ?? '';
    const file = this.fileOf(name);
    const tmp = `${file}.tmp-${process.pid}`;
    const body = JSON.stringify({
      format: LINK_STORE_FORMAT,
      link: Link.toJSON({ meta: link.meta, spec: link.spec, status: undefined }),
    } satisfies Envelope);
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, body);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
    this.syncDir();
  }

  remove(name: string): void {
    rmSync(this.fileOf(name), { force: true });
    this.syncDir();
  }

  private syncDir(): void {
    const fd = openSync(this.dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
}
