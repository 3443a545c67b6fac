/**
 * Where a link endpoint's window lives and how big it is, and opening it: the device
 * side creates it (or takes back the one an earlier life of this endpoint left, or
 * replaces one the engine cannot adopt); the driver side attaches once it exists,
 * refusing a window larger than this agent's limit or one whose layout does not
 * validate. What to do next (wait, retry, fail) stays with LinkRuntime.
 */
import { mkdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';

import type { Link } from '../../../lib/proto/types';
import type { Logger } from '../../../lib/src/logger';
import type { PciWindowDto } from '../native/native';
import {
  NativeError,
  type DataPlane,
  type DataPlaneEvent,
  type DataPlaneWindow,
  type LinkDevice,
  type WindowSide,
} from './data-plane';
import { pciBarOf, pciWindowName } from './pci-window';

/** Cap of the automatic window size. */
export const MAX_WINDOW_BYTES = 1024 * 1024 * 1024;

/**
 * The window file of a link: in its shm directory, else the rendezvous directory. A pci-bar
 * window has no file: its name says where it is mapped from (pci-window.ts).
 */
export function windowPathOf(link: Link, rendezvousDir: string, role: 'device' | 'driver' = 'device'): string {
  const pci = pciBarOf(link);
  if (pci) return pciWindowName(pci, role);
  const t = link.spec?.transport?.kind;
  const dir = t?.$case === 'shm' && t.value.directory !== '' ? t.value.directory : rendezvousDir;
  return path.join(dir, `${link.meta?.name ?? ''}.win`);
}

/**
 * The window size of a link: the spec's, or the automatic one for its devices (the C
 * layout's size for them plus one more of the largest), capped at MAX_WINDOW_BYTES.
 */
export function windowBytesOf(link: Link, dp: DataPlane, devices: readonly LinkDevice[]): number {
  const t = link.spec?.transport?.kind;
  // pci-bar: the transport maps size_bytes (or the rest of the BAR); the creator lays it all out.
  if (t?.$case === 'pciBar') return Number(t.value.sizeBytes);
  if (t?.$case === 'shm' && t.value.windowSizeBytes !== 0n) return Number(t.value.windowSizeBytes);
  return Math.min(MAX_WINDOW_BYTES, dp.windowBytes(devices.map((d) => d.config)));
}

export interface WindowPlan {
  readonly link: string;
  readonly path: string;
  /** A pci-bar window's options (the creator's `replace` is set here when it replaces one); null: shm. */
  readonly pci?: PciWindowDto | null;
  readonly side: WindowSide;
  readonly sizeBytes: number;
  /** An attacher refuses a peer's window larger than this (limit maxWindowBytes). */
  readonly maxWindowBytes: number;
}

export type OpenResult =
  | { readonly kind: 'open'; readonly window: DataPlaneWindow }
  /** Attacher: no window (or not published yet); look again later. */
  | { readonly kind: 'absent' }
  /** Attacher: the window found there does not validate (why); the creator may replace it. */
  | { readonly kind: 'rejected'; readonly why: string };

/**
 * Opens the window of plan. Throws NativeError for what the caller turns into a
 * retry or a failure (EBUSY with a readable message when a live process holds our
 * side, EFBIG for a peer window over the limit, ENOSPC when the filesystem is full).
 * event(reason, message) reports what a reader of the link's events should know.
 */
export function openWindow(
  dp: DataPlane,
  plan: WindowPlan,
  onEvent: (e: DataPlaneEvent) => void,
  log: Logger,
  event: (reason: string, message: string) => void,
): OpenResult {
  const req = {
    link: plan.link,
    path: plan.path,
    pci: plan.pci ?? null,
    side: plan.side,
    sizeBytes: plan.sizeBytes,
    reattach: false,
  };
  // A link-specific shm directory is created owner-only like the rendezvous dir. A pci-bar
  // window is as large as this side's own mapping (size_bytes or the BAR): nothing to check.
  if (plan.pci === null) {
    if (plan.side === 'creator') mkdirSync(path.dirname(req.path), { recursive: true, mode: 0o700 });
    else checkPeerWindowSize(req.path, plan.maxWindowBytes);
  }
  try {
    return { kind: 'open', window: dp.open(req, onEvent) };
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    if (plan.side === 'attacher' && (err.code === 'ENOENT' || err.code === 'EAGAIN')) return { kind: 'absent' };
    // A window whose layout does not validate is never mapped further; the creator may
    // replace it (a restart), so keep looking, with the reason in PeerConnected.
    if (plan.side === 'attacher' && err.code === 'EPROTO') return { kind: 'rejected', why: err.message };
    if (plan.side === 'attacher' && err.code === 'EBUSY') {
      throw new NativeError(
        `another live process holds the driver side of ${req.path} (is this link applied on two agents with the same role?)`,
        'EBUSY',
      );
    }
    if (plan.side !== 'creator' || err.code !== 'EEXIST') throw err;
  }
  // A window from an earlier life of this endpoint: take the creator side back, so the
  // peer keeps its mapping and devices (it sees a new epoch and resets onto us).
  try {
    const w = dp.open({ ...req, reattach: true }, onEvent);
    log.info({ path: req.path }, 're-attached to the existing window');
    event('WindowReattached', `took the device side of ${req.path} back`);
    return { kind: 'open', window: w };
  } catch (err) {
    if (!(err instanceof NativeError)) throw err;
    if (err.code === 'EBUSY')
      throw new NativeError(
        `another live process holds the device side of ${req.path} (is this link applied on two agents with the same role?)`,
        'EBUSY',
      );
    // The engine cannot adopt it (older layout, damaged): replace it; the peer re-attaches.
    log.info({ path: req.path, code: err.code }, 'replacing a window that cannot be re-attached');
    event('StaleWindowReplaced', `replaced the existing window at ${req.path} (${err.code})`);
    if (req.pci !== null)
      return { kind: 'open', window: dp.open({ ...req, pci: { ...req.pci, replace: true } }, onEvent) };
    rmSync(req.path, { force: true });
    return { kind: 'open', window: dp.open(req, onEvent) };
  }
}

/** The peer creates the window; one larger than max is not mapped. */
function checkPeerWindowSize(p: string, max: number): void {
  let size: number;
  try {
    size = statSync(p).size;
  } catch {
    return; // not there yet: the open reports ENOENT and the attacher waits
  }
  if (size > max)
    throw new NativeError(
      `the peer's window ${p} is ${size} bytes, more than ${max} (limit maxWindowBytes); not mapped`,
      'EFBIG',
    );
}
