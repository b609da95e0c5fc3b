"""systemd's readiness notification (sd_notify(3)) without libsystemd: one datagram to the
unix socket named by ``$NOTIFY_SOCKET``.

Debian's openvpn units are ``Type=notify``: systemd waits for ``READY=1`` and, with
``--daemon``, OpenVPN 2.6 does not fork when it runs under systemd (OpenVPN
src/openvpn/init.c, possibly_become_daemon() and the ``READY=1 ... MAINPID`` notification
before it connects). trivpn does the same, so the units work with it in place of openvpn.
"""

from __future__ import annotations

import socket

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
