"""DNS settings of a client: OpenVPN 2.6's ``dns`` directive and ``dhcp-option`` DNS kinds, and
the :class:`DnsPlan` trivpn applies (sans-IO; the runtime's backends apply it, docs/dns.md).

What OpenVPN 2.6 does, and trivpn follows (OpenVPN src/openvpn/options.c, add_option() and
foreign_options_copy_dns(); src/openvpn/dns.c):

- ``dns server N address A [A...]`` (up to 8 numeric addresses, ``1.2.3.4:53``,
  ``[2001:2::1]:853``), ``dns server N resolve-domains D...``, ``dns server N dnssec
  yes|optional|no``, ``dns server N transport plain|DoH|DoT``, ``dns server N sni NAME``,
  ``dns search-domains D...``. Priority N is -128..127 in a config file, 0..127 when pushed
  (dns_server_priority_parse()); a lower number is a better server. Every server needs an
  address (dns_options_verify()).
- Pushed servers override config-file servers of the same priority; the others are merged in
  priority order (dns_options_postprocess_pull()). Search domains accumulate.
- ``dns`` beats ``dhcp-option``: with ``dns`` servers, the ``dhcp-option DNS``/``DNS6`` entries
  are dropped and replaced by the servers' addresses; with ``dns search-domains``, the
  ``dhcp-option DOMAIN-SEARCH`` entries are replaced (foreign_options_copy_dns()).
- ``dhcp-option`` on Linux (config file or pushed) only reaches scripts as ``foreign_option_N``;
  the distributions' scripts (update-resolv-conf, update-systemd-resolved) take ``DNS``/``DNS6``
  as servers and ``DOMAIN``, ``ADAPTER_DOMAIN_SUFFIX`` (2.6 on Windows: the same as ``DOMAIN``)
  and ``DOMAIN-SEARCH`` as search domains. trivpn applies these itself; the Windows-only kinds
  (``WINS``, ``NBT``, ``NTP``, ``DISABLE-NBT``...) are noted in the plan and not applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Literal

__all__ = [
    "DnsAddress", "DnsOptionError", "DnsOptions", "DnsPlan", "DnsServer", "dhcp_dns_address",
    "foreign_options", "parse_dns_address", "plan_dns",
]

DnsSecurity = Literal["yes", "optional", "no"]
DnsTransport = Literal["plain", "DoH", "DoT"]
DnsSource = Literal["dns", "dhcp-option", "none"]

MAX_ADDRESSES = 8  # struct dns_server's addr[8] (dns.h)
_SECURITY: dict[str, DnsSecurity] = {"yes": "yes", "optional": "optional", "no": "no"}
_TRANSPORT: dict[str, DnsTransport] = {"plain": "plain", "DoH": "DoH", "DoT": "DoT"}
_PRIORITY = re.compile(r"[+-]?[0-9]+\Z")
_DHCP_SERVER_KINDS = ("DNS", "DNS6")
_DHCP_DOMAIN_KINDS = ("DOMAIN", "ADAPTER_DOMAIN_SUFFIX")
_DOMAIN = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?\Z")


class DnsOptionError(ValueError):
    """A malformed ``dns`` or ``dhcp-option`` line (the caller adds file/line or packet)."""


@dataclass(frozen=True, slots=True)
class DnsAddress:
    """One server address, with the port when one was given (``1.2.3.4:5353``)."""

    ip: IPv4Address | IPv6Address
    port: int | None = None

    def __str__(self) -> str:
        if self.port is None:
            return str(self.ip)
        return f"{self.ip}:{self.port}" if self.ip.version == 4 else f"[{self.ip}]:{self.port}"


@dataclass(frozen=True, slots=True)
class DnsServer:
    """``dns server PRIORITY ...``: all lines with one priority build one server."""

    priority: int
    addresses: tuple[DnsAddress, ...] = ()
    resolve_domains: tuple[str, ...] = ()
    dnssec: DnsSecurity | None = None
    transport: DnsTransport | None = None
    sni: str | None = None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) <= 0xFFFF:
        raise DnsOptionError(f"bad port {text!r}")
    return int(text)


def parse_dns_address(text: str) -> DnsAddress:
    """A numeric server address as dns_server_addr_parse() takes it: ``A.B.C.D[:PORT]``,
    ``V6`` or ``[V6]:PORT``."""
    port: int | None = None
    host, version = text, 0
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise DnsOptionError(f"malformed address {text!r}")
        port, version = _port(port_text), 6
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port, version = _port(port_text), 4
    try:
        ip = ip_address(host)
    except ValueError:
        raise DnsOptionError(f"malformed address {text!r}") from None
    if version and ip.version != version:
        raise DnsOptionError(f"malformed address {text!r}")
    return DnsAddress(ip, port)


def _domains(values: Sequence[str]) -> tuple[str, ...]:
    for value in values:
        if not _DOMAIN.match(value):
            raise DnsOptionError(f"{value!r} is not a domain name")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class DnsOptions:
    """The ``dns`` directives seen so far: servers sorted by priority, search domains."""

    servers: tuple[DnsServer, ...] = ()
    search_domains: tuple[str, ...] = ()

    def with_line(self, args: Sequence[str], *, pulled: bool = False) -> DnsOptions:
        """This with one more ``dns`` line (its arguments); DnsOptionError if malformed."""
        if len(args) >= 2 and args[0] == "search-domains":
            return replace(self, search_domains=(*self.search_domains, *_domains(args[1:])))
        if len(args) < 4 or args[0] != "server":
            raise DnsOptionError(
                "expects 'server PRIORITY KEYWORD VALUE...' or 'search-domains DOMAIN...'")
        low = 0 if pulled else -128
        if not _PRIORITY.match(args[1]) or not low <= int(args[1]) <= 127:
            raise DnsOptionError(f"invalid priority value {args[1]!r} (expected {low}..127)")
        priority = int(args[1])
        server = next((s for s in self.servers if s.priority == priority), DnsServer(priority))
        server = _server_with(server, args[2], args[3:])
        others = [s for s in self.servers if s.priority != priority]
        return replace(self, servers=tuple(sorted((*others, server), key=lambda s: s.priority)))

    def check(self) -> None:
        """Every server has an address (OpenVPN's dns_options_verify())."""
        for server in self.servers:
            if not server.addresses:
                raise DnsOptionError(f"dns server {server.priority} does not have an address")

    def script_env(self) -> dict[str, str]:
        """The ``dns_*`` variables OpenVPN 2.6 gives its scripts (dns.c, setenv_dns_options()):
        ``dns_search_domain_I``, and per server, numbered by position from 1,
        ``dns_server_I_address_J``, ``_port_J``, ``_resolve_domain_J``, ``_dnssec``,
        ``_transport``, ``_sni``."""
        env = {f"dns_search_domain_{i}": d for i, d in enumerate(self.search_domains, 1)}
        for i, server in enumerate(self.servers, 1):
            for j, address in enumerate(server.addresses, 1):
                env[f"dns_server_{i}_address_{j}"] = str(address.ip)
                if address.port is not None:
                    env[f"dns_server_{i}_port_{j}"] = str(address.port)
            for j, domain in enumerate(server.resolve_domains, 1):
                env[f"dns_server_{i}_resolve_domain_{j}"] = domain
            if server.dnssec is not None:
                env[f"dns_server_{i}_dnssec"] = server.dnssec
            if server.transport is not None:
                env[f"dns_server_{i}_transport"] = server.transport
            if server.sni is not None:
                env[f"dns_server_{i}_sni"] = server.sni
        return env

    def merged_with_pulled(self, pulled: DnsOptions) -> DnsOptions:
        """The options after a push: a pulled server replaces a config server of the same
        priority, the rest merge by priority; search domains accumulate."""
        taken = {s.priority for s in pulled.servers}
        servers = [s for s in self.servers if s.priority not in taken] + list(pulled.servers)
        return DnsOptions(tuple(sorted(servers, key=lambda s: s.priority)),
                          (*self.search_domains, *pulled.search_domains))


def _server_with(server: DnsServer, keyword: str, values: Sequence[str]) -> DnsServer:
    where = f"dns server {server.priority}"
    if keyword == "address":
        addresses = (*server.addresses, *(parse_dns_address(a) for a in values))
        if len(addresses) > MAX_ADDRESSES:
            raise DnsOptionError(f"{where}: more than {MAX_ADDRESSES} addresses")
        return replace(server, addresses=addresses)
    if keyword == "resolve-domains":
        return replace(server, resolve_domains=(*server.resolve_domains, *_domains(values)))
    if len(values) != 1:
        raise DnsOptionError(f"{where}: unknown option type {keyword!r} or missing or unknown "
                             "parameter")
    value = values[0]
    if keyword == "dnssec":
        if value not in _SECURITY:
            raise DnsOptionError(f"{where}: malformed dnssec value {value!r}")
        return replace(server, dnssec=_SECURITY[value])
    if keyword == "transport":
        if value not in _TRANSPORT:
            raise DnsOptionError(f"{where}: malformed transport value {value!r}")
        return replace(server, transport=_TRANSPORT[value])
    if keyword == "sni":
        return replace(server, sni=_domains([value])[0])
    raise DnsOptionError(f"{where}: unknown option type {keyword!r} or missing or unknown "
                         "parameter")


def dhcp_dns_address(kind: str, value: str | None) -> None:
    """Check a ``dhcp-option`` line trivpn acts on: ``DNS``/``DNS6`` need an IP address,
    ``DOMAIN``, ``ADAPTER_DOMAIN_SUFFIX``, ``DOMAIN-SEARCH`` a domain name; DnsOptionError."""
    if kind in _DHCP_SERVER_KINDS:
        try:
            ip_address(value or "")
        except ValueError:
            raise DnsOptionError(f"dhcp-option {kind}: {value!r} is not an IP address") from None
    elif kind in (*_DHCP_DOMAIN_KINDS, "DOMAIN-SEARCH"):
        if value is None:
            raise DnsOptionError(f"dhcp-option {kind} needs a domain")
        _domains([value])


def foreign_options(dns: DnsOptions, dhcp: Sequence[tuple[str, str | None]]) -> list[str]:
    """The ``foreign_option_N`` values (N from 1) OpenVPN 2.6 on Linux gives its scripts: the
    ``dhcp-option`` lines (config first, then pushed), where ``dns`` servers replace the
    ``DNS``/``DNS6`` lines and ``dns search-domains`` the ``DOMAIN-SEARCH`` lines, appended
    at the end (options.c, foreign_options_copy_dns())."""
    lines = [" ".join(("dhcp-option", kind, *((value,) if value is not None else ())))
             for kind, value in dhcp]
    if dns.servers:
        lines = [line for line in lines if not line.startswith("dhcp-option DNS")]
    if dns.search_domains:
        lines = [line for line in lines if not line.startswith("dhcp-option DOMAIN-SEARCH")]
    for server in dns.servers:
        lines += [f"dhcp-option {'DNS' if a.ip.version == 4 else 'DNS6'} {a.ip}"
                  for a in server.addresses]
    lines += [f"dhcp-option DOMAIN-SEARCH {d}" for d in dns.search_domains]
    return lines


@dataclass(frozen=True, slots=True)
class DnsPlan:
    """What to apply for one tunnel device.

    ``servers``: every address, best server first. ``search_domains``: names completed and
    resolved through the tunnel. ``routing_domains``: names only resolved through the tunnel
    (``"."`` = every name). ``default_route``: the link takes queries for names no link
    claims. ``dnssec``/``transport``/``sni``: the best ``dns`` server's settings.
    ``notes``: what was given and is not applied, and why.
    """

    servers: tuple[DnsAddress, ...] = ()
    search_domains: tuple[str, ...] = ()
    routing_domains: tuple[str, ...] = ()
    default_route: bool = False
    dnssec: DnsSecurity | None = None
    transport: DnsTransport | None = None
    sni: str | None = None
    source: DnsSource = "none"
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to apply (no server and no domain)."""
        return not (self.servers or self.search_domains or self.routing_domains)

    def resolv_conf(self) -> str:
        """The plan as a resolv.conf fragment (what resolvconf takes, as Debian's
        update-resolv-conf writes it): ``nameserver`` lines (no ports: resolv.conf has none)
        and one ``search`` line."""
        lines = [f"nameserver {a.ip}" for a in self.servers]
        domains = _unique([*self.search_domains, *(d for d in self.routing_domains if d != ".")])
        if domains:
            lines.append("search " + " ".join(domains))
        return "".join(line + "\n" for line in lines)

    def summary(self) -> dict[str, object]:
        """The plan for a log line or ``trivpn check``."""
        return {"servers": [str(a) for a in self.servers],
                "search_domains": list(self.search_domains),
                "routing_domains": list(self.routing_domains),
                "default_route": self.default_route, "source": self.source,
                **({"dnssec": self.dnssec} if self.dnssec else {}),
                **({"transport": self.transport} if self.transport else {}),
                **({"sni": self.sni} if self.sni else {})}


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _redirects(redirect_gateway: Sequence[str] | None) -> bool:
    """Whether redirect-gateway sends some default route into the tunnel (``!ipv4`` alone
    redirects nothing)."""
    if redirect_gateway is None:
        return False
    return "!ipv4" not in redirect_gateway or "ipv6" in redirect_gateway


def plan_dns(dns: DnsOptions, dhcp: Sequence[tuple[str, str | None]],
             redirect_gateway: Sequence[str] | None) -> DnsPlan:
    """The plan from the effective ``dns`` options, the ``dhcp-option`` lines (config file
    first, then pushed, as ``(kind, value)``) and the effective ``redirect-gateway`` flags.

    Under redirect-gateway the tunnel's servers answer every name: routing domain ``.`` and
    default route. Otherwise the link is the default route only when it names no domain
    (else only its domains go through it: split DNS).
    """
    notes: list[str] = []
    if dns.servers:
        best = dns.servers[0]
        servers = tuple(a for s in dns.servers for a in s.addresses)
        routing = list(best.resolve_domains)
        dnssec, transport, sni = best.dnssec, best.transport, best.sni
        if transport == "DoH":
            notes.append(f"dns server {best.priority} transport DoH: not supported by "
                         "systemd-resolved or resolv.conf; plain DNS is used")
            transport = None
        for other in dns.servers[1:]:
            if other.resolve_domains or other.dnssec or other.transport or other.sni:
                notes.append(f"dns server {other.priority}: only its addresses are used (a "
                             "link has one set of DNS settings; the best server's apply)")
        source: DnsSource = "dns"
    else:
        servers = tuple(DnsAddress(ip_address(v or "")) for k, v in dhcp
                        if k in _DHCP_SERVER_KINDS)
        routing, dnssec, transport, sni = [], None, None, None
        source = "dhcp-option" if servers else "none"
    search = [v or "" for k, v in dhcp if k in _DHCP_DOMAIN_KINDS]
    if dns.search_domains:
        search += dns.search_domains
    else:
        search += [v or "" for k, v in dhcp if k == "DOMAIN-SEARCH"]
    if source == "none" and search:
        source = "dhcp-option" if not dns.search_domains else "dns"
    for kind, value in dhcp:
        if kind not in (*_DHCP_SERVER_KINDS, *_DHCP_DOMAIN_KINDS, "DOMAIN-SEARCH"):
            shown = f"{kind} {value}" if value is not None else kind
            notes.append(f"dhcp-option {shown}: only for Windows DHCP (the TAP driver); "
                         "not applied on Linux")
    default_route = False
    if servers:
        if _redirects(redirect_gateway):
            routing.append(".")
            default_route = True
        else:
            default_route = not (search or routing)
    return DnsPlan(servers=servers, search_domains=_unique(search),
                   routing_domains=_unique(routing), default_route=default_route,
                   dnssec=dnssec, transport=transport, sni=sni, source=source,
                   notes=tuple(notes))
