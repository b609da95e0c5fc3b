"""Operator tools for a running tunnel: status file, management interface, metrics endpoint.

:class:`OperatorTools` is created by ``trivpn run`` (with the :class:`~trivpn.runtime.stats.
LogHistory` it installed in the logging chain), observes the runtime's event bus through its
:class:`~trivpn.runtime.stats.OperatorState` (:meth:`OperatorTools.attach`), and is started by
the runtime in its nursery with :meth:`OperatorTools.run_server` or
:meth:`OperatorTools.run_client`. The views read a runtime through the small Protocols below
(:class:`ServedPeers`, :class:`ClientTunnel`), never its class: this module imports neither the
client nor the server.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import trio
from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.events import EventBus, Observer
from trivpn.runtime.management import ManagementServer, parse_number, read_password
from trivpn.runtime.metrics import MetricsServer, MetricsSnapshot, PeerTraffic
from trivpn.runtime.peers import PeerTable
from trivpn.runtime.privileges import resolve_identity
from trivpn.runtime.serverauth import ClientAuthBroker
from trivpn.runtime.serverpeer import Peer
from trivpn.runtime.stats import LogHistory, OperatorState, Traffic
from trivpn.runtime.status import (
    ClientRow,
    ClientStatus,
    ServerStatus,
    StatusFile,
    client_status_lines,
    server_status_lines,
    write_atomically,
)

if TYPE_CHECKING:
    from trivpn.protocol.session import SessionConfig
    from trivpn.protocol.tls import CrlCheck

Log = structlog.stdlib.BoundLogger


class DropTotals(Protocol):
    """Dropped packets counted by reason."""

    @property
    def totals(self) -> Mapping[str, int]: ...


class ServedPeers(Protocol):
    """What the operator tools read of a server, and the one thing they do (kill a peer)."""

    @property
    def options(self) -> Options: ...
    @property
    def log(self) -> Log: ...
    @property
    def tap(self) -> bool:
        """A TAP server (routes by MAC address)."""
        ...
    @property
    def table(self) -> PeerTable[Peer]: ...
    @property
    def connected(self) -> tuple[Peer, ...]: ...
    @property
    def preauth(self) -> Sized:
        """Clients that have not authenticated yet."""
        ...
    @property
    def drops(self) -> DropTotals: ...
    @property
    def unix_offset(self) -> float:
        """Unix time minus trio's clock."""
        ...
    @property
    def config(self) -> SessionConfig | None:
        """The sessions' configuration (its CRL check feeds the expiry gauge)."""
        ...

    def kill_peer(self, peer: Peer, linger: float) -> None: ...


class ClientTunnel(Protocol):
    """What the operator tools read of a client."""

    @property
    def options(self) -> Options: ...
    @property
    def config(self) -> SessionConfig:
        """The session configuration (its CRL check feeds the expiry gauge)."""
        ...
    @property
    def log(self) -> Log: ...
    @property
    def traffic(self) -> Traffic: ...
    @property
    def drops(self) -> DropTotals: ...

KILL_LINGER = 1.0
"""How long a killed client is kept so the RESTART message reaches it (and is acked)."""


class OperatorError(RuntimeSetupError):
    """The management interface or the metrics endpoint cannot start."""


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def certificate_expiry(options: Options) -> dict[str, float]:
    """notAfter (unix time) of our own certificate ("cert") and of the earliest-expiring ``ca``
    certificate ("ca"), read once at start like the certificates themselves. A file that cannot
    be parsed here is left out: the TLS setup reports it."""
    found: dict[str, float] = {}
    for label, source in (("cert", options.cert), ("ca", options.ca)):
        if source is None:
            continue
        try:
            certs = x509.load_pem_x509_certificates(source.read_text().encode())
        except (ConfigError, OSError, ValueError):
            continue
        if certs:
            chosen = certs[:1] if label == "cert" else certs
            found[label] = min(c.not_valid_after_utc for c in chosen).timestamp()
    return found


def crl_next_update(config: SessionConfig | None) -> float | None:
    """The earliest nextUpdate (unix time) of the crl-verify FILE's CRLs (re-read when the
    file changed, as at a handshake)."""
    return crl_check_next_update(config.verification.crl if config is not None else None)


def crl_check_next_update(crl: CrlCheck | None) -> float | None:
    if crl is None or crl.lists is None:
        return None
    times = [c.next_update_utc.timestamp() for c in crl.lists().crls
             if c.next_update_utc is not None]
    return min(times) if times else None


class ServerView:
    """Status, kill, byte counts and metrics of a server."""

    is_server = True

    def __init__(self, server: ServedPeers, state: OperatorState) -> None:
        self.server = server
        self.state = state
        self.cert_expiry = certificate_expiry(server.options)
        self._cids: dict[int, tuple[int, Peer]] = {}
        self._next_cid = 0
        self._retired = Traffic()

    def _peers(self) -> list[tuple[int, Peer]]:
        """Live peers with their client ids; folds departed peers' counters into totals."""
        live = {id(peer): peer for peer in self.server.table}
        for key, (_, peer) in list(self._cids.items()):
            if key not in live or live[key] is not peer:
                r = self._retired
                r.bytes_in += peer.rx_bytes
                r.bytes_out += peer.tx_bytes
                r.packets_in += peer.rx_packets
                r.packets_out += peer.tx_packets
                del self._cids[key]
        out = []
        for key, peer in live.items():
            if key not in self._cids:
                self._cids[key] = (self._next_cid, peer)
                self._next_cid += 1
            out.append((self._cids[key][0], peer))
        out.sort(key=lambda item: item[0])
        return out

    def status(self, now: float) -> ServerStatus:
        server = self.server
        rows: dict[int, ClientRow] = {}
        for cid, peer in self._peers():
            rows[id(peer)] = ClientRow(
                common_name=peer.common_name, real_address=peer.label,
                virtual_address=peer.vpn_ip if peer.connected else None,
                virtual_ipv6=peer.vpn_ip6 if peer.connected else None,
                bytes_received=peer.rx_bytes, bytes_sent=peer.tx_bytes,
                connected_since=int(peer.created + server.unix_offset), client_id=cid,
                peer_id=peer.peer_id, cipher=peer.session.cipher, last_ref=int(now))
        routes: list[tuple[str, ClientRow]] = []
        if server.tap:
            for mac, peer in server.table.by_mac.items():
                if id(peer) in rows:
                    routes.append((_mac(mac), rows[id(peer)]))
        else:
            for peer in server.connected:
                if peer.vpn_ip is not None and id(peer) in rows:
                    routes.append((peer.vpn_ip, rows[id(peer)]))
            # iroutes of client-config-dir files, as NET/BITS
            for (network, bits), peer in server.table.iroutes.items():
                if id(peer) in rows:
                    routes.append((f"{ipaddress.IPv4Address(network)}/{bits}", rows[id(peer)]))
            for peer in server.connected:  # its IPv6 address is a route of its own, too
                if peer.vpn_ip6 is not None and id(peer) in rows:
                    routes.append((peer.vpn_ip6, rows[id(peer)]))
            for (network, bits), peer in server.table.iroutes6.items():  # iroute-ipv6
                if id(peer) in rows:
                    routes.append((f"{ipaddress.IPv6Address(network)}/{bits}", rows[id(peer)]))
        return ServerStatus(tuple(rows.values()), tuple(routes))

    def status_lines(self, version: int) -> list[str]:
        now = time.time()
        return server_status_lines(self.status(now), version, now)

    def bytecount_lines(self) -> list[str]:
        return [f">BYTECOUNT_CLI:{cid},{peer.rx_bytes},{peer.tx_bytes}"
                for cid, peer in self._peers() if peer.connected]

    def kill(self, target: str) -> str:
        host, sep, port = target.partition(":")
        if sep and host and port:
            try:
                address = str(ipaddress.IPv4Address(host))
            except ValueError:
                return f"ERROR: error parsing IP address: {host}"
            number = parse_number(port)
            if number is None or not 0 < number < 65536:
                return f"ERROR: port number is out of range: {port}"
            victims = [p for p in self.server.table
                       if str(p.address[0]) == address and int(p.address[1]) == number]
            for peer in victims:
                self.server.kill_peer(peer, KILL_LINGER)
            if victims:
                return f"SUCCESS: {len(victims)} client(s) at address {address}:{port} killed"
            return f"ERROR: client at address {address}:{port} not found"
        if not host:
            return "ERROR: kill parse"
        victims = [p for p in self.server.table if p.common_name == host]
        for peer in victims:
            self.server.kill_peer(peer, KILL_LINGER)
        if victims:
            return f"SUCCESS: common name '{host}' found, {len(victims)} client(s) killed"
        return f"ERROR: common name '{host}' not found"

    def metrics(self, start_time: float) -> MetricsSnapshot:
        peers = self._peers()
        total = Traffic(self._retired.bytes_in, self._retired.bytes_out,
                        self._retired.packets_in, self._retired.packets_out)
        traffic = []
        for _, p in peers:
            total.bytes_in += p.rx_bytes
            total.bytes_out += p.tx_bytes
            total.packets_in += p.rx_packets
            total.packets_out += p.tx_packets
            if p.connected:
                traffic.append(PeerTraffic(p.common_name or "", p.peer_id, p.rx_bytes,
                                           p.tx_bytes, p.rx_packets, p.tx_packets))
        c = self.state.counts
        drops = Counter(self.server.drops.totals)
        return MetricsSnapshot(
            role="server", start_time=start_time, bytes_in=total.bytes_in,
            bytes_out=total.bytes_out, packets_in=total.packets_in,
            packets_out=total.packets_out, connected=len(self.server.connected),
            unauthenticated=len(self.server.preauth),
            handshakes=c.handshakes, renegotiations=c.renegotiations,
            reconnects=c.reconnects, handshake_failures=dict(c.handshake_failures),
            drops=dict(drops), peers=tuple(traffic), cert_expiry=self.cert_expiry,
            crl_next_update=crl_next_update(self.server.config))


class ClientView:
    """Status, byte counts and metrics of a client."""

    is_server = False

    def __init__(self, client: ClientTunnel, state: OperatorState) -> None:
        self.client = client
        self.state = state
        self.cert_expiry = certificate_expiry(client.options)

    def status_lines(self, version: int) -> list[str]:
        t = self.client.traffic
        return client_status_lines(ClientStatus(t.tun_read_bytes, t.tun_write_bytes,
                                                t.bytes_in, t.bytes_out, t.bytes_in),
                                   time.time())

    def bytecount_lines(self) -> list[str]:
        t = self.client.traffic
        return [f">BYTECOUNT:{t.bytes_in},{t.bytes_out}"]

    def kill(self, target: str) -> str:
        return "ERROR: The 'kill' command is not supported by the current daemon mode"

    def metrics(self, start_time: float) -> MetricsSnapshot:
        t = self.client.traffic
        c = self.state.counts
        up = self.state.state.name == "CONNECTED"
        peers = (PeerTraffic(self.state.server_cn or "", 0, t.bytes_in, t.bytes_out,
                             t.packets_in, t.packets_out),) if up else ()
        return MetricsSnapshot(
            role="client", start_time=start_time, bytes_in=t.bytes_in, bytes_out=t.bytes_out,
            packets_in=t.packets_in, packets_out=t.packets_out, connected=int(up),
            handshakes=c.handshakes, renegotiations=c.renegotiations,
            reconnects=c.reconnects, handshake_failures=dict(c.handshake_failures),
            drops=dict(self.client.drops.totals), peers=peers, cert_expiry=self.cert_expiry,
            crl_next_update=crl_next_update(self.client.config))


View = ServerView | ClientView


class OperatorTools:
    """Starts the status writer, the management interface and the metrics server.

    :meth:`open_server` / :meth:`open_client` read the management password file and bind the
    management and metrics sockets; the runtimes call them before privileges are dropped (as
    OpenVPN does), so ``user nobody`` neither hides a root-only password file nor a port below
    1024. A failure there is a startup error (:class:`OperatorError`): nothing stays silently
    off. :meth:`run_server` / :meth:`run_client` then serve.
    """

    def __init__(self, history: LogHistory | None = None, *,
                 metrics_listen: tuple[str, int] | None = None,
                 start_time: float | None = None, status_path: Path | None = None,
                 observers: Sequence[Observer] = ()) -> None:
        self.history = history if history is not None else LogHistory()
        self.observers = tuple(observers)  # more event observers (e.g. systemd's status)
        self.state = OperatorState()
        # Opened now, while still privileged (see StatusFile); errors are logged by the writer.
        self.status_file: StatusFile | None = None
        self.status_open_error: OSError | None = None
        if status_path is not None:
            try:
                self.status_file = StatusFile(status_path)
            except OSError as exc:
                self.status_open_error = exc
        self.metrics_listen = metrics_listen
        self.start_time = time.time() if start_time is None else start_time
        self.view: View | None = None
        self.management: ManagementServer | None = None
        self.metrics: MetricsServer | None = None

    def attach(self, events: EventBus) -> None:
        """Observe a runtime's events (call before it runs: its first events set the state)."""
        events.subscribe(self.state)
        for observer in self.observers:
            events.subscribe(observer)

    async def open_server(self, server: ServedPeers) -> None:
        """Read the password file and bind the sockets (before privileges are dropped)."""
        if self.view is None:
            self.view = ServerView(server, self.state)
            broker = getattr(server, "client_auth", None)  # management-client-auth
            await self._open(self.view, server.options, server.log,
                             broker if isinstance(broker, ClientAuthBroker) else None)

    async def open_client(self, client: ClientTunnel) -> None:
        if self.view is None:
            self.view = ClientView(client, self.state)
            await self._open(self.view, client.options, client.log)

    async def run_server(self, server: ServedPeers) -> None:
        await self.open_server(server)
        await self._run(server.options, server.log)

    async def run_client(self, client: ClientTunnel) -> None:
        await self.open_client(client)
        await self._run(client.options, client.log)

    async def _open(self, view: View, options: Options, log: Log,
                    client_auth: ClientAuthBroker | None = None) -> None:
        m = options.management
        if m is not None:
            password = None
            if m.password_file is not None:
                pwpath = Path(m.password_file)
                if not pwpath.is_absolute():
                    pwpath = options.base_dir / pwpath
                try:
                    password = read_password(pwpath)
                except OSError as exc:
                    raise OperatorError("cannot read the management password file",
                                        str(pwpath), errno=exc.errno) from exc
            identity = None
            if options.management_client_user or options.management_client_group:
                identity = resolve_identity(options.management_client_user,
                                            options.management_client_group)
            self.management = ManagementServer(
                view, self.history, self.state, log, host=m.address, port=m.port, unix=m.unix,
                password=password, status_version=options.status_version,
                hold=options.management_hold,
                connect_out=options.management_client, up_down=options.management_up_down,
                client_uid=identity.uid if identity is not None else None,
                client_gid=(identity.gid if identity is not None
                            and options.management_client_group is not None else None),
                client_auth=client_auth)
            try:
                await self.management.open()
            except OSError as exc:
                what = ("cannot connect to the management client ('management-client')"
                        if options.management_client
                        else "cannot start the management interface")
                raise OperatorError(what, self.management.where, errno=exc.errno) from exc
        if self.metrics_listen is not None:
            host, port = self.metrics_listen
            self.metrics = MetricsServer(host, port, lambda: view.metrics(self.start_time), log)
            try:
                await self.metrics.open()
            except OSError as exc:
                raise OperatorError("cannot start the metrics endpoint", f"{host}:{port}",
                                    errno=exc.errno) from exc

    async def _run(self, options: Options, log: Log) -> None:
        view = self.view
        assert view is not None
        async with trio.open_nursery() as nursery:
            if options.status is not None:
                nursery.start_soon(self._status_writer, view, options, log)
            if self.management is not None:
                await nursery.start(self.management.serve)
            if self.metrics is not None:
                await nursery.start(self.metrics.serve)

    async def _status_writer(self, view: View, options: Options, log: Log) -> None:
        status = options.status
        assert status is not None
        failed = False

        if self.status_open_error is not None:
            log.warning("status_write_failed", path=str(status.path),
                        error=str(self.status_open_error))
            failed = True

        def write() -> None:
            nonlocal failed
            try:
                lines = view.status_lines(options.status_version)
                if self.status_file is not None:
                    self.status_file.write(lines)
                else:
                    write_atomically(status.path, lines)
                failed = False
            except OSError as exc:
                if not failed:
                    log.warning("status_write_failed", path=str(status.path), error=str(exc))
                failed = True

        try:
            while True:
                write()
                await trio.sleep(max(status.seconds, 1))
        finally:
            write()  # at exit, like OpenVPN's last update


def describe(tools: OperatorTools) -> dict[str, Any]:
    """Where the tools listen (for tests and the startup log)."""
    return {"management_port": tools.management.bound_port if tools.management else None,
            "metrics_port": tools.metrics.bound_port if tools.metrics else None}
