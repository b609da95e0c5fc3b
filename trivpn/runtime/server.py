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
- :mod:`trivpn.runtime.serverpeers`: the peer lifecycle (created by a transport, admitted into
  the pool on authentication, removed for a reason) and the session events; the server binds its
  methods once and hands them to the transports (:class:`~trivpn.runtime.serverhub.PeerHub`).
- :mod:`trivpn.runtime.serverhost`: the real sockets and TUN/TAP device.

Tasks (one nursery for the server, a child nursery for the peers): the transport's tasks, one
timer task per peer (retransmits, hand-window, keepalive, renegotiation; any failure of one peer
removes that peer only), housekeeping (aggregated ``packet_dropped`` log lines, the persist
file) and the operator tools.

On SIGINT/SIGTERM the server sends ``RESTART`` to every client when ``explicit-exit-notify`` is
set, then tears everything down and returns 0.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any, Protocol

import structlog
import trio

from trivpn.config import ConfigError, Options
from trivpn.config.derive import (
    AddressPool,
    address_pool,
    address_pool6,
    server_push_options,
    server_tun_ifconfig,
    server_tun_ifconfig6,
)
from trivpn.logging import RateLimitedLog
from trivpn.protocol.admission import (
    PreauthLedger,
    PreauthLimits,
)
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.gateway import (
    Gateway,
    GatewayLimits,
)
from trivpn.protocol.icmp6 import FALLBACK_SOURCE
from trivpn.protocol.session import SessionConfig
from trivpn.protocol.tls import RevocationLists, revoked_serials
from trivpn.runtime import events as rt
from trivpn.runtime.datapath import mss_limit_for
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.peers import AgeingPeerTable, PeerTable, Verdict
from trivpn.runtime.pool import PoolAllocator
from trivpn.runtime.poolpersist import PoolPersistence
from trivpn.runtime.privileges import drop_privileges, resolve_identity
from trivpn.runtime.routing import (
    BlockIpv6Router,
    FragmentingBlockIpv6Router,
    FragmentingRouter,
    Router,
    VlanRouter,
    power_of_two_at_least,
)
from trivpn.runtime.scriptenv import TunnelInfo, route_ipv6_env
from trivpn.runtime.serverhost import SystemServerHost
from trivpn.runtime.serverpeer import Peer, Pending, format_address
from trivpn.runtime.serverpeers import DROP_LOG_INTERVAL, PeerLifecycle
from trivpn.runtime.serverscripts import ServerScripts
from trivpn.runtime.servertcp import TcpTransport
from trivpn.runtime.serverudp import UdpTransport
from trivpn.runtime.supervision import (
    GuardedNursery,
    TaskNursery,
    first_leaf,
    log_internal_error,
    task_name,
)
from trivpn.runtime.transport import (
    DatagramLink,
    PacketListener,
    ServerHost,
    TunnelHandle,
)
from trivpn.runtime.tunnel import RouteRequest, TunnelPlan, device_options_plan, plan_tunnel
from trivpn.sessionsetup import drop_aggregator, session_config

Log = structlog.stdlib.BoundLogger

HOUSEKEEPING_INTERVAL = 1.0
REVOKED_LINGER = 1.0  # --drop-revoked: seconds between RESTART and removal, as for kill
ERROR_LOG_INTERVAL = 60.0


def server_pool(options: Options) -> AddressPool | None:
    """The client address pool: ``server NETWORK NETMASK``'s, or an explicit ``ifconfig-pool``
    (with ``server ... nopool``, or with ``ifconfig``); None for an IPv6-only server
    (``server-ipv6`` alone, or ``ifconfig-ipv6`` with ``ifconfig-ipv6-pool``: clients get an
    IPv6 pool address only, as from OpenVPN 2.6); ConfigError for what trivpn's server mode
    does not support (no pool at all)."""
    pool = address_pool(options)
    if pool is not None:
        return pool
    if options.server_bridge_proxy_dhcp:
        return None  # clients take their addresses by DHCP through the bridge
    if options.server is None and address_pool6(options) is not None \
            and options.ifconfig is None:
        if options.ifconfig_pool_persist is not None:
            raise ConfigError("'ifconfig-pool-persist' on an IPv6-only server (no 'server NET "
                              "MASK') is not supported by trivpn yet", options.config_path)
        return None
    if options.server is None:
        raise ConfigError("trivpn's server mode needs 'server NETWORK NETMASK', or 'ifconfig' "
                          "with 'ifconfig-pool'", options.config_path)
    raise ConfigError("'server ... nopool' without 'ifconfig-pool' is not supported: trivpn "
                      "assigns client addresses from a pool only", options.config_path)


def check_client_config_dir(options: Options) -> None:
    """``client-config-dir``: the directory must be readable and searchable at start-up
    (OpenVPN checks it the same way and refuses to start otherwise)."""
    directory = options.client_config_dir
    if directory is None:
        return
    if not directory.is_dir() or not os.access(directory, os.R_OK | os.X_OK):
        reason = "not a directory" if directory.exists() else "no such directory"
        raise ConfigError(f"'client-config-dir {directory}': {reason} (or not readable)",
                          options.directive_files.get("client-config-dir",
                                                      options.config_path),
                          options.directive_lines.get("client-config-dir"))


def server_device_ifconfig(options: Options) -> tuple[str, str] | None:
    """The server device's LOCAL and REMOTE_OR_NETMASK: NET+1 with NET+2 (net30/p2p) or the
    netmask, as the ``server`` helper expands it, or an explicit ``ifconfig``; None for
    ``server-bridge`` (the bridge holds the address, the tap has none) and for an IPv6-only
    server."""
    o = options
    if o.server_bridge is not None or o.server_bridge_proxy_dhcp:
        return None
    if o.server is not None:
        net = o.server.network
        first = net.network_address + 1
        if o.dev_type == "tun" and o.topology in ("net30", "p2p"):
            return str(first), str(net.network_address + 2)
        return str(first), str(net.netmask)
    own = server_tun_ifconfig(o)
    if own is None and server_tun_ifconfig6(o) is not None:
        return None  # IPv6-only: the device has an IPv6 address only
    if own is None:
        raise ConfigError("trivpn's server mode needs 'server NETWORK NETMASK' or "
                          "'ifconfig'", o.config_path)
    return str(own.local), str(own.remote)


def server_tunnel_plan(options: Options) -> TunnelPlan:
    """The server's own device: NET+1 (with peer NET+2 and a route to NET for net30/p2p, as
    OpenVPN's ``server`` helper expands it) or an explicit ``ifconfig``, MTU and txqueuelen
    from the config, and the config's ``route`` lines (through the device: the way to a
    network behind a client, which an ``iroute`` in its client-config-dir file then selects).
    Without ``route-gateway`` a subnet server's routes use NET+2, as helper.c sets
    ``route_default_gateway``."""
    o = options
    routes: list[RouteRequest] = []
    gateway = o.route_gateway
    if o.server_bridge is not None or o.server_bridge_proxy_dhcp:
        # the bridge holds the address; the tap stays bare
        return device_options_plan(plan_tunnel(kind=o.dev_type, dev=o.dev, mtu=o.tun_mtu,
                                               topology=o.topology, txqueuelen=o.txqueuelen), o)
    ifconfig = server_device_ifconfig(o)  # None: IPv6-only
    if o.server is not None:
        net = o.server.network
        if o.dev_type == "tun" and o.topology in ("net30", "p2p"):
            routes.append(RouteRequest(str(net.network_address), str(net.netmask)))
        elif gateway is None and o.dev_type == "tun":
            gateway = str(net.network_address + 2)
    routes.extend(RouteRequest(r.network, str(r.netmask), r.gateway, r.metric)
                  for r in o.routes)
    own6 = server_tun_ifconfig6(o)  # server-ipv6: NET+1/BITS on the device
    return device_options_plan(plan_tunnel(
        kind=o.dev_type, dev=o.dev, mtu=o.tun_mtu, topology=o.topology, ifconfig=ifconfig,
        routes=routes, route_gateway=gateway, txqueuelen=o.txqueuelen,
        route_ipv6_gateway=(None if o.route_ipv6_gateway is None
                            else str(o.route_ipv6_gateway)),
        ifconfig_ipv6=(None if own6 is None else
                       (str(own6.address), own6.bits, str(own6.remote))),
        routes_ipv6=[(str(r.network), None if r.gateway is None else str(r.gateway), r.metric)
                     for r in o.routes_ipv6]), o)


def wildcard_host(family: int | None) -> str:
    """Where a server without ``local`` listens, as OpenVPN 2.6 on Linux does (checked in
    tests/interop/test_ipv6.py): ``proto udp6/tcp6`` on ``::``, a dual-stack socket that
    takes IPv4 clients too; ``proto udp/tcp`` and ``udp4/tcp4`` on 0.0.0.0 (the first
    passive address the resolver gives for an unspecified family)."""
    return "::" if family == 6 else "0.0.0.0"


class Server:
    """The server runtime. Construct with parsed options, then ``await run()``; it runs until
    SIGINT/SIGTERM or :attr:`stop` is set."""

    def __init__(self, options: Options, log: Log, *, direct_wait: bool = True,
                 host: ServerHost | None = None) -> None:
        # direct_wait=False: the UDP data path always waits through trio (readiness.py)
        self.direct_wait = direct_wait
        self.host: ServerHost = host if host is not None else SystemServerHost()
        self.stop = trio.Event()
        pool = server_pool(options)
        check_client_config_dir(options)
        self.options = options
        self.log = log
        self.events = rt.EventBus(log)  # logging, management state, metrics counters
        self.tap = options.dev_type == "tap"
        # TCP SYNs through the tunnel are clamped to this MSS (mssfix; TUN mode only)
        self.mss = None if self.tap else mss_limit_for(
            options, options.data_ciphers, "udp" if options.proto == "udp" else "tcp")
        self.max_clients = options.max_clients
        # server-ipv6: the IPv6 pool, paired with the IPv4 one by index (pool.c); the
        # smaller of the two bounds how many clients get addresses
        self.pool6 = address_pool6(options)
        self.allocator = PoolAllocator(pool, duplicate_cn=options.duplicate_cn,
                                       pool6=self.pool6)
        # the front door: cookie, connect-freq(-initial), the pre-authentication quota
        # (separate from max-clients, docs/server-admission.md) and float authentication
        initial, freq = options.connect_freq_initial, options.connect_freq
        self.gateway: Gateway[Peer, Pending] = Gateway(os.urandom(32), GatewayLimits(
            reset=(initial.max, initial.seconds),
            connect=(freq.max, freq.seconds) if freq is not None else None,
            preauth=PreauthLimits.for_max_clients(options.max_clients)))
        self.push = server_push_options(options)
        self.table: PeerTable[Peer] = (
            AgeingPeerTable(options.max_routes_per_client) if options.stale_routes
            else PeerTable(options.max_routes_per_client))
        self.drops = drop_aggregator(options, DROP_LOG_INTERVAL)
        # one traceback per kind of bug and minute; the rest is counted (error_repeated)
        self.errors = RateLimitedLog(log, ERROR_LOG_INTERVAL)
        self.counts: Counter[str] = Counter()
        self.router: Router[Peer]
        if options.block_ipv6:
            # IPv6 from the device is answered from the device's IPv6 peer (fe80::7 without
            # one), as OpenVPN's forward.c ipv6_send_icmp_unreachable() does
            own6 = server_tun_ifconfig6(options)
            blocking = FragmentingBlockIpv6Router if options.fragment else BlockIpv6Router
            self.router = blocking(
                self.table, self.counts, tap=self.tap, client_to_client=options.client_to_client,
                mss=self.mss, on_mac_refused=self._mac_refused,
                block6_source=(own6.remote.packed if own6 is not None and own6.remote is not None
                               else FALLBACK_SOURCE),
                tun_mtu=options.tun_mtu, write_device=self.write_device)
        elif options.vlan_tagging:  # a TAP server (the parser made sure)
            self.router = VlanRouter(self.table, self.counts, tap=True,
                                     client_to_client=options.client_to_client, mss=None,
                                     on_mac_refused=self._mac_refused,
                                     accept=options.vlan_accept, pvid=options.vlan_pvid)
        else:
            router = FragmentingRouter if options.fragment else Router
            self.router = router(self.table, self.counts, tap=self.tap,
                                 client_to_client=options.client_to_client, mss=self.mss,
                                 on_mac_refused=self._mac_refused)
        if options.bcast_buffers is not None:
            self.router.flood_limit = power_of_two_at_least(options.bcast_buffers)
        self.unix_offset = 0.0
        self.tunnel: TunnelHandle | None = None
        self.udp: DatagramLink | None = None
        self.listener: PacketListener | None = None
        # one peer's tasks: a bug in one drops that peer only (supervision.GuardedNursery)
        self.peers_nursery: TaskNursery | None = None
        self._closed = False  # _close ran
        self._link_drops_seen = 0
        self._tun_drops_seen = 0
        self.tools: ServerTools | None = None  # status file, management, metrics
        # the peer lifecycle; its methods are bound here once (the transports call them per
        # packet batch, through the PeerHub Protocol)
        # up/route-up/down, tls-verify, client-connect/-disconnect, learn-address
        self.scripts = ServerScripts(options, log)
        self.scripts_nursery: TaskNursery | None = None  # client-disconnect runs: awaited
        self.lifecycle = peers = PeerLifecycle(self)
        self.client_auth = peers.client_auth  # management-client-auth (the tools read it)
        self.create_peer = peers.create_peer
        self.remove_peer = peers.remove_peer
        self.kill_peer = peers.kill_peer
        self.peer_failed = peers.peer_failed
        self.drain = peers.drain
        self.transmit = peers.transmit
        self.wake_if_sooner = peers.wake_if_sooner
        self.preauth_admit = peers.preauth_admit
        self.preauth_refused = peers.preauth_refused
        self.udp_transport = UdpTransport(self)
        self.tcp_transport = TcpTransport(self, port_share=options.port_share)
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
        """Serve until SIGINT/SIGTERM or :attr:`stop` (0); 1 when setup fails, or when a bug
        (an unexpected exception in a setup step or in a task the server cannot do without)
        stops it: logged as ``internal_error``, torn down as on SIGTERM
        (trivpn/runtime/supervision.py)."""
        try:
            return await self._run()
        except ConfigError:
            raise  # the CLI reports it (exit 2)
        except RuntimeSetupError as exc:  # e.g. a key password that cannot be read
            self.log.error("setup_failed", error=str(exc), what=exc.what, where=exc.where)
            with trio.CancelScope(shield=True):
                await self._close()
            return 1
        except Exception as exc:
            log_internal_error(self.log, exc, task_name(exc, _RUNNERS))
            with trio.CancelScope(shield=True):
                await self._close()
            self.log.info("exiting", status=1)
            return 1

    async def _run(self) -> int:
        o = self.options
        self.unix_offset = time.time() - trio.current_time()
        self.gateway.unix_offset = self.unix_offset
        self.config = session_config(o, unix_time_offset=self.unix_offset)
        self.lifecycle.load_auth()
        self.persistence.load(trio.current_time())
        try:
            identity = resolve_identity(o.user, o.group)
            await self._open()
            if not await self._device_scripts():
                await self._close()
                return 1
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
        signal_name = "sigterm"
        try:
            async with trio.open_nursery() as main:
                main.start_soon(self.scripts.run_learn_queue)
                # client-disconnect scripts still running at exit are waited for (each is
                # bounded by the script timeout), as OpenVPN runs them at shutdown
                async with trio.open_nursery() as lasting:
                    self.scripts_nursery = GuardedNursery(lasting, self.lifecycle.task_failed)
                    async with trio.open_nursery() as peers:
                        self.peers_nursery = GuardedNursery(peers, self.lifecycle.task_failed)
                        main.start_soon(self._housekeeping)
                        if isinstance(self.table, AgeingPeerTable):
                            main.start_soon(self._stale_routes, self.table)
                        if self.tools is not None:
                            main.start_soon(self.tools.run_server, self)
                        if self.udp is not None:
                            main.start_soon(self.udp_transport.run)
                        else:
                            main.start_soon(self.tcp_transport.run_device_reader)
                            main.start_soon(self.tcp_transport.run_acceptor)
                        signal_name = await self._wait_for_stop()
                        await self._notify_clients()
                        for peer in self.table:
                            self.remove_peer(peer, "server_exiting")
                        peers.cancel_scope.cancel()
                main.cancel_scope.cancel()
        except Exception as exc:
            # a task the server cannot do without failed (its nursery cancelled the rest):
            # logged before the teardown's own events
            leaf = first_leaf(exc)
            if isinstance(leaf, RuntimeSetupError):  # a host step no handler expected to fail
                self.log.error("setup_failed", error=str(leaf), what=leaf.what,
                               where=leaf.where)
            else:
                log_internal_error(self.log, exc, task_name(exc, _RUNNERS))
            with trio.CancelScope(shield=True):
                await self._close(signal_name)
            self.log.info("exiting", status=1)
            return 1
        finally:
            await self._close(signal_name)
        self.log.info("exiting", status=0)
        return 0

    async def _wait_for_stop(self) -> str:
        """Until SIGINT/SIGTERM (logged) or :attr:`stop` is set; the signal's name as the
        down script's ``signal`` variable (``sigint``/``sigterm``)."""
        caught = ["sigterm"]

        async def watch(signals: Any) -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                caught[0] = name.lower()
                self.events.publish(rt.SignalReceived(name))
                self.stop.set()
                return

        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, signals)
                await self.stop.wait()
                nursery.cancel_scope.cancel()
        return caught[0]

    async def _device_scripts(self) -> bool:
        """``up`` then ``route-up`` once the device and its routes are configured; False
        (the server does not start) when up fails, as OpenVPN exits then (init.c,
        do_open_tun: run_up_down is fatal)."""
        if self.tunnel is None:
            return True
        o = self.options
        self.scripts.start_privileged()  # the down-root helper, before user/group
        local, second = server_device_ifconfig(o) or (None, None)
        own6 = server_tun_ifconfig6(o)
        self.scripts.on_tunnel(TunnelInfo(
            dev=self.tunnel.name, dev_type=o.dev_type, tun_mtu=o.tun_mtu, local=local,
            remote_or_netmask=second,
            point_to_point=o.dev_type == "tun" and o.topology in ("net30", "p2p"),
            local_ipv6=str(own6.address) if own6 is not None else None,
            netbits_ipv6=own6.bits if own6 is not None else None,
            remote_ipv6=str(own6.remote) if own6 is not None else None))
        result = await self.scripts.up()
        if result is not None and not result.ok:
            self.log.error("setup_failed", error=f"up script failed: {result.detail}",
                           what="up", where=o.up)
            return False
        # a route-ipv6 without GATEWAY goes to route-ipv6-gateway, else the device's IPv6
        # peer (route.c, init_route_ipv6(): remote_endpoint_ipv6; init.c,
        # do_init_route_ipv6_list())
        default6 = (str(o.route_ipv6_gateway) if o.route_ipv6_gateway is not None
                    else str(own6.remote) if own6 is not None and own6.remote is not None
                    else None)
        await self.scripts.route_up(route_ipv6_env([
            (str(r.network), str(r.gateway) if r.gateway is not None else default6)
            for r in o.routes_ipv6]))
        return True

    async def _open(self) -> None:
        o = self.options
        plan = server_tunnel_plan(o)
        self.tunnel = self.host.open_tunnel(plan)
        description = self.tunnel.describe()
        addresses = description.get("addresses")
        self.events.publish(rt.TunConfigured(
            tuple(str(a) for a in addresses) if isinstance(addresses, list) else (),
            description, topology=o.topology))
        for failure in self.tunnel.route_failures:
            self.log.warning("route_failed", detail=failure)
        host = o.local or wildcard_host(o.family)
        port = o.lport
        if o.proto == "udp":
            self.udp = self.host.open_udp(host, port, o.sndbuf, o.rcvbuf,
                                          multihome=o.multihome)
            local = self.udp.local_address
        else:
            self.listener = await self.host.open_tcp_listener(host, port, o.sndbuf, o.rcvbuf)
            local = self.listener.local_address
        self.events.publish(rt.LinkOpened("udp" if o.proto == "udp" else "tcp-server",
                                          format_address(local)))

    async def _close(self, signal_name: str = "sigterm") -> None:
        """Close the link and the device, run ``down`` (once, however many paths lead here)."""
        if self._closed:
            return
        self._closed = True
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
            if self.scripts.tunnel is not None:  # down after the device is closed
                with trio.CancelScope(shield=True):
                    await self.scripts.down(signal_name)
        self.scripts.close()  # a down-root helper that never ran
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

    async def _stale_routes(self, table: AgeingPeerTable[Peer]) -> None:
        """``stale-routes-check N T``: every T seconds, forget the MAC routes no frame used
        for N seconds (OpenVPN multi.c, check_stale_routes()). References are recorded per
        check interval, so a route goes after N to N+T seconds without traffic."""
        assert self.options.stale_routes is not None
        ageing, interval = self.options.stale_routes
        periods = -(-ageing // interval)  # whole intervals that cover the ageing time
        while True:
            await trio.sleep(interval)
            table.generation += 1
            for mac, peer in table.expire(table.generation - periods):
                self.log.info("stale_route_removed", peer=peer.label, cn=peer.common_name,
                              mac=mac.hex(":"))

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


_RUNNERS = (Server.run.__code__, Server._run.__code__)  # they start tasks; never the culprit


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


