"""``route.to_server`` (client) and ``route.overlap``: where the kernel would send traffic to the
server, and whether the VPN's networks collide with networks that are already local.

Everything is read over rtnetlink (``NetConfig`` lookups, pyroute2 rule dump) inside the
doctor's namespace; nothing is sent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pyroute2 import IPRoute

from trivpn.config import Options, Route
from trivpn.diagnostics.hostinfo import in_netns_thread
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.runtime.errors import NoRouteError, RuntimeSetupError
from trivpn.runtime.netconf import MAIN_TABLE, AddressInfo, NetConfig, RouteInfo, RouteLookup

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOCAL_TABLE = 255
DEFAULT_RULE_PRIORITIES = frozenset({0, 32766, 32767})
TUNNEL_PREFIXES = ("tun", "tap")
RTM_F_LOOKUP_TABLE = 0x1000


def is_tunnel_ifname(name: str | None, o: Options | None = None) -> bool:
    if name is None:
        return False
    return name.startswith(TUNNEL_PREFIXES) or (o is not None and name == o.dev
                                                and o.dev not in ("tun", "tap"))


# --- what the kernel tells us ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RouteView:
    """A snapshot of the routing state relevant to the doctor."""

    lookups: Mapping[str, RouteLookup | str]  # address -> lookup, or the error text
    routes: tuple[RouteInfo, ...]             # main table, IPv4 and IPv6
    defaults: tuple[RouteInfo, ...]           # main-table default routes
    addresses: tuple[AddressInfo, ...]
    rules: tuple[dict[str, Any], ...]         # non-default policy rules


def _rules(ipr: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            msgs = ipr.get_rules(family=family)
        except Exception:  # policy routing is optional information; never fail on it
            continue
        for msg in msgs:
            prio = int(msg.get("FRA_PRIORITY") or 0)
            if prio in DEFAULT_RULE_PRIORITIES:
                continue
            rule: dict[str, Any] = {"priority": prio,
                                    "table": int(msg.get("FRA_TABLE") or msg["table"])}
            for attr, key in (("FRA_SRC", "from"), ("FRA_DST", "to"), ("FRA_FWMARK", "fwmark"),
                              ("FRA_IIFNAME", "iif"), ("FRA_OIFNAME", "oif")):
                value = msg.get(attr)
                if value is not None:
                    if key in ("from", "to"):
                        bits = msg["src_len"] if key == "from" else msg["dst_len"]
                        value = f"{value}/{bits}"
                    rule[key] = value
            out.append(rule)
    return out


def _lookup_table(ipr: Any, addr: str) -> int | None:
    """The table the kernel's lookup for ``addr`` used. Without RTM_F_LOOKUP_TABLE the kernel
    reports the main table whatever policy rule matched (``NetConfig.route_get`` does not set
    the flag), so ask again with it."""
    try:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        msg = ipr.route("get", dst=addr, family=family, flags=RTM_F_LOOKUP_TABLE)[0]
        return int(msg.get("RTA_TABLE") or msg["table"])
    except Exception:  # informational only
        return None


def read_route_view(addresses: Sequence[str]) -> RouteView:
    """Synchronous: call inside the target namespace (``hostinfo.in_netns``)."""
    lookups: dict[str, RouteLookup | str] = {}
    ipr = IPRoute()
    try:
        with NetConfig() as net:
            for addr in addresses:
                try:
                    found = net.route_get(addr)
                except NoRouteError:
                    lookups[addr] = "no route"
                    continue
                except RuntimeSetupError as exc:
                    lookups[addr] = str(exc)
                    continue
                table = _lookup_table(ipr, addr)
                lookups[addr] = replace(found, table=table) if table is not None else found
            routes = [*net.routes(socket.AF_INET), *net.routes(socket.AF_INET6)]
            defaults = [r for r in routes if r.is_default and r.type == "unicast"]
            addrs = net.addresses()
        rules = _rules(ipr)
    finally:
        ipr.close()
    return RouteView(lookups, tuple(routes), tuple(defaults), tuple(addrs), tuple(rules))


def _route_text(r: RouteInfo) -> str:
    if r.nexthops:
        hops = " ".join(f"nexthop via {h.gateway} dev {h.oif} weight {h.weight}"
                        for h in r.nexthops)
        return f"{r.dst} {hops} metric {r.metric}"
    via = f" via {r.gateway}" if r.gateway else ""
    return f"{r.dst}{via} dev {r.oif} metric {r.metric}"


def _lookup_row(addr: str, lk: RouteLookup | str) -> dict[str, Any]:
    if isinstance(lk, str):
        return {"address": addr, "error": lk}
    return {"address": addr, "interface": lk.oif, "gateway": lk.gateway, "source": lk.source,
            "table": lk.table, "type": lk.type}


def _best_main_route(addr: str, routes: Iterable[RouteInfo]) -> RouteInfo | None:
    ip = ipaddress.ip_address(addr)
    best: RouteInfo | None = None
    best_len = -1
    for r in routes:
        if r.table != MAIN_TABLE:
            continue
        try:
            net = ipaddress.ip_network(r.dst, strict=False)
        except ValueError:
            continue
        if net.version == ip.version and ip in net and net.prefixlen > best_len:
            best, best_len = r, net.prefixlen
    return best


def _literal_network(route: Route) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(f"{route.network}/{route.netmask}", strict=False)
    except ValueError:
        return None


# --- route.to_server ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Issue:
    status: Literal["warn", "fail"]
    summary: str
    explanation: str
    fix: str


def analyse_to_server(o: Options, view: RouteView, addresses: Sequence[str]) -> list[_Issue]:
    issues: list[_Issue] = []
    multi = len([d for d in view.defaults if d.dst.startswith("0.")]) > 1 or any(
        len(d.nexthops) > 1 for d in view.defaults)
    conf = o.config_path
    for addr in addresses:
        lk = view.lookups.get(addr)
        if lk is None:
            continue
        if isinstance(lk, str):
            issues.append(_Issue(
                "fail", f"no route to the server address {addr}",
                "Packets to the server cannot leave this machine ('Network is unreachable' or "
                "'No route to host' in the OpenVPN log).",
                f"Add a default route or a route to {addr} ('ip route add {addr} via "
                "GATEWAY'), or check the network connection."))
            continue
        if lk.type in ("blackhole", "unreachable", "prohibit"):
            issues.append(_Issue(
                "fail", f"the route to {addr} is a {lk.type} route (table {lk.table})",
                f"The kernel discards packets to the server ({lk.type} route).",
                f"Remove the {lk.type} route covering {addr} ('ip route show table all | grep "
                f"{lk.type}')."))
            continue
        if is_tunnel_ifname(lk.oif, o):
            issues.append(_Issue(
                "fail", f"traffic to the server {addr} would go into the tunnel device "
                        f"{lk.oif}",
                "Packets to the server would be sent through the VPN tunnel itself, a loop: "
                "the connection stalls and then times out.",
                f"Add an exception route through the real uplink ('ip route add {addr}/32 via "
                "GATEWAY dev IFACE'), or remove the route into the tunnel that covers it."))
        if lk.table not in (MAIN_TABLE, LOCAL_TABLE):
            issues.append(_Issue(
                "warn", f"policy routing sends traffic to {addr} through table {lk.table} "
                        f"(interface {lk.oif})",
                "A policy rule selects another routing table for the server's address than "
                "the main table, so the uplink and source address may differ from what the "
                "main routing table suggests, and replies may arrive on another interface.",
                f"Check 'ip rule show' and 'ip route show table {lk.table}'; make sure the "
                "server is reached through the intended uplink."))
        best = _best_main_route(addr, view.routes)
        via_default = best is not None and best.is_default
        if via_default and multi:
            issues.append(_Issue(
                "warn", f"several default routes or ECMP next hops; traffic to {addr} "
                        f"currently leaves via {lk.oif} from {lk.source}",
                "With more than one default route (or a multipath route) packets to the "
                "server may leave through different uplinks or source addresses over time, "
                "and the server or a NAT on the way drops them: the TLS handshake stalls "
                "('TLS key negotiation failed to occur within 60 seconds').",
                f"Pin the server to one uplink: 'ip route add {addr}/32 via {lk.gateway or 'GW'}"
                f" dev {lk.oif}', or remove the extra default route."))
        for route in o.routes:
            net = _literal_network(route)
            if net is not None and ipaddress.ip_address(addr) in net:
                issues.append(_Issue(
                    "fail", f"'route {route.network} {route.netmask}' in the config covers "
                            f"the server address {addr}",
                    "Once the tunnel is up this route sends the server's own packets into "
                    "the tunnel, a loop that stalls the connection.",
                    f"Remove or narrow the route at {conf}:{route.line}, or add 'route {addr} "
                    "255.255.255.255 net_gateway' before it."))
        if (o.redirect_gateway is not None and "local" not in o.redirect_gateway
                and not any(d.dst.startswith("0.") for d in view.defaults)):
            issues.append(_Issue(
                "warn", "redirect-gateway is configured but there is no default route",
                "OpenVPN adds an exception route for the server through the current default "
                "gateway before redirecting all traffic; without a default gateway it cannot, "
                "and the server's traffic is captured by the tunnel.",
                f"Add a default route (or a route to {addr}) before starting the VPN, or use "
                f"'redirect-gateway local' in {conf} when the server is on the local network."))
    return issues


async def check_to_server(ctx: DoctorContext) -> CheckResult:
    cid = "route.to_server"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    dns = ctx.results.get("dns.remote")
    rows = dns.evidence.get("remotes", []) if dns is not None else []
    addresses = list(dict.fromkeys(a for row in rows for a in row.get("addresses", [])))
    if not addresses:
        return skip(cid, "no resolved server address to look up")
    view = await in_netns_thread(ctx.netns, lambda: read_route_view(addresses))
    evidence: dict[str, Any] = {
        "routes_to_server": [_lookup_row(a, view.lookups[a]) for a in addresses],
        "default_routes": [_route_text(d) for d in view.defaults],
    }
    if view.rules:
        evidence["policy_rules"] = list(view.rules)
    if o.redirect_gateway is not None:
        evidence["redirect_gateway"] = " ".join(o.redirect_gateway) or "(no flags)"
    issues = analyse_to_server(o, view, addresses)
    if not issues:
        first = view.lookups[addresses[0]]
        assert not isinstance(first, str)
        return ok(cid, f"{addresses[0]} is reached via {first.oif}"
                       + (f" gateway {first.gateway}" if first.gateway else "")
                       + f" from {first.source}", **evidence)
    status: Literal["warn", "fail"] = "fail" if any(i.status == "fail" for i in issues) else "warn"
    top = next(i for i in issues if i.status == status)
    return problem(cid, status, top.summary,
                   explanation=" ".join(dict.fromkeys(i.explanation for i in issues)),
                   fix=" ".join(dict.fromkeys(i.fix for i in issues)), **evidence)


# --- route.overlap -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VpnNetwork:
    network: IPNetwork
    source: str  # "server pool (server.conf:7)", "push \"route ...\" (server.conf:9)", ...
    kind: Literal["pool", "route", "push", "pushed"]


def _parse_route_words(words: Sequence[str]) -> IPNetwork | None:
    """``route NET [MASK ...]`` / ``ifconfig LOCAL NETMASK`` words to a network."""
    if len(words) < 2:
        return None
    mask = words[2] if len(words) > 2 else "255.255.255.255"
    if words[0] == "ifconfig" and not mask.startswith("255."):
        return None  # net30/p2p: the second word is the peer, not a netmask
    try:
        return ipaddress.ip_network(f"{words[1]}/{mask}", strict=False)
    except ValueError:
        return None


def pushed_networks(push_reply: str | Sequence[str]) -> list[IPNetwork]:
    """Routes in a PUSH_REPLY (``"PUSH_REPLY,route 198.18.7.0 255.255.255.0,..."``) or a list
    of pushed option strings."""
    items = push_reply.split(",") if isinstance(push_reply, str) else list(push_reply)
    nets = []
    for item in items:
        words = item.strip().split()
        if words and words[0] in ("route", "ifconfig"):
            net = _parse_route_words(words)
            if net is not None:
                nets.append(net)
    return nets


def pushed_from_handshake(evidence: Mapping[str, Any]) -> list[IPNetwork]:
    """Networks the server pushed, from ``tls.handshake`` evidence: ``push_reply`` (the raw
    PUSH_REPLY text), ``pushed_options`` / ``pushed_routes`` (lists of option strings; a
    ``pushed_routes`` item may omit the word ``route``) and ``ifconfig`` (``LOCAL NETMASK`` with
    topology subnet)."""
    items: list[str] = []
    reply = evidence.get("push_reply")
    if isinstance(reply, str):
        items += reply.split(",")
    for key in ("pushed_options", "pushed_routes"):
        value = evidence.get(key)
        if isinstance(value, list | tuple):
            items += [str(v) if str(v).startswith("route") or key == "pushed_options"
                      else f"route {v}" for v in value]
    ifconfig = evidence.get("ifconfig")
    if isinstance(ifconfig, str) and evidence.get("topology") in ("subnet", None):
        items.append(f"ifconfig {ifconfig}")
    return list(dict.fromkeys(pushed_networks(items)))


def vpn_networks(o: Options, results: Mapping[str, CheckResult]) -> list[VpnNetwork]:
    conf = o.config_path
    found: list[VpnNetwork] = []
    if o.server is not None:
        pool = o.server.network
        loc = o.location("server")
        at = f" ({loc[0]}:{loc[1]})" if loc else ""
        found.append(VpnNetwork(pool, f"server pool 'server {pool.network_address} "
                                      f"{pool.netmask}'{at}", "pool"))
    for route in o.routes:
        net = _literal_network(route)
        if net is not None:
            found.append(VpnNetwork(net, f"'route {route.network} {route.netmask}' "
                                         f"({conf}:{route.line})", "route"))
    hs = results.get("tls.handshake") if o.role == "client" else None
    if hs is not None:
        for pushed in pushed_from_handshake(hs.evidence):
            found.append(VpnNetwork(pushed, f"pushed by the server: {pushed}", "pushed"))
    return found


def local_networks(view: RouteView, o: Options) -> list[tuple[IPNetwork, str]]:
    """Networks reachable without the VPN: addresses and main-table routes on non-tunnel,
    non-loopback interfaces (default routes excluded)."""
    seen: dict[tuple[IPNetwork, str], None] = {}
    for a in view.addresses:
        if a.ifname == "lo" or is_tunnel_ifname(a.ifname, o):
            continue
        net = ipaddress.ip_interface(f"{a.address}/{a.prefixlen}").network
        if net.prefixlen < net.max_prefixlen and not net.is_link_local:
            seen[(net, a.ifname)] = None
    for r in view.routes:
        if (r.is_default or r.table != MAIN_TABLE or r.type != "unicast" or r.oif is None
                or r.oif == "lo" or is_tunnel_ifname(r.oif, o)):
            continue
        net = ipaddress.ip_network(r.dst, strict=False)
        if not net.is_link_local and not net.is_multicast:
            seen[(net, r.oif)] = None
    return list(seen)


def find_overlaps(vpn: Sequence[VpnNetwork], local: Sequence[tuple[IPNetwork, str]]
                  ) -> list[tuple[VpnNetwork, IPNetwork, str, Literal["warn", "fail"]]]:
    out: list[tuple[VpnNetwork, IPNetwork, str, Literal["warn", "fail"]]] = []
    for v in vpn:
        for net, ifname in local:
            if net.version != v.network.version or not v.network.overlaps(net):
                continue
            # A VPN route wider than the local network (e.g. a pushed /8 around a local /24)
            # loses only that part; anything else shadows or is shadowed entirely.
            wider = v.network.prefixlen < net.prefixlen
            out.append((v, net, ifname, "warn" if wider and v.kind != "pool" else "fail"))
    return out


async def check_overlap(ctx: DoctorContext) -> CheckResult:
    cid = "route.overlap"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    vpn = vpn_networks(o, ctx.results)
    if not vpn:
        return ok(cid, "no VPN networks to compare (the config defines none and nothing was "
                       "pushed)", vpn_networks=[])
    view = await in_netns_thread(ctx.netns, lambda: read_route_view(()))
    local = local_networks(view, o)
    overlaps = find_overlaps(vpn, local)
    evidence: dict[str, Any] = {
        "vpn_networks": [f"{v.network} ({v.source})" for v in vpn],
        "local_networks": [f"{n} dev {i}" for n, i in local],
    }
    if not overlaps:
        return ok(cid, f"{len(vpn)} VPN network(s) do not overlap the {len(local)} local "
                       "network(s)", **evidence)
    evidence["overlaps"] = [{"vpn_network": str(v.network), "from": v.source,
                             "local_network": str(n), "interface": i}
                            for v, n, i, _ in overlaps]
    status: Literal["warn", "fail"] = ("fail" if any(s == "fail" for *_, s in overlaps)
                                       else "warn")
    v, n, i, _ = next(x for x in overlaps if x[3] == status)
    fixes = []
    for v2, n2, i2, _ in overlaps:
        if v2.kind == "pool":
            fixes.append(f"Move the VPN pool to an unused range: change {v2.source} to a "
                         f"network that does not overlap {n2} on {i2}.")
        elif v2.kind == "route":
            fixes.append(f"Remove or narrow {v2.source}, which overlaps {n2} on {i2}.")
        else:
            fixes.append(f"Renumber one side: the server pushes {v2.network}, which overlaps "
                         f"the local network {n2} on {i2}; change the server's 'push \"route "
                         "...\"' line or the local network.")
    return problem(
        cid, status, f"{v.network} ({v.source}) overlaps local network {n} on {i}",
        explanation=("The same addresses would be reachable both locally and through the "
                     "VPN; the kernel sends them to whichever route is more specific, so "
                     "either the remote network or the local one becomes unreachable."),
        fix=" ".join(dict.fromkeys(fixes)), **evidence)


CHECKS: tuple[Check, ...] = (
    Check("route.to_server", check_to_server, roles=("client",), depends_on=("dns.remote",)),
    # tls.handshake is client-only: for a server config it is not part of the run, and the
    # runner ignores it; for a client it supplies the pushed routes and ifconfig.
    Check("route.overlap", check_overlap, depends_on=("config.syntax", "tls.handshake")),
)
