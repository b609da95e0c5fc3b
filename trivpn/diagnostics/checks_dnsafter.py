"""DNS after connect: does the system resolver use the DNS the server pushed, do queries leak
outside the tunnel under ``redirect-gateway``, and does a name resolve through the tunnel's DNS?

``dns.tunnel_resolver``: the pushed DNS (``dhcp-option DNS/DOMAIN/DOMAIN-SEARCH``, the 2.6
``dns`` push; the push of the doctor's shared tunnel session, tunnel_session.py) against what
the resolver of this host really uses: systemd-resolved's per-link servers and domains (read
over D-Bus, org.freedesktop.resolve1) when /etc/resolv.conf points at its stub 127.0.0.53,
else the ``nameserver`` lines of /etc/resolv.conf. For a RUNNING tunnel (an openvpn or trivpn
process for this config, its tun device found by the ``dev`` name, the management interface's
``state`` or the addresses on the tun devices), what is applied now; without one, what would
be applied (trivpn's own DNS backends, an ``up`` script for openvpn).

``dns.leak`` (under ``redirect-gateway``): every resolver the system would send a name to that
does not go through the tunnel — a resolv.conf/global server whose route is not the tun device,
a resolved link server on another link that still gets names (DefaultRoute without ``~.`` on the
tunnel's link).

``dns.tunnel_lookup``: a real DNS query for a name (``--target`` names, else the remote's name,
else the root SOA) to each pushed DNS server, through the data channel (the packets of
``tunnel.dns_reachable``, probe_inner.py); the answer is the evidence.

Nothing here changes the host: resolved is only read, routes only looked up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shlex
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, MessageType, Properties, new_method_call
from jeepney.io.blocking import open_dbus_connection
from pyroute2 import IPRoute

from trivpn.config import Options
from trivpn.diagnostics.checks_beyond import DNS_ID, DnsProbe, query_dns, redirect_gateway
from trivpn.diagnostics.checks_route import read_route_view
from trivpn.diagnostics.hostinfo import in_netns_thread
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe_inner import QTYPE_A, dns_query
from trivpn.diagnostics.tunnel_session import TunnelUnavailable, tunnel_lease
from trivpn.protocol.dns import DnsPlan
from trivpn.protocol.push import PushedOptions
from trivpn.runtime.dns import ResolvconfBackend, ResolvedBackend, plan_client_dns
from trivpn.runtime.netconf import RouteLookup

RESOLVER_ID = "dns.tunnel_resolver"
LEAK_ID = "dns.leak"
LOOKUP_ID = "dns.tunnel_lookup"
STUBS = frozenset({"127.0.0.53", "127.0.0.54"})
RESOLVED = "org.freedesktop.resolve1"
_BUS = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                   interface="org.freedesktop.DBus")
QTYPE_SOA = 6
DBUS_TIMEOUT = 2.0
MGMT_TIMEOUT = 2.0
SCRIPTS = ("update-systemd-resolved", "update-resolv-conf", "update-systemd-network")

FIX_MECHANISM = (
    "Have the pushed DNS applied when the tunnel comes up: with 'trivpn run', its native DNS "
    "does it ('--dns-mode auto' uses systemd-resolved when it runs, else resolvconf; "
    "'--dns-mode resolved' to insist); with openvpn, add 'script-security 2', 'up "
    "/etc/openvpn/update-systemd-resolved' and 'down /etc/openvpn/update-systemd-resolved' "
    "(package openvpn-systemd-resolved; with 'down-pre') on a systemd-resolved host, or "
    "'up /etc/openvpn/update-resolv-conf' / 'down /etc/openvpn/update-resolv-conf' (Debian's "
    "openvpn package, needs resolvconf) otherwise. 'block-outside-dns' does not help here: it "
    "is a Windows-only option (OpenVPN 2.6 on Linux stops with 'Unrecognized option' on it, "
    "and trivpn refuses it likewise).")


# ------------------------------------------------------------------ what the system uses


@dataclass(frozen=True, slots=True)
class ResolvConf:
    path: str
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    symlink: str | None = None  # where a symlinked resolv.conf points

    @property
    def stub(self) -> bool:
        """Points at systemd-resolved's stub listener (127.0.0.53)."""
        return any(n in STUBS for n in self.nameservers)


def parse_resolv_conf(text: str, path: str = "/etc/resolv.conf",
                      symlink: str | None = None) -> ResolvConf:
    """``nameserver`` and ``search``/``domain`` lines (the last search/domain line wins, as in
    glibc's resolv.conf(5))."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    for raw in text.splitlines():
        words = raw.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2:
            continue
        if words[0] == "nameserver":
            servers.append(words[1].split("%", 1)[0])
        elif words[0] in ("search", "domain"):
            search = tuple(words[1:])
    return ResolvConf(path, tuple(servers), search, symlink)


def resolv_conf_path(netns: str | None) -> Path:
    """/etc/resolv.conf as a process in ``netns`` sees it: ``ip netns exec`` bind-mounts
    /etc/netns/NAME/resolv.conf over it when that file exists."""
    if netns is not None:
        own = Path("/etc/netns") / netns / "resolv.conf"
        if own.exists():
            return own
    return Path("/etc/resolv.conf")


def read_resolv_conf(path: Path) -> ResolvConf | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    target = os.readlink(path) if path.is_symlink() else None
    return parse_resolv_conf(text, str(path), target)


@dataclass(frozen=True, slots=True)
class ResolvedLink:
    ifindex: int
    name: str | None
    servers: tuple[str, ...] = ()
    domains: tuple[tuple[str, bool], ...] = ()  # (domain, routing-only)
    default_route: bool = True

    @property
    def routes_everything(self) -> bool:
        """Has the routing domain ``~.``: every name not claimed more precisely goes here."""
        return any(d in (".", "") and routing for d, routing in self.domains)

    def routing_names(self) -> list[str]:
        return [d for d, _ in self.domains if d not in (".", "")]


@dataclass(frozen=True, slots=True)
class ResolvedState:
    links: tuple[ResolvedLink, ...] = ()
    global_servers: tuple[str, ...] = ()


def _address(family: int, raw: Sequence[int] | bytes) -> str:
    return str(ipaddress.ip_address(bytes(raw)))


def read_resolved(bus: str = "SYSTEM", timeout: float = DBUS_TIMEOUT) -> ResolvedState | str:
    """What systemd-resolved holds (read-only: D-Bus properties of its Manager and Links), or
    why it cannot be read. Synchronous; call inside the doctor's namespace (link names and the
    namespace check are this thread's)."""
    manager = DBusAddress("/org/freedesktop/resolve1", bus_name=RESOLVED,
                          interface=f"{RESOLVED}.Manager")
    try:
        with open_dbus_connection(bus=bus) as conn:
            # Only a running resolved: reading must not start one (D-Bus activation).
            owned = conn.send_and_get_reply(new_method_call(
                _BUS, "NameHasOwner", "s", (RESOLVED,)), timeout=timeout).body[0]
            if not owned:
                return "systemd-resolved is not running on the system D-Bus"
            theirs = _peer_netns(conn, timeout)
            ours = os.stat("/proc/thread-self/ns/net").st_ino
            if theirs is not None and theirs != ours:
                return "systemd-resolved runs in another network namespace"

            def prop(address: DBusAddress, name: str) -> Any:
                reply = conn.send_and_get_reply(Properties(address).get(name), timeout=timeout)
                if reply.header.message_type == MessageType.error:
                    raise KeyError(name)
                return reply.body[0][1]

            servers: dict[int, list[str]] = {}
            for ifindex, family, raw in prop(manager, "DNS"):
                servers.setdefault(int(ifindex), []).append(_address(family, raw))
            domains: dict[int, list[tuple[str, bool]]] = {}
            for ifindex, domain, routing in prop(manager, "Domains"):
                domains.setdefault(int(ifindex), []).append((str(domain), bool(routing)))
            links: list[ResolvedLink] = []
            for ifindex in sorted(set(servers) | set(domains)):
                if ifindex == 0:
                    continue
                reply = conn.send_and_get_reply(new_method_call(manager, "GetLink", "i",
                                                                (ifindex,)), timeout=timeout)
                default = True
                if reply.header.message_type != MessageType.error:
                    link = DBusAddress(str(reply.body[0]), bus_name=RESOLVED,
                                       interface=f"{RESOLVED}.Link")
                    with contextlib.suppress(KeyError):
                        default = bool(prop(link, "DefaultRoute"))
                try:
                    name: str | None = socket.if_indextoname(ifindex)
                except OSError:
                    name = None
                links.append(ResolvedLink(ifindex, name, tuple(servers.get(ifindex, ())),
                                          tuple(domains.get(ifindex, ())), default))
            return ResolvedState(tuple(links), tuple(servers.get(0, ())))
    except (OSError, TimeoutError, KeyError, IndexError, ValueError, TypeError) as exc:
        return f"cannot read systemd-resolved over D-Bus ({exc or type(exc).__name__})"


def _peer_netns(conn: Any, timeout: float) -> int | None:
    try:
        pid = conn.send_and_get_reply(new_method_call(_BUS, "GetConnectionUnixProcessID", "s",
                                                      (RESOLVED,)), timeout=timeout).body[0]
        return os.stat(f"/proc/{int(pid)}/ns/net").st_ino
    except (OSError, IndexError, ValueError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class Resolver:
    """A DNS server the system sends names to. ``link``: the device resolved binds its queries
    to (None: the kernel's route decides); ``names``: which names (empty: every name no other
    resolver claims)."""

    address: str
    source: str
    link: str | None = None
    names: tuple[str, ...] = ()

    def evidence(self) -> dict[str, Any]:
        return {"address": self.address, "source": self.source, "link": self.link,
                "names": list(self.names) or "all"}


@dataclass(frozen=True, slots=True)
class SystemDns:
    resolv: ResolvConf | None
    resolved: ResolvedState | None
    resolved_error: str | None = None

    @property
    def via(self) -> str:
        """``resolved`` (the stub, or resolved without a resolv.conf), ``resolv.conf``,
        ``unknown`` (the stub without a readable resolved), ``none``."""
        if self.resolv is not None and self.resolv.stub:
            return "resolved" if self.resolved is not None else "unknown"
        if self.resolv is not None and self.resolv.nameservers:
            return "resolv.conf"
        return "resolved" if self.resolved is not None else "none"

    def resolvers(self) -> list[Resolver]:
        """Who gets which names (systemd-resolved.service(8), "Protocols and Routing": names
        under a routing domain go to the links claiming it; the rest to the links with the
        routing domain '~.' when there are some, else to the links with DefaultRoute and the
        global servers)."""
        if self.via == "resolv.conf":
            assert self.resolv is not None
            return [Resolver(a, f"{self.resolv.path} nameserver") for a in
                    self.resolv.nameservers]
        if self.via != "resolved":
            return []
        assert self.resolved is not None
        links = [link for link in self.resolved.links if link.servers]
        catch_all = [link for link in links if link.routes_everything]
        out: list[Resolver] = []
        for link in links:
            takes_rest = link in catch_all if catch_all else link.default_route
            names = () if takes_rest else tuple(link.routing_names())
            if not takes_rest and not names:
                continue
            source = f"systemd-resolved link {link.name or link.ifindex}"
            out += [Resolver(a, source, link.name or str(link.ifindex), names)
                    for a in link.servers]
        if not catch_all:
            out += [Resolver(a, "systemd-resolved global (resolved.conf DNS=)")
                    for a in self.resolved.global_servers]
        return out


# ------------------------------------------------------------------ the running tunnel


@dataclass(frozen=True, slots=True)
class TunDevice:
    name: str
    ifindex: int
    addresses: tuple[str, ...]
    found_by: str
    process: Mapping[str, Any] | None = None


def _netns_inode(netns: str | None) -> int | None:
    path = f"/run/netns/{netns}" if netns is not None else "/proc/self/ns/net"
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def find_processes(config: Path | None, netns: str | None) -> list[dict[str, Any]]:
    """openvpn/trivpn processes in the doctor's network namespace whose command line names
    ``config`` (``--config FILE`` or the file as an argument, relative to their cwd)."""
    if config is None:
        return []
    want = config.resolve()
    inode = _netns_inode(netns)
    found: list[dict[str, Any]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in
                    (entry / "cmdline").read_bytes().split(b"\0") if a]
            if not argv:
                continue
            names = " ".join(Path(a).name for a in argv[:4])
            if "openvpn" not in names and "trivpn" not in names:
                continue
            if "openvpn" not in names and "run" not in argv[1:4]:
                continue  # 'trivpn doctor/check': not a tunnel
            if inode is not None and os.stat(entry / "ns" / "net").st_ino != inode:
                continue
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        for arg in argv[1:]:
            with contextlib.suppress(OSError, ValueError):
                if (cwd / arg).resolve() == want:
                    program = "trivpn" if "trivpn" in names else "openvpn"
                    found.append({"pid": int(entry.name), "program": program,
                                  "cmdline": shlex.join(argv)[:300]})
                    break
    return found


def management_state(o: Options, timeout: float = MGMT_TIMEOUT) -> str | None:
    """Our tunnel address from the management interface's ``state`` command, if configured
    and answering (synchronous, inside the namespace)."""
    m = o.management
    if m is None:
        return None
    try:
        if m.unix:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = m.address
        else:
            sock = socket.socket(socket.AF_INET6 if ":" in m.address else socket.AF_INET,
                                 socket.SOCK_STREAM)
            target = (m.address, m.port)
        with sock:
            sock.settimeout(timeout)
            sock.connect(target)
            buffer = b""

            def wait_for(*markers: bytes) -> bytes:
                nonlocal buffer
                while not any(mk in buffer for mk in markers):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    buffer += chunk
                return buffer

            got = wait_for(b">INFO", b"ENTER PASSWORD:")
            if b"ENTER PASSWORD:" in got:
                if m.password_file is None or m.password_file == "stdin":
                    return None
                base = o.config_path.parent if o.config_path is not None else Path(".")
                secret = (base / m.password_file).read_text().splitlines()[0]
                sock.sendall(secret.encode() + b"\n")
                wait_for(b">INFO")
            buffer = b""
            sock.sendall(b"state\n")
            text = wait_for(b"\nEND").decode(errors="replace")
    except (OSError, IndexError, UnicodeError):
        return None
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 3 and fields[1] == "CONNECTED" and fields[3]:
            return fields[3]
    return None


def _tun_links() -> list[tuple[str, int, tuple[str, ...]]]:
    """(name, ifindex, addresses) of the tun/tap devices of this namespace."""
    out: list[tuple[str, int, tuple[str, ...]]] = []
    with IPRoute() as ipr:
        addresses: dict[int, list[str]] = {}
        for msg in ipr.get_addr():
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if local is not None:
                addresses.setdefault(int(msg["index"]), []).append(str(local))
        for msg in ipr.get_links():
            info = msg.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info is not None else None
            if kind != "tun":
                continue
            index = int(msg["index"])
            out.append((str(msg.get("IFLA_IFNAME")), index, tuple(addresses.get(index, ()))))
    return out


def find_tunnel(o: Options, config: Path | None, netns: str | None,
                pushed: PushedOptions | None) -> TunDevice | None:
    """The tun device of a running tunnel for this config (synchronous, in the namespace)."""
    processes = find_processes(config, netns)
    process = processes[0] if processes else None
    links = _tun_links()
    if o.dev not in ("tun", "tap", "null"):
        for name, index, addrs in links:
            if name == o.dev and addrs:
                return TunDevice(name, index, addrs, f"'dev {o.dev}'", process)
    if process is not None:
        local = management_state(o)
        if local is not None:
            for name, index, addrs in links:
                if local in addrs:
                    return TunDevice(name, index, addrs,
                                     f"the management interface's state ({local})", process)
    subnet = None
    if pushed is not None and pushed.ifconfig is not None:
        with contextlib.suppress(ValueError):
            mask = pushed.ifconfig.remote_or_netmask if pushed.topology == "subnet" else None
            subnet = ipaddress.ip_network(f"{pushed.ifconfig.local}/{mask or 30}", strict=False)
    for name, index, addrs in links:
        if subnet is not None and any(_in(a, subnet) for a in addrs):
            return TunDevice(name, index, addrs, f"its address in the VPN subnet {subnet}",
                             process)
    with_addr = [link for link in links if link[2]]
    if process is not None and len(with_addr) == 1:
        name, index, addrs = with_addr[0]
        return TunDevice(name, index, addrs, "the only tun device with an address", process)
    return None


def _in(address: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    try:
        return ipaddress.ip_address(address) in net
    except ValueError:
        return False


# ------------------------------------------------------------------ one snapshot


@dataclass
class Snapshot:
    """Everything the DNS checks read from the host, once per check."""

    plan: DnsPlan
    pushed: PushedOptions | None
    push_known: bool
    redirect: tuple[str, ...] | None
    system: SystemDns
    tunnel: TunDevice | None
    lookups: Mapping[str, RouteLookup | str] = field(default_factory=dict)
    mechanism: str | None = None  # predicted: how the pushed DNS would be applied
    openvpn_script: str | None = None

    def evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pushed_dns": self.plan.summary(), "push_known": self.push_known,
            "redirect_gateway": list(self.redirect) if self.redirect is not None else None,
            "resolver_via": self.system.via,
            "resolvers": [r.evidence() for r in self.system.resolvers()]}
        if self.system.resolv is not None:
            out["resolv_conf"] = {"path": self.system.resolv.path,
                                  "nameservers": list(self.system.resolv.nameservers),
                                  "search": list(self.system.resolv.search),
                                  "symlink": self.system.resolv.symlink}
        if self.system.resolved is not None:
            out["resolved_links"] = [
                {"link": link.name or link.ifindex, "servers": list(link.servers),
                 "domains": [("~" if r else "") + d for d, r in link.domains],
                 "default_route": link.default_route} for link in self.system.resolved.links]
        if self.system.resolved_error is not None:
            out["resolved_error"] = self.system.resolved_error
        if self.tunnel is not None:
            out["tunnel"] = {"device": self.tunnel.name, "addresses": list(self.tunnel.addresses),
                             "found_by": self.tunnel.found_by,
                             "process": dict(self.tunnel.process or {}) or None}
        else:
            out["tunnel"] = None
            out["predicted_mechanism"] = self.mechanism
            out["openvpn_script"] = self.openvpn_script
        if self.lookups:
            out["routes"] = {a: (lk if isinstance(lk, str) else
                                 {"interface": lk.oif, "gateway": lk.gateway, "type": lk.type})
                             for a, lk in self.lookups.items()}
        return out


def openvpn_script(o: Options) -> str | None:
    """The ``up`` script that applies pushed DNS for openvpn, when the config has one."""
    if o.up is None or o.script_security < 2:
        return None
    return o.up if any(s in o.up for s in SCRIPTS) else None


def predicted_mechanism(bus: str = "SYSTEM") -> str | None:
    """How ``trivpn run --dns-mode auto`` would apply the push here."""
    if ResolvedBackend(bus, DBUS_TIMEOUT).available():
        return "systemd-resolved (trivpn --dns-mode auto)"
    if ResolvconfBackend().available():
        return "resolvconf (trivpn --dns-mode auto)"
    return None


async def _pushed(ctx: DoctorContext) -> PushedOptions | None:
    """The push of the doctor's shared session; None without one (a handshake that already
    failed in this run is not tried again)."""
    handshake = ctx.results.get("tls.handshake")
    if handshake is not None and handshake.status not in ("ok", "warn"):
        return None
    try:
        async with tunnel_lease(ctx) as t:
            return t.pushed
    except TunnelUnavailable:
        return None


def effective_redirect(o: Options, pushed: PushedOptions | None) -> tuple[str, ...] | None:
    """The redirect-gateway flags that send IPv4 into the tunnel (the push wins), or None."""
    redirect = redirect_gateway(o, pushed) if pushed is not None else o.redirect_gateway
    if redirect is not None and "!ipv4" in redirect:
        return None  # IPv4 stays outside the tunnel: so does IPv4 DNS, by design
    return redirect


async def snapshot(ctx: DoctorContext, o: Options) -> Snapshot:
    pushed = await _pushed(ctx)
    plan = plan_client_dns(o, pushed)
    redirect = effective_redirect(o, pushed)

    def gather() -> tuple[SystemDns, TunDevice | None, dict[str, RouteLookup | str],
                          str | None]:
        resolv = read_resolv_conf(resolv_conf_path(ctx.netns))
        state = read_resolved()
        system = SystemDns(resolv, state if isinstance(state, ResolvedState) else None,
                           state if isinstance(state, str) else None)
        tunnel = find_tunnel(o, ctx.config_path, ctx.netns, pushed)
        addresses = [r.address for r in system.resolvers() if r.link is None]
        view = read_route_view(addresses) if addresses else None
        mechanism = predicted_mechanism() if tunnel is None else None
        return system, tunnel, dict(view.lookups) if view is not None else {}, mechanism

    system, tunnel, lookups, mechanism = await in_netns_thread(ctx.netns, gather)
    return Snapshot(plan, pushed, pushed is not None, redirect, system, tunnel, lookups,
                    mechanism, openvpn_script(o))


# ------------------------------------------------------------------ the verdicts


def _servers(plan: DnsPlan) -> list[str]:
    return [str(a.ip) for a in plan.servers]


def applied(s: Snapshot) -> tuple[bool, str]:
    """Whether the running tunnel's pushed servers are what the resolver uses, and where."""
    want = _servers(s.plan)
    if s.system.via == "resolved":
        assert s.system.resolved is not None and s.tunnel is not None
        link = next((x for x in s.system.resolved.links if x.ifindex == s.tunnel.ifindex
                     or x.name == s.tunnel.name), None)
        have = list(link.servers) if link is not None else []
        where = f"systemd-resolved link {s.tunnel.name}"
        return bool(have) and all(w in have for w in want), where
    if s.system.via == "resolv.conf":
        assert s.system.resolv is not None
        have = list(s.system.resolv.nameservers)
        return bool(have) and have[0] in want, s.system.resolv.path
    return False, "nowhere (no resolver found)"


def missing_domains(s: Snapshot) -> list[str]:
    """Pushed search domains the resolver of the running tunnel does not have."""
    want = list(s.plan.search_domains)
    if s.system.via == "resolved" and s.system.resolved is not None and s.tunnel is not None:
        have = {d.rstrip(".").lower() for x in s.system.resolved.links
                if x.ifindex == s.tunnel.ifindex or x.name == s.tunnel.name
                for d, _ in x.domains}
    elif s.system.via == "resolv.conf" and s.system.resolv is not None:
        have = {d.rstrip(".").lower() for d in s.system.resolv.search}
    else:
        return []
    return [d for d in want if d.rstrip(".").lower() not in have]


def leaks(s: Snapshot) -> list[tuple[Resolver, str]]:
    """Resolvers taking every name that do not go through the tunnel, and why."""
    out: list[tuple[Resolver, str]] = []
    for r in s.system.resolvers():
        if r.names:
            continue  # names only under a routing domain: meant for that link
        if r.link is not None:
            if s.tunnel is None or r.link != s.tunnel.name:
                out.append((r, f"systemd-resolved sends its queries out of {r.link}"))
            continue
        try:
            if ipaddress.ip_address(r.address).is_loopback:
                continue  # a local forwarder: where it forwards is not visible from here
        except ValueError:
            continue
        lk = s.lookups.get(r.address)
        if isinstance(lk, RouteLookup):
            if s.tunnel is not None:
                if lk.oif != s.tunnel.name:
                    out.append((r, f"its route goes out of {lk.oif}"
                                   + (f" via {lk.gateway}" if lk.gateway else "")))
            elif lk.gateway is None and lk.type == "unicast":
                # Predicted: redirect-gateway replaces the default route, not the connected
                # routes, so a resolver on a local network stays outside the tunnel.
                out.append((r, f"it is on the local network of {lk.oif}, which "
                               "redirect-gateway does not redirect"))
    return out


async def run_resolver(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(RESOLVER_ID, "skipped: the config did not parse")
    return resolver_verdict(await snapshot(ctx, o))


def resolver_verdict(s: Snapshot) -> CheckResult:
    """dns.tunnel_resolver from one snapshot."""
    evidence = s.evidence()
    want = _servers(s.plan)
    if not want:
        return skip(RESOLVER_ID, "no DNS server pushed or configured for the tunnel: names "
                    "resolve as without the VPN", **evidence)
    used = [r.address for r in s.system.resolvers()]
    if s.tunnel is not None and s.system.via in ("unknown", "none"):
        return skip(RESOLVER_ID, f"skipped: the tunnel is up on {s.tunnel.name}, but the "
                    f"resolver this host uses could not be read ({_resolver_words(s)})",
                    **evidence)
    if s.tunnel is not None:
        good, where = applied(s)
        missing = missing_domains(s)
        if good and missing:
            return problem(
                RESOLVER_ID, "warn", f"the pushed DNS servers are in use ({where}), but not "
                f"the pushed domain(s) {', '.join(missing)}", **evidence,
                explanation=f"The server pushed the search domain(s) {', '.join(missing)} "
                f"('dhcp-option DOMAIN'/'DOMAIN-SEARCH' or 'dns search-domains'), and {where} "
                "does not have them: short names (e.g. 'intranet' for 'intranet."
                f"{missing[0]}') do not complete.",
                fix="Apply the domains with the servers: trivpn's native DNS and the "
                "update-systemd-resolved / update-resolv-conf scripts set both; a hand-made "
                "script must also set 'search' (resolv.conf) or 'resolvectl domain DEV "
                "DOMAIN'.")
        if good:
            return ok(RESOLVER_ID, f"the pushed DNS ({', '.join(want)}) is in use: {where}",
                      **evidence)
        return problem(
            RESOLVER_ID, "warn", f"the pushed DNS ({', '.join(want)}) is not used by this "
            f"host's resolver, which uses {', '.join(used) or 'nothing'}", **evidence,
            explanation=f"The tunnel is up on {s.tunnel.name} and the server pushed DNS "
            f"server(s) {', '.join(want)}, but {_resolver_words(s)}. Names of hosts behind the "
            "VPN do not resolve, and under redirect-gateway names go to the resolver you had "
            "before the VPN (dns.leak).",
            fix=FIX_MECHANISM)
    if s.mechanism is not None:
        note = ("" if s.openvpn_script is not None else
                "; with openvpn it would not be: this config has no 'up' script such as "
                "update-systemd-resolved or update-resolv-conf")
        return ok(RESOLVER_ID, f"no tunnel is up; the pushed DNS ({', '.join(want)}) would be "
                  f"applied through {s.mechanism}{note}", **evidence)
    if s.openvpn_script is not None:
        return ok(RESOLVER_ID, f"no tunnel is up; openvpn would apply the pushed DNS "
                  f"({', '.join(want)}) with its up script {s.openvpn_script}", **evidence)
    return problem(
        RESOLVER_ID, "warn", f"no tunnel is up, and nothing here would apply the pushed DNS "
        f"({', '.join(want)})", **evidence,
        explanation="Neither systemd-resolved (on the system D-Bus) nor a resolvconf program "
        "is here for trivpn's native DNS, and the config has no 'up' script for openvpn: once "
        f"connected, this host keeps resolving through {', '.join(used) or 'its current setup'}"
        ", not through the VPN's DNS.",
        fix=FIX_MECHANISM)


def _resolver_words(s: Snapshot) -> str:
    if s.system.via == "resolved":
        return (f"systemd-resolved (resolv.conf points at its stub) has "
                f"{'no servers' if not _link_servers(s) else ', '.join(_link_servers(s))} on "
                f"the tunnel's link {s.tunnel.name if s.tunnel else '?'}")
    if s.system.via == "resolv.conf" and s.system.resolv is not None:
        return (f"{s.system.resolv.path} lists nameserver(s) "
                f"{', '.join(s.system.resolv.nameservers)}")
    if s.system.via == "unknown":
        return (f"resolv.conf points at systemd-resolved's stub and resolved cannot be read "
                f"({s.system.resolved_error})")
    return "no resolver configuration was found"


def _link_servers(s: Snapshot) -> list[str]:
    if s.system.resolved is None or s.tunnel is None:
        return []
    return [a for x in s.system.resolved.links if x.name == s.tunnel.name for a in x.servers]


async def run_leak(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(LEAK_ID, "skipped: the config did not parse")
    return leak_verdict(await snapshot(ctx, o))


def leak_verdict(s: Snapshot) -> CheckResult:
    """dns.leak from one snapshot."""
    evidence = s.evidence()
    if s.redirect is None:
        return skip(LEAK_ID, "no redirect-gateway: only the VPN's own networks go through the "
                    "tunnel, so DNS outside it is expected", **evidence)
    if s.system.via in ("none", "unknown"):
        return skip(LEAK_ID, "skipped: the resolver this host uses could not be found ("
                    f"{_resolver_words(s)})", **evidence)
    if s.tunnel is None and (s.mechanism is not None or s.openvpn_script is not None):
        how = s.mechanism or f"the up script {s.openvpn_script}"
        return ok(LEAK_ID, f"no tunnel is up; {how} would give the tunnel's link the pushed "
                  "DNS for every name", **evidence)
    found = leaks(s)
    evidence["leaks"] = [{**r.evidence(), "why": why} for r, why in found]
    evidence["outside_for_their_domains"] = [r.evidence() for r in outside_names(s)]
    if not found:
        if s.tunnel is None:
            return ok(LEAK_ID, "no tunnel is up; every resolver this host uses would be "
                      "routed through the tunnel under redirect-gateway", **evidence)
        return ok(LEAK_ID, f"every name goes to a resolver through the tunnel "
                  f"({s.tunnel.name}){_split_note(s)}", **evidence)
    r, why = found[0]
    others = "".join(f"; {x.address} ({w})" for x, w in found[1:])
    resolvers = s.system.resolvers()
    fallback_only = (s.system.via == "resolv.conf" and bool(resolvers)
                     and all(x != resolvers[0] for x, _ in found))
    if s.tunnel is not None and fallback_only:
        return problem(
            LEAK_ID, "warn", f"DNS can leak outside the tunnel: {r.address} ({r.source}) is "
            f"a fallback nameserver not routed through {s.tunnel.name}", **evidence,
            explanation=f"The first nameserver, {resolvers[0].address}, goes through the "
            f"tunnel, but {r.address} is listed after it: {why}{others}. The C library asks "
            "the next nameserver whenever the first does not answer in time (resolv.conf(5), "
            "'options timeout/attempts'), and those names travel outside the VPN.",
            fix="Keep only the VPN's nameservers while the tunnel is up: resolvconf merges "
            "the records of every interface (check /etc/resolvconf/interface-order or "
            "'resolvconf -l'); with systemd-resolved give the tunnel's link '~.'. "
            + FIX_MECHANISM)
    if s.tunnel is not None:
        return problem(
            LEAK_ID, "fail", f"DNS leaks outside the tunnel: names go to {r.address} "
            f"({r.source}), not through {s.tunnel.name}", **evidence,
            explanation=f"The server redirects all traffic into the tunnel "
            f"(redirect-gateway), but this host still sends names to {r.address} from "
            f"{r.source}: {why}{others}. Those queries — every name you look up — travel "
            "outside the VPN, to a resolver the VPN does not control; "
            f"pushed DNS: {', '.join(_servers(s.plan)) or 'none'}.",
            fix=_leak_fix(s))
    return problem(
        LEAK_ID, "warn", f"DNS would leak outside the tunnel: names would still go to "
        f"{r.address} ({r.source})", **evidence,
        explanation=f"No tunnel is up. Under this config's redirect-gateway, nothing here "
        f"applies the pushed DNS (no systemd-resolved, no resolvconf, no openvpn up script), "
        f"so names keep going to {r.address}: {why}{others}.",
        fix=FIX_MECHANISM)


def outside_names(s: Snapshot) -> list[Resolver]:
    """Resolvers on other links that keep only the names under their own domains."""
    tun = s.tunnel.name if s.tunnel is not None else None
    return [r for r in s.system.resolvers() if r.names and r.link not in (None, tun)]


def _split_note(s: Snapshot) -> str:
    outside = outside_names(s)
    if not outside:
        return ""
    r = outside[0]
    return (f"; names under {', '.join(r.names)} still go to {r.address} on {r.link}, the "
            "domain(s) that link claims")


def _leak_fix(s: Snapshot) -> str:
    if s.system.via == "resolved" and _link_servers(s):
        dev = s.tunnel.name if s.tunnel is not None else "tun0"
        return ("The tunnel's link has the pushed servers but does not take every name: give "
                f"it the routing domain '~.' and the default route ('resolvectl domain {dev} "
                f"\"~.\"' and 'resolvectl default-route {dev} yes' by hand; trivpn's native "
                "DNS does both under redirect-gateway). " + FIX_MECHANISM)
    return FIX_MECHANISM


# ------------------------------------------------------------------ a name through the tunnel


@dataclass
class NameProbe(DnsProbe):
    """A :class:`DnsProbe` for a chosen name and type (tunnel.dns_reachable's probe asks for
    the root's NS)."""

    name: str = "."
    qtype: int = QTYPE_SOA

    @property
    def query(self) -> bytes:
        return dns_query(self.query_id, self.name, self.qtype)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def lookup_name(ctx: DoctorContext, o: Options) -> tuple[str, int, str]:
    """(name, qtype, why): the first --target name, else the remote's name, else the root."""
    for name in ctx.targets:
        if not _is_address(name):
            return name, QTYPE_A, "--target"
    for remote in o.remotes:
        if not _is_address(remote.host):
            return remote.host, QTYPE_A, "the remote's name"
    return ".", QTYPE_SOA, "the root zone (no --target name, the remote is an address)"


async def run_lookup(ctx: DoctorContext) -> CheckResult:
    o = ctx.options
    if o is None:
        return skip(LOOKUP_ID, "skipped: the config did not parse")
    reachable = ctx.results.get(DNS_ID)
    answered = [(s["address"], int(s["port"])) for s in
                (reachable.evidence.get("servers", ()) if reachable is not None else ())
                if s.get("answered")]
    name, qtype, why = lookup_name(ctx, o)
    try:
        async with tunnel_lease(ctx) as t:
            if not answered:
                plan = plan_client_dns(o, t.pushed)
                answered = [(str(a.ip), a.port or 53) for a in plan.servers
                            if a.ip.version == 4]
            if not answered or t.local_ipv4 is None:
                return skip(LOOKUP_ID, "skipped: no pushed IPv4 DNS server to ask")
            probes: list[DnsProbe] = [NameProbe(address, port, name=name, qtype=qtype)
                      for address, port in answered[:3]]
            await query_dns(t, probes)
            timeline = t.timeline.steps
    except TunnelUnavailable as exc:
        return exc.skip_result(LOOKUP_ID)
    shown = "the root zone" if name == "." else name
    evidence: dict[str, Any] = {
        "name": name, "qtype": "A" if qtype == QTYPE_A else "SOA", "name_from": why,
        "answers": [{**p.evidence(), "addresses": list(p.answer.addresses) if p.answer else [],
                     "records": p.answer.answers if p.answer else 0} for p in probes],
        "timeline": timeline}
    good = [p for p in probes if p.answer is not None and p.answer.rcode == "NOERROR"
            and p.answer.answers > 0]
    if good:
        p = good[0]
        assert p.answer is not None
        got = ", ".join(p.answer.addresses) or f"{p.answer.answers} record(s)"
        return ok(LOOKUP_ID, f"{shown} resolves through the tunnel's DNS server {p.address}: "
                  f"{got}", **evidence)
    answered_probes = [p for p in probes if p.answer is not None]
    if not answered_probes:
        return problem(
            LOOKUP_ID, "warn", f"no answer for {shown} from the tunnel's DNS server(s)",
            **evidence,
            explanation=f"A query for {shown} sent through the tunnel to "
            f"{', '.join(p.address for p in probes)} got no answer, although tunnel.dns_"
            "reachable's query did: the server may be slow to recurse for this name.",
            fix="Retry; if it persists, check the DNS server's upstream/forwarders.")
    p = answered_probes[0]
    assert p.answer is not None
    rcode = p.answer.rcode
    if rcode == "NXDOMAIN" and why != "--target":
        return ok(LOOKUP_ID, f"the tunnel's DNS server {p.address} answers for {shown} "
                  "(NXDOMAIN: it does not know this name, which may be public only)",
                  **evidence)
    if rcode == "NXDOMAIN":
        return problem(
            LOOKUP_ID, "warn", f"the tunnel's DNS server {p.address} does not know {shown} "
            "(NXDOMAIN)", **evidence,
            explanation=f"Asked through the tunnel, {p.address} says {shown} does not exist. "
            "With the VPN's DNS in use, this name does not resolve.",
            fix=f"Check the spelling of {shown}, or add it to the zone the VPN's DNS server "
            f"{p.address} serves; if only another resolver knows it, route its domain there "
            "(split DNS: 'dhcp-option DOMAIN-ROUTE' / 'dns server N resolve-domains').")
    return problem(
        LOOKUP_ID, "warn", f"the tunnel's DNS server {p.address} answers {rcode} for {shown}",
        **evidence,
        explanation=f"Asked through the tunnel for {shown}, {p.address} answered {rcode}"
        + (": it cannot resolve it (no upstream, or the upstream fails)."
           if rcode == "SERVFAIL" else ".")
        + " Names like it do not resolve with the VPN's DNS in use.",
        fix=f"Check the DNS server {p.address}: its forwarders/upstream and access control "
        "for the VPN subnet.")


CHECKS: tuple[Check, ...] = (
    Check(RESOLVER_ID, run_resolver, roles=("client",), after=("tunnel.traffic",)),
    Check(LEAK_ID, run_leak, roles=("client",), after=("tunnel.traffic",)),
    Check(LOOKUP_ID, run_lookup, roles=("client",),
          depends_on=("tls.handshake", "tunnel.traffic", DNS_ID)),
)
