"""PUSH_REPLY building (server) and pushed-option interpretation (client) (docs/protocol.md §8.3).

Policy for pushed options (decided here, stricter than 2.6 in one respect):

1. Options trivpn understands become typed fields of :class:`PushedOptions`. Malformed ones
   (wrong argument count, bad address, bad number) raise :class:`ProtocolError` naming the
   option. 2.6 logs such lines and ignores them; trivpn refuses, because silently running with
   half a network configuration is worse than a clear failure.
2. Compression (``comp-lzo``, ``compress``, ``comp-noadapt``) is parsed here; whether real
   compression is allowed depends on the client's ``allow-compression`` and is decided by the
   session (OpenVPN init.c do_deferred_options, check_compression_settings_valid).
3. Options that 2.6 itself refuses in a push because they are not in its pull permission mask
   (scripts and plugins, ``dev``, ``remote``, ``proto``, ``tls-auth``, keys, ``user``,
   ``management``..., :data:`NOT_PUSHABLE`) raise ``ProtocolError`` with reason
   ``option_not_pushable``. 2.6 logs ``Options error: option 'X' cannot be used in this context
   ([PUSH-OPTIONS])`` and carries on; trivpn treats such a push as a broken or hostile server.
4. The client's own rules come first (:class:`PullPolicy`, OpenVPN's ``apply_push_options``):
   each option's text, leading blanks skipped, is matched against the ``pull-filter`` rules in
   config order by prefix; the first match decides — ``accept`` keeps it, ``ignore`` drops it,
   ``reject`` fails the whole push (``ProtocolError`` reason ``pull_filter_rejected``; OpenVPN
   restarts the connection with "Offending option received from server"). Then
   ``route-nopull`` drops the options of OpenVPN's route and DHCP/DNS classes
   (:data:`ROUTE_NOPULL_OPTIONS`: routes, redirect-gateway, route-metric, block-ipv6,
   dhcp-option, dns...) but keeps ``ifconfig``, ``topology``, ``route-gateway`` and the rest.
   Dropped options are listed in :attr:`PushedOptions.filtered`. ``push-continuation`` is
   framing here and never filtered (OpenVPN would let a filter drop it too).
5. Everything else — pushable options trivpn does not act on (``route-delay``, ``sndbuf``,
   ``block-outside-dns``, ``persist-tun``, ``verb``...) and names unknown to 2.6 — is kept
   verbatim in :attr:`PushedOptions.unknown`. ``tun-ipv6`` is dropped silently, as 2.6 does.
6. Host names: like OpenVPN, the addresses of a pushed ``ifconfig``, ``route`` (network and
   gateway) and ``route-gateway`` must be dotted quads; with ``allow-pull-fqdn``
   (:attr:`PullPolicy.allow_fqdn`) a DNS name is accepted too (OpenVPN socket.c,
   ip_or_dns_addr_safe()). Such lines are kept aside in :attr:`PushedOptions.unresolved` for
   the runtime to resolve and to apply with :func:`with_resolved_names`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import AddressValueError, IPv4Address, IPv6Address, IPv6Network
from typing import Literal, cast

from trivpn.protocol.clientnat import MAX_CLIENT_NAT, NatRule
from trivpn.protocol.controlmsg import PushReply, parse_control_message
from trivpn.protocol.dns import DnsOptionError, DnsOptions, dhcp_dns_address
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.ncp import pushed_cipher_allowed
from trivpn.protocol.optionline import OptionLineError, split_option_line
from trivpn.protocol.shaper import SHAPER_MAX, SHAPER_MIN

__all__ = [
    "NOT_PUSHABLE", "PUSH_BUNDLE_SIZE", "ROUTE_NOPULL_OPTIONS", "DhcpOption", "FilteredOption",
    "Ifconfig", "Ifconfig6", "PullPolicy", "PushAccumulator", "PushedOptions", "Route",
    "RouteIPv6", "build_push_replies", "parse_pushed_options", "pushed_cipher_allowed",
    "unresolved_names", "with_resolved_names",
]

PUSH_BUNDLE_SIZE = 1024
_PUSH_RESERVE = 84  # 2.6 keeps this much room for a trailing ifconfig and push-continuation
_PUSH_REPLY = "PUSH_REPLY"
MAX_PUSHED_OPTIONS = 4096

RouteKeyword = Literal["vpn_gateway", "net_gateway", "remote_host"]
Topology = Literal["net30", "p2p", "subnet"]
CompressionStub = Literal["lzo-stub", "stub", "stub-v2", "lzo", "lzo-adaptive", "lz4", "lz4-v2"]
_ROUTE_KEYWORDS = ("vpn_gateway", "net_gateway", "remote_host")
_REDIRECT_FLAGS = frozenset({"local", "autolocal", "def1", "bypass-dhcp", "bypass-dns",
                             "block-local", "ipv6", "!ipv4"})

#: Options 2.6 knows but never accepts from a push (not in ``pull_permission_mask()``).
_NOT_PUSHABLE_NAMES = """
allow-compression allow-nonadmin allow-pull-fqdn allow-recursive-routing askpass auth
auth-gen-token auth-gen-token-secret auth-nocache auth-retry auth-user-pass
auth-user-pass-optional auth-user-pass-verify bcast-buffers bind ca capath ccd-exclusive cd cert
chroot client client-cert-not-required client-config-dir client-connect client-crresponse
client-disconnect client-to-client compat-names config connect-freq connect-freq-initial
connect-retry connect-retry-max connect-timeout connection crl-verify cryptoapicert daemon
data-ciphers data-ciphers-fallback dev dev-node dev-type dh dhcp-internal disable disable-occ
down down-pre duplicate-cn ecdh-curve engine extra-certs fast-io float
force-tls-key-material-export fragment genkey gremlin group hand-window hash-size help
http-proxy http-proxy-option http-proxy-override http-proxy-retry http-proxy-timeout
http-proxy-user-pass ifconfig-ipv6-pool ifconfig-ipv6-push ifconfig-pool ifconfig-pool-persist
ifconfig-push ifconfig-push-constraint ignore-unknown-option ip-remote-hint ipchange iproute
iroute iroute-ipv6 keepalive key key-direction keying-material-exporter learn-address link-mtu
local log log-append lport machine-readable-output management management-client
management-client-auth management-client-group management-client-user
management-external-cert management-external-key management-forget-disconnect management-hold
management-log-cache management-query-passwords management-query-proxy management-query-remote
management-signal management-up-down mark max-clients max-packet-size max-routes-per-client
memstats mktun mlock mode msg-channel mssfix mtu-disc mtu-dynamic mtu-test multihome
mute-replay-warnings nice no-name-remapping no-replay nobind ns-cert-type opt-verify passtos
pause-exit peer-fingerprint persist-local-ip persist-remote-ip pkcs11-cert-private pkcs11-id
pkcs11-id-management pkcs11-pin-cache pkcs11-private-mode pkcs11-protected-authentication
pkcs11-providers pkcs12 plugin port port-share preresolve proto proto-force pull pull-filter push
push-peer-info push-remove push-reset rdns-internal remap-usr1 remote remote-cert-eku
remote-cert-ku remote-cert-tls remote-random remote-random-hostname reneg-bytes reneg-pkts
reneg-sec replay-persist replay-window resolv-retry rmtun route-noexec route-nopull
route-pre-down route-up rport script-security secret server server-bridge server-ipv6
server-poll-timeout service setcon setenv show-adapters show-ciphers show-curves show-digests
show-engines show-gateway show-groups show-net show-pkcs11-ids show-tls show-valid-subnets
single-session socks-proxy socks-proxy-retry stale-routes-check static-challenge status
status-version suppress-timestamps syslog tcp-nodelay tcp-queue-limit test-crypto tls-auth
tls-cert-profile tls-cipher tls-ciphersuites tls-client tls-crypt tls-crypt-v2
tls-crypt-v2-verify tls-exit tls-export-cert tls-groups tls-server tls-timeout tls-verify
tls-version-max tls-version-min tmp-dir tran-window tun-mtu-extra tun-mtu-max txqueuelen udp-mtu
up up-delay up-restart use-prediction-resistance user username-as-common-name
verify-client-cert verify-hash verify-x509-name version vlan-accept vlan-pvid vlan-tagging
win-sys windows-driver writepid x509-track x509-username-field
"""
NOT_PUSHABLE = frozenset(_NOT_PUSHABLE_NAMES.split())

#: What ``route-nopull`` refuses from a push: the options 2.6 files under OPT_P_ROUTE and
#: OPT_P_DHCPDNS (options.c), which ``pull_permission_mask()`` leaves out with route-nopull.
ROUTE_NOPULL_OPTIONS = frozenset({
    "route", "route-ipv6", "route-metric", "redirect-gateway", "redirect-private",
    "block-ipv6", "client-nat", "dhcp-option", "dns", "ip-win32", "tap-sleep", "dhcp-renew",
    "dhcp-pre-release", "register-dns", "block-outside-dns",
})
_SECRET_OPTIONS = frozenset({"auth-token"})


PullFilterAction = Literal["accept", "ignore", "reject"]


@dataclass(frozen=True, slots=True)
class PullFilter:
    """``pull-filter accept|ignore|reject TEXT``: applied to every pushed option whose text
    (leading blanks skipped) starts with ``text``; the first matching filter wins."""

    action: PullFilterAction
    text: str


@dataclass(frozen=True, slots=True)
class PullPolicy:
    """The client's rules for what it takes from a push (``pull-filter``, ``route-nopull``)."""

    filters: tuple[PullFilter, ...] = ()
    route_nopull: bool = False
    allow_fqdn: bool = False  # allow-pull-fqdn: DNS names in ifconfig/route/route-gateway

    def filter_action(self, line: str) -> PullFilterAction | None:
        """The action of the first ``pull-filter`` whose text starts ``line`` (leading blanks
        skipped), or None when no filter matches."""
        text = line.lstrip()
        for rule in self.filters:
            if text.startswith(rule.text):
                return rule.action
        return None


@dataclass(frozen=True, slots=True)
class FilteredOption:
    """A pushed option the client's :class:`PullPolicy` dropped: ``by`` is ``pull-filter`` or
    ``route-nopull``; ``text`` is the option as pushed (arguments of secrets hidden)."""

    text: str
    by: Literal["pull-filter", "route-nopull"]


def _loggable(line: str) -> str:
    name = line.split(None, 1)[0] if line.split() else ""
    return f"{name} <hidden>" if name in _SECRET_OPTIONS else line


# --------------------------------------------------------------------------------------------
# Server side: building PUSH_REPLY messages


def build_push_replies(options: Sequence[str], limit: int = PUSH_BUNDLE_SIZE) -> list[str]:
    """Pack *options* into PUSH_REPLY messages the way 2.6 ``send_push_reply()`` does.

    A message is closed before an option that would bring it to ``limit - 84`` bytes or more;
    then every message but the last ends with ``,push-continuation 2`` and the last with
    ``,push-continuation 1``. No options → one bare ``PUSH_REPLY``. Raises ProtocolError for an
    option that cannot fit or contains a comma/NUL.
    """
    safe_cap = limit - _PUSH_RESERVE
    messages: list[str] = []
    current = _PUSH_REPLY
    for option in options:
        if "," in option or "\x00" in option or not option.strip():
            raise ProtocolError(f"option {option[:40]!r} is empty or contains ',' or NUL",
                                "push", reason="bad_argument")
        if len(current) + len(option) >= safe_cap and current != _PUSH_REPLY:
            messages.append(current + ",push-continuation 2")
            current = _PUSH_REPLY
        if len(current) + len(option) >= safe_cap:
            raise ProtocolError(f"option of {len(option)} bytes is too long to push", "push",
                                reason="too_long")
        current += "," + option
    if messages:
        current += ",push-continuation 1"
    messages.append(current)
    return messages


# --------------------------------------------------------------------------------------------
# Client side: typed pushed options


@dataclass(frozen=True, slots=True)
class Ifconfig:
    """``ifconfig LOCAL REMOTE_OR_NETMASK`` (net30/p2p: remote peer; subnet: netmask)."""

    local: IPv4Address
    remote_or_netmask: IPv4Address


@dataclass(frozen=True, slots=True)
class Ifconfig6:
    """``ifconfig-ipv6 ADDRESS/BITS REMOTE``."""

    address: IPv6Address
    prefixlen: int
    remote: IPv6Address


@dataclass(frozen=True, slots=True)
class Route:
    """``route NETWORK [NETMASK [GATEWAY [METRIC]]]``; ``default`` or absent → None
    (netmask then means 255.255.255.255, gateway the route-gateway/vpn_gateway)."""

    network: IPv4Address | RouteKeyword
    netmask: IPv4Address | None = None
    gateway: IPv4Address | RouteKeyword | None = None
    metric: int | None = None


@dataclass(frozen=True, slots=True)
class RouteIPv6:
    """``route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]``."""

    network: IPv6Network
    gateway: IPv6Address | None = None
    metric: int | None = None


@dataclass(frozen=True, slots=True)
class DhcpOption:
    """``dhcp-option TYPE [VALUE]`` (``DNS 198.18.0.1``, ``DOMAIN example.org``...)."""

    kind: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class PushedOptions:
    """Everything a server pushed, after the last PUSH_REPLY part. The auth-token is hidden
    from ``repr``. Scalars: the last occurrence wins; lists keep push order."""

    ifconfig: Ifconfig | None = None
    ifconfig_ipv6: Ifconfig6 | None = None
    topology: Topology | None = None
    routes: tuple[Route, ...] = ()
    route_ipv6: tuple[RouteIPv6, ...] = ()
    route_gateway: IPv4Address | Literal["dhcp"] | None = None
    redirect_gateway: tuple[str, ...] | None = None
    dhcp_options: tuple[DhcpOption, ...] = ()
    dns: DnsOptions = field(default_factory=DnsOptions)
    ping: int | None = None
    ping_restart: int | None = None
    ping_exit: int | None = None
    peer_id: int | None = None
    cipher: str | None = None
    protocol_flags: tuple[str, ...] = ()
    key_derivation: str | None = None
    tun_mtu: int | None = None
    auth_token: str | None = field(default=None, repr=False)
    auth_token_user: str | None = None
    explicit_exit_notify: int | None = None
    compression: CompressionStub | None = None
    comp_noadapt: bool = False
    inactive: int | None = None
    inactive_bytes: int | None = None
    session_timeout: int | None = None
    route_metric: int | None = None
    block_ipv6: bool = False
    echo: tuple[str, ...] = ()
    setenv_safe: tuple[tuple[str, str], ...] = ()
    unknown: tuple[str, ...] = ()
    filtered: tuple[FilteredOption, ...] = ()
    unresolved: tuple[str, ...] = ()  # allow-pull-fqdn: lines naming hosts (see the module)
    client_nat: tuple[NatRule, ...] = ()  # appended to the client's own client-nat rules
    shaper: int | None = None  # replaces the client's own shaper N

    @property
    def has_timer_options(self) -> bool:
        """Whether the push set a timer (OpenVPN's OPT_P_TIMER class), which restarts them."""
        return any(v is not None for v in (self.ping, self.ping_restart, self.ping_exit,
                                           self.inactive, self.session_timeout))


_MAX_PEER_ID = 0xFFFFFF
_INT_RE = re.compile(r"[0-9]{1,10}\Z")


class _Builder:
    """Mutable scratch state while applying options; frozen into PushedOptions at the end."""

    def __init__(self) -> None:
        self.scalars: dict[str, object] = {}
        self.routes: list[Route] = []
        self.route_ipv6: list[RouteIPv6] = []
        self.dhcp: list[DhcpOption] = []
        self.dns = DnsOptions()
        self.echo: list[str] = []
        self.setenv: list[tuple[str, str]] = []
        self.unknown: list[str] = []
        self.filtered: list[FilteredOption] = []
        self.allow_fqdn = False
        self.unresolved: list[str] = []
        self.client_nat: list[NatRule] = []

    def freeze(self) -> PushedOptions:
        s = self.scalars
        return PushedOptions(
            ifconfig=cast("Ifconfig | None", s.get("ifconfig")),
            ifconfig_ipv6=cast("Ifconfig6 | None", s.get("ifconfig_ipv6")),
            topology=cast("Topology | None", s.get("topology")),
            routes=tuple(self.routes),
            route_ipv6=tuple(self.route_ipv6),
            route_gateway=cast("IPv4Address | Literal['dhcp'] | None", s.get("route_gateway")),
            redirect_gateway=cast("tuple[str, ...] | None", s.get("redirect_gateway")),
            dhcp_options=tuple(self.dhcp),
            dns=self.dns,
            ping=cast("int | None", s.get("ping")),
            ping_restart=cast("int | None", s.get("ping_restart")),
            ping_exit=cast("int | None", s.get("ping_exit")),
            peer_id=cast("int | None", s.get("peer_id")),
            cipher=cast("str | None", s.get("cipher")),
            protocol_flags=cast("tuple[str, ...]", s.get("protocol_flags", ())),
            key_derivation=cast("str | None", s.get("key_derivation")),
            tun_mtu=cast("int | None", s.get("tun_mtu")),
            auth_token=cast("str | None", s.get("auth_token")),
            auth_token_user=cast("str | None", s.get("auth_token_user")),
            explicit_exit_notify=cast("int | None", s.get("explicit_exit_notify")),
            compression=cast("CompressionStub | None", s.get("compression")),
            comp_noadapt=bool(s.get("comp_noadapt", False)),
            inactive=cast("int | None", s.get("inactive")),
            inactive_bytes=cast("int | None", s.get("inactive_bytes")),
            session_timeout=cast("int | None", s.get("session_timeout")),
            route_metric=cast("int | None", s.get("route_metric")),
            block_ipv6=bool(s.get("block_ipv6", False)),
            echo=tuple(self.echo),
            setenv_safe=tuple(self.setenv),
            unknown=tuple(self.unknown),
            filtered=tuple(self.filtered),
            unresolved=tuple(self.unresolved),
            client_nat=tuple(self.client_nat),
            shaper=cast("int | None", s.get("shaper")),
        )


def _bad(name: str, what: str) -> ProtocolError:
    return ProtocolError(what, f"pushed option '{name}'", reason="bad_push_option")


def _nargs(name: str, args: list[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        want = str(low) if low == high else f"{low}..{high}"
        raise _bad(name, f"expects {want} argument(s), got {len(args)}")


def _uint(name: str, text: str, high: int = 0x7FFFFFFF) -> int:
    if not _INT_RE.match(text):
        raise _bad(name, f"{text!r} is not a non-negative integer")
    value = int(text)
    if value > high:
        raise _bad(name, f"{value} is larger than {high}")
    return value


def _ipv4(name: str, text: str) -> IPv4Address:
    try:
        return IPv4Address(text)
    except AddressValueError:
        raise _bad(name, f"{text!r} is not an IPv4 address") from None


def _ipv6(name: str, text: str) -> IPv6Address:
    try:
        return IPv6Address(text)
    except AddressValueError:
        raise _bad(name, f"{text!r} is not an IPv6 address") from None


def _route_target(name: str, text: str) -> IPv4Address | RouteKeyword:
    if text in _ROUTE_KEYWORDS:
        return cast(RouteKeyword, text)
    return _ipv4(name, text)


_DNS_NAME_RE = re.compile(r"[A-Za-z0-9.-]{1,255}\Z")
#: The arguments that may name a host with allow-pull-fqdn (OpenVPN options.c, add_option():
#: ip_or_dns_addr_safe(p[N], options->allow_pull_fqdn)), by option.
_FQDN_ARGS = {"ifconfig": (0, 1), "route": (0, 2), "route-gateway": (0,)}


def _is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except AddressValueError:
        return False
    return True


def _names_in(name: str, args: list[str]) -> list[str]:
    """The host names among ``args`` of a pushed ``name`` (allow-pull-fqdn): every argument
    OpenVPN resolves that is neither a dotted quad nor a keyword but a safe DNS name
    (letters, digits, '-' and '.', at most 255: OpenVPN socket.c, dns_addr_safe())."""
    return [args[i] for i in _FQDN_ARGS.get(name, ()) if i < len(args)
            and args[i] not in _ROUTE_KEYWORDS and args[i] not in ("default", "dhcp")
            and not _is_ipv4(args[i]) and _DNS_NAME_RE.match(args[i])]


def _apply(b: _Builder, name: str, args: list[str], line: str) -> None:  # noqa: PLR0912, PLR0915 - a flat dispatch over pushable options (to become a table)
    s = b.scalars
    names = _names_in(name, args) if name in _FQDN_ARGS else ()
    if names and b.allow_fqdn:
        b.unresolved.append(line)
        return
    if names:  # OpenVPN: "route parameter network/IP '...' must be a valid address"
        raise _bad(name, f"{names[0]!r} is not an IPv4 address (a host name needs "
                         "allow-pull-fqdn)")
    if name == "ifconfig":
        _nargs(name, args, 2, 2)
        s["ifconfig"] = Ifconfig(_ipv4(name, args[0]), _ipv4(name, args[1]))
    elif name == "ifconfig-ipv6":
        _nargs(name, args, 2, 2)
        addr, slash, bits = args[0].partition("/")
        prefixlen = _uint(name, bits, 128) if slash else 128
        if not 64 <= prefixlen <= 124:
            raise _bad(name, f"/netbits must be between 64 and 124, not /{prefixlen}")
        s["ifconfig_ipv6"] = Ifconfig6(_ipv6(name, addr), prefixlen, _ipv6(name, args[1]))
    elif name == "topology":
        _nargs(name, args, 1, 1)
        if args[0] not in ("net30", "p2p", "subnet"):
            raise _bad(name, f"unknown topology {args[0]!r}")
        s["topology"] = args[0]
    elif name == "route":
        _nargs(name, args, 1, 4)
        network = _route_target(name, args[0])
        netmask = None
        if len(args) > 1 and args[1] != "default":
            netmask = _ipv4(name, args[1])
        gateway = None
        if len(args) > 2 and args[2] != "default":
            gateway = _route_target(name, args[2])
        metric = None
        if len(args) > 3 and args[3] != "default":
            metric = _uint(name, args[3], 255)
        b.routes.append(Route(network, netmask, gateway, metric))
    elif name == "route-ipv6":
        _nargs(name, args, 1, 3)
        try:
            network6 = IPv6Network(args[0], strict=False)
        except ValueError:
            raise _bad(name, f"{args[0]!r} is not an IPv6 network") from None
        gw6 = _ipv6(name, args[1]) if len(args) > 1 and args[1] != "default" else None
        metric = _uint(name, args[2], 255) if len(args) > 2 and args[2] != "default" else None
        b.route_ipv6.append(RouteIPv6(network6, gw6, metric))
    elif name == "route-gateway":
        _nargs(name, args, 1, 1)
        s["route_gateway"] = "dhcp" if args[0] == "dhcp" else _ipv4(name, args[0])
    elif name == "redirect-gateway":
        for flag in args:
            if flag not in _REDIRECT_FLAGS:
                raise _bad(name, f"unknown flag {flag!r}")
        s["redirect_gateway"] = tuple(args)
    elif name == "dhcp-option":
        _nargs(name, args, 1, 2)
        option = DhcpOption(args[0], args[1] if len(args) > 1 else None)
        try:
            dhcp_dns_address(option.kind, option.value)
        except DnsOptionError as exc:
            raise _bad(name, str(exc)) from None
        b.dhcp.append(option)
    elif name == "dns":
        try:
            b.dns = b.dns.with_line(args, pulled=True)
        except DnsOptionError as exc:
            raise _bad(name, str(exc)) from None
    elif name in ("ping", "ping-restart", "ping-exit", "session-timeout", "route-metric"):
        _nargs(name, args, 1, 1)
        s[name.replace("-", "_")] = _uint(name, args[0], 255 if name == "route-metric"
                                          else 0x7FFFFFFF)
        if name in ("ping-restart", "ping-exit"):  # one timer in OpenVPN: the last one wins
            s.pop("ping_exit" if name == "ping-restart" else "ping_restart", None)
    elif name == "inactive":
        _nargs(name, args, 1, 2)
        s["inactive"] = _uint(name, args[0])
        s["inactive_bytes"] = _uint(name, args[1], 2**63 - 1) if len(args) > 1 else None
    elif name == "peer-id":
        _nargs(name, args, 1, 1)
        s["peer_id"] = _uint(name, args[0], _MAX_PEER_ID)
    elif name == "cipher":
        _nargs(name, args, 1, 1)
        s["cipher"] = args[0]
    elif name == "protocol-flags":
        if not args:
            raise _bad(name, "expects at least one flag")
        s["protocol_flags"] = tuple(args)
    elif name == "key-derivation":
        _nargs(name, args, 1, 1)
        if args[0] != "tls-ekm":
            raise _bad(name, f"unknown key derivation {args[0]!r}")
        s["key_derivation"] = args[0]
    elif name == "tun-mtu":
        _nargs(name, args, 1, 2)  # 2.6 accepts an optional second (occ) value
        s["tun_mtu"] = _uint(name, args[0], 65535)
    elif name == "auth-token":
        _nargs(name, args, 1, 1)
        s["auth_token"] = args[0]
    elif name == "auth-token-user":
        _nargs(name, args, 1, 1)
        s["auth_token_user"] = args[0]
    elif name == "explicit-exit-notify":
        _nargs(name, args, 0, 1)
        s["explicit_exit_notify"] = _uint(name, args[0]) if args else 1
    elif name == "comp-lzo":
        _nargs(name, args, 0, 1)
        if args == ["no"]:
            s["compression"] = "lzo-stub"
        elif args == ["yes"]:
            s["compression"] = "lzo"
        elif not args or args[0] == "adaptive":
            s["compression"] = "lzo-adaptive"
        else:
            raise _bad(name, f"bad argument {args[0]!r}")
    elif name == "compress":
        _nargs(name, args, 0, 1)
        alg = args[0] if args else "stub"
        if alg in ("stub", "stub-v2", "lzo", "lz4", "lz4-v2"):
            s["compression"] = alg
        else:
            raise _bad(name, f"bad algorithm {alg!r}")
    elif name == "comp-noadapt":
        _nargs(name, args, 0, 0)
        s["comp_noadapt"] = True
    elif name == "block-ipv6":
        _nargs(name, args, 0, 0)
        s["block_ipv6"] = True
    elif name == "echo":
        b.echo.append(" ".join(args))
    elif name == "setenv-safe":
        _nargs(name, args, 1, 2)
        b.setenv.append((args[0], args[1] if len(args) > 1 else ""))
    elif name == "shaper":  # OpenVPN options.c: atoi(), 100..100000000
        _nargs(name, args, 1, 1)
        found = re.match(r"[+-]?[0-9]+", args[0])
        rate = int(found.group()) if found else 0
        if not SHAPER_MIN <= rate <= SHAPER_MAX:
            raise _bad(name, f"Bad shaper value, must be between {SHAPER_MIN} and {SHAPER_MAX}")
        s["shaper"] = rate
    elif name == "client-nat":
        _nargs(name, args, 4, 4)
        if args[0] not in ("snat", "dnat"):
            raise _bad(name, "type must be 'snat' or 'dnat'")
        nat = [int(_ipv4(name, a)) for a in args[1:]]
        if len(b.client_nat) < MAX_CLIENT_NAT:
            b.client_nat.append(NatRule(cast("Literal['snat', 'dnat']", args[0]), nat[0],
                                        nat[1], nat[2]))
    elif name == "tun-ipv6":
        pass  # pushed by 2.6 servers with server-ipv6; ignored by 2.6 clients too
    elif name in NOT_PUSHABLE:
        raise ProtocolError(f"option '{name}' cannot be pushed", f"pushed option '{name}'",
                            reason="option_not_pushable")
    else:
        b.unknown.append(line)


def _apply_all(b: _Builder, options: Iterable[str], policy: PullPolicy) -> None:
    for line in options:
        action = policy.filter_action(line) if policy.filters else None
        if action == "reject":
            shown = _loggable(line.strip())
            raise ProtocolError(f"pushed option rejected by pull-filter: '{shown}'",
                                f"pushed option {shown[:40]!r}", reason="pull_filter_rejected")
        if action == "ignore":
            b.filtered.append(FilteredOption(_loggable(line.strip()), "pull-filter"))
            continue
        try:
            tokens = split_option_line(line)
        except OptionLineError as exc:
            raise ProtocolError(f"cannot tokenize: {exc}", f"pushed option {line[:40]!r}",
                                reason="bad_push_option") from None
        if not tokens:
            continue
        if policy.route_nopull and tokens[0] in ROUTE_NOPULL_OPTIONS:
            b.filtered.append(FilteredOption(line.strip(), "route-nopull"))
            continue
        _apply(b, tokens[0], tokens[1:], line.strip())


def parse_pushed_options(options: Iterable[str],
                         policy: PullPolicy | None = None) -> PushedOptions:
    """Interpret option strings (without ``push-continuation``) under the module's policy
    and the client's ``policy`` (pull-filter, route-nopull)."""
    b = _Builder()
    b.allow_fqdn = policy.allow_fqdn if policy is not None else False
    _apply_all(b, options, policy or PullPolicy())
    try:
        b.dns.check()
    except DnsOptionError as exc:
        raise _bad("dns", str(exc)) from None
    return b.freeze()


def unresolved_names(pushed: PushedOptions) -> tuple[str, ...]:
    """The host names in ``pushed.unresolved``, each once, in push order."""
    names: dict[str, None] = {}
    for line in pushed.unresolved:
        tokens = split_option_line(line)
        names.update(dict.fromkeys(_names_in(tokens[0], tokens[1:])))
    return tuple(names)


def with_resolved_names(pushed: PushedOptions, addresses: Mapping[str, IPv4Address]
                        ) -> tuple[PushedOptions, tuple[str, ...]]:
    """``pushed`` with its :attr:`~PushedOptions.unresolved` lines applied, each name replaced
    by its address in ``addresses``, and the lines left out because a name did not resolve.

    OpenVPN resolves these names when it applies them: a route whose name does not resolve is
    skipped with "failed to parse/resolve route" (route.c, init_route()), while an unresolvable
    ifconfig or route-gateway address is an error (ProtocolError here)."""
    b = _Builder()
    skipped: list[str] = []
    for line in pushed.unresolved:
        tokens = split_option_line(line)
        name, args = tokens[0], tokens[1:]
        missing = [n for n in _names_in(name, args) if n not in addresses]
        if missing:
            if name == "route":
                skipped.append(line)
                continue
            raise _bad(name, f"cannot resolve {missing[0]!r}")
        args = [str(addresses[a]) if i in _FQDN_ARGS[name] and a in addresses else a
                for i, a in enumerate(args)]
        _apply(b, name, args, " ".join([name, *args]))
    got = b.freeze()
    merged = replace(
        pushed, unresolved=(),
        routes=pushed.routes + got.routes,
        ifconfig=got.ifconfig if got.ifconfig is not None else pushed.ifconfig,
        route_gateway=(got.route_gateway if got.route_gateway is not None
                       else pushed.route_gateway))
    return merged, tuple(skipped)


class PushAccumulator:
    """Collect PUSH_REPLY parts until the last one (continuation 1 or absent).

    ``feed()`` returns None while more parts are expected and the complete
    :class:`PushedOptions` on the last part; the accumulator then starts over.
    """

    def __init__(self, max_options: int = MAX_PUSHED_OPTIONS,
                 policy: PullPolicy | None = None) -> None:
        self._options: list[str] = []
        self._parts = 0
        self._max_options = max_options
        self._policy = policy or PullPolicy()

    @property
    def parts(self) -> int:
        """PUSH_REPLY parts received since the last complete push."""
        return self._parts

    def reset(self) -> None:
        self._options.clear()
        self._parts = 0

    def feed(self, message: PushReply | str) -> PushedOptions | None:
        if isinstance(message, str):
            parsed = parse_control_message(message)
            if not isinstance(parsed, PushReply):
                raise ProtocolError("not a PUSH_REPLY", "push", reason="bad_push")
            message = parsed
        self._parts += 1
        self._options.extend(message.options)
        if len(self._options) > self._max_options:
            self.reset()
            raise ProtocolError(f"more than {self._max_options} pushed options", "push",
                                reason="too_long")
        if message.continuation == 2:
            return None
        options = list(self._options)
        self.reset()
        return parse_pushed_options(options, self._policy)
