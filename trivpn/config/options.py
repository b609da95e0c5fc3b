"""Typed, frozen results of parsing an OpenVPN config file.

Everything here is plain data. Parsing lives in ``parser.py``/``directives.py``; values derived
from several options (push list, pool, effective pings) live in ``derive.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from trivpn.config.errors import ConfigError, location_text
from trivpn.protocol.clientnat import NatRule
from trivpn.protocol.dns import DnsOptions
from trivpn.protocol.push import PullFilter

Role = Literal["client", "server"]
Mode = Literal["p2p", "server"]
Proto = Literal["udp", "tcp-server", "tcp-client"]
Family = Literal[4, 6]
DevType = Literal["tun", "tap"]
Topology = Literal["net30", "subnet", "p2p"]
CompressionFraming = Literal["lzo-stub", "stub", "stub-v2", "lzo", "lz4", "lz4-v2"]
X509NameType = Literal["subject", "name", "name-prefix"]

DEFAULT_DATA_CIPHERS: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """Something OpenVPN accepts but only warns about, or that is deprecated or weak."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{location_text(self.path, self.line)}: {self.message}"


@dataclass(frozen=True, slots=True)
class FileSource:
    """A file-valued option (``ca``, ``cert``, ``tls-auth``...): a path or an inline block.

    ``config_path``/``line`` say where the directive was written. ``path`` is the resolved file
    (None for inline blocks), ``inline`` the block's content, ``text`` the file's content once
    loaded. Contents are never shown in ``repr``.
    """

    directive: str
    config_path: Path
    line: int
    path: Path | None
    inline: str | None = field(default=None, repr=False)
    text: str | None = field(default=None, repr=False)

    @property
    def is_inline(self) -> bool:
        return self.inline is not None

    def describe(self) -> str:
        """``'/etc/openvpn/ca.crt'`` or ``inline <ca> block``, for messages."""
        if self.path is None:
            return f"inline <{self.directive}> block"
        return f"'{self.path}'"

    def read_text(self) -> str:
        """The content: inline text, already loaded text, or the file read now.

        Raises ConfigError naming the config file, the directive's line and the unreadable file.
        """
        if self.inline is not None:
            return self.inline
        if self.text is not None:
            return self.text
        assert self.path is not None
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            reason = exc.strerror or exc.__class__.__name__
            raise ConfigError(
                f"cannot read {self.directive} file '{self.path}': {reason}",
                self.config_path, self.line) from None
        return data.decode("utf-8", errors="surrogateescape")

    def reread(self) -> FileSource:
        """A copy with the file read again now (inline blocks are returned unchanged)."""
        if self.path is None:
            return self
        return replace(self, text=None).loaded()

    def loaded(self) -> FileSource:
        """A copy with ``text`` filled in (inline blocks are returned unchanged)."""
        if self.inline is not None or self.text is not None:
            return self
        return replace(self, text=self.read_text())


@dataclass(frozen=True, slots=True)
class ServerBridge:
    """``server-bridge GW MASK POOL_START POOL_END``: a TAP server whose device sits in a bridge
    that holds GW; clients get addresses POOL_START..POOL_END with MASK and route-gateway GW."""

    gateway: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address
    pool_start: ipaddress.IPv4Address
    pool_end: ipaddress.IPv4Address
    line: int = 0


@dataclass(frozen=True, slots=True)
class PortShare:
    """``port-share HOST PORT [DIR]``: a TCP server hands connections that do not start like an
    OpenVPN client to HOST:PORT; ``journal`` is the directory of OpenVPN's origin files."""

    host: str
    port: int
    journal: Path | None = None


@dataclass(frozen=True, slots=True)
class HttpProxy:
    """``http-proxy HOST PORT [AUTHFILE|auto|auto-nct] [AUTH-METHOD]`` with its
    ``http-proxy-option``s; ``host`` is None while only options were given."""

    host: str | None = None
    port: int = 0
    auth: Literal["none", "basic", "auto", "auto-nct", "ntlm", "ntlm2"] = "none"
    credentials: FileSource | None = None  # user/pass lines (or <http-proxy-user-pass>)
    version: str = "1.0"
    agent: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class SocksProxy:
    """``socks-proxy HOST [PORT [AUTHFILE]]`` (PORT defaults to 1080)."""

    host: str
    port: int = 1080
    credentials: FileSource | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class X509Track:
    """``x509-track [+]NAME``: ``name`` as written (without '+'), ``oid`` its dotted OID,
    ``full_chain`` with '+' (every depth, not only the peer's certificate)."""

    name: str
    oid: str
    full_chain: bool = False


@dataclass(frozen=True, slots=True)
class Remote:
    """One connection profile: a ``remote`` line, or a ``<connection>`` block."""

    host: str
    port: int
    proto: Proto
    family: Family | None
    line: int
    # --- connection handling and proxies ---
    http_proxy: HttpProxy | None = None
    socks_proxy: SocksProxy | None = None
    server_poll_timeout: int | None = None  # connect-timeout inside a <connection> block
    explicit_exit_notify: int | None = None  # explicit-exit-notify inside a block


@dataclass(frozen=True, slots=True)
class Route:
    """``route NET [MASK] [GW] [METRIC]``. NET/GW may be hostnames or OpenVPN keywords
    (``vpn_gateway``, ``net_gateway``, ``remote_host``)."""

    network: str
    netmask: ipaddress.IPv4Address
    gateway: str | None
    metric: int | None
    line: int


@dataclass(frozen=True, slots=True)
class ServerHelper:
    """``server NET MASK [nopool]``."""

    network: ipaddress.IPv4Network
    nopool: bool
    line: int


@dataclass(frozen=True, slots=True)
class Keepalive:
    interval: int
    timeout: int
    line: int


@dataclass(frozen=True, slots=True)
class Ifconfig:
    """``ifconfig LOCAL REMOTE-or-NETMASK`` (peer address for net30/p2p, netmask for subnet)."""

    local: ipaddress.IPv4Address
    remote: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class IfconfigPool:
    """``ifconfig-pool START END [NETMASK]``: the client addresses a server hands out."""

    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address
    netmask: ipaddress.IPv4Address | None


@dataclass(frozen=True, slots=True)
class Ifconfig6:
    """``ifconfig-ipv6 ADDRESS/BITS REMOTE`` (a device address and its tunnel peer)."""

    address: ipaddress.IPv6Address
    bits: int
    remote: ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Route6:
    """``route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]``."""

    network: ipaddress.IPv6Network
    gateway: ipaddress.IPv6Address | None
    metric: int | None
    line: int


@dataclass(frozen=True, slots=True)
class PeriodicFile:
    """A file rewritten every ``seconds`` (``status``, ``ifconfig-pool-persist``)."""

    path: Path
    seconds: int


@dataclass(frozen=True, slots=True)
class ConnectFreq:
    """``connect-freq N SECONDS`` / ``connect-freq-initial N SECONDS``: at most ``max`` events
    per window of ``seconds``."""

    max: int
    seconds: int


@dataclass(frozen=True, slots=True)
class ConnectRetry:
    seconds: int = 1
    max_seconds: int = 300


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    size: int = 64
    seconds: int = 15


@dataclass(frozen=True, slots=True)
class Mssfix:
    """``mssfix [MAX [mtu|fixed]]``; 0 disables. The 2.6 default is ``1492 mtu``."""

    max: int = 1492
    mtu: bool = True
    fixed: bool = False


@dataclass(frozen=True, slots=True)
class VerifyX509Name:
    name: str
    type: X509NameType = "subject"


@dataclass(frozen=True, slots=True)
class Management:
    """``management IP PORT [PWFILE]`` or ``management PATH unix [PWFILE]``."""

    address: str
    port: int | None
    unix: bool
    password_file: str | None


@dataclass(frozen=True, slots=True)
class StaticChallenge:
    """``static-challenge TEXT ECHO``: the prompt and whether the response is echoed."""

    text: str
    echo: bool


@dataclass(frozen=True, slots=True)
class TlsVersion:
    version: str
    or_highest: bool = False


@dataclass(frozen=True, slots=True)
class Options:
    """A parsed, validated OpenVPN config. Defaults are OpenVPN 2.6's."""

    config_path: Path
    base_dir: Path
    # role
    role: Role = "client"
    tls_role: Role = "client"
    pull: bool = False
    mode: Mode = "p2p"
    # device
    dev: str = "tun"
    dev_type: DevType = "tun"
    topology: Topology = "net30"
    tun_mtu: int = 1500
    mssfix: Mssfix = Mssfix()
    txqueuelen: int | None = None
    ifconfig: Ifconfig | None = None
    # transport
    proto: Proto = "udp"
    family: Family | None = None
    port: int = 1194
    lport: int = 1194
    rport: int = 1194
    local: str | None = None
    remotes: tuple[Remote, ...] = ()
    remote_random: bool = False
    nobind: bool = False
    resolv_retry: int | None = None
    connect_retry: ConnectRetry = ConnectRetry()
    server_poll_timeout: int | None = None
    float_: bool = False
    max_packet_size: int = 1250
    sndbuf: int | None = None
    rcvbuf: int | None = None
    fast_io: bool = False
    tcp_nodelay: bool = False
    # certificates and keys
    ca: FileSource | None = None
    cert: FileSource | None = None
    key: FileSource | None = None
    extra_certs: FileSource | None = None
    dh: FileSource | Literal["none"] | None = None
    crl_verify: FileSource | None = None
    crl_verify_dir: Path | None = None  # crl-verify DIR dir
    tls_auth: FileSource | None = None
    tls_crypt: FileSource | None = None
    key_direction: int | None = None
    remote_cert_tls: Role | None = None
    remote_cert_eku: str | None = None
    # OpenVPN's remote_cert_ku array: accepted key-usage masks, 0xFFFF first = "present" only
    # (remote-cert-ku without argument, remote-cert-tls); None when never set.
    remote_cert_ku: tuple[int, ...] | None = None
    ns_cert_type: Role | None = None
    x509_username_field: tuple[str, ...] = ("CN",)
    ecdh_curve: str | None = None
    verify_x509_name: VerifyX509Name | None = None
    verify_client_cert: Literal["none", "optional", "require"] = "require"
    tls_version_min: TlsVersion = TlsVersion("1.2")
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    tls_cert_profile: str | None = None
    auth_user_pass: FileSource | Literal["prompt"] | None = None
    auth_nocache: bool = False
    auth_retry: Literal["none", "nointeract", "interact"] = "none"
    # TLS timing
    hand_window: int = 60
    tls_timeout: int = 2
    reneg_sec: int = 3600
    reneg_sec_min: int | None = None
    reneg_bytes: int | None = None
    reneg_pkts: int | None = None
    tran_window: int = 3600
    # data channel
    cipher: str | None = None
    data_ciphers: tuple[str, ...] = DEFAULT_DATA_CIPHERS
    data_ciphers_fallback: str | None = None
    auth: str = "SHA1"
    replay_window: ReplayWindow = ReplayWindow()
    mute_replay_warnings: bool = False
    compression: CompressionFraming | None = None
    allow_compression: Literal["no", "asym", "yes"] = "no"  # effective, as 2.6 settles it
    # server
    server: ServerHelper | None = None
    ifconfig_pool_persist: PeriodicFile | None = None
    pushes: tuple[str, ...] = ()
    client_to_client: bool = False
    max_clients: int = 1024
    max_routes_per_client: int = 256
    duplicate_cn: bool = False
    # stateless replies to client hard resets (UDP), and new client instances (UDP)
    connect_freq_initial: ConnectFreq = ConnectFreq(100, 10)
    connect_freq: ConnectFreq | None = None
    # routing (own)
    routes: tuple[Route, ...] = ()
    route_gateway: str | None = None
    redirect_gateway: tuple[str, ...] | None = None
    dhcp_options: tuple[tuple[str, ...], ...] = ()
    # what a client takes from the server's push
    route_nopull: bool = False
    pull_filters: tuple[PullFilter, ...] = ()
    # keepalive and lifecycle
    keepalive: Keepalive | None = None
    ping: int | None = None
    ping_restart: int | None = None
    ping_exit: int | None = None
    ping_timer_rem: bool = False
    inactive: int | None = None
    inactive_bytes: int = 0
    session_timeout: int | None = None
    explicit_exit_notify: int = 0
    persist_key: bool = False
    persist_tun: bool = False
    user: str | None = None
    group: str | None = None
    # logging and process
    verb: int = 1
    mute: int | None = None
    status: PeriodicFile | None = None
    status_version: int = 1
    log: Path | None = None
    log_append: bool = False
    syslog: str | None = None
    writepid: Path | None = None
    daemon: bool = False
    daemon_name: str = "openvpn"  # daemon [NAME]: the name given to the system logger
    management: Management | None = None
    management_client_user: str | None = None
    management_client_group: str | None = None
    script_security: int = 1
    push_peer_info: bool = False
    setenv: tuple[tuple[str, str], ...] = ()
    ignore_unknown_option: tuple[str, ...] = ()

    # --- corpus and inert directives ---
    nice: int = 0  # added to the process's niceness at start (OpenVPN: platform_nice())

    # --- compression and fragment ---
    comp_flags: int = 0  # OpenVPN's compress_options flags (config/directives.py COMP_F_*)
    fragment: int = 0  # fragment N: no UDP payload above N bytes (0: no fragment layer)
    fragment_mtu: bool = False  # fragment N mtu: N counts the outer IP and UDP headers

    # --- credentials ---
    static_challenge: StaticChallenge | None = None
    askpass: FileSource | Literal["prompt"] | None = None  # encrypted private key's password
    management_hold: bool = False
    management_query_passwords: bool = field(default=False, repr=False)  # no "password" in repr
    auth_token: str | None = field(default=None, repr=False)  # config-given auth-token
    auth_token_user: str | None = None  # base64 username for it

    # --- scripts and process ---
    # user-defined commands (OpenVPN's command line: program and fixed arguments)
    up: str | None = None
    down: str | None = None
    route_up: str | None = None
    route_pre_down: str | None = None
    ipchange: str | None = None
    tls_verify: str | None = None  # tls-verify CMD: CMD DEPTH SUBJECT per certificate
    tls_export_cert: Path | None = None  # tls-export-cert DIR: peer_cert for tls-verify
    up_restart: bool = False
    down_pre: bool = False
    ifconfig_noexec: bool = False
    route_noexec: bool = False
    # plugin openvpn-plugin-down-root.so "CMD": CMD runs as root at down (before user/group)
    down_root: str | None = None

    # --- dns ---
    dns: DnsOptions = field(default_factory=DnsOptions)

    # --- connection handling and proxies ---
    connect_retry_max: int | None = None  # None: try for ever
    remote_random_hostname: bool = False
    persist_remote_ip: bool = False
    route_delay: tuple[int, int] | None = None  # (seconds, window)
    route_metric: int | None = None
    mark: int | None = None  # SO_MARK of the link socket
    http_proxy: HttpProxy | None = None
    socks_proxy: SocksProxy | None = None
    connection_blocks: bool = False  # the remotes come from <connection> blocks

    # --- crypto and pki breadth ---
    tls_crypt_v2: FileSource | None = None  # a client's key, or the server's key
    tls_crypt_v2_verify: str | None = None  # server: command judging a client key's metadata
    tls_crypt_v2_max_age: int = 0  # server: days; 0 = no limit
    peer_fingerprints: tuple[bytes, ...] = ()  # SHA-256 of accepted peer certificates
    pkcs12: FileSource | None = None  # certificate, key and CA in one bundle
    verify_hash: tuple[bytes, ...] = ()  # fingerprints of the CA that signed the peer
    verify_hash_algo: str = "SHA1"  # or SHA256
    capath: Path | None = None  # OpenSSL hashed directory of CA certificates and CRLs

    # --- client breadth b ---
    tls_exit: bool = False  # a TLS error ends the process instead of restarting
    remap_usr1: Literal["SIGHUP", "SIGTERM"] | None = None  # what every restart becomes
    mlock: bool = False  # mlockall() at start (runtime/mlock.py)
    echo: tuple[str, ...] = ()  # echo lines whose first word starts with "msg": logged
    lladdr: str | None = None  # the tap device's MAC address
    dev_node: str | None = None  # the TUN/TAP clone device (None: /dev/net/tun)
    preresolve: bool = False  # resolve every remote before the first connection
    ip_remote_hint: str | None = None  # ... this name instead of each remote's
    replay: bool = True  # no-replay: False
    # redirect-private [FLAGS]: redirect-gateway's routes to the server, not the default route
    redirect_private: tuple[str, ...] | None = None
    management_log_cache: int = 250  # lines of log history for the management 'log' command
    tmp_dir: Path | None = None  # temporary files for scripts (None: $TMPDIR or /tmp)

    # --- client breadth a ---
    passtos: bool = False  # copy an IPv4 packet's TOS byte to the link socket (IP_TOS)
    socket_flags_nodelay: bool = False  # socket-flags TCP_NODELAY: on the TCP link socket
    bind_dev: str | None = None  # bind-dev DEV: SO_BINDTODEVICE on the link socket
    mtu_disc: Literal["no", "maybe", "yes"] | None = None  # IP_MTU_DISCOVER (None: kernel's)
    tun_mtu_max: int = 1600  # tun-mtu-max N: the largest tun-mtu a server may push (IV_MTU)

    # --- server (issue 13) ---
    client_config_dir: Path | None = None  # client-config-dir DIR: per-client files (ccd.py)
    ccd_exclusive: bool = False  # refuse a client without its own file in client-config-dir
    ifconfig_pool: IfconfigPool | None = None  # ifconfig-pool START END [NETMASK]

    # --- server scripts ---
    client_connect: str | None = None  # client-connect CMD: CMD DYNAMIC_CONFIG_FILE
    client_disconnect: str | None = None  # client-disconnect CMD
    learn_address: str | None = None  # learn-address CMD: CMD add|update|delete ADDR [CN]

    # --- ipv6 ---
    server_ipv6: ipaddress.IPv6Network | None = None  # server-ipv6 NET/BITS
    ifconfig_ipv6: Ifconfig6 | None = None
    ifconfig_ipv6_pool: ipaddress.IPv6Interface | None = None  # ifconfig-ipv6-pool BASE/BITS
    routes_ipv6: tuple[Route6, ...] = ()
    block_ipv6: bool = False

    # --- server sockets ---
    multihome: bool = False  # UDP server: answer from the address each client sent to
    port_share: PortShare | None = None  # TCP server: foreign connections go there
    server_bridge: ServerBridge | None = None  # TAP server helper with its own pool range
    stale_routes: tuple[int, int] | None = None  # stale-routes-check: (ageing s, interval s)

    # --- server auth ---
    auth_user_pass_verify: tuple[str, ...] = ()  # the script's argv (empty: no script)
    auth_user_pass_verify_via_file: bool = False  # via-file (else via-env)
    username_as_common_name: bool = False
    auth_user_pass_optional: bool = False
    auth_gen_token: bool = False
    auth_token_lifetime: int = 0  # seconds; 0: no limit
    auth_token_renewal: int | None = None  # None: reneg-sec (OpenVPN's default)
    auth_token_external: bool = False  # external-auth: the script still sees token logins
    auth_gen_token_secret: FileSource | None = None  # None: a key made at startup
    management_client_auth: bool = False  # the management interface decides on each client
    auth_pam_service: str | None = None  # plugin ...openvpn-plugin-auth-pam.so SERVICE

    # --- srvleft ---
    # server-bridge without arguments: clients take their addresses by DHCP through the bridge
    # (helper.c, server_bridge_proxy_dhcp); nogw: no push "route-gateway dhcp"
    server_bridge_proxy_dhcp: bool = False
    server_bridge_nogw: bool = False

    # --- command line and check ---
    suppress_timestamps: bool = False  # console log lines without their time prefix
    machine_readable_output: bool = False  # JSON log lines, always with their timestamp

    # --- more ---
    allow_pull_fqdn: bool = False  # pushed ifconfig/route/route-gateway may name hosts
    # proto-force P: only profiles of protocol P (udp, tcp-client, tcp-server, or tcp, which
    # in OpenVPN 2.6 matches none) are used
    proto_force: str | None = None
    persist_local_ip: bool = False  # the address 'local' resolved to is kept across restarts
    # http-proxy-override HOST PORT [nct]: every TCP profile through this proxy, UDP ones unused
    http_proxy_override: HttpProxy | None = None
    allow_recursive_routing: bool = False  # send device packets addressed to the server too
    single_session: bool = False  # p2p server: no new session from the peer once it had one
    replay_persist: Path | None = None  # the control-channel replay state across restarts
    shaper: int = 0  # shaper N: at most N bytes a second to the peer (0: no shaping)
    x509_track: tuple[X509Track, ...] = ()  # x509-track: only these X509_* script variables
    client_nat: tuple[NatRule, ...] = ()  # client-nat snat|dnat NETWORK NETMASK ALIAS

    # --- static ---
    secret: FileSource | None = None  # static-key mode (no TLS): 'secret FILE [direction]'
    link_mtu: int | None = None  # link-mtu/udp-mtu N: tun_mtu is derived from it (linkmtu.py)
    compat_mode: int | None = None  # compat-mode X.Y.Z as X*10000+Y*100+Z (compat.py)

    # --- srvsmall ---
    # route-ipv6-gateway GW: the gateway of route-ipv6 lines without one (else the device's
    # IPv6 peer); the kernel route uses it on a tap device only (route.c, add_route_ipv6())
    route_ipv6_gateway: ipaddress.IPv6Address | None = None
    opt_verify: bool = False  # server: refuse a client whose options string differs
    # tcp-queue-limit N: a TCP client's packets waiting to be sent; more are dropped (None:
    # trivpn's own default, TCP_SEND_QUEUE)
    tcp_queue_limit: int | None = None
    # bcast-buffers N: one TAP flood reaches at most N clients (rounded up to a power of two;
    # also a bound on a TCP client's queue, as OpenVPN's mtcp.c sizes it; None: no bound)
    bcast_buffers: int | None = None
    # vlan-tagging: 802.1Q on a TAP server's device (runtime/routing.py VlanRouter); a
    # client's VLAN is its vlan-pvid (client-config-dir) or this one
    vlan_tagging: bool = False
    vlan_accept: str = "all"  # vlan-accept tagged|untagged|all
    vlan_pvid: int = 1

    # --- mgmt ---
    # management-query-remote / -query-proxy: each connection attempt asks the management
    # client (>REMOTE: / >PROXY:); -signal: a management client's disconnect restarts
    # (SIGUSR1); -forget-disconnect: it forgets the passwords; -up-down: >UPDOWN: with the
    # script environment; -client: connect out to the 'management' address (manage.c)
    management_query_remote: bool = False
    management_query_proxy: bool = False
    management_signal: bool = False
    management_forget_disconnect: bool = False
    management_up_down: bool = False
    management_client: bool = False

    # diagnostics
    directive_lines: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False, repr=False)
    directive_files: Mapping[str, Path] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False, repr=False)
    warnings: tuple[ConfigWarning, ...] = ()

    # --- small conveniences --------------------------------------------------------------

    @property
    def dev_null(self) -> bool:
        """``dev null``: OpenVPN's test mode, no device at all."""
        return self.dev == "null"

    @property
    def comp_lzo(self) -> str | None:
        """``"no"`` when the effective compression framing is ``comp-lzo no``, ``"yes"`` /
        ``"adaptive"`` for LZO compression."""
        if self.compression == "lzo":
            return "adaptive" if self.comp_flags & 1 else "yes"
        return "no" if self.compression == "lzo-stub" else None

    @property
    def compress(self) -> str | None:
        """``"stub"``/``"stub-v2"``/``"lz4"``/``"lz4-v2"`` when the effective framing comes
        from ``compress``."""
        if self.compression in ("stub", "stub-v2", "lz4", "lz4-v2"):
            return self.compression
        return None

    @property
    def bind_local(self) -> bool:
        """Whether the local socket binds ``lport`` (OpenVPN: not with ``nobind`` or a TCP
        client that sets none of ``local``, a local port or ``bind``)."""
        if self.nobind:
            return False
        return not (self.proto == "tcp-client" and self.local is None
                    and "lport" not in self.directive_lines
                    and "port" not in self.directive_lines
                    and "bind" not in self.directive_lines)

    def location(self, directive: str) -> tuple[Path, int] | None:
        """Where ``directive`` first appears: (config file, line), or None."""
        line = self.directive_lines.get(directive)
        if line is None:
            return None
        return self.directive_files.get(directive, self.config_path), line

    def file_sources(self) -> tuple[FileSource, ...]:
        """Every file-valued option that is set, in a stable order."""
        found: list[FileSource] = []
        for src in (self.ca, self.cert, self.key, self.extra_certs, self.dh, self.crl_verify,
                    self.tls_auth, self.tls_crypt, self.auth_user_pass, self.tls_crypt_v2,
                    self.pkcs12, self.secret):
            if isinstance(src, FileSource):
                found.append(src)
        return tuple(found)

    def with_keys_reread(self) -> Options:
        """A copy with the files of the TLS context and the control-channel key read again
        (ca, cert, key, extra-certs, tls-auth, tls-crypt): what OpenVPN re-reads at a
        restart without ``persist-key``. ConfigError if one is unreadable now."""
        def reread(src: FileSource | None) -> FileSource | None:
            return src.reread() if src is not None else None

        return replace(
            self, ca=reread(self.ca), cert=reread(self.cert), key=reread(self.key),
            extra_certs=reread(self.extra_certs), tls_auth=reread(self.tls_auth),
            tls_crypt=reread(self.tls_crypt), tls_crypt_v2=reread(self.tls_crypt_v2),
            pkcs12=reread(self.pkcs12), secret=reread(self.secret))

    def with_files_loaded(self) -> Options:
        """A copy whose file-valued options carry their text; ConfigError if one is unreadable."""
        def load(src: FileSource | None) -> FileSource | None:
            return src.loaded() if src is not None else None

        dh = self.dh.loaded() if isinstance(self.dh, FileSource) else self.dh
        aup = (self.auth_user_pass.loaded() if isinstance(self.auth_user_pass, FileSource)
               else self.auth_user_pass)
        return replace(
            self, ca=load(self.ca), cert=load(self.cert), key=load(self.key),
            extra_certs=load(self.extra_certs), dh=dh, crl_verify=load(self.crl_verify),
            tls_auth=load(self.tls_auth), tls_crypt=load(self.tls_crypt), auth_user_pass=aup,
            tls_crypt_v2=load(self.tls_crypt_v2), pkcs12=load(self.pkcs12),
            secret=load(self.secret))
