"""The directive table: for every directive trivpn accepts, its argument counts and a handler.

A handler receives the parse state and one directive and returns the updated ``Options``; it
may also note things in the state that are only resolved once the whole file is read (``proto
tcp``, remotes without a port, the role directives). Directives that OpenVPN knows but trivpn
does not implement are listed in ``UNSUPPORTED`` and always fail loudly.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import ExtensionOID

from trivpn.config import connection as conn
from trivpn.config import serversockets
from trivpn.config import values as v
from trivpn.config.compat import need_compatibility_before, parse_compat_version
from trivpn.config.connection import PendingConnection
from trivpn.config.dns import dhcp_option_directive, dns_directive
from trivpn.config.options import (
    CompressionFraming,
    ConfigWarning,
    ConnectFreq,
    ConnectRetry,
    DevType,
    Family,
    FileSource,
    HttpProxy,
    Ifconfig,
    Ifconfig6,
    IfconfigPool,
    Keepalive,
    Management,
    Mssfix,
    Options,
    PeriodicFile,
    ReplayWindow,
    Role,
    Route,
    Route6,
    ServerHelper,
    StaticChallenge,
    TlsVersion,
    Topology,
    VerifyX509Name,
    X509NameType,
    X509Track,
)
from trivpn.config.reader import Directive, resolve
from trivpn.protocol.clientnat import MAX_CLIENT_NAT, NatRule
from trivpn.protocol.push import PullFilter, PullFilterAction
from trivpn.protocol.shaper import SHAPER_MAX, SHAPER_MIN
from trivpn.protocol.tls import KU_REQUIRED, attribute_oid, username_field_extension

RawProto = Literal["udp", "tcp", "tcp-server", "tcp-client"]


@dataclass(slots=True)
class PendingRemote:
    host: str
    port: int | None
    proto: RawProto | None
    family: Family | None
    directive: Directive


@dataclass(slots=True)
class ParseState:
    """Mutable, per-parse accumulator (never shared between parses)."""

    opts: Options
    warnings: list[ConfigWarning] = field(default_factory=list)
    first_seen: dict[str, Directive] = field(default_factory=dict)
    last_seen: dict[str, Directive] = field(default_factory=dict)
    last_position: dict[str, int] = field(default_factory=dict)
    applied: int = 0
    raw_proto: RawProto = "udp"
    remotes: list[PendingRemote] = field(default_factory=list)
    mode_server: bool = False
    forward_compatible: bool = False
    lenient: bool = False  # doctor: unsupported directives warn instead of failing
    current: Directive | None = None  # the directive being applied (for its base directory)
    # --- connection handling and proxies ---
    connections: list[PendingConnection] = field(default_factory=list)  # <connection> blocks
    in_connection: bool = False  # parsing the inside of a <connection> block

    def warn(self, d: Directive, message: str) -> None:
        self.warnings.append(ConfigWarning(d.path, d.line, message))

    def base_dir(self, d: Directive | None = None) -> Path:
        """Where a relative file name in ``d`` (default: the directive being applied)
        resolves: its own base directory (command-line form) or the config's."""
        d = d if d is not None else self.current
        if d is not None and d.base_dir is not None:
            return d.base_dir
        return self.opts.base_dir

    def file(self, d: Directive) -> FileSource:
        if d.inline is not None:
            return FileSource(d.name, d.path, d.line, None, d.inline)
        return FileSource(d.name, d.path, d.line, resolve(self.base_dir(d), d.args[0]))

    def path(self, text: str) -> Path:
        return resolve(self.base_dir(), text)


Handler = Callable[[ParseState, Directive], Options]


@dataclass(frozen=True, slots=True)
class Spec:
    """How one accepted directive is parsed.

    Every accepted directive is applied. The only exception is a directive that OpenVPN on
    Linux also does nothing with: it carries ``inert``, the written reason why accepting it and
    doing nothing is what OpenVPN does (or why it is fine for trivpn). Every other directive
    has a behavioural test tagged ``@pytest.mark.directive(name)``;
    tests/config/test_directive_coverage.py enforces both.
    """

    min_args: int
    max_args: int | None
    handler: Handler
    inline: bool = False  # may be written as an inline <name>…</name> block
    inert: str | None = None  # why doing nothing matches OpenVPN on Linux (see above)


# --- shared value maps -------------------------------------------------------------------------

ROLES: Mapping[str, Role] = {"server": "server", "client": "client"}
DEV_TYPES: Mapping[str, DevType] = {"tun": "tun", "tap": "tap"}
TOPOLOGIES: Mapping[str, Topology] = {"net30": "net30", "subnet": "subnet", "p2p": "p2p"}
PROTOS: Mapping[str, tuple[RawProto, Family | None]] = {
    "udp": ("udp", None), "udp4": ("udp", 4), "udp6": ("udp", 6),
    "tcp": ("tcp", None), "tcp4": ("tcp", 4), "tcp6": ("tcp", 6),
    "tcp-server": ("tcp-server", None), "tcp4-server": ("tcp-server", 4),
    "tcp6-server": ("tcp-server", 6),
    "tcp-client": ("tcp-client", None), "tcp4-client": ("tcp-client", 4),
    "tcp6-client": ("tcp-client", 6),
}
X509_TYPES: Mapping[str, X509NameType] = {
    "subject": "subject", "name": "name", "name-prefix": "name-prefix"}
KEY_DIRECTIONS: Mapping[str, int] = {"0": 0, "1": 1}
REDIRECT_FLAGS = ("local", "autolocal", "def1", "bypass-dhcp", "bypass-dns", "block-local",
                  "ipv6", "!ipv4")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


# --- role ------------------------------------------------------------------------------------

def _client(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, pull=True)


def _server(st: ParseState, d: Directive) -> Options:
    if len(d.args) == 3 and d.args[2] != "nopool":
        raise v.fail(d, f"'server' expects 'nopool' as third argument, got '{d.args[2]}'")
    net = v.ipv4(d, 0)
    mask = v.netmask(d, 1)
    network = ipaddress.IPv4Network(f"{net}/{mask}", strict=False)
    if network.network_address != net:
        raise v.fail(d, f"'server' network {net} is not the first address of a {mask} subnet "
                        f"(did you mean {network.network_address}?)")
    return replace(st.opts, server=ServerHelper(network, len(d.args) == 3, d.line))


def _mode(st: ParseState, d: Directive) -> Options:
    st.mode_server = v.choice(d, 0, {"p2p": False, "server": True})
    return st.opts


def _flag(st: ParseState, d: Directive) -> Options:
    return FLAGS[d.name](st.opts)


# Directives without arguments that switch one thing on (or, for a few, do nothing in trivpn).
FLAGS: Mapping[str, Callable[[Options], Options]] = {
    "pull": lambda o: replace(o, pull=True),
    "tls-client": lambda o: o,  # role directives are resolved by the parser
    "tls-server": lambda o: o,
    "persist-key": lambda o: replace(o, persist_key=True),
    "persist-tun": lambda o: replace(o, persist_tun=True),
    "route-nopull": lambda o: replace(o, route_nopull=True),
    "nobind": lambda o: replace(o, nobind=True),
    "bind": lambda o: replace(o, nobind=False),
    "remote-random": lambda o: replace(o, remote_random=True),
    # float: a client accepts its server from a new address (client.py); a server follows
    # its clients' new addresses whether or not it is set, as OpenVPN's server does
    "float": lambda o: replace(o, float_=True),
    "fast-io": lambda o: replace(o, fast_io=True),
    "tcp-nodelay": lambda o: replace(o, tcp_nodelay=True),
    "client-to-client": lambda o: replace(o, client_to_client=True),
    "duplicate-cn": lambda o: replace(o, duplicate_cn=True),
    "mute-replay-warnings": lambda o: replace(o, mute_replay_warnings=True),
    "auth-nocache": lambda o: replace(o, auth_nocache=True),
    "ping-timer-rem": lambda o: replace(o, ping_timer_rem=True),
    "push-peer-info": lambda o: replace(o, push_peer_info=True),
    "disable-dco": lambda o: o,  # trivpn never uses data-channel offload
}


# --- device ----------------------------------------------------------------------------------

def _dev(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, dev=d.args[0])  # "null": no device (Options.dev_null)


def _dev_type(st: ParseState, d: Directive) -> Options:
    if d.args[0] == "null":
        raise v.fail(d, "'dev-type null' is not supported by trivpn yet")
    return replace(st.opts, dev_type=v.choice(d, 0, DEV_TYPES))


def _mssfix(st: ParseState, d: Directive) -> Options:
    if not d.args:
        return replace(st.opts, mssfix=Mssfix())
    size = v.integer(d, 0, 0, 65535)
    flag = v.choice(d, 1, {"mtu": "mtu", "fixed": "fixed"}) if len(d.args) == 2 else ""
    return replace(st.opts, mssfix=Mssfix(size, mtu=flag == "mtu", fixed=flag == "fixed"))


def _ifconfig(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, ifconfig=Ifconfig(v.ipv4(d, 0), v.ipv4(d, 1)))


# --- transport -------------------------------------------------------------------------------

def _proto(st: ParseState, d: Directive) -> Options:
    st.raw_proto, family = v.choice(d, 0, PROTOS)
    return replace(st.opts, family=family)


def _port(st: ParseState, d: Directive) -> Options:
    p = v.port(d, 0)
    return replace(st.opts, port=p, lport=p, rport=p)


def _remote(st: ParseState, d: Directive) -> Options:
    port = v.port(d, 1) if len(d.args) >= 2 else None
    proto: RawProto | None = None
    family: Family | None = None
    if len(d.args) == 3:
        proto, family = v.choice(d, 2, PROTOS)
    st.remotes.append(PendingRemote(d.args[0], port, proto, family, d))
    return st.opts


def _resolv_retry(st: ParseState, d: Directive) -> Options:
    if d.args[0] == "infinite":
        return replace(st.opts, resolv_retry=None)
    return replace(st.opts, resolv_retry=v.integer(d, 0, 0))


def _connect_retry(st: ParseState, d: Directive) -> Options:
    secs = v.integer(d, 0, 0)
    max_secs = v.integer(d, 1, 0) if len(d.args) == 2 else 300
    return replace(st.opts, connect_retry=ConnectRetry(secs, max(secs, max_secs)))


# --- certificates and keys -------------------------------------------------------------------

def _dh(st: ParseState, d: Directive) -> Options:
    if d.inline is None and d.args[0] == "none":
        return replace(st.opts, dh="none")
    return replace(st.opts, dh=st.file(d))


def _crl_verify(st: ParseState, d: Directive) -> Options:
    if len(d.args) == 2:
        if d.args[1] != "dir":
            raise v.fail(d, f"'crl-verify' expects 'dir' as second argument, "
                            f"got '{d.args[1]}'")
        if d.inline is not None:
            raise v.fail(d, "'crl-verify ... dir' names a directory; it cannot be inline")
        return replace(st.opts, crl_verify=None, crl_verify_dir=st.path(d.args[0]))
    return replace(st.opts, crl_verify=st.file(d), crl_verify_dir=None)


def _x509_username_field(st: ParseState, d: Directive) -> Options:
    fields = []
    for arg in d.args:
        name = arg
        if arg.startswith("ext:"):
            if username_field_extension(arg[4:]) is None:
                raise v.fail(d, f"'x509-username-field {arg}': only ext:subjectAltName and "
                                "ext:issuerAltName are supported")
        elif arg != "serialNumber":
            if not any(c.isupper() for c in arg):
                name = arg.upper()
                st.warn(d, f"'x509-username-field {arg}' is read as '{name}' (all-lowercase "
                           "names are upper-cased); write it that way")
            if attribute_oid(name) is None:
                raise v.fail(d, f"'x509-username-field {name}': unknown X.509 attribute name "
                                "(use a short name such as CN, OU, emailAddress, or an OID)")
        fields.append(name)
    return replace(st.opts, x509_username_field=tuple(fields))


def _ecdh_curve(st: ParseState, d: Directive) -> Options:
    st.warn(d, "'ecdh-curve' has no effect with OpenSSL 3 (default groups are used); "
               "use 'tls-groups' to choose groups")
    return replace(st.opts, ecdh_curve=d.args[0])


def _tls_auth(st: ParseState, d: Directive) -> Options:
    opts = replace(st.opts, tls_auth=st.file(d))
    if d.inline is None and len(d.args) == 2:
        opts = replace(opts, key_direction=v.choice(d, 1, KEY_DIRECTIONS))
    return opts


def _secret(st: ParseState, d: Directive) -> Options:
    """``secret FILE [direction]``: static-key mode; the direction is the same setting as
    'key-direction' (OpenVPN options.c, add_option(): options->key_direction, shared with
    tls-auth)."""
    opts = replace(st.opts, secret=st.file(d))
    if d.inline is None and len(d.args) == 2:
        opts = replace(opts, key_direction=v.choice(d, 1, KEY_DIRECTIONS))
    return opts


def _link_mtu(st: ParseState, d: Directive) -> Options:
    """``link-mtu N`` / ``udp-mtu N``: the same setting in OpenVPN 2.6 (options.c,
    add_option(): both set ce.link_mtu); the tun MTU is derived at the end of parsing."""
    return replace(st.opts, link_mtu=v.integer(d, 0, 1))


def _compat_mode(st: ParseState, d: Directive) -> Options:
    """``compat-mode X.Y.Z`` (OpenVPN options.c, add_option()); applied in
    trivpn/config/compat.py once the whole config is read."""
    version = parse_compat_version(d.args[0])
    if version is None:
        raise v.fail(d, f"cannot parse version number for --compat-mode: {d.args[0]}")
    return replace(st.opts, compat_mode=version)


def _remote_cert_ku(st: ParseState, d: Directive) -> Options:
    masks = []
    for text in d.args:
        try:
            masks.append(int(text, 16))
        except ValueError:
            raise v.fail(d, f"'remote-cert-ku' expects hex key-usage values such as a0, "
                            f"got '{text}'") from None
        if not 0 <= masks[-1] <= 0xFFFFFFFF:
            raise v.fail(d, f"'remote-cert-ku' value '{text}' is out of range")
    if not masks:
        masks = [KU_REQUIRED]
    # Like OpenVPN, a later remote-cert-ku overwrites the list from its start.
    old = st.opts.remote_cert_ku or ()
    return replace(st.opts, remote_cert_ku=tuple(masks) + old[len(masks):])


def _remote_cert_tls(st: ParseState, d: Directive) -> Options:
    # remote-cert-tls sets the key usage to "required" and the EKU to the TLS purpose: an
    # earlier remote-cert-eku is replaced, a later one replaces it.
    old = st.opts.remote_cert_ku or ()
    return replace(st.opts, remote_cert_tls=v.choice(d, 0, ROLES), remote_cert_eku=None,
                   remote_cert_ku=(KU_REQUIRED, *old[1:]))


def _ns_cert_type(st: ParseState, d: Directive) -> Options:
    st.warn(d, "'ns-cert-type' is deprecated (Netscape certificate types); "
               "use 'remote-cert-tls' instead")
    return replace(st.opts, ns_cert_type=v.choice(d, 0, ROLES))


def _verify_x509_name(st: ParseState, d: Directive) -> Options:
    kind = v.choice(d, 1, X509_TYPES) if len(d.args) == 2 else "subject"
    return replace(st.opts, verify_x509_name=VerifyX509Name(d.args[0], kind))


def _tls_version_min(st: ParseState, d: Directive) -> Options:
    version = v.choice(d, 0, {t: t for t in TLS_VERSIONS})
    if len(d.args) == 2 and d.args[1] != "or-highest":
        raise v.fail(d, f"'tls-version-min' expects 'or-highest' as second argument, "
                        f"got '{d.args[1]}'")
    if version in ("1.0", "1.1"):
        st.warn(d, f"'tls-version-min {version}' allows obsolete TLS versions; use 1.2")
    return replace(st.opts, tls_version_min=TlsVersion(version, len(d.args) == 2))


def _auth_user_pass(st: ParseState, d: Directive) -> Options:
    if d.inline is None and not d.args:
        return replace(st.opts, auth_user_pass="prompt")
    return replace(st.opts, auth_user_pass=st.file(d))


def _static_challenge(st: ParseState, d: Directive) -> Options:
    """``static-challenge TEXT ECHO``: OpenVPN echoes the response when ``atoi(ECHO)`` is not
    zero (options.c, add_option). 2.6 takes exactly two arguments (the format argument is
    2.7's)."""
    m = re.match(r"\s*[+-]?([0-9]+)", d.args[1])
    echo = m is not None and int(m.group(1)) != 0
    return replace(st.opts, static_challenge=StaticChallenge(d.args[0], echo))


def _askpass(st: ParseState, d: Directive) -> Options:
    """``askpass`` (ask on the terminal) or ``askpass FILE`` (password on line 1)."""
    return replace(st.opts, askpass=st.file(d) if d.args else "prompt")


def _management_flag(st: ParseState, d: Directive) -> Options:
    if d.name == "management-hold":
        return replace(st.opts, management_hold=True)
    return replace(st.opts, management_query_passwords=True)


def _auth_token(st: ParseState, d: Directive) -> Options:
    if d.name == "auth-token":
        return replace(st.opts, auth_token=d.args[0])
    return replace(st.opts, auth_token_user=d.args[0])


# --- data channel ----------------------------------------------------------------------------

def _cipher(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, cipher=v.cipher_name(d, d.args[0]))


def _data_ciphers(st: ParseState, d: Directive) -> Options:
    if d.name == "ncp-ciphers":
        st.warn(d, "'ncp-ciphers' was renamed to 'data-ciphers'")
    return replace(st.opts, data_ciphers=v.cipher_list(d, d.args[0]))


def _data_ciphers_fallback(st: ParseState, d: Directive) -> Options:
    name = v.cipher_name(d, d.args[0])
    if name not in v.SUPPORTED_CIPHERS and name not in v.WEAK_64BIT_CIPHERS:
        raise v.fail(d, f"'data-ciphers-fallback': cipher '{name}' is not supported by trivpn")
    return replace(st.opts, data_ciphers_fallback=name)


def _auth(st: ParseState, d: Directive) -> Options:
    name = d.args[0].upper()
    if name not in v.DIGESTS:
        raise v.fail(d, f"'auth' expects a digest such as SHA1, SHA256 or SHA512, "
                        f"got '{d.args[0]}'")
    if name in v.WEAK_DIGESTS:
        st.warn(d, f"'auth {name}' is a weak digest; use SHA256 or better")
    return replace(st.opts, auth=name)


def _replay_window(st: ParseState, d: Directive) -> Options:
    size = v.integer(d, 0, 0, 65536)
    secs = v.integer(d, 1, 0, 600) if len(d.args) == 2 else 15
    return replace(st.opts, replay_window=ReplayWindow(size, secs))


# --- server ----------------------------------------------------------------------------------

def _ifconfig_pool_persist(st: ParseState, d: Directive) -> Options:
    secs = v.integer(d, 1, 0) if len(d.args) == 2 else 600
    return replace(st.opts, ifconfig_pool_persist=PeriodicFile(st.path(d.args[0]), secs))


def _connect_freq(st: ParseState, d: Directive) -> Options:
    """``connect-freq[-initial] N SECONDS``; OpenVPN 2.6 takes both as integers >= 0."""
    limit = ConnectFreq(v.integer(d, 0, 0), v.integer(d, 1, 0))
    if d.name == "connect-freq":
        if limit.seconds == 0:  # OpenVPN 2.6: a zero period switches the limit off
            return replace(st.opts, connect_freq=None)
        return replace(st.opts, connect_freq=limit)
    if limit.max == 0:
        st.warn(d, "'connect-freq-initial 0 ...' answers no client hard reset: no new client "
                   "can connect over UDP")
    return replace(st.opts, connect_freq_initial=limit)


def _push(st: ParseState, d: Directive) -> Options:
    text = d.args[0]
    if "," in text:
        raise v.fail(d, f"'push' option must not contain ',': '{text}' "
                        "(write one 'push' line per option)")
    if not text.strip():
        raise v.fail(d, "'push' expects an option, got an empty string")
    return replace(st.opts, pushes=(*st.opts.pushes, text))


def _client_config_dir(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, client_config_dir=st.path(d.args[0]))


def _ccd_exclusive(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, ccd_exclusive=True)


IFCONFIG_POOL_MAX = 65536  # pool.h: the most addresses one ifconfig-pool may span


def _ifconfig_pool(st: ParseState, d: Directive) -> Options:
    start, end = v.ipv4(d, 0), v.ipv4(d, 1)
    mask = v.netmask(d, 2) if len(d.args) == 3 else None
    if start > end:
        raise v.fail(d, f"'ifconfig-pool' start address {start} is greater than end address "
                        f"{end}")
    if int(end) - int(start) >= IFCONFIG_POOL_MAX:
        raise v.fail(d, f"'ifconfig-pool' range {start} - {end} is too large (at most "
                        f"{IFCONFIG_POOL_MAX} addresses)")
    return replace(st.opts, ifconfig_pool=IfconfigPool(start, end, mask))


def _ccd_only(st: ParseState, d: Directive) -> Options:
    """Per-client directives (OpenVPN's ``OPT_P_INSTANCE``): only in a client-config-dir file;
    OpenVPN refuses them in a main config too (options.c, VERIFY_PERMISSION)."""
    raise v.fail(d, f"'{d.name}' can only be used in a client-config-dir file "
                    "(see 'client-config-dir')")


# --- routing ---------------------------------------------------------------------------------

def _route(st: ParseState, d: Directive) -> Options:
    args = d.args
    mask = (v.netmask(d, 1) if len(args) >= 2 and args[1] != "default"
            else ipaddress.IPv4Address("255.255.255.255"))
    gateway = args[2] if len(args) >= 3 and args[2] != "default" else None
    metric = v.integer(d, 3, 0) if len(args) == 4 and args[3] != "default" else None
    route = Route(args[0], mask, gateway, metric, d.line)
    return replace(st.opts, routes=(*st.opts.routes, route))


def _redirect_gateway(st: ParseState, d: Directive) -> Options:
    for flag in d.args:
        if flag not in REDIRECT_FLAGS:
            raise v.fail(d, f"'redirect-gateway' flag '{flag}' is unknown "
                            f"(expected {', '.join(REDIRECT_FLAGS)})")
    return replace(st.opts, redirect_gateway=d.args)


# --- ipv6 ------------------------------------------------------------------------------------

def _ipv6_address(d: Directive, text: str, what: str) -> ipaddress.IPv6Address:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise v.fail(d, f"'{d.name}' {what} {text!r} is not an IPv6 address") from None


def _ipv6_interface(d: Directive, idx: int) -> ipaddress.IPv6Interface:
    """``ADDRESS/BITS`` (BITS defaults to 128 when missing, as OpenVPN's get_ipv6_addr)."""
    text = d.args[idx]
    try:
        return ipaddress.IPv6Interface(text)
    except ValueError:
        raise v.fail(d, f"'{d.name}' expects IPv6-ADDRESS/BITS, got {text!r}") from None


def _server_ipv6(st: ParseState, d: Directive) -> Options:
    """``server-ipv6 NET/BITS``: BITS 64..124, as OpenVPN (helper.c helper_client_server)."""
    iface = _ipv6_interface(d, 0)
    if not 64 <= iface.network.prefixlen <= 124:
        raise v.fail(d, f"'server-ipv6' network must be between /64 and /124, "
                        f"got /{iface.network.prefixlen}")
    if iface.ip != iface.network.network_address:
        raise v.fail(d, f"'server-ipv6' {d.args[0]} has host bits set "
                        f"(the network would be {iface.network})")
    return replace(st.opts, server_ipv6=iface.network)


def _ifconfig_ipv6(st: ParseState, d: Directive) -> Options:
    """``ifconfig-ipv6 ADDRESS/BITS REMOTE``."""
    iface = _ipv6_interface(d, 0)
    remote = _ipv6_address(d, d.args[1], "remote")
    return replace(st.opts, ifconfig_ipv6=Ifconfig6(iface.ip, iface.network.prefixlen, remote))


def _ifconfig_ipv6_pool(st: ParseState, d: Directive) -> Options:
    """``ifconfig-ipv6-pool BASE/BITS``: client addresses from BASE upwards."""
    return replace(st.opts, ifconfig_ipv6_pool=_ipv6_interface(d, 0))


def _route_ipv6(st: ParseState, d: Directive) -> Options:
    """``route-ipv6 NET/BITS [GATEWAY [METRIC]]`` (``default`` keeps a field's default)."""
    iface = _ipv6_interface(d, 0)
    if iface.ip != iface.network.network_address:
        raise v.fail(d, f"'route-ipv6' {d.args[0]} has host bits set "
                        f"(the network would be {iface.network})")
    args = d.args
    gateway = (_ipv6_address(d, args[1], "gateway")
               if len(args) >= 2 and args[1] != "default" else None)
    metric = v.integer(d, 2, 0) if len(args) == 3 and args[2] != "default" else None
    route = Route6(iface.network, gateway, metric, d.line)
    return replace(st.opts, routes_ipv6=(*st.opts.routes_ipv6, route))



def _block_ipv6(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, block_ipv6=True)


PULL_FILTER_ACTIONS: Mapping[str, PullFilterAction] = {
    "accept": "accept", "ignore": "ignore", "reject": "reject"}


def _pull_filter(st: ParseState, d: Directive) -> Options:
    action = PULL_FILTER_ACTIONS.get(d.args[0])
    if action is None:
        raise v.fail(d, f"unknown 'pull-filter' type '{d.args[0]}' "
                        "(expected accept, ignore or reject)")
    return replace(st.opts, pull_filters=(*st.opts.pull_filters, PullFilter(action, d.args[1])))


# --- keepalive and lifecycle -----------------------------------------------------------------

def _keepalive(st: ParseState, d: Directive) -> Options:
    interval, timeout = v.integer(d, 0, 0), v.integer(d, 1, 0)
    return replace(st.opts, keepalive=Keepalive(interval, timeout, d.line))


def _explicit_exit_notify(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, explicit_exit_notify=v.integer(d, 0, 0) if d.args else 1)


# --- logging and process ---------------------------------------------------------------------

def _status(st: ParseState, d: Directive) -> Options:
    secs = v.integer(d, 1, 1) if len(d.args) == 2 else 60
    return replace(st.opts, status=PeriodicFile(st.path(d.args[0]), secs))


def _management(st: ParseState, d: Directive) -> Options:
    pwfile = d.args[2] if len(d.args) == 3 else None
    if d.args[1] == "unix":
        mgmt = Management(d.args[0], None, True, pwfile)
    else:
        mgmt = Management(d.args[0], v.port(d, 1), False, pwfile)
        if pwfile is None:
            st.warn(d, "'management' on a TCP port without a password file lets any local "
                       "user control the VPN")
    return replace(st.opts, management=mgmt)


def _setenv(st: ParseState, d: Directive) -> Options:
    if d.args[0] == "FORWARD_COMPATIBLE" and d.args[1:] == ("1",):
        st.forward_compatible = True
    value = d.args[1] if len(d.args) == 2 else ""
    # setenv-safe NAME: OpenVPN puts OPENVPN_NAME into the scripts' environment
    # (options.c, setenv_str_safe)
    name = "OPENVPN_" + d.args[0] if d.name == "setenv-safe" else d.args[0]
    return replace(st.opts, setenv=(*st.opts.setenv, (name, value)))


# --- scripts and process -----------------------------------------------------------------

SCRIPTS: Mapping[str, Callable[[Options, str], Options]] = {
    "up": lambda o, c: replace(o, up=c),
    "down": lambda o, c: replace(o, down=c),
    "route-up": lambda o, c: replace(o, route_up=c),
    "route-pre-down": lambda o, c: replace(o, route_pre_down=c),
    "ipchange": lambda o, c: replace(o, ipchange=c),
    "tls-verify": lambda o, c: replace(o, tls_verify=c),
}
SERVER_SCRIPTS: Mapping[str, Callable[[Options, str], Options]] = {
    "client-connect": lambda o, c: replace(o, client_connect=c),
    "client-disconnect": lambda o, c: replace(o, client_disconnect=c),
    "learn-address": lambda o, c: replace(o, learn_address=c),
}
SCRIPT_FLAGS: Mapping[str, Callable[[Options], Options]] = {
    "up-restart": lambda o: replace(o, up_restart=True),
    "down-pre": lambda o: replace(o, down_pre=True),
    "ifconfig-noexec": lambda o: replace(o, ifconfig_noexec=True),
    "route-noexec": lambda o: replace(o, route_noexec=True),
    "up-delay": lambda o: o,
}
DOWN_ROOT_PLUGIN = "openvpn-plugin-down-root.so"


def _script(st: ParseState, d: Directive) -> Options:
    """``up CMD`` and the like: CMD is a program with optional fixed arguments (OpenVPN's
    argv_parse_cmd); it runs only with ``script-security 2`` or higher."""
    if not d.args[0].strip():
        raise v.fail(d, f"'{d.name}' needs a command")
    return SCRIPTS[d.name](st.opts, d.args[0])


def _server_script(st: ParseState, d: Directive) -> Options:
    """``client-connect``, ``client-disconnect``, ``learn-address`` CMD: server only (OpenVPN
    refuses them in a client config: options.c, options_postprocess_verify_ce())."""
    if not d.args[0].strip():
        raise v.fail(d, f"'{d.name}' needs a command")
    return SERVER_SCRIPTS[d.name](st.opts, d.args[0])


def _script_flag(st: ParseState, d: Directive) -> Options:
    return SCRIPT_FLAGS[d.name](st.opts)


def _plugin(st: ParseState, d: Directive) -> Options:
    """Two plugin lines are served natively: ``plugin .../openvpn-plugin-down-root.so "CMD"``
    runs CMD as root at down, even after user/group dropped privileges, and the PAM plugin
    line (:func:`_plugin_auth_pam`)."""
    if Path(d.args[0]).name == AUTH_PAM_PLUGIN:
        return _plugin_auth_pam(st, d)
    if Path(d.args[0]).name != DOWN_ROOT_PLUGIN:
        raise v.fail(d, f"'plugin {d.args[0]}': trivpn loads no plugin modules; it serves "
                        f"two plugin lines natively: {DOWN_ROOT_PLUGIN} (the down command "
                        f"as root) and {AUTH_PAM_PLUGIN} SERVICE (passwords checked through "
                        "PAM). Use 'auth-user-pass-verify SCRIPT via-file' (and "
                        "client-connect / client-disconnect scripts) for what another "
                        "plugin did")
    if len(d.args) != 2 or not d.args[1].strip():
        raise v.fail(d, f"'plugin {d.args[0]}' needs the command to run at down, "
                        "as one (quoted) argument")
    return replace(st.opts, down_root=d.args[1])


def _tls_export_cert(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, tls_export_cert=st.path(d.args[0]))


def _chroot(st: ParseState, d: Directive) -> Options:
    raise v.fail(d, "'chroot' is not supported: trivpn is a Python program that keeps "
                    "importing its modules and reading certificates after start, which a "
                    "chroot directory would have to contain; use systemd's RootDirectory= "
                    "or a container instead")


def _ignore_unknown_option(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, ignore_unknown_option=(*st.opts.ignore_unknown_option, *d.args))


def _tun_ipv6(st: ParseState, d: Directive) -> Options:
    st.warn(d, "'tun-ipv6' is obsolete and ignored")
    return st.opts


def _checked_number(st: ParseState, d: Directive) -> Options:
    """An inert directive whose one argument must still be a number >= 0 (as OpenVPN's
    positive_atoi() reads it)."""
    v.integer(d, 0, 0)
    return st.opts


def _ignored_with_notice(st: ParseState, d: Directive) -> Options:
    """``prng`` and ``max-routes``: OpenVPN 2.6 ignores them with a notice; so does trivpn."""
    if d.name == "max-routes":
        st.warn(d, "'max-routes' is ignored: the number of routes is unlimited (OpenVPN 2.6 "
                   "ignores it too)")
    else:
        st.warn(d, "'prng' is ignored: the TLS library's random generator is used (OpenVPN "
                   "2.6 ignores it too)")
    return st.opts


def _checked_word(st: ParseState, d: Directive) -> Options:
    """An inert directive: nothing to apply (the reason is in its Spec)."""
    return st.opts


def _noop(st: ParseState, d: Directive) -> Options:
    """For ``config``/``cd``, which the reader has already applied."""
    return st.opts


def _int_option(st: ParseState, d: Directive) -> Options:
    lo, hi, setter = INTS[d.name]
    return setter(st.opts, v.integer(d, 0, lo, hi))


# Directives ``NAME N`` that set one integer: (min, max or None, setter).
INTS: Mapping[str, tuple[int, int | None, Callable[[Options, int], Options]]] = {
    "tun-mtu": (100, 65535, lambda o, n: replace(o, tun_mtu=n)),
    "txqueuelen": (0, None, lambda o, n: replace(o, txqueuelen=n)),
    # lport 0: any port, chosen by the kernel (router exports write it); OpenVPN's
    # options.c takes 0..65535 for a port (legal_ipv4_port() after atoi)
    "lport": (0, 65535, lambda o, n: replace(o, lport=n)),
    "rport": (1, 65535, lambda o, n: replace(o, rport=n)),
    "server-poll-timeout": (1, None, lambda o, n: replace(o, server_poll_timeout=n)),
    "connect-timeout": (1, None, lambda o, n: replace(o, server_poll_timeout=n)),
    "max-packet-size": (154, 2048, lambda o, n: replace(o, max_packet_size=n)),
    "sndbuf": (0, None, lambda o, n: replace(o, sndbuf=n)),
    "rcvbuf": (0, None, lambda o, n: replace(o, rcvbuf=n)),
    "hand-window": (1, None, lambda o, n: replace(o, hand_window=n)),
    "tls-timeout": (1, None, lambda o, n: replace(o, tls_timeout=n)),
    "reneg-bytes": (0, None, lambda o, n: replace(o, reneg_bytes=n)),
    "reneg-pkts": (0, None, lambda o, n: replace(o, reneg_pkts=n)),
    "tran-window": (1, None, lambda o, n: replace(o, tran_window=n)),
    "max-clients": (1, None, lambda o, n: replace(o, max_clients=n)),
    "max-routes-per-client": (1, 2**31 - 1,
                              lambda o, n: replace(o, max_routes_per_client=n)),
    "ping": (0, None, lambda o, n: replace(o, ping=n)),
    # ping-restart and ping-exit set one timer in OpenVPN (options.c): the last one wins
    "ping-restart": (0, None, lambda o, n: replace(o, ping_restart=n, ping_exit=None)),
    "ping-exit": (0, None, lambda o, n: replace(o, ping_exit=n, ping_restart=None)),
    "session-timeout": (0, None, lambda o, n: replace(o, session_timeout=n)),
    "verb": (0, 11, lambda o, n: replace(o, verb=n)),
    "mute": (0, None, lambda o, n: replace(o, mute=n)),
    "status-version": (1, 3, lambda o, n: replace(o, status_version=n)),
    "script-security": (0, 3, lambda o, n: replace(o, script_security=n)),
    "nice": (-20, 19, lambda o, n: replace(o, nice=n)),
}


def _inactive(st: ParseState, d: Directive) -> Options:
    """``inactive SECONDS [BYTES]``: BYTES (in + out) must pass in each period (default 0)."""
    secs = v.integer(d, 0, 0)
    minimum = v.integer(d, 1, 0, 2**63 - 1) if len(d.args) == 2 else 0
    return replace(st.opts, inactive=secs, inactive_bytes=minimum)


def _reneg_sec(st: ParseState, d: Directive) -> Options:
    secs = v.integer(d, 0, 0)
    low = v.integer(d, 1, 0) if len(d.args) == 2 else None
    return replace(st.opts, reneg_sec=secs, reneg_sec_min=low)


def _str_option(st: ParseState, d: Directive) -> Options:
    return STRINGS[d.name](st, d)


# Directives ``NAME VALUE`` that store one string or path.
STRINGS: Mapping[str, Handler] = {
    "local": lambda st, d: replace(st.opts, local=d.args[0]),
    "remote-cert-eku": lambda st, d: replace(st.opts, remote_cert_eku=d.args[0]),
    "tls-version-max": lambda st, d: replace(
        st.opts, tls_version_max=v.choice(d, 0, {t: t for t in TLS_VERSIONS})),
    "tls-cipher": lambda st, d: replace(st.opts, tls_cipher=d.args[0]),
    "tls-ciphersuites": lambda st, d: replace(st.opts, tls_ciphersuites=d.args[0]),
    "tls-groups": lambda st, d: replace(st.opts, tls_groups=d.args[0]),
    "tls-cert-profile": lambda st, d: replace(st.opts, tls_cert_profile=v.choice(
        d, 0, {p: p for p in ("insecure", "legacy", "preferred", "suiteb")})),
    "route-gateway": lambda st, d: replace(st.opts, route_gateway=d.args[0]),
    "user": lambda st, d: replace(st.opts, user=d.args[0]),
    "group": lambda st, d: replace(st.opts, group=d.args[0]),
    "management-client-user": lambda st, d: replace(st.opts,
                                                    management_client_user=d.args[0]),
    "management-client-group": lambda st, d: replace(st.opts,
                                                     management_client_group=d.args[0]),
    "log": lambda st, d: replace(st.opts, log=st.path(d.args[0]), log_append=False),
    "log-append": lambda st, d: replace(st.opts, log=st.path(d.args[0]), log_append=True),
    "writepid": lambda st, d: replace(st.opts, writepid=st.path(d.args[0])),
}


def _choice_field(st: ParseState, d: Directive) -> Options:
    o = st.opts
    if d.name == "topology":
        return replace(o, topology=v.choice(d, 0, TOPOLOGIES))
    if d.name == "key-direction":
        return replace(o, key_direction=v.choice(d, 0, KEY_DIRECTIONS))
    if d.name == "verify-client-cert":
        return replace(o, verify_client_cert=v.choice(
            d, 0, {"none": "none", "optional": "optional", "require": "require"}))
    if d.name == "auth-retry":
        return replace(o, auth_retry=v.choice(
            d, 0, {"none": "none", "nointeract": "nointeract", "interact": "interact"}))
    raise AssertionError(d.name)


def _syslog(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, syslog=d.args[0] if d.args else "openvpn")


def _daemon(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, daemon=True, daemon_name=d.args[0] if d.args else "openvpn")


def _file_field(st: ParseState, d: Directive) -> Options:
    src, o = st.file(d), st.opts
    if d.name == "ca":
        return replace(o, ca=src)
    if d.name == "cert":
        return replace(o, cert=src)
    if d.name == "key":
        return replace(o, key=src)
    if d.name == "extra-certs":
        return replace(o, extra_certs=src)
    if d.name == "tls-crypt":
        if len(d.args) == 2:  # generators write 'tls-crypt ta.key 0' (options.c takes !p[3])
            st.warn(d, f"tls-crypt has no key direction: the second argument '{d.args[1]}' "
                       "is ignored")
        return replace(o, tls_crypt=src)
    raise AssertionError(d.name)


def _logging_flag(st: ParseState, d: Directive) -> Options:
    """``suppress-timestamps``: console log lines without the time prefix (journald adds its
    own); ``machine-readable-output``: JSON lines even on a terminal, always timestamped, and
    winning over suppress-timestamps in either order, as OpenVPN's (error.c, x_msg_va)."""
    if d.name == "suppress-timestamps":
        return replace(st.opts, suppress_timestamps=True)
    return replace(st.opts, machine_readable_output=True)


# --- compression and fragment ----------------------------------------------------------------
# OpenVPN's compress_options flags (src/openvpn/comp.h), applied in the order OpenVPN's
# add_option() does (src/openvpn/options.c); the final check is finish_compression().
COMP_F_ADAPTIVE = 1 << 0
COMP_F_ALLOW_COMPRESS = 1 << 1
COMP_F_SWAP = 1 << 2
COMP_F_ADVERTISE_STUBS_ONLY = 1 << 3
COMP_F_ALLOW_STUB_ONLY = 1 << 4
COMP_F_ALLOW_ASYM = 1 << 6
_NON_STUB = frozenset({"lzo", "lz4", "lz4-v2"})
_REFUSED = "OpenVPN 2.6 refuses this too"
RECEIVE_ONLY_WARNING = ("compression for receiving enabled: packets from the peer are "
                        "decompressed, sent packets are not compressed unless "
                        "'allow-compression yes' is also set (as OpenVPN 2.6)")


def _comp(st: ParseState, d: Directive, alg: str, flags: int) -> Options:
    framing: CompressionFraming
    if alg == "stub":
        framing = "stub" if flags & COMP_F_SWAP else "lzo-stub"
    else:
        framing = cast("CompressionFraming", alg)
    if alg in _NON_STUB and not flags & COMP_F_ALLOW_COMPRESS:
        st.warn(d, RECEIVE_ONLY_WARNING)
    return replace(st.opts, compression=framing, comp_flags=flags)


def _comp_lzo(st: ParseState, d: Directive) -> Options:
    value = d.args[0] if d.args else None
    st.warn(d, "'comp-lzo' is deprecated; remove compression on both sides "
               "(or use 'compress stub-v2' while migrating)")
    flags = st.opts.comp_flags & ~COMP_F_SWAP
    if value == "no":
        return _comp(st, d, "stub", flags & ~COMP_F_ADAPTIVE)
    if value == "yes":
        return _comp(st, d, "lzo", flags & ~COMP_F_ADAPTIVE)
    if value in (None, "adaptive"):
        return _comp(st, d, "lzo", flags | COMP_F_ADAPTIVE)
    raise v.fail(d, f"'comp-lzo' expects one of yes, no, adaptive, got '{value}'")


def _compress(st: ParseState, d: Directive) -> Options:
    algo = d.args[0] if d.args else "stub"
    flags = st.opts.comp_flags
    if algo == "stub":
        return _comp(st, d, "stub", flags | COMP_F_SWAP | COMP_F_ADVERTISE_STUBS_ONLY)
    if algo == "stub-v2":
        return _comp(st, d, "stub-v2", flags | COMP_F_ADVERTISE_STUBS_ONLY)
    if algo == "lzo":
        return _comp(st, d, "lzo", flags & ~(COMP_F_ADAPTIVE | COMP_F_SWAP))
    if algo == "lz4":
        return _comp(st, d, "lz4", flags | COMP_F_SWAP)
    if algo == "lz4-v2":
        return _comp(st, d, "lz4-v2", flags)
    if algo == "migrate":
        raise v.fail(d, "'compress migrate' (a server pushing stub framings to clients that "
                        "announce compression) is not supported by trivpn yet")
    raise v.fail(d, f"'compress' expects one of stub, stub-v2, lzo, lz4, lz4-v2, got '{algo}'")


def _comp_noadapt(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, comp_flags=st.opts.comp_flags & ~COMP_F_ADAPTIVE)


def _allow_compression(st: ParseState, d: Directive) -> Options:
    value = d.args[0]
    flags = st.opts.comp_flags
    if value == "no":
        if st.opts.compression in _NON_STUB:
            raise v.fail(d, "'allow-compression no' conflicts with the compression enabled "
                            f"above ({_REFUSED})")
        return replace(st.opts, comp_flags=COMP_F_ALLOW_STUB_ONLY | COMP_F_ADVERTISE_STUBS_ONLY)
    if value not in ("yes", "asym"):
        raise v.fail(d, f"'allow-compression' expects one of yes, no, asym, got '{value}'")
    if flags & COMP_F_ALLOW_STUB_ONLY:
        raise v.fail(d, f"cannot set 'allow-compression {value}' after 'allow-compression no' "
                        f"({_REFUSED})")
    if value == "asym":
        return replace(st.opts, comp_flags=(flags & ~COMP_F_ALLOW_COMPRESS) | COMP_F_ALLOW_ASYM)
    st.warn(d, "'allow-compression yes' compresses sent packets too, which enables attacks "
               "that break encryption (VORACLE); avoid it")
    return replace(st.opts, comp_flags=flags | COMP_F_ALLOW_COMPRESS)


def _fragment(st: ParseState, d: Directive) -> Options:
    size = v.integer(d, 0, 0)
    if size < 68:
        raise v.fail(d, f"'fragment' needs to be at least 68, got {size} ({_REFUSED})")
    if len(d.args) == 2 and d.args[1] != "mtu":
        raise v.fail(d, f"unknown parameter to 'fragment': '{d.args[1]}' (expected 'mtu'; "
                        f"{_REFUSED})")
    return replace(st.opts, fragment=size, fragment_mtu=len(d.args) == 2)


def finish_fragment(st: ParseState, o: Options) -> Options:
    """fragment: UDP only, and the default mssfix becomes ``mssfix N mtu`` (OpenVPN options.c
    options_postprocess_mutate_ce: an absent or bare mssfix takes the fragment value)."""
    if not o.fragment:
        return o
    d = st.last_seen["fragment"]
    if o.proto != "udp" or any(r.proto != "udp" for r in o.remotes):
        raise v.fail(d, f"'fragment' can only be used with 'proto udp' ({_REFUSED})")
    mssfix = st.last_seen.get("mssfix")
    if mssfix is None or not mssfix.args:
        o = replace(o, mssfix=Mssfix(o.fragment, mtu=True))
    return o


def finish_compression(st: ParseState, o: Options) -> Options:
    """OpenVPN's post-processing (options.c options_postprocess_mutate_invariant,
    comp.c check_compression_settings_valid): the effective allow-compression mode."""
    flags = o.comp_flags
    non_stub = o.compression in _NON_STUB
    # compat-mode before 2.6.0 keeps the old default (trivpn/config/compat.py)
    if flags == 0 and not non_stub and not need_compatibility_before(o, 20600):
        flags = COMP_F_ALLOW_STUB_ONLY | COMP_F_ADVERTISE_STUBS_ONLY
    if flags & COMP_F_ALLOW_STUB_ONLY and non_stub:
        name = max(("comp-lzo", "compress"), key=lambda n: st.last_position.get(n, -1))
        d = st.last_seen[name]
        shown = " ".join((d.name, *d.args))
        raise v.fail(d, f"compression ('{shown}') is not allowed with 'allow-compression no' "
                        f"({_REFUSED})")
    mode: Literal["no", "asym", "yes"] = (
        "yes" if flags & COMP_F_ALLOW_COMPRESS
        else "no" if flags & COMP_F_ALLOW_STUB_ONLY else "asym")
    return replace(o, comp_flags=flags, allow_compression=mode)


# --- client breadth b: handlers ---------------------------------------------------------------

def _remap_usr1(st: ParseState, d: Directive) -> Options:
    if d.args[0] not in ("SIGHUP", "SIGTERM"):
        # OpenVPN options.c, add_option(): "--remap-usr1 parm must be 'SIGHUP' or 'SIGTERM'"
        raise v.fail(d, f"'remap-usr1' expects SIGHUP or SIGTERM, got '{d.args[0]}'")
    return replace(st.opts, remap_usr1=cast(Literal["SIGHUP", "SIGTERM"], d.args[0]))


def _keying_material_exporter(st: ParseState, d: Directive) -> Options:
    """The checks of OpenVPN options.c, add_option() ("keying-material-exporter"); then inert
    (see its Spec)."""
    label = d.args[0]
    if not label.startswith("EXPORTER"):
        raise v.fail(d, "the keying material exporter label must begin with 'EXPORTER'")
    if label == "EXPORTER-OpenVPN-datakeys":
        raise v.fail(d, "the keying material exporter label must not be "
                        "'EXPORTER-OpenVPN-datakeys' (the data channel keys' label)")
    length = int(d.args[1]) if d.args[1].isdigit() else 0
    if not 16 <= length <= 4095:
        raise v.fail(d, f"invalid keying material exporter length '{d.args[1]}' "
                        "(16 to 4095 bytes)")
    return st.opts


def _preresolve(st: ParseState, d: Directive) -> Options:
    """``preresolve [HOST]`` and its older name ``ip-remote-hint [HOST]`` are one option in
    OpenVPN (options.c, add_option()): resolve in advance, HOST instead of the remotes."""
    hint = d.args[0] if d.args else st.opts.ip_remote_hint
    return replace(st.opts, preresolve=True, ip_remote_hint=hint)


def _management_log_cache(st: ParseState, d: Directive) -> Options:
    """OpenVPN options.c, add_option(): at least 1 line ("--management-log-cache parameter is
    out of range"); parser.py checks that 'management' is given too."""
    lines = int(d.args[0]) if d.args[0].isdigit() else 0
    if lines < 1:
        raise v.fail(d, f"'management-log-cache' expects a number of lines of at least 1, "
                        f"got '{d.args[0]}'")
    return replace(st.opts, management_log_cache=lines)


def _no_replay(st: ParseState, d: Directive) -> Options:
    # OpenVPN options.c, options_postprocess_verify_ce(): the same warning
    st.warn(d, "replay protection is disabled ('no-replay'): a replayed data packet is "
               "accepted, which makes the tunnel less secure")
    return replace(st.opts, replay=False)


def _redirect_private(st: ParseState, d: Directive) -> Options:
    """Parsed as redirect-gateway (OpenVPN options.c, add_option(): one branch for both, but
    only redirect-gateway sets RG_REROUTE_GW, the default route change)."""
    for flag in d.args:
        if flag not in REDIRECT_FLAGS:
            raise v.fail(d, f"'redirect-private' flag '{flag}' is unknown "
                            f"(expected {', '.join(REDIRECT_FLAGS)})")
    return replace(st.opts, redirect_private=d.args)


def _lladdr(st: ParseState, d: Directive) -> Options:
    """A MAC address (OpenVPN options.c, add_option(): mac_addr_safe(), "lladdr parm '%s' must
    be a MAC address"); parser.py checks the device is a tap."""
    parts = d.args[0].split(":")
    if len(parts) != 6 or not all(
            1 <= len(p) <= 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise v.fail(d, f"'lladdr' expects a MAC address (like 02:00:5e:10:00:01), "
                        f"got '{d.args[0]}'")
    return replace(st.opts, lladdr=":".join(p.zfill(2).lower() for p in parts))


def _echo(st: ParseState, d: Directive) -> Options:
    """``echo [PARMS...]``: OpenVPN logs "ECHO:PARMS" only when the first word starts with
    "msg" (other echoes may carry secrets); a config file's echo reaches no management client,
    which does not exist yet while the config is read (options.c, add_option(), "echo")."""
    if not d.args or not d.args[0].startswith("msg"):
        return st.opts
    return replace(st.opts, echo=(*st.opts.echo, " ".join(d.args)))


PROTOCOL_FLAGS = ("cc-exit", "tls-ekm", "dyn-tls-crypt")


def _pushed_protocol_option(st: ParseState, d: Directive) -> Options:
    """``key-derivation`` / ``protocol-flags`` in a config file: checked as OpenVPN checks them
    (options.c, add_option(): "Unknown key-derivation method" / "Unknown protocol-flags
    flag"), then inert (see their Specs)."""
    if d.name == "key-derivation":
        if d.args[0] != "tls-ekm":
            raise v.fail(d, f"unknown key-derivation method '{d.args[0]}' (expected tls-ekm)")
    else:
        for flag in d.args:
            if flag not in PROTOCOL_FLAGS:
                raise v.fail(d, f"unknown protocol-flags flag '{flag}' (expected "
                                f"{', '.join(PROTOCOL_FLAGS)})")
    return st.opts


# --- client breadth a: handlers ----------------------------------------------------------------

MTU_DISC_TYPES: Mapping[str, Literal["no", "maybe", "yes"]] = {
    "no": "no", "maybe": "maybe", "yes": "yes"}


def _socket_flags(st: ParseState, d: Directive) -> Options:
    """``socket-flags TCP_NODELAY ...``: TCP_NODELAY is the only flag OpenVPN 2.6 knows
    (options.c, add_option(): any other is "unknown socket flag", an options error)."""
    for flag in d.args:
        if flag != "TCP_NODELAY":
            raise v.fail(d, f"unknown socket flag: {flag} (OpenVPN 2.6 knows only TCP_NODELAY)")
    return replace(st.opts, socket_flags_nodelay=True)


def _tun_mtu_max(st: ParseState, d: Directive) -> Options:
    """``tun-mtu-max N``: 68..65536 (options.c, add_option()); a second argument is read
    and ignored by OpenVPN 2.6 too."""
    return replace(st.opts, tun_mtu_max=v.integer(d, 0, 68, 65536))


# --- crypto and pki breadth: handlers ---------------------------------------------------------

def _tls_crypt_v2(st: ParseState, d: Directive) -> Options:
    """``tls-crypt-v2 FILE [force-cookie|allow-noncookie]`` (OpenVPN options.c)."""
    extra = d.args[1] if len(d.args) > 1 else None
    if extra is not None and extra != "force-cookie":
        if extra == "allow-noncookie":
            raise v.fail(d, "'tls-crypt-v2 ... allow-noncookie' is not implemented: trivpn "
                         "serves only clients that resend their key with the HMAC cookie "
                         "(OpenVPN 2.6 clients), the default 'force-cookie'")
        raise v.fail(d, f"unsupported tls-crypt-v2 argument: {extra}")
    return replace(st.opts, tls_crypt_v2=st.file(d))


def _tls_crypt_v2_verify(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, tls_crypt_v2_verify=d.args[0])


def _tls_crypt_v2_max_age(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, tls_crypt_v2_max_age=v.integer(d, 0, 1, 2**31 - 1))


def _fingerprint(d: Directive, text: str, size: int = 32) -> bytes:
    """One ``AB:CD:...`` fingerprint of ``size`` bytes (OpenVPN options.c,
    parse_hash_fingerprint)."""
    parts = text.split(":")
    if not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise v.fail(d, f"format error in hash fingerprint: {text}")
    if len(parts) != size:
        raise v.fail(d, f"hash fingerprint is wrong length - expected {size} bytes, got "
                        f"{len(parts)}: {text}")
    return bytes.fromhex("".join(parts))


def _fingerprints(d: Directive, size: int) -> tuple[bytes, ...]:
    """The argument, or an inline block's lines (empty lines and ``#``/``;`` comments
    skipped)."""
    lines = d.inline.splitlines() if d.inline is not None else [d.args[0]]
    return tuple(_fingerprint(d, line.strip(), size) for line in lines
                 if line.strip() and line.strip()[0] not in "#;")


def _peer_fingerprint(st: ParseState, d: Directive) -> Options:
    """``peer-fingerprint AB:CD:...`` or a ``<peer-fingerprint>`` block; they add up."""
    if st.opts.verify_hash:
        raise v.fail(d, "'verify-hash' and 'peer-fingerprint' are mutually exclusive")
    return replace(st.opts, peer_fingerprints=st.opts.peer_fingerprints + _fingerprints(d, 32))


def _verify_hash(st: ParseState, d: Directive) -> Options:
    """``verify-hash HASH [SHA1|SHA256]``: the CA certificate that signed the peer's must have
    one of these fingerprints; SHA1 unless named (an inline block: SHA256), as OpenVPN
    options.c reads it."""
    if st.opts.peer_fingerprints:
        raise v.fail(d, "'verify-hash' and 'peer-fingerprint' are mutually exclusive")
    algo = "SHA256" if d.inline is not None else "SHA1"
    if len(d.args) > 1 and d.inline is None:
        algo = v.choice(d, 1, {"SHA1": "SHA1", "SHA256": "SHA256"})
    if st.opts.verify_hash and st.opts.verify_hash_algo != algo:
        raise v.fail(d, f"'verify-hash' with {algo} after {st.opts.verify_hash_algo}: use one "
                        "algorithm")
    st.warn(d, "verify-hash is deprecated: pin the peer with 'peer-fingerprint', or put only "
               "the trusted CA in 'ca'")
    found = _fingerprints(d, 32 if algo == "SHA256" else 20)
    return replace(st.opts, verify_hash=st.opts.verify_hash + found, verify_hash_algo=algo)


# --- server auth ---------------------------------------------------------------------------

def _auth_user_pass_verify(st: ParseState, d: Directive) -> Options:
    """``auth-user-pass-verify CMD via-env|via-file``: CMD is split like a shell command line
    (OpenVPN argv_parse_cmd()); a relative program name resolves in the config's directory."""
    method = v.choice(d, 1, {"via-env": "via-env", "via-file": "via-file"})
    try:
        argv = shlex.split(d.args[0])
    except ValueError as exc:
        raise v.fail(d, f"auth-user-pass-verify: cannot split the command: {exc}") from None
    if not argv:
        raise v.fail(d, "auth-user-pass-verify: empty command")
    if not Path(argv[0]).is_absolute():  # OpenVPN execve()s it: no PATH search
        argv[0] = str(st.base_dir(d) / argv[0])
    return replace(st.opts, auth_user_pass_verify=tuple(argv),
                   auth_user_pass_verify_via_file=method == "via-file")


def _auth_gen_token(st: ParseState, d: Directive) -> Options:
    """``auth-gen-token [lifetime] [renewal] [external-auth]`` (options.c, add_option())."""
    o = replace(st.opts, auth_gen_token=True)
    if d.args:
        o = replace(o, auth_token_lifetime=v.integer(d, 0, 0))
    for i, arg in enumerate(d.args[1:], start=1):
        if i == 1 and arg.isdigit():
            o = replace(o, auth_token_renewal=v.integer(d, 1, 0) or None)
        elif arg == "external-auth":
            o = replace(o, auth_token_external=True)
        else:
            raise v.fail(d, f"Invalid argument to auth-gen-token: {arg} ({i + 1})")
    return o


def _auth_gen_token_secret(st: ParseState, d: Directive) -> Options:
    """The file is read when the server starts (trivpn/runtime/serverauth.py,
    load_token_key())."""
    return replace(st.opts, auth_gen_token_secret=st.file(d))


AUTH_PAM_PLUGIN = "openvpn-plugin-auth-pam.so"


def _plugin_auth_pam(st: ParseState, d: Directive) -> Options:
    """``plugin .../openvpn-plugin-auth-pam.so SERVICE``: checked through PAM natively
    (trivpn/runtime/serverauth.py, pam_auth()); trivpn loads no plugin modules."""
    if len(d.args) != 2:
        raise v.fail(d, f"'plugin {AUTH_PAM_PLUGIN}' needs exactly one PAM service name; "
                        "name/value conversation pairs are not supported")
    if st.opts.auth_pam_service is not None:
        raise v.fail(d, f"'plugin {AUTH_PAM_PLUGIN}' is given twice")
    return replace(st.opts, auth_pam_service=d.args[1])


def _server_auth_flag(st: ParseState, d: Directive) -> Options:
    if d.name == "username-as-common-name":
        return replace(st.opts, username_as_common_name=True)
    if d.name == "management-client-auth":
        return replace(st.opts, management_client_auth=True)
    return replace(st.opts, auth_user_pass_optional=True)


# --- more: handlers ---------------------------------------------------------------------------

# proto-force's word → the protocol it keeps (OpenVPN socket.c, ascii2proto(): the family
# suffix is dropped, plain 'tcp' stays 'tcp')
PROTO_FORCE: Mapping[str, str] = {
    "udp": "udp", "udp4": "udp", "udp6": "udp", "tcp": "tcp", "tcp4": "tcp", "tcp6": "tcp",
    "tcp-client": "tcp-client", "tcp4-client": "tcp-client", "tcp6-client": "tcp-client",
    "tcp-server": "tcp-server", "tcp4-server": "tcp-server", "tcp6-server": "tcp-server"}


def _proto_force(st: ParseState, d: Directive) -> Options:
    forced = PROTO_FORCE.get(d.args[0])
    if forced is None:  # OpenVPN options.c, add_option(): "Bad --proto-force protocol"
        raise v.fail(d, f"Bad --proto-force protocol: '{d.args[0]}'")
    return replace(st.opts, proto_force=forced)


def _http_proxy_override(st: ParseState, d: Directive) -> Options:
    """OpenVPN options.c, parse_http_proxy_override(): like 'http-proxy HOST PORT auto'
    ('auto-nct' with the flag 'nct'), HTTP/1.0, agent 'OpenVPN-Autoproxy/1.0'."""
    auth: Literal["auto", "auto-nct"] = "auto-nct" if d.args[2:] == ("nct",) else "auto"
    return replace(st.opts, http_proxy_override=HttpProxy(
        host=d.args[0], port=v.port(d, 1), auth=auth, agent="OpenVPN-Autoproxy/1.0",
        line=d.line))


def _shaper(st: ParseState, d: Directive) -> Options:
    """OpenVPN options.c, add_option(): atoi(), then the range check."""
    found = re.match(r"[+-]?\d+", d.args[0])
    value = int(found.group()) if found else 0
    if not SHAPER_MIN <= value <= SHAPER_MAX:
        raise v.fail(d, f"Bad shaper value, must be between {SHAPER_MIN} and {SHAPER_MAX}")
    return replace(st.opts, shaper=value)


_EXTENSION_OIDS = frozenset(oid.dotted_string for oid in vars(ExtensionOID).values()
                            if isinstance(oid, ObjectIdentifier))


def _x509_track(st: ParseState, d: Directive) -> Options:
    """OpenVPN ssl_verify_openssl.c, x509_track_add(): '+' for every depth, then a name
    OpenSSL knows (OBJ_txt2nid), else "x509_track: no such attribute"."""
    text = d.args[0]
    full = text.startswith("+")
    name = text[1:] if full else text
    oid = attribute_oid(name) if name else None
    if oid is None:
        raise v.fail(d, f"x509_track: no such attribute '{name}'")
    if oid.dotted_string in _EXTENSION_OIDS:
        raise v.fail(d, f"x509-track of the certificate extension '{name}' is not supported "
                        "by trivpn (subject fields, SHA1 and SHA256 are)")
    track = X509Track(name, oid.dotted_string, full)
    return replace(st.opts, x509_track=(*st.opts.x509_track, track))


def _client_nat(st: ParseState, d: Directive) -> Options:
    """OpenVPN clinat.c, add_client_nat_to_option_list(): the type, then three numeric
    addresses; at most 32 rules (more: a warning, the rule is dropped)."""
    kind = d.args[0]
    if kind not in ("snat", "dnat"):
        raise v.fail(d, "client-nat: type must be 'snat' or 'dnat'")
    values = []
    for text, what in zip(d.args[1:], ("network", "netmask", "foreign network"), strict=True):
        try:
            values.append(int(ipaddress.IPv4Address(text)))
        except ValueError:
            raise v.fail(d, f"client-nat: bad {what}: {text}") from None
    if len(st.opts.client_nat) >= MAX_CLIENT_NAT:
        st.warn(d, f"WARNING: client-nat table overflow (max {MAX_CLIENT_NAT} entries)")
        return st.opts
    rule = NatRule(cast("Literal['snat', 'dnat']", kind), values[0], values[1], values[2])
    return replace(st.opts, client_nat=(*st.opts.client_nat, rule))


# --- srvsmall: handlers ------------------------------------------------------------------------

def _route_ipv6_gateway(st: ParseState, d: Directive) -> Options:
    """``route-ipv6-gateway GW``: the gateway of route-ipv6 lines that name none (OpenVPN
    options.c add_option(): "must be a valid address"; init.c do_init_route_ipv6_list())."""
    try:
        gateway = ipaddress.IPv6Address(d.args[0])
    except ValueError:
        raise v.fail(d, f"route-ipv6-gateway parm '{d.args[0]}' must be a valid "
                        "address") from None
    return replace(st.opts, route_ipv6_gateway=gateway)


def _opt_verify(st: ParseState, d: Directive) -> Options:
    # options.c add_option(): 2.6 prints this at M_INFO and still applies it (ssl.c,
    # key_method_2_read(): an inconsistent options string refuses the client)
    st.warn(d, "DEPRECATION: opt-verify is deprecated and will be removed in OpenVPN 2.7")
    return replace(st.opts, opt_verify=True)


VLAN_ACCEPT: Mapping[str, str] = {"tagged": "tagged", "untagged": "untagged", "all": "all"}


def vlan_pvid(d: Directive) -> int:
    """``vlan-pvid N``, 1 to 4094 (OpenVPN options.c add_option(), OPENVPN_8021Q_MIN_VID and
    _MAX_VID); also read in client-config-dir files."""
    text = d.args[0]
    n = int(text) if text.isascii() and text.isdigit() else 0
    if not 1 <= n <= MAX_VID:
        raise v.fail(d, f"the parameter of --vlan-pvid parameters must be >= 1 and "
                        f"<= {MAX_VID}")
    return n


MAX_VID = 4094


def _queue_size(st: ParseState, d: Directive) -> Options:
    """``tcp-queue-limit N`` / ``bcast-buffers N``: N > 0 (options.c add_option(): "--NAME
    parameter must be > 0")."""
    text = d.args[0]
    n = int(text) if text.isascii() and text.isdigit() else 0
    if n < 1:
        raise v.fail(d, f"--{d.name} parameter must be > 0")
    if d.name == "bcast-buffers":
        return replace(st.opts, bcast_buffers=n)
    return replace(st.opts, tcp_queue_limit=n)
# --- mgmt ---
def _mgmt_flag(st: ParseState, d: Directive) -> Options:
    """``management-query-remote``, ``-query-proxy``, ``-signal``, ``-forget-disconnect``,
    ``-up-down``, ``-client``: flags of the management interface (OpenVPN options.c,
    add_option(): MF_QUERY_REMOTE ... MF_CONNECT_AS_CLIENT); parser.py checks that
    'management' is given too."""
    changes: dict[str, Any] = {d.name.replace("-", "_"): True}
    return replace(st.opts, **changes)


DIRECTIVES: Mapping[str, Spec] = {
    # role
    "client": Spec(0, 0, _client),
    "server": Spec(2, 3, _server),
    "mode": Spec(1, 1, _mode),
    "pull": Spec(0, 0, _flag),
    "tls-client": Spec(0, 0, _flag),
    "tls-server": Spec(0, 0, _flag),
    # device
    "dev": Spec(1, 1, _dev),
    "dev-type": Spec(1, 1, _dev_type),
    "topology": Spec(1, 1, _choice_field),
    "tun-mtu": Spec(1, 1, _int_option),
    "mssfix": Spec(0, 2, _mssfix),
    "txqueuelen": Spec(1, 1, _int_option),
    "ifconfig": Spec(2, 2, _ifconfig),
    "tun-ipv6": Spec(0, 0, _tun_ipv6, inert=(
        "OpenVPN 2.6 ignores it too and says so: 'Note: option tun-ipv6 is ignored because "
        "modern operating systems do not need special IPv6 tun handling anymore.'")),
    "disable-dco": Spec(0, 0, _flag, inert=(
        "trivpn has no data-channel offload; OpenVPN with disable-dco runs its data channel "
        "in userspace, as trivpn always does")),
    # transport
    "proto": Spec(1, 1, _proto),
    "port": Spec(1, 1, _port),
    "lport": Spec(1, 1, _int_option),
    "rport": Spec(1, 1, _int_option),
    "local": Spec(1, 1, _str_option),
    "remote": Spec(1, 3, _remote),
    "remote-random": Spec(0, 0, _flag),
    "nobind": Spec(0, 0, _flag),
    "bind": Spec(0, 0, _flag),
    "resolv-retry": Spec(1, 1, _resolv_retry),
    "connect-retry": Spec(1, 2, _connect_retry),
    "server-poll-timeout": Spec(1, 1, _int_option),
    "connect-timeout": Spec(1, 1, _int_option),
    "float": Spec(0, 0, _flag),
    "max-packet-size": Spec(1, 1, _int_option),
    "sndbuf": Spec(1, 1, _int_option),
    "rcvbuf": Spec(1, 1, _int_option),
    "fast-io": Spec(0, 0, _flag, inert=(
        "an OpenVPN 2.6 I/O optimisation with no visible effect (forward.c: write to the UDP "
        "socket without polling it first); trivpn's link writes never wait for a poll "
        "first (link.py, send_nowait), and OpenVPN 2.7 ignores the option")),
    "tcp-nodelay": Spec(0, 0, _flag),
    # certificates and keys
    "ca": Spec(1, 1, _file_field, inline=True),
    "cert": Spec(1, 1, _file_field, inline=True),
    "key": Spec(1, 1, _file_field, inline=True),
    "extra-certs": Spec(1, 1, _file_field, inline=True),
    "dh": Spec(1, 1, _dh, inline=True),
    "crl-verify": Spec(1, 2, _crl_verify, inline=True),
    "tls-auth": Spec(1, 2, _tls_auth, inline=True),
    "tls-crypt": Spec(1, 2, _file_field, inline=True),
    "key-direction": Spec(1, 1, _choice_field),
    "remote-cert-tls": Spec(1, 1, _remote_cert_tls),
    "remote-cert-eku": Spec(1, 1, _str_option),
    "remote-cert-ku": Spec(0, None, _remote_cert_ku),
    "ns-cert-type": Spec(1, 1, _ns_cert_type),
    "verify-x509-name": Spec(1, 2, _verify_x509_name),
    "x509-username-field": Spec(1, 15, _x509_username_field),
    "ecdh-curve": Spec(1, 1, _ecdh_curve),
    "verify-client-cert": Spec(1, 1, _choice_field),
    "tls-version-min": Spec(1, 2, _tls_version_min),
    "tls-version-max": Spec(1, 1, _str_option),
    "tls-cipher": Spec(1, 1, _str_option),
    "tls-ciphersuites": Spec(1, 1, _str_option),
    "tls-groups": Spec(1, 1, _str_option),
    "tls-cert-profile": Spec(1, 1, _str_option),
    "auth-user-pass": Spec(0, 1, _auth_user_pass, inline=True),
    "auth-nocache": Spec(0, 0, _flag),
    "auth-retry": Spec(1, 1, _choice_field),
    # TLS timing
    "hand-window": Spec(1, 1, _int_option),
    "tls-timeout": Spec(1, 1, _int_option),
    "reneg-sec": Spec(1, 2, _reneg_sec),
    "reneg-bytes": Spec(1, 1, _int_option),
    "reneg-pkts": Spec(1, 1, _int_option),
    "tran-window": Spec(1, 1, _int_option),
    # data channel
    # in client (pull) and server mode OpenVPN 2.6 ignores --cipher for the negotiation (trivpn
    # repeats its warning); in TLS peer-to-peer mode it is the fallback cipher
    # (sessionsetup.data_ciphers_fallback())
    "cipher": Spec(1, 1, _cipher),
    "data-ciphers": Spec(1, 1, _data_ciphers),
    "ncp-ciphers": Spec(1, 1, _data_ciphers),
    "data-ciphers-fallback": Spec(1, 1, _data_ciphers_fallback),
    "auth": Spec(1, 1, _auth),
    "replay-window": Spec(1, 2, _replay_window),
    "mute-replay-warnings": Spec(0, 0, _flag),
    # server
    "ifconfig-pool-persist": Spec(1, 2, _ifconfig_pool_persist),
    "push": Spec(1, 1, _push),
    "client-to-client": Spec(0, 0, _flag),
    "max-clients": Spec(1, 1, _int_option),
    "duplicate-cn": Spec(0, 0, _flag),
    "connect-freq": Spec(2, 2, _connect_freq),
    "connect-freq-initial": Spec(2, 2, _connect_freq),
    # routing
    "route": Spec(1, 4, _route),
    "route-gateway": Spec(1, 1, _str_option),
    "route-nopull": Spec(0, 0, _flag),
    "pull-filter": Spec(2, 2, _pull_filter),
    "redirect-gateway": Spec(0, None, _redirect_gateway),
    # keepalive and lifecycle
    "keepalive": Spec(2, 2, _keepalive),
    "ping": Spec(1, 1, _int_option),
    "ping-restart": Spec(1, 1, _int_option),
    "ping-exit": Spec(1, 1, _int_option),
    "ping-timer-rem": Spec(0, 0, _flag, inert=(
        "OpenVPN only holds back the ping-restart/ping-exit timer until the peer's address "
        "is known (ping.h, check_ping_restart); trivpn always does: a client's timers run "
        "once its link to the resolved remote is open, a server's for a known peer address")),
    "inactive": Spec(1, 2, _inactive),
    "session-timeout": Spec(1, 1, _int_option),
    "explicit-exit-notify": Spec(0, 1, _explicit_exit_notify),
    "persist-key": Spec(0, 0, _flag),
    "persist-tun": Spec(0, 0, _flag),
    "user": Spec(1, 1, _str_option),
    "group": Spec(1, 1, _str_option),
    # logging and process
    "verb": Spec(1, 1, _int_option),
    "mute": Spec(1, 1, _int_option),
    "status": Spec(1, 2, _status),
    "status-version": Spec(1, 1, _int_option),
    "max-routes-per-client": Spec(1, 1, _int_option),
    "log": Spec(1, 1, _str_option),
    "log-append": Spec(1, 1, _str_option),
    "syslog": Spec(0, 1, _syslog),
    "writepid": Spec(1, 1, _str_option),
    "daemon": Spec(0, 1, _daemon),
    "management": Spec(2, 3, _management),
    "management-client-user": Spec(1, 1, _str_option),
    "management-client-group": Spec(1, 1, _str_option),
    "script-security": Spec(1, 1, _int_option),
    "push-peer-info": Spec(0, 0, _flag),
    "setenv": Spec(1, 2, _setenv),
    "setenv-safe": Spec(1, 2, _setenv),
    "ignore-unknown-option": Spec(1, None, _ignore_unknown_option),
    "config": Spec(1, 1, _noop),
    "cd": Spec(1, 1, _noop),

    # --- corpus and inert directives ---
    "nice": Spec(1, 1, _int_option),
    "tun-mtu-extra": Spec(1, 1, _checked_number, inert=(
        "OpenVPN only adds it to the size of the buffers it reads the device into (init.c, "
        "frame_finalize_options/payload_size += tun_mtu_extra); it changes nothing on the "
        "wire or on the device, and trivpn's buffers are sized per packet")),
    "disable-occ": Spec(0, 0, _checked_word, inert=(
        "OpenVPN 2.6 consults it only without TLS, in static-key mode, to send no OCC "
        "requests and compare no options strings (init.c, the occ timers, and occ.c, "
        "OCC_REPLY: both test '!TLS_MODE(c)'); trivpn does neither in any mode, and answers "
        "a peer's OCC request whatever it says, as OpenVPN does (occ.c, "
        "process_received_occ_msg())")),
    "ifconfig-nowarn": Spec(0, 0, _checked_word, inert=(
        "it only silences OpenVPN's warnings about 'ifconfig' addresses (init.c, init_tun(): "
        "'!c->options.ifconfig_nowarn'; options.c, options_string(), whose ifconfig part a 2.6 "
        "peer only compares to warn); trivpn issues neither warning")),
    "prng": Spec(1, 2, _ignored_with_notice, inert=(
        "OpenVPN 2.6 ignores it and says so: 'NOTICE: --prng option ignored (SSL library "
        "PRNG is used)' (options.c, add_option()); trivpn repeats the notice")),
    "max-routes": Spec(0, 1, _ignored_with_notice, inert=(
        "OpenVPN 2.6 ignores it and says so: 'DEPRECATED OPTION: --max-routes option "
        "ignored. The number of routes is unlimited as of OpenVPN 2.4.' (options.c); trivpn "
        "repeats the warning")),
    "route-method": Spec(1, 1, _checked_word, inert=(
        "Windows only: on other systems OpenVPN 2.6 accepts it and does nothing with it "
        "(options.c, add_option(): 'ignore when pushed to non-Windows OS')")),

    # --- compression and fragment ---
    "comp-lzo": Spec(0, 1, _comp_lzo),
    "compress": Spec(0, 1, _compress),
    "allow-compression": Spec(1, 1, _allow_compression),
    "comp-noadapt": Spec(0, 0, _comp_noadapt),
    "fragment": Spec(1, 2, _fragment),

    # --- credentials ---
    "static-challenge": Spec(2, 2, _static_challenge),
    "askpass": Spec(0, 1, _askpass),
    "management-hold": Spec(0, 0, _management_flag),
    "management-query-passwords": Spec(0, 0, _management_flag),
    "auth-token": Spec(1, 1, _auth_token),
    "auth-token-user": Spec(1, 1, _auth_token),

    # --- scripts and process ---
    "up": Spec(1, 1, _script),
    "down": Spec(1, 1, _script),
    "route-up": Spec(1, 1, _script),
    "route-pre-down": Spec(1, 1, _script),
    "ipchange": Spec(1, 1, _script),
    "tls-verify": Spec(1, 1, _script),
    "tls-export-cert": Spec(1, 1, _tls_export_cert),
    "up-restart": Spec(0, 0, _script_flag),
    "down-pre": Spec(0, 0, _script_flag),
    "ifconfig-noexec": Spec(0, 0, _script_flag),
    "route-noexec": Spec(0, 0, _script_flag),
    "up-delay": Spec(0, 0, _script_flag, inert=(
        "OpenVPN delays opening the device and running --up until the connection is "
        "established, which a pulling client does anyway (init.c, do_up: "
        "'if (c->options.up_delay || PULL_DEFINED(&c->options))'); trivpn clients always "
        "pull, so the device opens after the push with or without it")),
    "plugin": Spec(1, None, _plugin),
    "chroot": Spec(1, 1, _chroot),

    # --- dns ---
    "dhcp-option": Spec(1, 2, dhcp_option_directive),
    "dns": Spec(2, None, dns_directive),

    # --- connection handling and proxies ---
    **{name: Spec(lo, hi, handler, inline=inline, inert=inert)
       for name, (lo, hi, handler, inline, inert) in conn.SPECS.items()},

    # --- crypto and pki breadth ---
    "tls-crypt-v2": Spec(1, 2, _tls_crypt_v2, inline=True),
    "tls-crypt-v2-verify": Spec(1, 1, _tls_crypt_v2_verify),
    "tls-crypt-v2-max-age": Spec(1, 1, _tls_crypt_v2_max_age),
    "peer-fingerprint": Spec(1, 1, _peer_fingerprint, inline=True),
    "verify-hash": Spec(1, 2, _verify_hash, inline=True),
    "capath": Spec(1, 1, lambda st, d: replace(st.opts, capath=st.path(d.args[0]))),
    "pkcs12": Spec(1, 1, lambda st, d: replace(st.opts, pkcs12=st.file(d)), inline=True),


    # --- client breadth b ---
    "tls-exit": Spec(0, 0, lambda st, d: replace(st.opts, tls_exit=True)),
    "remap-usr1": Spec(1, 1, _remap_usr1),
    "mlock": Spec(0, 0, lambda st, d: replace(st.opts, mlock=True)),
    "preresolve": Spec(0, 1, _preresolve),
    "ip-remote-hint": Spec(0, 1, _preresolve),
    "management-log-cache": Spec(1, 1, _management_log_cache),
    "no-replay": Spec(0, 0, _no_replay),
    "redirect-private": Spec(0, None, _redirect_private),
    "lladdr": Spec(1, 1, _lladdr),
    "errors-to-stderr": Spec(0, 0, _checked_word, inert=(
        "OpenVPN logs to stdout and this sends its fatal and usage errors to stderr instead "
        "when no log file is given (error.c, errors_to_stderr() and msg_fp(): default_err); "
        "trivpn already writes its whole log and its errors to stderr unless a log file is "
        "given, so it always does what this asks")),
    "echo": Spec(0, None, _echo),
    "tmp-dir": Spec(1, 1, lambda st, d: replace(st.opts, tmp_dir=st.path(d.args[0]))),
    "dev-node": Spec(1, 1, lambda st, d: replace(st.opts, dev_node=str(st.path(d.args[0])))),
    "keying-material-exporter": Spec(2, 2, _keying_material_exporter, inert=(
        "OpenVPN 2.6 puts the material in the environment only for a plugin's "
        "OPENVPN_PLUGIN_TLS_FINAL call and deletes it right after (ssl.c, key_method_2_read(): "
        "export_user_keying_material(), then setenv_del()); scripts never see it, and trivpn "
        "loads no plugins (the down-root plugin line is run natively)")),
    "peer-id": Spec(1, 1, _checked_word, inert=(
        "in a config file OpenVPN only counts it in the packet overhead (mtu.c, "
        "frame_calculate_protocol_header_size(): 4 header bytes instead of 1), which trivpn "
        "always reserves (protocol/mss.py, data_overhead()); the data channel uses a peer id "
        "only when the server pushes one (init.c, do_deferred_options(): 'found & "
        "OPT_P_PEER_ID'), as trivpn does")),
    "key-derivation": Spec(1, 1, _pushed_protocol_option, inert=(
        "meant to be pushed: OpenVPN clears what a config file sets before every connection "
        "(options.c, pre_connect_restore(): 'o->imported_protocol_flags = 0'), so only a "
        "pushed value counts, as in trivpn")),
    "protocol-flags": Spec(1, None, _pushed_protocol_option, inert=(
        "meant to be pushed: OpenVPN clears what a config file sets before every connection "
        "(options.c, pre_connect_restore(): 'o->imported_protocol_flags = 0'), so only a "
        "pushed value counts, as in trivpn")),


    # --- client breadth a ---
    "passtos": Spec(0, 0, lambda st, d: replace(st.opts, passtos=True)),
    "socket-flags": Spec(1, None, _socket_flags),
    "bind-dev": Spec(1, 1, lambda st, d: replace(st.opts, bind_dev=d.args[0])),
    "mtu-disc": Spec(1, 1, lambda st, d: replace(
        st.opts, mtu_disc=v.choice(d, 0, MTU_DISC_TYPES))),
    "tun-mtu-max": Spec(1, 2, _tun_mtu_max),

    # --- server (issue 13) ---
    "client-config-dir": Spec(1, 1, _client_config_dir),
    "ccd-exclusive": Spec(0, 0, _ccd_exclusive),
    "ifconfig-pool": Spec(2, 3, _ifconfig_pool),
    "ifconfig-push": Spec(2, 3, _ccd_only),
    "ifconfig-ipv6-push": Spec(1, 2, _ccd_only),
    "iroute": Spec(1, 2, _ccd_only),
    "iroute-ipv6": Spec(1, 1, _ccd_only),
    "push-reset": Spec(0, 0, _ccd_only),
    "push-remove": Spec(1, 1, _ccd_only),
    "disable": Spec(0, 0, _ccd_only),

    # --- server scripts ---
    "client-connect": Spec(1, 1, _server_script),
    "client-disconnect": Spec(1, 1, _server_script),
    "learn-address": Spec(1, 1, _server_script),
    # --- ipv6 ---
    "server-ipv6": Spec(1, 1, _server_ipv6),
    "ifconfig-ipv6": Spec(2, 2, _ifconfig_ipv6),
    "ifconfig-ipv6-pool": Spec(1, 1, _ifconfig_ipv6_pool),
    "route-ipv6": Spec(1, 3, _route_ipv6),
    "block-ipv6": Spec(0, 0, _block_ipv6),
    # --- server sockets ---
    **{name: Spec(lo, hi, handler, inline=inline, inert=inert)
       for name, (lo, hi, handler, inline, inert) in serversockets.SPECS.items()},

    # --- server auth ---
    "auth-user-pass-verify": Spec(2, 2, _auth_user_pass_verify),
    "username-as-common-name": Spec(0, 0, _server_auth_flag),
    "auth-user-pass-optional": Spec(0, 0, _server_auth_flag),
    "auth-gen-token": Spec(0, 3, _auth_gen_token),
    "management-client-auth": Spec(0, 0, _server_auth_flag),
    "auth-gen-token-secret": Spec(1, 1, _auth_gen_token_secret, inline=True),

    # --- command line and check ---
    "suppress-timestamps": Spec(0, 0, _logging_flag),
    "machine-readable-output": Spec(0, 0, _logging_flag),

    # --- more ---
    "allow-pull-fqdn": Spec(0, 0, lambda st, d: replace(st.opts, allow_pull_fqdn=True)),
    "proto-force": Spec(1, 1, _proto_force),
    "persist-local-ip": Spec(0, 0, lambda st, d: replace(st.opts, persist_local_ip=True)),
    "http-proxy-override": Spec(2, 3, _http_proxy_override),
    "allow-recursive-routing": Spec(0, 0, lambda st, d: replace(
        st.opts, allow_recursive_routing=True)),
    "single-session": Spec(0, 0, lambda st, d: replace(st.opts, single_session=True)),
    "replay-persist": Spec(1, 1, lambda st, d: replace(
        st.opts, replay_persist=st.path(d.args[0]))),
    "shaper": Spec(1, 1, _shaper),
    "x509-track": Spec(1, 1, _x509_track),
    "client-nat": Spec(4, 4, _client_nat),

    # --- static ---
    "secret": Spec(1, 2, _secret, inline=True),
    "link-mtu": Spec(1, 1, _link_mtu),
    "udp-mtu": Spec(1, 1, _link_mtu),
    "compat-mode": Spec(1, 1, _compat_mode),

    # --- srvsmall ---
    "route-ipv6-gateway": Spec(1, 1, _route_ipv6_gateway),
    "opt-verify": Spec(0, 0, _opt_verify),
    "tcp-queue-limit": Spec(1, 1, _queue_size),
    "bcast-buffers": Spec(1, 1, _queue_size),
    "vlan-tagging": Spec(0, 0, lambda st, d: replace(st.opts, vlan_tagging=True)),
    "vlan-accept": Spec(1, 1, lambda st, d: replace(
        st.opts, vlan_accept=v.choice(d, 0, VLAN_ACCEPT))),
    "vlan-pvid": Spec(1, 1, lambda st, d: replace(st.opts, vlan_pvid=vlan_pvid(d))),

    # --- mgmt ---
    "management-query-remote": Spec(0, 0, _mgmt_flag),
    "management-query-proxy": Spec(0, 0, _mgmt_flag),
    "management-signal": Spec(0, 0, _mgmt_flag),
    "management-forget-disconnect": Spec(0, 0, _mgmt_flag),
    "management-up-down": Spec(0, 0, _mgmt_flag),
    "management-client": Spec(0, 0, _mgmt_flag),
}


# OpenVPN 2.6 directives trivpn recognizes but does not implement: always an error, never
# silently accepted (a config that relies on them would not behave as the user expects).
UNSUPPORTED: frozenset[str] = frozenset({
    "auth-token-gen",
    "engine",
    "explicit-exit-notify-push",
    "gremlin",
    "management-external-cert",
    "management-external-key",
    "memstats",
    "mtu-test",
    "pkcs11-cert-private",
    "pkcs11-id",
    "pkcs11-id-management",
    "pkcs11-pin-cache",
    "pkcs11-private-mode",
    "pkcs11-protected-authentication",
    "pkcs11-providers",
    "providers",
    "session-timeout-push",
})


# Why some UNSUPPORTED directives are refused (appended to the refusal; each claim about
# OpenVPN is checked against the binary in tests/interop/test_openvpn_claims.py).
UNSUPPORTED_WHY: Mapping[str, str] = {
    "mtu-test": "OpenVPN uses it to empirically measure and report the MTU with its peer; "
                "remove it, or measure with 'trivpn doctor'",
}


# Options OpenVPN 2.6 knows only on Windows, or no longer knows: on Linux it stops with
# "Unrecognized option" for each (tests/interop/test_openvpn_claims.py checks it), so trivpn
# refuses them too, saying why. Under 'setenv opt' or 'ignore-unknown-option' both only warn.
NOT_ON_LINUX: Mapping[str, str] = {
    "allow-nonadmin": "a Windows-only option",
    "block-outside-dns": "a Windows-only option",
    "cryptoapicert": "a Windows-only option (certificates from the Windows certificate store)",
    "dhcp-pre-release": "a Windows-only option",
    "dhcp-release": "a Windows-only option",
    "dhcp-renew": "a Windows-only option",
    "inetd": "no longer an option (inetd support was removed in OpenVPN 2.6)",
    "ip-win32": "a Windows-only option",
    "key-method": "no longer an option (key method 2 is the only one)",
    "keysize": "no longer an option (the cipher determines the key size)",
    "tun-max-mtu": "not an OpenVPN 2.6 option (2.6 spells it 'tun-mtu-max')",
    "register-dns": "a Windows-only option",
    "tap-sleep": "a Windows-only option",
    "win-sys": "a Windows-only option",
    "windows-driver": "a Windows-only option",
}
