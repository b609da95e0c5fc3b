"""Drop root privileges after setup (``user``/``group``), as OpenVPN does.

:func:`resolve_identity` looks the names up at start-up, so a typo fails before anything is
configured; :func:`drop_privileges` switches the process once the TUN device and the socket
exist. A process that dropped privileges can no longer create devices or change routes: without
``persist-tun`` a reconnect cannot recreate the TUN (the client then exits, see
:mod:`trivpn.runtime.client`), and routes outside the TUN (the redirect-gateway exception
route) cannot be removed at exit. OpenVPN 2.6 on Linux keeps CAP_NET_ADMIN (libcap-ng,
platform.c ``platform_user_group_set``) and so can still change routes, and reopen the TUN
where /dev/net/tun is world-accessible; trivpn keeps no capability.

One deliberate difference: ``user X`` without ``group`` also switches to X's primary group and
clears the supplementary groups (OpenVPN keeps root's group in that case).
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from trivpn.runtime.errors import RuntimeSetupError


class PrivilegeError(RuntimeSetupError):
    """A user or group does not exist, or switching to it failed."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom to become: names as configured and the ids they resolve to."""

    user: str | None
    group: str | None
    uid: int | None
    gid: int | None


def resolve_identity(user: str | None, group: str | None) -> Identity | None:
    """Look up ``user``/``group`` (None, None → None). Raises :class:`PrivilegeError` naming
    the one that does not exist."""
    if user is None and group is None:
        return None
    uid = gid = None
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise PrivilegeError(f"user {user!r} does not exist", "user") from None
        uid, gid = entry.pw_uid, entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"group {group!r} does not exist", "group") from None
    return Identity(user, group, uid, gid)


def drop_privileges(identity: Identity) -> None:
    """Become ``identity``: supplementary groups, then gid, then uid (that order, because
    after setuid the others are no longer allowed). Irreversible."""
    try:
        if identity.gid is not None:
            if os.geteuid() == 0:
                os.setgroups([identity.gid])
            os.setgid(identity.gid)
        if identity.uid is not None:
            os.setuid(identity.uid)
    except OSError as exc:
        who = identity.user or identity.group or "?"
        raise PrivilegeError("cannot drop privileges", who, errno=exc.errno) from exc
