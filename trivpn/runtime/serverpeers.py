"""The server's peer lifecycle and session events (owned by
:class:`~trivpn.runtime.server.Server`, which hands its methods to the transports).

A transport creates a peer for a client the pre-authentication ledger admitted
(:meth:`PeerLifecycle.create_peer`); the peer's task runs the session's timers (and, over TCP,
the connection's reader and writer); :meth:`PeerLifecycle.drain` sends what the session wants
sent, routes its decrypted packets and acts on its events: handshake progress, admission into
the pool once the client authenticated (``max-clients``, ``duplicate-cn``, its
``client-config-dir`` file read then, the pool or its fixed address), the connected peer (its
iroutes routed), and the end of a peer (removed for a reason, its address released).
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import trio

from trivpn.config.ccd import (
    ClientConfig,
    IfconfigPush,
    check_fixed_address,
    client_push_list,
    read_client_config,
)
from trivpn.config.derive import server_tun_ifconfig
from trivpn.config.errors import ConfigError
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.session import Session
from trivpn.runtime import events as rt
from trivpn.runtime import scriptenv as se
from trivpn.runtime.link import Address
from trivpn.runtime.serverpeer import Peer, Pending, format_address, next_deadline
from trivpn.runtime.serverscripts import local_time_text
from trivpn.runtime.transport import ServerPacketLink

if TYPE_CHECKING:
    from trivpn.runtime.server import Server

DROP_LOG_INTERVAL = 5.0
REJECT_LINGER = 5.0  # keep a rejected client long enough to deliver AUTH_FAILED reliably


class PeerLifecycle:
    """Creates, drives and removes the server's peers; reads the server's state (peer table,
    gateway, router, pool, sockets) through :attr:`server`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.events = server.events
        self.log = server.log
        self.errors = server.errors
        self._preauth_logged_at = -math.inf
        self._preauth_refusals = 0

    def _admitted(self) -> int:
        """Peers that authenticated and hold a pool address: what max-clients bounds."""
        return sum(1 for p in self.server.table if p.vaddr is not None)

    def create_peer(self, address: Address, session: Session, now: float,
                     tcp: ServerPacketLink | None = None, *, pending: Pending) -> Peer | None:
        """A peer for a client admitted by the pre-authentication ledger as ``pending`` (its
        entry is released when the peer authenticates or goes; here if no peer is made)."""
        if self._admitted() >= self.server.max_clients:
            self.server.counts["max_clients"] += 1
            self.server.preauth.release(pending)
            return None
        # peer-ids for max-clients authenticated peers plus the pre-authentication quota
        server = self.server
        peer_id = server.table.free_peer_id(server.max_clients + server.preauth.limits.total)
        if peer_id is None:  # pragma: no cover - both bounds above leave one free
            self.server.counts["max_clients"] += 1
            self.server.preauth.release(pending)
            return None
        peer = Peer(session, address, peer_id, now, tcp)
        peer.preauth = pending
        scripts = self.server.scripts
        if scripts.per_client:
            peer.script_env = scripts.client_env(str(address[0]), address[1])
        # Backstop for peers whose session never gets going; the session's own hand-window
        # failure normally comes first and says where it stalled.
        peer.remove_at = now + session.config.hand_window + 1.0
        self.server.table.add(peer)
        assert self.server.peers_nursery is not None
        self.server.peers_nursery.start_soon(self._peer_main, peer)
        return peer

    async def _peer_main(self, peer: Peer) -> None:
        reason = "stopped"
        try:
            with peer.cancel_scope:
                if peer.tcp is None:
                    await self._peer_timers(peer)
                else:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self.server.tcp_transport.reader, peer)
                        nursery.start_soon(self.server.tcp_transport.writer, peer)
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
        self._scripts_at_removal(peer, reason, now)
        self.server.table.remove(peer)
        self._preauth_release(peer)
        if peer.connected:
            self.server.router.connected = tuple(p for p in self.server.connected if p is not peer)
        if peer.entry is not None:
            self.server.allocator.release(peer.entry, now)
        if peer.fixed_address is not None:
            self.server.allocator.unreserve(peer.fixed_address, now)
        if peer.session.drops:
            self.server.drops.merge(peer.session.drops)
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
        admission = self.server.gateway.admit(pending, pending.address[0], opening=opening)
        self._close_evicted(admission.evicted)
        if admission.refused is None:
            return True
        self.preauth_refused(admission.refused, pending.address, now)
        return False

    def _close_evicted(self, evicted: Sequence[Pending]) -> None:
        for victim in evicted:
            victim.evicted = True
            victim.cancel_scope.cancel()
            self.server.counts["preauth_evicted"] += 1

    def preauth_refused(self, reason: str, address: Address, now: float) -> None:
        """Count a refusal of the pre-authentication ledger, logged at most every
        DROP_LOG_INTERVAL."""
        self.server.counts[reason] += 1
        self._preauth_refusals += 1
        if now - self._preauth_logged_at >= DROP_LOG_INTERVAL:
            limits = self.server.preauth.limits
            self.log.warning("preauth_limit_reached", reason=reason,
                             peer=format_address(address),
                             unauthenticated=len(self.server.preauth), quota=limits.total,
                             per_source=limits.per_source, refused=self._preauth_refusals)
            self._preauth_logged_at = now
            self._preauth_refusals = 0

    def _preauth_release(self, peer: Peer) -> None:
        if peer.preauth is not None:
            self.server.preauth.release(peer.preauth)
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
                from_peer = self.server.router.from_peer
                for packet in packets:
                    from_peer(peer, packet, now, out, to_device=to_device)
                self.server.write_device(to_device)
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
                    self.server.counts["tcp_send_queue_full"] += 1
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    return
        elif self.server.udp is not None:
            for data in datagrams:
                self.server.udp.try_send(data, peer.address)

    async def transmit(self, out: list[tuple[Peer, bytes]]) -> None:
        """Send encrypted packets, waiting while the UDP socket is full (runs of one peer's
        packets go out together)."""
        udp = self.server.udp
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
                    self.server.gateway.handshake_answered()
        elif isinstance(event, ev.TlsHandshakeComplete):
            self.events.publish(rt.TlsEstablished(event.key_id, event.peer.common_name,
                                                  event.description, peer.label))
            if self.server.scripts.tls_verify_configured:
                assert self.server.peers_nursery is not None
                self.server.peers_nursery.start_soon(self._tls_verify, peer, event)
        elif isinstance(event, ev.ClientAuthenticated):
            self._admit(peer, event, now)
        else:
            self.events.publish(rt.KeysReady(event.key_id, event.cipher, event.peer_id,
                                             peer.label, peer.common_name,
                                             event.key_derivation))
            if event.renegotiated:
                self.events.publish(rt.Renegotiated(event.key_id, event.cipher, event.peer_id,
                                                    peer.label, peer.common_name))
            elif not peer.connected:
                self._connected(peer, event.cipher)

    def _on_trouble(self, peer: Peer, event: ev.Event, now: float) -> None:
        log = self.server.log
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
        if not self.server.options.duplicate_cn:
            for other in self.server.table:
                if other is not peer and other.common_name == cn:
                    self.remove_peer(other, "duplicate_cn", replaced_by=peer.label)
        if self._admitted() >= self.server.max_clients:
            # the quota let more sessions start than max-clients can take
            self.server.counts["max_clients"] += 1
            self.remove_peer(peer, "max_clients")
            return
        client = self._client_config(peer, cn, now)
        if client is False:
            return
        push: tuple[str, ...] = self.server.push
        ifconfig_blocked = False
        if client is not None:
            push, ifconfig_blocked = client_push_list(push, client.push_edits)
            peer.iroutes = tuple((int(n.network_address), n.prefixlen) for n in client.iroutes)
        assigned6: tuple[str, ...] = ()
        if client is not None and client.ifconfig_push is not None:
            ifconfig = self._fixed_address(peer, client.ifconfig_push, now)
            if ifconfig is None:
                return
        else:
            entry = self.server.allocator.acquire(cn, now)
            if entry is None:
                self.log.warning("pool_exhausted", peer=peer.label, cn=cn,
                                 pool_size=self.server.allocator.pool.size)
                peer.session.reject(now, "no free address in the server's pool")
                return
            peer.entry = entry
            peer.vaddr = entry.local.packed
            ifconfig = entry.ifconfig_option()
            pool6 = self.server.pool6
            if pool6 is not None:  # the IPv6 pool address of the same index
                peer.vaddr6 = pool6.address(entry.index).packed
                assigned6 = (pool6.ifconfig_option(entry.index),)
        if client is not None:
            peer.connect_state = "partial"  # OpenVPN: the ccd handler succeeded
        if peer.script_env is not None:
            self._connect_env(peer, event, ifconfig, assigned6)
        if self.server.scripts.connect_hooks:
            assert self.server.peers_nursery is not None
            self.server.peers_nursery.start_soon(self._admit_scripted, peer, push,
                                                 ifconfig_blocked, ifconfig, assigned6)
            return
        peer.connect_state = "done"
        # push.c: ifconfig-ipv6 before ifconfig
        pushed = push if ifconfig_blocked else (*push, *assigned6, ifconfig)
        peer.session.accept(now, pushed, peer_id=peer.peer_id)

    # ------------------------------------------------------------------ server scripts

    def _connect_env(self, peer: Peer, event: ev.ClientAuthenticated, ifconfig: str,
                     assigned6: tuple[str, ...]) -> None:
        """The client's variables for client-connect and later (multi.c,
        multi_client_connect_setenv): certificate chain, peer-info, trusted address, pool
        address, connection time."""
        env = peer.script_env
        assert env is not None
        scripts = self.server.scripts
        env.update(se.peer_info_env(event.peer_info.raw))
        env.update(se.peer_env(scripts.chain(event.peer), event.peer.common_name))
        env.update(se.link_env(str(peer.address[0]), peer.address[1], trusted=True))
        self._pool_env(peer, ifconfig, assigned6)
        created = self.server.unix_offset + peer.created
        env.update(se.connect_time_env(int(created), local_time_text(created)))

    def _pool_env(self, peer: Peer, ifconfig: str, assigned6: tuple[str, ...]) -> None:
        env = peer.script_env
        assert env is not None
        for key in ("ifconfig_pool_remote_ip", "ifconfig_pool_netmask",
                    "ifconfig_pool_local_ip", "ifconfig_pool_remote_ip6",
                    "ifconfig_pool_local_ip6", "ifconfig_pool_ip6_netbits"):
            env.pop(key, None)
        words = ifconfig.split()
        o = self.server.options
        p2p = not self.server.tap and o.topology in ("net30", "p2p")
        env.update(se.pool_env(words[1], words[2], point_to_point=p2p))
        if assigned6:  # "ifconfig-ipv6 ADDRESS/BITS SERVER"
            _, address, server = assigned6[0].split()
            remote, _, bits = address.partition("/")
            env.update(se.pool6_env(remote, server, int(bits)))

    async def _tls_verify(self, peer: Peer, event: ev.TlsHandshakeComplete) -> None:
        """tls-verify: the session holds this key's handshake until the verdict."""
        env = peer.script_env if peer.script_env is not None else {}
        accepted, detail = await self.server.scripts.tls_verify(env, event.peer)
        if peer.removed:
            return
        now = trio.current_time()
        peer.session.peer_verdict(event.key_id, accepted, detail, now)
        self.drain(peer, now)
        peer.wakeup.set()

    async def _admit_scripted(self, peer: Peer, push: tuple[str, ...], ifconfig_blocked: bool,
                              ifconfig: str, assigned6: tuple[str, ...]) -> None:
        """The rest of an admission once client-connect and learn-address have run (in a
        task of its own: other clients are served meanwhile)."""
        scripts = self.server.scripts
        env = peer.script_env
        assert env is not None
        cn = peer.common_name or ""
        outcome = await scripts.client_connect(env)
        if peer.removed or peer.session.failed:
            return
        now = trio.current_time()
        if not outcome.ok:
            self._refuse_connect(peer, cn, now, outcome.detail)
            return
        if self.server.options.client_connect is not None:
            peer.connect_state = "partial"
        dynamic = outcome.config
        if dynamic is not None:
            if dynamic.disable:
                self._refuse_connect(peer, cn, now, "client-connect's config file: client is "
                                                    "disabled ('disable')")
                return
            reason = dynamic.unsupported
            if reason is None and dynamic.iroutes and self.server.tap:
                reason = "'iroute' needs 'dev tun' (a tap server learns MAC addresses instead)"
            if reason is not None:
                self._refuse_connect(peer, cn, now, f"client-connect's config file: {reason}")
                return
            push, blocked = client_push_list(push, dynamic.push_edits)
            ifconfig_blocked = ifconfig_blocked or blocked
            peer.iroutes = (*peer.iroutes, *((int(n.network_address), n.prefixlen)
                                             for n in dynamic.iroutes))
            if dynamic.ifconfig_push is not None:
                # the script's ifconfig-push wins over the pool's and the ccd file's
                self._release_address(peer, now)
                assigned6 = ()  # the pool's IPv6 address went with its IPv4 one
                fixed = self._fixed_address(peer, dynamic.ifconfig_push, now)
                if fixed is None:
                    if peer.connect_state == "partial":
                        self._start_disconnect(peer, now)
                    return
                ifconfig = fixed
                self._pool_env(peer, ifconfig, assigned6)
            self.log.info("client_connect_applied", peer=peer.label, cn=cn,
                          ifconfig_push=(str(dynamic.ifconfig_push.local)
                                         if dynamic.ifconfig_push is not None else None),
                          iroutes=[str(n) for n in dynamic.iroutes],
                          push_edits=len(dynamic.push_edits))
        if not await self._learn_addresses(peer, cn, ifconfig, env):
            return
        now = trio.current_time()
        peer.connect_state = "done"
        pushed = push if ifconfig_blocked else (*push, *assigned6, ifconfig)
        try:
            peer.session.accept(now, pushed, peer_id=peer.peer_id)
        except ProtocolError as exc:
            self.remove_peer(peer, "handshake_failed", cause=str(exc))
            return
        self.drain(peer, now)
        peer.wakeup.set()

    async def _learn_addresses(self, peer: Peer, cn: str, ifconfig: str,
                               env: dict[str, str]) -> bool:
        """learn-address add for the client's address, then each iroute (multi.c,
        multi_client_connect_late_setup): one that fails is not routed to the client. False
        when the client went meanwhile."""
        scripts = self.server.scripts
        if self.server.options.learn_address is None:
            return True
        env["script_type"] = "learn-address"
        own = ifconfig.split()[1]
        if await scripts.learn_address("add", own, cn, env):
            peer.learned.append(own)
        else:
            peer.vaddr_refused = True
            self.log.warning("learn_address_refused", peer=peer.label, cn=cn, address=own)
        if peer.vaddr6 is not None:  # then its IPv6 address (multi.c: IPv4 first)
            own6 = str(ipaddress.IPv6Address(peer.vaddr6))
            if await scripts.learn_address("add", own6, cn, env):
                peer.learned.append(own6)
            else:
                self.log.warning("learn_address_refused", peer=peer.label, cn=cn,
                                 address=own6)
        kept = []
        for network, bits in peer.iroutes:
            text = se.learn_address_text(network, bits)
            if await scripts.learn_address("add", text, cn, env):
                peer.learned.append(text)
                kept.append((network, bits))
            else:
                self.log.warning("learn_address_refused", peer=peer.label, cn=cn,
                                 address=text)
        peer.iroutes = tuple(kept)
        if peer.removed:  # gone while the scripts ran: forget what was just learned
            for address in peer.learned:
                scripts.learn_address_later("delete", address, None, None)
            peer.learned.clear()
            return False
        return not peer.session.failed

    def _release_address(self, peer: Peer, now: float) -> None:
        if peer.entry is not None:
            self.server.allocator.release(peer.entry, now)
            peer.entry = None
            peer.vaddr6 = None
        if peer.fixed_address is not None:
            self.server.allocator.unreserve(peer.fixed_address, now)
            peer.fixed_address = None
        peer.vaddr = None

    def _refuse_connect(self, peer: Peer, cn: str, now: float, reason: str) -> None:
        """client-connect (or its config file) refused the client: AUTH_FAILED; the
        client-disconnect script runs when an earlier handler (the ccd file, or the script
        itself before 'disable') had succeeded, as OpenVPN does (multi.c,
        multi_connection_established: CAS_PENDING_DEFERRED_PARTIAL)."""
        self.log.warning("client_connect_refused", peer=peer.label, cn=cn, reason=reason)
        if peer.connect_state == "partial":
            self._start_disconnect(peer, now)
        peer.session.reject(now, detail=reason)
        self.drain(peer, now)
        peer.wakeup.set()

    def _start_disconnect(self, peer: Peer, now: float) -> None:
        """Run client-disconnect (once) for ``peer`` in the server's script nursery."""
        if peer.connect_state == "disconnected" or peer.script_env is None:
            return
        peer.connect_state = "disconnected"
        scripts = self.server.scripts
        nursery = self.server.scripts_nursery
        if self.server.options.client_disconnect is None or nursery is None:
            return
        env = peer.script_env
        env.update(se.link_env(str(peer.address[0]), peer.address[1], trusted=True))
        nursery.start_soon(functools.partial(
            scripts.client_disconnect, env, bytes_received=peer.rx_bytes,
            bytes_sent=peer.tx_bytes, duration=int(now - peer.created)))

    def _scripts_at_removal(self, peer: Peer, reason: str, now: float) -> None:
        """client-disconnect for an admitted client; learn-address delete of what was
        learned for it (OpenVPN's reaper: no common name, an empty environment), except
        when the server itself exits."""
        if peer.connect_state == "done":
            self._start_disconnect(peer, now)
        if reason != "server_exiting":
            for address in peer.learned:
                self.server.scripts.learn_address_later("delete", address, None, None)
        peer.learned.clear()

    def _client_config(self, peer: Peer, cn: str,
                       now: float) -> ClientConfig | Literal[False] | None:
        """The client's client-config-dir file (None: none applies), or False when the client
        is refused: no file under ccd-exclusive, a bad file, ``disable``, or what trivpn
        cannot serve yet. Read at each connect, as OpenVPN does."""
        o = self.server.options
        if o.client_config_dir is None:
            return None
        try:
            found = read_client_config(o.client_config_dir, cn, exclusive=o.ccd_exclusive,
                                       base_dir=o.base_dir)
        except ConfigError as exc:
            return self._refuse(peer, cn, now, str(exc))
        if isinstance(found, str):
            return self._refuse(peer, cn, now, found)
        if found is None:
            return None
        if found.disable:
            return self._refuse(peer, cn, now, f"{found.path}: client is disabled ('disable')")
        reason = found.unsupported
        if reason is None and found.iroutes and self.server.tap:
            reason = "'iroute' needs 'dev tun' (a tap server learns MAC addresses instead)"
        if reason is not None:
            return self._refuse(peer, cn, now, f"{found.path}: {reason}")
        self.log.info("ccd_applied", peer=peer.label, cn=cn, path=str(found.path),
                      ifconfig_push=(str(found.ifconfig_push.local)
                                     if found.ifconfig_push is not None else None),
                      iroutes=[str(n) for n in found.iroutes],
                      push_edits=len(found.push_edits))
        return found

    def _refuse(self, peer: Peer, cn: str, now: float, reason: str) -> Literal[False]:
        self.log.warning("ccd_refused", peer=peer.label, cn=cn, reason=reason)
        peer.session.reject(now, detail=reason)
        return False

    def _fixed_address(self, peer: Peer, push: IfconfigPush, now: float) -> str | None:
        """Take the client's ``ifconfig-push`` address (kept from the pool while it is
        connected); the ``ifconfig`` option to push, or None when the client was refused."""
        server = self.server
        pool = server.allocator.pool
        own = server_tun_ifconfig(server.options)
        network = server.options.server.network if server.options.server is not None else (
            ipaddress.IPv4Network(f"{pool.server}/{pool.netmask}", strict=False))
        reason = check_fixed_address(push, tap=server.tap, topology=server.options.topology,
                                     server_network=network,
                                     server_address=own.local if own is not None else None)
        if reason is None and any(p is not peer and p.vaddr == push.local.packed
                                  for p in server.table):
            reason = f"'ifconfig-push {push.local}': another client has that address"
        if reason is None and not server.allocator.reserve(push.local):
            reason = (f"'ifconfig-push {push.local}': a client of the pool has that address "
                      "(keep fixed addresses outside 'ifconfig-pool')")
        if reason is not None:
            self._refuse(peer, peer.common_name or "", now, reason)
            return None
        peer.fixed_address = push.local
        peer.vaddr = push.local.packed
        return push.pushed()

    def _connected(self, peer: Peer, cipher: str) -> None:
        peer.connected = True
        peer.remove_at = None
        if not peer.vaddr_refused:  # learn-address refused it: not routed (multi_learn_addr)
            self.server.table.route_vaddr(peer)
        if peer.iroutes:
            self.server.table.add_iroutes(peer, peer.iroutes)
        self.server.router.connected = (*self.server.connected, peer)
        self.events.publish(rt.PeerConnected(peer.label, peer.common_name, peer.vpn_ip, cipher,
                                             peer.peer_id,
                                             "tcp" if peer.tcp is not None else "udp",
                                             peer.vpn_ip6))
