"""A real trivpn server and real trivpn clients, all in memory, on trio's clock.

The :class:`~trivpn.runtime.server.Server` runs over a
:class:`~trivpn.runtime.memory.MemoryServerHost`, each :class:`~trivpn.runtime.client.Client`
over a :class:`~trivpn.runtime.memory.MemoryClientHost`, all on one
:class:`~trivpn.runtime.memory.MemoryNetwork`. Both sides log JSON lines into one
:class:`~tests.runtime.memorykit.ClientLog`; server lines carry ``side="server"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from tests.protocol.sessionkit import make_test_pki
from tests.runtime.memorykit import SERVER, ClientLog, ping
from trivpn.config import Options, load_config
from trivpn.logging import get_logger
from trivpn.pki.certs import Credential, certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.runtime.client import Client
from trivpn.runtime.memory import (
    Conditions,
    MemoryClientHost,
    MemoryNetwork,
    MemoryServerHost,
    MemoryTunnel,
)
from trivpn.runtime.server import Server
from trivpn.sessionsetup import session_config

SERVER_TUN_IP = "198.18.8.1"


def _write_key(path: Path, cred: Credential) -> None:
    path.write_bytes(private_key_pem(cred.key))
    path.chmod(0o600)


def write_server_conf(directory: Path, extra: str = "", proto: str = "udp") -> Options:
    """A ``mode server`` config (subnet topology, ``keepalive 10 60``) listening on
    :data:`~tests.runtime.memorykit.SERVER`'s port."""
    pki = make_test_pki()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(certificate_pem(pki.ca.cert))
    (directory / "server.crt").write_bytes(certificate_pem(pki.server.cert))
    _write_key(directory / "server.key", pki.server)
    conf = directory / "server.conf"
    conf.write_text(f"dev tun\nproto {proto}\nport {SERVER[1]}\nca ca.crt\ncert server.crt\n"
                    "key server.key\ndh none\nserver 198.18.8.0 255.255.255.0\n"
                    "topology subnet\nkeepalive 10 60\nremote-cert-tls client\n" + extra)
    return load_config(conf)


_creds: dict[str, Credential] = {}


def client_credential(name: str) -> Credential:
    """A client certificate for common name ``name`` from the test CA (made once)."""
    if name not in _creds:
        _creds[name] = issue_cert(make_test_pki().ca, "client", name)
    return _creds[name]


def write_client_conf(directory: Path, name: str, extra: str = "",
                      proto: str = "udp", lport: int | None = None) -> Options:
    """A client config for common name ``name``; ``lport``: bound to that port (else
    ``nobind``)."""
    pki = make_test_pki()
    cred = client_credential(name)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(certificate_pem(pki.ca.cert))
    (directory / "client.crt").write_bytes(certificate_pem(cred.cert))
    _write_key(directory / "client.key", cred)
    conf = directory / "client.conf"
    conf.write_text(f"client\ndev tun\nproto {proto}\nremote {SERVER[0]} {SERVER[1]}\n"
                    + (f"lport {lport}\n" if lport else "nobind\n")
                    + "ca ca.crt\ncert client.crt\nkey client.key\n"
                    "remote-cert-tls server\n" + extra)
    return load_config(conf)


@dataclass
class LabClient:
    """One client of the lab."""

    name: str
    host: MemoryClientHost
    client: Client
    exit_code: int | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def tunnel(self) -> MemoryTunnel:
        return self.host.tunnels[-1]

    def tunnel_up(self) -> bool:
        return bool(self.host.tunnels) and self.client.tunnel is not None

    @property
    def vpn_ip(self) -> str:
        return str(self.tunnel.plan.addresses[0].address)


class ServerLab:
    """A server and its clients on one memory network (``async with`` runs it all)."""

    def __init__(self, directory: Path, server_extra: str = "", *, proto: str = "udp",
                 conditions: Conditions | None = None, seed: int = 1) -> None:
        self.directory = directory
        self.proto = proto
        self.server_extra = server_extra
        self.network = MemoryNetwork(conditions, seed=seed)
        self.log = ClientLog()
        self.server_host = MemoryServerHost(self.network)
        self.server: Server | None = None
        self.server_exit: int | None = None
        self._server_done = trio.Event()
        self.clients: list[LabClient] = []
        self._nursery: trio.Nursery | None = None

    async def __aenter__(self) -> ServerLab:
        self._scope = trio.open_nursery()
        self._nursery = await self._scope.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._scope.__aexit__(*exc)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the server

    def start_server(self) -> Server:
        """A new server process (a fresh :class:`Server` on the same host and network)."""
        assert self._nursery is not None
        options = write_server_conf(self.directory / "server", self.server_extra,
                                    "udp" if self.proto == "udp" else "tcp-server")
        server = self.server = Server(options, get_logger().bind(side="server"),
                                      host=self.server_host)
        self.server_exit = None
        done = self._server_done = trio.Event()

        async def run() -> None:
            self.server_exit = await server.run()
            done.set()
        self._nursery.start_soon(run)
        return server

    async def stop_server(self) -> int | None:
        assert self.server is not None
        self.server.stop.set()
        with trio.fail_after(10):
            await self._server_done.wait()
        return self.server_exit

    # ------------------------------------------------------------------ clients

    def start_client(self, name: str, extra: str = "", *, address: str | None = None,
                     index: int | None = None, lport: int | None = None) -> LabClient:
        """A client with common name ``name`` at ``address`` (default: one per client),
        bound to ``lport`` if given."""
        assert self._nursery is not None
        n = len(self.clients) if index is None else index
        proto = "udp" if self.proto == "udp" else "tcp-client"
        options = write_client_conf(self.directory / f"client{len(self.clients)}", name,
                                    extra, proto, lport)
        host = MemoryClientHost(self.network, address=address or f"198.18.0.{10 + n}")
        config = session_config(options, unix_time_offset=0.0)
        client = Client(options, get_logger().bind(side="client", cn=name), config, None,
                        host=host)
        lab_client = LabClient(name, host, client)
        self.clients.append(lab_client)

        async def run() -> None:
            lab_client.exit_code = await client.run()
            lab_client.done.set()
        self._nursery.start_soon(run)
        return lab_client

    async def stop_client(self, c: LabClient) -> int | None:
        c.client.stop.set()
        with trio.fail_after(10):
            await c.done.wait()
        return c.exit_code

    # ------------------------------------------------------------------ observing

    async def wait_for(self, done: Callable[[], bool], seconds: float) -> None:
        """Poll ``done`` on the trio clock; fail after ``seconds`` of (virtual) time."""
        with trio.fail_after(seconds):
            while not done():
                await trio.sleep(0.05)

    def server_events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.log.events() if e["event"] == name and e.get("side") == "server"]

    def client_events(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.log.events() if e["event"] == name and e.get("side") == "client"]

    @property
    def server_device(self) -> MemoryTunnel:
        return self.server_host.tunnels[-1]

    async def client_to_server(self, c: LabClient, seq: int, seconds: float = 5.0) -> bytes:
        """A ping from ``c``'s tunnel; what reaches the server's device."""
        packet = ping(seq, src=c.vpn_ip, dst=SERVER_TUN_IP)
        c.tunnel.device.inject(packet)
        return await _until(self.server_device.device.delivered, packet, seconds)

    async def server_to_client(self, c: LabClient, seq: int, seconds: float = 5.0) -> bytes:
        """A ping the server's host routes into its tunnel for ``c``; what ``c`` delivers."""
        packet = ping(seq, src=SERVER_TUN_IP, dst=c.vpn_ip)
        self.server_device.device.inject(packet)
        return await _until(c.tunnel.device.delivered, packet, seconds)

    async def client_to_client(self, a: LabClient, b: LabClient, seq: int,
                               seconds: float = 5.0) -> bytes:
        packet = ping(seq, src=a.vpn_ip, dst=b.vpn_ip)
        a.tunnel.device.inject(packet)
        return await _until(b.tunnel.device.delivered, packet, seconds)


async def _until(receive: Callable[[], Awaitable[bytes]], packet: bytes,
                 seconds: float) -> bytes:
    with trio.fail_after(seconds):
        while True:
            got = await receive()
            if got == packet:
                return packet
