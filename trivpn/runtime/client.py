"""``trivpn run`` for client configs: connect, bring the tunnel up, move packets, reconnect.

Structure (docs/architecture.md, runtime):

* :func:`run_client` prepares everything that can fail as a config error (exit 2) — the
  session config with its TLS context and keys, the user/group — then runs a :class:`Client`.
* :class:`Client` owns what outlives one connection: the tunnel (kept across reconnects with
  ``persist-tun``), the remote schedule, the drop counters, the signal watcher. Its supervisor
  loop runs one :class:`Connection` at a time and decides from the connection's
  :data:`~trivpn.runtime.supervisor.Outcome` whether to reconnect (with back-off) or exit.
* A :class:`Connection` is one link and one :class:`~trivpn.protocol.session.Session` under one
  nursery: the link reader (data packets straight to the TUN, control packets into the
  session), the TUN → link direction once the server's push configured the tunnel (a real UDP
  link: the link reader serves it too, waiting on both fds at once, see
  :mod:`trivpn.runtime.readiness`; TCP or a link without fds: a TUN reader task), the
  session's :class:`~trivpn.runtime.pump.SessionPump` (its output to the link, the TUN and
  :meth:`Connection._on_event`; its timer task) and the drop ticker.
  Any task may end the connection by setting its outcome and cancelling the nursery.
* Links and the tunnel come from a :class:`~trivpn.runtime.transport.ClientHost`:
  :class:`SystemHost` (sockets, TUN, netlink) for ``trivpn run``, the in-memory doubles of
  :mod:`trivpn.runtime.memory` in tests.

Exit codes: 0 after SIGINT/SIGTERM or a server HALT, 1 on AUTH_FAILED (``auth-retry none``),
a host setup failure (TUN, addresses, privileges) or a remote name that does not resolve with
``resolv-retry 0``, 2 for config errors.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import random
import signal
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import structlog
import trio

from trivpn.config import ConfigError, Options, Remote
from trivpn.config.options import HttpProxy, SocksProxy
from trivpn.protocol import events as ev
from trivpn.protocol.challenge import (
    AuthToken,
    DynamicChallenge,
    parse_dynamic_challenge,
    pushed_auth_token,
)
from trivpn.protocol.clientnat import ClientNat
from trivpn.protocol.errors import DecodeError, ProtocolError
from trivpn.protocol.icmp6 import FALLBACK_SOURCE, block_ipv6
from trivpn.protocol.mss import IPPROTO_TCP, clamp_ipv6_batch, clamp_mss
from trivpn.protocol.packets import DATA_BYTE0
from trivpn.protocol.push import PushedOptions, unresolved_names, with_resolved_names
from trivpn.protocol.recursive import RecursiveFilter
from trivpn.protocol.session import Session, SessionConfig, is_new_peer_reset
from trivpn.protocol.shaper import Shaper, datagram_overhead
from trivpn.protocol.tls import PeerCertificate
from trivpn.runtime import events as rt
from trivpn.runtime.clientscripts import ClientScripts
from trivpn.runtime.credentials import AUTH, CredentialError, CredentialSource
from trivpn.runtime.datapath import (
    LinkSocketOptions,
    PassTos,
    link_socket_of,
    mss_limit_for,
)
from trivpn.runtime.dns import DnsManager, plan_client_dns
from trivpn.runtime.errors import NoRouteError, RuntimeSetupError
from trivpn.runtime.link import (
    Address,
    FramedLink,
    LinkClosed,
    TcpLink,
    TcpLinkListener,
    UdpLink,
    apply_sndbuf_rcvbuf,
    make_socket,
    open_tcp_link,
    open_tcp_listener,
)
from trivpn.runtime.management import ManagementServer, ProxyAnswer, RemoteAnswer
from trivpn.runtime.netconf import NetConfig
from trivpn.runtime.nulldev import NullTunnel
from trivpn.runtime.privileges import Identity, drop_privileges, resolve_identity
from trivpn.runtime.proxy import (
    ProxyCredentials,
    ProxyRefused,
    SocksUdpLink,
    http_connect,
    read_proxy_credentials,
    socks_connect,
)
from trivpn.runtime.pump import SessionPump
from trivpn.runtime.readiness import ReadySet
from trivpn.runtime.replaypersist import SAVE_INTERVAL, ReplayPersist
from trivpn.runtime.stats import Traffic
from trivpn.runtime.supervision import first_leaf, log_internal_error, task_name
from trivpn.runtime.supervisor import (
    RESOLVE_RETRY_INTERVAL,
    Attempt,
    Exit,
    Outcome,
    Reconnect,
    RemoteSchedule,
    remap_restart,
    resolve_attempts,
    resolve_retry_delay,
)
from trivpn.runtime.transport import ClientHost, DatagramLink, PacketLink, TunnelHandle
from trivpn.runtime.tun import TunDevice
from trivpn.runtime.tunnel import (
    NetGateway,
    Tunnel,
    TunnelPlan,
    TunnelPlanError,
    plan_client_tunnel,
)
from trivpn.sessionsetup import Credentials, drop_aggregator, session_config
from trivpn.tlscontext import is_encrypted_key

T = TypeVar("T")

Log = structlog.stdlib.BoundLogger

DROP_TICK = 1.0
"""How often drop counters are collected (they are logged per DropAggregator interval)."""
EXIT_ACK_WAIT = 2.0
"""Longest wait for the server's acknowledgement of an EXIT control message."""
DEFAULT_CONNECT_TIMEOUT = 120
SO_MARK = getattr(socket, "SO_MARK", 36)  # Linux <asm-generic/socket.h>


class ClientTools(Protocol):
    """The operator tools as a client sees them (trivpn/runtime/operator.py provides them)."""

    def attach(self, events: rt.EventBus) -> None: ...
    async def open_client(self, client: Client) -> None: ...
    async def run_client(self, client: Client) -> None: ...


async def run_client(options: Options, log: Log, tools: ClientTools | None = None,
                     host: ClientHost | None = None, *, direct_wait: bool = True,
                     dns: DnsManager | None = None) -> int:
    """Run a client until a signal, AUTH_FAILED, HALT or a fatal setup error; the exit code."""
    key_password: str | None = None
    try:
        if not options.remotes and options.tls_role == "client":
            raise ConfigError("a client needs at least one 'remote'", options.config_path)
        if options.key is not None and is_encrypted_key(options.key.read_text()):
            # OpenVPN asks even without askpass (ssl.c, pem_password_callback)
            key_password = await CredentialSource(options).key_password()
        config = session_config(options, unix_time_offset=time.time() - trio.current_time(),
                                key_password=key_password)
        identity = resolve_identity(options.user, options.group)
    except ConfigError as exc:
        log.error("config_error", detail=str(exc))
        return 2
    except CredentialError as exc:
        log.error("credentials_failed", detail=str(exc))
        return 1
    except RuntimeSetupError as exc:
        log.error("config_error", detail=str(exc))
        return 2
    client = Client(options, log, config, identity, host=host, direct_wait=direct_wait,
                    dns=dns)
    client.key_password = key_password
    client.tools = tools
    if tools is not None:
        tools.attach(client.events)
    return await client.run()


async def resolve_remote(remote: Remote, kind: int) -> tuple[int, str]:
    """(family, numeric address) of ``remote`` through the resolver (literals pass through)."""
    family = {4: socket.AF_INET, 6: socket.AF_INET6}.get(remote.family or 0, socket.AF_UNSPEC)
    infos = await trio.socket.getaddrinfo(remote.host, remote.port, family, kind)
    if not infos:
        raise OSError(f"no address for {remote.host}")
    fam, _, _, _, sockaddr = infos[0]
    return int(fam), str(sockaddr[0])


def _endpoint(host: object, port: object) -> str:
    """``host:port``, ``[v6]:port`` for an IPv6 host (as the server's peer labels)."""
    text = str(host)
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


class SystemHost:
    """The real host: sockets, the resolver, TUN devices and netlink
    (a :class:`~trivpn.runtime.transport.ClientHost`). ``mark``: the ``SO_MARK`` of every
    link socket (OpenVPN's ``mark``, socket.c create_socket())."""

    def __init__(self, mark: int | None = None, *,
                 sockopts: LinkSocketOptions | None = None) -> None:
        self.mark = mark
        self.sockopts = sockopts or LinkSocketOptions()

    def _mark(self, sock: socket.socket | trio.socket.SocketType, where: str) -> None:
        if self.mark is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
            except OSError as exc:
                raise RuntimeSetupError(f"cannot set SO_MARK {self.mark}", where,
                                        errno=exc.errno) from exc
        self.sockopts.apply(sock, where)

    async def resolve(self, remote: Remote, kind: int) -> tuple[int, str]:
        return await resolve_remote(remote, kind)

    def open_udp(self, bind: tuple[str, int], sndbuf: int | None,
                 rcvbuf: int | None) -> UdpLink:
        link = UdpLink.bind(bind[0], bind[1])
        try:
            self._mark(link.socket, f"{bind[0]}:{bind[1]}")
            apply_sndbuf_rcvbuf(link.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            link.close()
            raise
        return link

    async def open_stream(self, host: str, port: int, bind: tuple[str, int] | None,
                          sndbuf: int | None, rcvbuf: int | None) -> trio.SocketStream:
        """A connected TCP stream to numeric ``host``:``port`` (marked, buffers set before
        the connect); RuntimeSetupError on failure."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.from_stdlib_socket(make_socket(family, socket.SOCK_STREAM))
        try:
            self._mark(sock, f"{host}:{port}")
            apply_sndbuf_rcvbuf(sock, sndbuf, rcvbuf)
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
        return trio.SocketStream(sock)

    async def open_tcp(self, host: str, port: int, bind: tuple[str, int] | None,
                       sndbuf: int | None, rcvbuf: int | None) -> PacketLink:
        if self.mark is not None or self.sockopts.any:
            return TcpLink(await self.open_stream(host, port, bind, sndbuf, rcvbuf))
        link = await open_tcp_link(host, port, bind=bind)
        try:
            apply_sndbuf_rcvbuf(link.stream.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            await link.aclose()
            raise
        return link

    async def open_tcp_listener(self, host: str, port: int, sndbuf: int | None,
                                rcvbuf: int | None) -> TcpLinkListener:
        """TLS peer-to-peer server over TCP (proto tcp-server): listen for the one peer."""
        listener = await open_tcp_listener(host, port, backlog=1)
        try:
            self._mark(listener.socket, f"{host}:{port}")
            apply_sndbuf_rcvbuf(listener.socket, sndbuf, rcvbuf)
        except RuntimeSetupError:
            await listener.aclose()
            raise
        return listener

    def open_tunnel(self, plan: TunnelPlan) -> TunnelHandle:
        return Tunnel.open(plan)

    def net_gateway(self, remote_ip: str, tunnel: TunnelHandle | None) -> NetGateway | None:
        netconf = tunnel.netconf if isinstance(tunnel, Tunnel) else NetConfig()
        try:
            found = netconf.route_get(remote_ip)
        except (NoRouteError, RuntimeSetupError):
            return None
        finally:
            if not isinstance(tunnel, Tunnel):
                netconf.close()
        return NetGateway(found.gateway, found.oif)


def _same_host(address: str, expected: str) -> bool:
    """``address`` (as a socket reports it, maybe IPv4-mapped) is ``expected``."""
    try:
        a, b = ipaddress.ip_address(address), ipaddress.ip_address(expected)
    except ValueError:
        return address == expected
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if isinstance(b, ipaddress.IPv6Address) and b.ipv4_mapped is not None:
        b = b.ipv4_mapped
    return a == b


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _proto_name(remote: Remote) -> str:
    """OpenVPN's short protocol name (socket.c, proto2ascii(): udp, udp4, tcp6-client...)."""
    family = "" if remote.family is None else str(remote.family)
    if remote.proto == "udp":
        return f"udp{family}"
    return f"tcp{family}-{remote.proto.split('-')[1]}"


def _with_proxy(remote: Remote, answer: ProxyAnswer) -> Remote:
    """The remote with the proxy a ``proxy`` answer gave (NONE or a bad answer: as
    configured). HTTP keeps the configured http-proxy's other settings; ``nct`` turns its
    ``auto`` authentication into ``auto-nct`` (init.c, management_callback_proxy_cmd())."""
    if answer.kind == "HTTP":
        http = remote.http_proxy or HttpProxy()
        auth = http.auth
        if answer.nct and auth == "auto":
            auth = "auto-nct"
        elif not answer.nct and auth == "auto-nct":
            auth = "auto"
        return replace(remote, http_proxy=replace(http, host=answer.host, port=answer.port,
                                                  auth=auth))
    if answer.kind == "SOCKS":
        socks = remote.socks_proxy or SocksProxy(answer.host)
        return replace(remote, socks_proxy=replace(socks, host=answer.host, port=answer.port))
    return remote


def _push_summary(p: PushedOptions) -> dict[str, Any]:
    """Loggable view of a push: never the auth-token."""
    return {
        "ifconfig": (f"{p.ifconfig.local} {p.ifconfig.remote_or_netmask}"
                     if p.ifconfig is not None else None),
        "topology": p.topology,
        "route_gateway": str(p.route_gateway) if p.route_gateway is not None else None,
        "routes": len(p.routes),
        "redirect_gateway": list(p.redirect_gateway) if p.redirect_gateway is not None else None,
        "ping": p.ping,
        "ping_restart": p.ping_restart,
        "cipher": p.cipher,
        "peer_id": p.peer_id,
        "protocol_flags": list(p.protocol_flags),
        "tun_mtu": p.tun_mtu,
        "auth_token": p.auth_token is not None,
    }


class Client:
    """Everything that outlives one connection."""

    def __init__(self, options: Options, log: Log, config: SessionConfig,
                 identity: Identity | None, *, host: ClientHost | None = None,
                 direct_wait: bool = True, dns: DnsManager | None = None) -> None:
        self.host: ClientHost = host if host is not None else SystemHost(
            options.mark, sockopts=LinkSocketOptions.of(options))
        self.dns = dns  # None: DNS is left alone (docs/dns.md)
        # direct_wait=False: the UDP data path always waits through trio (readiness.py)
        self.direct_wait = direct_wait
        self.options = options
        self.log = log
        self.events = rt.EventBus(log)  # logging, management state, metrics counters
        self.config = config
        self.identity = identity
        self.tunnel: TunnelHandle | None = None
        self.privileges_dropped = False
        self.drops = drop_aggregator(options)
        self.stop = trio.Event()
        self.stop_reason: str | None = None
        # auth-retry nointeract: OpenVPN pauses 10 s before every restart instead of
        # connect-retry's seconds, still capped by connect-retry's maximum (init.c,
        # socket_restart_pause)
        retry = options.connect_retry
        base = min(10, retry.max_seconds) if options.auth_retry == "nointeract" else retry.seconds
        # --- TLS peer-to-peer server (tls-server without 'mode server') ---
        # it waits for its one peer on its own socket instead of connecting; 'remote', if
        # given, is the only address the peer may come from (unless float, over UDP)
        self.listening = options.tls_role == "server"
        self.handover: tuple[bytes, Address] | None = None  # a new peer's reset, to take over
        remotes = options.remotes or (
            Remote("", options.rport, options.proto, options.family, 0),)
        self.schedule = RemoteSchedule(
            remotes, base=base,
            maximum=options.connect_retry.max_seconds,
            shuffle=random.Random() if options.remote_random else None,
            retry_max=options.connect_retry_max)
        self._hard_stop = trio.CancelScope()
        self._net_gateway: NetGateway | None = None
        self._tun_drops_seen = 0
        self.traffic = Traffic()  # status file, management, metrics
        self.tools: ClientTools | None = None
        self._connections = 0
        self.purge_credentials = False  # auth-retry interact: read them again next time
        # --- connection handling and proxies ---
        self.random = random.Random()  # remote-random-hostname labels
        self.persisted_addresses: dict[tuple[Remote, int], tuple[int, str]] = {}
        self.persisted_local: str | None = None  # --- more --- persist-local-ip
        self.replay_persist: ReplayPersist | None = None  # opened by run()
        self.scripts = ClientScripts(options, log)
        self.credentials = CredentialSource(options)
        self._creds: Credentials | None = None  # cached unless auth-nocache
        self.auth_token: AuthToken | None = None  # pushed (or configured) auth-token
        self._config_token = options.auth_token  # 'auth-token' in the config, until used
        self.challenge: DynamicChallenge | None = None  # CRV1, answered at the next ask
        self.key_password: str | None = None  # encrypted private key (reloads need it)
        self.management: ManagementServer | None = None
        # --- client breadth b ---
        self.preresolved: dict[tuple[str, int], tuple[int, str]] = {}  # preresolve
        # --- mgmt ---
        self.connection: Connection | None = None  # the one running now
        self._token_forgotten = False  # management-forget-disconnect during a connection
        self._key_password_forgotten = False  # ask again at the next key reload

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Connect, reconnect, until a signal or a fatal outcome; the exit status. A bug (an
        unexpected exception in a setup step or any task) is logged as ``internal_error``; the
        device is torn down as on SIGTERM (route-pre-down, routes, DNS, down) and the status
        is 1 (trivpn/runtime/supervision.py)."""
        try:
            return await self._run()
        except Exception as exc:  # a bug before the connection loop, or in the teardown
            log_internal_error(self.log, exc, task_name(exc, _RUNNERS))
            self.scripts.close()
            self.log.info("exiting", code=1, reason="internal_error")
            return 1

    async def _run(self) -> int:
        code, reason = 0, "signal"
        if self.dns is not None:  # what a killed trivpn left behind (docs/dns.md)
            self.dns.recover()
        if self.tools is not None:  # password file and sockets while still privileged
            try:
                await self.tools.open_client(self)
            except RuntimeSetupError as exc:
                self.log.error("setup_failed", error=str(exc), what=exc.what, where=exc.where)
                return 1
            found = getattr(self.tools, "management", None)
            if isinstance(found, ManagementServer):
                self.management = self.credentials.queries = found
                self._attach_management(found)
        if self.options.replay_persist is not None:  # opened and locked once, as OpenVPN
            try:
                self.replay_persist = ReplayPersist(self.options.replay_persist)
            except RuntimeSetupError as exc:
                self.log.error("setup_failed", error=str(exc), what=exc.what, where=exc.where)
                return 1
        try:
            self.scripts.start_privileged()
            async with trio.open_nursery() as nursery:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    nursery.start_soon(self._watch_signals, signals)
                    if self.tools is not None:
                        nursery.start_soon(self.tools.run_client, self)
                    with self._hard_stop:
                        code, reason = await self._supervise()
                    await self._announce_exit()
                    nursery.cancel_scope.cancel()
        except Exception as exc:  # its nursery cancelled the rest
            leaf = first_leaf(exc)
            if isinstance(leaf, RuntimeSetupError):  # a host step no handler expected to fail
                self.log.error("setup_failed", error=str(leaf), what=leaf.what, where=leaf.where)
                code, reason = 1, "setup_failed"
            else:  # a bug in a task or step
                log_internal_error(self.log, exc, task_name(exc, _RUNNERS))
                code, reason = 1, "internal_error"
        finally:
            with trio.CancelScope(shield=True):
                await self._teardown(self.stop_reason or ("SIGTERM" if code == 1 and reason in (
                    "internal_error", "setup_failed") else reason))
                self.scripts.close()
        self.log.info("exiting", code=code, reason=reason)
        return code

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if self.stop.is_set():
                self.events.publish(rt.SignalReceived(name, "exit_now"))
                self._hard_stop.cancel()
                continue
            self.events.publish(rt.SignalReceived(name, "exit"))
            self.stop_reason = name
            self.stop.set()

    async def until_stop(self, work: Callable[[], Awaitable[T]]) -> list[T]:
        """``[result]`` of ``work``, or ``[]`` if a stop signal came first. An exception
        of ``work`` is raised as itself (not inside an ExceptionGroup)."""
        result: list[T] = []
        failed: list[Exception] = []
        async with trio.open_nursery() as nursery:
            async def run() -> None:
                try:
                    result.append(await work())
                except Exception as exc:
                    failed.append(exc)
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                await self.stop.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(run)
            nursery.start_soon(watch)
        if failed:
            raise failed[0]
        return result

    async def _supervise(self) -> tuple[int, str]:
        stopped = await self._preresolve()  # nothing without preresolve
        if stopped is not None:
            return stopped.code, stopped.reason
        attempt = self.schedule.first()
        while True:
            management = self.management
            if management is not None and management.hold:
                # management-hold: wait for 'hold release' instead of the restart pause
                # (init.c, do_hold / socket_restart_pause)
                held = await self.until_stop(
                    functools.partial(management.wait_hold, int(attempt.delay)))
                if held and held[0]:
                    attempt = Attempt(attempt.remote, 0.0)
            if attempt.delay > 0:
                with trio.move_on_after(attempt.delay):
                    await self.stop.wait()
            if self.stop.is_set():
                return 0, "signal"
            chosen = await self._prepare_attempt(attempt.remote)
            if isinstance(chosen, tuple):
                return chosen
            outcome = await self._connect(chosen)
            if isinstance(outcome, Reconnect):
                outcome = self._remap_restart(outcome)
            if isinstance(outcome, Exit):
                return outcome.code, outcome.reason
            if self.stop.is_set():
                return 0, "signal"
            if outcome.keep:  # p2p server: the peer's new session takes over at once
                self.events.publish(rt.Reconnecting(outcome.reason, outcome.detail, 0.0,
                                                    _endpoint(attempt.remote.host,
                                                              attempt.remote.port),
                                                    attempt.remote.proto))
                attempt = Attempt(attempt.remote, 0.0)
                continue
            failed = await self._restart_device_and_keys(outcome)
            if failed is not None:
                return failed
            attempt = self.schedule.restart(outcome.advance)
            if self.schedule.exhausted:
                # OpenVPN: M_FATAL, exit status 1
                max_ = self.options.connect_retry_max
                self.log.error("connect_retry_max", last_reason=outcome.reason,
                               detail=f"All connections have been connect-retry-max ({max_}) "
                               "times unsuccessful, exiting")
                return 1, "connect_retry_max"
            if not outcome.pause:
                attempt = Attempt(attempt.remote, 0.0)
            remote = attempt.remote
            self.events.publish(rt.Reconnecting(outcome.reason, outcome.detail, attempt.delay,
                                                _endpoint(remote.host, remote.port), remote.proto))

    async def _prepare_attempt(self, remote: Remote) -> Remote | tuple[int, str]:
        """The remote of the next attempt (the management client may change it) and the
        credentials; the exit status and reason instead when there is to be none."""
        chosen = await self._management_remote(remote)
        if isinstance(chosen, Exit):
            return chosen.code, chosen.reason
        if chosen is None:
            return 0, "signal"
        refused = await self._credentials_ready()
        return chosen if refused is None else refused

    async def _connect(self, remote: Remote) -> Outcome:
        """One connection, until it ends; its auth-token is kept for the next one (unless
        management-forget-disconnect forgot it meanwhile)."""
        connection = self.connection = Connection(self, remote)
        try:
            outcome = await connection.run()
        finally:
            self.connection = None
        self.auth_token = connection.session.auth_token
        if self._token_forgotten:
            self.auth_token, self._token_forgotten = None, False
        return outcome

    # --- mgmt ---

    def _attach_management(self, management: ManagementServer) -> None:
        """management-forget-disconnect, management-signal (a management client's disconnect,
        manage.c man_reset_client_socket()) and management-up-down (ClientScripts)."""
        o = self.options
        if o.management_forget_disconnect:
            management.disconnect_hooks.append(self.forget_passwords)
        if o.management_signal:
            management.disconnect_hooks.append(self._management_restart)
        if o.management_up_down:
            self.scripts.up_down_hook = management.up_down

    async def _announce_exit(self) -> None:
        """management-up-down at exit: ``>UPDOWN:DOWN`` reaches the management clients before
        their connections close with the rest of the tools (the device closes after)."""
        management = self.management
        if management is not None and self.scripts.announce_down():
            await management.flush()

    def forget_passwords(self) -> None:
        """Forget the username/password, a pending challenge and the auth-token: the next
        connection asks again (OpenVPN ssl.c, ssl_purge_auth(); ssl_clean_auth_token())."""
        self.purge_credentials = True
        self._creds = None
        self.challenge = None
        self.auth_token = None
        self._token_forgotten = self.connection is not None
        if self.key_password is not None:  # ssl_purge_auth(false): the key's too
            self.key_password = None
            self._key_password_forgotten = True
        self.log.info("management_forget_passwords")

    def _management_restart(self) -> None:
        """management-signal: a soft SIGUSR1 restart of the connection running now (during a
        hold, OpenVPN ignores it: MANSIG_IGNORE_USR1_HUP; between connections there is
        nothing to restart)."""
        connection = self.connection
        if connection is not None and not self.stop.is_set():
            self.log.info("management_signal", signal="SIGUSR1",
                          detail="Triggering management signal")
            connection.finish(Reconnect("management_disconnect"))

    async def _management_remote(self, remote: Remote) -> Remote | Exit | None:
        """management-query-remote (else management-query-proxy): the management client
        decides on this attempt's remote (init.c, next_connection_entry(): ACCEPT, SKIP N
        profiles, MOD to another host and port) or its proxy. None: a stop came first."""
        management, o = self.management, self.options
        if management is None:
            return remote
        if o.management_query_remote:
            wrapped = 0
            while True:
                got = await self.until_stop(functools.partial(
                    management.query_remote, remote.host, remote.port, _proto_name(remote)))
                if not got:
                    return None
                answer: RemoteAnswer = got[0]
                if answer.action == "ACCEPT":
                    return remote
                if answer.action == "MOD":
                    assert answer.host is not None and answer.port is not None
                    self.log.info("management_remote", action="MOD", host=answer.host,
                                  port=answer.port)
                    return replace(remote, host=answer.host, port=answer.port)
                wrapped += self.schedule.skip(answer.skip)
                if wrapped >= 2:  # init.c: M_FATAL
                    self.log.error("no_usable_remote",
                                   detail="No usable connection profiles are present")
                    return Exit(1, "no_usable_remote")
                remote = self.schedule.remotes[self.schedule.index]
        if o.management_query_proxy:
            got_proxy = await self.until_stop(functools.partial(
                management.query_proxy, self.schedule.index + 1, remote.proto != "udp",
                remote.host))
            if not got_proxy:
                return None
            return _with_proxy(remote, got_proxy[0])
        return remote

    async def _restart_device_and_keys(self, outcome: Reconnect) -> tuple[int, str] | None:
        """Before a restart: the device closes (down script) unless persist-tun, the keys are
        read again unless persist-key (both, for a hard restart: remap-usr1 SIGHUP); the exit
        status and reason when that cannot be."""
        signal_text = outcome.reason.replace("_", "-")
        if not self.options.persist_tun or outcome.hard:
            await self.scripts.down("init", signal_text, self.close_tunnel)
            if self.privileges_dropped:
                return self._cannot_reopen_tun(outcome)
        elif self.options.up_restart:
            await self.scripts.down_on_restart(signal_text)
        if not self.options.persist_key or outcome.hard:
            if self._key_password_forgotten:
                asked = await self._ask_key_password()
                if asked is not None:
                    return asked
            return self._reload_keys()
        return None

    async def _ask_key_password(self) -> tuple[int, str] | None:
        """management-forget-disconnect forgot the private key's password: ask again (askpass
        file, management, console) before the keys are read again, as OpenVPN's
        pem_password_callback() does; the exit status and reason if that cannot be."""
        try:
            got = await self.until_stop(self.credentials.key_password)
        except CredentialError as exc:
            self.log.error("credentials_failed", detail=str(exc))
            return 1, "credentials_failed"
        if not got:
            return 0, "signal"
        self.key_password, self._key_password_forgotten = got[0], False
        return None

    async def _credentials_ready(self) -> tuple[int, str] | None:
        """Credentials for the next connection (file, prompt, management); the exit status
        and reason when there are none to be had."""
        try:
            if not await self.until_stop(self.prepare_credentials):
                return 0, "signal"
        except ConfigError as exc:
            self.log.error("config_error", detail=str(exc))
            return 1, "config_error"
        except CredentialError as exc:
            self.log.error("credentials_failed", detail=str(exc))
            return 1, "credentials_failed"
        return None

    def _reload_keys(self) -> tuple[int, str] | None:
        """Without ``persist-key`` OpenVPN drops its keys at a restart and reads the key files
        again (a renewed certificate on disk takes effect); so does trivpn. After ``user``/
        ``group`` the files are usually no longer readable: OpenVPN then exits ("Error:
        private key password verification failed"), trivpn too, saying why."""
        try:
            self.config = session_config(self.options.with_keys_reread(),
                                         unix_time_offset=time.time() - trio.current_time(),
                                         key_password=self.key_password)
        except (ConfigError, RuntimeSetupError) as exc:
            hint = (" (privileges were dropped: add persist-key to keep the keys in memory)"
                    if self.privileges_dropped else "")
            self.log.error("key_reload_failed", detail=str(exc) + hint)
            return 1, "key_reload_failed"
        self.log.debug("keys_reloaded")
        return None

    # --- client breadth b ---

    def _remap_restart(self, outcome: Reconnect) -> Outcome:
        """``tls-exit`` and ``remap-usr1``: a restart that becomes an exit or a hard restart."""
        o = self.options
        remapped = remap_restart(outcome, tls_exit=o.tls_exit, remap_usr1=o.remap_usr1)
        if isinstance(remapped, Exit):
            self.log.warning(remapped.reason, restart_reason=outcome.reason, action="exit")
        elif remapped.hard:
            self.log.info("remap_usr1", restart_reason=outcome.reason, action="SIGHUP")
        return remapped

    async def _preresolve(self) -> Exit | None:
        """``preresolve`` / ``ip-remote-hint``: look every remote up before the first
        connection (OpenVPN init.c do_preresolve(): the ``ip-remote-hint`` address instead of
        each remote's name, not for remotes behind an HTTP or SOCKS proxy); a name that
        cannot be resolved within ``resolv-retry`` stops the client (status 1). The answers
        serve every later connection (:meth:`Connection._resolve`)."""
        retry = self.options.resolv_retry
        for remote in self.options.remotes if self.options.preresolve else ():
            if remote.http_proxy is not None or remote.socks_proxy is not None:
                continue
            host = self.options.ip_remote_hint or remote.host
            kind = socket.SOCK_STREAM if remote.proto == "tcp-client" else socket.SOCK_DGRAM
            if (host, kind) in self.preresolved:
                continue
            waited = 0
            while True:
                try:
                    self.preresolved[(host, kind)] = await self.host.resolve(
                        replace(remote, host=host), kind)
                    break
                except OSError as exc:
                    if retry is not None and waited >= retry:
                        self.log.error("preresolve_failed", host=host, detail=str(exc))
                        return Exit(1, "resolve_failed", str(exc))
                    self.log.warning("resolve_failed", host=host, detail=str(exc),
                                     action="retry")
                with trio.move_on_after(RESOLVE_RETRY_INTERVAL):
                    await self.stop.wait()
                if self.stop.is_set():
                    return Exit(0, "signal")
                waited += RESOLVE_RETRY_INTERVAL
        return None

    def _cannot_reopen_tun(self, outcome: Reconnect) -> tuple[int, str]:
        """A restart without persist-tun after ``user``/``group`` took effect: the new
        connection would need a new TUN device, which an unprivileged process cannot create.
        OpenVPN 2.6 reconnects and then exits on the push ("Cannot open TUN/TAP dev
        /dev/net/tun: Permission denied", "Exiting due to fatal error"); trivpn exits before
        reconnecting, with the fix in the message."""
        who = self.identity.user or self.identity.group if self.identity else None
        self.log.error("tun_reopen_impossible", restart_reason=outcome.reason,
                       detail=f"the connection restarted ({outcome.reason}) but the TUN device "
                       f"cannot be recreated: privileges were dropped to {who} and "
                       "persist-tun is not set; add persist-tun to survive restarts")
        return 1, "tun_reopen_impossible"

    async def prepare_credentials(self) -> None:
        """The username/password for the next connection (OpenVPN: init_query_passwords and
        ssl.c auth_user_pass_setup). They are asked for (file, console, management; see
        trivpn/runtime/credentials.py) the first time, after AUTH_FAILED with ``auth-retry
        interact`` (ssl.c, ssl_purge_auth) and with ``auth-nocache`` each time (purge_user_pass
        after they were sent) — never while an auth-token is held, which is sent instead."""
        o = self.options
        self._connections += 1
        if o.auth_user_pass is None:
            return
        if self.purge_credentials:
            self._creds = None
            self.purge_credentials = False
        if self._creds is None and self.auth_token is None:
            self._creds = await self.credentials.user_pass(self.challenge)
            self.challenge = None
        creds = self._creds
        username = creds.username if creds is not None else None
        if self._config_token is not None and username is not None:
            # 'auth-token' in the config: used like a pushed one (options.c, ssl_set_auth_token)
            self.auth_token = pushed_auth_token(self._config_token, o.auth_token_user,
                                                username, None)
            self._config_token = None
        self.config = replace(self.config, username=username,
                              password=creds.password if creds is not None else None,
                              auth_token=self.auth_token)
        if o.auth_nocache:
            self._creds = None  # forgotten once sent (ssl.c, purge_user_pass)

    async def _teardown(self, reason: str) -> None:
        """route-pre-down, the device closed, down (OpenVPN's order, see ClientScripts)."""
        await self.scripts.down("init", reason.lower().replace("_", "-"), self.close_tunnel)
        rt.publish_drops(self.events, self.drops, trio.current_time())

    def close_tunnel(self) -> None:
        tunnel, self.tunnel = self.tunnel, None
        if tunnel is None:
            return
        self._count_tun_drops(tunnel)
        name = tunnel.name
        if self.dns is not None:
            self.dns.revert()
        leftovers = tunnel.close()
        self._tun_drops_seen = 0
        if leftovers:
            self.log.warning("teardown_incomplete", device=name, leftovers=leftovers,
                             privileges_dropped=self.privileges_dropped)
        else:
            self.log.info("tun_closed", device=name)

    # -- shared services for connections --------------------------------------------------

    def net_gateway(self, remote_ip: str) -> NetGateway | None:
        """How ``remote_ip`` is reached outside the tunnel now. If the answer already points
        into our own tunnel (persist-tun with redirect-gateway), the remembered one is used."""
        tunnel = self.tunnel
        found = self.host.net_gateway(remote_ip, tunnel)
        if found is None or (tunnel is not None and found.ifname == tunnel.name):
            return self._net_gateway
        self._net_gateway = found
        return found

    def _count_tun_drops(self, tunnel: TunnelHandle) -> None:
        drops = tunnel.device.write_drops
        if drops > self._tun_drops_seen:
            self.drops.add("tun_write_failed", drops - self._tun_drops_seen)
            self._tun_drops_seen = drops

    def collect_tun_drops(self) -> None:
        if self.tunnel is not None:
            self._count_tun_drops(self.tunnel)

    def maybe_drop_privileges(self) -> None:
        if self.identity is None or self.privileges_dropped:
            return
        drop_privileges(self.identity)
        self.privileges_dropped = True
        self.log.info("privileges_dropped", user=self.identity.user, group=self.identity.group,
                      uid=self.identity.uid, gid=self.identity.gid, note=self._restart_note())

    def _restart_note(self) -> str | None:
        notes = []
        if not self.options.persist_tun:
            notes.append("without persist-tun a reconnect cannot recreate the TUN device")
        if not self.options.persist_key:
            notes.append("without persist-key a reconnect cannot read the key files again")
        return "; ".join(notes) or None


_ALL_BYTES = frozenset(range(256))  # static-key mode: any first byte is data


class Connection:
    """One link, one session, one nursery."""

    def __init__(self, client: Client, remote: Remote) -> None:
        self.client = client
        self.options = client.options
        self.remote = remote
        self.log = client.log.bind(remote=_endpoint(remote.host, remote.port))
        config = client.config
        if remote.server_poll_timeout is not None:  # connect-timeout in a <connection> block
            config = replace(config, server_poll_timeout=float(remote.server_poll_timeout))
        persist = client.replay_persist
        if persist is not None and persist.state is not None:  # --- more --- replay-persist
            config = replace(config, wrap_replay_start=persist.state)
        self.session = Session(config, trio.current_time())
        self.pump = SessionPump(self.session, send=self._send_control,
                                deliver=self._deliver, on_event=self._on_event)
        self._started = trio.current_time()
        self._clock = trio.lowlevel.current_clock().current_time  # = trio.current_time
        self.remote_ip = ""
        self.outcome: Outcome | None = None
        self.udp: DatagramLink | None = None
        self.tcp: PacketLink | None = None
        self._nursery: trio.Nursery | None = None
        self._control_seen = trio.Event()
        self._tun_started = False
        self._peer_seen = False
        self._ready: ReadySet | None = None  # UDP: the link reader's fds (link, then TUN)
        self._tun_fd = -1
        self._tun_device: TunDevice | None = None
        self._seen_drops: Counter[str] = Counter()
        self._seen_link = (0, 0, 0)
        self.no_tun = 0
        self.mss: int | None = None  # clamp TCP SYNs to this MSS (mssfix), set with the TUN
        self._fragmenting = self.session.fragment_layer is not None  # fragment N
        # IPv6 TCP SYNs: 20 less (mss.c mss_fixup_ipv6); only when the TUN has an IPv6
        # address, so that IPv4-only tunnels do no IPv6 work per packet
        self.mss6: int | None = None
        # block-ipv6: the source of the ICMPv6 answers written back to the TUN (None: off)
        self.block6: bytes | None = None
        self.recursive: RecursiveFilter | None = None  # --- more --- allow-recursive-routing
        self.recursive_drops = 0
        self._single_session_logged = False
        self.shaper: Shaper | None = None
        self.client_nat: ClientNat | None = None  # client-nat: set by _start_tun()
        self.tun_mtu = 1500
        self._passtos: PassTos | None = None  # passtos: built once the link is open
        self.peer: Address | None = None  # float: the server's address (socket unconnected)
        # TLS peer-to-peer server: the address the peer must come from (None: any)
        self._allowed: str | None = None
        self._listen_drops: Counter[str] = Counter()
        # --- static ---
        # static-key mode (secret): no opcode byte, every packet goes to the data path
        self._static = self.session.config.static_keys is not None
        self._data_byte0 = _ALL_BYTES if self._static else DATA_BYTE0

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> Outcome:
        self.client.scripts.new_connection()
        early = self._static and self.client.listening
        if early:  # static key, waiting side: the device is up before the peer (as OpenVPN)
            self.session.start(trio.current_time())
            await self.pump.flush()
            if self.outcome is not None:
                return self.outcome
        opened = await (self._open_listener() if self.client.listening else self._open_link())
        if opened is not None:
            return opened
        if self.options.passtos:
            self._passtos = PassTos(link_socket_of(self.udp if self.udp is not None
                                                   else self.tcp))
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if early and self.client.tunnel is not None:
                    self._start_tun(self.client.tunnel)  # now that there is a link
                elif self._static:  # static key: the data channel (and device) now
                    self.session.start(trio.current_time())
                    await self.pump.flush()
                elif self.client.listening:
                    await self._take_over()
                else:
                    self.session.start(trio.current_time())
                    await self.pump.flush()
                    nursery.start_soon(self._server_poll)
                nursery.start_soon(self._link_reader)
                nursery.start_soon(self.pump.run_timers)
                nursery.start_soon(self._drop_ticker)
                nursery.start_soon(self._stop_watcher)
                if self.client.replay_persist is not None:
                    nursery.start_soon(self._replay_persist_ticker)
        finally:
            with trio.CancelScope(shield=True):
                self._save_replay_state()
                await self._close_link()
                self._collect_drops()
                self._log_compression()
                self._log_fragment()
                rt.publish_drops(self.client.events, self.client.drops,
                                 trio.current_time(), self.log)
        return self.outcome or Reconnect("connection_ended")

    async def _replay_persist_ticker(self) -> None:
        while True:
            await trio.sleep(SAVE_INTERVAL)
            self._save_replay_state()

    def _save_replay_state(self) -> None:
        """replay-persist: the peer's control-channel (time, id) to the file, if changed."""
        persist = self.client.replay_persist
        if persist is not None and persist.save(self.session.wrap_replay_state):
            self.log.debug("replay_state_saved", file=str(persist.path))

    def _log_fragment(self) -> None:
        """The fragment layer's counters of this connection, if configured."""
        frag = self.session.fragment_layer
        if frag is not None:
            self.log.info("fragment_stats", max_size=frag.max_size,
                          fragmented_packets=frag.fragmented, fragments_out=frag.fragments_out,
                          fragments_in=frag.fragments_in, reassembled=frag.reassembled,
                          expired=frag.expired)

    def _log_compression(self) -> None:
        """The compression counters of this connection (OpenVPN comp_print_stats), if any."""
        comp = self.session.compressor
        if comp is not None:
            self.log.info("compression_stats", algorithm=comp.kind.value,
                          compressed_packets=comp.compressed_packets,
                          pre_compress=comp.pre_compress, post_compress=comp.post_compress,
                          decompressed_packets=comp.decompressed_packets,
                          pre_decompress=comp.pre_decompress,
                          post_decompress=comp.post_decompress)

    def finish(self, outcome: Outcome) -> None:
        """End this connection with ``outcome`` (the first one set wins)."""
        if self.outcome is None:
            self.outcome = outcome
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _open_link(self) -> Outcome | None:
        """Resolve and open the link; an Outcome if that failed (or a stop came first)."""
        r, o = self.remote, self.options
        tcp = r.proto == "tcp-client"
        if r.http_proxy is not None or r.socks_proxy is not None:
            return await self._open_proxied(tcp)
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        resolved = await self._resolve(kind)
        if not isinstance(resolved, tuple):
            return resolved
        family, self.remote_ip = resolved
        wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
        local_host = await self._local_host(kind)
        if isinstance(local_host, (Reconnect, Exit)):
            return local_host
        bind = (local_host or wildcard, o.lport if o.bind_local else 0)
        try:
            if tcp:
                timeout = self.poll_timeout
                tcp_link = await self._connect_tcp(bind if o.bind_local else None, timeout)
                if tcp_link is None:
                    return Exit(0, "signal")
                self.tcp = tcp_link
                local = self.tcp.local_address
            else:
                self.udp = self.client.host.open_udp(bind, o.sndbuf, o.rcvbuf)
                if o.float_:
                    # float: packets may come from another address; the socket stays
                    # unconnected and we send to whichever address last authenticated
                    self.peer = (self.remote_ip, r.port)
                else:  # the kernel drops whatever does not come from the remote
                    self.udp.connect((self.remote_ip, r.port))
                local = self.udp.local_address
        except trio.TooSlowError:
            self.log.warning("connect_timeout", seconds=self.poll_timeout)
            return Reconnect("connect_timeout")
        except RuntimeSetupError as exc:
            self.log.warning("link_failed", detail=str(exc))
            await self._close_link()
            return Reconnect("network_error", str(exc))
        self.client.scripts.on_link(self.remote_ip, r.port)
        self.client.events.publish(rt.LinkOpened("tcp" if tcp else "udp",
                                                 _endpoint(local[0], local[1]),
                                                 _endpoint(self.remote_ip, r.port)), self.log)
        return None

    # -- TLS peer-to-peer server ----------------------------------------------------------

    async def _open_listener(self) -> Outcome | None:
        """TLS peer-to-peer server: bind ``local``/``lport`` and wait for the peer, as
        OpenVPN's tls-server without 'mode server' does. With 'remote', the peer must come
        from its address (socket.h, link_socket_verify_incoming_addr(); over TCP
        socket.c, socket_listen_accept(): "Rejected connection attempt ... due to --remote
        setting"); 'float' lifts that over UDP. Over TCP the first accepted connection is
        the peer."""
        r, o = self.remote, self.options
        tcp = o.proto == "tcp-server"
        wildcard = "::" if o.family == 6 else "0.0.0.0"
        if r.host:
            resolved = await self._resolve(socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
            if not isinstance(resolved, tuple):
                return resolved
            family, ip = resolved
            wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"
            self._allowed = None if o.float_ and not tcp else ip
        local_host = await self._local_host(socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        if isinstance(local_host, (Reconnect, Exit)):
            return local_host
        bind = (local_host or wildcard, o.lport)
        host = self.client.host
        try:
            if tcp:
                if not isinstance(host, SystemHost):
                    raise RuntimeSetupError("this host cannot listen on TCP", "proto")
                listener = await host.open_tcp_listener(bind[0], bind[1], o.sndbuf, o.rcvbuf)
                self.client.events.publish(rt.LinkOpened(
                    "tcp-server", _endpoint(*listener.local_address[:2]), ""), self.log)
                try:
                    accepted = await self.client.until_stop(
                        functools.partial(self._accept_peer, listener))
                finally:
                    with trio.CancelScope(shield=True):
                        await listener.aclose()
                if not accepted:
                    return Exit(0, "signal")
                link = self.tcp = accepted[0]
                self._set_peer(link.peer_address)
                self.client.events.publish(rt.LinkOpened(
                    "tcp", _endpoint(*link.local_address[:2]),
                    _endpoint(self.remote_ip, self.remote.port)), self.log)
            else:
                self.udp = host.open_udp(bind, o.sndbuf, o.rcvbuf)
                self.client.events.publish(rt.LinkOpened(
                    "udp", _endpoint(*self.udp.local_address[:2]), ""), self.log)
        except RuntimeSetupError as exc:
            self.log.warning("link_failed", detail=str(exc))
            await self._close_link()
            return Reconnect("network_error", str(exc))
        return None

    async def _accept_peer(self, listener: TcpLinkListener) -> TcpLink:
        while True:
            link = await listener.accept()
            address = link.peer_address
            if self._allowed is None or _same_host(address[0], self._allowed):
                return link
            self.log.warning("peer_rejected", peer=_endpoint(*address[:2]),
                             reason="not the 'remote' address")
            with trio.CancelScope(shield=True):
                await link.aclose()

    def _set_peer(self, address: Address) -> None:
        """The peer's address: replies go there; scripts see it as the remote."""
        self.peer = address
        self.remote_ip = address[0]
        self.remote = replace(self.remote, port=address[1])
        self.log = self.client.log.bind(remote=_endpoint(address[0], address[1]))

    async def _take_over(self) -> None:
        """The reset of a new peer session that ended the previous connection, if any."""
        handover, self.client.handover = self.client.handover, None
        if handover is None or self.udp is None:
            return
        batch = self._listen_filter([handover])
        if batch and self._handle_data([d for d, _ in batch]):
            await self._after_control()

    def _listen_filter(self, batch: list[tuple[bytes, Address]]
                       ) -> list[tuple[bytes, Address]]:
        """TLS peer-to-peer server over UDP: which datagrams go on to the session. Not from
        'remote''s address: dropped. Before a peer: only a client's hard reset (its sender
        becomes the peer). A hard reset of another session than the peer's that passes
        tls-auth/tls-crypt: a new peer session; this connection ends and the next one
        takes over with that packet (OpenVPN moves such a session in once it
        authenticates; trivpn switches at its first packet). The rest: the float check
        (an authenticated packet from a new address moves the peer)."""
        keep: list[tuple[bytes, Address]] = []
        session = self.session
        for data, addr in batch:
            if self._allowed is not None and not _same_host(addr[0], self._allowed):
                self._listen_drops["peer_address_rejected"] += 1
                continue
            if self._static:  # the first packet that authenticates names the peer
                if self.peer is None:
                    ok, packet = session.authenticate_data(data, self._clock())
                    if ok:
                        self._set_peer(addr)
                        if packet is not None:
                            self._deliver([packet])
                    continue
                keep.append((data, addr))
                continue
            if session.remote_session_id is None:
                if not is_new_peer_reset(data, session.config.wrap, None):
                    self._listen_drops["no_peer_session"] += 1
                    continue
                self._set_peer(addr)
            elif is_new_peer_reset(data, session.config.wrap, session.remote_session_id):
                if self.options.single_session:  # --- more --- (OpenVPN ssl.c, tls_pre_decrypt)
                    self._refuse_new_session(addr)
                    continue
                self.log.info("peer_new_session", peer=_endpoint(*addr[:2]))
                self.client.handover = (data, addr)
                self.finish(Reconnect("peer_new_session", _endpoint(*addr[:2]), keep=True))
                break
            keep.append((data, addr))
        return keep

    def _refuse_new_session(self, addr: Address) -> None:
        """single-session: once this connection had its session, a new session request is
        refused (OpenVPN ssl.c, tls_pre_decrypt(): "Cannot accept new session request from
        ... due to session context expire or --single-session"); the peer gets in again once
        this connection restarts (ping-restart)."""
        self._listen_drops["single_session"] += 1
        if not self._single_session_logged:
            self._single_session_logged = True
            self.log.warning("new_session_refused", peer=_endpoint(*addr[:2]),
                             reason="single-session")

    @property
    def poll_timeout(self) -> int:
        """``connect-timeout``/``server-poll-timeout`` of this profile (default 120 s)."""
        return (self.remote.server_poll_timeout or self.options.server_poll_timeout
                or DEFAULT_CONNECT_TIMEOUT)

    async def _open_proxied(self, tcp: bool) -> Outcome | None:
        """Open the link through this profile's HTTP or SOCKS proxy (OpenVPN: the proxy
        handshake is part of connecting, bounded by connect-timeout, and a failure moves on
        like any failed connection)."""
        r = self.remote
        http, socks = r.http_proxy, r.socks_proxy
        proxy_host = http.host if http is not None else socks.host if socks else None
        proxy_port = http.port if http is not None else socks.port if socks else 0
        assert proxy_host is not None
        what = "http" if http is not None else "socks"
        try:
            creds_source = (http.credentials if http is not None
                            else socks.credentials if socks is not None else None)
            creds = read_proxy_credentials(creds_source) if creds_source else None
        except ConfigError as exc:
            self.log.error("config_error", detail=str(exc))
            return Exit(1, "config_error", str(exc))
        proxy = Remote(proxy_host, proxy_port, "tcp-client", r.family, r.line)
        resolved = await self._resolve(socket.SOCK_STREAM, proxy)
        if not isinstance(resolved, tuple):
            return resolved
        _, proxy_ip = resolved
        self.remote_ip = proxy_ip  # what the link talks to (routes bypass the tunnel to it)
        stream: trio.abc.Stream | None = None
        failed: list[Exception] = []
        async with trio.open_nursery() as race:
            race.start_soon(self._cancel_on_stop, race.cancel_scope)
            try:
                with trio.fail_after(self.poll_timeout):
                    stream = await self._proxy_handshake(tcp, proxy_ip, proxy_port, creds)
            except (trio.TooSlowError, RuntimeSetupError, OSError) as exc:
                failed.append(exc)
            race.cancel_scope.cancel()
        if failed:
            error = failed[0]
            if self.udp is not None:
                self.udp.close()
                self.udp = None
            reason = ("connect_timeout" if isinstance(error, trio.TooSlowError)
                      else "proxy_failed")
            detail = str(error) or f"no answer within {self.poll_timeout} s"
            self.log.warning(reason, proxy=f"{what} {proxy_host}:{proxy_port}", detail=detail)
            return Reconnect(reason, detail)
        if stream is None:
            return Exit(0, "signal")
        link = self.tcp if self.tcp is not None else self.udp
        local = link.local_address if link is not None else None
        self.client.events.publish(rt.LinkOpened(
            "tcp" if tcp else "udp", f"{local[0]}:{local[1]}" if local else "",
            f"{r.host}:{r.port} via {what} proxy {proxy_ip}:{proxy_port}"), self.log)
        return None

    async def _proxy_handshake(self, tcp: bool, proxy_ip: str, proxy_port: int,
                               creds: ProxyCredentials | None) -> trio.abc.Stream:
        """Connect to the proxy and run its handshake; sets ``self.tcp`` or ``self.udp``."""
        r, o, host = self.remote, self.options, self.client.host
        bind = (o.local, o.lport) if o.bind_local and o.local else None
        stream: trio.abc.Stream = await host.open_stream(proxy_ip, proxy_port, bind,
                                                         o.sndbuf, o.rcvbuf)
        try:
            if r.http_proxy is not None:
                http = r.http_proxy
                if http.auth in ("auto", "auto-nct"):
                    try:
                        await http_connect(stream, http, r.host, r.port, None)
                    except ProxyRefused as exc:
                        # OpenVPN: a 407 makes it retry on a new connection with the
                        # method the proxy asks for: Digest, else basic (which auto-nct
                        # never sends)
                        digest = exc.digest_challenge
                        if (exc.status != 407 or creds is None
                                or (http.auth == "auto-nct" and digest is None)):
                            raise
                        await stream.aclose()
                        stream = await host.open_stream(proxy_ip, proxy_port, bind, o.sndbuf,
                                                         o.rcvbuf)
                        await http_connect(stream, replace(http, auth="basic")
                                           if digest is None else http, r.host, r.port,
                                           creds, digest=digest)
                else:
                    await http_connect(stream, http, r.host, r.port, creds)
            elif tcp:
                assert r.socks_proxy is not None
                await socks_connect(stream, r.socks_proxy, r.host, r.port, creds)
            else:
                assert r.socks_proxy is not None
                relay = await socks_connect(stream, r.socks_proxy, r.host, r.port, creds,
                                            udp=True)
                resolved = await self.client.host.resolve(  # SOCKS UDP is IPv4 only
                    self._lookup_name(replace(r, family=4)), socket.SOCK_DGRAM)
                relay_ip = proxy_ip if relay.host in ("0.0.0.0", "::") else relay.host
                inner = host.open_udp(("0.0.0.0", 0), o.sndbuf, o.rcvbuf)
                self.udp = SocksUdpLink(inner, (relay_ip, relay.port),
                                        (resolved[1], r.port), stream)
                return stream
        except BaseException:
            with trio.CancelScope(shield=True):
                await stream.aclose()
            raise
        self.tcp = (TcpLink(stream) if isinstance(stream, trio.SocketStream)
                    else FramedLink(stream, local=None, peer=(proxy_ip, proxy_port)))
        return stream

    async def _resolve(self, kind: int, target: Remote | None = None
                       ) -> tuple[int, str] | Outcome:
        """Look the remote up with ``resolv-retry``'s attempts and spacing
        (:func:`~trivpn.runtime.supervisor.resolve_attempts`): (family, address), or the
        outcome when every lookup failed (``resolv-retry 0``: exit 1, as OpenVPN's fatal
        "Cannot resolve host address") or a stop signal came during a wait."""
        remote = target or self.remote
        retry = self.options.resolv_retry
        persisted = self.client.persisted_addresses
        if self.options.preresolve and (remote.host, kind) in self.client.preresolved:
            return self.client.preresolved[(remote.host, kind)]  # preresolve
        if self.options.persist_remote_ip and (remote, kind) in persisted:
            # persist-remote-ip: a restart reuses the address (OpenVPN init.c
            # do_close_link_socket() keeps it across SIGUSR1 restarts)
            return persisted[(remote, kind)]
        attempts = resolve_attempts(retry)
        for attempt in range(1, attempts + 1):
            try:
                found = await self.client.host.resolve(self._lookup_name(remote), kind)
                if self.options.persist_remote_ip:
                    persisted[(remote, kind)] = found
                return found
            except OSError as exc:
                left = attempts - attempt
                action = "retry" if left else "exit" if retry == 0 else "reconnect"
                self.log.warning("resolve_failed", host=remote.host, detail=str(exc),
                                 attempt=attempt, attempts_left=left, action=action)
                if action == "exit":
                    return Exit(1, "resolve_failed", str(exc))
                if action == "reconnect":
                    return Reconnect("resolve_failed", str(exc))
            delay = resolve_retry_delay(attempt)
            if delay:
                with trio.move_on_after(delay):
                    await self.client.stop.wait()
            if self.client.stop.is_set():
                return Exit(0, "signal")
        raise AssertionError("resolve_attempts() is at least 1")

    async def _local_host(self, kind: int) -> str | Outcome | None:
        """The address to bind: ``local`` as written (the socket layer resolves a name at
        every connection, as OpenVPN does at every restart), or with ``persist-local-ip``
        its address from the first lookup, kept across restarts (OpenVPN init.c,
        do_close_link_socket(): the bound address survives a SIGUSR1 restart)."""
        o = self.options
        if o.local is None or not o.persist_local_ip:
            return o.local
        if self.client.persisted_local is None:
            target = Remote(o.local, o.lport, self.remote.proto, o.family, 0)
            resolved = await self._resolve(kind, target)
            if not isinstance(resolved, tuple):
                return resolved
            self.client.persisted_local = resolved[1]
        return self.client.persisted_local

    def _lookup_name(self, remote: Remote) -> Remote:
        """``remote-random-hostname``: a random 12-hex-digit label before the name at each
        lookup (OpenVPN misc.c hostname_randomize(), socket.c openvpn_getaddrinfo());
        numeric addresses are looked up as they are."""
        if not self.options.remote_random_hostname or _is_address(remote.host):
            return remote
        label = self.client.random.getrandbits(48).to_bytes(6, "big").hex()
        return replace(remote, host=f"{label}.{remote.host}")

    async def _connect_tcp(self, bind: tuple[str, int] | None,
                           timeout: float) -> PacketLink | None:
        """Connect to the remote within ``timeout`` seconds; None if a stop signal came first.
        Raises :class:`trio.TooSlowError` or :class:`RuntimeSetupError` as themselves: they
        are caught inside the race nursery, which would otherwise wrap them in an
        ``ExceptionGroup`` that no ``except`` clause of the caller matches (the client then
        died on the first refused connection after a server restart)."""
        opened: list[PacketLink] = []  # stays empty if a stop signal came first
        failed: list[trio.TooSlowError | RuntimeSetupError] = []
        async with trio.open_nursery() as race:
            race.start_soon(self._cancel_on_stop, race.cancel_scope)
            try:
                with trio.fail_after(timeout):
                    opened.append(await self.client.host.open_tcp(
                        self.remote_ip, self.remote.port, bind,
                        self.options.sndbuf, self.options.rcvbuf))
            except (trio.TooSlowError, RuntimeSetupError) as exc:
                failed.append(exc)
            race.cancel_scope.cancel()
        if failed:
            raise failed[0]
        return opened[0] if opened else None

    async def _cancel_on_stop(self, scope: trio.CancelScope) -> None:
        await self.client.stop.wait()
        scope.cancel()

    async def _close_link(self) -> None:
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            with contextlib.suppress(Exception):
                await self.tcp.aclose()

    # -- link → session / TUN -------------------------------------------------------------

    async def _link_reader(self) -> None:
        try:
            if isinstance(self.udp, UdpLink):
                await self._udp_reader(self.udp)
            elif self.udp is not None:
                await self._datagram_reader(self.udp)
            elif self.tcp is not None:
                await self._tcp_reader(self.tcp)
        except LinkClosed as exc:
            self.log.warning("link_closed", detail=str(exc))
            self.finish(Reconnect("connection_closed", str(exc)))
        except DecodeError as exc:
            self.log.warning("link_framing_error", detail=str(exc))
            self.finish(Reconnect("bad_framing", str(exc)))
        except (OSError, trio.BrokenResourceError) as exc:
            self.log.warning("link_error", detail=str(exc))
            self.finish(Reconnect("network_error", str(exc)))

    async def _udp_reader(self, link: UdpLink) -> None:
        """UDP: one task for both directions once the TUN is up (its fd joins the ready set
        when the push configured it; :mod:`trivpn.runtime.readiness`)."""
        link_fd = link.fileno()
        ready = self._ready = ReadySet((link_fd,), direct=self.client.direct_wait)
        if self._tun_fd >= 0:  # static key: the TUN came up before this reader
            ready.add(self._tun_fd)
        self.log.debug("data_path_wait", direct=ready.direct)
        try:
            while True:
                for fd in await ready.wait():
                    # A burst is drained (batches for GSO); a lone packet is read once.
                    if fd == link_fd:
                        batch = link.recv_ready(drain=fd in ready.again)
                        if self.client.listening and batch:
                            batch = self._listen_filter(batch)
                        if self.peer is not None and batch:
                            batch, floated_control = self._float_check(batch)
                            if floated_control:
                                await self._after_control()
                        if batch and self._handle_data(
                                [batch[0][0]] if len(batch) == 1 else [d for d, _ in batch]):
                            await self._after_control()
                    elif fd == self._tun_fd:
                        out = self._tun_ready(fd in ready.again)
                        if out and self._passtos is not None:
                            await self._send_passtos(out)
                        # one datagram that fits into the socket queue: no await
                        elif out and (len(out) > 1
                                    or link.send_nowait(out[0], self.peer) is None):
                            await link.send_many(out, self.peer)
        finally:
            self._ready = None
            ready.close()

    async def _datagram_reader(self, link: DatagramLink) -> None:
        """A datagram link without a file descriptor (in memory): one plain receive loop;
        the TUN direction then has its own task (:meth:`_tun_reader`)."""
        while True:
            batch = await link.recv_batch()
            if self.client.listening:
                batch = self._listen_filter(batch)
            if self.peer is not None:
                batch, floated_control = self._float_check(batch)
                if floated_control:
                    await self._after_control()
            if batch and self._handle_data([d for d, _ in batch]):
                await self._after_control()

    async def _tcp_reader(self, link: PacketLink) -> None:
        while True:
            if self._handle_data(await link.recv_packets()):
                await self._after_control()

    async def _after_control(self) -> None:
        """Control packets went into the session: process its output (once per batch)."""
        self._control_seen.set()
        await self.pump.flush()

    def _handle_data(self, batch: list[bytes]) -> bool:
        """The link → TUN hot path: data packets straight through the session to the TUN;
        control packets into the session. True when there were control packets (then
        :meth:`_after_control` is due)."""
        now = self._clock()
        decrypt = self.session.decrypt_data
        tunnel = self.client.tunnel
        mss = self.mss
        traffic = self.client.traffic
        traffic.bytes_in += sum(map(len, batch))
        traffic.packets_in += len(batch)
        control = False
        to_tun: list[bytes] = []
        append = to_tun.append
        data_byte0 = self._data_byte0
        for data in batch:
            if data and data[0] in data_byte0:
                packet = decrypt(data, now)
                if packet is not None:
                    # clamp_mss's first test inline: only TCP can need it (pings skip the call)
                    if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                        packet = clamp_mss(packet, mss)
                    append(packet)
            else:
                self.session.receive_datagram(data, now)
                control = True
        if to_tun:
            if tunnel is None:
                self.no_tun += len(to_tun)
            else:
                if self.mss6 is not None:
                    to_tun = clamp_ipv6_batch(to_tun, self.mss6)
                if self.client_nat is not None:  # client-nat: off the default path
                    to_tun = self.client_nat.incoming(to_tun)
                traffic.tun_write_bytes += sum(map(len, to_tun))
                tunnel.device.write_many(to_tun)
        return control

    # -- TUN → link -----------------------------------------------------------------------

    def _float_check(self, batch: list[tuple[bytes, Address]]
                     ) -> tuple[list[tuple[bytes, Address]], bool]:
        """float: packets from the current peer pass on; one from another address is tried
        on its own and, if the session authenticates it (a data packet that decrypts, a
        control packet it accepts), that address becomes the peer, as OpenVPN's float does
        (socket.c, link_socket_set_outgoing_addr). Also returns whether one was a control
        packet (then :meth:`_after_control` is due)."""
        peer = self.peer
        assert peer is not None
        if all(addr == peer for _, addr in batch):
            return batch, False
        keep: list[tuple[bytes, Address]] = []
        any_control = False
        session = self.session
        for data, addr in batch:
            if addr == peer:
                keep.append((data, addr))
                continue
            dropped = sum(session.drops.values())
            control = self._handle_data([data])
            if sum(session.drops.values()) == dropped:  # authenticated
                self.log.info("peer_floated", peer=_endpoint(addr[0], addr[1]),
                              previous=_endpoint(peer[0], peer[1]))
                self.peer = peer = addr
            any_control = any_control or control
        return keep, any_control

    def _start_tun(self, tunnel: TunnelHandle) -> None:
        """The TUN → link direction, once per connection when the push configured the TUN:
        UDP adds the TUN to the link reader's ready set, TCP starts a TUN reader task."""
        self.mss = mss_limit_for(self.options, (self.session.cipher or "",),
                                 "udp" if self.udp is not None else "tcp")
        addresses = tunnel.describe().get("addresses")
        has_ipv6 = isinstance(addresses, list) and any(":" in str(a) for a in addresses)
        self.mss6 = self.mss - 20 if self.mss is not None and has_ipv6 else None
        self._setup_block_ipv6(tunnel)
        # packets to the server itself are dropped unless allow-recursive-routing
        self.recursive = (RecursiveFilter.for_server(self.remote_ip, tap=self.options.dev_type
                                                     == "tap")
                          if self.remote_ip and not self.options.allow_recursive_routing
                          else None)
        device = tunnel.device
        pushed = self.session.pushed  # --- more --- client-nat: the config's, then pushed
        nat = self.options.client_nat + (pushed.client_nat if pushed is not None else ())
        self.client_nat = ClientNat(nat) if nat else None
        rate = pushed.shaper if pushed is not None and pushed.shaper else self.options.shaper
        if rate:  # shaper N (configured or pushed): off the fast path
            ipv6 = ":" in self.remote_ip
            self.shaper = Shaper(rate, datagram_overhead(ipv6, self.tcp is not None))
        if isinstance(self.udp, UdpLink) and isinstance(device, TunDevice) and not self.shaper:
            # the fast path: the link reader serves both fds (static key: the TUN is up
            # before the reader starts, which then adds it)
            self._tun_device = device
            self._tun_fd = device.fileno()
            if self._ready is not None:
                self._ready.add(self._tun_fd)
        elif self._nursery is not None:
            self._nursery.start_soon(self._tun_reader, tunnel)

    def _setup_block_ipv6(self, tunnel: TunnelHandle) -> None:
        """block-ipv6 (configured or pushed): answer IPv6 from the TUN, from the tunnel's IPv6
        peer (fe80::7 without one), as OpenVPN does (forward.c)."""
        pushed = self.session.pushed
        if not (self.options.block_ipv6 or (pushed is not None and pushed.block_ipv6)):
            self.block6 = None
            return
        remote6 = None
        if pushed is not None and pushed.ifconfig_ipv6 is not None:
            remote6 = pushed.ifconfig_ipv6.remote
        elif self.options.ifconfig_ipv6 is not None:
            remote6 = self.options.ifconfig_ipv6.remote
        self.block6 = remote6.packed if remote6 is not None else FALLBACK_SOURCE
        mtu = tunnel.describe().get("mtu")
        self.tun_mtu = mtu if isinstance(mtu, int) else self.options.tun_mtu

    def _answer_ipv6(self, packets: list[bytes], source: bytes) -> list[bytes]:
        """block-ipv6: IPv6 packets are answered on the TUN and go no further."""
        packets, answers = block_ipv6(packets, source, self.tun_mtu)
        tunnel = self.client.tunnel
        if answers and tunnel is not None:
            tunnel.device.write_many(answers)
        return packets

    def _encrypt_tun(self, packets: list[bytes]) -> list[bytes]:
        """TUN packets to wire datagrams (MSS-clamped, encrypted)."""
        traffic = self.client.traffic
        traffic.tun_read_bytes += sum(map(len, packets))
        mss = self.mss
        if self.recursive is not None:
            packets, dropped = self.recursive.split(packets)
            self.recursive_drops += dropped
        if self.client_nat is not None:
            packets = self.client_nat.outgoing(packets)
        if self.block6 is not None:
            packets = self._answer_ipv6(packets, self.block6)
        if self.mss6 is not None:
            packets = clamp_ipv6_batch(packets, self.mss6)
        now = self._clock()
        out: list[bytes] = []
        if self._passtos is not None:  # passtos: off the default path
            note = self._passtos.note
            for packet in packets:
                if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                    packet = clamp_mss(packet, mss)  # noqa: PLW2901
                before = len(out)
                out += self.session.encrypt_data_many(packet, now)
                note(packet, len(out) - before)
            packets = []
        elif self._fragmenting:  # fragment N: off the default path
            for packet in packets:
                if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                    packet = clamp_mss(packet, mss)  # noqa: PLW2901
                out += self.session.encrypt_data_many(packet, now)
            packets = []
        encrypt = self.session.encrypt_data
        append = out.append
        for packet in packets:
            if mss is not None and len(packet) >= 40 and packet[9] == IPPROTO_TCP:
                packet = clamp_mss(packet, mss)  # noqa: PLW2901
            wire = encrypt(packet, now)
            if wire is not None:
                append(wire)
        if out:
            traffic.bytes_out += sum(map(len, out))
            traffic.packets_out += len(out)
        return out

    def _tun_ready(self, drain: bool) -> list[bytes]:
        """The TUN → link hot path (UDP): drain the TUN and encrypt the batch, for the link
        in one call (GSO runs). Nothing waits for a batch to fill."""
        device = self._tun_device
        if device is None:  # pragma: no cover - the fd is watched only with a device
            return []
        try:
            packets = device.read_ready(64 if drain else 1)
        except trio.ClosedResourceError:
            self._stop_tun()
            return []
        except OSError as exc:
            self.log.error("tun_error", detail=str(exc))
            self.finish(Exit(1, "tun_error", str(exc)))
            return []
        return self._encrypt_tun(packets)

    async def _send_shaped(self, out: list[bytes], shaper: Shaper) -> None:
        """shaper N: one datagram at a time, each after the wait the previous one set."""
        for datagram in out:
            delay = shaper.delay(trio.current_time())
            if delay:
                await trio.sleep(delay)
            if self.tcp is not None:
                await self.tcp.send_packets([datagram])
            elif self.udp is not None:
                await self.udp.send_many([datagram], self.peer)
            shaper.wrote(len(datagram), trio.current_time())

    async def _send_passtos(self, out: list[bytes]) -> None:
        """passtos: each run of one TOS goes out after the socket takes that TOS."""
        assert self._passtos is not None
        for tos, run in self._passtos.take(out):
            self._passtos.apply(tos)
            if self.tcp is not None:
                await self.tcp.send_packets(run)
            elif self.udp is not None:
                await self.udp.send_many(run, self.peer)

    def _stop_tun(self) -> None:
        if self._ready is not None and self._tun_fd >= 0:
            self._ready.discard(self._tun_fd)
        self._tun_fd = -1
        self._tun_device = None

    async def _tun_reader(self, tunnel: TunnelHandle) -> None:
        """The TUN → link hot path over TCP (or a link without a file descriptor): each
        wake-up drains the TUN, encrypts the batch and hands it to the link in one write."""
        read = tunnel.device.read_batch
        tcp, udp = self.tcp, self.udp
        try:
            while True:
                out = self._encrypt_tun(await read())
                if not out:
                    continue
                if self.shaper is not None:
                    await self._send_shaped(out, self.shaper)
                elif self._passtos is not None:
                    await self._send_passtos(out)
                elif tcp is not None:
                    await tcp.send_packets(out)
                elif udp is not None:
                    await udp.send_many(out, self.peer)
        except trio.ClosedResourceError:
            return
        except trio.BrokenResourceError as exc:
            self.log.warning("link_error", detail=str(exc))
            self.finish(Reconnect("network_error", str(exc)))
        except OSError as exc:
            self.log.error("tun_error", detail=str(exc))
            self.finish(Exit(1, "tun_error", str(exc)))

    # -- control, timers, events ----------------------------------------------------------

    async def _send_control(self, datagrams: list[bytes]) -> None:
        self.client.traffic.bytes_out += sum(map(len, datagrams))
        self.client.traffic.packets_out += len(datagrams)
        if self.udp is not None:
            self.udp.try_send_many(datagrams, self.peer)
        elif self.tcp is not None:
            try:
                await self.tcp.send_packets(datagrams)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.finish(Reconnect("network_error", str(exc)))

    def _deliver(self, packets: list[bytes]) -> None:
        """Packets the session decrypted outside the hot path (to the TUN, if there is one)."""
        tunnel = self.client.tunnel
        if tunnel is not None:
            for packet in packets:
                tunnel.device.write(packet)

    async def _drop_ticker(self) -> None:
        while True:
            await trio.sleep(DROP_TICK)
            self._collect_drops()
            now = trio.current_time()
            if self.client.drops.due(now):
                rt.publish_drops(self.client.events, self.client.drops, now, self.log)

    def _collect_drops(self) -> None:
        agg = self.client.drops
        current = self.session.drops
        for reason, count in current.items():
            delta = count - self._seen_drops[reason]
            if delta > 0:
                agg.add(reason, delta)
        self._seen_drops = Counter(current)
        for reason, count in self._listen_drops.items():
            agg.add(reason, count)
        self._listen_drops.clear()
        link = self.udp or self.tcp
        if link is not None:
            c = link.counters
            now_link = (c.tx_dropped, c.tx_errors, c.rx_errors)
            for name, new, old in zip(("link_send_queue_full", "link_send_error",
                                       "link_receive_error"), now_link, self._seen_link,
                                      strict=True):
                if new > old:
                    agg.add(name, new - old)
            self._seen_link = now_link
        if self.no_tun:
            agg.add("no_tun_device", self.no_tun)
            self.no_tun = 0
        if self.recursive_drops:
            agg.add("recursive_routing", self.recursive_drops)
            self.recursive_drops = 0
        self.client.collect_tun_drops()

    async def _server_poll(self) -> None:
        """``server-poll-timeout`` (default 120 s, OpenVPN forward.c
        check_server_poll_timeout): no packet from the server that long after starting
        this connection → move on to the next remote at once. Over UDP this is what makes
        a client leave a dead remote before hand-window runs out."""
        timeout = self.poll_timeout
        await trio.sleep_until(self._started + timeout)
        if self.session.remote_session_id is None:
            self.log.warning("server_poll_timeout", seconds=timeout)
            self.finish(Reconnect("server_poll_timeout", advance=True, pause=False))

    async def _delayed_routes(self, tunnel: TunnelHandle, plan: TunnelPlan) -> None:
        """route-delay: add the routes ``route-delay`` seconds after the push."""
        assert self.options.route_delay is not None
        seconds = self.options.route_delay[0]
        self.log.info("route_delay", seconds=seconds, routes=len(plan.routes))
        await trio.sleep(seconds)
        try:
            tunnel.reconfigure(plan)
        except RuntimeSetupError as exc:
            self.log.error("tun_setup_failed", detail=str(exc))
            self.finish(Exit(1, "tun_setup_failed", str(exc)))
            return
        for failure in tunnel.route_failures:
            self.log.warning("route_failed", detail=failure)
        self.log.info("routes_added", routes=[str(r) for r in plan.routes])

    async def _stop_watcher(self) -> None:
        await self.client.stop.wait()
        session = self.session
        pushed = session.pushed
        configured = (self.remote.explicit_exit_notify
                      if self.remote.explicit_exit_notify is not None
                      else self.options.explicit_exit_notify)
        seconds = (pushed.explicit_exit_notify if pushed and pushed.explicit_exit_notify
                   else configured)
        if seconds and self.udp is not None and session.established:
            self.log.info("exit_notify_sent", method="exit" if session.cc_exit else "occ_exit",
                          seconds=seconds)
            self._control_seen = trio.Event()
            session.exit_notify(trio.current_time())
            await self.pump.flush()
            if session.cc_exit:
                with trio.move_on_after(min(float(seconds), EXIT_ACK_WAIT)):
                    await self._control_seen.wait()
            else:
                for _ in range(seconds - 1):
                    await trio.sleep(1.0)
                    session.exit_notify(trio.current_time())
                    await self.pump.flush()
        self.finish(Exit(0, "signal", self.client.stop_reason or ""))

    def _on_event(self, event: ev.Event) -> None:  # noqa: PLR0912 - split by the session pump (issue 11)
        log = self.log
        publish = self.client.events.publish
        if isinstance(event, ev.PhaseReached):
            if event.phase == ev.PHASE_TLS_STARTED:
                publish(rt.HandshakeStarted(event.key_id), log)
            else:
                log.debug("handshake_phase", key_id=event.key_id, phase=event.phase)
        elif isinstance(event, ev.TlsHandshakeComplete):
            publish(rt.TlsEstablished(event.key_id, event.peer.common_name, event.description),
                    log)
            if self.options.tls_verify is not None and self._nursery is not None:
                self._nursery.start_soon(self._tls_verify, event.key_id, event.peer)
            else:
                self._peer_trusted(event.peer)
        elif isinstance(event, ev.DataChannelReady):
            if event.renegotiated:
                publish(rt.Renegotiated(event.key_id, event.cipher, event.peer_id), log)
            else:
                publish(rt.KeysReady(event.key_id, event.cipher, event.peer_id,
                                     key_derivation=event.key_derivation), log)
        elif isinstance(event, ev.PushReceived):
            publish(rt.PushApplied(_push_summary(event.options)), log)
            self._push_received(event.options)
        elif isinstance(event, ev.PeerCertificateRejected):
            publish(rt.CertificateRejected(event.check, event.serial, event.common_name,
                                           event.detail), log)
        elif isinstance(event, ev.HandshakeFailed):
            if event.cause != ev.CAUSE_AUTH_FAILED:
                publish(rt.HandshakeFailed(event.key_id, event.cause, event.phase,
                                           event.detail), log)
            if self.session.failed:
                self.finish(Reconnect("handshake_failed", f"{event.cause}: {event.detail}"))
        elif isinstance(event, ev.AuthFailed):
            self._on_auth_failed(event.reason)
        elif isinstance(event, ev.AuthTokenReceived):
            log.info("auth_token_received", username=event.username)
            management = self.client.management
            token = self.session.auth_token
            if management is not None and token is not None:
                # what OpenVPN's management interface shows (manage.c, management_auth_token)
                management.notify(f">PASSWORD:Auth-Token:{token.token}")
        elif isinstance(event, ev.RestartRequested):
            log.info("restart_requested", message=event.message, advance=event.advance)
            self.finish(Reconnect("server_restart", event.message, advance=event.advance))
        elif isinstance(event, ev.HaltRequested):
            log.warning("halt_requested", message=event.message)
            self.finish(Exit(0, "halt_requested", event.message))
        elif isinstance(event, ev.PeerExited):
            log.info("peer_exited", how=event.how)
            self.finish(Reconnect("peer_exited", event.how))
        elif isinstance(event, ev.KeyExpired):
            publish(rt.KeyExpired(event.key_id), log)
        elif isinstance(event, ev.KeepaliveTimeout):
            publish(rt.PingRestart(round(event.silent_for, 3)), log)
            self.finish(Reconnect("ping_restart"))
        elif isinstance(event, ev.ServerPollTimeout):
            # OpenVPN: "Server poll timeout, restarting", on to the next remote
            log.warning("server_poll_timeout", seconds=event.seconds)
            self.finish(Reconnect("server_poll_timeout", advance=True))
        elif isinstance(event, ev.TimeoutExit):
            # OpenVPN raises SIGTERM for these: the client exits (status 0), no reconnect
            log.warning(event.cause, after=round(event.after, 3), action="exit")
            self.finish(Exit(0, event.cause))
        else:
            log.debug(event.name)

    def _peer_trusted(self, peer: PeerCertificate) -> None:
        """The peer's certificate passed: its variables for the scripts; ipchange once per
        connection, before the push."""
        scripts = self.client.scripts
        scripts.on_peer(peer, self.remote_ip, self.remote.port)
        if not self._peer_seen and self._nursery is not None:
            self._peer_seen = True
            scripts.start_ipchange(self._nursery, self.remote_ip, self.remote.port)

    async def _tls_verify(self, key_id: int, peer: PeerCertificate) -> None:
        """tls-verify: the session holds the key method until the verdict."""
        scripts = self.client.scripts
        accepted, detail = await scripts.tls_verify(peer)
        if accepted:
            self._peer_trusted(peer)
        self.session.peer_verdict(key_id, accepted, detail, trio.current_time())
        await self.pump.flush()

    def _on_auth_failed(self, reason: str | None) -> None:
        """OpenVPN's receive_auth_failed (push.c): TEMP → retry later; a held auth-token →
        forget it and reconnect with the real credentials; otherwise auth-retry decides
        (none: exit, nointeract: retry the same credentials, interact: ask again). A CRV1
        challenge is kept for the next ask (it is answered with auth-retry interact)."""
        client = self.client
        if client.management is not None:
            client.management.auth_failed(AUTH, reason)
        temporary = reason is not None and reason.startswith("TEMP")
        challenge = parse_dynamic_challenge(reason)
        if challenge is not None:
            client.challenge = challenge
        token_dropped = not temporary and self.session.auth_token is not None
        if token_dropped:
            self.session.auth_token = None
        retry = self.options.auth_retry != "none" or temporary or token_dropped
        if self.options.auth_retry == "interact" and not temporary and not token_dropped:
            client.purge_credentials = True
        hint = ("the server sent a dynamic challenge: answer it with 'auth-retry interact'"
                if challenge is not None and not retry else None)
        self.log.error("auth_failed", reason=reason,
                       action="reconnect" if retry else "exit",
                       auth_token_dropped=token_dropped or None,
                       challenge=challenge.text if challenge is not None else None, hint=hint)
        if retry:
            self.finish(Reconnect("auth_failed", reason or "", advance=temporary))
        else:
            self.finish(Exit(1, "auth_failed", reason or ""))

    def _push_received(self, pushed: PushedOptions) -> None:
        if pushed.unresolved and self._nursery is not None:
            self._nursery.start_soon(self._resolve_push, pushed)  # allow-pull-fqdn
        else:
            self._on_push(pushed)

    async def _resolve_push(self, pushed: PushedOptions) -> None:
        """allow-pull-fqdn: look up the host names the server pushed (IPv4, as OpenVPN's
        getaddr() does for them), then apply the push with their addresses."""
        addresses: dict[str, ipaddress.IPv4Address] = {}
        for name in unresolved_names(pushed):
            try:
                infos = await trio.socket.getaddrinfo(name, None, socket.AF_INET)
            except OSError as exc:
                self.log.warning("pushed_name_unresolved", name=name, detail=str(exc))
                continue
            addresses[name] = ipaddress.IPv4Address(infos[0][4][0])
            self.log.info("pushed_name_resolved", name=name, address=str(addresses[name]))
        try:
            merged, skipped = with_resolved_names(pushed, addresses)
        except ProtocolError as exc:
            self.log.error("bad_push", detail=str(exc))
            self.finish(Reconnect("bad_push", str(exc)))
            return
        for line in skipped:
            self.log.warning("tunnel_warning", detail=f"{line}: a name does not resolve, skipped")
        self._on_push(merged)

    def _on_push(self, pushed: PushedOptions) -> None:
        client = self.client
        for dropped in pushed.filtered:
            self.log.info("pushed_option_filtered", option=dropped.text, by=dropped.by)
        client.schedule.established()
        try:
            # a static-key side that waits has no peer address yet
            plan = plan_client_tunnel(self.options, pushed, remote_host=self.remote_ip or None,
                                      net_gateway=client.net_gateway(self.remote_ip)
                                      if self.remote_ip else None)
        except TunnelPlanError as exc:
            self.log.error("bad_push", detail=str(exc))
            self.finish(Reconnect("bad_push", str(exc)))
            return
        for warning in plan.warnings:
            self.log.warning("tunnel_warning", detail=warning)
        delayed: TunnelPlan | None = None
        full_plan = plan
        if self.options.ifconfig_noexec:  # the scripts get the values; nothing is set
            plan = replace(plan, addresses=(), configure_link=False)
        if self.options.route_noexec:
            plan = replace(plan, routes=())
        try:
            tunnel = client.tunnel
            if tunnel is None:
                if self.options.route_delay and self.options.route_delay[0] > 0 and plan.routes:
                    # route-delay N: the device and its addresses now, the routes N seconds
                    # later (OpenVPN init.c do_route() runs after the route wakeup timer)
                    delayed, plan = plan, replace(plan, routes=())
                tunnel = client.tunnel = (NullTunnel(plan) if self.options.dev_null
                                          else client.host.open_tunnel(plan))
                reused, changed = False, True
            else:
                reused, changed = True, tunnel.reconfigure(plan)
        except RuntimeSetupError as exc:
            hint = (" (privileges were dropped: add persist-tun or run without user/group)"
                    if client.privileges_dropped else "")
            self.log.error("tun_setup_failed", detail=str(exc) + hint)
            self.finish(Exit(1, "tun_setup_failed", str(exc)))
            return
        for failure in tunnel.route_failures:
            self.log.warning("route_failed", detail=failure)
        description = tunnel.describe()
        addresses = description.get("addresses")
        self.client.events.publish(rt.TunConfigured(
            tuple(str(a) for a in addresses) if isinstance(addresses, list) else (),
            description, ifindex=tunnel.ifindex, reused=reused, reconfigured=changed),
            self.log)
        if client.dns is not None and not self.options.dev_null:
            client.dns.apply(tunnel.name, tunnel.ifindex, plan_client_dns(self.options, pushed))
        if delayed is not None and self._nursery is not None:
            self._nursery.start_soon(self._delayed_routes, tunnel, delayed)
        if not self._tun_started:
            self._tun_started = True
            self._start_tun(tunnel)
        gateway = client.net_gateway(self.remote_ip) if self.remote_ip else None
        # route_net_gateway: OpenVPN reports its route lookup's gateway, 0.0.0.0 on-link
        client.scripts.on_tunnel(pushed, tunnel.name,
                                 net_gateway=(gateway.gateway or "0.0.0.0") if gateway else None,
                                 remote_ip=self.remote_ip)
        redirected = any(r.destination in ("0.0.0.0/1", "0.0.0.0/0") for r in full_plan.routes)
        if client.scripts.runs_after_up and self._nursery is not None:
            # up runs as root, before user/group take effect (OpenVPN's order)
            self._nursery.start_soon(self._after_up, reused, changed, redirected)
        else:
            self._drop_privileges()

    async def _after_up(self, reused: bool, changed: bool, redirected: bool) -> None:
        """The scripts once the device is configured, in OpenVPN's order (init.c, do_up):
        a new device: up (init), route-up. A device kept by persist-tun: up (restart) only
        with up-restart; if the pushed options changed, OpenVPN then closes and reopens the
        device ("Pulled options changed on restart"): down (init), up (init), route-up —
        trivpn reconfigures the device in place and runs the same scripts. A failing up
        script stops the client, as OpenVPN exits; then user/group take effect."""
        scripts = self.client.scripts
        steps: list[str] = []
        if reused and self.options.up_restart:
            steps.append("restart")
        if not reused or changed:
            steps.append("init")
        for context in steps:
            if reused and context == "init":
                # OpenVPN: signal_description() of "no signal"
                await scripts.down("init", "UNKNOWN", lambda: None, reopen=True)
            result = await scripts.up(context)
            if result is not None and not result.ok:
                scripts.abandon()  # OpenVPN's fatal exit runs no down script after it
                self.log.error("up_script_failed", detail=result.detail)
                self.finish(Exit(1, "up_script_failed", result.detail))
                return
        if not reused or changed:
            await scripts.route_up(redirected)
        self._drop_privileges()

    def _drop_privileges(self) -> None:
        try:
            self.client.maybe_drop_privileges()
        except RuntimeSetupError as exc:
            self.log.error("privileges_drop_failed", detail=str(exc))
            self.finish(Exit(1, "privileges_drop_failed", str(exc)))


_RUNNERS = (Client.run.__code__, Client._run.__code__)  # they start tasks; never the culprit
