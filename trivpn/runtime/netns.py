"""Create sockets and TUN devices inside a named network namespace, from this process.

:func:`enter_netns` switches the *calling thread* (not the process) into ``/run/netns/NAME`` with
``setns(fd, CLONE_NEWNET)`` and switches it back on exit. A socket, netlink socket or TUN device
belongs to the namespace it was created in for its whole life, so anything created inside the
``with`` block keeps working in that namespace after the thread has switched back. This is how
tests place both ends of a tunnel in separate namespaces from one process, and how trivpn could
open its link socket in one namespace and its TUN in another.

Use it only around *synchronous* creation code::

    with enter_netns("tvpn-1234-a"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("198.18.0.1", 1194))

Never ``await`` inside the block: a trio checkpoint would run other tasks on this thread while it
sits in the foreign namespace, and they would create their sockets there without knowing.
Threads started inside the block do not inherit the switch reliably either; don't.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
_THREAD_NET_NS = "/proc/thread-self/ns/net"


class NetnsError(OSError):
    """Entering or leaving a network namespace failed; carries the namespace name."""

    def __init__(self, errno_: int, what: str, name: str) -> None:
        super().__init__(errno_, f"{what} (netns {name!r}): {os.strerror(errno_)}")
        self.name = name
        self.what = what


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(libc: ctypes.CDLL, fd: int, name: str, what: str) -> None:
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsError(err, what, name)


def netns_path(name: str) -> str:
    """The bind-mount path ``ip netns add NAME`` creates. Rejects names that are paths."""
    if not name or "/" in name or name in (".", ".."):
        raise NetnsError(errno.EINVAL, "invalid namespace name", name)
    return os.path.join(NETNS_RUN_DIR, name)


@contextmanager
def enter_netns(name: str) -> Iterator[None]:
    """Switch the calling thread into netns ``name`` for the duration of the block.

    The namespace must already exist (``ip netns add``); it is never created here. The
    thread's original namespace is kept open as an fd and restored on exit, also when the
    block raises. If restoring fails the thread would be left in the wrong namespace, so that
    error propagates (it cannot happen unless the kernel refuses setns on our own old fd).
    """
    path = netns_path(name)
    libc = _libc()
    original = os.open(_THREAD_NET_NS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise NetnsError(exc.errno or errno.ENOENT, "cannot open namespace", name) from exc
        try:
            _setns(libc, target, name, "setns into namespace")
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(libc, original, name, "setns back to original namespace")
    finally:
        os.close(original)
