/**
 * A pci-bar link as one endpoint sees it (docs/transports.md): which side of the window this
 * endpoint takes (the spec's window_creator), how it reaches the window (its role's access: a
 * peer of the ivshmem server, a vfio-pci device, or a BAR file) as the native window options, and
 * the name of the window in messages and status. The spec was validated (lib/src/validate.ts).
 */
import { PciDoorbellMode, Role, type Link, type PciBarAccess, type PciBarTransport } from '../../../lib/proto/types';
import type { PciWindowDto } from '../native/native';
import type { WindowSide } from './data-plane';

/** The pci-bar transport of a link, or null (shm). */
export function pciBarOf(link: Link): PciBarTransport | null {
  const t = link.spec?.transport?.kind;
  return t?.$case === 'pciBar' ? t.value : null;
}

/** The access of the endpoint with `role`. */
export function pciAccessOf(t: PciBarTransport, role: 'device' | 'driver'): PciBarAccess | undefined {
  return role === 'device' ? t.deviceAccess : t.driverAccess;
}

/**
 * Which side of the window the endpoint with `role` takes: the creator lays the window out and
 * owns its device table. shm: the device side; pci-bar: the spec's window_creator (default the
 * device side).
 */
export function windowSideOf(link: Link, role: 'device' | 'driver'): WindowSide {
  const t = pciBarOf(link);
  const creator = t && t.windowCreator === Role.ROLE_DRIVER ? 'driver' : 'device';
  return role === creator ? 'creator' : 'attacher';
}

/** Where a pci-bar window is, as messages and status name it. */
export function pciWindowName(t: PciBarTransport, role: 'device' | 'driver'): string {
  const a = pciAccessOf(t, role);
  const at = t.offsetBytes === 0n ? '' : ` at offset ${t.offsetBytes}`;
  if (!a) return 'pci-bar (no access)';
  if (a.ivshmemSocket !== '') return `ivshmem ${a.ivshmemSocket}${at}`;
  if (a.pciAddress !== '') return `vfio ${a.pciAddress} bar ${t.bar}${at}`;
  return `${a.barPath}${at}`;
}

/** The BAR of an endpoint, as status names it: "ivshmem" (it holds the memory), the vfio device and BAR, or the file. */
export function pciBarName(t: PciBarTransport, role: 'device' | 'driver'): string {
  const a = pciAccessOf(t, role);
  if (!a) return '';
  if (a.ivshmemSocket !== '') return 'ivshmem';
  if (a.pciAddress !== '') return `vfio ${a.pciAddress} bar ${t.bar}`;
  return a.barPath;
}

/** What status and metrics call the doorbell of this endpoint. */
export function pciDoorbellName(t: PciBarTransport, role: 'device' | 'driver'): string {
  const a = pciAccessOf(t, role);
  if (!a || a.doorbell === PciDoorbellMode.PCI_DOORBELL_MODE_POLL) return 'poll';
  return a.ivshmemSocket !== '' ? 'eventfd' : 'msix';
}

/** The native window options of the endpoint with `role` (replace: lay out over an old window). */
export function pciWindowOf(
  t: PciBarTransport,
  role: 'device' | 'driver',
  replace: boolean,
  /**
   * The allowed directory a BAR file lies in (hostPaths.barDirs): the file is opened beneath it.
   * A path in no root throws (apply refuses those; a restored link may predate a config change).
   * Absent (tests of one module): the path is opened as given.
   */
  barRoot?: (p: string) => string | null,
): PciWindowDto {
  const rootOf = (p: string): string | null => {
    if (p === '' || !barRoot) return null;
    const r = barRoot(p);
    if (r === null) throw new Error(`BAR file ${p} is not inside hostPaths.barDirs`);
    return r;
  };
  const a = pciAccessOf(t, role);
  if (!a) throw new Error(`pci-bar link without ${role}_access (validation lets none through)`);
  const common = {
    doorbell: a.doorbell === PciDoorbellMode.PCI_DOORBELL_MODE_POLL ? ('poll' as const) : ('interrupt' as const),
    peerId: a.peerId ?? -1,
    offset: Number(t.offsetBytes),
    size: Number(t.sizeBytes),
    vector: t.vector,
    vectors: t.vectors,
    pollMaxUs: t.pollMaxUs,
    replace,
  };
  if (a.ivshmemSocket !== '') return { ...common, mode: 'ivshmem', socket: a.ivshmemSocket };
  return {
    ...common,
    mode: 'bar',
    barPath: a.barPath !== '' ? a.barPath : null,
    vfioBdf: a.pciAddress !== '' ? a.pciAddress : null,
    regsPath: a.doorbellPath !== '' ? a.doorbellPath : null,
    barRoot: rootOf(a.barPath),
    regsRoot: rootOf(a.doorbellPath),
    bar: t.bar,
    wc: a.writeCombining,
  };
}
