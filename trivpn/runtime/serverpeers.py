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

import base64
import functools
import ipaddress
import math
import os
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import trio

from trivpn.config.ccd import (
    ClientConfig,
    IfconfigIpv6Push,
    IfconfigPush,
    check_fixed_address,
    check_fixed_address6,
    client_push_list,
    read_client_config,
)
from trivpn.config.derive import AddressPool6, server_tun_ifconfig, server_tun_ifconfig6
from trivpn.config.errors import ConfigError
from trivpn.protocol import authtoken as at
from trivpn.protocol import events as ev
from trivpn.protocol import userauth as ua
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.session import Session
from trivpn.runtime import events as rt
from trivpn.runtime import scriptenv as se
from trivpn.runtime.link import Address
from trivpn.runtime.routing import VlanRouter, power_of_two_at_least
from trivpn.runtime.serverauth import (
    PAM_THREADS,
    AuthResult,
    ClientAuthBroker,
    Credentials,
    ScriptAuth,
    load_token_key,
    pam_auth,
    run_script_auth,
)
from trivpn.runtime.serverpeer import (
    TCP_SEND_QUEUE,
    Peer,
    Pending,
    format_address,
    next_deadline,
)
from trivpn.runtime.serverscripts import local_time_text
from trivpn.runtime.supervision import GuardedNursery, task_arguments, task_name
from trivpn.runtime.transport import ServerPacketLink
from trivpn.sessionsetup import expected_client_options_string

if TYPE_CHECKING:
    from trivpn.runtime.server import Server

DROP_LOG_INTERVAL = 5.0
_GUARDS = (GuardedNursery._guarded.__code__,)  # the wrapper that caught a peer task's bug
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
        o = server.options
        self.script_auth = ScriptAuth(
            o.auth_user_pass_verify, o.auth_user_pass_verify_via_file, o.script_security,
            o.setenv, tmp_dir=str(o.tmp_dir) if o.tmp_dir is not None else None,
        ) if o.auth_user_pass_verify else None
        self._auth_scopes: dict[Peer, trio.CancelScope] = {}
        # management-client-auth: the management interface decides (it reads this broker)
        self.client_auth = ClientAuthBroker() if o.management_client_auth else None
        self._cids: dict[Peer, int] = {}
        self._management_announced: set[Peer] = set()  # told >CLIENT:CONNECT (DAF_INITIAL_AUTH)
        if self.client_auth is not None:
            self.client_auth.kill = self.kill_by_cid
        self._auth_pushes: dict[Peer, tuple[str, ...]] = {}  # from client-auth config lines
        self._auth_events: dict[Peer, ev.ClientAuthenticated] = {}  # for renegotiations
        self._pam_limiter = trio.CapacityLimiter(PAM_THREADS)
        # auth-gen-token: the HMAC key (load_auth()) and each peer's token session
        # (session id, initial time): renewed tokens keep them
        self.token_key: bytes | None = None
        self._token_sessions: dict[Peer, tuple[bytes, int]] = {}
        # a TCP client's packets waiting to be sent: tcp-queue-limit (multi.h,
        # multi_output_queue_ready()), within bcast-buffers' power of two (mtcp.c
        # multi_tcp_instance_specific_init(): the deferred queue is a buffer set of that size)
        self.tcp_queue = TCP_SEND_QUEUE if o.tcp_queue_limit is None else o.tcp_queue_limit
        if o.bcast_buffers is not None:
            self.tcp_queue = min(self.tcp_queue, power_of_two_at_least(o.bcast_buffers))
        # opt-verify: the options string a consistent client sends
        self.expected_options = expected_client_options_string(o) if o.opt_verify else None

    @property
    def password_check(self) -> bool:
        """Clients must send a username and password (OpenVPN's
        tls_session_user_pass_enabled())."""
        return (self.script_auth is not None or self.client_auth is not None
                or self.server.options.auth_pam_service is not None)

    def load_auth(self) -> None:
        """Read what authentication needs before serving (the auth-gen-token secret)."""
        o = self.server.options
        if o.auth_gen_token and self.password_check:
            self.token_key = load_token_key(o.auth_gen_token_secret)

    def _admitted(self) -> int:
        """Peers that authenticated and got their addresses (pool, fixed, or none with
        server-bridge's DHCP form): what max-clients bounds."""
        return sum(1 for p in self.server.table if p.admitted)

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
        peer = Peer(session, address, peer_id, now, tcp, tcp_queue=self.tcp_queue)
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
        scope = self._auth_scopes.pop(peer, None)
        if scope is not None:  # its authentication script or deferred decision
            scope.cancel()
        self._token_sessions.pop(peer, None)
        self._management_disconnect(peer, now)
        self._cids.pop(peer, None)
        self._auth_pushes.pop(peer, None)
        self._auth_events.pop(peer, None)
        self._scripts_at_removal(peer, reason, now)
        self.server.table.remove(peer)
        if isinstance(self.server.router, VlanRouter):
            self.server.router.pvids.pop(peer, None)
        self._preauth_release(peer)
        if peer.connected:
            self.server.router.connected = tuple(p for p in self.server.connected if p is not peer)
        if peer.entry is not None:
            self.server.allocator.release(peer.entry, now)
        if peer.fixed_address is not None:
            self.server.allocator.unreserve(peer.fixed_address, now)
        if peer.fixed_index6 is not None:
            self.server.allocator.unreserve_index(peer.fixed_index6, now)
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

    def kill_peer(self, peer: Peer, linger: float, reason: str = "killed", *,
                  message: str = "RESTART") -> None:
        """Management ``kill``: tell the client to restart, remove it ``linger`` s later."""
        now = trio.current_time()
        try:
            peer.session.send_control_message(message, now)
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

    def task_failed(self, async_fn: Callable[..., Awaitable[object]], args: tuple[Any, ...],
                    exc: Exception) -> None:
        """A bug in a task of one peer (its timers, tls-verify, authentication, client-connect,
        client-disconnect, a TCP opening): that peer is dropped (reason ``internal_error``)
        and the bug logged and counted as ``peer_error`` (one traceback per kind and
        minute); every other peer goes on. Called from the ``except`` block."""
        found = task_arguments(async_fn, args)
        peer = next((a for a in found if isinstance(a, Peer)), None)
        pending = next((a for a in found if isinstance(a, Pending)), None)
        label = (peer.label if peer is not None
                 else format_address(pending.address) if pending is not None else None)
        self.errors.exception("peer_error", trio.current_time(), peer=label,
                              cn=peer.common_name if peer is not None else None,
                              task=task_name(exc, _GUARDS), error=repr(exc)[:200])
        if peer is not None:
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
        elif isinstance(event, ev.ClientReauthenticating):
            self._reauthenticate(peer, event, now)
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
        peer.common_name = event.peer.common_name
        peer.cert_serial = event.peer.serial
        if self.expected_options is not None \
                and not options_consistent(event.options, self.expected_options):
            # ssl.c, key_method_2_read(): "Option inconsistency warnings triggering
            # disconnect due to --opt-verify" (the client then gets AUTH_FAILED)
            self.log.warning("opt_verify_refused", peer=peer.label, cn=peer.common_name,
                             received=event.options[:512], expected=self.expected_options)
            peer.session.reject(now, detail="options inconsistent with the server's "
                                            "(opt-verify)")
            return
        if not self.password_check:
            self._admit_authenticated(peer, event.peer.common_name, now, event=event)
            return
        o = self.server.options
        username, password = event.username, event.password
        if username is None or password is None:
            if not o.auth_user_pass_optional:
                # OpenVPN (ssl.c, key_method_2_read()): "TLS Error: Auth Username/Password was
                # not provided by peer" -- a TLS error, no AUTH_FAILED: the client times out
                self.log.warning("auth_credentials_missing", peer=peer.label,
                                 cn=event.peer.common_name)
                self.remove_peer(peer, "auth_credentials_missing")
                return
            username = password = ""
        creds = Credentials(ua.clean_username(username), ua.clean_password(password))
        self._auth_events[peer] = event
        extra_env: dict[str, str] = {}
        if self.token_key is not None:
            result = self._check_token(peer, creds, now, extra_env)
            if result is not None:
                self._auth_decided(peer, creds, result, now, extra_env)
                return
        assert self.server.peers_nursery is not None
        self.server.peers_nursery.start_soon(partial(
            self._authenticate, peer, event, creds, started=now, extra_env=extra_env,
            reauth_key=None))

    def _reauthenticate(self, peer: Peer, event: ev.ClientReauthenticating, now: float) -> None:
        """A renegotiation brought the credentials again: check them as at connect (a token
        inside, the rest in a task); the username may not change (OpenVPN
        tls_lock_username())."""
        first = self._auth_events.get(peer)
        if first is None or not self.password_check:
            peer.session.reauth_verdict(event.key_id, True, now)  # nothing to check again
            return
        username, password = event.username, event.password
        if username is None or password is None:
            if not self.server.options.auth_user_pass_optional:
                self._reauth_decided(peer, Credentials(""), AuthResult(
                    ua.Verdict.REJECT, None, "credentials_missing"), event.key_id, now)
                return
            username = password = ""
        creds = Credentials(ua.clean_username(username), ua.clean_password(password))
        locked = ua.clean_username(first.username or "")
        if creds.username != locked and not (at.is_token(creds.password) and not creds.username):
            self._reauth_decided(peer, creds, AuthResult(
                ua.Verdict.REJECT, None, "username_changed"), event.key_id, now)
            return
        extra_env: dict[str, str] = {}
        if self.token_key is not None:
            result = self._check_token(peer, creds, now, extra_env)
            if result is not None:
                self._reauth_decided(peer, creds, result, event.key_id, now)
                return
        assert self.server.peers_nursery is not None
        self.server.peers_nursery.start_soon(partial(
            self._authenticate, peer, first, creds, started=now, extra_env=extra_env,
            reauth_key=event.key_id))

    def _reauth_decided(self, peer: Peer, creds: Credentials, result: AuthResult, key_id: int,
                        now: float) -> None:
        # the renegotiated key was held until now (SessionConfig.hold_reauth)
        peer.session.reauth_verdict(key_id, result.verdict is ua.Verdict.ACCEPT, now)
        if result.verdict is not ua.Verdict.ACCEPT and peer.session.failed:
            return  # an earlier renegotiation was refused already
        if result.verdict is not ua.Verdict.ACCEPT:
            self.log.warning("auth_user_pass_failed", peer=peer.label, cn=peer.common_name,
                             username=creds.username, why=result.detail, key_id=key_id)
            peer.session.reject(now, result.reason, key_id=key_id,
                                detail=f"username/password verification failed at key "
                                       f"{key_id} ({result.detail})")
        else:
            self.log.info("auth_user_pass_ok", peer=peer.label, username=creds.username,
                          cn=peer.common_name, how=result.detail, key_id=key_id)
            if self.token_key is not None:  # a renewed token (push.c send_push_reply_auth_token)
                token = self._token_pushes(peer, creds.username)[0]
                peer.session.send_control_message(f"PUSH_REPLY,{token}", now, key_id=key_id)
        self.drain(peer, now)
        self.wake_if_sooner(peer)

    def _unix_now(self) -> int:
        return int(trio.current_time() + self.server.unix_offset)

    def _check_token(self, peer: Peer, creds: Credentials, now: float,
                     env: dict[str, str]) -> AuthResult | None:
        """auth-gen-token: a valid token admits the client without the script (unless
        external-auth); a bad or expired one refuses it. None: ask the script. Fills the
        script's session_state / session_id (OpenVPN add_session_token_env())."""
        assert self.token_key is not None
        o = self.server.options
        if not at.is_token(creds.password):
            env["session_state"] = "Initial"
            if peer not in self._token_sessions:  # a renegotiation keeps its token session
                self._token_sessions[peer] = (os.urandom(at.SESSION_ID_LEN), self._unix_now())
            env["session_id"] = _session_id_text(self._token_sessions[peer][0])
            return None
        check = at.verify(self.token_key, creds.password, creds.username,
                          now=self._unix_now(),
                          renewal=o.auth_token_renewal or o.reneg_sec or 3600,
                          lifetime=o.auth_token_lifetime)
        env["session_state"] = check.state.value
        if check.state in (at.TokenState.VALID, at.TokenState.VALID_EMPTY_USER):
            self._token_sessions[peer] = (check.session_id, check.initial)
            env["session_id"] = _session_id_text(check.session_id)
        if o.auth_token_external:
            if peer not in self._token_sessions:
                session_id = os.urandom(at.SESSION_ID_LEN)
                self._token_sessions[peer] = (session_id, self._unix_now())
                env["session_id"] = _session_id_text(session_id)
            return None
        if check.state is at.TokenState.VALID:
            return AuthResult(ua.Verdict.ACCEPT, None, "auth_token")
        return AuthResult(ua.Verdict.REJECT,
                          at.EXPIRED_REASON if check.state is at.TokenState.EXPIRED else None,
                          f"auth_token_{check.state.name.lower()}")

    def _token_pushes(self, peer: Peer, username: str) -> tuple[str, ...]:
        """``auth-token`` (and ``auth-token-user``) for the push reply (push.c,
        prepare_auth_token_push_reply())."""
        if self.token_key is None:
            return ()
        session_id, initial = self._token_sessions.get(
            peer, (os.urandom(at.SESSION_ID_LEN), self._unix_now()))
        self._token_sessions[peer] = (session_id, initial)
        token = at.generate(self.token_key, username, now=self._unix_now(),
                            session_id=session_id, initial=initial)
        pushes = [f"auth-token {token}"]
        if username:
            pushes.append("auth-token-user " + base64.b64encode(
                username.encode("utf-8", "surrogateescape")).decode())
        return tuple(pushes)

    async def _authenticate(self, peer: Peer, event: ev.ClientAuthenticated,
                            creds: Credentials, *, started: float,
                            extra_env: dict[str, str], reauth_key: int | None) -> None:
        """Runs the management query and the auth-user-pass-verify script (and waits for a
        deferred decision) in its own task: other peers go on meanwhile. A bug here costs
        this peer only."""
        try:
            await self._authenticate_peer(peer, event, creds, started=started,
                                          extra_env=extra_env, reauth_key=reauth_key)
        except Exception as exc:
            self.peer_failed(peer, exc)

    async def _authenticate_peer(self, peer: Peer, event: ev.ClientAuthenticated,
                                 creds: Credentials, *, started: float,
                                 extra_env: dict[str, str], reauth_key: int | None) -> None:
        cfg = peer.session.config
        deadline = started + cfg.hand_window
        max_pending = max((cfg.reneg_seconds or 0) / 2, cfg.hand_window)

        def on_pending(messages: list[str], until: float) -> None:
            if peer.removed:
                return
            now = trio.current_time()
            for text in messages:
                peer.session.send_control_message(text, now)
            if peer.remove_at is not None:
                peer.remove_at = max(peer.remove_at, until + 1.0)
            self.log.info("auth_pending", peer=peer.label, cn=peer.common_name,
                          until=round(until - now, 1))
            self.drain(peer, now)

        scope = trio.CancelScope()
        self._auth_scopes[peer] = scope
        result: AuthResult | None = AuthResult(ua.Verdict.ACCEPT, None, "")
        try:
            with scope:
                if self.client_auth is not None:  # management first (REAUTH for a reneg.)
                    result = await self._ask_management(peer, event, creds, deadline,
                                                        extra_env, reauth=reauth_key is not None)
                service = self.server.options.auth_pam_service
                if service is not None and result is not None \
                        and result.verdict is ua.Verdict.ACCEPT:  # the plugin, then the script
                    result = await pam_auth(service, creds, self._pam_limiter)
                if self.script_auth is not None and result is not None \
                        and result.verdict is ua.Verdict.ACCEPT:
                    result = await run_script_auth(
                        self.script_auth, creds,
                        common_name=ua.script_common_name(event.peer.subject,
                                                          event.peer.common_name),
                        address=(str(peer.address[0]), int(peer.address[1])),
                        info=event.peer_info, deadline=deadline, max_pending=max_pending,
                        started=started, on_pending=on_pending, extra_env=extra_env,
                        leftover_env=extra_env)
        except Exception as exc:  # a script that cannot start (missing, not executable)
            self.log.warning("auth_script_failed", peer=peer.label, error=repr(exc))
            result = AuthResult(ua.Verdict.REJECT, None, "script_not_run")
        finally:
            self._auth_scopes.pop(peer, None)
        if result is None or peer.removed:
            return
        now = trio.current_time()
        if reauth_key is not None:
            self._reauth_decided(peer, creds, result, reauth_key, now)
            return
        self._auth_decided(peer, creds, result, now, extra_env)
        self.drain(peer, now)
        self.wake_if_sooner(peer)

    async def _ask_management(self, peer: Peer, event: ev.ClientAuthenticated,
                              creds: Credentials, deadline: float,
                              extra_env: dict[str, str], *, reauth: bool = False) -> AuthResult:
        """``>CLIENT:CONNECT,cid,kid`` (``>CLIENT:REAUTH,cid,kid`` for a renegotiation of an
        established client) and the client's environment (with its password, as OpenVPN's
        verify_user_pass_management() gives it, after ``n_clients``: manage.c,
        management_notify_client_needing_auth()) to the management clients."""
        assert self.client_auth is not None
        cid = self._cids.setdefault(peer, self.client_auth.new_cid())
        env = {"n_clients": str(len(self.server.connected))}
        if reauth and peer.script_env is not None:
            # the client's set as it is now, with the new credentials
            env.update(peer.script_env)
            env.update(extra_env)
            env.update({"username": creds.username, "password": creds.password,
                        "untrusted_ip": str(peer.address[0]),
                        "untrusted_port": str(peer.address[1])})
            env.pop("script_type", None)
        else:
            env.update(ua.user_pass_env(
                username=creds.username, password=creds.password,
                common_name=ua.script_common_name(event.peer.subject, event.peer.common_name),
                untrusted_ip=str(peer.address[0]), untrusted_port=int(peer.address[1]),
                info=event.peer_info, control_files={}, extra=extra_env))
            del env["script_type"]
        self._management_announced.add(peer)
        answer = await self.client_auth.ask(cid, self.client_auth.new_kid(), env, deadline,
                                            mode="REAUTH" if reauth else "CONNECT")
        if answer is None:
            return AuthResult(ua.Verdict.REJECT, None, "management_no_answer")
        if not answer.allow:
            self.log.info("management_client_deny", peer=peer.label, cid=cid,
                          reason=answer.reason)
            return AuthResult(ua.Verdict.REJECT, answer.client_reason, "management_deny")
        pushes = []
        for line in answer.config:
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                words = [line]
            if len(words) == 2 and words[0] == "push":
                pushes.append(words[1])
            elif words:
                self.log.warning("management_client_config_refused", peer=peer.label,
                                 line=line[:200], why="only 'push' lines are applied")
        self._auth_pushes[peer] = tuple(pushes)
        return AuthResult(ua.Verdict.ACCEPT, None, "management")

    def _auth_decided(self, peer: Peer, creds: Credentials, result: AuthResult,
                      now: float, auth_env: Mapping[str, str]) -> None:
        o = self.server.options
        if result.verdict is ua.Verdict.ACCEPT and o.username_as_common_name \
                and not ua.username_as_common_name_ok(creds.username):
            result = AuthResult(ua.Verdict.REJECT, None, "username_too_long_for_common_name")
        if result.verdict is not ua.Verdict.ACCEPT:
            # never the password in the log
            self.log.warning("auth_user_pass_failed", peer=peer.label, cn=peer.common_name,
                             username=creds.username, why=result.detail)
            peer.session.reject(now, result.reason,
                                detail=f"username/password verification failed "
                                       f"({result.detail})")
            return
        cn = creds.username if o.username_as_common_name else (peer.common_name or "")
        self.log.info("auth_user_pass_ok", peer=peer.label, username=creds.username,
                      cn=cn, how=result.detail)
        if peer.script_env is not None:
            # what the authentication left in the client's set for its later scripts
            # (ssl_verify.c: set_verify_user_pass_env() puts username, session_id and
            # session_state there, key_state_gen_auth_control_files() the control files'
            # names, and neither takes them out)
            peer.script_env.update(auth_env)
            peer.script_env["username"] = creds.username
        self._admit_authenticated(peer, cn, now, event=self._auth_events.get(peer),
                                  extra_push=(*self._auth_pushes.pop(peer, ()),
                                                  *self._token_pushes(peer, creds.username)))

    def _admit_authenticated(self, peer: Peer, cn: str, now: float,
                             extra_push: tuple[str, ...] = (),
                             event: ev.ClientAuthenticated | None = None) -> None:
        peer.common_name = cn
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
            peer.iroutes6 = tuple((int(n.network_address), n.prefixlen)
                                  for n in client.iroutes_ipv6)
            self._set_vlan(peer, client)
        assigned = self._assign_addresses(peer, cn, client, now)
        if assigned is None:
            return
        ifconfig, assigned6 = assigned
        if client is not None:
            peer.connect_state = "partial"  # OpenVPN: the ccd handler succeeded
        if peer.script_env is not None and event is not None:
            self._connect_env(peer, event, ifconfig, assigned6)
        if self.server.scripts.connect_hooks:
            assert self.server.peers_nursery is not None
            self.server.peers_nursery.start_soon(self._admit_scripted, peer, (*push, *extra_push),
                                                 ifconfig_blocked, ifconfig, assigned6)
            return
        peer.connect_state = "done"
        # push.c: ifconfig-ipv6 before ifconfig
        pushed = ((*push, *extra_push, *assigned6) if ifconfig_blocked or ifconfig is None
                  else (*push, *extra_push, *assigned6, ifconfig))
        peer.session.accept(now, pushed, peer_id=peer.peer_id)

    def _set_vlan(self, peer: Peer, client: ClientConfig) -> None:
        """``vlan-pvid`` of a client-config-dir file or a client-connect config file (an
        OPT_P_INSTANCE option in OpenVPN's options.c), on a server with vlan-tagging."""
        router = self.server.router
        if client.vlan_pvid is not None and isinstance(router, VlanRouter):
            router.pvids[peer] = client.vlan_pvid

    def _assign_addresses(self, peer: Peer, cn: str, client: ClientConfig | None,
                          now: float) -> tuple[str | None, tuple[str, ...]] | None:
        """The client's ``ifconfig`` option (None on an IPv6-only server) and its
        ``ifconfig-ipv6`` ones (pool, or fixed by its client-config-dir file); None when the
        client was refused."""
        assigned6: tuple[str, ...] = ()
        ifconfig: str | None
        if self.server.allocator.pool is None:  # IPv6-only, or server-bridge's DHCP form
            if client is not None and client.ifconfig_push is not None:
                self._refuse(peer, cn, now, "'ifconfig-push' needs an IPv4 pool on the server "
                                            "('server NET MASK', 'ifconfig' with "
                                            "'ifconfig-pool', or 'server-bridge GW MASK "
                                            "START END')")
                return None
            ifconfig = None
            pool6 = self.server.pool6
            if pool6 is not None and (client is None or client.ifconfig_ipv6_push is None):
                index = self.server.allocator.acquire_index(cn, now)
                if index is None:
                    self._refuse_pool_exhausted(peer, cn, now)
                    return None
                peer.fixed_index6 = index
                peer.vaddr6 = pool6.address(index).packed
                assigned6 = (pool6.ifconfig_option(index),)
        elif client is not None and client.ifconfig_push is not None:
            pool6 = self.server.pool6
            if client.ifconfig_ipv6_push is None and pool6 is not None:
                assigned6 = self._pool_ipv6_of_fixed_client(peer, cn, pool6, now)
            ifconfig = self._fixed_address(peer, client.ifconfig_push, now)
            if ifconfig is None:
                return None
        else:
            entry = self.server.allocator.acquire(cn, now)
            if entry is None:
                self._refuse_pool_exhausted(peer, cn, now)
                return None
            peer.entry = entry
            peer.vaddr = entry.local.packed
            ifconfig = entry.ifconfig_option()
            pool6 = self.server.pool6
            if pool6 is not None:  # the IPv6 pool address of the same index
                peer.vaddr6 = pool6.address(entry.index).packed
                assigned6 = (pool6.ifconfig_option(entry.index),)
        if client is not None and client.ifconfig_ipv6_push is not None:
            ifconfig6 = self._fixed_address6(peer, client.ifconfig_ipv6_push, now)
            if ifconfig6 is None:
                return None
            assigned6 = (ifconfig6,)
        if client is not None and client.ifconfig_ipv6_blocked:
            assigned6 = ()  # push-remove ifconfig-ipv6 (the address is still the client's)
        peer.admitted = True
        return ifconfig, assigned6

    # ------------------------------------------------------------------ server scripts

    def _connect_env(self, peer: Peer, event: ev.ClientAuthenticated, ifconfig: str | None,
                     assigned6: tuple[str, ...]) -> None:
        """The client's variables for client-connect and later (multi.c,
        multi_client_connect_setenv): certificate chain, peer-info, trusted address, pool
        address, connection time."""
        env = peer.script_env
        assert env is not None
        scripts = self.server.scripts
        env.update(se.peer_info_env(event.peer_info.raw))
        # common_name: the username under username-as-common-name (ssl_verify.c,
        # set_common_name())
        env.update(se.peer_env(scripts.chain(event.peer), peer.common_name or "",
                               self.server.options.x509_track))
        env.update(se.link_env(str(peer.address[0]), peer.address[1], trusted=True))
        self._pool_env(peer, ifconfig, assigned6)
        created = self.server.unix_offset + peer.created
        env.update(se.connect_time_env(int(created), local_time_text(created)))

    def _pool_env(self, peer: Peer, ifconfig: str | None, assigned6: tuple[str, ...]) -> None:
        env = peer.script_env
        assert env is not None
        for key in ("ifconfig_pool_remote_ip", "ifconfig_pool_netmask",
                    "ifconfig_pool_local_ip", "ifconfig_pool_remote_ip6",
                    "ifconfig_pool_local_ip6", "ifconfig_pool_ip6_netbits"):
            env.pop(key, None)
        if ifconfig is not None:  # "ifconfig LOCAL REMOTE_OR_NETMASK" (not IPv6-only)
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
                              ifconfig: str | None, assigned6: tuple[str, ...]) -> None:
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
            if (dynamic.iroutes or dynamic.iroutes_ipv6) and self.server.tap:
                name = "iroute" if dynamic.iroutes else "iroute-ipv6"
                self._refuse_connect(peer, cn, now, f"client-connect's config file: '{name}' "
                                     "needs 'dev tun' (a tap server learns MAC addresses "
                                     "instead)")
                return
            push, blocked = client_push_list(push, dynamic.push_edits)
            ifconfig_blocked = ifconfig_blocked or blocked
            peer.iroutes = (*peer.iroutes, *((int(n.network_address), n.prefixlen)
                                             for n in dynamic.iroutes))
            peer.iroutes6 = (*peer.iroutes6, *((int(n.network_address), n.prefixlen)
                                               for n in dynamic.iroutes_ipv6))
            self._set_vlan(peer, dynamic)
            if dynamic.ifconfig_push is not None:
                # the script's ifconfig-push wins over the pool's and the ccd file's
                self._release_address(peer, now)
                assigned6 = ()  # the pool's IPv6 address went with its IPv4 one
                fixed = self._fixed_address(peer, dynamic.ifconfig_push, now)
                if fixed is None:
                    self._end_refused_connect(peer, now)
                    return
                ifconfig = fixed
                self._pool_env(peer, ifconfig, assigned6)
            if dynamic.ifconfig_ipv6_push is not None:
                # the script's ifconfig-ipv6-push wins over the pool's and the ccd file's IPv6;
                # the IPv4 address stays (multi.c, multi_client_connect_post():
                # multi_select_virtual_addr() after the file is imported)
                if peer.fixed_index6 is not None:
                    self.server.allocator.unreserve_index(peer.fixed_index6, now)
                    peer.fixed_index6 = None
                peer.vaddr6 = None
                fixed6 = self._fixed_address6(peer, dynamic.ifconfig_ipv6_push, now)
                if fixed6 is None:
                    self._end_refused_connect(peer, now)
                    return
                assigned6 = (fixed6,)
                self._pool_env(peer, ifconfig, assigned6)
            self.log.info("client_connect_applied", peer=peer.label, cn=cn,
                          ifconfig_push=(str(dynamic.ifconfig_push.local)
                                         if dynamic.ifconfig_push is not None else None),
                          ifconfig_ipv6_push=(str(dynamic.ifconfig_ipv6_push.local)
                                              if dynamic.ifconfig_ipv6_push is not None
                                              else None),
                          iroutes=[str(n) for n in (*dynamic.iroutes, *dynamic.iroutes_ipv6)],
                          push_edits=len(dynamic.push_edits))
        if not await self._learn_addresses(peer, cn, ifconfig, env):
            return
        now = trio.current_time()
        peer.connect_state = "done"
        pushed = (push if ifconfig_blocked
                  else (*push, *assigned6) if ifconfig is None
                  else (*push, *assigned6, ifconfig))
        try:
            peer.session.accept(now, pushed, peer_id=peer.peer_id)
        except ProtocolError as exc:
            self.remove_peer(peer, "handshake_failed", cause=str(exc))
            return
        self.drain(peer, now)
        peer.wakeup.set()

    async def _learn_addresses(self, peer: Peer, cn: str, ifconfig: str | None,
                               env: dict[str, str]) -> bool:
        """learn-address add for the client's address, then each iroute (multi.c,
        multi_client_connect_late_setup): one that fails is not routed to the client. False
        when the client went meanwhile."""
        scripts = self.server.scripts
        if self.server.options.learn_address is None:
            return True
        env["script_type"] = "learn-address"
        if ifconfig is not None:
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

        async def learned(routes: tuple[tuple[int, int], ...],
                          text_of: Callable[[int, int], str]) -> tuple[tuple[int, int], ...]:
            kept = []
            for network, bits in routes:
                text = text_of(network, bits)
                if await scripts.learn_address("add", text, cn, env):
                    peer.learned.append(text)
                    kept.append((network, bits))
                else:
                    self.log.warning("learn_address_refused", peer=peer.label, cn=cn,
                                     address=text)
            return tuple(kept)

        peer.iroutes = await learned(peer.iroutes, se.learn_address_text)
        # multi.c, multi_add_iroutes(): IPv6 after IPv4
        peer.iroutes6 = await learned(
            peer.iroutes6, lambda network, bits: f"{ipaddress.IPv6Address(network)}/{bits}")
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

    def _end_refused_connect(self, peer: Peer, now: float) -> None:
        """The address client-connect's config file gave was refused (the session already
        rejected): as in _refuse_connect, client-disconnect runs when an earlier handler
        had succeeded, and the refusal goes out."""
        if peer.connect_state == "partial":
            self._start_disconnect(peer, now)
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
        reason = None
        if (found.iroutes or found.iroutes_ipv6) and self.server.tap:
            name = "iroute" if found.iroutes else "iroute-ipv6"
            reason = f"'{name}' needs 'dev tun' (a tap server learns MAC addresses instead)"
        if reason is not None:
            return self._refuse(peer, cn, now, f"{found.path}: {reason}")
        self.log.info("ccd_applied", peer=peer.label, cn=cn, path=str(found.path),
                      ifconfig_push=(str(found.ifconfig_push.local)
                                     if found.ifconfig_push is not None else None),
                      ifconfig_ipv6_push=(str(found.ifconfig_ipv6_push.local)
                                          if found.ifconfig_ipv6_push is not None else None),
                      iroutes=[str(n) for n in (*found.iroutes, *found.iroutes_ipv6)],
                      push_edits=len(found.push_edits))
        return found

    def _refuse(self, peer: Peer, cn: str, now: float, reason: str) -> Literal[False]:
        self.log.warning("ccd_refused", peer=peer.label, cn=cn, reason=reason)
        peer.session.reject(now, detail=reason)
        return False

    def _refuse_pool_exhausted(self, peer: Peer, cn: str, now: float) -> None:
        self.log.warning("pool_exhausted", peer=peer.label, cn=cn,
                         pool_size=self.server.allocator.size)
        peer.session.reject(now, "no free address in the server's pool")

    def _fixed_address(self, peer: Peer, push: IfconfigPush, now: float) -> str | None:
        """Take the client's ``ifconfig-push`` address (kept from the pool while it is
        connected); the ``ifconfig`` option to push, or None when the client was refused."""
        server = self.server
        pool = server.allocator.pool
        if pool is None:  # IPv6-only
            self._refuse(peer, peer.common_name or "", now,
                         f"'ifconfig-push {push.local}' needs IPv4 in the tunnel on the server "
                         "('server NET MASK' or 'ifconfig')")
            return None
        own = server_tun_ifconfig(server.options)
        network = server.options.server.network if server.options.server is not None else (
            ipaddress.IPv4Network(f"{pool.server}/{pool.netmask}", strict=False))
        reason = check_fixed_address(push, tap=server.tap, topology=server.options.topology,
                                     server_network=network,
                                     server_address=own.local if own is not None else None)
        if reason is None and any(p is not peer and p.vaddr == push.local.packed
                                  for p in server.table):
            reason = f"'ifconfig-push {push.local}': another client has that address"
        held = peer.fixed_index6  # the entry its pool IPv6 came from may be this address's
        if reason is None and not (held is not None
                                   and server.allocator.index_of_base(push.local) == held) \
                and not server.allocator.reserve(push.local):
            reason = (f"'ifconfig-push {push.local}': a client of the pool has that address "
                      "(keep fixed addresses outside 'ifconfig-pool')")
        if reason is not None:
            self._refuse(peer, peer.common_name or "", now, reason)
            return None
        peer.fixed_address = push.local
        peer.vaddr = push.local.packed
        return push.pushed()

    def _pool_ipv6_of_fixed_client(self, peer: Peer, cn: str, pool6: AddressPool6,
                                   now: float) -> tuple[str, ...]:
        """The IPv6 of a fixed-IPv4 client without ``ifconfig-ipv6-push``, as OpenVPN 2.6
        gives it: multi.c ``multi_client_connect_early_setup()`` takes a pool entry before
        the client's file is read, and ``multi_select_virtual_addr()`` then replaces only the
        IPv4 with the ``ifconfig-push`` one, so the client keeps the entry's IPv6 (OpenVPN
        gives the entry back to the pool at once; trivpn keeps it while the client is
        connected, so no pool client gets the same IPv6). Nothing when the pool is full."""
        index = self.server.allocator.take_index(cn)
        if index is None:
            self.log.warning("ccd_fixed_ipv4_without_ipv6", peer=peer.label, cn=cn,
                             reason="no free entry in the server's pool")
            return ()
        peer.fixed_index6 = index
        peer.vaddr6 = pool6.address(index).packed
        return (pool6.ifconfig_option(index),)

    def _fixed_address6(self, peer: Peer, push: IfconfigIpv6Push, now: float) -> str | None:
        """Take the client's ``ifconfig-ipv6-push`` address (its entry of the IPv6 pool, when
        it is one, kept from pool clients while it is connected); the ``ifconfig-ipv6`` option
        to push, or None when the client was refused."""
        server = self.server
        own = server_tun_ifconfig6(server.options)
        network = None if own is None else ipaddress.IPv6Network((own.address, own.bits),
                                                                 strict=False)
        reason = check_fixed_address6(push, network, None if own is None else own.address)
        if reason is None and any(p is not peer and p.vaddr6 == push.local.packed
                                  for p in server.table):
            reason = f"'ifconfig-ipv6-push {push.local}': another client has that address"
        pool6 = server.pool6
        index = pool6.index_of(push.local) if reason is None and pool6 is not None else None
        allocator = server.allocator
        if index is not None and not (
                (peer.entry is not None and peer.entry.index == index)
                or (peer.fixed_address is not None
                    and allocator.index_of_base(peer.fixed_address) == index)):
            if allocator.reserve_index(index):
                peer.fixed_index6 = index
            else:
                reason = (f"'ifconfig-ipv6-push {push.local}': a client of the pool has that "
                          "address (keep fixed addresses outside the IPv6 pool)")
        if reason is not None or own is None:
            self._refuse(peer, peer.common_name or "", now, reason or "")
            return None
        peer.vaddr6 = push.local.packed
        return push.pushed(own.address)

    def _management_established(self, peer: Peer) -> None:
        """management-client-auth: ``>CLIENT:ESTABLISHED,cid`` with ``n_clients`` and the
        client's environment once it is connected (manage.c,
        management_connection_established())."""
        broker = self.client_auth
        cid = self._cids.get(peer)
        if broker is None or cid is None or broker.notify is None:
            return
        env = {"n_clients": str(len(self.server.connected)), **(peer.script_env or {})}
        env.pop("script_type", None)
        broker.notify([*self._management_addresses(peer, cid),
                       f">CLIENT:ESTABLISHED,{cid}", *_env_lines(env)])

    def _management_addresses(self, peer: Peer, cid: int) -> list[str]:
        """``>CLIENT:ADDRESS,CID,ADDR,PRIMARY`` for what is routed to a TUN client: its
        address, its IPv6 address (primary 1), then its iroutes (``NET/MASK``) and IPv6
        iroutes (``NET/BITS``, primary 0) -- multi.c multi_client_connect_late_setup(),
        management_learn_addr(); mroute.c mroute_addr_print_ex(MAPF_SUBNET)."""
        if self.server.tap:
            return []
        lines = []
        if peer.vaddr is not None and not peer.vaddr_refused:
            lines.append(f">CLIENT:ADDRESS,{cid},{ipaddress.IPv4Address(peer.vaddr)},1")
        if peer.vaddr6 is not None:
            lines.append(f">CLIENT:ADDRESS,{cid},{ipaddress.IPv6Address(peer.vaddr6)},1")
        for network, bits in peer.iroutes:
            mask = ipaddress.IPv4Network(f"0.0.0.0/{bits}").netmask
            lines.append(f">CLIENT:ADDRESS,{cid},{ipaddress.IPv4Address(network)}/{mask},0")
        for network, bits in peer.iroutes6:
            lines.append(f">CLIENT:ADDRESS,{cid},{ipaddress.IPv6Address(network)}/{bits},0")
        return lines

    def _management_disconnect(self, peer: Peer, now: float) -> None:
        """management-client-auth: ``>CLIENT:DISCONNECT,cid`` and the client's environment
        (with its byte counts and time) when a client it was told about goes (manage.c,
        management_notify_client_close())."""
        broker = self.client_auth
        cid = self._cids.get(peer)
        if broker is None or cid is None or broker.notify is None \
                or peer not in self._management_announced:
            return
        self._management_announced.discard(peer)
        env = dict(peer.script_env or {})
        env.pop("script_type", None)
        env.pop("password", None)
        env.update(se.disconnect_env(peer.rx_bytes, peer.tx_bytes, int(now - peer.created)))
        broker.notify([f">CLIENT:DISCONNECT,{cid}", *_env_lines(env)])

    def kill_by_cid(self, cid: int, message: str | None) -> bool:
        """Management ``client-kill CID [MSG]``: the client is told MSG (default RESTART)
        and removed, as OpenVPN's multi.c management_kill_by_cid() does."""
        for peer, known in self._cids.items():
            if known == cid and not peer.removed:
                self.kill_peer(peer, CLIENT_KILL_LINGER, message=message or "RESTART")
                return True
        return False

    def _connected(self, peer: Peer, cipher: str) -> None:
        peer.connected = True
        peer.remove_at = None
        # learn-address refused it: not routed (multi_learn_addr); server-bridge's DHCP form:
        # no address to route (the tap learns its MAC addresses)
        if not peer.vaddr_refused and (peer.vaddr is not None or peer.vaddr6 is not None):
            self.server.table.route_vaddr(peer)
        if peer.iroutes:
            self.server.table.add_iroutes(peer, peer.iroutes)
        if peer.iroutes6:
            self.server.table.add_iroutes6(peer, peer.iroutes6)
        self.server.router.connected = (*self.server.connected, peer)
        self._management_established(peer)
        self.events.publish(rt.PeerConnected(peer.label, peer.common_name, peer.vpn_ip, cipher,
                                             peer.peer_id,
                                             "tcp" if peer.tcp is not None else "udp",
                                             peer.vpn_ip6))


CLIENT_KILL_LINGER = 1.0  # seconds between client-kill's message and the removal


def _env_lines(env: dict[str, str]) -> list[str]:
    """``>CLIENT:ENV,NAME=VALUE`` lines and the closing ``>CLIENT:ENV,END``."""
    return [*(f">CLIENT:ENV,{k}={v}" for k, v in env.items() if "\n" not in v),
            ">CLIENT:ENV,END"]


def _session_id_text(session_id: bytes) -> str:
    """The session_id script variable: the token's base64 session id (16 characters)."""
    return base64.b64encode(session_id).decode()


def options_consistent(received: str, expected: str) -> bool:
    """OpenVPN options.c, options_cmp_equal_safe(): strings of different versions (their
    first two characters differ) only warn; the same version must match exactly."""
    return received[:2] != expected[:2] or received == expected
