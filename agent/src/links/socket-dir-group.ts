/**
 * hostPaths.socketDirGroup: let one group's members (the user a libvirt-run QEMU has) reach the
 * sockets in socketDir that are themselves open to that group (a vhost_user link's socket_mode
 * 0660 and socket_group). The directory becomes 0710 owned by the group: members may open names in
 * it but not list it; every other socket stays 0600. A member must also be able to search every
 * directory above socketDir, which the default (inside the 0700 state directory) does not allow:
 * that is a ConfigError at start rather than a QEMU that cannot connect.
 */
import { chmodSync, chownSync, statSync } from 'node:fs';
import path from 'node:path';

import { resolveGroup } from '../../../lib/src/admin-socket';
import { ConfigError } from '../../../lib/src/config';

const FIELD = 'hostPaths.socketDirGroup';

/** Applies the group to socketDir (created already); returns the gid. */
export function openSocketDirToGroup(socketDir: string, group: string, groupFile = '/etc/group'): number {
  const gid = resolveGroup(group, groupFile, FIELD);
  for (let dir = path.dirname(socketDir); ; dir = path.dirname(dir)) {
    const st = statSync(dir);
    const searchable = (st.mode & 0o001) !== 0 || (st.gid === gid && (st.mode & 0o010) !== 0);
    if (!searchable)
      throw new ConfigError(
        `${FIELD}: members of group ${group} cannot reach ${socketDir}: ${dir} is mode 0${(st.mode & 0o777).toString(8)} (owner ${st.uid}, group ${st.gid}); put hostPaths.socketDir where they may search every parent (e.g. /run/vop/sockets), not inside the 0700 state directory`,
      );
    if (dir === path.dirname(dir)) break;
  }
  chownSync(socketDir, -1, gid);
  chmodSync(socketDir, 0o710);
  return gid;
}
