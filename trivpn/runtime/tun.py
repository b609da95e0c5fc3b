"""TUN and TAP devices through ``/dev/net/tun``.

The device is opened with the ``TUNSETIFF`` ioctl and ``IFF_NO_PI`` (no packet-information
prefix: reads and writes are bare IP packets, or Ethernet frames for TAP). The fd is
non-blocking; :meth:`TunDevice.read_batch` waits once, then drains the queue until ``EAGAIN``,
which is what makes a Python data path competitive (docs/performance.md).

Opening by the name of an existing *persistent* device attaches to it, so a runtime that keeps
the device across reconnects (``persist-tun``) can also reopen it later. Addresses, routes and
MTU are not set here: see :mod:`trivpn.runtime.netconf`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import struct
from typing import Literal

import trio

from trivpn.runtime.errors import RuntimeSetupError

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, union padding to 40 bytes

DEFAULT_READ_SIZE = 65536
"""Read buffer per packet; must be at least the device MTU (+14 for TAP) or packets truncate."""

TunKind = Literal["tun", "tap"]

# write() errors that mean "this packet was not taken", not "the device is broken":
# queue full, no buffer space, or a malformed packet (e.g. empty) the kernel refused.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EINVAL})


class TunDevice:
    """An open TUN (layer 3) or TAP (layer 2) device.

    ``name`` is the kernel's name for it (resolved when a pattern such as ``tun%d`` or no name
    was given). Counters: ``write_drops`` (packets :meth:`write` could not hand to the kernel).
    """

    __slots__ = ("_fd", "_read_size", "kind", "name", "write_drops")

    def __init__(self, fd: int, name: str, kind: TunKind,
                 read_size: int = DEFAULT_READ_SIZE) -> None:
        self._fd = fd
        self.name = name
        self.kind: TunKind = kind
        self._read_size = read_size
        self.write_drops = 0

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"fd={self._fd}"
        return f"TunDevice({self.kind} {self.name!r}, {state})"

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise trio.ClosedResourceError(f"{self.kind} device {self.name} is closed")
        return self._fd

    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Wait until at least one packet is queued, then return up to ``max_packets``.

        Never waits for the batch to fill: whatever is queued when the first packet arrives is
        returned at once (latency matters more than batch size). Always a trio checkpoint.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        packets = self.read_ready(max_packets)
        if packets:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return packets
        while not packets:
            await trio.lowlevel.wait_readable(self.fileno())
            packets = self.read_ready(max_packets)
        return packets

    def read_ready(self, max_packets: int = 64) -> list[bytes]:
        """The packets queued now, up to ``max_packets``, without waiting (possibly none)."""
        fd = self.fileno()
        read = os.read
        size = self._read_size
        packets: list[bytes] = []
        while len(packets) < max_packets:
            try:
                packets.append(read(fd, size))
            except BlockingIOError:
                break
        return packets

    def write(self, packet: bytes) -> bool:
        """Hand one packet to the kernel without blocking.

        Returns ``False`` (and counts ``write_drops``) when the kernel did not take it: queue
        full (``EAGAIN``/``ENOBUFS``) or a packet it rejects as malformed (``EINVAL``). Any other
        error means the device is unusable and is raised.
        """
        try:
            os.write(self.fileno(), packet)
        except OSError as exc:
            if exc.errno in _DROP_ERRNOS:
                self.write_drops += 1
                return False
            raise
        return True

    async def write_wait(self, packet: bytes) -> None:
        """Write one packet, waiting for the device to become writable if its queue is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                os.write(self.fileno(), packet)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fileno())
                continue
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def set_persist(self, persist: bool) -> None:
        """Make the device outlive this fd (``TUNSETPERSIST``), or undo that."""
        try:
            fcntl.ioctl(self.fileno(), TUNSETPERSIST, int(persist))
        except OSError as exc:
            raise RuntimeSetupError("cannot change persist flag", f"{self.kind} {self.name}",
                                    errno=exc.errno) from exc

    def close(self) -> None:
        """Close the fd. A non-persistent device disappears with it. Idempotent."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
            trio.lowlevel.notify_closing(fd)
        os.close(fd)

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_tun(name: str = "", kind: TunKind = "tun", *,
             read_size: int = DEFAULT_READ_SIZE) -> TunDevice:
    """Create (or attach to an existing persistent) TUN/TAP device.

    ``name`` may be empty or a pattern like ``tun%d`` to let the kernel choose. Must run in the
    network namespace the device belongs in (see :func:`trivpn.runtime.netns.enter_netns`).
    Raises :class:`RuntimeSetupError` if the device cannot be opened (no ``/dev/net/tun``, no
    ``CAP_NET_ADMIN``, name in use by another kind of device or by another process).
    """
    if kind not in ("tun", "tap"):
        raise ValueError(f"kind must be 'tun' or 'tap', not {kind!r}")
    raw_name = name.encode()
    if len(raw_name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise RuntimeSetupError(f"invalid interface name {name!r}", "open " + kind)
    where = f"open {kind} {name or '(kernel-chosen name)'}"
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeSetupError(f"cannot open {TUN_PATH}", where, errno=exc.errno) from exc
    flags = (IFF_TUN if kind == "tun" else IFF_TAP) | IFF_NO_PI
    try:
        result = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw_name, flags))
    except OSError as exc:
        os.close(fd)
        hint = ""
        if exc.errno == errno.EBUSY:
            hint = " (device is held open by another process)"
        elif exc.errno == errno.EINVAL:
            hint = " (a device of that name exists with a different type or flags)"
        raise RuntimeSetupError(f"TUNSETIFF failed{hint}", where, errno=exc.errno) from exc
    actual, _ = _IFREQ.unpack(result)
    return TunDevice(fd, actual.rstrip(b"\0").decode(), kind, read_size)
