"""Turn directives into validated ``Options``: dispatch through the directive table, then apply
what OpenVPN decides once the whole file is read (role helpers, ``proto tcp``, remote defaults)
and reject contradictions."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from types import MappingProxyType

from trivpn.config import connection as conn
from trivpn.config import values as v
from trivpn.config.compat import apply_compat_mode
from trivpn.config.directives import (
    DIRECTIVES,
    NOT_ON_LINUX,
    UNSUPPORTED,
    UNSUPPORTED_WHY,
    ParseState,
    RawProto,
    finish_compression,
    finish_fragment,
)
from trivpn.config.errors import ConfigError
from trivpn.config.linkmtu import apply_link_mtu
from trivpn.config.options import (
    ConfigWarning,
    DevType,
    HttpProxy,
    Options,
    Proto,
    Remote,
    Role,
)
from trivpn.config.reader import ConfigSource, Directive
from trivpn.config.static import check_static
from trivpn.protocol.dns import DnsOptionError

# IFCONFIG_POOL_MIN_NETBITS and the largest prefixes `server` accepts per device type.
SERVER_MIN_BITS = 16
SERVER_MAX_BITS: dict[DevType, int] = {"tun": 29, "tap": 30}


def parse_source(source: ConfigSource, *, lenient: bool = False,
                 errors: list[ConfigError] | None = None) -> Options:
    """Apply every directive of ``source`` and validate the result (files are not read).

    ``lenient`` (for ``trivpn doctor``) turns directives trivpn does not implement into
    warnings, so an existing OpenVPN deployment's config can still be diagnosed.
    ``errors`` (for ``trivpn doctor``): a directive that fails is appended to this list and
    left out, as if its line were not there, and parsing goes on with the next one; the
    cross-checks at the end still raise.
    """
    st = ParseState(Options(config_path=source.path, base_dir=source.base_dir),
                    lenient=lenient)
    for d in source.directives:
        if errors is None:
            _apply(st, d, allow_unknown=False)
            continue
        saved = (st.opts, dict(st.first_seen), dict(st.last_seen), dict(st.last_position),
                 st.applied, len(st.remotes), len(st.warnings))
        try:
            _apply(st, d, allow_unknown=False)
        except ConfigError as exc:
            errors.append(exc)
            st.opts, st.first_seen, st.last_seen, st.last_position, st.applied = saved[:5]
            del st.remotes[saved[5]:]
            del st.warnings[saved[6]:]
            st.current = None
    return _finish(st)


def _apply(st: ParseState, d: Directive, *, allow_unknown: bool) -> None:
    if d.name == "setenv" and len(d.args) >= 2 and d.args[0] == "opt":
        # `setenv opt NAME ...`: apply NAME if known, otherwise only warn.
        _apply(st, Directive(d.args[1], d.args[2:], d.path, d.line, None, d.base_dir),
               allow_unknown=True)
        return
    if d.name == "connection" and not st.in_connection:
        conn.read_block(st, d, lambda sub, item: _apply(sub, item, allow_unknown=False))
        return
    if conn.warn_ignored_after_blocks(st, d):
        return
    if d.name in UNSUPPORTED:
        what = f"<{d.name}> blocks are" if d.inline is not None else f"'{d.name}' is"
        if st.lenient:
            st.warn(d, f"{what} not supported by trivpn yet (OpenVPN accepts it; "
                       "`trivpn run` would refuse this config)")
            return
        why = f" ({UNSUPPORTED_WHY[d.name]})" if d.name in UNSUPPORTED_WHY else ""
        raise v.fail(d, f"{what} not supported by trivpn yet{why}")
    spec = DIRECTIVES.get(d.name)
    if spec is None:
        if allow_unknown or st.forward_compatible or d.name in st.opts.ignore_unknown_option:
            st.warn(d, f"ignoring unknown directive '{d.name}'")
            return
        if d.name in NOT_ON_LINUX:
            raise v.fail(d, f"'{d.name}' is {NOT_ON_LINUX[d.name]}: OpenVPN 2.6 on Linux does "
                            "not recognize it either; remove the line")
        raise v.fail(d, f"unknown directive '{d.name}'")
    if d.inline is not None:
        if not spec.inline:
            raise v.fail(d, f"'{d.name}' cannot be given as an inline <{d.name}> block")
    elif len(d.args) < spec.min_args or (spec.max_args is not None
                                         and len(d.args) > spec.max_args):
        raise v.fail(d, _count_message(d.name, spec.min_args, spec.max_args, len(d.args)))
    st.first_seen.setdefault(d.name, d)
    st.last_seen[d.name] = d
    st.last_position[d.name] = st.applied
    st.applied += 1
    st.current = d
    st.opts = spec.handler(st, d)
    st.current = None


def _count_message(name: str, lo: int, hi: int | None, got: int) -> str:
    def args(n: int) -> str:
        return "argument" if n == 1 else "arguments"

    if hi is None:
        expected = f"at least {lo} {args(lo)}"
    elif lo == hi == 0:
        expected = "no arguments"
    elif lo == hi:
        expected = f"{lo} {args(lo)}"
    elif hi == lo + 1:
        expected = f"{lo} or {hi} {args(hi)}"
    else:
        expected = f"{lo} to {hi} arguments"
    return f"'{name}' takes {expected}, got {got}"


def _error(st: ParseState, reason: str, directive: str | None = None) -> ConfigError:
    """An error at ``directive``'s (last) line, or at the config file without a line."""
    if directive is not None and directive in st.last_seen:
        d = st.last_seen[directive]
        return ConfigError(reason, d.path, d.line)
    return ConfigError(reason, st.opts.config_path)


def _check_server_bridge(st: ParseState, o: Options) -> None:
    """``server-bridge`` (OpenVPN helper.c, helper_client_server(); its messages quoted)."""
    b = o.server_bridge
    if b is None and not o.server_bridge_proxy_dhcp:
        return
    seen = st.last_seen
    if "server" in seen:
        raise _error(st, "'server' and 'server-bridge' cannot be used together (OpenVPN: "
                         "--server and --server-bridge cannot be used together)",
                     "server-bridge")
    if "client" in seen:
        raise _error(st, "'server-bridge' and 'client' cannot be used together (OpenVPN: "
                         "--server-bridge and --client cannot be used together)",
                     "server-bridge")
    if o.dev_type != "tap":
        raise _error(st, "'server-bridge' needs 'dev tap' (OpenVPN: --server-bridge "
                         "directive only makes sense with --dev tap)", "server-bridge")
    if b is None:  # the DHCP-proxy form
        if o.ifconfig_pool is not None:
            raise _error(st, "'server-bridge' without a pool cannot take 'ifconfig-pool' "
                             "(OpenVPN: --server-bridge already defines an ifconfig-pool, so "
                             "you can't also specify --ifconfig-pool explicitly)",
                         "ifconfig-pool")
        return
    net = ipaddress.IPv4Network(f"{b.gateway}/{b.netmask}", strict=False)
    if b.pool_start not in net or b.pool_end not in net:
        raise _error(st, f"'server-bridge' addresses {b.gateway}, {b.pool_start} and "
                         f"{b.pool_end} are not in one {b.netmask} subnet", "server-bridge")
    if b.pool_end < b.pool_start:
        raise _error(st, f"'server-bridge' pool start {b.pool_start} is after its end "
                         f"{b.pool_end}", "server-bridge")


MGMT_FLAGS = ("management-query-remote", "management-query-proxy", "management-signal",
              "management-forget-disconnect", "management-up-down", "management-client")
"""The management flags of the mgmt block (each an Options field of the same name)."""


def _finish(st: ParseState) -> Options:  # noqa: PLR0912, PLR0915 - cross-checks in order
    o = st.opts
    seen = st.last_seen
    if "dev" not in seen:
        raise _error(st, "no 'dev' directive (add 'dev tun')")
    o = replace(o, dev_type=_dev_type(st))

    # --- roles (helper.c helper_client_server) ---
    if "client" in seen and "server" in seen:
        raise _error(st, "'client' and 'server' cannot be used together",
                     _last_of(st, "client", "server"))
    _check_server_bridge(st, o)
    if "client" in seen and "server-ipv6" in seen:  # helper.c helper_client_server
        raise _error(st, "'server-ipv6' and 'client' cannot be used together", "server-ipv6")
    tls_client = "tls-client" in seen or "client" in seen
    # server-ipv6 alone (an IPv6-only server) sets 'mode server' and 'tls-server' as 'server'
    # does (helper.c helper_client_server)
    tls_server = ("tls-server" in seen or "server" in seen or "server-bridge" in seen
                  or "server-ipv6" in seen)
    if tls_client and tls_server:
        raise _error(st, "a config can be a TLS client or a TLS server, not both "
                         "('client'/'tls-client' with 'server'/'tls-server')",
                     _last_of(st, "tls-client" if "tls-client" in seen else "client",
                              "tls-server" if "tls-server" in seen else "server"))
    static = "secret" in seen
    if static and (tls_client or tls_server):
        # OpenVPN options.c, options_postprocess_verify_ce()
        role = next(n for n in ("tls-client", "client", "tls-server", "server", "server-bridge")
                    if n in seen)
        raise _error(st, "specify only one of --tls-server, --tls-client, or --secret",
                     _last_of(st, "secret", role))
    if not tls_client and not tls_server and not static:
        raise _error(st, "no TLS role: add 'client' or 'server' (or 'secret' for OpenVPN's "
                         "static-key peer-to-peer mode)", "mode")
    tls_role: Role = "client" if tls_client else "server"
    if static:  # who connects: the side with a 'remote' (docs/connections.md)
        tls_role = "client" if (st.remotes or st.connections) else "server"
        check_static(st, _error)
    mode_server = (st.mode_server or "server" in seen or "server-bridge" in seen
                   or "server-ipv6" in seen)
    if mode_server and tls_role != "server":
        raise _error(st, "'mode server' needs 'tls-server' (or use the 'server' directive)",
                     "mode")
    if o.pull and tls_role != "client":
        raise _error(st, "'pull' needs 'tls-client' (or use 'client')", "pull")
    # role: the runtime that runs the config. A TLS peer-to-peer server (tls-server without
    # 'mode server') has one peer and no pool or push: the one-peer runtime of the client
    # side runs it (docs/connections.md, "TLS peer-to-peer mode, both roles")
    o = replace(o, tls_role=tls_role, role="server" if mode_server else "client",
                mode="server" if mode_server else "p2p")

    # --- management (options.c options_postprocess_verify_ce) ---
    if ((o.management_client_user is not None or o.management_client_group is not None)
            and (o.management is None or not o.management.unix)):
        raise _error(st, "'management-client-user'/'management-client-group' can only be "
                         "used with a management unix socket ('management PATH unix')",
                     "management-client-user" if "management-client-user" in seen
                     else "management-client-group")

    # --- credentials (options.c options_postprocess_verify_ce) ---
    if (o.management_hold or o.management_query_passwords) and o.management is None:
        raise _error(st, "'management-hold'/'management-query-passwords' need 'management' "
                         "(OpenVPN: --management is not specified, however one or more options "
                         "which modify the behavior of --management were specified)",
                     "management-hold" if o.management_hold else "management-query-passwords")

    # --- client breadth b: no-replay (options.c options_postprocess_verify_ce; crypto.c
    # check_replay_consistency() for the cipher given with 'cipher') ---
    if not o.replay and "replay-window" in seen:
        raise _error(st, "'replay-window' makes no sense when replay protection is disabled "
                         "with 'no-replay'", "replay-window")
    if not o.replay and o.cipher is not None and o.cipher.upper().endswith(
            ("-GCM", "-CFB", "-CFB1", "-CFB8", "-OFB", "CHACHA20-POLY1305")):
        raise _error(st, f"'no-replay' cannot be used with a CFB, OFB or AEAD mode cipher "
                         f"('cipher {o.cipher}')", "no-replay")

    if o.lladdr is not None and o.dev_type != "tap":
        raise _error(st, "'lladdr' can only be used with a tap device ('dev tap')", "lladdr")

    # --- client breadth b: management (options.c options_postprocess_verify_ce) ---
    if o.management is None and "management-log-cache" in seen:
        raise _error(st, "'management-log-cache' changes the management interface, but "
                         "'management' is not given", "management-log-cache")

    # --- transport (options.c options_postprocess_mutate_ce) ---
    proto = _resolve_proto(st, st.raw_proto, "proto")
    # --- client breadth a: TLS peer-to-peer mode (tls-client/tls-server, no pull) ---
    if tls_role == "server" and not mode_server and proto == "tcp-client":
        raise _error(st, "a TLS peer-to-peer 'tls-server' with 'proto tcp-client' is not "
                         "supported by trivpn (it waits for its peer: use udp or tcp-server)",
                     "proto")
    if static and proto == "tcp-server":  # static key: the TCP server side waits
        tls_role = "server"
        o = replace(o, tls_role=tls_role)
    if static and tls_role == "server" and proto == "tcp-client":
        raise _error(st, "static-key mode with 'proto tcp-client' needs a 'remote' to connect "
                         "to", "proto")
    if tls_role == "client" and not o.pull and proto == "tcp-server":
        raise _error(st, "a TLS peer-to-peer 'tls-client' with 'proto tcp-server' is not "
                         "supported by trivpn (it connects to its peer: use tcp-client)",
                     "proto")
    if o.mode == "server" and proto == "tcp-client":
        raise _error(st, "a server cannot use 'proto tcp-client' (use udp or tcp-server)",
                     "proto")
    if o.pull and proto == "tcp-server":
        raise _error(st, "a client cannot use 'proto tcp-server' (use udp or tcp-client)",
                     "proto")
    o = conn.shared_options(st, o)
    if st.connections:
        remotes = tuple(_connection_remote(st, c) for c in st.connections)
    else:
        remotes = tuple(
            Remote(r.host, r.port if r.port is not None else o.rport,
                   _resolve_proto(st, r.proto, "remote", r.directive) if r.proto else proto,
                   r.family if r.proto else o.family, r.directive.line,
                   http_proxy=o.http_proxy, socks_proxy=o.socks_proxy)
            for r in st.remotes)
    remotes = tuple(_socks_udp_ipv4(st, r) for r in remotes)
    if o.shaper and o.mode == "server":  # --- more --- (OpenVPN options.c, the same words)
        raise _error(st, "--shaper cannot be used with --mode server", "shaper")
    for name in ("single-session", "replay-persist"):
        if name in seen and o.mode == "server":
            raise _error(st, f"'{name}' in a 'mode server' config is not supported by "
                             "trivpn (it is for one-peer configs: clients and TLS "
                             "peer-to-peer servers)", name)
    if o.http_proxy_override is not None:
        remotes = _http_proxy_override(st, o.http_proxy_override, remotes)
    if o.proto_force is not None:
        remotes = _proto_forced(st, o.proto_force, proto, remotes)
    o = replace(o, proto=proto, remotes=remotes, connection_blocks=bool(st.connections))
    _check_connection_profiles(st, o)
    if tls_role == "client" and not remotes and o.pull:
        raise _error(st, "client config has no 'remote' directive (add 'remote HOST PORT')")
    if tls_role == "client" and not remotes:
        raise _error(st, "a TLS peer-to-peer 'tls-client' without 'remote' waits for its peer, "
                         "which trivpn does not support: add 'remote HOST PORT'", "tls-client")

    # --- server helper checks ---
    if o.server is not None:
        bits = o.server.network.prefixlen
        if bits < SERVER_MIN_BITS:
            raise _error(st, f"'server' subnet /{bits} is too large (at most /{SERVER_MIN_BITS}"
                             " host addresses are allowed)", "server")
        max_bits = SERVER_MAX_BITS[o.dev_type]
        if bits > max_bits:
            raise _error(st, f"'server' with dev {o.dev_type} needs a /{max_bits} or larger "
                             f"subnet, got /{bits}", "server")

    # --- per-client configuration and explicit pool (options.c, helper.c) ---
    if o.ccd_exclusive and o.client_config_dir is None:
        raise _error(st, "'ccd-exclusive' must be used with 'client-config-dir'",
                     "ccd-exclusive")
    for name in ("client-config-dir", "ccd-exclusive", "ifconfig-pool", "client-connect",
                 "client-disconnect", "learn-address"):
        if name in seen and o.mode != "server":
            raise _error(st, f"'{name}' requires 'mode server' (or the 'server' directive)",
                         name)
    if o.ifconfig_pool is not None and o.server is not None and not o.server.nopool:
        raise _error(st, "'server' already defines an ifconfig-pool, so 'ifconfig-pool' "
                         "cannot be given too (use 'server NET MASK nopool' with it)",
                     "ifconfig-pool")
    # --- ipv6 (helper.c helper_client_server) ---
    if o.server_ipv6 is not None:
        if o.server is None and o.ifconfig_pool_persist is not None:
            raise _error(st, "'ifconfig-pool-persist' on an IPv6-only server (no 'server NET "
                             "MASK') is not supported by trivpn yet", "ifconfig-pool-persist")
        if o.server is not None and o.server.nopool:
            raise _error(st, "'server-ipv6' cannot be used with 'server ... nopool'",
                         "server-ipv6")
        if "ifconfig-ipv6-pool" in seen:
            raise _error(st, "'server-ipv6' already defines the IPv6 pool; remove "
                             "'ifconfig-ipv6-pool'", "ifconfig-ipv6-pool")
        if o.dev_type != "tun":
            raise _error(st, "'server-ipv6' needs 'dev tun'", "server-ipv6")
    if o.block_ipv6 and o.mode == "server" and o.dev_type != "tun":
        raise _error(st, "'block-ipv6' on a 'dev tap' server is not supported by trivpn yet "
                         "(it works on a 'dev tun' server and on clients)", "block-ipv6")
    if o.ifconfig_ipv6_pool is not None and o.mode != "server":
        raise _error(st, "'ifconfig-ipv6-pool' needs 'mode server' (or the 'server' directive)",
                     "ifconfig-ipv6-pool")
    if o.ifconfig_ipv6_pool is not None and o.ifconfig_ipv6 is None:
        raise _error(st, "'ifconfig-ipv6-pool' needs 'ifconfig-ipv6' (the server's own IPv6 "
                         "address)", "ifconfig-ipv6-pool")

    # --- connection rate limits (options.c: connect-freq needs a UDP server) ---
    if o.connect_freq is not None:
        if o.mode != "server":
            raise _error(st, "'connect-freq' needs 'mode server' (or the 'server' directive)",
                         "connect-freq")
        if o.proto != "udp":
            raise _error(st, "'connect-freq' only works with 'proto udp' (OpenVPN 2.6 refuses "
                             "it for TCP too); use 'max-clients' instead", "connect-freq")

    # --- port-share (options.c options_postprocess_verify_ce: a TCP server only) ---
    if o.port_share is not None:
        if o.mode != "server":
            raise _error(st, "'port-share' requires TCP server mode (OpenVPN: --port-share "
                             "requires TCP server mode (--mode server --proto tcp-server))",
                         "port-share")
        if o.proto != "tcp-server":
            raise _error(st, "'port-share' only works in TCP server mode (OpenVPN: "
                             "--port-share only works in TCP server mode (--proto values of "
                             "tcp-server, tcp4-server, or tcp6-server))", "port-share")

    # --- stale-routes-check (options.c: server mode only; trivpn: learned MACs, dev tap) ---
    if o.stale_routes is not None:
        if o.mode != "server":
            raise _error(st, "'stale-routes-check' needs 'mode server' (OpenVPN: Options "
                             "error: --stale-routes-check requires --mode server)",
                         "stale-routes-check")
        if o.dev_type != "tap":
            raise _error(st, "'stale-routes-check' is supported by trivpn with 'dev tap' only "
                             "(it ages the MAC addresses learned from clients); trivpn does not "
                             "age routes on a tun server yet", "stale-routes-check")

    # --- keepalive (helper.c helper_keepalive) ---
    if o.keepalive is not None:
        k = o.keepalive
        if k.interval <= 0 or k.timeout <= 0:
            raise _error(st, "'keepalive' parameters must be greater than 0", "keepalive")
        if k.interval * 2 > k.timeout:
            raise _error(st, f"the second 'keepalive' parameter (restart timeout {k.timeout}) "
                             f"must be at least twice the first (ping interval {k.interval}); "
                             "'keepalive 10 60' is recommended", "keepalive")
        for name in ("ping", "ping-restart", "ping-exit"):
            if name in seen:
                raise _error(st, f"'keepalive' conflicts with '{name}' (keepalive already sets "
                                 "ping and ping-restart)", name)

    # --- TLS material ---
    if "tls-crypt-v2" in seen and ("tls-auth" in seen or "tls-crypt" in seen):
        raise _error(st, "'tls-crypt-v2', 'tls-auth' and 'tls-crypt' are mutually exclusive",
                     max(("tls-crypt-v2", "tls-auth", "tls-crypt"),
                         key=lambda n: st.last_position.get(n, -1)))
    if "tls-auth" in seen and "tls-crypt" in seen:
        raise _error(st, "'tls-auth' and 'tls-crypt' cannot be used together",
                     _last_of(st, "tls-auth", "tls-crypt"))
    if o.pkcs12 is not None and (o.cert is not None or o.key is not None):
        raise _error(st, "'pkcs12' holds the certificate and key: drop 'cert' and 'key'",
                     "pkcs12")
    if (not static and o.ca is None and not o.peer_fingerprints and o.pkcs12 is None
            and o.capath is None):
        raise _error(st, "no 'ca' directive: a TLS client or server needs the CA certificate "
                         "that signed its peer's certificate (or 'peer-fingerprint')")
    if (o.cert is None) != (o.key is None):
        given, missing = ("cert", "key") if o.key is None else ("key", "cert")
        raise _error(st, f"'{given}' is given without '{missing}'", given)
    if o.cert is None and o.pkcs12 is None and not static:
        if tls_role == "server":
            raise _error(st, "a server needs its own 'cert' and 'key'")
        if o.auth_user_pass is None:
            raise _error(st, "no 'cert'/'key': a client needs a certificate and key, or "
                             "'auth-user-pass' with a server that sets 'verify-client-cert none'")
    if tls_role == "server" and o.dh is None and not static:
        raise _error(st, "no 'dh' directive: an OpenVPN 2.6 TLS server requires one "
                         "(use 'dh none' for ECDHE key exchange only)")
    if tls_role == "server" and o.auth_user_pass is not None:
        raise _error(st, "'auth-user-pass' is a client option", "auth-user-pass")
    # verify-client-cert: 'require' is the default; the other values need a way to check the
    # client's password, which OpenVPN 2.6 insists on (options.c, options_postprocess_verify_ce())
    password_check = (bool(o.auth_user_pass_verify) or o.management_client_auth
                      or o.auth_pam_service is not None)
    needs_check = (("verify-client-cert", o.verify_client_cert != "require"),
                   ("username-as-common-name", o.username_as_common_name),
                   ("auth-user-pass-optional", o.auth_user_pass_optional))
    for name, used in needs_check:
        if not used:
            continue
        shown = f"verify-client-cert {o.verify_client_cert}" if name == "verify-client-cert" \
            else name
        if not mode_server:
            raise _error(st, f"'{name}' requires 'mode server'", name)
        if not password_check:
            raise _error(st, f"'{shown}' must be used with 'management-client-auth', an "
                             "'auth-user-pass-verify' script, or 'plugin' (OpenVPN 2.6 "
                             "refuses it otherwise)", name)
    if o.auth_pam_service is not None and not mode_server:
        raise _error(st, "'plugin openvpn-plugin-auth-pam.so' requires 'mode server'", "plugin")
    if o.management_client_auth and o.management is None:
        raise _error(st, "'management-client-auth' needs a 'management' interface",
                     "management-client-auth")
    if o.auth_gen_token and not mode_server:
        raise _error(st, "'auth-gen-token' requires 'mode server'", "auth-gen-token")
    if o.auth_gen_token_secret is not None and not o.auth_gen_token:
        # OpenVPN reads the secret only with auth-gen-token (init.c, do_init_crypto_tls_c1():
        # auth_token_init_secret()); without it the line does nothing, not even a check of
        # the file
        d = st.last_seen.get("auth-gen-token-secret")
        st.warnings.append(ConfigWarning(
            d.path if d is not None else o.config_path, d.line if d is not None else None,
            "'auth-gen-token-secret' does nothing without 'auth-gen-token' (OpenVPN does not "
            "read the secret then either)"))
        o = replace(o, auth_gen_token_secret=None)
    if o.auth_gen_token and tls_role == "server":  # options.c options_postprocess_verify_ce()
        if o.reneg_sec == 0:
            raise _error(st, "'auth-gen-token' needs a renegotiation time: 'reneg-sec 0' "
                             "(OpenVPN: --auth-gen-token needs a non-infinite "
                             "--renegotiate_seconds setting)", "auth-gen-token")
        renewal = o.auth_token_renewal or o.reneg_sec
        if renewal < 2 * o.hand_window:
            raise _error(st, f"the 'auth-gen-token' renewal time ({renewal} s, from "
                             f"{'its RENEWAL' if o.auth_token_renewal else 'reneg-sec'}) must "
                             f"be at least twice 'hand-window' ({o.hand_window} s) (OpenVPN: "
                             "--auth-gen-token renewal time needs to be at least  two times "
                             f"--hand-window ({o.hand_window}).)", "auth-gen-token")
    if o.auth_user_pass_verify and not mode_server:
        raise _error(st, "'auth-user-pass-verify' requires 'mode server'",
                     "auth-user-pass-verify")

    # --- static: compat-mode (options.c, options_set_backwards_compatible_options()) ---
    try:
        o = apply_compat_mode(o, set(seen))
    except ValueError as exc:
        raise _error(st, str(exc), "compat-mode") from None
    o = finish_compression(st, o)
    o = finish_fragment(st, o)

    # --- dns (options.c, dns_options_verify(); applied on clients only, docs/dns.md) ---
    try:
        o.dns.check()
    except DnsOptionError as exc:
        raise _error(st, f"'dns': {exc}", "dns") from None
    if mode_server and ("dns" in seen or "dhcp-option" in seen):
        raise _error(st, "'dns'/'dhcp-option' in a server config: trivpn applies DNS settings "
                         "on clients only; give them to clients with push \"dhcp-option ...\"",
                     "dns" if "dns" in seen else "dhcp-option")
    # --- scripts and process ---
    if mode_server:
        for name in CLIENT_ONLY_SCRIPTS:
            if name in seen:
                raise _error(st, f"'{name}' in a server config is not supported by trivpn "
                                 "yet (scripts run on clients only)", name)
        if o.dev_null:
            raise _error(st, "'dev null' is supported on clients only", "dev")

    # --- client breadth a ---
    if mode_server:
        for name in ("passtos", "socket-flags", "bind-dev", "mtu-disc", "tun-mtu-max"):
            if name in seen:
                raise _error(st, f"'{name}' in a server config is not supported by trivpn "
                                 "yet (it applies on clients only)", name)

    # --- static: link-mtu (options.c "only one of ..."; init.c, get_frame_mtu()) ---
    if o.link_mtu is not None:
        mtu_name = _last_of(st, "link-mtu", "udp-mtu") if "udp-mtu" in seen and \
            "link-mtu" in seen else ("link-mtu" if "link-mtu" in seen else "udp-mtu")
        if "tun-mtu" in seen or any("tun-mtu" in c.seen for c in st.connections):
            raise _error(st, "only one of --tun-mtu or --link-mtu may be defined",
                         _last_of(st, "tun-mtu", mtu_name) if "tun-mtu" in seen
                         and mtu_name in seen else None)
        try:
            o = apply_link_mtu(o, mssfix_given="mssfix" in seen
                               and bool(st.last_seen["mssfix"].args))
        except ValueError as exc:
            raise _error(st, f"{exc} (MTU is too small)", mtu_name) from None

    # --- srvsmall: opt-verify (options.c options_postprocess_verify_ce) ---
    if o.opt_verify and not mode_server:
        raise _error(st, "'opt-verify' needs 'mode server' (OpenVPN: --opt-verify requires "
                         "--mode server)", "opt-verify")

    # --- srvsmall: vlan-tagging (options.c options_postprocess_verify_ce) ---
    if o.vlan_tagging and not mode_server:
        raise _error(st, "'vlan-tagging' needs 'mode server' (OpenVPN: --vlan-tagging "
                         "requires --mode server)", "vlan-tagging")
    if mode_server and o.vlan_tagging and o.dev_type != "tap":
        raise _error(st, "--vlan-tagging must be used with --dev tap", "vlan-tagging")
    if mode_server and not o.vlan_tagging:
        for vlan_name, not_default in (("vlan-accept", o.vlan_accept != "all"),
                                       ("vlan-pvid", o.vlan_pvid != 1)):
            if not_default:
                raise _error(st, f"--{vlan_name} requires --vlan-tagging", vlan_name)
    if o.vlan_tagging and o.fragment:
        raise _error(st, "'vlan-tagging' with 'fragment' is not supported by trivpn yet",
                     "vlan-tagging")

    # --- mgmt (options.c options_postprocess_verify_ce: any management flag needs
    # 'management') ---
    mgmt_flags = [name for name in MGMT_FLAGS if getattr(o, name.replace("-", "_"))]
    if mgmt_flags and o.management is None:
        raise _error(st, f"'{mgmt_flags[0]}' needs 'management' (OpenVPN: --management is "
                         "not specified, however one or more options which modify the "
                         "behavior of --management were specified)", mgmt_flags[0])
    client_only = [name for name in mgmt_flags if name != "management-client"]
    if client_only and o.role == "server":
        raise _error(st, f"'{client_only[0]}' is not supported by trivpn on a server yet "
                         "(only on a client)", client_only[0])

    o = replace(o, warnings=tuple(st.warnings) + tuple(_warnings(st, o)))
    return replace(
        o,
        directive_lines=MappingProxyType({k: d.line for k, d in st.first_seen.items()}),
        directive_files=MappingProxyType({k: d.path for k, d in st.first_seen.items()}),
    )


def _connection_remote(st: ParseState, c: conn.PendingConnection) -> Remote:
    """The profile of one <connection> block: its own remote, proto, port, proxy, timeouts."""
    r, o = c.remote, c.opts
    proto = _resolve_proto(st, r.proto or c.raw_proto, "proto", r.directive)
    family = r.family if r.proto else o.family
    return Remote(r.host, r.port if r.port is not None else o.rport, proto, family,
                  r.directive.line, http_proxy=o.http_proxy, socks_proxy=o.socks_proxy,
                  server_poll_timeout=o.server_poll_timeout,
                  explicit_exit_notify=o.explicit_exit_notify)


def _socks_udp_ipv4(st: ParseState, r: Remote) -> Remote:
    """SOCKS5 UDP relaying is IPv4 only (OpenVPN options.c options_postprocess_mutate_ce()
    forces IPv4 for it too)."""
    if r.socks_proxy is None or r.proto != "udp" or r.family == 4:
        return r
    if r.family == 6:
        st.warnings.append(ConfigWarning(st.opts.config_path, r.line,
                                         "'udp6' with 'socks-proxy': SOCKS UDP relaying is "
                                         "IPv4 only here, IPv4 is used"))
    return replace(r, family=4)


def _http_proxy_override(st: ParseState, proxy: HttpProxy,
                         remotes: tuple[Remote, ...]) -> tuple[Remote, ...]:
    """``http-proxy-override``: every TCP profile goes through ``proxy`` and the UDP ones are
    not used; without a TCP profile it is ignored with OpenVPN's note (options.c,
    options_postprocess_http_proxy_override())."""
    if not any(r.proto == "tcp-client" for r in remotes):
        st.warn(st.last_seen["http-proxy-override"], "Note: option http-proxy-override "
                "ignored because no TCP-based connection profiles are defined")
        return remotes
    return tuple(replace(r, http_proxy=proxy, socks_proxy=None) for r in remotes
                 if r.proto == "tcp-client")


def _proto_forced(st: ParseState, forced: str, proto: Proto,
                  remotes: tuple[Remote, ...]) -> tuple[Remote, ...]:
    """``proto-force P``: only the profiles (remotes, <connection> blocks; a server's own
    socket) whose protocol is P stay. OpenVPN compares P with each profile's protocol once
    'tcp' became 'tcp-client' or 'tcp-server' (options.c, options_postprocess_mutate_ce():
    CE_DISABLED), so 'proto-force tcp' matches none; with none left it stops with "No usable
    connection profiles are present" (init.c, next_connection_entry())."""
    kept = tuple(r for r in remotes if r.proto == forced)
    if (remotes and kept) or (not remotes and proto == forced):
        return kept
    hint = (" (OpenVPN 2.6 compares 'tcp' with the profiles' 'tcp-client'/'tcp-server': "
            "write 'proto-force tcp-client')" if forced == "tcp" else "")
    raise _error(st, f"No usable connection profiles are present: 'proto-force {forced}' "
                     f"leaves none{hint}", "proto-force")


def _check_connection_profiles(st: ParseState, o: Options) -> None:
    """options.c options_postprocess_verify_ce() for every profile (the messages are
    OpenVPN's, checked in tests/interop/test_connection_claims.py)."""
    where = "connection" if st.connections else None

    def fail(reason: str, directive: str) -> ConfigError:
        for c in st.connections:
            if directive in c.seen:
                return ConfigError(reason, c.directive.path, c.directive.line)
        return _error(st, reason, directive if directive in st.last_seen else where)

    for r in o.remotes:
        if r.http_proxy is not None:
            if r.proto != "tcp-client":
                raise fail("--http-proxy MUST be used in TCP Client mode (i.e. --proto "
                           "tcp-client)", "http-proxy")
            if r.http_proxy.host is None:
                raise fail("--http-proxy not specified but other http proxy options present",
                           "http-proxy-option")
            if r.socks_proxy is not None:
                raise fail("--http-proxy can not be used together with --socks-proxy",
                           "http-proxy")
            if o.mode == "server":
                raise fail("--http-proxy cannot be used with --mode server", "http-proxy")
        if r.socks_proxy is not None and o.mode == "server":
            raise fail("--socks-proxy cannot be used with --mode server", "socks-proxy")
    if o.route_delay is not None and o.mode == "server":
        raise _error(st, "--route-delay cannot be used with --mode server", "route-delay")


# The script directives a trivpn server does not run (it runs up, down, route-up, tls-verify,
# client-connect, client-disconnect and learn-address: runtime/serverscripts.py).
CLIENT_ONLY_SCRIPTS = ("route-pre-down", "ipchange", "tls-export-cert", "up-restart",
                       "down-pre", "ifconfig-noexec", "route-noexec")


def _last_of(st: ParseState, a: str, b: str) -> str:
    """Which of two directives was applied later (with includes expanded)."""
    return a if st.last_position[a] > st.last_position[b] else b


def _dev_type(st: ParseState) -> DevType:
    if st.opts.dev_type != "tun" or "dev-type" in st.last_seen:
        return st.opts.dev_type
    dev = st.opts.dev
    if dev.startswith("tun") or dev == "null":  # null: no device (Options.dev_null)
        return "tun"
    if dev.startswith("tap"):
        return "tap"
    raise _error(st, f"cannot tell whether 'dev {dev}' is a tun or a tap device: add "
                     "'dev-type tun' or 'dev-type tap'", "dev")


def _resolve_proto(st: ParseState, raw: RawProto, where: str,
                   d: Directive | None = None) -> Proto:
    if raw != "tcp":
        return raw
    if "server" in st.last_seen:
        return "tcp-server"
    if "client" in st.last_seen:
        return "tcp-client"
    reason = "plain 'tcp' is ambiguous here: use tcp-server or tcp-client"
    if d is not None:
        raise ConfigError(reason, d.path, d.line)
    raise _error(st, reason, where)


def _warnings(st: ParseState, o: Options) -> list[ConfigWarning]:
    """What OpenVPN 2.6 would only warn about, plus weak or deprecated choices."""
    found: list[ConfigWarning] = []

    def warn(message: str, directive: str | None = None) -> None:
        d = st.last_seen.get(directive) if directive is not None else None
        if d is not None:
            found.append(ConfigWarning(d.path, d.line, message))
        else:
            found.append(ConfigWarning(o.config_path, None, message))

    if (o.server is not None and o.dev_type == "tun" and o.topology == "net30"
            and not o.server.nopool):
        warn("topology net30 (the 2.6 default) is deprecated for servers and will be removed; "
             "add 'topology subnet'", "topology" if "topology" in st.last_seen else "server")
    for name in o.data_ciphers:
        if name in v.WEAK_64BIT_CIPHERS:
            warn(f"data cipher {name} has a 64-bit block size and is open to SWEET32 attacks; "
                 "use AES-256-GCM", "data-ciphers")
    if o.data_ciphers_fallback in v.WEAK_64BIT_CIPHERS:
        warn(f"data-ciphers-fallback {o.data_ciphers_fallback} has a 64-bit block size and is "
             "open to SWEET32 attacks", "data-ciphers-fallback")
    if o.cipher is not None:
        if o.cipher in v.WEAK_64BIT_CIPHERS:
            warn(f"cipher {o.cipher} has a 64-bit block size and is open to SWEET32 attacks",
                 "cipher")
        if o.cipher not in o.data_ciphers and o.secret is None:  # static key: the cipher
            warn(f"'cipher {o.cipher}' is not in data-ciphers ({':'.join(o.data_ciphers)}), so "
                 "OpenVPN 2.6 ignores it for cipher negotiation; add it to 'data-ciphers' or "
                 "remove it", "cipher")
    if o.tls_role == "client" and o.secret is None and not (
            o.remote_cert_tls or o.verify_x509_name or o.ns_cert_type or o.peer_fingerprints
            or o.remote_cert_eku or o.remote_cert_ku is not None):
        warn("no server certificate verification is enabled: any certificate from the same CA "
             "(e.g. another client's) is accepted as the server; add 'remote-cert-tls server'")
    if o.key_direction is not None and o.tls_crypt is not None and o.tls_auth is None:
        warn("'key-direction' has no effect on tls-crypt (its direction follows the role)",
             "key-direction")
    return found
