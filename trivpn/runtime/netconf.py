"""Host network configuration over rtnetlink (pyroute2): MTU, link state, addresses, routes.

:class:`NetConfig` is synchronous (netlink round-trips take microseconds; call it from trio
directly during setup, or through ``trio.to_thread.run_sync``). It records everything it adds
and :meth:`NetConfig.undo` removes it again in reverse order, so a tunnel leaves the host as it
found it. Lookups (:meth:`route_get`, :meth:`default_routes`, :meth:`addresses`) are what the
doctor uses to explain where traffic would go.

With ``netns=NAME`` the netlink socket is created inside that namespace (via
:func:`~trivpn.runtime.netns.enter_netns`, which never creates namespaces), and every operation
applies there.
"""

from __future__ import annotations

import errno as errno_codes
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from trivpn.runtime.errors import NoRouteError, RuntimeSetupError
from trivpn.runtime.netns import enter_netns

MAIN_TABLE = 254
IFF_UP = 0x1
_RTN_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
              6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
_RT_PROTOS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 16: "dhcp",
              186: "bgp", 188: "ospf"}
# Errors undo() treats as "already gone" (the device vanished with the TUN fd, or someone
# removed the route/address first).
_GONE = frozenset({errno_codes.ENODEV, errno_codes.ESRCH, errno_codes.EADDRNOTAVAIL,
                   errno_codes.ENOENT})


@dataclass(frozen=True, slots=True)
class RouteLookup:
    """The kernel's answer to ``ip route get DST``: where a packet to ``dst`` would go."""

    dst: str
    oif: str | None
    """Outgoing interface name (``None`` if the kernel named none, e.g. for some blackholes)."""
    oif_index: int | None
    gateway: str | None
    prefsrc: str | None
    """The source address the kernel would choose."""
    src: str | None
    """The source address the lookup was made with (``RTA_SRC``), if one was given."""
    table: int
    type: str
    """``unicast``, ``local``, ``broadcast``, ``blackhole``..."""

    @property
    def source(self) -> str | None:
        """The source address packets would carry: the requested one, else the preferred one."""
        return self.src if self.src is not None else self.prefsrc


@dataclass(frozen=True, slots=True)
class Nexthop:
    """One path of an ECMP (multipath) route."""

    gateway: str | None
    oif: str | None
    oif_index: int | None
    weight: int
    """``ip route``'s weight: ``rtnh_hops + 1``."""


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One route as dumped by the kernel."""

    dst: str
    """CIDR, ``0.0.0.0/0`` or ``::/0`` for default routes."""
    gateway: str | None
    oif: str | None
    oif_index: int | None
    metric: int
    table: int
    type: str
    protocol: str
    prefsrc: str | None
    nexthops: tuple[Nexthop, ...] = ()
    """Non-empty only for multipath routes (then ``gateway``/``oif`` are usually ``None``)."""

    @property
    def is_default(self) -> bool:
        return self.dst.endswith("/0")


@dataclass(frozen=True, slots=True)
class AddressInfo:
    """An address on an interface. ``peer`` is set for point-to-point addresses."""

    ifname: str
    index: int
    address: str
    prefixlen: int
    peer: str | None
    family: int


@dataclass(slots=True)
class _Undo:
    description: str
    action: Callable[[], None]


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _network(dst: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(dst, strict=True)
    except ValueError as exc:
        raise RuntimeSetupError(f"invalid route destination: {exc}", dst) from exc


class NetConfig:
    """Configure links, addresses and routes; remember what was added and undo it.

    Use as a context manager (``__exit__`` undoes and closes), or call :meth:`undo` and
    :meth:`close` yourself. Every failure raises :class:`RuntimeSetupError` naming the
    operation and the device/address/route.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        try:
            if netns is None:
                self._ipr: Any = IPRoute()
            else:
                with enter_netns(netns):
                    self._ipr = IPRoute()
        except OSError as exc:
            raise RuntimeSetupError("cannot open rtnetlink socket",
                                    f"netns {netns}" if netns else "host",
                                    errno=exc.errno) from exc
        self._undo: list[_Undo] = []

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> NetConfig:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.undo()
        finally:
            self.close()

    def close(self) -> None:
        """Close the netlink socket (does not undo)."""
        self._ipr.close()

    @property
    def pending_undo(self) -> list[str]:
        """Human descriptions of what :meth:`undo` would remove, most recent first."""
        return [u.description for u in reversed(self._undo)]

    def undo(self) -> None:
        """Remove everything this object added, most recent first.

        Things already gone (device deleted, route removed by someone else) are skipped. Every
        item is attempted; if some fail, one :class:`RuntimeSetupError` lists them all.
        """
        failures: list[str] = []
        first_errno: int | None = None
        while self._undo:
            item = self._undo.pop()
            try:
                item.action()
            except RuntimeSetupError as exc:
                if exc.errno in _GONE:
                    continue
                failures.append(f"{item.description}: {exc}")
                first_errno = first_errno if first_errno is not None else exc.errno
        if failures:
            raise RuntimeSetupError("undo incomplete: " + "; ".join(failures),
                                    self.netns or "host", errno=first_errno)

    # -- helpers --------------------------------------------------------------------------

    def _call(self, what: str, where: str, fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NetlinkError as exc:
            raise RuntimeSetupError(what, where, errno=exc.code) from exc
        except OSError as exc:
            raise RuntimeSetupError(what, where, errno=exc.errno) from exc

    def link_index(self, ifname: str) -> int:
        """The interface index of ``ifname``; :class:`RuntimeSetupError` (ENODEV) if absent."""
        found = self._call("looking up interface", ifname, self._ipr.link_lookup, ifname=ifname)
        if not found:
            raise RuntimeSetupError("no such interface", ifname, errno=errno_codes.ENODEV)
        return int(found[0])

    def _link(self, index: int) -> Any:
        return self._call("reading interface", f"index {index}", self._ipr.get_links, index)[0]

    def _names(self) -> dict[int, str]:
        links = self._call("listing interfaces", self.netns or "host", self._ipr.get_links)
        return {int(link["index"]): str(link.get("ifname")) for link in links}

    # -- links ----------------------------------------------------------------------------

    def set_mtu(self, ifname: str, mtu: int) -> None:
        """Set the MTU; :meth:`undo` restores the previous value."""
        index = self.link_index(ifname)
        old = int(self._link(index).get("IFLA_MTU"))
        self._call(f"setting MTU {mtu}", ifname, self._ipr.link, "set", index=index, mtu=mtu)
        if old != mtu:
            self._undo.append(_Undo(
                f"restore MTU {old} on {ifname}",
                lambda: self._call(f"restoring MTU {old}", ifname, self._ipr.link, "set",
                                   index=index, mtu=old)))

    def set_txqueuelen(self, ifname: str, length: int) -> None:
        """Set the TX queue length (our own device: nothing to restore)."""
        index = self.link_index(ifname)
        self._call(f"setting txqueuelen {length}", ifname, self._ipr.link, "set", index=index,
                   txqlen=length)

    def set_lladdr(self, ifname: str, mac: str) -> None:
        """Set the link-layer (MAC) address of our own tap device (nothing to restore)."""
        index = self.link_index(ifname)
        self._call(f"setting lladdr {mac}", ifname, self._ipr.link, "set", index=index,
                   address=mac)

    def set_up(self, ifname: str) -> None:
        """Bring the link up; :meth:`undo` brings it down again only if it was down."""
        index = self.link_index(ifname)
        was_up = bool(int(self._link(index)["flags"]) & IFF_UP)
        self._call("bringing link up", ifname, self._ipr.link, "set", index=index, state="up")
        if not was_up:
            self._undo.append(_Undo(
                f"bring {ifname} down",
                lambda: self._call("bringing link down", ifname, self._ipr.link, "set",
                                   index=index, state="down")))

    # -- addresses ------------------------------------------------------------------------

    def add_address(self, ifname: str, address: str, prefixlen: int) -> None:
        """Add ``address/prefixlen`` (IPv4 or IPv6) to ``ifname`` (topology subnet, IPv6)."""
        index = self.link_index(ifname)
        where = f"{address}/{prefixlen} on {ifname}"
        family = _family_of(address)
        self._call("adding address", where, self._ipr.addr, "add", index=index,
                   address=address, prefixlen=prefixlen, family=family)
        self._undo.append(_Undo(
            f"remove address {where}",
            lambda: self._call("removing address", where, self._ipr.addr, "del", index=index,
                               address=address, prefixlen=prefixlen, family=family)))

    def add_ptp_address(self, ifname: str, local: str, peer: str) -> None:
        """Add a point-to-point address (``ip addr add LOCAL peer PEER``: topology net30/p2p)."""
        index = self.link_index(ifname)
        where = f"{local} peer {peer} on {ifname}"
        family = _family_of(local)
        bits = 32 if family == socket.AF_INET else 128
        self._call("adding point-to-point address", where, self._ipr.addr, "add", index=index,
                   local=local, address=peer, prefixlen=bits, family=family)
        self._undo.append(_Undo(
            f"remove address {where}",
            lambda: self._call("removing address", where, self._ipr.addr, "del", index=index,
                               local=local, address=peer, prefixlen=bits, family=family)))

    def addresses(self, ifname: str | None = None,
                  family: int = socket.AF_UNSPEC) -> list[AddressInfo]:
        """Addresses on ``ifname`` (or on every interface)."""
        kwargs: dict[str, Any] = {"family": family}
        if ifname is not None:
            kwargs["index"] = self.link_index(ifname)
        msgs = self._call("listing addresses", ifname or self.netns or "host",
                          self._ipr.get_addr, **kwargs)
        names = self._names()
        out: list[AddressInfo] = []
        for msg in msgs:
            index = int(msg["index"])
            local = msg.get("IFA_LOCAL")
            addr = msg.get("IFA_ADDRESS")
            peer = addr if local is not None and addr is not None and addr != local else None
            out.append(AddressInfo(
                ifname=names.get(index, str(index)), index=index,
                address=str(local if local is not None else addr),
                prefixlen=int(msg["prefixlen"]), peer=peer, family=int(msg["family"])))
        return out

    # -- routes ---------------------------------------------------------------------------

    def _route_spec(self, dst: str, gateway: str | None, ifname: str | None,
                    metric: int | None, table: int | None) -> tuple[dict[str, Any], str]:
        net = _network(dst)
        spec: dict[str, Any] = {
            "dst": str(net.network_address), "dst_len": net.prefixlen,
            "family": socket.AF_INET6 if net.version == 6 else socket.AF_INET,
        }
        where = str(net)
        if gateway is not None:
            spec["gateway"] = gateway
            where += f" via {gateway}"
        if ifname is not None:
            spec["oif"] = self.link_index(ifname)
            where += f" dev {ifname}"
        if gateway is None and ifname is None:
            raise RuntimeSetupError("a route needs a gateway or a device", where)
        if metric is not None:
            spec["priority"] = metric
            where += f" metric {metric}"
        if table is not None:
            spec["table"] = table
            where += f" table {table}"
        return spec, where

    def add_route(self, dst: str, *, gateway: str | None = None, ifname: str | None = None,
                  metric: int | None = None, table: int | None = None) -> None:
        """Add a route to ``dst`` (CIDR) via ``gateway`` and/or out of ``ifname``."""
        spec, where = self._route_spec(dst, gateway, ifname, metric, table)
        self._call("adding route", where, self._ipr.route, "add", **spec)
        self._undo.append(_Undo(
            f"remove route {where}",
            lambda: self._call("removing route", where, self._ipr.route, "del", **spec)))

    def remove_route(self, dst: str, *, gateway: str | None = None, ifname: str | None = None,
                     metric: int | None = None, table: int | None = None) -> None:
        """Remove a route; if this object added it, :meth:`undo` forgets it."""
        spec, where = self._route_spec(dst, gateway, ifname, metric, table)
        self._call("removing route", where, self._ipr.route, "del", **spec)
        description = f"remove route {where}"
        for i in range(len(self._undo) - 1, -1, -1):
            if self._undo[i].description == description:
                del self._undo[i]
                break

    def route_get(self, dst: str, *, src: str | None = None,
                  ifname: str | None = None) -> RouteLookup:
        """Ask the kernel where a packet to ``dst`` would go (``ip route get``).

        Raises :class:`NoRouteError` when the kernel has no route (``ENETUNREACH`` and
        friends), :class:`RuntimeSetupError` for other failures.
        """
        try:
            family = _family_of(dst)
        except ValueError as exc:
            raise RuntimeSetupError(f"invalid address: {exc}", dst) from exc
        kwargs: dict[str, Any] = {"dst": dst, "family": family}
        where = dst
        if src is not None:
            kwargs["src"] = src
            where += f" from {src}"
        if ifname is not None:
            kwargs["oif"] = self.link_index(ifname)
            where += f" oif {ifname}"
        try:
            msgs = self._ipr.route("get", **kwargs)
        except NetlinkError as exc:
            if exc.code in (errno_codes.ENETUNREACH, errno_codes.EHOSTUNREACH,
                            errno_codes.EACCES):
                raise NoRouteError("no route", where, errno=exc.code) from exc
            raise RuntimeSetupError("route lookup failed", where, errno=exc.code) from exc
        msg = msgs[0]
        oif_index = msg.get("RTA_OIF")
        names = self._names() if oif_index is not None else {}
        return RouteLookup(
            dst=str(msg.get("RTA_DST") or dst),
            oif=names.get(int(oif_index)) if oif_index is not None else None,
            oif_index=int(oif_index) if oif_index is not None else None,
            gateway=msg.get("RTA_GATEWAY"),
            prefsrc=msg.get("RTA_PREFSRC"),
            src=msg.get("RTA_SRC"),
            table=int(msg.get("RTA_TABLE") or msg["table"]),
            type=_RTN_TYPES.get(int(msg["type"]), str(msg["type"])),
        )

    def routes(self, family: int = socket.AF_INET,
               table: int | None = MAIN_TABLE) -> list[RouteInfo]:
        """Unicast-table routes (``ip route show``); ``table=None`` for all tables."""
        kwargs: dict[str, Any] = {"family": family}
        if table is not None:
            kwargs["table"] = table
        msgs = self._call("listing routes", self.netns or "host", self._ipr.get_routes,
                          **kwargs)
        names = self._names()
        return [self._route_info(msg, names) for msg in msgs]

    def default_routes(self, family: int = socket.AF_INET,
                       table: int | None = MAIN_TABLE) -> list[RouteInfo]:
        """Default routes, each with its ECMP nexthops if it is a multipath route."""
        return [r for r in self.routes(family, table) if r.is_default]

    @staticmethod
    def _route_info(msg: Any, names: dict[int, str]) -> RouteInfo:
        family = int(msg["family"])
        dst = msg.get("RTA_DST")
        if dst is None:
            dst = "::" if family == socket.AF_INET6 else "0.0.0.0"
        oif_index = msg.get("RTA_OIF")
        hops: list[Nexthop] = []
        for nh in _iter(msg.get("RTA_MULTIPATH")):
            nh_oif = nh.get("oif")
            hops.append(Nexthop(
                gateway=nh.get("RTA_GATEWAY"),
                oif=names.get(int(nh_oif)) if nh_oif else None,
                oif_index=int(nh_oif) if nh_oif else None,
                weight=int(nh.get("hops") or 0) + 1))
        return RouteInfo(
            dst=f"{dst}/{int(msg['dst_len'])}",
            gateway=msg.get("RTA_GATEWAY"),
            oif=names.get(int(oif_index)) if oif_index is not None else None,
            oif_index=int(oif_index) if oif_index is not None else None,
            metric=int(msg.get("RTA_PRIORITY") or 0),
            table=int(msg.get("RTA_TABLE") or msg["table"]),
            type=_RTN_TYPES.get(int(msg["type"]), str(msg["type"])),
            protocol=_RT_PROTOS.get(int(msg["proto"]), str(msg["proto"])),
            prefsrc=msg.get("RTA_PREFSRC"),
            nexthops=tuple(hops),
        )


def _iter(value: Any) -> Iterable[Any]:
    return value if value is not None else ()
