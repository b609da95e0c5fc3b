"""Bring a TUN/TAP device up from ``ifconfig``/``route``/``topology`` and take it down again.

Two halves:

* :func:`plan_tunnel` (and the client convenience :func:`plan_client_tunnel`) is a *pure*
  function from configured and pushed values to a :class:`TunnelPlan`: which device, which MTU,
  which addresses and which routes. No I/O, so every topology rule is unit-tested by table.
* :class:`Tunnel` opens the device and applies a plan through
  :class:`~trivpn.runtime.netconf.NetConfig`, which remembers everything it added; closing the
  tunnel removes it again. A plan can be re-applied to the same open device
  (:meth:`Tunnel.reconfigure`), which is what ``persist-tun`` needs across reconnects.

Role-neutral: a server builds its plan from its own ``ifconfig``/``route`` lines with the same
function (no pushed options, no redirect-gateway).

Rules (OpenVPN 2.6 semantics, ``route.c``/``tun.c``):

* Device name: ``dev tun``/``dev tap`` (the bare type) lets the kernel pick ``tunN``/``tapN``;
  anything else is a fixed name.
* Address: TUN with topology ``net30``/``p2p`` → point-to-point ``LOCAL peer REMOTE``; TUN with
  ``subnet`` and every TAP → ``LOCAL/prefix(NETMASK)``.
* VPN gateway (the default gateway of ``route`` lines): ``route-gateway`` when given (pushed
  wins over configured), else the ``ifconfig`` peer for net30/p2p; with none, routes go out of
  the device without a gateway (fine on a TUN, which has no link layer).
* ``route NET [MASK [GW [METRIC]]]``: MASK defaults to 255.255.255.255, GW to the VPN gateway;
  ``vpn_gateway``/``net_gateway``/``remote_host`` keywords are understood. Configured routes
  come first, then pushed ones.
* ``redirect-gateway [def1] ...``: a /32 exception route to the VPN server through the path
  the kernel uses for it right now (:class:`NetGateway`, from ``route_get``), then
  ``0.0.0.0/1`` and ``128.0.0.0/1`` through the VPN gateway. Without ``def1`` OpenVPN replaces
  the default route; trivpn installs the two /1 routes anyway (they win over any default route
  and never delete it) and says so in :attr:`TunnelPlan.warnings`. Flag ``local`` skips the
  exception route; ``!ipv4`` skips the IPv4 part; ``ipv6`` adds ``::/3``, ``2000::/4``,
  ``3000::/4`` and ``fc00::/7`` as OpenVPN does (all of the global unicast and ULA space, not
  the link-local or multicast ranges), only when the device has an IPv6 address.
* ``ifconfig-ipv6``/``route-ipv6``: configured ones, overridden (address) or extended (routes)
  by pushed ones; IPv6 routes go out of the device.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from trivpn.config.options import Options
from trivpn.protocol.push import PushedOptions
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.netconf import NetConfig
from trivpn.runtime.tun import TUN_PATH, TunDevice, TunKind, open_tun

Topology = Literal["net30", "p2p", "subnet"]
_KEYWORDS = ("vpn_gateway", "net_gateway", "remote_host")


class TunnelPlanError(ValueError):
    """The configured/pushed values cannot describe a tunnel (bad netmask, bad address)."""


@dataclass(frozen=True, slots=True)
class NetGateway:
    """How the VPN server is reached outside the tunnel (``ip route get SERVER``)."""

    gateway: str | None
    ifname: str | None


@dataclass(frozen=True, slots=True)
class AddressAssignment:
    """An address on the tunnel device; ``peer`` set for a point-to-point address."""

    address: str
    prefixlen: int
    peer: str | None = None

    def __str__(self) -> str:
        if self.peer is not None:
            return f"{self.address} peer {self.peer}"
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class RouteAssignment:
    """A route. ``via_tunnel``: out of the tunnel device (``gateway`` optional); otherwise out
    of ``ifname`` (the redirect-gateway exception and ``net_gateway`` routes)."""

    destination: str
    gateway: str | None = None
    metric: int | None = None
    via_tunnel: bool = True
    ifname: str | None = None

    def __str__(self) -> str:
        text = self.destination
        if self.gateway is not None:
            text += f" via {self.gateway}"
        if not self.via_tunnel and self.ifname is not None:
            text += f" dev {self.ifname}"
        if self.metric is not None:
            text += f" metric {self.metric}"
        return text


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One ``route`` line, configured or pushed, before keywords and defaults are resolved.
    ``network``/``gateway`` are addresses or one of ``vpn_gateway``, ``net_gateway``,
    ``remote_host``; ``gateway=None`` means the VPN gateway."""

    network: str
    netmask: str = "255.255.255.255"
    gateway: str | None = None
    metric: int | None = None
    pushed: bool = False


@dataclass(frozen=True, slots=True)
class TunnelPlan:
    """Everything to configure for one tunnel. Compare plans with ``==`` to decide whether a
    persistent device needs reconfiguring (``warnings`` do not take part)."""

    kind: TunKind
    name: str
    """Requested name: fixed (``tun0``, ``vpn``) or a kernel pattern (``tun%d``)."""
    mtu: int
    addresses: tuple[AddressAssignment, ...] = ()
    txqueuelen: int | None = None  # txqueuelen N: the device's TX queue length (None: kernel's)
    routes: tuple[RouteAssignment, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # False with ifconfig-noexec: MTU, link state and addresses are left to the scripts
    # (OpenVPN's do_ifconfig sets all three and is skipped entirely)
    configure_link: bool = True
    # --- client breadth b ---
    dev_node: str = field(default=TUN_PATH, compare=False)  # dev-node: the clone device
    lladdr: str | None = field(default=None, compare=False)  # lladdr: the tap device's MAC


def device_name(dev: str, kind: TunKind) -> str:
    """``dev tun`` → ``tun%d`` (kernel picks); ``dev tun3``/``dev vpn0`` → that fixed name."""
    return f"{kind}%d" if dev == kind else dev


def prefix_length(netmask: str) -> int:
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError as exc:
        raise TunnelPlanError(f"invalid netmask {netmask}") from exc


def _ipv4(text: str, what: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise TunnelPlanError(f"invalid {what} address {text!r}") from exc


REDIRECT_IPV6_ROUTES = ("::/3", "2000::/4", "3000::/4", "fc00::/7")


def plan_tunnel(*, kind: TunKind, dev: str, mtu: int, topology: Topology,
                ifconfig: tuple[str, str] | None = None,
                ifconfig_ipv6: tuple[str, int, str | None] | None = None,
                routes: Sequence[RouteRequest] = (),
                routes_ipv6: Sequence[tuple[str, str | None, int | None]] = (),
                route_gateway: str | None = None,
                redirect_gateway: Sequence[str] | None = None,
                route_metric: int | None = None,
                remote_host: str | None = None,
                net_gateway: NetGateway | None = None,
                txqueuelen: int | None = None,
                route_ipv6_gateway: str | None = None) -> TunnelPlan:
    """Compute what to configure (see the module docstring for the rules).

    ``ifconfig`` is ``(LOCAL, REMOTE_OR_NETMASK)``; ``ifconfig_ipv6`` ``(ADDR, BITS, PEER)``;
    ``routes_ipv6`` ``(NET/BITS, GATEWAY, METRIC)``. ``remote_host`` is the VPN server's
    address and ``net_gateway`` the way to it outside the tunnel (both only needed for
    redirect-gateway and the ``net_gateway``/``remote_host`` keywords).
    ``route_ipv6_gateway``: the gateway of IPv6 routes without one, used on a tap device only
    (OpenVPN route.c, add_route_ipv6(): a tun route goes to the device alone). Raises
    :class:`TunnelPlanError` for malformed addresses or netmasks; routes that cannot be
    resolved are skipped with a warning, as OpenVPN does.
    """
    warnings: list[str] = []
    addresses: list[AddressAssignment] = []
    point_to_point = kind == "tun" and topology in ("net30", "p2p")
    vpn_gateway: str | None = None
    if ifconfig is not None:
        local = str(_ipv4(ifconfig[0], "ifconfig local"))
        other = str(_ipv4(ifconfig[1], "ifconfig remote/netmask"))
        if point_to_point:
            addresses.append(AddressAssignment(local, 32, other))
            vpn_gateway = other
        else:
            addresses.append(AddressAssignment(local, prefix_length(other)))
    else:
        warnings.append("no ifconfig: the device gets no IPv4 address")
    if route_gateway is not None:
        if route_gateway == "dhcp":
            warnings.append("route-gateway dhcp is not supported; routes use the device only")
        else:
            vpn_gateway = str(_ipv4(route_gateway, "route-gateway"))
    if ifconfig_ipv6 is not None:
        addr6, bits6, _peer6 = ifconfig_ipv6
        addresses.append(AddressAssignment(str(ipaddress.IPv6Address(addr6)), bits6))

    ctx = _Context(vpn_gateway, route_metric, remote_host, net_gateway, warnings)
    out: list[RouteAssignment] = []
    redirect = tuple(redirect_gateway) if redirect_gateway is not None else None
    if redirect is not None and "!ipv4" not in redirect:
        out.extend(_redirect_routes(redirect, ctx))
    for request in routes:
        route = _resolve_route(request, ctx)
        if route is not None:
            out.append(route)
    if redirect is not None and "ipv6" in redirect and ifconfig_ipv6 is not None:
        # OpenVPN init.c do_init_route_ipv6_list: these four, and only with an IPv6 address
        out.extend(RouteAssignment(dst) for dst in REDIRECT_IPV6_ROUTES)
    for network6, gateway6, metric6 in routes_ipv6:
        try:
            dst6 = str(ipaddress.IPv6Network(network6, strict=True))
        except ValueError:
            warnings.append(f"route-ipv6 {network6}: not a valid IPv6 network, skipped")
            continue
        default6 = route_ipv6_gateway if kind == "tap" else None
        out.append(RouteAssignment(dst6, gateway6 or default6, metric6))
    if redirect is None or "local" not in redirect:  # local: the server is on-link
        out = _protect_server_path(out, ctx)
    return TunnelPlan(kind=kind, name=device_name(dev, kind), mtu=mtu,
                      addresses=tuple(addresses), routes=tuple(_dedupe(out)),
                      txqueuelen=txqueuelen or None, warnings=tuple(warnings))


def _dedupe(routes: list[RouteAssignment]) -> list[RouteAssignment]:
    seen: set[tuple[str, int | None]] = set()
    out = []
    for route in routes:
        key = (route.destination, route.metric)
        if key not in seen:  # the kernel would refuse the second one (EEXIST)
            seen.add(key)
            out.append(route)
    return out


@dataclass(slots=True)
class _Context:
    vpn_gateway: str | None
    route_metric: int | None
    remote_host: str | None
    net_gateway: NetGateway | None
    warnings: list[str]


NO_REROUTE = "!reroute"  # redirect-private: a flag no config can write (see _redirect_routes)


def _redirect_routes(flags: tuple[str, ...], ctx: _Context) -> list[RouteAssignment]:
    vpn_gateway, remote_host, net_gateway = ctx.vpn_gateway, ctx.remote_host, ctx.net_gateway
    warnings = ctx.warnings
    out: list[RouteAssignment] = []
    if "local" not in flags:
        if remote_host is None or net_gateway is None:
            warnings.append("redirect-gateway: cannot tell how the VPN server is reached "
                            "outside the tunnel; not redirecting the default gateway")
            return []
        if ipaddress.ip_address(remote_host).version == 4:
            out.append(RouteAssignment(f"{remote_host}/32", net_gateway.gateway,
                                       via_tunnel=False, ifname=net_gateway.ifname))
    if NO_REROUTE in flags:
        # redirect-private: the route to the server, not the default route (OpenVPN route.c,
        # redirect_default_route_to_vpn(): the halves only with RG_REROUTE_GW)
        return out
    if "def1" not in flags:
        warnings.append("redirect-gateway without def1: installed as 0.0.0.0/1 + 128.0.0.0/1 "
                        "(trivpn never replaces the existing default route)")
    if "block-local" in flags:
        warnings.append("redirect-gateway block-local is not implemented")
    # no route-metric here: OpenVPN installs these with the kernel's default metric
    out.append(RouteAssignment("0.0.0.0/1", vpn_gateway))
    out.append(RouteAssignment("128.0.0.0/1", vpn_gateway))
    return out


def _route_network(network: str, netmask: str, label: str,
                   warnings: list[str]) -> ipaddress.IPv4Network | None:
    """The route's destination, or None with a warning saying what is wrong with it. OpenVPN
    refuses the same routes (its ``route`` parser or the kernel: "ERROR: Linux route add
    command failed") and carries on with the others."""
    try:
        address = ipaddress.IPv4Address(network)
    except ValueError:
        warnings.append(f"{label}: {network or 'the network'!r} is not a numeric IPv4 address "
                        "(host names and unresolvable keywords are not supported), skipped")
        return None
    try:
        mask = ipaddress.IPv4Address(netmask)
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        warnings.append(f"{label}: netmask {netmask} is not a contiguous IPv4 netmask, skipped")
        return None
    dst = ipaddress.IPv4Network((int(address) & int(mask), prefix))
    if dst.network_address != address:
        warnings.append(f"{label}: {network} has host bits set for netmask {netmask} "
                        f"(the network would be {dst}), skipped")
        return None
    return dst


def _protect_server_path(routes: list[RouteAssignment], ctx: _Context) -> list[RouteAssignment]:
    """A route into the tunnel that covers the VPN server's own address would send the
    tunnel's packets into the tunnel. Keep the server outside: a host route to it through its
    current path (as redirect-gateway does), or, when that path is unknown, drop such routes.
    OpenVPN 2.6 installs them as they come, and the tunnel then dies of ping-restart."""
    remote, net_gateway = ctx.remote_host, ctx.net_gateway
    if remote is None:
        return routes
    server = ipaddress.ip_address(remote)
    host = f"{server}/{server.max_prefixlen}"  # IPv6: e.g. redirect-gateway ipv6's 2000::/4
    if any(not r.via_tunnel and r.destination == host for r in routes):
        return routes  # redirect-gateway already added the exception route
    covering = [r for r in routes if r.via_tunnel
                and (":" in r.destination) == (server.version == 6)
                and server in ipaddress.ip_network(r.destination)]
    if not covering:
        return routes
    names = ", ".join(r.destination for r in covering)
    if net_gateway is None:
        ctx.warnings.append(f"routes {names} cover the VPN server's address {server} and the "
                            "path to the server outside the tunnel is unknown: skipped")
        return [r for r in routes if r not in covering]
    ctx.warnings.append(f"routes {names} cover the VPN server's address {server}: a host "
                        "route keeps the server reachable outside the tunnel")
    return [RouteAssignment(host, net_gateway.gateway, via_tunnel=False,
                            ifname=net_gateway.ifname), *routes]


def _resolve_route(request: RouteRequest, ctx: _Context) -> RouteAssignment | None:
    vpn_gateway, remote_host, net_gateway = ctx.vpn_gateway, ctx.remote_host, ctx.net_gateway
    route_metric, warnings = ctx.route_metric, ctx.warnings
    label = f"route {request.network} {request.netmask}"
    network = request.network
    if network == "vpn_gateway":
        network = vpn_gateway or ""
    elif network == "net_gateway":
        network = (net_gateway.gateway if net_gateway else None) or ""
    elif network == "remote_host":
        network = remote_host or ""
    dst = _route_network(network, request.netmask, label, warnings)
    if dst is None:
        return None
    if request.pushed and dst.prefixlen == 0:
        warnings.append(f"{label}: a pushed route to 0.0.0.0/0 would replace this host's "
                        "default route (a server redirects traffic with redirect-gateway "
                        "def1), skipped")
        return None
    metric = request.metric if request.metric is not None else route_metric
    gateway = request.gateway
    if gateway is None or gateway == "vpn_gateway":
        return RouteAssignment(str(dst), vpn_gateway, metric)
    if gateway == "net_gateway":
        if net_gateway is None:
            warnings.append(f"{label}: net_gateway unknown, skipped")
            return None
        return RouteAssignment(str(dst), net_gateway.gateway, metric, via_tunnel=False,
                               ifname=net_gateway.ifname)
    if gateway == "remote_host":
        warnings.append(f"{label}: gateway remote_host is not supported, skipped")
        return None
    try:
        via = str(ipaddress.IPv4Address(gateway))
    except ValueError:
        warnings.append(f"{label}: gateway {gateway!r} is not an IPv4 address, skipped")
        return None
    return RouteAssignment(str(dst), via, metric)


def plan_client_tunnel(options: Options, pushed: PushedOptions | None, *,
                       remote_host: str | None,
                       net_gateway: NetGateway | None) -> TunnelPlan:
    """A client's plan: its own config overlaid with what the server pushed."""
    pushed = pushed or PushedOptions()
    topology: Topology = pushed.topology or options.topology
    ifconfig: tuple[str, str] | None = None
    if pushed.ifconfig is not None:
        ifconfig = (str(pushed.ifconfig.local), str(pushed.ifconfig.remote_or_netmask))
    elif options.ifconfig is not None:
        ifconfig = (str(options.ifconfig.local), str(options.ifconfig.remote))
    ifconfig6 = None
    if pushed.ifconfig_ipv6 is not None:
        v6 = pushed.ifconfig_ipv6
        ifconfig6 = (str(v6.address), v6.prefixlen, str(v6.remote))
    elif options.ifconfig_ipv6 is not None:
        own6 = options.ifconfig_ipv6
        ifconfig6 = (str(own6.address), own6.bits, str(own6.remote))
    requests = [RouteRequest(r.network, str(r.netmask), r.gateway, r.metric)
                for r in options.routes]
    for r in pushed.routes:
        requests.append(RouteRequest(
            str(r.network), str(r.netmask) if r.netmask is not None else "255.255.255.255",
            str(r.gateway) if r.gateway is not None else None, r.metric, pushed=True))
    routes6 = [(str(r.network), str(r.gateway) if r.gateway is not None else None, r.metric)
               for r in options.routes_ipv6]
    routes6 += [(str(r.network), str(r.gateway) if r.gateway is not None else None, r.metric)
                for r in pushed.route_ipv6]
    gateway = pushed.route_gateway if pushed.route_gateway is not None else options.route_gateway
    redirect = (pushed.redirect_gateway if pushed.redirect_gateway is not None
                else options.redirect_gateway)
    if redirect is None and options.redirect_private is not None:
        redirect = (*options.redirect_private, NO_REROUTE)  # redirect-private
    mtu = options.tun_mtu
    too_large: str | None = None
    if pushed.tun_mtu:
        # tun-mtu-max (default and at least 1600, at least tun-mtu) caps a pushed tun-mtu
        # (OpenVPN init.c, do_deferred_options_part2 / frame_finalize: "Server-pushed
        # tun-mtu is too large, please add tun-mtu-max N in the client configuration")
        limit = max(1600, options.tun_mtu, options.tun_mtu_max)
        mtu = min(pushed.tun_mtu, limit)
        if pushed.tun_mtu > limit:
            too_large = ("Server-pushed tun-mtu is too large, please add tun-mtu-max "
                         f"{pushed.tun_mtu} in the client configuration")
    plan = plan_tunnel(kind=options.dev_type, dev=options.dev,
                       mtu=mtu, topology=topology,
                       ifconfig=ifconfig, ifconfig_ipv6=ifconfig6, routes=requests,
                       routes_ipv6=routes6,
                       route_gateway=str(gateway) if gateway is not None else None,
                       redirect_gateway=redirect,
                       route_metric=(pushed.route_metric if pushed.route_metric is not None
                                     else options.route_metric),
                       remote_host=remote_host, net_gateway=net_gateway,
                       txqueuelen=options.txqueuelen,
                       route_ipv6_gateway=(None if options.route_ipv6_gateway is None
                                           else str(options.route_ipv6_gateway)))
    if too_large is not None:
        plan = replace(plan, warnings=(*plan.warnings, too_large))
    return device_options_plan(plan, options)


def device_options_plan(plan: TunnelPlan, options: Options) -> TunnelPlan:
    """``dev-node`` and ``lladdr`` (client and server): the device plan's extras."""
    if options.dev_node is not None:
        plan = replace(plan, dev_node=options.dev_node)
    if options.lladdr is not None:
        plan = replace(plan, lladdr=options.lladdr)
    return plan


# --------------------------------------------------------------------------------------------
# Applying a plan


class Tunnel:
    """An open TUN/TAP device plus the host configuration applied for it.

    ``route_failures`` lists routes the kernel refused during the last :meth:`apply` (OpenVPN
    warns and carries on; so does trivpn). Address or MTU failures raise
    :class:`RuntimeSetupError`.
    """

    def __init__(self, device: TunDevice, netconf: NetConfig) -> None:
        self.device = device
        self.netconf = netconf
        self.ifindex = netconf.link_index(device.name)
        self.plan: TunnelPlan | None = None
        self.route_failures: list[str] = []

    @classmethod
    def open(cls, plan: TunnelPlan, *, netns: str | None = None) -> Tunnel:
        """Open the device named by the plan and apply the plan."""
        netconf = NetConfig(netns)
        try:
            device = open_tun(plan.name, plan.kind, node=plan.dev_node)
        except BaseException:
            netconf.close()
            raise
        try:
            tunnel = cls(device, netconf)
        except BaseException:
            device.close()
            netconf.close()
            raise
        try:
            tunnel.apply(plan)
        except BaseException:
            tunnel.close()
            raise
        return tunnel

    @property
    def name(self) -> str:
        return self.device.name

    def apply(self, plan: TunnelPlan) -> None:
        """MTU, link up, addresses, then routes (route failures are collected, not raised)."""
        nc, ifname = self.netconf, self.device.name
        self.plan = plan
        self.route_failures = []
        if plan.lladdr is not None:  # OpenVPN init.c do_open_tun(): right after opening it
            nc.set_lladdr(ifname, plan.lladdr)
        if plan.configure_link:
            nc.set_mtu(ifname, plan.mtu)
        if plan.txqueuelen is not None:
            nc.set_txqueuelen(ifname, plan.txqueuelen)
        if plan.configure_link:
            nc.set_up(ifname)
        for a in plan.addresses:
            if a.peer is not None:
                nc.add_ptp_address(ifname, a.address, a.peer)
            else:
                nc.add_address(ifname, a.address, a.prefixlen)
        for r in plan.routes:
            try:
                nc.add_route(r.destination, gateway=r.gateway, metric=r.metric,
                             ifname=ifname if r.via_tunnel else r.ifname)
            except RuntimeSetupError as exc:
                self.route_failures.append(f"{r}: {exc}")

    def reconfigure(self, plan: TunnelPlan) -> bool:
        """Apply ``plan`` to the open device; nothing happens (False) if it equals the current
        one, so a persistent tunnel keeps its routes untouched across reconnects."""
        if self.plan == plan:
            return False
        self.netconf.undo()
        self.apply(plan)
        return True

    def close(self) -> list[str]:
        """Close the device (its addresses and on-link routes vanish with it), then undo what
        is left. Returns what could not be undone (e.g. after dropping privileges)."""
        self.device.close()
        leftovers: list[str] = []
        try:
            self.netconf.undo()
        except RuntimeSetupError as exc:
            leftovers.append(str(exc))
        finally:
            self.netconf.close()
        return leftovers

    def describe(self) -> dict[str, object]:
        """Fields for the ``tun_configured`` log line."""
        plan = self.plan
        return {
            "device": self.device.name,
            "kind": self.device.kind,
            "mtu": plan.mtu if plan else None,
            "addresses": [str(a) for a in plan.addresses] if plan else [],
            "routes": [str(r) for r in plan.routes] if plan else [],
        }
