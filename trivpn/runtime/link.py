"""Transports to the peer: UDP datagrams and length-framed TCP streams (trio).

UDP receive drains the socket until ``EAGAIN`` after each wake-up and returns the batch
(docs/performance.md: ~3x over one datagram per wake-up). Send paths take batches
(:meth:`UdpLink.send_many`) so that UDP GSO can later be slotted in without touching callers.

TCP carries each OpenVPN packet behind a 2-byte length (:mod:`trivpn.protocol.framing`). A bad
length raises :class:`~trivpn.protocol.errors.DecodeError` out of
:meth:`TcpLink.recv_packets`: the caller must close the connection, as OpenVPN does.

``netns=NAME`` creates the socket inside that network namespace (see
:mod:`trivpn.runtime.netns`); everything else then happens as usual.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from trivpn.protocol.framing import MAX_FRAMED, StreamDeframer, frame
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.netns import enter_netns

SOCKET_BUFFER = 4 * 1024 * 1024
UDP_READ_SIZE = 65536
TCP_READ_SIZE = 65536

Address = Any
"""A socket address as ``recvfrom`` returns it: ``(host, port)`` (IPv6: 4-tuple)."""



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
    """A non-blocking stdlib socket, created inside ``netns`` if given."""
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


class UdpLink:
    """A non-blocking UDP socket with batched receive and batch-friendly send.

    Not safe for concurrent receivers; any number of tasks may send.
    """

    __slots__ = ("_connected", "_sock", "counters")

    def __init__(self, sock: socket.socket) -> None:
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UdpLink needs a SOCK_DGRAM socket")
        sock.setblocking(False)
        self._sock = sock
        self._connected = False
        self.counters = LinkCounters()

    @classmethod
    def bind(cls, host: str, port: int, *, netns: str | None = None,
             buffer_size: int = SOCKET_BUFFER, reuse_port: bool = False) -> UdpLink:
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
        return cls(sock)

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

        Per-datagram errors (an ICMP port unreachable reported on a connected socket) are
        counted in ``rx_errors`` and skipped, as OpenVPN does. Always a trio checkpoint.
        """
        self._check_open()
        recvfrom = self._sock.recvfrom
        batch: list[tuple[bytes, Address]] = []
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while len(batch) < max_packets:
            try:
                batch.append(recvfrom(UDP_READ_SIZE))
            except BlockingIOError:
                if batch:
                    break
                await trio.lowlevel.wait_readable(self._sock)
                self._check_open()
                waited = True
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    raise trio.ClosedResourceError("UDP link is closed") from exc
                self.counters.rx_errors += 1
                self.counters.last_error = exc.errno
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        c = self.counters
        c.rx_packets += len(batch)
        c.rx_bytes += sum(len(d) for d, _ in batch)
        return batch

    def _send_once(self, data: bytes, addr: Address | None) -> bool | None:
        """True: sent. False: dropped (``ENOBUFS``) or a per-datagram error. None: the socket
        queue is full (``EAGAIN``), try again when writable."""
        try:
            if addr is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # device queue full: waiting would spin, drop
                self.counters.tx_dropped += 1
                return False
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("UDP link is closed") from exc
            self.counters.tx_errors += 1
            self.counters.last_error = exc.errno
            return False
        self.counters.tx_packets += 1
        self.counters.tx_bytes += len(data)
        return True

    def try_send(self, data: bytes, addr: Address | None = None) -> bool:
        """Send without waiting. ``False`` if not sent (counted as dropped or as an error)."""
        result = self._send_once(data, addr)
        if result is None:
            self.counters.tx_dropped += 1
            return False
        return result

    def try_send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        """Send a batch without waiting; returns how many were sent. The rest count as
        dropped (queue full) or errors."""
        sent = 0
        for data in datagrams:
            if self.try_send(data, addr):
                sent += 1
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
            result = self._send_once(data, addr)
            if result is not None:
                return result
            await trio.lowlevel.wait_writable(self._sock)

    async def send_many(self, datagrams: Iterable[bytes], addr: Address | None = None) -> int:
        """Send a batch in order, waiting while the queue is full; returns how many were sent
        (the others hit per-datagram errors). The place where UDP GSO will go."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sent = 0
        for data in datagrams:
            if await self._send_waiting(data, addr):
                sent += 1
        await trio.lowlevel.cancel_shielded_checkpoint()
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


class TcpLink:
    """One TCP connection carrying length-framed OpenVPN packets.

    One receiving task; sends from several tasks are serialised by an internal lock.
    """

    __slots__ = ("_deframer", "_send_lock", "_stream", "counters")

    def __init__(self, stream: trio.SocketStream, max_packet: int = MAX_FRAMED) -> None:
        self._stream = stream
        self._deframer = StreamDeframer(max_packet)
        self._send_lock = trio.StrictFIFOLock()
        self.counters = LinkCounters()

    @property
    def stream(self) -> trio.SocketStream:
        return self._stream

    @property
    def peer_address(self) -> Address:
        return self._stream.socket.getpeername()

    @property
    def local_address(self) -> Address:
        return self._stream.socket.getsockname()

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
