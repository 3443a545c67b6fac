/**
 * A vhost_user net device joined to the net device of another link of this agent (its
 * device_backend is `vop_link { link, device }`): a QEMU guest's stock virtio-net on this host
 * exchanges frames with the far end of that link (a TAP on a card, a guest behind another
 * agent). The other link's device is one this agent DRIVES; its driver_frontend is a datagram
 * socket (path, peer_path), and the vhost_user device becomes that socket's peer: it binds
 * peer_path and sends to path. The frames then go guest -> vhost-user rings -> datagram ->
 * the link's driver-side net backend -> the window -> the far end's device backend, and back.
 *
 * The join is level-triggered, like the rest of the agent's state: the vhost_user link may
 * exist without the link it names. Applying it before that link, or deleting that link while
 * the two are joined, is accepted; the vhost_user link then reports Ready=False with reason
 * JoinedLinkMissing (an event says which link), its front-end keeps its socket and rings, and
 * the frames it sends meanwhile are dropped and counted (tx_dropped). The link manager tells
 * the joined runtime whenever the named link is applied or deleted; once the link is back the
 * condition clears by itself (the device is re-opened only when the socket paths changed). So a
 * controller may create and delete the pair in any order, in one desired version or several,
 * without a stuck state (docs/transports.md, "vop_link").
 *
 * What is refused at apply (INVALID_ARGUMENT naming the field) is a target that EXISTS and cannot
 * be joined (not driven here, not net, no datagram frontend, a vhost_user link), and a second
 * front-end on the same device. A target that later changes into such a shape gives Ready=False
 * with reason JoinedLinkUnusable, cleared the same way.
 */
import type { Link } from '../../../lib/proto/types';
import { Role } from '../../../lib/proto/types';
import { ViolationList } from '../../../lib/src/errors';

/** The device_backend reference of a vhost_user link's net device, or null. */
export function vopLinkRef(link: Link): { link: string; device: string } | null {
  if (link.spec?.transport?.kind?.$case !== 'vhostUser') return null;
  const k = link.spec.devices[0]?.kind;
  if (k?.$case !== 'net') return null;
  const be = k.value.deviceBackend?.kind;
  return be?.$case === 'vopLink' ? { link: be.value.link, device: be.value.device } : null;
}

/** The datagram socket the vhost_user device uses: it binds `local` and sends to `peer`. */
export interface JoinedSocket {
  readonly local: string;
  readonly peer: string;
}

/** Why a vop_link cannot be joined now: the field, and whether the named link is simply not there. */
export interface JoinFailure {
  readonly field: 'link' | 'device';
  readonly why: string;
  readonly missing?: boolean;
}

/**
 * What `ref` points at among `links` (this agent's links, by name), for this agent nodeName:
 * the socket to use, or the field ('link' or 'device') and why it cannot be joined.
 */
export function resolveVopLink(
  ref: { link: string; device: string },
  links: ReadonlyMap<string, { readonly desired: Link }>,
  nodeName: string,
): JoinedSocket | JoinFailure {
  const target = links.get(ref.link)?.desired;
  if (!target?.spec) return { field: 'link', why: `no link "${ref.link}" on this agent`, missing: true };
  if (target.spec.transport?.kind?.$case === 'vhostUser')
    return {
      field: 'link',
      why: `link "${ref.link}" is a vhost_user link; name a link between agents (shm, pci_bar, stream) whose net device this agent drives`,
    };
  const mine = target.spec.endpoints.find((e) => e.agent === nodeName);
  if (mine?.role !== Role.ROLE_DRIVER)
    return {
      field: 'link',
      why: `this agent does not drive link "${ref.link}" (it holds its ${mine ? Role[mine.role] : 'no'} endpoint); frames can go only to a net device this agent drives (ROLE_DRIVER)`,
    };
  const d = target.spec.devices.find((x) => x.name === ref.device);
  if (!d) return { field: 'device', why: `link "${ref.link}" has no device "${ref.device}"` };
  if (d.kind?.$case !== 'net')
    return {
      field: 'device',
      why: `device "${ref.device}" of link "${ref.link}" is a ${d.kind?.$case ?? '?'} device, not net`,
    };
  const fe = d.kind.value.driverFrontend?.kind;
  if (fe?.$case !== 'datagram')
    return {
      field: 'device',
      why: `the driver_frontend of device "${ref.device}" on link "${ref.link}" is ${fe ? `a ${fe.$case}` : 'not set'}; it must be a datagram socket (path, peer_path) for a vhost_user device to take its place`,
    };
  return { local: fe.value.peerPath, peer: fe.value.path };
}

/**
 * INVALID_ARGUMENT when the vhost_user link `link` names (vop_link) a link among `links` that
 * cannot be joined, or a device another vhost_user link is joined to. A link that is not there
 * (yet) is accepted: the runtime waits for it (JoinedLinkMissing).
 */
export function checkVopLinkJoin(
  link: Link,
  links: ReadonlyMap<string, { readonly name: string; readonly desired: Link }>,
  nodeName: string,
): void {
  const ref = vopLinkRef(link);
  if (!ref) return;
  const field = 'link.spec.devices[0].net.device_backend.vop_link';
  const v = new ViolationList();
  const r = resolveVopLink(ref, links, nodeName);
  if ('field' in r && !r.missing) v.add(`${field}.${r.field}`, r.why);
  for (const other of links.values()) {
    if (other.name === link.meta?.name) continue;
    const o = vopLinkRef(other.desired);
    if (o && o.link === ref.link && o.device === ref.device)
      v.add(
        `${field}.device`,
        `vhost_user link "${other.name}" is joined to device "${ref.device}" of link "${ref.link}" already; one front-end per device`,
      );
  }
  v.throwIfAny();
}
