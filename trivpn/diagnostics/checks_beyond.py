"""Beyond the server: what the user needs through the tunnel, probed through the data channel.

``tunnel.dns_reachable``: every pushed DNS server the tunnel carries gets a real DNS query
(built in memory, sent through the doctor's tunnel session); any well-formed answer, NXDOMAIN
included, proves the server is reachable and serving.

``tunnel.beyond``: hosts behind the server — each ``--target HOST``, and the pushed DNS servers
behind a pushed route or ``redirect-gateway`` — get an ICMP echo (and the DNS servers a query).
When one stays silent, two probes tell where the path ends:

* an echo with IP TTL 1: a server that forwards decrements it to 0 and answers ICMP time
  exceeded from its tunnel address; silence means it does not forward (``net.ipv4.ip_forward``
  is 0 — Linux's ip_error() sends nothing then);
* an echo with TTL 2: a router one hop behind the server answers time exceeded, which comes
  back only if replies find their way to the VPN subnet (MASQUERADE/SNAT on the server, or a
  route back on the LAN router).

ICMP errors quoting a probe name the rest: host unreachable from the server (it found no host
at that address on its LAN: ARP got no answer), net unreachable (no route on the server),
administratively prohibited (a firewall rejects). A far host that stays silent while the return
path is proven (time exceeded from a router behind the server, or another host behind the
server answered) is down or filtering.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics.model import (
    Check,
    CheckResult,
    DoctorContext,
    Status,
    ok,
    problem,
    skip,
)
from trivpn.diagnostics.probe_inner import (
    DNS_PORT,
    ICMP,
    UDP,
    DnsAnswer,
    Inner,
    dns_query,
    echo_request,
    parse_dns_answer,
    parse_inner,
    udp_packet,
)
from trivpn.diagnostics.tunnel_session import Tunnel, TunnelUnavailable, tunnel_lease
from trivpn.protocol.push import PushedOptions
from trivpn.runtime.dns import plan_client_dns

DNS_ID = "tunnel.dns_reachable"
BEYOND_ID = "tunnel.beyond"
DNS_RETRY = 1.0  # resend an unanswered query after this many seconds
DNS_WAIT = 2.5
ANSWER_WAIT = 1.5  # phase 1: the full-TTL probes
DIAGNOSE_WAIT = 4.0  # phase 2 ends this long after phase 1 began (ARP gives up after ~3 s)
# Kinds of the probes in the ICMP sequence number: target index * 4 + kind.
FULL, TTL1, TTL2 = 0, 1, 2

IPv4 = ipaddress.IPv4Address
Net4 = ipaddress.IPv4Network
Net6 = ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


# ------------------------------------------------------------------ what the tunnel carries


def redirect_gateway(options: Options, pushed: PushedOptions) -> tuple[str, ...] | None:
    """The effective redirect-gateway flags (the push wins), None without one."""
    if pushed.redirect_gateway is not None:
        return pushed.redirect_gateway
    return options.redirect_gateway


def tunnel_subnet(pushed: PushedOptions, version: int = 4) -> Net | None:
    """The VPN subnet our address is in: IPv4 under topology subnet (the pushed netmask;
    net30/p2p: None, the pool is not pushed), IPv6 from ``ifconfig-ipv6``."""
    if version == 6:
        i6 = pushed.ifconfig_ipv6
        return Net6(f"{i6.address}/{i6.prefixlen}", strict=False) if i6 is not None else None
    if pushed.ifconfig is None or pushed.topology != "subnet":
        return None
    return Net4(f"{pushed.ifconfig.local}/{pushed.ifconfig.remote_or_netmask}", strict=False)


def routed_networks(options: Options, pushed: PushedOptions, version: int = 4) -> list[Net]:
    """The networks of one family routed into the tunnel by ``route``/``route-ipv6`` lines
    (config and pushed; ``route-nopull`` already kept them out of the push)."""
    nets: list[Net] = []
    if version == 6:
        nets += [r.network for r in options.routes_ipv6]
        if not options.route_nopull:
            nets += [r.network for r in pushed.route_ipv6]
        return nets
    for r in options.routes:
        try:
            nets.append(Net4(f"{r.network}/{r.netmask}", strict=False))
        except ValueError:
            continue  # a hostname or keyword network
    if not options.route_nopull:
        for pr in pushed.routes:
            if isinstance(pr.network, IPv4):
                mask = pr.netmask if pr.netmask is not None else IPv4("255.255.255.255")
                nets.append(Net4(f"{pr.network}/{mask}", strict=False))
    return nets


def routed_by(address: IP, options: Options, pushed: PushedOptions) -> str | None:
    """Why ``address`` goes through the tunnel ("route 198.18.20.0/24", "redirect-gateway",
    "the VPN subnet"), or None when this config sends it elsewhere."""
    v = address.version
    subnet = tunnel_subnet(pushed, v)
    if subnet is not None and address in subnet:
        return f"the VPN subnet {subnet}"
    best = max((n for n in routed_networks(options, pushed, v) if address in n),
               key=lambda n: n.prefixlen, default=None)
    if best is not None:
        return f"route {best}"
    redirect = redirect_gateway(options, pushed)
    if redirect is not None:
        if v == 4 and "!ipv4" not in redirect:  # '!ipv4': only IPv6 redirected
            return "redirect-gateway"
        if v == 6 and "ipv6" in redirect:
            return "redirect-gateway ipv6"
    return None


def dns_servers(options: Options, pushed: PushedOptions) -> list[tuple[str, int]]:
    """The DNS servers a client would use for this tunnel (``dns server`` beats
    ``dhcp-option DNS``), as (address, port)."""
    plan = plan_client_dns(options, pushed)
    return [(str(a.ip), a.port or DNS_PORT) for a in plan.servers]


def local_for(t: Tunnel, address: str) -> str | None:
    """Our tunnel address of ``address``'s family (None when none was pushed)."""
    return t.local_ipv6 if ":" in address else t.local_ipv4


def server_addresses(t: Tunnel) -> set[str]:
    """The server's tunnel addresses (IPv4 gateway, IPv6 ifconfig-ipv6 remote)."""
    return {a for a in (t.gateway, t.gateway_ipv6) if a is not None}


def subnet_text(pushed: PushedOptions, version: int = 4) -> str:
    subnet = tunnel_subnet(pushed, version)
    if subnet is not None:
        return str(subnet)
    return ("the VPN subnet (the server's 'server' line)" if version == 4
            else "the VPN's IPv6 subnet (the server's 'server-ipv6' line)")


# ------------------------------------------------------------------ DNS queries


@dataclass
class DnsProbe:
    address: str
    port: int
    query_id: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    sport: int = field(default_factory=lambda: 20000 + int.from_bytes(os.urandom(2), "big")
                       % 40000)
    sent_at: float | None = None
    answer: DnsAnswer | None = None
    answered_at: float | None = None
    icmp: Inner | None = None

    @property
    def query(self) -> bytes:
        return dns_query(self.query_id)

    def packet(self, t: Tunnel) -> bytes:
        local = local_for(t, self.address)
        assert local is not None
        return udp_packet(local, self.address, self.sport, self.port, self.query)

    def take(self, inner: Inner) -> bool:
        """Record ``inner`` if it answers this probe."""
        if inner.kind == "udp" and inner.ident == self.sport and inner.seq == self.port:
            answer = parse_dns_answer(inner.payload, self.query)
            if answer is not None and self.answer is None:
                self.answer, self.answered_at = answer, trio.current_time()
                return True
        if (inner.kind == "unreachable" and inner.quoted_proto == UDP
                and inner.quoted_dst == self.address and inner.quoted_ident == self.sport):
            self.icmp = inner
            return True
        return False

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address, "port": self.port,
                               "answered": self.answer is not None}
        if self.answer is not None:
            out["rcode"] = self.answer.rcode
            if self.sent_at is not None and self.answered_at is not None:
                out["rtt_ms"] = round((self.answered_at - self.sent_at) * 1000, 2)
        if self.icmp is not None:
            out["icmp"] = self.icmp.code
            out["icmp_from"] = self.icmp.src
        return out


async def _collect(t: Tunnel, take: Callable[[Inner], bool], until: float) -> None:
    """Feed every answer already received or arriving before ``until`` to ``take``, which
    returns True when everything is known."""
    while True:
        got = await t.receive(parse_inner, until)
        if got is None:
            return
        if take(got):
            return


async def query_dns(t: Tunnel, probes: list[DnsProbe], wait: float = DNS_WAIT) -> None:
    """Send each query (again after DNS_RETRY if unanswered) and collect the answers."""
    start = trio.current_time()

    def take(inner: Inner) -> bool:
        for p in probes:
            p.take(inner)
        return all(p.answer is not None or p.icmp is not None for p in probes)

    for attempt in range(2):
        for p in probes:
            if p.answer is None and p.icmp is None:
                try:
                    await t.send(p.packet(t))
                except OSError:
                    continue
                if p.sent_at is None:
                    p.sent_at = trio.current_time()
                t.mark("dns_query_sent", to=p.address, attempt=attempt + 1)
        await _collect(t, take, start + (DNS_RETRY if attempt == 0 else wait))
        if take_done(probes):
            return


def take_done(probes: Iterable[DnsProbe]) -> bool:
    return all(p.answer is not None or p.icmp is not None for p in probes)


async def run_dns(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(DNS_ID, "skipped: the config did not parse")
    try:
        async with tunnel_lease(ctx) as t:
            pushed = t.pushed
            servers = dns_servers(o, pushed)
            if not servers:
                return skip(DNS_ID, "no DNS server pushed or configured for the tunnel "
                            "(no 'dhcp-option DNS' or 'dns server' line): names resolve as "
                            "without the VPN")
            probes, outside, not_probed = [], [], []
            for address, port in servers:
                ip = ipaddress.ip_address(address)
                if local_for(t, address) is None:
                    not_probed.append(address)
                    continue
                why = routed_by(ip, o, pushed)
                if why is None:
                    outside.append(address)
                    continue
                probes.append(DnsProbe(address, port))
            evidence: dict[str, Any] = {"not_through_tunnel": outside,
                                        "no_tunnel_address_of_that_family": not_probed}
            if not probes:
                return skip(DNS_ID, "skipped: no pushed DNS server goes through the tunnel "
                            f"({', '.join(outside + not_probed)})", **evidence)
            await query_dns(t, probes)
            evidence.update(servers=[p.evidence() for p in probes],
                            timeline=t.timeline.steps)
    except TunnelUnavailable as exc:
        return exc.skip_result(DNS_ID)
    return _dns_verdict(probes, evidence, pushed)


def _dns_verdict(probes: list[DnsProbe], evidence: dict[str, Any],
                 pushed: PushedOptions) -> CheckResult:
    silent = [p for p in probes if p.answer is None]
    refused = [p for p in probes if p.answer is not None and p.answer.rcode == "REFUSED"]
    if not silent and not refused:
        names = ", ".join(f"{p.address} ({p.answer.rcode})" for p in probes if p.answer)
        return ok(DNS_ID, f"the pushed DNS server(s) answer through the tunnel: {names}",
                  **evidence)
    if silent:
        p = silent[0]
        subnet = subnet_text(pushed, 6 if ":" in p.address else 4)
        if (p.icmp is not None and p.icmp.code == "port_unreachable"
                and p.icmp.src == p.address):
            return problem(
                DNS_ID, "fail", f"no DNS server answers at {p.address} port {p.port}",
                **evidence,
                explanation=f"The host {p.address} is reachable through the tunnel, but it "
                f"answered the DNS query with ICMP port unreachable: no DNS server listens "
                f"on UDP port {p.port} there, or a firewall on that host rejects the port "
                "(an nft/iptables 'reject' answers the same way; 'ss -ulpn' on the host "
                "tells them apart). With this VPN up, names do not resolve.",
                fix=f"Start the DNS server on {p.address} (e.g. 'systemctl start dnsmasq' / "
                "'named' / 'unbound') and make it listen on that address, and let its "
                f"firewall accept UDP port {p.port} from {subnet}; or correct the server "
                "config's 'push \"dhcp-option DNS ...\"' (or 'push \"dns server ...\"') "
                "line.")
        if p.icmp is not None:
            why = (f"{p.icmp.src} answered the query with ICMP {p.icmp.code.replace('_', ' ')}"
                   ".")
        else:
            why = ("No answer and no ICMP error came back; tunnel.beyond tells whether the "
                   "VPN server forwards and whether replies find their way back.")
        return problem(
            DNS_ID, "fail", f"the pushed DNS server {p.address} does not answer through the "
            "tunnel", **evidence,
            explanation=f"{len(silent)} of {len(probes)} pushed DNS server(s) gave no answer "
            f"to a DNS query sent through the tunnel from the VPN subnet {subnet}. {why} With "
            "this VPN up, names do not resolve (or only after a slow fallback).",
            fix=f"Check that the DNS server {p.address} runs and accepts queries from "
            f"{subnet}, and see tunnel.beyond for the path to it; or push a DNS server that "
            "the VPN clients can reach.")
    p = refused[0]
    subnet = subnet_text(pushed, 6 if ":" in p.address else 4)
    return problem(
        DNS_ID, "warn", f"the pushed DNS server {p.address} refuses queries from the VPN",
        **evidence,
        explanation=f"{p.address} answered through the tunnel with REFUSED: it is reachable "
        f"but does not serve this client — its access control does not include the VPN "
        f"subnet {subnet} (or, for a forwarder, it has no upstream server).",
        fix=f"Allow {subnet} in the DNS server's access control (BIND 'allow-query' / "
        "'allow-recursion', unbound 'access-control', dnsmasq 'listen-address'/'interface').")


# ------------------------------------------------------------------ beyond the server


@dataclass
class Far:
    """One host beyond the server and what its probes got."""

    index: int
    address: str
    origin: str  # "--target HOST" or "pushed DNS server"
    routed_by: str | None
    dns_port: int | None = None  # a DNS server: also probed with a query
    answered: bool = False
    answered_by: str = ""  # "echo", "dns", "dns_port_unreachable", "tunnel.dns_reachable"
    errors: list[Inner] = field(default_factory=list)  # ICMP errors quoting a FULL probe
    ttl1_from: str | None = None
    ttl2_from: str | None = None
    ttl2_kind: str | None = None
    dns: DnsProbe | None = None

    @property
    def version(self) -> int:
        return 6 if ":" in self.address else 4

    def decisive(self) -> Inner | None:
        return self.errors[0] if self.errors else None

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"address": self.address, "origin": self.origin,
                               "routed_by": self.routed_by, "answered": self.answered}
        if self.answered:
            out["answered_by"] = self.answered_by
        if self.errors:
            out["icmp"] = [{"type": e.kind, "code": e.code, "from": e.src}
                           for e in self.errors]
        if not self.answered:
            out.update(ttl1_time_exceeded_from=self.ttl1_from,
                       ttl2_answer_from=self.ttl2_from, ttl2_answer=self.ttl2_kind)
        return out


async def _resolve(name: str) -> str | None:
    """An IP literal as it is; a name through this host's resolver (IPv4 first)."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    try:
        infos = await trio.socket.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
    except OSError:
        return None
    addresses = sorted((str(i[4][0]) for i in infos), key=lambda a: ":" in a)
    return addresses[0] if addresses else None


def _dns_answered(ctx: DoctorContext) -> set[str]:
    result = ctx.results.get(DNS_ID)
    if result is None:
        return set()
    return {s["address"] for s in result.evidence.get("servers", ()) if s.get("answered")}


async def run_beyond(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(BEYOND_ID, "skipped: the config did not parse")
    resolved: dict[str, str] = {}
    unresolved: list[str] = []
    for name in ctx.targets:
        address = await _resolve(name)
        if address is None:
            unresolved.append(name)
        else:
            resolved[name] = address
    try:
        async with tunnel_lease(ctx) as t:
            pushed = t.pushed
            if t.local_ipv4 is None and t.local_ipv6 is None:
                return skip(BEYOND_ID, "skipped: the server pushed no tunnel address")
            no_family = [f"{n} ({a})" for n, a in resolved.items() if local_for(t, a) is None]
            fars = _far_hosts(ctx, o, t, {n: a for n, a in resolved.items()
                                          if local_for(t, a) is not None})
            redirect = redirect_gateway(o, pushed)
            evidence: dict[str, Any] = {
                "redirect_gateway": list(redirect) if redirect is not None else None,
                "routes": [str(n) for n in (*routed_networks(o, pushed, 4),
                                            *routed_networks(o, pushed, 6))],
                "unresolved_targets": unresolved,
                "targets_without_tunnel_address_of_their_family": no_family}
            if not fars:
                if unresolved:
                    return problem(
                        BEYOND_ID, "warn", f"--target {unresolved[0]} does not resolve",
                        **evidence, explanation="The host named with --target has no "
                        "address here, so nothing beyond the server was probed.",
                        fix="Give --target an IP address or a name that resolves.")
                if no_family:
                    return problem(
                        BEYOND_ID, "warn", f"--target {no_family[0]}: the server pushed no "
                        "tunnel address of that family", **evidence,
                        explanation="The server gave this client no tunnel address of the "
                        "target's family (IPv4 'ifconfig' / IPv6 'ifconfig-ipv6'), so with "
                        "this VPN up that host is not reached through the tunnel.",
                        fix="On the server, add 'server-ipv6' (or 'server') for that family, "
                        "or name a target of the family the VPN carries.")
                if redirect is not None:
                    return skip(BEYOND_ID, "nothing beyond the server to probe: the server "
                                "redirects all traffic but pushed no DNS server behind it; "
                                "name a host with --target HOST", **evidence)
                return skip(BEYOND_ID, "nothing beyond the server to probe: no pushed route "
                            "or redirect-gateway covers a pushed DNS server, and no "
                            "--target was given", **evidence)
            await _probe_far(t, fars)
            servers = server_addresses(t)
            evidence.update(hosts=[f.evidence() for f in fars], timeline=t.timeline.steps,
                            server_tunnel_addresses=sorted(servers))
    except TunnelUnavailable as exc:
        return exc.skip_result(BEYOND_ID)
    return _beyond_verdict(fars, evidence, pushed, servers)


def _far_hosts(ctx: DoctorContext, o: Options, t: Tunnel,
               resolved: dict[str, str]) -> list[Far]:
    pushed, servers = t.pushed, server_addresses(t)
    fars: list[Far] = []
    seen: set[str] = set()
    answered = _dns_answered(ctx)
    for name, address in resolved.items():
        if address in seen:
            continue
        seen.add(address)
        fars.append(Far(len(fars), address, f"--target {name}",
                        routed_by(ipaddress.ip_address(address), o, pushed)))
    for address, port in dns_servers(o, pushed):
        ip = ipaddress.ip_address(address)
        if local_for(t, address) is None or address in seen or address in servers:
            continue
        why = routed_by(ip, o, pushed)
        subnet = tunnel_subnet(pushed, ip.version)
        if why is None or (subnet is not None and ip in subnet):
            continue  # not through the tunnel, or on the VPN subnet itself (not beyond)
        seen.add(address)
        far = Far(len(fars), address, "pushed DNS server", why, dns_port=port)
        if address in answered:
            far.answered, far.answered_by = True, DNS_ID
        fars.append(far)
    return fars


async def _probe_far(t: Tunnel, fars: list[Far]) -> None:
    ident = int.from_bytes(os.urandom(2), "big")
    by_index = {f.index: f for f in fars}

    def take(inner: Inner) -> bool:
        if inner.kind == "echo_reply" and inner.ident == ident:
            far = by_index.get(inner.seq // 4)
            if far is not None and inner.src == far.address and not far.answered:
                far.answered, far.answered_by = True, "echo"
        elif inner.kind in ("time_exceeded", "unreachable") and inner.quoted_proto == ICMP \
                and inner.quoted_ident == ident:
            far = by_index.get(inner.quoted_seq // 4)
            if far is not None and inner.quoted_dst == far.address:
                kind = inner.quoted_seq % 4
                if kind == TTL1 and inner.kind == "time_exceeded":
                    far.ttl1_from = far.ttl1_from or inner.src
                elif kind == TTL2:
                    far.ttl2_from, far.ttl2_kind = inner.src, inner.kind
                    if inner.kind == "unreachable" and inner.src != far.address:
                        far.errors.append(inner)
                elif kind == FULL or inner.kind == "unreachable":
                    far.errors.append(inner)
        for far in fars:
            if far.dns is not None and far.dns.take(inner) and not far.answered:
                if far.dns.answer is not None:
                    far.answered, far.answered_by = True, "dns"
                elif far.dns.icmp is not None and far.dns.icmp.src == far.address:
                    far.answered, far.answered_by = True, "dns_port_unreachable"
                elif far.dns.icmp is not None:
                    far.errors.append(far.dns.icmp)
        return all(f.answered or f.errors for f in fars)

    async def send(far: Far, kind: int, ttl: int) -> None:
        try:
            local = local_for(t, far.address)
            assert local is not None
            await t.send(echo_request(local, far.address, ident, far.index * 4 + kind, ttl=ttl))
        except OSError:
            return
        t.mark("echo_sent", to=far.address, ttl=ttl)

    start = trio.current_time()
    pending = [f for f in fars if not f.answered]
    for far in pending:
        await send(far, FULL, 64)
        if far.dns_port is not None:
            far.dns = DnsProbe(far.address, far.dns_port)
            try:
                await t.send(far.dns.packet(t))
            except OSError:
                continue
            far.dns.sent_at = trio.current_time()
            t.mark("dns_query_sent", to=far.address)
    if not pending:
        return
    await _collect(t, take, start + ANSWER_WAIT)
    silent = [f for f in pending if not f.answered and not f.errors]
    for far in silent:
        await send(far, TTL1, 1)
        await send(far, TTL2, 2)
    if silent:
        await _collect(t, take, start + DIAGNOSE_WAIT)
    await _collect(t, take, trio.current_time())  # what arrived with the last one


@dataclass(frozen=True)
class Words:
    """What differs between IPv4 and IPv6 in the explanations and fixes."""

    ttl: str
    icmp: str
    neighbour: str
    sysctl: str
    nft: str
    iptables: str
    ip_route: str
    host_route: str


WORDS = {
    4: Words("TTL", "ICMP", "ARP", "net.ipv4.ip_forward", "ip", "iptables", "ip route",
             "route {a} 255.255.255.255"),
    6: Words("hop limit", "ICMPv6", "neighbour discovery", "net.ipv6.conf.all.forwarding",
             "ip6", "ip6tables", "ip -6 route", "route-ipv6 {a}/128"),
}


def _hop(address: str | None, servers: set[str], far: Far | None = None) -> str:
    """Who sent an ICMP error, in words: the VPN server when it is its tunnel address (or the
    address its TTL-1 answer came from), else the last router before the host."""
    if address is None:
        return "nobody"
    if address in servers or (far is not None and address == far.ttl1_from):
        return f"the VPN server ({address})"
    return (f"the router {address} in front of it (the VPN server's own LAN address when "
            "the host is on the server's LAN)")


@dataclass(frozen=True)
class Finding:
    status: Status  # ok / warn / fail
    state: str
    summary: str
    explanation: str
    fix: str


def _classify(far: Far, fars: list[Far], pushed: PushedOptions,
              servers: set[str]) -> Finding:
    v = far.version
    a, subnet, w = far.address, subnet_text(pushed, v), WORDS[v]
    if far.answered:
        return Finding("ok", "answered", f"{a} answers", "", "")
    err = far.decisive()
    if err is not None and err.kind == "unreachable":
        hop = _hop(err.src, servers, far)
        if err.code in ("host_unreachable", "host_unknown"):
            return Finding(
                "warn", "host_down", f"{a} is down: {hop} finds no host at that address",
                f"The VPN server forwards towards {a}, but {hop} answered 'host unreachable': "
                f"on its network nobody answers {w.neighbour} for {a} — the host is off, "
                "disconnected, "
                "or has another address. The VPN itself works.",
                f"Start {a} or correct the address ({far.origin}).")
        if err.code in ("net_unreachable", "net_unknown"):
            return Finding(
                "fail", "no_route", f"{hop} has no route to {a}",
                f"The packets for {a} reach {hop}, which answered 'network unreachable': it "
                f"has no route to {a}'s network.",
                f"On {hop}, add a route to {a}'s network ({w.ip_route} add NETWORK via "
                "LAN-ROUTER), or push only routes the server can reach.")
        if err.code in ("admin_prohibited", "host_prohibited", "net_prohibited"):
            return Finding(
                "fail", "rejected", f"a firewall on {hop} rejects packets to {a}",
                f"{hop} answered 'administratively prohibited' for {a}: a firewall rule "
                f"rejects traffic from the VPN subnet {subnet} to it.",
                f"On {hop}, allow forwarding from {subnet} to {a} (nft: 'iifname \"tun0\" "
                f"{w.nft} daddr {a} accept' in the forward chain; {w.iptables}: "
                f"'{w.iptables} -I FORWARD -i tun0 -d {a} -j ACCEPT'), and the replies back "
                "(ct state established,related accept).")
        return Finding(
            "fail", "unreachable", f"{hop} reports {a} unreachable ({err.code})",
            f"{hop} answered {w.icmp} destination unreachable ({err.code}) for {a}.",
            f"Check the route and firewall for {a} on {hop}.")
    if far.ttl1_from is None:
        return Finding(
            "fail", "server_not_forwarding",
            f"the VPN server does not forward: {a} got no answer, and a probe with {w.ttl} 1 "
            "got no 'time exceeded' from the server",
            f"The server answers through the tunnel (tunnel.traffic) but forwards nothing "
            f"beyond itself: an echo to {a} got no answer, and a packet with {w.ttl} 1 "
            f"towards {a} — which a forwarding Linux server answers with {w.icmp} 'time "
            f"exceeded' — got no answer either. IP forwarding is off on the server "
            f"({w.sysctl} = 0; Linux then drops such packets silently), or a rule on the "
            "server drops them before routing (nft/iptables prerouting or raw table, "
            "rp_filter on the tun interface).",
            f"On the server: 'sysctl -w {w.sysctl}=1', and to keep it after a "
            f"reboot write '{w.sysctl} = 1' to /etc/sysctl.d/99-openvpn.conf "
            "('sysctl --system' loads it).")
    proven_by = None
    if far.ttl2_from is not None and far.ttl2_from not in (far.address, far.ttl1_from) \
            and far.ttl2_kind == "time_exceeded":
        proven_by = f"a router behind the server ({far.ttl2_from}) answered a TTL-2 probe"
    else:
        same = [f for f in fars if f.answered and f is not far and f.version == v]
        other = next((f for f in same if f.answered_by != DNS_ID), None) or next(
            iter(same), None)
        if other is not None:
            proven_by = f"{other.address} ({other.origin}) answered through the same server"
    if proven_by is not None:
        return Finding(
            "warn", "host_silent", f"{a} does not answer, though the path beyond the server "
            "works",
            f"The VPN server forwards (time exceeded from {_hop(far.ttl1_from, servers)} for "
            f"a {w.ttl}-1 probe) and replies find their way back to the VPN subnet ({proven_by}), "
            f"but {a} itself stayed silent: it is down, or it (or a firewall in front of it) "
            f"drops {w.icmp} echo from the VPN.",
            f"Check {a}: is it up, and does its firewall accept {w.icmp} echo (and your "
            f"service's port) from {subnet} or from the server's LAN address? Name a host "
            "that answers ping with --target to confirm the path.")
    return Finding(
        "fail", "no_return_path",
        f"the VPN server forwards towards {a}, but nothing comes back",
        f"The server forwards: a {w.ttl}-1 probe towards {a} got {w.icmp} 'time exceeded' "
        f"from {_hop(far.ttl1_from, servers)}. But {a} gave no answer, and nothing behind the "
        "server answered either. Most often the replies have no way back to the VPN subnet "
        f"{subnet}: the server does not NAT the VPN subnet (no MASQUERADE/SNAT rule) and the "
        f"LAN router has no route back to {subnet}. It can also be the server's firewall "
        f"dropping forwarded packets (FORWARD chain), or {a} being down or filtering. The "
        f"wire cannot tell these apart from here; on the server, 'tcpdump -ni LAN-IF host "
        f"{a}' does: requests leaving with a source in {subnet} and no reply → missing "
        "MASQUERADE or route back; requests leaving with the server's LAN address and no "
        f"reply → {a} is down or filters; no request leaving at all → the FORWARD firewall.",
        f"On the server, NAT the VPN subnet behind its LAN address: 'nft add table {w.nft} "
        f"nat; nft add chain {w.nft} nat postrouting {{ type nat hook postrouting priority "
        f"srcnat \\; }}; nft add rule {w.nft} nat postrouting {w.nft} saddr {subnet} oifname "
        f"\"LAN-IF\" masquerade' ({w.iptables}: '{w.iptables} -t nat -A POSTROUTING -s "
        f"{subnet} -o LAN-IF -j MASQUERADE'); or, without NAT, add a route back on the LAN "
        f"router: '{w.ip_route} add {subnet} via SERVER-LAN-ADDRESS'. And let the forward "
        f"chain accept it: 'nft list ruleset' / '{w.iptables} -L FORWARD -nv'.")


_RANK = {"ok": 0, "warn": 1, "fail": 2}


def _beyond_verdict(fars: list[Far], evidence: dict[str, Any], pushed: PushedOptions,
                    servers: set[str]) -> CheckResult:
    findings = [(f, _classify(f, fars, pushed, servers)) for f in fars]
    for f, finding in findings:
        for host in evidence["hosts"]:
            if host["address"] == f.address:
                host["state"] = finding.state
    worst_far, worst = max(findings, key=lambda x: _RANK[x[1].status])
    if worst.status == "ok":
        unrouted = [f for f in fars if f.routed_by is None]
        if unrouted:
            u = unrouted[0]
            return problem(
                BEYOND_ID, "warn", f"{u.address} answers through the tunnel, but this config "
                "does not route it there", **evidence,
                explanation=f"{u.address} ({u.origin}) answered when sent through the tunnel, "
                "but no route line, pushed route or redirect-gateway sends its traffic into "
                "the tunnel, so with the VPN up this host still goes the normal way.",
                fix="Push a route for it from the server ('push \""
                + WORDS[u.version].host_route.format(a=u.address)
                + "\"', or its network), or add a route line to the client config.")
        names = ", ".join(f"{f.address} ({f.answered_by})" for f in fars)
        return ok(BEYOND_ID, f"hosts beyond the server answer through the tunnel: {names}",
                  **evidence)
    evidence["state"] = worst.state
    others = [f"{f.address}: {fi.state}" for f, fi in findings if f is not worst_far]
    explanation = worst.explanation + (f" Other hosts: {', '.join(others)}." if others else "")
    return problem(BEYOND_ID, worst.status, worst.summary, **evidence,
                   explanation=explanation, fix=worst.fix)


CHECKS: tuple[Check, ...] = (
    # Without data flowing to the server itself (tunnel.traffic), nothing beyond it can be
    # judged: both are skipped then.
    Check(DNS_ID, run_dns, roles=("client",), depends_on=("tls.handshake", "tunnel.traffic")),
    Check(BEYOND_ID, run_beyond, roles=("client",),
          depends_on=("tls.handshake", "tunnel.traffic"), after=(DNS_ID,)),
)
