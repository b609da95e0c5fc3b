"""``trivpn run`` for ``mode server`` configs: one device, one link socket, many peers.

The server orchestrates; the work is done in rooms of their own:

- :mod:`trivpn.protocol.gateway` (sans-IO) judges every packet no session has claimed: the
  stateless HMAC cookie reply, ``connect-freq-initial`` / ``connect-freq``, the
  pre-authentication quota (docs/server-admission.md), float authentication.
- :mod:`trivpn.runtime.serverudp` / :mod:`trivpn.runtime.servertcp`: the transports (UDP: one
  task for both directions on one socket; TCP: an acceptor, each connection's opening until its
  first packet, then a reader and a writer per peer, and a device reader).
- :mod:`trivpn.runtime.routing` over :mod:`trivpn.runtime.peers`: device ↔ peers routing.
- :mod:`trivpn.runtime.poolpersist`: the ``ifconfig-pool-persist`` file.

Tasks (one nursery for the server, a child nursery for the peers): the transport's tasks, one
timer task per peer (retransmits, hand-window, keepalive, renegotiation; any failure of one peer
removes that peer only), housekeeping (aggregated ``packet_dropped`` log lines, the persist
file) and the operator tools. Here: the peer lifecycle (created by a transport, admitted into
the pool on authentication, removed for a reason) and the session events.

On SIGINT/SIGTERM the server sends ``RESTART`` to every client when ``explicit-exit-notify`` is
set, then tears everything down and returns 0.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

import structlog
import trio

from trivpn.config import ConfigError, Options
from trivpn.config.derive import address_pool, server_push_options
from trivpn.logging import RateLimitedLog
from trivpn.protocol import events as ev
from trivpn.protocol.admission import (
    PreauthLedger,
    PreauthLimits,
)
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.gateway import (
    Gateway,
    GatewayLimits,
)
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tls import RevocationLists, revoked_serials
from trivpn.runtime import events as rt
from trivpn.runtime.datapath import mss_limit_for
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import (
    Address,
    UdpLink,
    apply_sndbuf_rcvbuf,
    open_tcp_listener,
)
from trivpn.runtime.peers import PeerTable, Verdict
from trivpn.runtime.pool import PoolAllocator
from trivpn.runtime.poolpersist import PoolPersistence
from trivpn.runtime.privileges import drop_privileges, resolve_identity
from trivpn.runtime.routing import Router
from trivpn.runtime.serverpeer import Peer, Pending, format_address, next_deadline
from trivpn.runtime.servertcp import TcpTransport
from trivpn.runtime.serverudp import UdpTransport
from trivpn.runtime.transport import (
    DatagramLink,
    PacketListener,
    ServerHost,
    ServerPacketLink,
    TunnelHandle,
)
from trivpn.runtime.tunnel import RouteRequest, Tunnel, TunnelPlan, plan_tunnel
from trivpn.sessionsetup import drop_aggregator, session_config

Log = structlog.stdlib.BoundLogger

HOUSEKEEPING_INTERVAL = 1.0
REVOKED_LINGER = 1.0  # --drop-revoked: seconds between RESTART and removal, as for kill
DROP_LOG_INTERVAL = 5.0
ERROR_LOG_INTERVAL = 60.0
REJECT_LINGER = 5.0  # keep a rejected client long enough to deliver AUTH_FAILED reliably


class SystemServerHost:
    """The real host: sockets and TUN/TAP devices (a
    :class:`~trivpn.runtime.transport.ServerHost`)."""

    def open_tunnel(self, plan: TunnelPlan) -> TunnelHandle:
        return Tunnel.open(plan)

    def open_udp(self, host: str, port: int, sndbuf: int | None,
                 rcvbuf: int | None) -> DatagramLink:
        link = UdpLink.bind(host, port)
        try:
            apply_sndbuf_rcvbuf(link.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            link.close()
            raise
        return link

    async def open_tcp_listener(self, host: str, port: int, sndbuf: int | None,
                                rcvbuf: int | None) -> PacketListener:
        listener = await open_tcp_listener(host, port)
        try:
            # accepted connections inherit the listening socket's buffer sizes
            apply_sndbuf_rcvbuf(listener.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            await listener.aclose()
            raise
        return listener


class Server:
    """The server runtime. Construct with parsed options, then ``await run()``; it runs until
    SIGINT/SIGTERM or :attr:`stop` is set."""

    def __init__(self, options: Options, log: Log, *, direct_wait: bool = True,
                 host: ServerHost | None = None) -> None:
        # direct_wait=False: the UDP data path always waits through trio (readiness.py)
        self.direct_wait = direct_wait
        self.host: ServerHost = host if host is not None else SystemServerHost()
        self.stop = trio.Event()
        if options.server is None:
            raise ConfigError("trivpn's server mode needs 'server NETWORK NETMASK' "
                              "(ifconfig-pool without it is not supported)", options.config_path)
        pool = address_pool(options)
        if pool is None:
            raise ConfigError("'server ... nopool' is not supported: trivpn assigns client "
                              "addresses from the server pool only", options.config_path)
        self.options = options
        self.log = log
        self.events = rt.EventBus(log)  # logging, management state, metrics counters
        self.tap = options.dev_type == "tap"
        # TCP SYNs through the tunnel are clamped to this MSS (mssfix; TUN mode only)
        self.mss = None if self.tap else mss_limit_for(
            options, options.data_ciphers, "udp" if options.proto == "udp" else "tcp")
        self.max_clients = options.max_clients
        self.allocator = PoolAllocator(pool, duplicate_cn=options.duplicate_cn)
        # the front door: cookie, connect-freq(-initial), the pre-authentication quota
        # (separate from max-clients, docs/server-admission.md) and float authentication
        initial, freq = options.connect_freq_initial, options.connect_freq
        self.gateway: Gateway[Peer, Pending] = Gateway(os.urandom(32), GatewayLimits(
            reset=(initial.max, initial.seconds),
            connect=(freq.max, freq.seconds) if freq is not None else None,
            preauth=PreauthLimits.for_max_clients(options.max_clients)))
        self._preauth_logged_at = -math.inf
        self._preauth_refusals = 0
        self.push = server_push_options(options)
        self.table: PeerTable[Peer] = PeerTable(options.max_routes_per_client)
        self.drops = drop_aggregator(options, DROP_LOG_INTERVAL)
        # one traceback per kind of bug and minute; the rest is counted (error_repeated)
        self.errors = RateLimitedLog(log, ERROR_LOG_INTERVAL)
        self.counts: Counter[str] = Counter()
        self.router = Router(self.table, self.counts, tap=self.tap,
                             client_to_client=options.client_to_client, mss=self.mss,
                             on_mac_refused=self._mac_refused)
        self.unix_offset = 0.0
        self.tunnel: TunnelHandle | None = None
        self.udp: DatagramLink | None = None
        self.listener: PacketListener | None = None
        self.peers_nursery: trio.Nursery | None = None
        self._link_drops_seen = 0
        self._tun_drops_seen = 0
        self.tools: ServerTools | None = None  # status file, management, metrics
        self.udp_transport = UdpTransport(self)
        self.tcp_transport = TcpTransport(self)
        self.persistence = PoolPersistence(options.ifconfig_pool_persist, self.allocator, log)
        # trivpn run --drop-revoked: re-check connected clients when the crl-verify file
        # changes (OpenVPN only checks at the next TLS handshake)
        self.drop_revoked = False
        self._crl_seen: RevocationLists | None = None

    @property
    def config(self) -> SessionConfig | None:
        """The sessions' configuration (None until :meth:`run` builds it)."""
        return self.gateway.config_or_none

    @config.setter
    def config(self, config: SessionConfig) -> None:
        self.gateway.config = config

    @property
    def connected(self) -> tuple[Peer, ...]:
        """The connected peers, in the order they connected."""
        return self.router.connected

    @property
    def preauth(self) -> PreauthLedger[Pending]:
        """Unauthenticated sessions and openings (owned by the gateway)."""
        return self.gateway.preauth

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        o = self.options
        self.unix_offset = time.time() - trio.current_time()
        self.gateway.unix_offset = self.unix_offset
        self.config = session_config(o, unix_time_offset=self.unix_offset)
        self.persistence.load(trio.current_time())
        try:
            identity = resolve_identity(o.user, o.group)
            await self._open()
            if self.tools is not None:  # password file and sockets while still privileged
                await self.tools.open_server(self)
            if identity is not None:
                self.persistence.open_for_drop()
                drop_privileges(identity)
                self.log.info("privileges_dropped", user=o.user, group=o.group)
        except RuntimeSetupError as exc:
            self.log.error("setup_failed", error=str(exc), what=exc.what, where=exc.where)
            await self._close()
            return 1
        try:
            async with trio.open_nursery() as main:
                async with trio.open_nursery() as peers:
                    self.peers_nursery = peers
                    main.start_soon(self._housekeeping)
                    if self.tools is not None:
                        main.start_soon(self.tools.run_server, self)
                    if self.udp is not None:
                        main.start_soon(self.udp_transport.run)
                    else:
                        main.start_soon(self.tcp_transport.run_device_reader)
                        main.start_soon(self.tcp_transport.run_acceptor)
                    await self._wait_for_stop()
                    await self._notify_clients()
                    for peer in self.table:
                        self.remove_peer(peer, "server_exiting")
                    peers.cancel_scope.cancel()
                main.cancel_scope.cancel()
        finally:
            await self._close()
        self.log.info("exiting", status=0)
        return 0

    async def _wait_for_stop(self) -> None:
        """Until SIGINT/SIGTERM (logged) or :attr:`stop` is set."""
        async def watch(signals: Any) -> None:
            async for signum in signals:
                self.events.publish(rt.SignalReceived(signal.Signals(signum).name))
                self.stop.set()
                return

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, signals)
                await self.stop.wait()
                nursery.cancel_scope.cancel()

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
                           ifconfig=ifconfig, routes=routes, txqueuelen=o.txqueuelen)
        self.tunnel = self.host.open_tunnel(plan)
        description = self.tunnel.describe()
        addresses = description.get("addresses")
        self.events.publish(rt.TunConfigured(
            tuple(str(a) for a in addresses) if isinstance(addresses, list) else (),
            description, topology=o.topology))
        for failure in self.tunnel.route_failures:
            self.log.warning("route_failed", detail=failure)
        host = o.local or "0.0.0.0"
        port = o.lport
        if o.proto == "udp":
            self.udp = self.host.open_udp(host, port, o.sndbuf, o.rcvbuf)
            local = self.udp.local_address
        else:
            self.listener = await self.host.open_tcp_listener(host, port, o.sndbuf, o.rcvbuf)
            local = self.listener.local_address
        self.events.publish(rt.LinkOpened("udp" if o.proto == "udp" else "tcp-server",
                                          format_address(local)))

    async def _close(self) -> None:
        now = trio.current_time()
        self.persistence.write()
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
        rt.publish_drops(self.events, self.drops, now)

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
            self.drain(peer, now)
            peer.wakeup.set()
            told += 1
        self.log.info("exit_notify_sent", message=text, clients=told)
        if told:
            await trio.sleep(min(float(n), 2.0))  # let retransmits and acks happen

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(HOUSEKEEPING_INTERVAL)
            now = trio.current_time()
            self._account(now)
            if self.drops.due(now):
                rt.publish_drops(self.events, self.drops, now)
            self.errors.flush(now)
            if self.drop_revoked:
                self._drop_revoked()
            self.persistence.tick(now)

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

    def create_peer(self, address: Address, session: Session, now: float,
                     tcp: ServerPacketLink | None = None, *, pending: Pending) -> Peer | None:
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
        assert self.peers_nursery is not None
        self.peers_nursery.start_soon(self._peer_main, peer)
        return peer

    async def _peer_main(self, peer: Peer) -> None:
        reason = "stopped"
        try:
            with peer.cancel_scope:
                if peer.tcp is None:
                    await self._peer_timers(peer)
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.tcp_transport.reader, peer)
                        nursery.start_soon(self.tcp_transport.writer, peer)
                        await self._peer_timers(peer)
        except Exception as exc:
            reason = "internal_error"
            self.errors.exception("peer_error", trio.current_time(), peer=peer.label,
                                  cn=peer.common_name, error=repr(exc))
        finally:
            self.remove_peer(peer, reason)
            if peer.tcp is not None:
                with trio.CancelScope(shield=True):
                    await peer.tcp.aclose()

    async def _peer_timers(self, peer: Peer) -> None:
        """Runs the session's timers. Packet handlers wake it only when they moved the next
        deadline earlier than the one it sleeps until (:meth:`wake_if_sooner`)."""
        session = peer.session
        while not peer.removed:
            deadline = next_deadline(peer)
            peer.sleeping_until = deadline
            with trio.move_on_at(deadline):
                await peer.wakeup.wait()
            peer.sleeping_until = -math.inf
            if peer.wakeup.is_set():
                peer.wakeup = trio.Event()
            now = trio.current_time()
            if peer.remove_at is not None and now >= peer.remove_at:
                self.remove_peer(peer, peer.remove_reason)
                return
            session.handle_timer(now)
            self.drain(peer, now)

    @staticmethod
    def wake_if_sooner(peer: Peer) -> None:
        """Wake ``peer``'s timer task if its next deadline is now earlier than the one it
        sleeps until (a new retransmission, a failure that removes the peer soon)."""
        if next_deadline(peer) < peer.sleeping_until:
            peer.wakeup.set()

    def remove_peer(self, peer: Peer, reason: str, **fields: Any) -> None:
        if peer.removed:
            return
        peer.removed = True
        now = trio.current_time()
        self.table.remove(peer)
        self._preauth_release(peer)
        if peer.connected:
            self.router.connected = tuple(p for p in self.connected if p is not peer)
        if peer.entry is not None:
            self.allocator.release(peer.entry, now)
        if peer.session.drops:
            self.drops.merge(peer.session.drops)
            peer.session.drops.clear()
        if peer.tcp_send is not None:
            peer.tcp_send.close()
        peer.cancel_scope.cancel()
        self.events.publish(rt.PeerDisconnected(reason, peer.label, peer.common_name,
                                                peer.vpn_ip, peer.peer_id, peer.connected,
                                                fields))

    # ------------------------------------------------------------------ pre-authentication

    def preauth_admit(self, pending: Pending, now: float, *, opening: bool = False) -> bool:
        """Count ``pending`` in the pre-authentication ledger; close the openings it evicts.
        False (counted, and logged at most every DROP_LOG_INTERVAL) when a limit refuses."""
        admission = self.gateway.admit(pending, pending.address[0], opening=opening)
        self._close_evicted(admission.evicted)
        if admission.refused is None:
            return True
        self.preauth_refused(admission.refused, pending.address, now)
        return False

    def _close_evicted(self, evicted: Sequence[Pending]) -> None:
        for victim in evicted:
            victim.evicted = True
            victim.cancel_scope.cancel()
            self.counts["preauth_evicted"] += 1

    def preauth_refused(self, reason: str, address: Address, now: float) -> None:
        """Count a refusal of the pre-authentication ledger, logged at most every
        DROP_LOG_INTERVAL."""
        self.counts[reason] += 1
        self._preauth_refusals += 1
        if now - self._preauth_logged_at >= DROP_LOG_INTERVAL:
            limits = self.preauth.limits
            self.log.warning("preauth_limit_reached", reason=reason,
                             peer=format_address(address),
                             unauthenticated=len(self.preauth), quota=limits.total,
                             per_source=limits.per_source, refused=self._preauth_refusals)
            self._preauth_logged_at = now
            self._preauth_refusals = 0

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
            self.remove_peer(peer, reason)
            return
        self.drain(peer, now)
        peer.remove_at = now + linger
        peer.remove_reason = reason
        peer.wakeup.set()

    def peer_failed(self, peer: Peer | None, exc: Exception) -> None:
        """A bug while handling one peer's packet: drop that peer, keep serving the rest."""
        now = trio.current_time()
        if peer is None:
            self.errors.exception("packet_error", now, error=repr(exc))
            return
        self.errors.exception("peer_error", now, peer=peer.label, cn=peer.common_name,
                              error=repr(exc))
        self.remove_peer(peer, "internal_error")

    def drain(self, peer: Peer, now: float) -> None:
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
                    self.router.from_peer(peer, packet, now, out, to_device=to_device)
                self.write_device(to_device)
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

    async def transmit(self, out: list[tuple[Peer, bytes]]) -> None:
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
        """A session event: handshake progress, or the end of the peer."""
        if isinstance(event, ev.PhaseReached | ev.TlsHandshakeComplete | ev.ClientAuthenticated
                      | ev.DataChannelReady):
            self._on_progress(peer, event, now)
        else:
            self._on_trouble(peer, event, now)

    def _on_progress(self, peer: Peer, event: ev.PhaseReached | ev.TlsHandshakeComplete
                     | ev.ClientAuthenticated | ev.DataChannelReady, now: float) -> None:
        if isinstance(event, ev.PhaseReached):
            if event.phase == ev.PHASE_TLS_STARTED:
                self.events.publish(rt.HandshakeStarted(event.key_id, peer.label))
                if peer.reset_counted:
                    # the TCP client answered our reset: like a UDP client proving its
                    # cookie, it does not count against connect-freq-initial
                    peer.reset_counted = False
                    self.gateway.handshake_answered()
        elif isinstance(event, ev.TlsHandshakeComplete):
            self.events.publish(rt.TlsEstablished(event.key_id, event.peer.common_name,
                                                  event.description, peer.label))
        elif isinstance(event, ev.ClientAuthenticated):
            self._admit(peer, event, now)
        else:
            self.events.publish(rt.KeysReady(event.key_id, event.cipher, event.peer_id,
                                             peer.label, peer.common_name))
            if event.renegotiated:
                self.events.publish(rt.Renegotiated(event.key_id, event.cipher, event.peer_id,
                                                    peer.label, peer.common_name))
            elif not peer.connected:
                self._connected(peer, event.cipher)

    def _on_trouble(self, peer: Peer, event: ev.Event, now: float) -> None:
        log = self.log
        if isinstance(event, ev.PeerCertificateRejected):
            self.events.publish(rt.CertificateRejected(event.check, event.serial,
                                                       event.common_name, event.detail,
                                                       peer.label))
        elif isinstance(event, ev.HandshakeFailed):
            self.events.publish(rt.HandshakeFailed(event.key_id, event.cause, event.phase,
                                                   event.detail, peer.label, peer.common_name))
            if peer.session.failed:
                if event.cause in (ev.CAUSE_AUTH_FAILED, ev.CAUSE_NO_COMMON_CIPHER):
                    peer.remove_at = now + REJECT_LINGER
                    peer.remove_reason = event.cause
                else:
                    self.remove_peer(peer, "handshake_failed", cause=event.cause)
        elif isinstance(event, ev.KeyExpired):
            self.events.publish(rt.KeyExpired(event.key_id, peer.label, peer.common_name))
        elif isinstance(event, ev.KeepaliveTimeout):
            self.events.publish(rt.PingRestart(round(event.silent_for, 1), peer.label,
                                               peer.common_name))
            self.remove_peer(peer, "ping_restart")
        elif isinstance(event, ev.PeerExited):
            self.remove_peer(peer, "exit", how=event.how)
        elif isinstance(event, ev.TimeoutExit):
            # OpenVPN's multi server closes the client instance (multi_close_instance_on_signal)
            log.info(event.cause, peer=peer.label, cn=peer.common_name,
                     after=round(event.after, 1))
            self.remove_peer(peer, event.cause)

    def _admit(self, peer: Peer, event: ev.ClientAuthenticated, now: float) -> None:
        cn = event.peer.common_name
        peer.common_name = cn
        peer.cert_serial = event.peer.serial
        self._preauth_release(peer)  # authenticated: out of the pre-authentication quota
        if not self.options.duplicate_cn:
            for other in self.table:
                if other is not peer and other.common_name == cn:
                    self.remove_peer(other, "duplicate_cn", replaced_by=peer.label)
        if self._admitted() >= self.max_clients:
            # the quota let more sessions start than max-clients can take
            self.counts["max_clients"] += 1
            self.remove_peer(peer, "max_clients")
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
        self.router.connected = (*self.connected, peer)
        self.events.publish(rt.PeerConnected(peer.label, peer.common_name, peer.vpn_ip, cipher,
                                             peer.peer_id,
                                             "tcp" if peer.tcp is not None else "udp"))

    # ------------------------------------------------------------------ routing

    def _mac_refused(self, peer: Peer, frame: bytes, verdict: Verdict) -> None:
        owner = self.table.by_mac.get(frame[6:12])
        self.log.warning("mac_refused", peer=peer.label, cn=peer.common_name,
                         mac=frame[6:12].hex(":"), reason=verdict.value,
                         owner=owner.common_name if owner is not None else None,
                         limit=self.table.max_macs)

    async def read_device(self) -> None:
        """Device → peers in a task of its own (links without a file descriptor)."""
        await self.tcp_transport.run_device_reader()

    def write_device(self, packets: list[bytes]) -> None:
        """Hand a batch of packets from clients to the device (TCP runs coalesced)."""
        if packets and self.tunnel is not None:
            self.tunnel.device.write_many(packets)


class ServerTools(Protocol):
    """The operator tools as a server sees them (trivpn/runtime/operator.py provides them)."""

    def attach(self, events: rt.EventBus) -> None: ...
    async def open_server(self, server: Server) -> None: ...
    async def run_server(self, server: Server) -> None: ...


async def run_server(options: Options, log: Log, tools: ServerTools | None = None, *,
                     direct_wait: bool = True, drop_revoked: bool = False,
                     host: ServerHost | None = None) -> int:
    """Run a server until SIGINT/SIGTERM; returns the process exit code."""
    server = Server(options, log, direct_wait=direct_wait, host=host)
    server.tools = tools
    server.drop_revoked = drop_revoked
    if tools is not None:
        tools.attach(server.events)
    return await server.run()


