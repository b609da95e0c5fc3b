"""In-memory implementations of the runtime's transports and devices (for tests).

* :class:`MemoryNetwork` delivers datagrams between addressed :class:`MemoryDatagramLink`
  endpoints after a delay, and may lose, duplicate or reorder them (seeded, so a failing run
  can be replayed). Time is trio's: under ``trio.testing.MockClock(autojump_threshold=0)`` a
  minute of reconnects and keepalives passes in milliseconds.
* :func:`memory_packet_link_pair` gives two connected :class:`~trivpn.runtime.link.FramedLink`
  ends over a ``trio.testing`` memory stream: the real TCP framing code, no socket.
* :class:`MemoryDevice` is a TUN/TAP device whose other side is the test
  (:meth:`MemoryDevice.inject` = a packet the host routed into the tunnel,
  :meth:`MemoryDevice.delivered` = packets trivpn wrote to it).
* :class:`MemoryTunnel` and :class:`MemoryClientHost` let a
  :class:`~trivpn.runtime.client.Client` run over all of these, :class:`MemoryServerHost` (with
  :class:`MemoryPacketListener` for TCP) a :class:`~trivpn.runtime.server.Server`.

They implement the Protocols of :mod:`trivpn.runtime.transport` and contain no test logic of
their own: no packet is ever inspected.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio
import trio.testing

from trivpn.config import Remote
from trivpn.protocol.framing import MAX_FRAMED
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import Address, FramedLink, LinkCounters
from trivpn.runtime.tunnel import NetGateway, TunnelPlan


@dataclass
class Conditions:
    """How the network treats every datagram (probabilities in 0..1, seconds)."""

    delay: float = 0.002
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    """Probability that a datagram is held back by up to :attr:`reorder_spread` seconds."""
    reorder_spread: float = 0.05


class MemoryNetwork:
    """Addressed datagram links that reach each other through a simulated network."""

    def __init__(self, conditions: Conditions | None = None, *, seed: int = 1) -> None:
        self.conditions = conditions or Conditions()
        self.rng = random.Random(seed)
        self._links: dict[Address, MemoryDatagramLink] = {}
        self._next_port = 40000
        self.sent = 0
        self.lost = 0
        self.undeliverable = 0  # no link bound at the destination (a closed port)
        self.partitioned = False
        """While True every datagram is lost (a dead path)."""
        self.unreachable: set[Address] = set()
        """Destinations whose datagrams are lost (a host that moved away)."""
        self._source_nat: dict[Address, Address] = {}
        self._destination_nat: dict[Address, Address] = {}
        self.tcp_accept: dict[Address, trio.MemorySendChannel[FramedLink]] = {}
        """Listening TCP addresses (a :class:`MemoryPacketListener` registers itself)."""

    def bind(self, host: str, port: int = 0) -> MemoryDatagramLink:
        if port == 0:
            self._next_port += 1
            port = self._next_port
        addr = (host, port)
        if addr in self._links:
            raise RuntimeSetupError("cannot bind UDP socket", f"{host}:{port}", errno=98)
        link = MemoryDatagramLink(self, addr)
        self._links[addr] = link
        return link

    def translate(self, inside: Address, outside: Address) -> None:
        """NAT: from now on datagrams sent from ``inside`` arrive from ``outside``, and
        datagrams sent to ``outside`` reach ``inside`` (a peer whose address changed)."""
        self._source_nat[inside] = outside
        self._destination_nat[outside] = inside

    def _unbind(self, addr: Address) -> None:
        self._links.pop(addr, None)

    def _transmit(self, src: Address, dst: Address, data: bytes) -> None:
        self.sent += 1
        c = self.conditions
        rng = self.rng
        if self.partitioned or dst in self.unreachable or (c.loss and rng.random() < c.loss):
            self.lost += 1
            return
        if self._source_nat:
            src = self._source_nat.get(src, src)
            dst = self._destination_nat.get(dst, dst)
        target = self._links.get(dst)
        if target is None:
            self.undeliverable += 1
            return
        copies = 2 if c.duplicate and rng.random() < c.duplicate else 1
        now = trio.current_time()
        for _ in range(copies):
            at = now + c.delay
            if c.reorder and rng.random() < c.reorder:
                at += rng.uniform(0.0, c.reorder_spread)
            target._enqueue(at, data, src)


class MemoryDatagramLink:
    """One bound address on a :class:`MemoryNetwork` (a :class:`~trivpn.runtime.transport.
    DatagramLink`)."""

    def __init__(self, network: MemoryNetwork, address: Address) -> None:
        self._network = network
        self._address = address
        self._peer: Address | None = None
        self._queue: list[tuple[float, int, bytes, Address]] = []
        self._seq = 0
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self.counters = LinkCounters()

    @property
    def local_address(self) -> Address:
        return self._address

    def connect(self, addr: Address) -> None:
        self._peer = addr

    def _enqueue(self, at: float, data: bytes, src: Address) -> None:
        if self._closed or (self._peer is not None and src != self._peer):
            return
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, data, src))
        self._lot.unpark_all()

    def _due(self, max_packets: int) -> list[tuple[bytes, Address]]:
        now = trio.current_time()
        queue = self._queue
        out: list[tuple[bytes, Address]] = []
        while queue and queue[0][0] <= now and len(out) < max_packets:
            _, _, data, src = heapq.heappop(queue)
            out.append((data, src))
        return out

    async def recv_batch(self, max_packets: int = 64) -> list[tuple[bytes, Address]]:
        while True:
            if self._closed:
                raise trio.ClosedResourceError("link closed")
            batch = self._due(max_packets)
            if batch:
                c = self.counters
                c.rx_packets += len(batch)
                c.rx_bytes += sum(len(d) for d, _ in batch)
                await trio.lowlevel.checkpoint()
                return batch
            wake = self._queue[0][0] if self._queue else math.inf
            with trio.move_on_at(wake):
                await self._lot.park()

    def try_send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        if self._closed:
            raise trio.ClosedResourceError("link closed")
        dst = addr if addr is not None else self._peer
        if dst is None:
            raise OSError("destination address required")
        for data in datagrams:
            self._network._transmit(self._address, dst, bytes(data))
        c = self.counters
        c.tx_packets += len(datagrams)
        c.tx_bytes += sum(map(len, datagrams))
        return len(datagrams)

    async def send_many(self, datagrams: Sequence[bytes], addr: Address | None = None) -> int:
        await trio.lowlevel.checkpoint()
        return self.try_send_many(datagrams, addr)

    def send_nowait(self, data: bytes, addr: Address | None = None) -> bool | None:
        return self.try_send_many((data,), addr) == 1

    def try_send(self, data: bytes, addr: Address | None = None) -> bool:
        return self.try_send_many((data,), addr) == 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._network._unbind(self._address)
            self._lot.unpark_all()


def memory_packet_link_pair(max_packet: int = MAX_FRAMED,
                            addresses: tuple[Address, Address] = (("198.18.0.2", 40000),
                                                                  ("198.18.0.1", 1194)),
                            ) -> tuple[FramedLink, FramedLink]:
    """Two framed packet links joined by an in-memory byte stream (the TCP transport's
    framing, no socket): ``(client end, server end)``."""
    a, b = trio.testing.memory_stream_pair()
    return (FramedLink(a, max_packet, local=addresses[0], peer=addresses[1]),
            FramedLink(b, max_packet, local=addresses[1], peer=addresses[0]))


class MemoryDevice:
    """A TUN/TAP device whose host side is the test (a :class:`~trivpn.runtime.transport.
    Device`)."""

    def __init__(self, name: str = "tun0", kind: str = "tun", *, queue: int = 1000) -> None:
        self.name = name
        self.kind = kind
        self.write_drops = 0
        self._queue = queue
        self._to_trivpn_send, self._to_trivpn = trio.open_memory_channel[bytes](queue)
        self._to_host, self._from_trivpn = trio.open_memory_channel[bytes](queue)
        self.closed = False

    # the host's side
    def inject(self, packet: bytes) -> None:
        """A packet the host routes into the tunnel (trivpn reads it from the device)."""
        self._to_trivpn_send.send_nowait(packet)

    async def delivered(self) -> bytes:
        """The next packet trivpn wrote to the device."""
        return await self._from_trivpn.receive()

    def delivered_nowait(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self._from_trivpn.receive_nowait())
            except trio.WouldBlock:
                return out

    # trivpn's side
    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        packets = [await self._to_trivpn.receive()]
        while len(packets) < max_packets:
            try:
                packets.append(self._to_trivpn.receive_nowait())
            except trio.WouldBlock:
                break
        return packets

    def write(self, packet: bytes) -> bool:
        if self.closed:
            raise trio.ClosedResourceError(f"{self.kind} device {self.name} is closed")
        try:
            self._to_host.send_nowait(packet)
        except trio.WouldBlock:
            self.write_drops += 1
            return False
        return True

    def write_many(self, packets: list[bytes]) -> int:
        return sum(map(self.write, packets))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._to_trivpn.close()


@dataclass
class MemoryTunnel:
    """A :class:`MemoryDevice` with the plan that would have been applied to it."""

    device: MemoryDevice
    plan: TunnelPlan
    ifindex: int = 7
    route_failures: list[str] = field(default_factory=list)
    plans: list[TunnelPlan] = field(default_factory=list)
    closed: bool = False

    @property
    def name(self) -> str:
        return self.device.name

    def reconfigure(self, plan: TunnelPlan) -> bool:
        if plan == self.plan:
            return False
        self.plan = plan
        self.plans.append(plan)
        return True

    def close(self) -> list[str]:
        self.device.close()
        self.closed = True
        return []

    def describe(self) -> dict[str, object]:
        return {"device": self.device.name, "kind": self.device.kind, "mtu": self.plan.mtu,
                "addresses": [str(a) for a in self.plan.addresses],
                "routes": [str(r) for r in self.plan.routes]}


@dataclass
class MemoryClientHost:
    """Everything a client opens, in memory: datagram links on ``network``, TCP connections
    through ``tcp_listeners`` (``(host, port)`` → a callable receiving the server end), and
    tunnels on :class:`MemoryDevice`\\ s (all opened ones kept in :attr:`tunnels`)."""

    network: MemoryNetwork
    address: str = "198.18.0.2"
    tcp_accept: dict[Address, trio.MemorySendChannel[FramedLink]] = field(default_factory=dict)
    tunnels: list[MemoryTunnel] = field(default_factory=list)
    links: list[MemoryDatagramLink] = field(default_factory=list)
    # byte streams (proxies): (host, port) -> a channel receiving the far end of each stream
    stream_accept: dict[Address, trio.MemorySendChannel[trio.abc.Stream]] = field(
        default_factory=dict)
    lookups: list[str] = field(default_factory=list)  # every name resolve() was asked for

    async def open_stream(self, host: str, port: int, bind: tuple[str, int] | None,
                          sndbuf: int | None, rcvbuf: int | None) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        accept = self.stream_accept.get((host, port))
        if accept is None:
            raise RuntimeSetupError("TCP connect failed", f"{host}:{port}", errno=111)
        near, far = trio.testing.memory_stream_pair()
        accept.send_nowait(far)
        return near

    async def resolve(self, remote: Remote, kind: int) -> tuple[int, str]:
        await trio.lowlevel.checkpoint()
        self.lookups.append(remote.host)
        family = 10 if ":" in remote.host else 2  # AF_INET6 / AF_INET
        return family, remote.host

    def open_udp(self, bind: tuple[str, int], sndbuf: int | None,
                 rcvbuf: int | None) -> MemoryDatagramLink:
        host = self.address if bind[0] in ("0.0.0.0", "::") else bind[0]
        link = self.network.bind(host, bind[1])
        self.links.append(link)
        return link

    async def open_tcp(self, host: str, port: int, bind: tuple[str, int] | None,
                       sndbuf: int | None, rcvbuf: int | None) -> FramedLink:
        await trio.lowlevel.checkpoint()
        accept = self.tcp_accept.get((host, port)) or self.network.tcp_accept.get((host, port))
        if accept is None:
            raise RuntimeSetupError("TCP connect failed", f"{host}:{port}", errno=111)
        local = (self.address, self.network._next_port + 1)
        self.network._next_port += 1
        client_end, server_end = memory_packet_link_pair(addresses=(local, (host, port)))
        try:
            accept.send_nowait(server_end)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise RuntimeSetupError("TCP connect failed", f"{host}:{port}",
                                    errno=111) from exc
        return client_end

    def open_tunnel(self, plan: TunnelPlan) -> MemoryTunnel:
        tunnel = MemoryTunnel(MemoryDevice(plan.name or "tun0", plan.kind), plan, plans=[plan])
        self.tunnels.append(tunnel)
        return tunnel

    def net_gateway(self, remote_ip: str, tunnel: object) -> NetGateway | None:
        return None


class MemoryPacketListener:
    """A listening TCP address on a :class:`MemoryNetwork`: clients' ``open_tcp`` hands it the
    server end of a :func:`memory_packet_link_pair` (a :class:`~trivpn.runtime.transport.
    PacketListener`)."""

    def __init__(self, network: MemoryNetwork, address: Address, backlog: int = 128) -> None:
        if address in network.tcp_accept:
            raise RuntimeSetupError("cannot listen on TCP", f"{address[0]}:{address[1]}",
                                    errno=98)
        self._network = network
        self._address = address
        send, self._accept = trio.open_memory_channel[FramedLink](backlog)
        network.tcp_accept[address] = send

    @property
    def local_address(self) -> Address:
        return self._address

    async def accept(self) -> FramedLink:
        try:
            return await self._accept.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError) as exc:
            raise trio.ClosedResourceError("listener closed") from exc

    async def aclose(self) -> None:
        send = self._network.tcp_accept.pop(self._address, None)
        if send is not None:
            await send.aclose()
        await self._accept.aclose()


@dataclass
class MemoryServerHost:
    """Everything a server opens, in memory: its datagram link or TCP listener on
    ``network`` at ``address`` (the config's ``local``, if any, wins), and its tunnel on a
    :class:`MemoryDevice` (every opened one kept in :attr:`tunnels`)."""

    network: MemoryNetwork
    address: str = "198.18.0.1"
    tunnels: list[MemoryTunnel] = field(default_factory=list)
    links: list[MemoryDatagramLink] = field(default_factory=list)
    listeners: list[MemoryPacketListener] = field(default_factory=list)

    def _host(self, host: str) -> str:
        return self.address if host in ("0.0.0.0", "::") else host

    def open_tunnel(self, plan: TunnelPlan) -> MemoryTunnel:
        tunnel = MemoryTunnel(MemoryDevice(plan.name or "tun0", plan.kind), plan, plans=[plan])
        self.tunnels.append(tunnel)
        return tunnel

    def open_udp(self, host: str, port: int, sndbuf: int | None,
                 rcvbuf: int | None, *, multihome: bool = False) -> MemoryDatagramLink:
        link = self.network.bind(self._host(host), port)
        self.links.append(link)
        return link

    async def open_tcp_listener(self, host: str, port: int, sndbuf: int | None,
                                rcvbuf: int | None) -> MemoryPacketListener:
        await trio.lowlevel.checkpoint()
        listener = MemoryPacketListener(self.network, (self._host(host), port))
        self.listeners.append(listener)
        return listener
