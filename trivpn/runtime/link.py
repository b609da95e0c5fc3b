"""Transports to the peer: UDP datagrams and length-framed TCP streams (trio).

UDP receive drains the socket until ``EAGAIN`` after each wake-up and returns the batch
(~3x, docs/performance-notes.md "Platform baseline"). Where the kernel offers them, UDP
sockets use segmentation offloads (another ~1.3x): sends of consecutive same-size datagrams to
one peer go out as one ``sendmsg`` with a ``UDP_SEGMENT`` control message (GSO), and ``UDP_GRO``
lets the kernel hand several datagrams of one sender over in one receive, which
:meth:`UdpLink.recv_batch` splits again by the ``gso_size`` it reports. The peer still sees
ordinary datagrams; without kernel support (or when a GSO send is refused, e.g. a datagram
larger than the path MTU) the link falls back to one syscall per datagram.

TCP carries each OpenVPN packet behind a 2-byte length (:mod:`trivpn.protocol.framing`). A bad
length raises :class:`~trivpn.protocol.errors.DecodeError` out of
:meth:`FramedLink.recv_packets`: the caller must close the connection, as OpenVPN does.

``netns=NAME`` creates the socket inside that network namespace (see
:mod:`trivpn.runtime.netns`); everything else then happens as usual.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.framing import MAX_FRAMED, StreamDeframer, frame
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.netns import enter_netns

SOCKET_BUFFER = 4 * 1024 * 1024
UDP_READ_SIZE = 65536
TCP_READ_SIZE = 65536

Address = Any
"""A socket address as ``recvfrom`` returns it: ``(host, port)`` (IPv6: 4-tuple)."""

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
GSO_MAX_SEGMENTS = 64
"""Datagrams per GSO send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels)."""
GSO_MAX_BYTES = 65000
"""Payload bytes per GSO send (one UDP datagram: 65535 minus IP and UDP headers)."""
GSO_MAX_FAILURES = 16
"""Refused GSO sends in a row after which the link stops trying (and sends one by one)."""
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_PKTINFO_CMSG_SPACE = socket.CMSG_SPACE(20)  # struct in6_pktinfo, larger than in_pktinfo
# A refused GSO send: the segments are then sent one by one (a datagram above the path MTU,
# a device without checksum offload, a kernel without UDP_SEGMENT).
_GSO_REFUSED = frozenset({errno.EINVAL, errno.EIO, errno.EOPNOTSUPP, errno.ENOPROTOOPT,
                          errno.EMSGSIZE})


@dataclass(slots=True)
class LinkCounters:
    """Packet and byte counters for one link. ``tx_dropped``: not sent because the socket
    queue was full; ``tx_errors``/``rx_errors``: other per-datagram errors (ICMP unreachable
    reported on a connected socket, EMSGSIZE...), with the last one kept in ``last_error``."""

    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_dropped: int = 0
    tx_errors: int = 0
    rx_errors: int = 0
    last_error: int | None = None


class LinkClosed(Exception):
    """The peer closed the TCP connection (clean EOF)."""


def _family_for(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def make_socket(family: int, kind: int, netns: str | None = None) -> socket.socket:
    """A non-blocking stdlib socket, created inside ``netns`` if given. IPv6 sockets are
    dual-stack (``IPV6_V6ONLY`` off, whatever net.ipv6.bindv6only says): bound to ``::``
    they take IPv4 peers too, as OpenVPN's sockets do unless ``bind-ipv6-only``."""
    try:
        if netns is None:
            sock = socket.socket(family, kind)
        else:
            with enter_netns(netns):
                sock = socket.socket(family, kind)
    except OSError as exc:
        raise RuntimeSetupError("cannot create socket", f"netns {netns}" if netns else "host",
                                errno=exc.errno) from exc
    sock.setblocking(False)
    if family == socket.AF_INET6:
        with contextlib.suppress(OSError):  # IPv6-only kernels: the socket stays as it is
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def _set_buffers(sock: socket.socket, size: int) -> None:
    """Best effort: try the privileged FORCE variants first (root may exceed rmem_max)."""
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, plain, size)


def apply_sndbuf_rcvbuf(sock: socket.socket | trio.socket.SocketType, sndbuf: int | None,
                        rcvbuf: int | None) -> None:
    """``sndbuf``/``rcvbuf``: set SO_SNDBUF/SO_RCVBUF to the configured size, replacing
    trivpn's own default (OpenVPN: socket.c, socket_set_buffers; 0 or unset keeps it). The
    kernel doubles the value and caps it at wmem_max/rmem_max, as for OpenVPN."""
    for size, option, what in ((sndbuf, socket.SO_SNDBUF, "sndbuf"),
                               (rcvbuf, socket.SO_RCVBUF, "rcvbuf")):
        if size:
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError as exc:
                raise RuntimeSetupError(f"cannot set {what} {size}", "link socket",
                                        errno=exc.errno) from exc


def _gso_supported(sock: socket.socket) -> bool:
    """The kernel knows ``UDP_SEGMENT`` for this socket (``getsockopt`` answers)."""
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _gro_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size a coalesced (GRO) receive reports; 0 when it reports none."""
    size = 0
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO:
            size = int.from_bytes(value[:4], sys.byteorder)
    return size


class UdpLink:
    """A non-blocking UDP socket with batched receive and batch-friendly send.

    ``offload`` (default on) enables UDP GSO for sends and GRO for receives where the kernel
    supports them; :attr:`gso` and :attr:`gro` tell what is in use.
    Not safe for concurrent receivers; any number of tasks may send.
    """

    __slots__ = ("_connected", "_gso_failures", "_pending", "_sock", "counters", "gro", "gso")

    def __init__(self, sock: socket.socket, *, offload: bool = True) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UdpLink needs a SOCK_DGRAM socket")
        sock.setblocking(False)
        self._sock = sock
        self._connected = False
        self.counters = LinkCounters()
        self.gso = offload and _gso_supported(sock)
        self.gro = offload and _enable_gro(sock)
        self._gso_failures = 0
        self._pending: list[tuple[bytes, Address]] = []

    @classmethod
    def bind(cls, host: str, port: int, *, netns: str | None = None,
             buffer_size: int = SOCKET_BUFFER, reuse_port: bool = False,
             offload: bool = True) -> UdpLink:
        """Create and bind a UDP socket to numeric ``host``/``port`` (port 0: kernel picks)."""
        sock = make_socket(_family_for(host), socket.SOCK_DGRAM, netns)
        try:
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            _set_buffers(sock, buffer_size)
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise RuntimeSetupError("cannot bind UDP socket", f"{host}:{port}",
                                    errno=exc.errno) from exc
        return cls(sock, offload=offload)

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def local_address(self) -> Address:
        return self._sock.getsockname()

    def connect(self, addr: Address) -> None:
        """Fix the peer (client side): then send with ``addr=None`` and see ICMP errors."""
        try:
            self._sock.connect(addr)
        except OSError as exc:
            raise RuntimeSetupError("cannot connect UDP socket", str(addr),
                                    errno=exc.errno) from exc
        self._connected = True

    def _check_open(self) -> None:
        if self._sock.fileno() < 0:
            raise trio.ClosedResourceError("UDP link is closed")

    async def recv_batch(self, max_packets: int = 64) -> list[tuple[bytes, Address]]:
        """Wait for one datagram, then drain up to ``max_packets`` without waiting again.

        A coalesced (GRO) receive is split back into its datagrams; those beyond
        ``max_packets`` are kept for the next call. Per-datagram errors (an ICMP port
        unreachable reported on a connected socket) are counted in ``rx_errors`` and skipped,
        as OpenVPN does. Always a trio checkpoint.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        batch = self._pending
        self._pending = []
        waited = False
        if len(batch) < max_packets:
            batch += self.recv_ready(max_packets - len(batch))
            while not batch:
                await trio.lowlevel.wait_readable(self._sock)
                waited = True
                batch = self.recv_ready(max_packets)
        if len(batch) > max_packets:
            self._pending = batch[max_packets:]
            del batch[max_packets:]
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return batch

    def recv_ready(self, max_packets: int = 64, *,
                   drain: bool = True) -> list[tuple[bytes, Address]]:
        """The datagrams queued now, without waiting (possibly none).

        ``drain``: receive until ``EAGAIN`` or until ``max_packets`` are held; otherwise one
        receive call only (for a lone packet that saves the ``EAGAIN`` round, the caller's
        readiness check tells whether more is queued). A coalesced (GRO) receive is returned
        whole, so the batch may exceed ``max_packets`` by up to one receive's datagrams.
        """
        if not self.gro:
            return self._drain_plain(max_packets if drain else 1)
        if drain:
            return self._drain_gro(max_packets)
        # a lone datagram, the per-packet hot path: one receive, no loop
        try:
            data, ancillary, _, addr = self._sock.recvmsg(UDP_READ_SIZE, _GRO_CMSG_SPACE)
        except BlockingIOError:
            return []
        except OSError as exc:
            self._rx_error(exc)
            return self._drain_gro(1)  # as the loop does: count it, receive again
        c = self.counters
        c.rx_bytes += len(data)
        if ancillary:
            batch: list[tuple[bytes, Address]] = []
            self._add_gro(batch, data, ancillary, addr)
            c.rx_packets += len(batch)
            return batch
        c.rx_packets += 1
        return [(data, addr)]

    @staticmethod
    def _add_gro(batch: list[tuple[bytes, Address]], data: bytes,
                 ancillary: list[tuple[int, int, bytes]], addr: Address) -> None:
        """Append a receive with control data: a coalesced one split by the segment size."""
        size = _gro_size(ancillary)
        if 0 < size < len(data):
            for start in range(0, len(data), size):
                batch.append((data[start:start + size], addr))
        else:
            batch.append((data, addr))

    def _rx_error(self, exc: OSError) -> None:
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("UDP link is closed") from exc
        self.counters.rx_errors += 1
        self.counters.last_error = exc.errno

    def _drain_plain(self, max_packets: int) -> list[tuple[bytes, Address]]:
        recvfrom = self._sock.recvfrom
        batch: list[tuple[bytes, Address]] = []
        nbytes = 0
        while len(batch) < max_packets:
            try:
                item = recvfrom(UDP_READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._rx_error(exc)
                continue
            nbytes += len(item[0])
            batch.append(item)
        c = self.counters
        c.rx_packets += len(batch)
        c.rx_bytes += nbytes
        return batch

    def _drain_gro(self, max_packets: int) -> list[tuple[bytes, Address]]:
        recvmsg = self._sock.recvmsg
        batch: list[tuple[bytes, Address]] = []
        append = batch.append
        nbytes = 0
        while len(batch) < max_packets:
            try:
                data, ancillary, _, addr = recvmsg(UDP_READ_SIZE, _GRO_CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._rx_error(exc)
                continue
            nbytes += len(data)
            if ancillary:  # a coalesced receive: split by the segment size
                self._add_gro(batch, data, ancillary, addr)
            else:
                append((data, addr))
        c = self.counters
        c.rx_packets += len(batch)
        c.rx_bytes += nbytes
        return batch

    def send_nowait(self, data: bytes, addr: Address | None = None) -> bool | None:
        """Send one datagram if the socket queue has room. True: sent. False: dropped
        (``ENOBUFS``) or a per-datagram error (counted). None: the socket queue is full
        (``EAGAIN``), nothing counted: try again when writable (:meth:`send_many` waits)."""
        try:
            if addr is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except BlockingIOError:
            return None
        except OSError as exc:
            return self._tx_error(exc)
        c = self.counters
        c.tx_packets += 1
        c.tx_bytes += len(data)
        return True

    def _tx_error(self, exc: OSError) -> bool:
        """A failed send of one datagram: counted (False), or the link is closed."""
        if exc.errno == errno.ENOBUFS:  # device queue full: waiting would spin, drop
            self.counters.tx_dropped += 1
            return False
        if exc.errno == errno.EBADF:
            raise trio.ClosedResourceError("UDP link is closed") from exc
        self.counters.tx_errors += 1
        self.counters.last_error = exc.errno
        return False

    def try_send(self, data: bytes, addr: Address | None = None) -> bool:
        """Send without waiting. ``False`` if not sent (counted as dropped or as an error)."""
        result = self.send_nowait(data, addr)
        if result is None:
            self.counters.tx_dropped += 1
            return False
        return result

    def _runs(self, datagrams: Sequence[bytes]) -> Iterable[Sequence[bytes]]:
        """Split a batch into GSO runs: consecutive datagrams of one size (the last of a run
        may be shorter), at most GSO_MAX_SEGMENTS and GSO_MAX_BYTES each."""
        n = len(datagrams)
        i = 0
        while i < n:
            size = len(datagrams[i])
            j = i + 1
            if size:
                limit = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // size)
                while j < limit:
                    length = len(datagrams[j])
                    if length != size:
                        if 0 < length < size:
                            j += 1
                        break
                    j += 1
            yield datagrams[i:j]
            i = j

    def _send_gso_once(self, run: Sequence[bytes], addr: Address | None) -> int | None:
        """One GSO send of ``run`` (2+ datagrams); how many datagrams went out, or None when
        the queue is full (try again when writable). A refused GSO send falls back to one
        send per datagram; drops and errors are counted."""
        cmsg = [(SOL_UDP, UDP_SEGMENT, len(run[0]).to_bytes(2, sys.byteorder))]
        try:
            if addr is None:
                self._sock.sendmsg(run, cmsg)
            else:
                self._sock.sendmsg(run, cmsg, 0, addr)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("UDP link is closed") from exc
            if exc.errno == errno.ENOBUFS:
                self.counters.tx_dropped += len(run)
                return 0
            if exc.errno in _GSO_REFUSED:
                self._gso_failures += 1
                if self._gso_failures >= GSO_MAX_FAILURES:
                    self.gso = False
                return self._send_singly(run, addr)
            self.counters.tx_errors += len(run)
            self.counters.last_error = exc.errno
            return 0
        self._gso_failures = 0
        c = self.counters
        c.tx_packets += len(run)
        c.tx_bytes += sum(map(len, run))
        return len(run)

    def _send_singly(self, run: Sequence[bytes], addr: Address | None) -> int:
        """Fallback for a refused GSO run: each datagram on its own (never waits: a full
        queue counts as dropped)."""
        sent = 0
        for data in run:
            result = self.send_nowait(data, addr)
            if result is None:
                self.counters.tx_dropped += 1
            elif result:
                sent += 1
        return sent

    def try_send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        """Send a batch without waiting; returns how many were sent. The rest count as
        dropped (queue full) or errors."""
        sent = 0
        if not self.gso or len(datagrams) < 2:
            for data in datagrams:
                if self.try_send(data, addr):
                    sent += 1
            return sent
        for run in self._runs(datagrams):
            if len(run) == 1:
                sent += self.try_send(run[0], addr)
                continue
            count = self._send_gso_once(run, addr)
            if count is None:
                self.counters.tx_dropped += len(run)
            else:
                sent += count
        return sent

    async def send(self, data: bytes, addr: Address | None = None) -> bool:
        """Send one datagram, waiting while the socket queue is full. ``False`` on a
        per-datagram error (counted in ``tx_errors``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        result = await self._send_waiting(data, addr)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    async def _send_waiting(self, data: bytes, addr: Address | None) -> bool:
        while True:
            result = self.send_nowait(data, addr)
            if result is not None:
                return result
            await trio.lowlevel.wait_writable(self._sock)

    async def send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        """Send a batch in order, waiting while the queue is full; returns how many were sent
        (the others hit per-datagram errors). Same-size runs go out as one GSO send each.

        A checkpoint only when it has to wait for buffer space: the data path calls it once
        per batch and does its own scheduling (:mod:`trivpn.runtime.readiness`).
        """
        sent = 0
        if not self.gso or len(datagrams) < 2:
            for data in datagrams:
                result = self.send_nowait(data, addr)
                if result is None:
                    result = await self._send_waiting(data, addr)
                sent += result
            return sent
        for run in self._runs(datagrams):
            if len(run) == 1:
                result = self.send_nowait(run[0], addr)
                if result is None:
                    result = await self._send_waiting(run[0], addr)
                sent += result
                continue
            while (count := self._send_gso_once(run, addr)) is None:
                await trio.lowlevel.wait_writable(self._sock)
            sent += count
        return sent

    def close(self) -> None:
        """Close the socket (idempotent); a task blocked in :meth:`recv_batch` gets
        :class:`trio.ClosedResourceError`."""
        if self._sock.fileno() >= 0:
            with contextlib.suppress(RuntimeError):  # outside trio.run nobody can be waiting
                trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()


class PktinfoUdpLink(UdpLink):
    """``multihome``: a server UDP socket that answers each client from the address the client
    sent to, whatever source the routing table would pick.

    Every receive asks for the destination address (``IP_PKTINFO``, ``IPV6_RECVPKTINFO``);
    the link remembers it per source address and sends to that address with the matching
    ``IP_PKTINFO``/``IPV6_PKTINFO`` control message (interface 0, source = that address), as
    OpenVPN does (src/openvpn/socket.c, link_socket_write_udp_posix_sendmsg). Sends to an
    address never heard from go out as plain ``sendto``. Costs a ``recvmsg``/``sendmsg`` per
    datagram and no offloads (GSO/GRO off): only a server configured with ``multihome`` uses
    it. At most :attr:`MAX_SOURCES` sources are remembered (the least recently heard is
    forgotten first; its next datagram teaches it again).
    """

    __slots__ = ("_sources",)

    MAX_SOURCES = 65536

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, offload=False)
        self._sources: dict[Address, tuple[int, int, bytes]] = {}
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            with contextlib.suppress(OSError):  # IPv4 clients of a dual-stack socket
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    @classmethod
    def bind_multihome(cls, host: str, port: int, *, netns: str | None = None,
                       buffer_size: int = SOCKET_BUFFER) -> PktinfoUdpLink:
        """:meth:`UdpLink.bind` for ``multihome`` (usually on the wildcard address)."""
        plain = UdpLink.bind(host, port, netns=netns, buffer_size=buffer_size, offload=False)
        try:
            return cls(plain.socket)
        except OSError as exc:
            plain.close()
            raise RuntimeSetupError("cannot enable IP_PKTINFO (multihome)", f"{host}:{port}",
                                    errno=exc.errno) from exc

    def source_for(self, addr: Address) -> str | None:
        """The local address replies to ``addr`` leave from (None: not heard from)."""
        cmsg = self._sources.get(addr)
        if cmsg is None:
            return None
        if cmsg[1] == IP_PKTINFO:
            return socket.inet_ntop(socket.AF_INET, cmsg[2][4:8])
        return socket.inet_ntop(socket.AF_INET6, cmsg[2][:16])

    def _remember(self, addr: Address, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, data in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                # struct in_pktinfo {ifindex, spec_dst, addr}: answer from spec_dst
                cmsg = (level, kind, bytes(4) + data[4:8] + bytes(4))
            elif level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= 20:
                cmsg = (level, kind, data[:16] + bytes(4))  # struct in6_pktinfo {addr, ifindex}
            else:
                continue
            sources = self._sources
            sources.pop(addr, None)  # most recently heard last
            sources[addr] = cmsg
            if len(sources) > self.MAX_SOURCES:
                del sources[next(iter(sources))]
            return

    def _drain_plain(self, max_packets: int) -> list[tuple[bytes, Address]]:
        recvmsg = self._sock.recvmsg
        batch: list[tuple[bytes, Address]] = []
        nbytes = 0
        while len(batch) < max_packets:
            try:
                data, ancillary, _, addr = recvmsg(UDP_READ_SIZE, _PKTINFO_CMSG_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                self._rx_error(exc)
                continue
            self._remember(addr, ancillary)
            nbytes += len(data)
            batch.append((data, addr))
        c = self.counters
        c.rx_packets += len(batch)
        c.rx_bytes += nbytes
        return batch

    def send_nowait(self, data: bytes, addr: Address | None = None) -> bool | None:
        cmsg = None if addr is None else self._sources.get(addr)
        if cmsg is None:
            return super().send_nowait(data, addr)
        try:
            self._sock.sendmsg((data,), (cmsg,), 0, addr)
        except BlockingIOError:
            return None
        except OSError as exc:
            return self._tx_error(exc)
        c = self.counters
        c.tx_packets += 1
        c.tx_bytes += len(data)
        return True


class FramedLink:
    """Length-framed OpenVPN packets over any trio byte stream (TCP's framing).

    One receiving task; sends from several tasks are serialised by an internal lock.
    ``local``/``peer`` are the addresses reported for a stream that has no socket.
    """

    __slots__ = ("_deframer", "_head", "_local", "_peer", "_send_lock", "_stream", "counters")

    def __init__(self, stream: trio.abc.Stream, max_packet: int = MAX_FRAMED, *,
                 local: Address = None, peer: Address = None) -> None:
        self._stream = stream
        self._deframer = StreamDeframer(max_packet)
        self._send_lock = trio.StrictFIFOLock()
        self._local = local
        self._peer = peer
        self._head = b""  # bytes read by read_head, not yet deframed
        self.counters = LinkCounters()

    @property
    def byte_stream(self) -> trio.abc.Stream:
        """The stream under the framing (``port-share`` relays a foreign connection on it)."""
        return self._stream

    async def read_head(self, size: int) -> bytes:
        """Receive until at least ``size`` bytes arrived (or EOF); returns everything received
        so far. :meth:`recv_first_packets` still sees these bytes."""
        while len(self._head) < size:
            data = await self._stream.receive_some(TCP_READ_SIZE)
            if not data:
                break
            self._head += data
        return self._head

    @property
    def peer_address(self) -> Address:
        return self._peer

    @property
    def local_address(self) -> Address:
        return self._local

    async def recv_packets(self) -> list[bytes]:
        """Return the next non-empty list of complete packets.

        Raises :class:`LinkClosed` on EOF (a partial packet at EOF is discarded) and
        :class:`~trivpn.protocol.errors.DecodeError` on a bad length; after either, close.
        """
        while True:
            data = await self._stream.receive_some(TCP_READ_SIZE)
            if not data:
                raise LinkClosed(f"peer closed the connection ({self._deframer.pending} "
                                 "bytes of an incomplete packet discarded)")
            packets = self._deframer.feed(data)
            if packets:
                c = self.counters
                c.rx_packets += len(packets)
                c.rx_bytes += sum(len(p) for p in packets)
                return packets

    async def recv_first_packets(self, max_first: int) -> list[bytes]:
        """:meth:`recv_packets` for a connection's first packets: raises
        :class:`~trivpn.protocol.errors.DecodeError` as soon as the first packet's length prefix
        announces more than ``max_first`` bytes, without waiting for them."""
        deframer = self._deframer
        while True:
            data: bytes | bytearray = self._head
            self._head = b""
            if not data:
                data = await self._stream.receive_some(TCP_READ_SIZE)
            if not data:
                raise LinkClosed(f"peer closed the connection ({deframer.pending} "
                                 "bytes of an incomplete packet discarded)")
            packets = deframer.feed(data)
            size = len(packets[0]) if packets else deframer.announced
            if size is not None and size > max_first:
                raise DecodeError(f"first packet announced as {size} bytes (at most "
                                  f"{max_first} expected)", "tcp stream offset 0",
                                  reason="bad_length")
            if packets:
                c = self.counters
                c.rx_packets += len(packets)
                c.rx_bytes += sum(len(p) for p in packets)
                return packets

    async def send_packet(self, packet: bytes) -> None:
        """Frame and send one packet (waits for the socket's buffer space)."""
        framed = frame(packet)
        async with self._send_lock:
            await self._stream.send_all(framed)
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(packet)

    async def send_packets(self, packets: Sequence[bytes]) -> None:
        """Frame a batch and send it with one write."""
        if not packets:
            await trio.lowlevel.checkpoint()
            return
        data = b"".join(frame(p) for p in packets)
        async with self._send_lock:
            await self._stream.send_all(data)
        self.counters.tx_packets += len(packets)
        self.counters.tx_bytes += sum(len(p) for p in packets)

    async def aclose(self) -> None:
        await self._stream.aclose()


class TcpLink(FramedLink):
    """One TCP connection carrying length-framed OpenVPN packets."""

    __slots__ = ("_socket_stream",)

    def __init__(self, stream: trio.SocketStream, max_packet: int = MAX_FRAMED) -> None:
        super().__init__(stream, max_packet)
        self._socket_stream = stream

    @property
    def stream(self) -> trio.SocketStream:
        return self._socket_stream

    @property
    def peer_address(self) -> Address:
        return self._socket_stream.socket.getpeername()

    @property
    def local_address(self) -> Address:
        return self._socket_stream.socket.getsockname()


async def open_tcp_link(host: str, port: int, *, netns: str | None = None,
                        bind: tuple[str, int] | None = None,
                        max_packet: int = MAX_FRAMED) -> TcpLink:
    """Connect to numeric ``host``:``port`` (client side). Cancel with a cancel scope to
    bound the connect time. Raises :class:`RuntimeSetupError` if the connect fails."""
    sock = trio.socket.from_stdlib_socket(
        make_socket(_family_for(host), socket.SOCK_STREAM, netns))
    try:
        if bind is not None:
            await sock.bind(bind)
        await sock.connect((host, port))
    except OSError as exc:
        sock.close()
        raise RuntimeSetupError("TCP connect failed", f"{host}:{port}",
                                errno=exc.errno) from exc
    except BaseException:
        sock.close()
        raise
    return TcpLink(trio.SocketStream(sock), max_packet)


class TcpLinkListener:
    """A listening TCP socket handing out :class:`TcpLink` connections (server side)."""

    __slots__ = ("_listener", "_max_packet")

    def __init__(self, listener: trio.SocketListener, max_packet: int = MAX_FRAMED) -> None:
        self._listener = listener
        self._max_packet = max_packet

    @property
    def local_address(self) -> Address:
        return self._listener.socket.getsockname()

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._listener.socket

    async def accept(self) -> TcpLink:
        stream = await self._listener.accept()
        assert isinstance(stream, trio.SocketStream)
        return TcpLink(stream, self._max_packet)

    async def aclose(self) -> None:
        await self._listener.aclose()


async def open_tcp_listener(host: str, port: int, *, netns: str | None = None,
                            backlog: int = 128,
                            max_packet: int = MAX_FRAMED) -> TcpLinkListener:
    """Listen on numeric ``host``:``port`` (port 0: kernel picks; see ``local_address``)."""
    std = make_socket(_family_for(host), socket.SOCK_STREAM, netns)
    try:
        std.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        std.bind((host, port))
        std.listen(backlog)
    except OSError as exc:
        std.close()
        raise RuntimeSetupError("cannot listen on TCP", f"{host}:{port}",
                                errno=exc.errno) from exc
    await trio.lowlevel.checkpoint()
    return TcpLinkListener(trio.SocketListener(trio.socket.from_stdlib_socket(std)),
                           max_packet)
