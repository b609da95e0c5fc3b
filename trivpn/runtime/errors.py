"""The runtime layer's error type for setting up the host side: TUN, addresses, routes, sockets.

Like :class:`trivpn.protocol.errors.ProtocolError` it carries *what* failed and *where* (the
device, address or route concerned), plus the kernel's errno when there was one, so the CLI and
the doctor can explain it ("adding route 198.18.4.0/24 via 198.18.0.1 on tun0: File exists").
"""

from __future__ import annotations

import os


class RuntimeSetupError(Exception):
    """Configuring the host failed. ``errno`` is the kernel's error number, or ``None``."""

    def __init__(self, what: str, where: str = "", *, errno: int | None = None) -> None:
        self.what = what
        self.where = where
        self.errno = errno
        detail = f": {os.strerror(errno)}" if errno is not None else ""
        super().__init__(f"{what} ({where}){detail}" if where else f"{what}{detail}")


class NoRouteError(RuntimeSetupError):
    """The kernel has no route to the destination (``RTM_GETROUTE`` answered unreachable)."""
