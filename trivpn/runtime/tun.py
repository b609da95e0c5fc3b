"""TUN and TAP devices through ``/dev/net/tun``.

The device is opened with the ``TUNSETIFF`` ioctl and ``IFF_NO_PI`` (no packet-information
prefix: the API takes and returns bare IP packets, or Ethernet frames for TAP). The fd is
non-blocking; :meth:`TunDevice.read_batch` waits once, then drains the queue until ``EAGAIN``,
which is what makes a Python data path competitive (docs/performance-notes.md).

A TUN (not TAP) device is opened with ``IFF_VNET_HDR`` by default (as wireguard-go does), so
:meth:`TunDevice.write_many` can write a run of one flow's TCP segments as one super-packet and
the kernel's receive path runs once per run instead of once per packet — the per-packet
``write()`` was what bounded the server. Reading TSO super-packets (``TUNSETOFFLOAD`` with
checksum and TCPv4 segmentation offload, ``tso=True``) works too, but is off by default:
cutting them in Python and computing every segment's checksum costs ~10 µs per segment, more
than the kernel's own segmentation plus one ``read()`` per packet (measured; see
docs/performance-notes.md). Any frame the kernel hands over is taken apart correctly either way.
The packet work is in :mod:`trivpn.runtime.offload`; callers see plain IP packets either way.

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
from trivpn.runtime.offload import PLAIN_HDR, VNET_HDR_LEN, OffloadError, coalesce, split_frame

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: ifr_name, ifr_flags, union padding to 40 bytes

DEFAULT_READ_SIZE = 65536
"""Read buffer per packet; must be at least the device MTU (+14 for TAP) or packets truncate."""
OFFLOAD_READ_SIZE = 65535 + VNET_HDR_LEN
"""Read buffer with offloads: a whole TSO super-packet and its vnet header."""

TunKind = Literal["tun", "tap"]

# write() errors that mean "this packet was not taken", not "the device is broken":
# queue full, no buffer space, or a malformed packet (e.g. empty) the kernel refused.
_DROP_ERRNOS = frozenset({errno.EAGAIN, errno.ENOBUFS, errno.EINVAL})


class TunDevice:
    """An open TUN (layer 3) or TAP (layer 2) device.

    ``name`` is the kernel's name for it (resolved when a pattern such as ``tun%d`` or no name
    was given). ``offload`` tells whether frames carry a vnet header (see the module doc).
    Counters: ``write_drops`` (packets :meth:`write`/:meth:`write_many` could not hand to the
    kernel), ``bad_frames`` (frames read that could not be taken apart, dropped),
    ``super_reads`` / ``super_writes`` (TSO super-packets read and coalesced ones written).
    """

    __slots__ = ("_fd", "_read_size", "bad_frames", "kind", "name", "offload", "super_reads",
                 "super_writes", "tso", "write_drops")

    def __init__(self, fd: int, name: str, kind: TunKind, read_size: int = DEFAULT_READ_SIZE,
                 *, offload: bool = False, tso: bool = False) -> None:
        self._fd = fd
        self.name = name
        self.kind: TunKind = kind
        self.offload = offload
        self.tso = tso
        self._read_size = max(read_size, OFFLOAD_READ_SIZE) if offload else read_size
        self.write_drops = 0
        self.bad_frames = 0
        self.super_reads = 0
        self.super_writes = 0

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
        """Wait until at least one packet is queued, then return up to about ``max_packets``
        (see :meth:`read_ready`).

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
        """The packets queued now, up to about ``max_packets`` (a TSO super-packet read last is
        returned whole, as all its segments), without waiting (possibly none)."""
        fd = self._fd
        if fd < 0:
            self.fileno()  # raises ClosedResourceError
        if max_packets == 1:  # a lone packet, the per-packet hot path: no loop
            try:
                frame = os.read(fd, self._read_size)
            except BlockingIOError:
                return []
            if not self.offload:
                return [frame]
            if frame[1] == 0 and frame[0] == 0:
                return [frame[VNET_HDR_LEN:]]
            segments: list[bytes] = []
            self._split(frame, segments)
            return segments
        read = os.read
        size = self._read_size
        packets: list[bytes] = []
        append = packets.append
        offload = self.offload
        while len(packets) < max_packets:
            try:
                frame = read(fd, size)
            except BlockingIOError:
                break
            if not offload:
                append(frame)
            elif frame[1] == 0 and frame[0] == 0:  # plain packet: no GSO, checksum done
                append(frame[VNET_HDR_LEN:])
            else:
                self._split(frame, packets)
        return packets

    def _split(self, frame: bytes, packets: list[bytes]) -> None:
        try:
            segments = split_frame(frame)
        except (OffloadError, IndexError):
            self.bad_frames += 1
            return
        if len(segments) > 1:
            self.super_reads += 1
        packets.extend(segments)

    def write(self, packet: bytes) -> bool:
        """Hand one packet to the kernel without blocking.

        Returns ``False`` (and counts ``write_drops``) when the kernel did not take it: queue
        full (``EAGAIN``/``ENOBUFS``) or a packet it rejects as malformed (``EINVAL``). Any other
        error means the device is unusable and is raised.
        """
        fd = self._fd
        if fd < 0:
            self.fileno()  # raises ClosedResourceError
        try:
            if self.offload:
                os.writev(fd, (PLAIN_HDR, packet))
            else:
                os.write(fd, packet)
        except OSError as exc:
            if exc.errno in _DROP_ERRNOS:
                self.write_drops += 1
                return False
            raise
        return True

    def write_many(self, packets: list[bytes]) -> int:
        """Hand a batch of packets to the kernel without blocking; returns how many it took.

        With offloads, runs of one TCP flow's in-order segments go in as one super-packet
        (one ``writev``). Drops are counted per packet as in :meth:`write`.
        """
        if len(packets) == 1:  # a lone packet, the per-packet hot path
            return 1 if self.write(packets[0]) else 0
        if not self.offload or not packets:
            return sum(map(self.write, packets))
        fd = self.fileno()
        writev = os.writev
        taken = 0
        for frame in coalesce(packets):
            count = len(frame) - 2 if len(frame) > 2 else 1
            try:
                writev(fd, frame)
            except OSError as exc:
                if exc.errno in _DROP_ERRNOS:
                    self.write_drops += count
                    continue
                raise
            if count > 1:
                self.super_writes += 1
            taken += count
        return taken

    async def write_wait(self, packet: bytes) -> None:
        """Write one packet, waiting for the device to become writable if its queue is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        frame = (PLAIN_HDR, packet) if self.offload else (packet,)
        while True:
            try:
                os.writev(self.fileno(), frame)
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
             read_size: int = DEFAULT_READ_SIZE, offload: bool = True,
             tso: bool = False, node: str = TUN_PATH) -> TunDevice:
    """Create (or attach to an existing persistent) TUN/TAP device.

    ``name`` may be empty or a pattern like ``tun%d`` to let the kernel choose. ``offload``
    asks for the vnet header of the module doc and ``tso`` in addition for TSO super-packets
    on read (both ignored for TAP); when the kernel refuses them the device works without.
    ``node`` is the clone device to open (``dev-node``; OpenVPN's tun.c open_tun() on Linux).
    Must run in the network namespace the device belongs in (see
    :func:`trivpn.runtime.netns.enter_netns`). Raises :class:`RuntimeSetupError` if the device
    cannot be opened (no ``/dev/net/tun``, no ``CAP_NET_ADMIN``, name in use by another kind of
    device or by another process).
    """
    if kind not in ("tun", "tap"):
        raise ValueError(f"kind must be 'tun' or 'tap', not {kind!r}")
    raw_name = name.encode()
    if len(raw_name) >= IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise RuntimeSetupError(f"invalid interface name {name!r}", "open " + kind)
    where = f"open {kind} {name or '(kernel-chosen name)'}"
    try:
        fd = os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeSetupError(f"cannot open {node}", where, errno=exc.errno) from exc
    offload = offload and kind == "tun"
    tso_flags = TUN_F_CSUM | TUN_F_TSO4 if tso else 0
    flags = (IFF_TUN if kind == "tun" else IFF_TAP) | IFF_NO_PI
    try:
        try:
            result = fcntl.ioctl(fd, TUNSETIFF,
                                 _IFREQ.pack(raw_name, flags | (IFF_VNET_HDR if offload else 0)))
        except OSError as exc:
            if not offload or exc.errno in (errno.EBUSY, errno.EPERM):
                raise
            offload = False
            result = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw_name, flags))
    except OSError as exc:
        os.close(fd)
        hint = ""
        if exc.errno == errno.EBUSY:
            hint = " (device is held open by another process)"
        elif exc.errno == errno.EINVAL:
            hint = " (a device of that name exists with a different type or flags)"
        raise RuntimeSetupError(f"TUNSETIFF failed{hint}", where, errno=exc.errno) from exc
    tso = False
    if offload:
        try:  # also clears offloads a persistent device may still have from another opener
            fcntl.ioctl(fd, TUNSETOFFLOAD, tso_flags)
            tso = bool(tso_flags)
        except OSError:
            pass
    actual, _ = _IFREQ.unpack(result)
    return TunDevice(fd, actual.rstrip(b"\0").decode(), kind, read_size, offload=offload,
                     tso=tso)
