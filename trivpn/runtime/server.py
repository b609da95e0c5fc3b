"""``trivpn run`` for ``mode server`` configs: one device, one link socket, many peers.

Tasks (one nursery for the server, a child nursery for the peers):

- **data path** (UDP): one task for both directions, waiting on the socket and the device at
  once (:mod:`trivpn.runtime.readiness`). It demultiplexes every datagram by source address.
  Data packets of a known peer go straight to :meth:`Session.decrypt_data` and are routed
  (hot path: no logging, no per-packet allocation beyond the packet itself). P_DATA_V2 from an
  unknown address whose peer-id authenticates moves that peer to the new address (float). From
  unknown addresses only the client's hard reset is answered, statelessly with an HMAC cookie
  session id (digest §10.1); the client's next packet proves the cookie and only then creates a
  session. All else is dropped and counted.
- **TCP acceptor** (TCP): a new connection is an *opening* until its first packet, which must
  be a client hard reset that authenticates (tls-auth / tls-crypt) and arrive within
  :func:`~trivpn.protocol.admission.first_packet_timeout`; anything else closes it at once.
  ``connect-freq-initial`` counts these resets as it counts UDP ones (OpenVPN 2.6 applies it to
  UDP only; ``connect-freq`` with TCP is a config error there and here). Only then is a peer
  created; its reader and writer run as that peer's tasks.
- **pre-authentication quota**: openings and sessions that have not authenticated are counted
  in a :class:`~trivpn.protocol.admission.PreauthLedger`, in total and per source address,
  apart from ``max-clients`` (docs/server-admission.md).
- **device → peers**: packets from the TUN/TAP device go to the peer owning the destination
  (:mod:`trivpn.runtime.peers`); UDP: in the data path task, TCP: a device reader task.
- **per-peer timer task**: runs the session's timers (retransmits, hand-window, keepalive,
  renegotiation). Any failure of one peer removes that peer only.
- **housekeeping**: aggregated ``packet_dropped`` log lines and the ``ifconfig-pool-persist`` file.

On SIGINT/SIGTERM the server sends ``RESTART`` to every client when ``explicit-exit-notify`` is
set, then tears everything down and returns 0.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import structlog
import trio

from trivpn.config import ConfigError, Options
from trivpn.config.derive import PoolEntry, address_pool, server_push_options
from trivpn.logging import DropAggregator, RateLimitedLog
from trivpn.protocol import events as ev
from trivpn.protocol.admission import (
    MAX_FIRST_PACKET,
    PreauthLedger,
    PreauthLimits,
    first_packet_timeout,
    peek_client_reset,
)
from trivpn.protocol.cookie import (
    cookie_matches,
    cookie_session_id,
    stateless_server_reset,
    timeslot,
)
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.mss import IPPROTO_TCP, clamp_mss
from trivpn.protocol.packets import Opcode, decode_control
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tls import RevocationLists, revoked_serials
from trivpn.runtime.datapath import mss_limit_for
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import (
    Address,
    LinkClosed,
    TcpLink,
    TcpLinkListener,
    UdpLink,
    open_tcp_listener,
)
from trivpn.runtime.operator import OperatorTools
from trivpn.runtime.peers import PeerTable, Verdict
from trivpn.runtime.pool import (
    PoolAllocator,
    persist_lines,
    read_persist_file,
    write_persist_file,
)
from trivpn.runtime.privileges import drop_privileges, resolve_identity
from trivpn.runtime.ratelimit import WindowLimiter
from trivpn.runtime.readiness import ReadySet
from trivpn.runtime.setup import session_config
from trivpn.runtime.status import StatusFile
from trivpn.runtime.tunnel import RouteRequest, Tunnel, plan_tunnel

Log = structlog.stdlib.BoundLogger

_DATA_V1 = int(Opcode.DATA_V1)
_DATA_V2 = int(Opcode.DATA_V2)
_RESET_CLIENT_V2 = int(Opcode.CONTROL_HARD_RESET_CLIENT_V2)
_CONTROL_V1 = int(Opcode.CONTROL_V1)
_ACK_V1 = int(Opcode.ACK_V1)

HOUSEKEEPING_INTERVAL = 1.0
REVOKED_LINGER = 1.0  # --drop-revoked: seconds between RESTART and removal, as for kill
DROP_LOG_INTERVAL = 5.0
ERROR_LOG_INTERVAL = 60.0
REJECT_LINGER = 5.0  # keep a rejected client long enough to deliver AUTH_FAILED reliably
TCP_SEND_QUEUE = 1024
BATCH = 64


class Peer:
    """One client: its session, where it is, what it was given."""

    __slots__ = ("address", "cancel_scope", "cert_serial", "common_name", "connected",
                 "created", "entry", "label", "mac_refused", "peer_id", "preauth", "remove_at",
                 "remove_reason", "removed", "reset_counted", "rx_bytes", "rx_packets", "session",
                 "sleeping_until", "tcp", "tcp_recv", "tcp_send", "tx_bytes", "tx_packets",
                 "vaddr", "wakeup")

    def __init__(self, session: Session, address: Address, peer_id: int, now: float,
                 tcp: TcpLink | None = None) -> None:
        self.session = session
        self.address = address
        self.peer_id = peer_id
        self.created = now
        self.tcp = tcp
        self.tcp_send: trio.MemorySendChannel[bytes] | None = None
        self.tcp_recv: trio.MemoryReceiveChannel[bytes] | None = None
        if tcp is not None:
            self.tcp_send, self.tcp_recv = trio.open_memory_channel[bytes](TCP_SEND_QUEUE)
        self.label = format_address(address)
        # its entry in the server's pre-authentication ledger until it authenticates
        self.preauth: Pending | None = None
        # TCP: its reset counts against connect-freq-initial until the client goes on
        self.reset_counted = False
        self.common_name: str | None = None
        self.cert_serial: int | None = None  # of the certificate it authenticated with
        self.entry: PoolEntry | None = None
        self.vaddr: bytes | None = None
        self.connected = False
        self.removed = False
        self.mac_refused: tuple[str, ...] = ()  # TAP: reasons mac_refused was logged for
        self.remove_at: float | None = None
        self.remove_reason = "handshake_timeout"
        self.cancel_scope = trio.CancelScope()
        self.wakeup = trio.Event()
        # when the timer task sleeps, the deadline it sleeps until (-inf while it runs)
        self.sleeping_until = -math.inf
        # link traffic (status file, management, metrics)
        self.rx_bytes = self.rx_packets = self.tx_bytes = self.tx_packets = 0

    def __repr__(self) -> str:
        return f"Peer({self.label}, peer_id={self.peer_id}, cn={self.common_name!r})"

    @property
    def vpn_ip(self) -> str | None:
        return str(self.entry.local) if self.entry is not None else None


class Pending:
    """A client that has not authenticated: the key of its pre-authentication ledger entry.
    For a TCP connection that has sent nothing valid yet (an opening), also its link and the
    cancel scope that evicts it."""

    __slots__ = ("address", "cancel_scope", "evicted", "link")

    def __init__(self, address: Address, link: TcpLink | None = None) -> None:
        self.address = address
        self.link = link
        self.cancel_scope = trio.CancelScope()
        self.evicted = False


def _next_deadline(peer: Peer) -> float:
    """The earliest of the session's next timer and the peer's removal time (inf: none)."""
    deadline = peer.session.next_timer()
    if deadline is None:
        deadline = math.inf
    if peer.remove_at is not None and peer.remove_at < deadline:
        deadline = peer.remove_at
    return deadline


def format_address(address: Address) -> str:
    """``ip:port``, ``[v6]:port``; a scoped IPv6 source (link-local, 4-tuple sockaddr with a
    scope id; recvfrom leaves ``%zone`` out of the host) as ``[fe80::1%eth0]:port``."""
    host, port = str(address[0]), address[1]
    if ":" not in host:
        return f"{host}:{port}"
    if len(address) > 3 and address[3] and "%" not in host:
        try:
            zone = socket.if_indextoname(int(address[3]))
        except OSError:
            zone = str(address[3])
        host = f"{host}%{zone}"
    return f"[{host}]:{port}"


def address_bytes(address: Address) -> bytes:
    """The client's socket address as the cookie HMAC input: packed IP || port, and for an
    IPv6 source the scope id (a link-local ``fe80::1%eth0`` from a 4-tuple sockaddr)."""
    host, port = str(address[0]), int(address[1])
    if ":" not in host:
        return socket.inet_pton(socket.AF_INET, host) + port.to_bytes(2, "big")
    host = host.partition("%")[0]
    scope = int(address[3]) if len(address) > 3 else 0
    return (socket.inet_pton(socket.AF_INET6, host) + port.to_bytes(2, "big")
            + scope.to_bytes(4, "big"))


class Server:
    """The server runtime. Construct with parsed options, then ``await run()``."""

    def __init__(self, options: Options, log: Log) -> None:
        if options.server is None:
            raise ConfigError("trivpn's server mode needs 'server NETWORK NETMASK' "
                              "(ifconfig-pool without it is not supported)", options.config_path)
        pool = address_pool(options)
        if pool is None:
            raise ConfigError("'server ... nopool' is not supported: trivpn assigns client "
                              "addresses from the server pool only", options.config_path)
        self.options = options
        self.log = log
        self.tap = options.dev_type == "tap"
        self.client_to_client = options.client_to_client
        # TCP SYNs through the tunnel are clamped to this MSS (mssfix; TUN mode only)
        self.mss = None if self.tap else mss_limit_for(
            options, options.data_ciphers, "udp" if options.proto == "udp" else "tcp")
        self.max_clients = options.max_clients
        self.allocator = PoolAllocator(pool, duplicate_cn=options.duplicate_cn)
        # pre-authentication quota, separate from max-clients (docs/server-admission.md)
        self.preauth: PreauthLedger[Pending] = PreauthLedger(
            PreauthLimits.for_max_clients(options.max_clients))
        self._preauth_logged_at = -math.inf
        self._preauth_refusals = 0
        self.push = server_push_options(options)
        self.table: PeerTable[Peer] = PeerTable(options.max_routes_per_client)
        self.connected: tuple[Peer, ...] = ()
        self.drops = DropAggregator(DROP_LOG_INTERVAL)
        # one traceback per kind of bug and minute; the rest is counted (error_repeated)
        self.errors = RateLimitedLog(log, ERROR_LOG_INTERVAL)
        self.counts: Counter[str] = Counter()
        self.secret = os.urandom(32)
        # connect-freq-initial: OpenVPN 2.6 reads a period of 0 as one-second windows
        initial = options.connect_freq_initial
        self.reset_limiter = WindowLimiter(initial.max, max(1, initial.seconds))
        freq = options.connect_freq
        self.connect_limiter = (WindowLimiter(freq.max, freq.seconds) if freq is not None
                                else None)
        self.config: SessionConfig | None = None
        self.unix_offset = 0.0
        self.tunnel: Tunnel | None = None
        self.udp: UdpLink | None = None
        self.listener: TcpLinkListener | None = None
        self._peers_nursery: trio.Nursery | None = None
        self._link_drops_seen = 0
        self._tun_drops_seen = 0
        self.tools: OperatorTools | None = None  # status file, management, metrics
        # trivpn run --drop-revoked: re-check connected clients when the crl-verify file
        # changes (OpenVPN only checks at the next TLS handshake)
        self.drop_revoked = False
        self._crl_seen: RevocationLists | None = None
        self._persist_file: StatusFile | None = None  # opened before a privilege drop

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        o = self.options
        self.unix_offset = time.time() - trio.current_time()
        self.config = session_config(o, unix_time_offset=self.unix_offset)
        self._load_persist(trio.current_time())
        try:
            identity = resolve_identity(o.user, o.group)
            await self._open()
            if self.tools is not None:  # password file and sockets while still privileged
                await self.tools.open_server(self)
            if identity is not None:
                self._open_persist_for_drop()
                drop_privileges(identity)
                self.log.info("privileges_dropped", user=o.user, group=o.group)
        except RuntimeSetupError as exc:
            self.log.error("setup_failed", error=str(exc), what=exc.what, where=exc.where)
            await self._close()
            return 1
        try:
            async with trio.open_nursery() as main:
                async with trio.open_nursery() as peers:
                    self._peers_nursery = peers
                    main.start_soon(self._housekeeping)
                    if self.tools is not None:
                        main.start_soon(self.tools.run_server, self)
                    if self.udp is not None:
                        main.start_soon(self._udp_data_path)
                    else:
                        main.start_soon(self._device_reader)
                        main.start_soon(self._tcp_acceptor)
                    signum = await self._wait_for_signal()
                    self.log.info("signal_received", signal=signal.Signals(signum).name)
                    await self._notify_clients()
                    for peer in self.table:
                        self._remove_peer(peer, "server_exiting")
                    peers.cancel_scope.cancel()
                main.cancel_scope.cancel()
        finally:
            await self._close()
        self.log.info("exiting", status=0)
        return 0

    async def _wait_for_signal(self) -> int:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                return signum
        raise AssertionError("signal receiver ended")  # pragma: no cover

    async def _open(self) -> None:
        o = self.options
        assert o.server is not None
        net = o.server.network
        first = net.network_address + 1
        point_to_point = not self.tap and o.topology in ("net30", "p2p")
        if point_to_point:
            ifconfig = (str(first), str(net.network_address + 2))
            routes = [RouteRequest(str(net.network_address), str(net.netmask))]
        else:
            ifconfig = (str(first), str(net.netmask))
            routes = []
        plan = plan_tunnel(kind=o.dev_type, dev=o.dev, mtu=o.tun_mtu, topology=o.topology,
                           ifconfig=ifconfig, routes=routes)
        self.tunnel = Tunnel.open(plan)
        self.log.info("tun_configured", topology=o.topology, **self.tunnel.describe())
        for failure in self.tunnel.route_failures:
            self.log.warning("route_failed", detail=failure)
        host = o.local or "0.0.0.0"
        port = o.lport
        if o.proto == "udp":
            self.udp = UdpLink.bind(host, port)
            local = self.udp.local_address
        else:
            self.listener = await open_tcp_listener(host, port)
            local = self.listener.local_address
        self.log.info("link_open", proto="udp" if o.proto == "udp" else "tcp-server",
                      local=format_address(local))

    async def _close(self) -> None:
        now = trio.current_time()
        self._write_persist(now)
        if self.udp is not None:
            self.udp.close()
        if self.listener is not None:
            with trio.CancelScope(shield=True):
                await self.listener.aclose()
        if self.tunnel is not None:
            leftovers = self.tunnel.close()
            for item in leftovers:
                self.log.warning("teardown_incomplete", detail=item)
            self.tunnel = None
        self._account(now)
        self.drops.flush(self.log, now)

    async def _notify_clients(self) -> None:
        """explicit-exit-notify on a server: RESTART (or RESTART,[N] for 2) to every client."""
        n = self.options.explicit_exit_notify
        if not n:
            return
        text = "RESTART" if n == 1 else "RESTART,[N]"
        now = trio.current_time()
        told = 0
        for peer in self.connected:
            try:
                peer.session.send_control_message(text, now)
            except ProtocolError:
                continue
            self._drain(peer, now)
            peer.wakeup.set()
            told += 1
        self.log.info("exit_notify_sent", message=text, clients=told)
        if told:
            await trio.sleep(min(float(n), 2.0))  # let retransmits and acks happen

    # ------------------------------------------------------------------ persist file

    def _load_persist(self, now: float) -> None:
        persist = self.options.ifconfig_pool_persist
        if persist is None:
            return
        try:
            associations = read_persist_file(persist.path)
        except OSError as exc:
            self.log.warning("pool_persist_unreadable", path=str(persist.path), error=str(exc))
            return
        applied = self.allocator.load(associations, now, fixed=persist.seconds == 0)
        self.log.info("pool_persist_loaded", path=str(persist.path), entries=applied)

    def _open_persist_for_drop(self) -> None:
        """Before privileges are dropped: open the persist file to rewrite it in place later
        (as OpenVPN does), since an unprivileged process usually cannot create the temporary
        file next to it. A symlink at the path is refused (see StatusFile)."""
        persist = self.options.ifconfig_pool_persist
        if persist is None or persist.seconds == 0:
            return
        try:
            self._persist_file = StatusFile(persist.path)
        except OSError as exc:
            self.log.warning("pool_persist_write_failed", path=str(persist.path),
                             error=str(exc))

    def _write_persist(self, now: float) -> None:
        persist = self.options.ifconfig_pool_persist
        if persist is None or persist.seconds == 0:
            return
        try:
            if self._persist_file is not None:
                self._persist_file.write(persist_lines(self.allocator.associations()))
                return
            write_persist_file(persist.path, self.allocator.associations())
        except OSError as exc:
            self.log.warning("pool_persist_write_failed", path=str(persist.path),
                             error=str(exc))

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        persist = self.options.ifconfig_pool_persist
        next_persist = math.inf
        if persist is not None and persist.seconds > 0:
            next_persist = trio.current_time() + persist.seconds
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            now = trio.current_time()
            self._account(now)
            if self.drops.due(now):
                self.drops.flush(self.log, now)
            self.errors.flush(now)
            if self.drop_revoked:
                self._drop_revoked()
            if now >= next_persist and persist is not None:
                self._write_persist(now)
                next_persist = now + persist.seconds

    def _drop_revoked(self) -> None:
        """When the crl-verify file changed: tell connected clients whose certificate it now
        revokes to restart (their reconnect is refused by crl-verify) and remove them."""
        crl = self.config.verification.crl if self.config is not None else None
        if crl is None or crl.lists is None:
            return
        lists = crl.lists()  # re-reads the file only when its size or mtime changed
        if lists is self._crl_seen:
            return
        self._crl_seen = lists
        revoked = revoked_serials(lists, crl.ca_certs)
        for peer in [p for p in self.connected if p.cert_serial in revoked]:
            self.log.warning("peer_revoked", peer=peer.label, cn=peer.common_name,
                             serial=str(peer.cert_serial), crl=lists.source)
            self.kill_peer(peer, REVOKED_LINGER, reason="revoked")

    def _account(self, now: float) -> None:
        """Move every drop counter into the aggregator."""
        for peer in self.table:
            drops = peer.session.drops
            if drops:
                self.drops.merge(drops)
                drops.clear()
        if self.counts:
            self.drops.merge(self.counts)
            self.counts.clear()
        if self.udp is not None:
            seen = self.udp.counters.tx_dropped
            if seen > self._link_drops_seen:
                self.drops.add("link_send_queue_full", seen - self._link_drops_seen)
            self._link_drops_seen = seen
        if self.tunnel is not None:
            seen = self.tunnel.device.write_drops
            if seen > self._tun_drops_seen:
                self.drops.add("device_write_failed", seen - self._tun_drops_seen)
            self._tun_drops_seen = seen

    # ------------------------------------------------------------------ peers

    def _admitted(self) -> int:
        """Peers that authenticated and hold a pool address: what max-clients bounds."""
        return len(self.table) - sum(1 for p in self.table if p.entry is None)

    def _create_peer(self, address: Address, session: Session, now: float,
                     tcp: TcpLink | None = None, *, pending: Pending) -> Peer | None:
        """A peer for a client admitted by the pre-authentication ledger as ``pending`` (its
        entry is released when the peer authenticates or goes; here if no peer is made)."""
        if self._admitted() >= self.max_clients:
            self.counts["max_clients"] += 1
            self.preauth.release(pending)
            return None
        # peer-ids for max-clients authenticated peers plus the pre-authentication quota
        peer_id = self.table.free_peer_id(self.max_clients + self.preauth.limits.total)
        if peer_id is None:  # pragma: no cover - both bounds above leave one free
            self.counts["max_clients"] += 1
            self.preauth.release(pending)
            return None
        peer = Peer(session, address, peer_id, now, tcp)
        peer.preauth = pending
        # Backstop for peers whose session never gets going; the session's own hand-window
        # failure normally comes first and says where it stalled.
        peer.remove_at = now + session.config.hand_window + 1.0
        self.table.add(peer)
        assert self._peers_nursery is not None
        self._peers_nursery.start_soon(self._peer_main, peer)
        return peer

    async def _peer_main(self, peer: Peer) -> None:
        reason = "stopped"
        try:
            with peer.cancel_scope:
                if peer.tcp is None:
                    await self._peer_timers(peer)
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._tcp_reader, peer)
                        nursery.start_soon(self._tcp_writer, peer)
                        await self._peer_timers(peer)
        except Exception as exc:
            reason = "internal_error"
            self.errors.exception("peer_error", trio.current_time(), peer=peer.label,
                                  cn=peer.common_name, error=repr(exc))
        finally:
            self._remove_peer(peer, reason)
            if peer.tcp is not None:
                with trio.CancelScope(shield=True):
                    await peer.tcp.aclose()

    async def _peer_timers(self, peer: Peer) -> None:
        """Runs the session's timers. Packet handlers wake it only when they moved the next
        deadline earlier than the one it sleeps until (:meth:`_wake_if_sooner`)."""
        session = peer.session
        while not peer.removed:
            deadline = _next_deadline(peer)
            peer.sleeping_until = deadline
            with trio.move_on_at(deadline):
                await peer.wakeup.wait()
            peer.sleeping_until = -math.inf
            if peer.wakeup.is_set():
                peer.wakeup = trio.Event()
            now = trio.current_time()
            if peer.remove_at is not None and now >= peer.remove_at:
                self._remove_peer(peer, peer.remove_reason)
                return
            session.handle_timer(now)
            self._drain(peer, now)

    @staticmethod
    def _wake_if_sooner(peer: Peer) -> None:
        """Wake ``peer``'s timer task if its next deadline is now earlier than the one it
        sleeps until (a new retransmission, a failure that removes the peer soon)."""
        if _next_deadline(peer) < peer.sleeping_until:
            peer.wakeup.set()

    def _remove_peer(self, peer: Peer, reason: str, **fields: Any) -> None:
        if peer.removed:
            return
        peer.removed = True
        now = trio.current_time()
        self.table.remove(peer)
        self._preauth_release(peer)
        if peer.connected:
            self.connected = tuple(p for p in self.connected if p is not peer)
        if peer.entry is not None:
            self.allocator.release(peer.entry, now)
        if peer.session.drops:
            self.drops.merge(peer.session.drops)
            peer.session.drops.clear()
        if peer.tcp_send is not None:
            peer.tcp_send.close()
        peer.cancel_scope.cancel()
        self.log.info("peer_disconnected", reason=reason, peer=peer.label, cn=peer.common_name,
                      vpn_ip=peer.vpn_ip, peer_id=peer.peer_id, was_connected=peer.connected,
                      **fields)

    # ------------------------------------------------------------------ pre-authentication

    def _preauth_admit(self, pending: Pending, now: float, *, opening: bool = False) -> bool:
        """Count ``pending`` in the pre-authentication ledger; close the openings it evicts.
        False (counted, and logged at most every DROP_LOG_INTERVAL) when a limit refuses."""
        admission = self.preauth.admit(pending, pending.address[0], opening=opening)
        for victim in admission.evicted:
            victim.evicted = True
            victim.cancel_scope.cancel()
            self.counts["preauth_evicted"] += 1
        if admission.refused is None:
            return True
        self.counts[admission.refused] += 1
        self._preauth_refusals += 1
        if now - self._preauth_logged_at >= DROP_LOG_INTERVAL:
            limits = self.preauth.limits
            self.log.warning("preauth_limit_reached", reason=admission.refused,
                             peer=format_address(pending.address),
                             unauthenticated=len(self.preauth), quota=limits.total,
                             per_source=limits.per_source, refused=self._preauth_refusals)
            self._preauth_logged_at = now
            self._preauth_refusals = 0
        return False

    def _preauth_release(self, peer: Peer) -> None:
        if peer.preauth is not None:
            self.preauth.release(peer.preauth)
            peer.preauth = None

    def kill_peer(self, peer: Peer, linger: float, reason: str = "killed") -> None:
        """Management ``kill``: tell the client to restart, remove it ``linger`` s later."""
        now = trio.current_time()
        try:
            peer.session.send_control_message("RESTART", now)
        except ProtocolError:
            self._remove_peer(peer, reason)
            return
        self._drain(peer, now)
        peer.remove_at = now + linger
        peer.remove_reason = reason
        peer.wakeup.set()

    def _peer_failed(self, peer: Peer | None, exc: Exception) -> None:
        """A bug while handling one peer's packet: drop that peer, keep serving the rest."""
        now = trio.current_time()
        if peer is None:
            self.errors.exception("packet_error", now, error=repr(exc))
            return
        self.errors.exception("peer_error", now, peer=peer.label, cn=peer.common_name,
                              error=repr(exc))
        self._remove_peer(peer, "internal_error")

    def _drain(self, peer: Peer, now: float) -> None:
        """Send what the session wants sent and act on its events, until it is quiet."""
        session = peer.session
        for _ in range(16):
            datagrams = session.take_datagrams()
            if datagrams:
                self._send_now(peer, datagrams)
            packets = session.take_tun_packets()
            if packets:
                out: list[tuple[Peer, bytes]] = []
                to_device: list[bytes] = []
                for packet in packets:
                    self._from_peer(peer, packet, now, out, to_device=to_device)
                self._write_device(to_device)
                for target, wire in out:
                    self._send_now(target, (wire,))
            events = session.take_events()
            if not events:
                if not datagrams and not packets:
                    return
                continue
            for event in events:
                if peer.removed:
                    return
                self._on_event(peer, event, now)

    def _send_now(self, peer: Peer, datagrams: Sequence[bytes]) -> None:
        peer.tx_bytes += sum(map(len, datagrams))
        peer.tx_packets += len(datagrams)
        if peer.tcp_send is not None:
            for data in datagrams:
                try:
                    peer.tcp_send.send_nowait(data)
                except trio.WouldBlock:
                    self.counts["tcp_send_queue_full"] += 1
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
        elif self.udp is not None:
            for data in datagrams:
                self.udp.try_send(data, peer.address)

    async def _transmit(self, out: list[tuple[Peer, bytes]]) -> None:
        """Send encrypted packets, waiting while the UDP socket is full (runs of one peer's
        packets go out together)."""
        udp = self.udp
        if len(out) == 1 and udp is not None:  # the common case of interactive traffic
            peer, wire = out[0]
            if peer.tcp_send is None:
                peer.tx_bytes += len(wire)
                peer.tx_packets += 1
                if udp.send_nowait(wire, peer.address) is None:  # the queue is full: wait
                    await udp.send_many((wire,), peer.address)
                return
        i, n = 0, len(out)
        while i < n:
            peer = out[i][0]
            j = i + 1
            while j < n and out[j][0] is peer:
                j += 1
            wires = [wire for _, wire in out[i:j]]
            if peer.tcp_send is not None or udp is None:
                self._send_now(peer, wires)
            else:
                peer.tx_bytes += sum(map(len, wires))
                peer.tx_packets += len(wires)
                await udp.send_many(wires, peer.address)
            i = j

    # ------------------------------------------------------------------ session events

    def _on_event(self, peer: Peer, event: ev.Event, now: float) -> None:
        log = self.log
        if isinstance(event, ev.PhaseReached):
            if event.phase == ev.PHASE_TLS_STARTED:
                log.info("tls_handshake_started", peer=peer.label, key_id=event.key_id)
                if peer.reset_counted:
                    # the TCP client answered our reset: like a UDP client proving its
                    # cookie, it does not count against connect-freq-initial
                    peer.reset_counted = False
                    self.reset_limiter.give_back()
        elif isinstance(event, ev.TlsHandshakeComplete):
            log.info("tls_handshake_complete", peer=peer.label, key_id=event.key_id,
                     cn=event.peer.common_name, tls=event.description)
        elif isinstance(event, ev.ClientAuthenticated):
            self._admit(peer, event, now)
        elif isinstance(event, ev.DataChannelReady):
            log.info("key_method_complete", peer=peer.label, cn=peer.common_name,
                     key_id=event.key_id, cipher=event.cipher, peer_id=event.peer_id)
            if event.renegotiated:
                log.info("renegotiated", peer=peer.label, cn=peer.common_name,
                         key_id=event.key_id)
            elif not peer.connected:
                self._connected(peer, event.cipher)
        elif isinstance(event, ev.PeerCertificateRejected):
            log.warning("peer_cert_rejected", peer=peer.label, check=event.check,
                        serial=str(event.serial), cn=event.common_name, detail=event.detail)
        elif isinstance(event, ev.HandshakeFailed):
            log.warning("handshake_failed", peer=peer.label, cn=peer.common_name,
                        key_id=event.key_id, cause=event.cause, detail=event.detail,
                        phase=event.phase)
            if peer.session.failed:
                if event.cause in (ev.CAUSE_AUTH_FAILED, ev.CAUSE_NO_COMMON_CIPHER):
                    peer.remove_at = now + REJECT_LINGER
                    peer.remove_reason = event.cause
                else:
                    self._remove_peer(peer, "handshake_failed", cause=event.cause)
        elif isinstance(event, ev.KeyExpired):
            log.warning("key_expired", peer=peer.label, cn=peer.common_name,
                        key_id=event.key_id)
        elif isinstance(event, ev.KeepaliveTimeout):
            log.info("ping_restart", peer=peer.label, cn=peer.common_name,
                     silent_for=round(event.silent_for, 1))
            self._remove_peer(peer, "ping_restart")
        elif isinstance(event, ev.PeerExited):
            self._remove_peer(peer, "exit", how=event.how)

    def _admit(self, peer: Peer, event: ev.ClientAuthenticated, now: float) -> None:
        cn = event.peer.common_name
        peer.common_name = cn
        peer.cert_serial = event.peer.serial
        self._preauth_release(peer)  # authenticated: out of the pre-authentication quota
        if not self.options.duplicate_cn:
            for other in self.table:
                if other is not peer and other.common_name == cn:
                    self._remove_peer(other, "duplicate_cn", replaced_by=peer.label)
        if self._admitted() >= self.max_clients:
            # the quota let more sessions start than max-clients can take
            self.counts["max_clients"] += 1
            self._remove_peer(peer, "max_clients")
            return
        entry = self.allocator.acquire(cn, now)
        if entry is None:
            self.log.warning("pool_exhausted", peer=peer.label, cn=cn,
                             pool_size=self.allocator.pool.size)
            peer.session.reject(now, "no free address in the server's pool")
            return
        peer.entry = entry
        peer.vaddr = entry.local.packed
        peer.session.accept(now, (*self.push, entry.ifconfig_option()), peer_id=peer.peer_id)

    def _connected(self, peer: Peer, cipher: str) -> None:
        peer.connected = True
        peer.remove_at = None
        self.table.route_vaddr(peer)
        self.connected = (*self.connected, peer)
        self.log.info("peer_connected", peer=peer.label, cn=peer.common_name,
                      vpn_ip=peer.vpn_ip, cipher=cipher, peer_id=peer.peer_id,
                      proto="tcp" if peer.tcp is not None else "udp")

    # ------------------------------------------------------------------ routing

    def _from_peer(self, peer: Peer, packet: bytes, now: float,
                   out: list[tuple[Peer, bytes]], *, to_device: list[bytes]) -> None:
        """A decrypted packet from ``peer``: to the device (collected in ``to_device`` for one
        :meth:`_write_device` per batch), or to other clients (``out``)."""
        if self.tap:
            verdict = self.table.from_client_frame(peer, packet, self.client_to_client)
        else:
            mss = self.mss
            # clamp_mss's first test inline: only TCP can need it (pings skip the call)
            if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                packet = clamp_mss(packet, mss)
            verdict = self.table.from_client_ipv4(peer, packet, self.client_to_client)
        if verdict is Verdict.DEVICE:
            to_device.append(packet)
        elif isinstance(verdict, Peer):
            wire = verdict.session.encrypt_data(packet, now)
            if wire is not None:
                out.append((verdict, wire))
        elif verdict is Verdict.FLOOD:
            to_device.append(packet)
            for other in self.connected:
                if other is not peer:
                    wire = other.session.encrypt_data(packet, now)
                    if wire is not None:
                        out.append((other, wire))
        else:
            self.counts[verdict.value] += 1
            if (verdict in (Verdict.MAC_TAKEN, Verdict.MAC_QUOTA)
                    and verdict.value not in peer.mac_refused):
                # once per peer and reason; packet_dropped counts the rest
                peer.mac_refused = (*peer.mac_refused, verdict.value)
                owner = self.table.by_mac.get(packet[6:12])
                self.log.warning("mac_refused", peer=peer.label, cn=peer.common_name,
                                 mac=packet[6:12].hex(":"), reason=verdict.value,
                                 owner=owner.common_name if owner is not None else None,
                                 limit=self.table.max_macs)

    def _write_device(self, packets: list[bytes]) -> None:
        """Hand a batch of packets from clients to the device (TCP runs coalesced)."""
        if packets and self.tunnel is not None:
            self.tunnel.device.write_many(packets)

    async def _device_reader(self) -> None:
        """TCP transport: packets from the device to the peers' connections."""
        assert self.tunnel is not None
        device = self.tunnel.device
        while True:
            out = self._from_device(await device.read_batch(BATCH), trio.current_time())
            if out:
                await self._transmit(out)

    def _from_device(self, packets: list[bytes], now: float) -> list[tuple[Peer, bytes]]:
        """Encrypt device packets for the peers owning their destinations."""
        out: list[tuple[Peer, bytes]] = []
        counts = self.counts
        if self.tap:
            table = self.table
            for packet in packets:
                peer = table.for_frame(packet)
                if peer is None:
                    for other in self.connected:
                        wire = other.session.encrypt_data(packet, now)
                        if wire is not None:
                            out.append((other, wire))
                    continue
                wire = peer.session.encrypt_data(packet, now)
                if wire is not None:
                    out.append((peer, wire))
            return out
        by_vaddr = self.table.by_vaddr
        mss = self.mss
        for packet in packets:
            if len(packet) >= 20 and packet[0] >> 4 == 4:
                peer = by_vaddr.get(packet[16:20])
                if peer is None:
                    counts["no_route"] += 1
                    continue
                if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                    packet = clamp_mss(packet, mss)  # noqa: PLW2901
            else:
                counts["not_ipv4"] += 1
                continue
            wire = peer.session.encrypt_data(packet, now)
            if wire is not None:
                out.append((peer, wire))
        return out

    # ------------------------------------------------------------------ UDP

    async def _udp_data_path(self) -> None:
        """UDP transport: one task for both directions (link → device/peers, device →
        peers), waiting on both fds at once (:mod:`trivpn.runtime.readiness`)."""
        udp, tunnel = self.udp, self.tunnel
        assert udp is not None and tunnel is not None
        device = tunnel.device
        link_fd, device_fd = udp.fileno(), device.fileno()
        clock = trio.lowlevel.current_clock().current_time  # = trio.current_time, cheaper
        ready = ReadySet((link_fd, device_fd))
        try:
            while True:
                for fd in await ready.wait():
                    # A burst is drained (batches for GSO); a lone packet is read once.
                    if fd == link_fd:
                        out = self._from_link(udp.recv_ready(BATCH, drain=fd in ready.again),
                                              clock())
                    elif fd == device_fd:
                        out = self._from_device(
                            device.read_ready(BATCH if fd in ready.again else 1), clock())
                    else:  # pragma: no cover - only these two are watched
                        continue
                    if out:
                        await self._transmit(out)
        finally:
            ready.close()

    def _from_link(self, batch: list[tuple[bytes, Address]],
                   now: float) -> list[tuple[Peer, bytes]]:
        """Datagrams from the link: data of known peers is decrypted and routed (what goes to
        other peers is returned), the rest goes to :meth:`_udp_other`."""
        by_address = self.table.by_address
        out: list[tuple[Peer, bytes]] = []
        to_device: list[bytes] = []
        for data, address in batch:
            peer = by_address.get(address)
            if peer is not None:
                peer.rx_bytes += len(data)
                peer.rx_packets += 1
            try:
                if peer is not None and data and (data[0] >> 3) in (_DATA_V2, _DATA_V1):
                    plain = peer.session.decrypt_data(data, now)
                    if plain is not None:
                        self._from_peer(peer, plain, now, out, to_device=to_device)
                else:
                    self._udp_other(peer, data, address, now, out, to_device=to_device)
            except Exception as exc:  # a bug must cost one peer, never the server
                self._peer_failed(peer, exc)
        if to_device and self.tunnel is not None:  # = self._write_device(to_device)
            self.tunnel.device.write_many(to_device)
        return out

    def _udp_other(self, peer: Peer | None, data: bytes, address: Address, now: float,
                   out: list[tuple[Peer, bytes]], *, to_device: list[bytes]) -> None:
        """Control packets of known peers, and everything from unknown addresses."""
        if not data:
            self.counts["empty_packet"] += 1
            return
        opcode, key_id = data[0] >> 3, data[0] & 7
        if peer is not None:
            remote_sid = peer.session.remote_session_id
            if remote_sid is not None and data[1:9] != remote_sid and key_id == 0:
                # A new client session from the same address: the client restarted.
                if opcode == _RESET_CLIENT_V2:
                    self._stateless_reset(data, address, now)
                    return
                if opcode in (_CONTROL_V1, _ACK_V1):
                    self._cookie_contact(data, address, now, replacing=peer)
                    return
            peer.session.receive_datagram(data, now)
            self._drain(peer, now)
            self._wake_if_sooner(peer)
            return
        if opcode == _DATA_V2:
            self._float(data, address, now, out, to_device=to_device)
        elif key_id != 0:
            self.counts["unknown_peer"] += 1
        elif opcode == _RESET_CLIENT_V2:
            self._stateless_reset(data, address, now)
        elif opcode in (_CONTROL_V1, _ACK_V1):
            self._cookie_contact(data, address, now)
        else:
            self.counts["unknown_peer"] += 1

    def _unwrap(self, data: bytes) -> Any:
        assert self.config is not None
        try:
            return decode_control(self.config.wrap.unwrap(data).plain)
        except ProtocolError as exc:
            self.counts[exc.reason] += 1
            return None

    def _stateless_reset(self, data: bytes, address: Address, now: float) -> None:
        assert self.config is not None and self.udp is not None
        try:
            packet = peek_client_reset(self.config.wrap, data)
        except ProtocolError as exc:
            self.counts[exc.reason] += 1
            return
        if not self.reset_limiter.allow(now):
            self.counts["reset_rate_limited"] += 1
            return
        sid = cookie_session_id(self.secret, timeslot(now, self.config.hand_window),
                                address_bytes(address), packet.session_id)
        reply = stateless_server_reset(self.config.wrap, sid, packet.session_id,
                                       int(now + self.unix_offset))
        self.udp.try_send(reply, address)

    def _cookie_contact(self, data: bytes, address: Address, now: float,
                        replacing: Peer | None = None) -> None:
        packet = self._unwrap(data)
        if packet is None:
            return
        assert self.config is not None
        if not cookie_matches(packet, self.secret, now, self.config.hand_window,
                              address_bytes(address)):
            self.counts["bad_cookie" if replacing is None else "wrong_session"] += 1
            return
        if replacing is not None:
            self._remove_peer(replacing, "client_restarted")
        pending = Pending(address)
        if not self._preauth_admit(pending, now):
            return
        if self.connect_limiter is not None and not self.connect_limiter.allow(now):
            self.counts["connect_freq_limited"] += 1
            self.preauth.release(pending)
            return
        # a completed three-way handshake does not count against connect-freq-initial
        self.reset_limiter.give_back()
        session = Session.after_stateless_reset(self.config, now,
                                                local_session_id=packet.remote_session_id,
                                                remote_session_id=packet.session_id)
        peer = self._create_peer(address, session, now, pending=pending)
        if peer is None:
            return
        session.receive_datagram(data, now)
        self._drain(peer, now)

    def _float(self, data: bytes, address: Address, now: float,
               out: list[tuple[Peer, bytes]], *, to_device: list[bytes]) -> None:
        """P_DATA_V2 from a new address: if it authenticates for its peer-id, the peer moved."""
        peer = self.table.by_peer_id.get(int.from_bytes(data[1:4], "big")) \
            if len(data) >= 4 else None
        if peer is None or not peer.connected or peer.tcp is not None:
            self.counts["unknown_peer"] += 1
            return
        session = peer.session
        before = sum(session.drops.values())
        plain = session.decrypt_data(data, now)
        if sum(session.drops.values()) != before:
            return  # did not authenticate (counted by the session)
        old = peer.address
        peer.address = address
        self.table.move(peer, old)
        old_label, peer.label = peer.label, format_address(address)
        self.log.info("peer_floated", peer=peer.label, previous=old_label, cn=peer.common_name)
        if plain is not None:
            self._from_peer(peer, plain, now, out, to_device=to_device)

    # ------------------------------------------------------------------ TCP

    async def _tcp_acceptor(self) -> None:
        listener = self.listener
        assert listener is not None and self.config is not None
        while True:
            try:
                link = await listener.accept()
            except OSError as exc:
                self.counts["accept_failed"] += 1
                self.log.warning("accept_failed", error=str(exc))
                await trio.sleep(0.1)
                continue
            now = trio.current_time()
            try:
                address = link.peer_address
            except OSError:
                await link.aclose()
                continue
            pending = Pending(address, link)
            if not self._preauth_admit(pending, now, opening=True):
                await link.aclose()
                continue
            assert self._peers_nursery is not None
            self._peers_nursery.start_soon(self._tcp_opening, pending)

    async def _tcp_opening(self, pending: Pending) -> None:
        """A new TCP connection until its first packet: a valid client reset within the first
        packet timeout makes it a peer; anything else closes it (counted by reason)."""
        link, config = pending.link, self.config
        assert link is not None and config is not None
        reason: str | None = None
        peer: Peer | None = None
        try:
            with pending.cancel_scope:  # cancelled when the ledger evicts this opening
                with trio.move_on_after(first_packet_timeout(config.hand_window)) as timer:
                    try:
                        packets = await link.recv_first_packets(MAX_FIRST_PACKET)
                    except LinkClosed:
                        reason = "tcp_closed_before_reset"
                    except ProtocolError:
                        reason = "tcp_bad_first_packet"
                    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                        reason = "tcp_closed_before_reset"
                if timer.cancelled_caught:
                    reason = "tcp_first_packet_timeout"
            if pending.evicted:
                return  # counted as preauth_evicted
            if reason is None:
                peer = self._tcp_first_packets(pending, packets, trio.current_time())
        finally:
            if peer is None:
                self.preauth.release(pending)
                if reason is not None:
                    self.counts[reason] += 1
                with trio.CancelScope(shield=True):
                    await link.aclose()

    def _tcp_first_packets(self, pending: Pending, packets: list[bytes],
                           now: float) -> Peer | None:
        """The first packets of a TCP connection: a peer if the first is a valid reset and
        connect-freq-initial allows it (each refusal counted)."""
        assert self.config is not None and pending.link is not None
        try:
            peek_client_reset(self.config.wrap, packets[0])
        except ProtocolError:
            self.counts["tcp_bad_first_packet"] += 1
            return None
        # connect-freq needs no check: like OpenVPN 2.6, trivpn refuses it with a TCP server
        if not self.reset_limiter.allow(now):
            self.counts["reset_rate_limited"] += 1
            return None
        self.preauth.settle(pending)
        session = Session(self.config, now)
        peer = self._create_peer(pending.address, session, now, tcp=pending.link,
                                 pending=pending)
        if peer is None:
            self.reset_limiter.give_back()
            return None
        peer.reset_counted = True
        for data in packets:
            session.receive_datagram(data, now)
        self._drain(peer, now)
        return peer

    async def _tcp_reader(self, peer: Peer) -> None:
        link = peer.tcp
        assert link is not None
        session = peer.session
        while True:
            try:
                packets = await link.recv_packets()
            except LinkClosed:
                self._remove_peer(peer, "connection_closed")
                return
            except ProtocolError as exc:
                self._remove_peer(peer, "bad_packet_length", detail=exc.what)
                return
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._remove_peer(peer, "connection_reset", detail=str(exc))
                return
            now = trio.current_time()
            peer.rx_bytes += sum(map(len, packets))
            peer.rx_packets += len(packets)
            out: list[tuple[Peer, bytes]] = []
            to_device: list[bytes] = []
            control = False
            for data in packets:
                if data and (data[0] >> 3) in (_DATA_V2, _DATA_V1):
                    plain = session.decrypt_data(data, now)
                    if plain is not None:
                        self._from_peer(peer, plain, now, out, to_device=to_device)
                else:
                    session.receive_datagram(data, now)
                    control = True
            self._write_device(to_device)
            if control:
                self._drain(peer, now)
                self._wake_if_sooner(peer)
            if out:
                await self._transmit(out)

    async def _tcp_writer(self, peer: Peer) -> None:
        link, receive = peer.tcp, peer.tcp_recv
        assert link is not None and receive is not None
        try:
            async for first in receive:
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await link.send_packets(batch)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._remove_peer(peer, "connection_reset", detail=str(exc))


async def run_server(options: Options, log: Log, tools: OperatorTools | None = None, *,
                     drop_revoked: bool = False) -> int:
    """Run a server until SIGINT/SIGTERM; returns the process exit code."""
    server = Server(options, log)
    server.tools = tools
    server.drop_revoked = drop_revoked
    return await server.run()


