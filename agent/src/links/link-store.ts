/**
 * Persistence of applied links in the agent's state directory: one JSON file per
 * link under <stateDir>/links/, replaced atomically and durably (lib/src/atomic-file.ts:
 * full write, fsync, rename, fsync of the directory) in a versioned envelope. Only meta
 * and spec are stored; status is rebuilt from the data plane after a restart.
 *
 * A file that cannot be read back (truncated, corrupt, another format) is never skipped
 * silently: it is moved aside as <name>.json.corrupt-<time> for the operator and reported,
 * so the link manager keeps the link visible with a condition saying so.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';

import { Link } from '../../../lib/proto/types';
import { fsyncDirSync, isAtomicTempFile, writeFileAtomicSync } from '../../../lib/src/atomic-file';
import type { Logger } from '../../../lib/src/logger';
import { NAME_RE } from '../../../lib/src/validate';

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

/** A state file that could not be read back. */
export interface UnreadableLink {
  /** The link name, from the file name. */
  readonly name: string;
  readonly file: string;
  /** Where the file was moved for the operator ('' when it could not be moved). */
  readonly keptAs: string;
  /** Why it could not be read. */
  readonly error: string;
}

export interface StoredState {
  readonly links: StoredLink[];
  readonly unreadable: UnreadableLink[];
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

  /** Parses one stored file; throws with the reason it is unreadable. */
  private parse(file: string, base: string): Link {
    const text = readFileSync(file, 'utf8');
    let env: Envelope;
    try {
      env = JSON.parse(text) as Envelope;
    } catch (err) {
      throw new Error(`not valid JSON (${text.length} bytes; truncated?): ${(err as Error).message}`);
    }
    if (env === null || typeof env !== 'object') throw new Error('not a link envelope');
    if (env.format !== LINK_STORE_FORMAT)
      throw new Error(`unknown format "${String(env.format)}" (expected ${LINK_STORE_FORMAT})`);
    const link = Link.fromJSON(env.link);
    if (!link.meta || !link.spec) throw new Error('the envelope holds no link meta and spec');
    if (`${link.meta.name}.json` !== base)
      throw new Error(`link name "${link.meta.name}" does not match the file name ${base}`);
    return { meta: link.meta, spec: link.spec, status: undefined };
  }

  /**
   * Loads every stored link. Unreadable files are moved aside and reported; temp files of
   * a write that never finished (the process died) are removed: they never held committed
   * state, the file they were to replace is intact.
   */
  loadAll(): StoredState {
    const links: StoredLink[] = [];
    const unreadable: UnreadableLink[] = [];
    let changed = false;
    for (const f of readdirSync(this.dir).sort()) {
      const file = path.join(this.dir, f);
      if (isAtomicTempFile(f)) {
        rmSync(file, { force: true });
        changed = true;
        continue;
      }
      if (!f.endsWith('.json')) continue;
      try {
        links.push({ link: this.parse(file, f), file });
      } catch (err) {
        const name = f.slice(0, -'.json'.length);
        const keptAs = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
        let moved = '';
        try {
          renameSync(file, keptAs);
          moved = keptAs;
          changed = true;
        } catch (renameErr) {
          this.log.error({ err: renameErr, file }, 'cannot move the unreadable link state file aside');
        }
        this.log.error(
          { err, file, keptAs: moved, code: 'STATE_UNREADABLE' },
          'link state file is unreadable; kept aside, the link stays listed with a condition',
        );
        if (NAME_RE.test(name))
          unreadable.push({ name, file, keptAs: moved, error: err instanceof Error ? err.message : String(err) });
      }
    }
    if (changed) fsyncDirSync(this.dir);
    return { links, unreadable };
  }

  /** Writes meta and spec atomically; throws on I/O error with the old file intact. */
  save(link: Link): void {
    const name = link.meta?.name ?? '';
    writeFileAtomicSync(
      this.fileOf(name),
      JSON.stringify({
        format: LINK_STORE_FORMAT,
        link: Link.toJSON({ meta: link.meta, spec: link.spec, status: undefined }),
      } satisfies Envelope),
    );
  }

  remove(name: string): void {
    rmSync(this.fileOf(name), { force: true });
    fsyncDirSync(this.dir);
  }
}
