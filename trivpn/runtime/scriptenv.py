"""The command lines and environment OpenVPN gives its scripts, as pure functions.

No I/O here (no trio, no clock, no process): every builder takes values and returns a list of
arguments or a ``dict`` of variables, so the rules are unit-tested by table and the server's
hooks (client-connect, learn-address, ...) can reuse the same builders. The process side is
:mod:`trivpn.runtime.scripts`.

Names and semantics follow OpenVPN 2.6 (checked against the real binary in
tests/interop/test_scripts_vs_openvpn.py):

* command line: the configured command split into words (OpenVPN's ``argv_parse_cmd``), then
  for ``up``/``down``/``route-pre-down`` ``DEV TUN_MTU 0 IFCONFIG_LOCAL
  IFCONFIG_REMOTE_OR_NETMASK init|restart`` (init.c, ``run_up_down``; the ``0`` is where
  2.5 passed the link MTU); ``route-up`` gets no arguments; ``ipchange`` gets one argument
  ``[AF_INET]IP PORT``.
* environment: only OpenVPN's own variables, not the parent's environment (run_command.c,
  ``openvpn_execve`` passes ``make_env_array(es)``). ``password`` is left out below
  ``script-security 3`` (env_set.c, ``env_allowed``).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from trivpn.config.options import Options, X509Track
from trivpn.protocol.dns import foreign_options
from trivpn.protocol.push import PushedOptions
from trivpn.protocol.tls import OPENSSL_SHORT_NAMES, peer_subject, remap_name
from trivpn.runtime.dns import client_dns_options

Env = dict[str, str]

SSEC_NONE, SSEC_BUILT_IN, SSEC_SCRIPTS, SSEC_PW_ENV = 0, 1, 2, 3
SCRIPT_SECURITY_WARNING = (
    "WARNING: External program may not be called unless '--script-security 2' or higher is "
    "enabled. See --help text or man page for detailed info.")
PASSWORD_VARIABLES = ("password",)


class CommandError(ValueError):
    """A configured command that cannot be split into a program and its arguments."""


def command_argv(command: str) -> list[str]:
    """The configured command as program and fixed arguments (OpenVPN's ``argv_parse_cmd``:
    words separated by blanks, quotes group). The program is run as given, without a shell
    and without a PATH search."""
    try:
        words = shlex.split(command, posix=True)
    except ValueError as exc:
        raise CommandError(f"cannot split command {command!r}: {exc}") from None
    if not words:
        raise CommandError("empty command")
    return words


def up_down_argv(command: str, *, dev: str, tun_mtu: int, local: str, remote: str,
                 context: str) -> list[str]:
    """``up``/``down``/``route-pre-down``: ``CMD DEV TUN_MTU 0 LOCAL REMOTE_OR_NETMASK
    init|restart`` (init.c, run_up_down)."""
    return [*command_argv(command), dev, str(tun_mtu), "0", local, remote, context]


def ipchange_argv(command: str, ip: str, port: int) -> list[str]:
    """``ipchange``: ``CMD "[AF_INET]IP PORT"`` — address and port in ONE argument, as
    OpenVPN 2.6 passes them (socket.c, link_socket_connection_initiated)."""
    family = "AF_INET6" if ":" in ip else "AF_INET"
    return [*command_argv(command), f"[{family}]{ip} {port}"]


def allowed(level: int, *, user_script: bool) -> bool:
    """Whether ``script-security LEVEL`` lets a program run (run_command.c,
    openvpn_execve_allowed): user scripts need 2, OpenVPN's built-in programs 1."""
    return level >= (SSEC_SCRIPTS if user_script else SSEC_BUILT_IN)


def filter_passwords(env: Mapping[str, str], level: int) -> Env:
    """The environment a program sees: without ``password`` below level 3."""
    if level >= SSEC_PW_ENV:
        return dict(env)
    return {k: v for k, v in env.items() if k not in PASSWORD_VARIABLES}


# --- what every script sees ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """The process-wide values (openvpn.c/init.c: ``config``, ``verb``, ``daemon*``)."""

    config: str
    verb: int
    daemon: bool
    daemon_pid: int
    daemon_start_time: int
    log_redirect: bool


def process_env(info: ProcessInfo, setenv: Iterable[tuple[str, str]] = ()) -> Env:
    """``config`` (as given on the command line), ``verb``, ``daemon`` (0/1),
    ``daemon_start_time``, ``daemon_pid``, ``daemon_log_redirect`` (0/1), then every
    ``setenv NAME VALUE`` / ``setenv-safe`` (already ``OPENVPN_NAME``)."""
    env = {
        "config": info.config,
        "verb": str(info.verb),
        "daemon": "1" if info.daemon else "0",
        "daemon_start_time": str(info.daemon_start_time),
        "daemon_pid": str(info.daemon_pid),
        "daemon_log_redirect": "1" if info.log_redirect else "0",
    }
    env.update(setenv)
    return env


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    host: str
    port: int
    proto: str  # "udp", "tcp-client", ...


def remotes_env(remotes: Sequence[RemoteEntry]) -> Env:
    """``remote_N``, ``remote_port_N``, ``proto_N`` for each configured remote, N from 1
    (options.c, setenv_settings / setenv_connection_entry)."""
    env: Env = {}
    for i, r in enumerate(remotes, 1):
        env[f"remote_{i}"] = r.host
        env[f"remote_port_{i}"] = str(r.port)
        env[f"proto_{i}"] = r.proto
    return env


def link_env(ip: str, port: int, *, trusted: bool) -> Env:
    """The peer's address: ``untrusted_ip``/``untrusted_port`` once a packet came from it,
    ``trusted_ip``/``trusted_port`` once it authenticated (IPv6: ``..._ip6``)."""
    suffix = "6" if ":" in ip else ""
    env = {f"untrusted_ip{suffix}": ip, "untrusted_port": str(port)}
    if trusted:
        env[f"trusted_ip{suffix}"] = ip
        env["trusted_port"] = str(port)
    return env


# --- the peer's certificate -------------------------------------------------------------------

def _hex_colons(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def serial_hex(serial: int) -> str:
    """``tls_serial_hex_N``: the serial's bytes as lower-case hex pairs with colons."""
    length = max(1, (serial.bit_length() + 7) // 8)
    return _hex_colons(serial.to_bytes(length, "big"))


def certificate_env(cert: x509.Certificate, depth: int,
                    track: Sequence[X509Track] = ()) -> Env:
    """One certificate at ``depth`` (0: the peer's own): ``X509_{depth}_{FIELD}`` for each
    subject field (OpenSSL short names) or, with ``x509-track``, only the tracked ones
    (:func:`tracked_env`), ``tls_id_{depth}`` (the subject), ``tls_serial_{depth}``
    (decimal), ``tls_serial_hex_{depth}``, ``tls_digest_{depth}`` (SHA-1) and
    ``tls_digest_sha256_{depth}`` (ssl_verify.c, verify_cert_set_env)."""
    env: Env = {}
    if track:
        env.update(tracked_env(cert, depth, track))
    else:
        for attr in cert.subject:
            short = OPENSSL_SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
            value = attr.value if isinstance(attr.value, str) else attr.value.hex()
            env[f"X509_{depth}_{short}"] = remap_name(value)
    der = cert.public_bytes(Encoding.DER)
    env[f"tls_id_{depth}"] = peer_subject(cert.subject)
    env[f"tls_serial_{depth}"] = str(cert.serial_number)
    env[f"tls_serial_hex_{depth}"] = serial_hex(cert.serial_number)
    env[f"tls_digest_{depth}"] = _hex_colons(hashlib.sha1(der).digest())
    env[f"tls_digest_sha256_{depth}"] = _hex_colons(hashlib.sha256(der).digest())
    return env


_FINGERPRINTS = {"1.3.14.3.2.26": hashlib.sha1, "2.16.840.1.101.3.4.2.1": hashlib.sha256}


def tracked_env(cert: x509.Certificate, depth: int, track: Sequence[X509Track]) -> Env:
    """``x509-track``: ``X509_{depth}_{NAME}`` for each tracked NAME as written, at depth 0,
    or at every depth when written ``+NAME`` (OpenVPN ssl_verify_openssl.c,
    x509_setenv_track()): SHA1/SHA256 are the certificate's fingerprint in upper-case hex
    with colons, any other name the first subject field of that type (CR/LF as '?')."""
    env: Env = {}
    for xt in track:
        if depth and not xt.full_chain:
            continue
        digest = _FINGERPRINTS.get(xt.oid)
        if digest is not None:
            value = ":".join(f"{b:02X}" for b in digest(cert.public_bytes(Encoding.DER)).digest())
        else:
            found = cert.subject.get_attributes_for_oid(x509.ObjectIdentifier(xt.oid))
            if not found:
                continue
            raw = found[0].value
            value = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        env[f"X509_{depth}_{xt.name}"] = value.replace("\r", "?").replace("\n", "?")
    return env


def chain_of(peer: x509.Certificate, authorities: Sequence[x509.Certificate],
             limit: int = 16) -> list[x509.Certificate]:
    """The peer's certificate followed by its issuers found among ``authorities`` (matched
    by name and signature), depth 0 first; stops at a self-signed certificate."""
    chain = [peer]
    while len(chain) < limit:
        last = chain[-1]
        if last.issuer == last.subject and len(chain) > 1:
            break
        issuer = next((ca for ca in authorities
                       if ca.subject == last.issuer and ca not in chain
                       and _signed_by(last, ca)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def peer_env(chain: Sequence[x509.Certificate], common_name: str,
             track: Sequence[X509Track] = ()) -> Env:
    """Every certificate of the verified chain (depth 0 = the peer) and ``common_name``
    (the x509-username-field value, as OpenVPN sets it after depth 0 verified)."""
    env: Env = {}
    for depth in range(len(chain) - 1, -1, -1):  # OpenVPN verifies the deepest first
        env.update(certificate_env(chain[depth], depth, track))
    env["common_name"] = common_name
    return env


# --- the tunnel and its routes ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TunnelInfo:
    """What the up/down scripts are told about the device (tun.c, do_ifconfig_setenv)."""

    dev: str
    dev_type: str  # "tun", "tap" or "null"
    tun_mtu: int
    local: str | None = None  # ifconfig LOCAL
    remote_or_netmask: str | None = None
    point_to_point: bool = False  # TUN with net30/p2p: the second value is the peer
    local_ipv6: str | None = None
    netbits_ipv6: int | None = None
    remote_ipv6: str | None = None


def tunnel_env(t: TunnelInfo) -> Env:
    """``dev``, ``dev_type``, ``tun_mtu``, ``ifconfig_local`` with ``ifconfig_remote``
    (point-to-point) or ``ifconfig_netmask``, and the IPv6 ``ifconfig_ipv6_*``."""
    env = {"dev": t.dev, "dev_type": t.dev_type, "tun_mtu": str(t.tun_mtu)}
    if t.local is not None and t.remote_or_netmask is not None:
        env["ifconfig_local"] = t.local
        key = "ifconfig_remote" if t.point_to_point else "ifconfig_netmask"
        env[key] = t.remote_or_netmask
    if t.local_ipv6 is not None:
        env["ifconfig_ipv6_local"] = t.local_ipv6
        env["ifconfig_ipv6_netbits"] = str(t.netbits_ipv6 or 0)
        env["ifconfig_ipv6_remote"] = t.remote_ipv6 or "::"
    return env


def up_down_values(t: TunnelInfo) -> tuple[str, str]:
    """The LOCAL and REMOTE_OR_NETMASK arguments (empty when there is no address)."""
    return t.local or "", t.remote_or_netmask or ""


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One ``route`` line after defaults: network, netmask, gateway, metric (if given)."""

    network: str
    netmask: str
    gateway: str
    metric: int | None = None


def routes_env(routes: Sequence[RouteEntry], *, vpn_gateway: str | None,
               net_gateway: str | None) -> Env:
    """``route_vpn_gateway``, ``route_net_gateway`` and ``route_network_N``,
    ``route_netmask_N``, ``route_gateway_N``, ``route_metric_N`` (only when a metric was
    given), N from 1 in the order the routes were configured, then pushed (route.c,
    setenv_routes; the redirect-gateway routes are not listed)."""
    env: Env = {}
    if vpn_gateway is not None:
        env["route_vpn_gateway"] = vpn_gateway
    if net_gateway is not None:
        env["route_net_gateway"] = net_gateway
    for i, r in enumerate(routes, 1):
        env[f"route_network_{i}"] = r.network
        env[f"route_netmask_{i}"] = r.netmask
        env[f"route_gateway_{i}"] = r.gateway
        if r.metric is not None:
            env[f"route_metric_{i}"] = str(r.metric)
    return env


def route_ipv6_env(routes: Sequence[tuple[str, str | None]]) -> Env:
    """``route_ipv6_network_N`` (``NET/BITS``) and ``route_ipv6_gateway_N``, N from 1."""
    env: Env = {}
    for i, (network, gateway) in enumerate(routes, 1):
        env[f"route_ipv6_network_{i}"] = network
        if gateway is not None:
            env[f"route_ipv6_gateway_{i}"] = gateway
    return env


def foreign_options_env(options: Iterable[str]) -> Env:
    """``foreign_option_N`` (N from 1): the configured ``dhcp-option`` lines, then the
    pushed ones, each as the option's text (``dhcp-option DNS 198.18.9.9``), what the classic
    update-resolv-conf script reads (options.c, foreign_option)."""
    return {f"foreign_option_{i}": text for i, text in enumerate(options, 1)}


def script_env(script_type: str, *parts: Mapping[str, str],
               context: str | None = None, signal: str | None = None) -> Env:
    """The parts merged in order (later wins), then ``script_type`` and, for up/down style
    scripts, ``script_context`` (init|restart) and, at down, ``signal`` (e.g. sigterm)."""
    env: Env = {}
    for part in parts:
        env.update(part)
    if signal is not None:
        env["signal"] = signal
    if context is not None:
        env["script_context"] = context
    env["script_type"] = script_type
    return env


# --- a client's values, from its options and the server's push ---------------------------------

def client_remotes(options: Options) -> list[RemoteEntry]:
    return [RemoteEntry(r.host, r.port, r.proto) for r in options.remotes]


def client_foreign_options(options: Options, pushed: PushedOptions | None) -> list[str]:
    """The ``foreign_option_N`` texts: configured dhcp-option lines, then the pushed ones,
    with ``dns`` servers and search domains in place of their dhcp-option kinds, as OpenVPN
    2.6 (options.c, foreign_options_copy_dns(); protocol/dns.py, foreign_options())."""
    dns, dhcp = client_dns_options(options, pushed)
    return foreign_options(dns, dhcp)


def client_dns_env(options: Options, pushed: PushedOptions | None) -> Env:
    """The ``dns_*`` variables (dns.c, setenv_dns_options(); DnsOptions.script_env())."""
    dns, _ = client_dns_options(options, pushed)
    return dns.script_env()


def client_tunnel_info(options: Options, pushed: PushedOptions | None, dev: str) -> TunnelInfo:
    """The device values OpenVPN tells the scripts (the pushed ifconfig wins)."""
    pushed = pushed or PushedOptions()
    topology = pushed.topology or options.topology
    local: str | None = None
    second: str | None = None
    if pushed.ifconfig is not None:
        local, second = str(pushed.ifconfig.local), str(pushed.ifconfig.remote_or_netmask)
    elif options.ifconfig is not None:
        local, second = str(options.ifconfig.local), str(options.ifconfig.remote)
    v6 = pushed.ifconfig_ipv6
    return TunnelInfo(
        dev=dev, dev_type="null" if options.dev_null else options.dev_type,
        tun_mtu=pushed.tun_mtu or options.tun_mtu, local=local, remote_or_netmask=second,
        point_to_point=(not options.dev_null and options.dev_type == "tun"
                        and topology in ("net30", "p2p")),
        local_ipv6=str(v6.address) if v6 is not None else None,
        netbits_ipv6=v6.prefixlen if v6 is not None else None,
        remote_ipv6=str(v6.remote) if v6 is not None else None)


def vpn_gateway(options: Options, pushed: PushedOptions | None, info: TunnelInfo) -> str | None:
    """route-gateway (pushed, then configured), else the point-to-point peer."""
    gateway = pushed.route_gateway if pushed is not None else None
    if gateway is None and options.route_gateway is not None:
        gateway = options.route_gateway  # type: ignore[assignment]
    if gateway is not None and str(gateway) != "dhcp":
        return str(gateway)
    return info.remote_or_netmask if info.point_to_point else None


def client_routes(options: Options, pushed: PushedOptions | None, *, vpn_gw: str | None,
                  net_gw: str | None, remote_ip: str | None) -> list[RouteEntry]:
    """Configured then pushed ``route`` lines with keywords and defaults resolved; a route
    whose gateway is unknown is left out (OpenVPN does not add it either)."""
    keywords = {"vpn_gateway": vpn_gw, "net_gateway": net_gw, "remote_host": remote_ip}
    raw: list[tuple[str, str, str | None, int | None]] = [
        (r.network, str(r.netmask), r.gateway, r.metric) for r in options.routes]
    if pushed is not None:
        raw += [(str(r.network), str(r.netmask) if r.netmask is not None else "255.255.255.255",
                 str(r.gateway) if r.gateway is not None else None, r.metric)
                for r in pushed.routes]
    out = []
    for network, netmask, gateway, metric in raw:
        net = keywords.get(network, network)
        gw = keywords.get(gateway, gateway) if gateway is not None else vpn_gw
        if net is None or gw is None:
            continue
        out.append(RouteEntry(net, netmask, gw, metric))
    return out


# --- the server's scripts ---------------------------------------------------------------------
# Names and values as an OpenVPN 2.6 server sets them (multi.c, multi_client_connect_setenv,
# multi_set_virtual_addr_env, multi_client_disconnect_setenv, learn_address_script; checked
# side by side with a real openvpn server in tests/interop/test_server_scripts_vs_openvpn.py).

def server_link_env(local: str | None, lport: int, proto: str, rport: int) -> Env:
    """``local_1`` (when ``local`` is set), ``local_port_1``, ``proto_1`` and
    ``remote_port_1`` of the server's one connection entry (options.c,
    setenv_connection_entry)."""
    env: Env = {}
    if local is not None:
        env["local_1"] = local
    env["local_port_1"] = str(lport)
    env["proto_1"] = proto
    env["remote_port_1"] = str(rport)
    return env


def peer_info_env(raw: Mapping[str, str]) -> Env:
    """The client's peer-info lines whose names start with ``IV_`` or ``UV_`` (ssl.c,
    output_peer_info_env: names of letters, digits and ``_`` only)."""
    return {k: v for k, v in raw.items()
            if k.startswith(("IV_", "UV_")) and k.replace("_", "").isalnum() and k.isascii()}


def pool_env(remote_ip: str, second: str, *, point_to_point: bool) -> Env:
    """The client's address: ``ifconfig_pool_remote_ip`` and ``ifconfig_pool_netmask``
    (topology subnet, tap) or ``ifconfig_pool_local_ip`` (net30/p2p: the server's end of the
    client's pair) (multi.c, multi_set_virtual_addr_env)."""
    key = "ifconfig_pool_local_ip" if point_to_point else "ifconfig_pool_netmask"
    return {"ifconfig_pool_remote_ip": remote_ip, key: second}


def pool6_env(remote_ip6: str, local_ip6: str, netbits: int) -> Env:
    """The client's IPv6 address: ``ifconfig_pool_remote_ip6``, ``ifconfig_pool_local_ip6``
    (the server's tun address) and ``ifconfig_pool_ip6_netbits`` (multi.c,
    multi_set_virtual_addr_env)."""
    return {"ifconfig_pool_remote_ip6": remote_ip6, "ifconfig_pool_local_ip6": local_ip6,
            "ifconfig_pool_ip6_netbits": str(netbits)}


def connect_time_env(unix_time: int, ascii_time: str) -> Env:
    """``time_unix`` and ``time_ascii`` (``YYYY-MM-DD HH:MM:SS``, local time) of the
    client's instance creation."""
    return {"time_ascii": ascii_time, "time_unix": str(unix_time)}


def disconnect_env(bytes_received: int, bytes_sent: int, duration: int) -> Env:
    """``bytes_received``/``bytes_sent`` (link bytes of the client, control channel
    included) and ``time_duration`` in seconds (multi.c, multi_client_disconnect_setenv)."""
    return {"bytes_received": str(bytes_received), "bytes_sent": str(bytes_sent),
            "time_duration": str(duration)}


def client_connect_argv(command: str, config_file: str) -> list[str]:
    """``client-connect``: ``CMD DYNAMIC_CONFIG_FILE`` (multi.c,
    multi_client_connect_call_script)."""
    return [*command_argv(command), config_file]


def learn_address_argv(command: str, op: str, address: str, common_name: str | None) -> list[str]:
    """``learn-address``: ``CMD add|update|delete ADDRESS [CN]``: the common name only while
    the client instance exists (not for the delete of a reaped route)."""
    return [*command_argv(command), op, address,
            *([common_name] if common_name is not None else [])]


def learn_address_text(network: int, bits: int | None) -> str:
    """An address as learn-address prints it: ``A.B.C.D`` for the client's own address
    (``bits`` None), ``A.B.C.D/BITS`` for an iroute network, even a /32 (multi.c,
    multi_learn_in_addr_t; mroute.c, mroute_addr_print)."""
    text = ".".join(str((network >> s) & 0xFF) for s in (24, 16, 8, 0))
    return text if bits is None else f"{text}/{bits}"
