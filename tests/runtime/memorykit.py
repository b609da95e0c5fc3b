"""A trivpn client in memory: its config files, a peer made of sans-IO server sessions, and
the network between them (:mod:`trivpn.runtime.memory`), all on trio's clock.

The peer plays the server with one :class:`~trivpn.protocol.session.Session` per client
address (UDP) or connection (TCP), each driven by the runtime's own
:class:`~trivpn.runtime.pump.SessionPump`; it admits every authenticated client with
``push`` and echoes every packet that reaches its tunnel back to the client.
"""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.protocol.sessionkit import SUBNET_PUSH, make_test_pki, server_config
from tests.runtime.packets import ECHO_REQUEST, build_icmp_echo, build_ipv4
from trivpn.config import Options, load_config
from trivpn.logging import configure_logging, get_logger
from trivpn.pki.certs import certificate_pem
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol.session import Session, SessionConfig
from trivpn.runtime.client import Client
from trivpn.runtime.link import Address, FramedLink, LinkClosed
from trivpn.runtime.memory import Conditions, MemoryClientHost, MemoryNetwork
from trivpn.runtime.pump import SessionPump
from trivpn.runtime.transport import DatagramLink, PacketLink
from trivpn.sessionsetup import session_config

SERVER = ("198.18.0.1", 1194)
CLIENT_TUN_IP = "198.18.8.2"
SERVER_TUN_IP = "198.18.8.1"


def write_client_conf(directory: Path, extra: str = "", proto: str = "udp") -> Options:
    """A client config (with its PKI files) for the server at :data:`SERVER`."""
    pki = make_test_pki()
    (directory / "ca.crt").write_bytes(certificate_pem(pki.ca.cert))
    (directory / "client.crt").write_bytes(certificate_pem(pki.client.cert))
    key = directory / "client.key"
    key.write_bytes(private_key_pem(pki.client.key))
    key.chmod(0o600)
    conf = directory / "client.conf"
    conf.write_text(f"client\ndev tun\nproto {proto}\nremote {SERVER[0]} {SERVER[1]}\n"
                    "nobind\nca ca.crt\ncert client.crt\nkey client.key\n"
                    "remote-cert-tls server\n" + extra)
    return load_config(conf)


def ping(seq: int, src: str = CLIENT_TUN_IP, dst: str = SERVER_TUN_IP) -> bytes:
    return build_ipv4(src, dst, 1, build_icmp_echo(ECHO_REQUEST, 7, seq, b"trivpn-in-memory"))


Send = Callable[[list[bytes]], Awaitable[None]]


@dataclass
class PeerSession:
    """One client as the peer sees it."""

    session: Session
    pump: SessionPump
    events: list[ev.Event] = field(default_factory=list)
    tun: list[bytes] = field(default_factory=list)
    echo: list[bytes] = field(default_factory=list)
    """Encrypted echoes waiting to be sent."""


class SessionPeer:
    """The server side, built from sans-IO sessions (the real Server comes over the same
    doubles later)."""

    def __init__(self, config: SessionConfig | None = None,
                 push: tuple[str, ...] = SUBNET_PUSH, *, echo: bool = True) -> None:
        self.config = config or server_config()
        self.push = push
        self.echo = echo
        self.peers: list[PeerSession] = []
        self.silent = False
        """While True the peer reads and discards everything (a hung server)."""

    def _new(self, send: Send) -> PeerSession:
        session = Session(self.config, trio.current_time())
        peer_id = len(self.peers)

        def deliver(packets: list[bytes]) -> None:
            peer.tun += packets
            if self.echo:
                now = trio.current_time()
                peer.echo += [w for p in packets if (w := session.encrypt_data(p, now))]

        def on_event(event: ev.Event) -> None:
            peer.events.append(event)
            if isinstance(event, ev.ClientAuthenticated):
                self.admit(session, peer_id)

        pump = SessionPump(session, send=send, deliver=deliver, on_event=on_event)
        peer = PeerSession(session, pump)
        self.peers.append(peer)
        return peer

    def admit(self, session: Session, peer_id: int) -> None:
        """A client finished its key method: accept it (subclasses may check it)."""
        session.accept(trio.current_time(), self.push, peer_id=peer_id)

    async def _feed(self, peer: PeerSession, packets: list[bytes], send: Send) -> None:
        peer.pump.receive(packets, trio.current_time())
        await peer.pump.flush()
        if peer.echo:
            echoed, peer.echo = peer.echo, []
            await send(echoed)

    async def serve_udp(self, link: DatagramLink) -> None:
        by_addr: dict[Address, PeerSession] = {}
        async with trio.open_nursery() as nursery:
            while True:
                batch = await link.recv_batch()
                if self.silent:
                    continue
                for data, addr in batch:
                    async def send(out: list[bytes], addr: Address = addr) -> None:
                        await link.send_many(out, addr)

                    peer = by_addr.get(addr)
                    if peer is None:
                        peer = by_addr[addr] = self._new(send)
                        nursery.start_soon(peer.pump.run_timers)
                    await self._feed(peer, [data], send)

    async def serve_tcp(self, connections: trio.MemoryReceiveChannel[FramedLink]) -> None:
        async with trio.open_nursery() as nursery:
            async for link in connections:
                nursery.start_soon(self._serve_connection, link)

    async def _serve_connection(self, link: PacketLink) -> None:
        async def send(out: list[bytes]) -> None:
            await link.send_packets(out)
        peer = self._new(send)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.pump.run_timers)
            try:
                while True:
                    packets = await link.recv_packets()
                    if not self.silent:
                        await self._feed(peer, packets, send)
            except (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            nursery.cancel_scope.cancel()
        await link.aclose()

    def established(self) -> int:
        return sum(1 for p in self.peers if p.session.established)


class ClientLog:
    """The client's JSON log lines, parsed."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        configure_logging(fmt="json", stream=self.stream)

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def names(self) -> list[str]:
        return [str(e["event"]) for e in self.events()]

    def count(self, name: str) -> int:
        return self.names().count(name)


@dataclass
class Lab:
    """A client, the peer, the network; run with :meth:`running`."""

    options: Options
    network: MemoryNetwork
    host: MemoryClientHost
    peer: SessionPeer
    log: ClientLog
    client: Client

    @classmethod
    def create(cls, directory: Path, extra: str = "", *, proto: str = "udp",
               conditions: Conditions | None = None, seed: int = 1,
               peer: SessionPeer | None = None, network: MemoryNetwork | None = None,
               address: str = "198.18.0.2") -> Lab:
        """A client in ``directory``; pass ``peer`` and ``network`` of another lab to add a
        client to its server (then :meth:`start` it with ``serve=False``)."""
        options = write_client_conf(directory, extra, proto)
        network = network or MemoryNetwork(conditions, seed=seed)
        host = MemoryClientHost(network, address=address)
        log = ClientLog()
        config = session_config(options, unix_time_offset=0.0)
        client = Client(options, get_logger(), config, None, host=host)
        return cls(options, network, host, peer or SessionPeer(), log, client)

    async def start(self, nursery: trio.Nursery, *, serve: bool = True) -> None:
        if serve and self.options.remotes[0].proto == "tcp-client":
            send, receive = trio.open_memory_channel[FramedLink](8)
            self.host.tcp_accept[SERVER] = send
            nursery.start_soon(self.peer.serve_tcp, receive)
        elif serve:
            nursery.start_soon(self.peer.serve_udp, self.network.bind(*SERVER))
        self.exit_code: int | None = None

        async def run_client() -> None:
            self.exit_code = await self.client.run()
        nursery.start_soon(run_client)

    async def wait_for(self, done: Callable[[], bool], seconds: float) -> None:
        """Poll ``done`` on the trio clock; fail after ``seconds`` of (virtual) time."""
        with trio.fail_after(seconds):
            while not done():
                await trio.sleep(0.05)

    def tunnel_up(self) -> bool:
        return bool(self.host.tunnels) and self.client.tunnel is not None

    async def roundtrip(self, seq: int, seconds: float = 5.0) -> bytes:
        """Inject a ping into the client's tunnel; the echo the peer sends back."""
        tunnel = self.host.tunnels[-1]
        packet = ping(seq)
        tunnel.device.inject(packet)
        with trio.fail_after(seconds):
            while True:
                got = await tunnel.device.delivered()
                if got == packet:
                    return got

    async def stop(self) -> int | None:
        self.client.stop.set()
        with trio.fail_after(10):
            while self.exit_code is None:
                await trio.sleep(0.05)
        return self.exit_code
