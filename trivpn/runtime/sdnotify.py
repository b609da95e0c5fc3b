"""systemd's readiness notification (sd_notify(3)) without libsystemd: one datagram to the
unix socket named by ``$NOTIFY_SOCKET``.

Debian's openvpn units are ``Type=notify``: systemd waits for ``READY=1`` and, with
``--daemon``, OpenVPN 2.6 does not fork when it runs under systemd (OpenVPN
src/openvpn/init.c, possibly_become_daemon() and the ``READY=1 ... MAINPID`` notification
before it connects). trivpn does the same, so the units work with it in place of openvpn.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from trivpn.runtime.events import RuntimeEvent

READY = "READY=1\nSTATUS=Pre-connection initialization successful\nMAINPID={pid}"


def sd_notify(message: str, socket_path: str | None) -> bool:
    """Send ``message`` to systemd's notification socket; False when there is none (not run
    by systemd). ``@name`` is an abstract socket. OSError if the socket cannot be reached."""
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


class InitializationStatus:
    """An event observer that tells systemd ``STATUS=Initialization Sequence Completed`` once
    the tunnel device is configured and the link is open (in either order: a client opens its
    link first, a server its device), as OpenVPN does (init.c, initialization_sequence_completed).
    A failure to send is left to the caller's ``on_error``."""

    MESSAGE = "STATUS=Initialization Sequence Completed"

    def __init__(self, socket_path: str, on_error: Callable[[OSError], None]) -> None:
        self.socket_path = socket_path
        self.on_error = on_error
        self._seen: set[str] = set()
        self.sent = False

    def __call__(self, event: RuntimeEvent) -> None:
        if self.sent or event.name not in ("tun_configured", "link_open"):
            return
        self._seen.add(event.name)
        if len(self._seen) == 2:
            self.sent = True
            try:
                sd_notify(self.MESSAGE, self.socket_path)
            except OSError as exc:
                self.on_error(exc)
