"""What the runtime needs from a transport and from a TUN/TAP device, as Protocols.

The runtime drives sessions over these interfaces only; the real implementations live in
:mod:`trivpn.runtime.link` (:class:`~trivpn.runtime.link.UdpLink`,
:class:`~trivpn.runtime.link.TcpLink`) and :mod:`trivpn.runtime.tun`, the in-memory doubles in
:mod:`trivpn.runtime.memory` (whole clients and servers run over them in unit tests,
under trio's ``MockClock``, without root).

* :class:`DatagramLink` is **addressed**: every received datagram comes with its source and
  every send names its destination (``None``: the connected peer). One server socket serves
  many peers this way; a client with ``float`` uses an unconnected one too.
* :class:`PacketLink` carries whole OpenVPN packets over a stream (TCP with the 2-byte length
  framing); it has exactly one peer.
* :class:`Device` is a TUN or TAP device: packets (or frames) in and out.
* :class:`PacketListener` accepts a server's TCP connections (:class:`ServerPacketLink`).
* :class:`TunnelHandle` is an open device plus the host configuration applied for it, as the
  client keeps it across reconnects; :class:`ClientHost` opens links and tunnels for a client,
  :class:`ServerHost` for a server.

The UDP fast path (:mod:`trivpn.runtime.readiness`) needs file descriptors; a link or device
without one is served by ordinary trio tasks instead (see ``runtime/client.py`` and
``runtime/serverudp.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

from trivpn.config import Remote
from trivpn.runtime.link import Address, LinkCounters
from trivpn.runtime.tunnel import NetGateway, TunnelPlan

__all__ = ["Address", "ClientHost", "DatagramLink", "Device", "PacketLink", "PacketListener",
           "ServerHost", "ServerPacketLink", "TunnelHandle"]


class DatagramLink(Protocol):
    """An addressed datagram socket (UDP)."""

    @property
    def counters(self) -> LinkCounters: ...

    @property
    def local_address(self) -> Address: ...

    def connect(self, addr: Address) -> None:
        """Only datagrams from ``addr`` are received from now on; ``None`` sends go there."""

    def send_nowait(self, data: bytes, addr: Address | None = None) -> bool | None:
        """Send one datagram if there is room. True: sent; False: dropped (counted); None:
        the queue is full, nothing counted (:meth:`send_many` waits)."""
        ...

    def try_send(self, data: bytes, addr: Address | None = None) -> bool:
        """Send one datagram without waiting; False if it was dropped (counted)."""
        ...

    async def recv_batch(self, max_packets: int = 64) -> list[tuple[bytes, Address]]:
        """Wait for at least one datagram; return what is queued (up to ``max_packets``)."""
        ...

    def try_send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        """Send without waiting; datagrams that do not fit are dropped and counted."""
        ...

    async def send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        """Send, waiting for buffer space when needed; returns how many were sent."""
        ...

    def close(self) -> None: ...


class PacketLink(Protocol):
    """Whole OpenVPN packets over a stream to one peer (TCP framing)."""

    @property
    def counters(self) -> LinkCounters: ...

    @property
    def local_address(self) -> Address: ...

    async def recv_packets(self) -> list[bytes]:
        """The next non-empty list of packets; :class:`~trivpn.runtime.link.LinkClosed` at EOF,
        :class:`~trivpn.protocol.errors.DecodeError` on a bad length."""
        ...

    async def send_packets(self, packets: Sequence[bytes]) -> None: ...

    async def aclose(self) -> None: ...


class ServerPacketLink(PacketLink, Protocol):
    """A server's accepted TCP connection: a :class:`PacketLink` that knows its peer and
    reads the first packets of a new connection with a bound."""

    @property
    def peer_address(self) -> Address: ...

    @property
    def byte_stream(self) -> trio.abc.Stream:
        """The stream under the framing (``port-share`` relays foreign connections on it)."""
        ...

    async def read_head(self, size: int) -> bytes:
        """At least ``size`` first bytes (fewer at EOF), still seen by
        :meth:`recv_first_packets`."""
        ...

    async def recv_first_packets(self, max_first: int) -> list[bytes]:
        """The packets of the first read, the first at most ``max_first`` bytes long;
        :class:`~trivpn.protocol.errors.ProtocolError` when it is longer."""
        ...


class PacketListener(Protocol):
    """A server's TCP listening socket."""

    @property
    def local_address(self) -> Address: ...

    async def accept(self) -> ServerPacketLink: ...

    async def aclose(self) -> None: ...


class Device(Protocol):
    """A TUN (IP packets) or TAP (Ethernet frames) device."""

    @property
    def name(self) -> str: ...

    @property
    def write_drops(self) -> int:
        """Packets :meth:`write`/:meth:`write_many` could not hand over."""
        ...

    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Wait for at least one packet; return what is queued. Raises
        ``trio.ClosedResourceError`` once closed."""
        ...

    def write(self, packet: bytes) -> bool: ...

    def write_many(self, packets: list[bytes]) -> int: ...

    def close(self) -> None: ...


class TunnelHandle(Protocol):
    """An open device with its addresses and routes applied (``runtime/tunnel.py``'s
    :class:`~trivpn.runtime.tunnel.Tunnel` on a real host)."""

    @property
    def device(self) -> Device: ...

    @property
    def name(self) -> str: ...

    @property
    def ifindex(self) -> int: ...

    @property
    def route_failures(self) -> list[str]: ...

    def reconfigure(self, plan: TunnelPlan) -> bool:
        """Apply ``plan``; False when it equals the one applied."""
        ...

    def close(self) -> list[str]:
        """Close the device and undo the configuration; what could not be undone."""
        ...

    def describe(self) -> dict[str, object]: ...


class ClientHost(Protocol):
    """Where a client's links and tunnel come from: the real host, or memory in tests."""

    async def resolve(self, remote: Remote, kind: int) -> tuple[int, str]:
        """(address family, numeric address) of ``remote`` for socket type ``kind``."""
        ...

    def open_udp(self, bind: tuple[str, int], sndbuf: int | None,
                 rcvbuf: int | None) -> DatagramLink: ...

    async def open_tcp(self, host: str, port: int, bind: tuple[str, int] | None,
                       sndbuf: int | None, rcvbuf: int | None) -> PacketLink:
        """Connect; raises :class:`~trivpn.runtime.errors.RuntimeSetupError` on failure."""
        ...

    async def open_stream(self, host: str, port: int, bind: tuple[str, int] | None,
                          sndbuf: int | None, rcvbuf: int | None) -> trio.abc.Stream:
        """A connected byte stream (a proxy's TCP connection, before any framing); raises
        :class:`~trivpn.runtime.errors.RuntimeSetupError` on failure."""
        ...

    def open_tunnel(self, plan: TunnelPlan) -> TunnelHandle: ...

    def net_gateway(self, remote_ip: str, tunnel: TunnelHandle | None) -> NetGateway | None:
        """How ``remote_ip`` is reached now (outside ``tunnel``); None when unknown."""
        ...


class ServerHost(Protocol):
    """Where a server's link and tunnel come from: the real host, or memory in tests."""

    def open_tunnel(self, plan: TunnelPlan) -> TunnelHandle: ...

    def open_udp(self, host: str, port: int, sndbuf: int | None,
                 rcvbuf: int | None, *, multihome: bool = False) -> DatagramLink:
        """Bind (``multihome``: replies leave from the address each client sent to); raises
        :class:`~trivpn.runtime.errors.RuntimeSetupError` on failure."""
        ...

    async def open_tcp_listener(self, host: str, port: int, sndbuf: int | None,
                                rcvbuf: int | None) -> PacketListener:
        """Listen; raises :class:`~trivpn.runtime.errors.RuntimeSetupError` on failure."""
        ...
