"""Turn directives into validated ``Options``: dispatch through the directive table, then apply
what OpenVPN decides once the whole file is read (role helpers, ``proto tcp``, remote defaults)
and reject contradictions."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from trivpn.config import values as v
from trivpn.config.directives import (
    DIRECTIVES,
    UNSUPPORTED,
    ParseState,
    RawProto,
)
from trivpn.config.errors import ConfigError
from trivpn.config.options import (
    ConfigWarning,
    DevType,
    Options,
    Proto,
    Remote,
    Role,
)
from trivpn.config.reader import ConfigSource, Directive

# IFCONFIG_POOL_MIN_NETBITS and the largest prefixes `server` accepts per device type.
SERVER_MIN_BITS = 16
SERVER_MAX_BITS: dict[DevType, int] = {"tun": 29, "tap": 30}


def parse_source(source: ConfigSource, *, lenient: bool = False) -> Options:
    """Apply every directive of ``source`` and validate the result (files are not read).

    ``lenient`` (for ``trivpn doctor``) turns directives trivpn does not implement into
    warnings, so an existing OpenVPN deployment's config can still be diagnosed.
    """
    st = ParseState(Options(config_path=source.path, base_dir=source.base_dir),
                    lenient=lenient)
    for d in source.directives:
        _apply(st, d, allow_unknown=False)
    return _finish(st)


def _apply(st: ParseState, d: Directive, *, allow_unknown: bool) -> None:
    if d.name == "setenv" and len(d.args) >= 2 and d.args[0] == "opt":
        # `setenv opt NAME ...`: apply NAME if known, otherwise only warn.
        _apply(st, Directive(d.args[1], d.args[2:], d.path, d.line, None), allow_unknown=True)
        return
    if d.name in UNSUPPORTED:
        what = f"<{d.name}> blocks are" if d.inline is not None else f"'{d.name}' is"
        if st.lenient:
            st.warn(d, f"{what} not supported by trivpn yet (OpenVPN accepts it; "
                       "`trivpn run` would refuse this config)")
            return
        raise v.fail(d, f"{what} not supported by trivpn yet")
    spec = DIRECTIVES.get(d.name)
    if spec is None:
        if allow_unknown or st.forward_compatible or d.name in st.opts.ignore_unknown_option:
            st.warn(d, f"ignoring unknown directive '{d.name}'")
            return
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
    st.opts = spec.handler(st, d)


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
    tls_client = "tls-client" in seen or "client" in seen
    tls_server = "tls-server" in seen or "server" in seen
    if tls_client and tls_server:
        raise _error(st, "a config can be a TLS client or a TLS server, not both "
                         "('client'/'tls-client' with 'server'/'tls-server')",
                     _last_of(st, "tls-client" if "tls-client" in seen else "client",
                              "tls-server" if "tls-server" in seen else "server"))
    if not tls_client and not tls_server:
        raise _error(st, "peer-to-peer mode without TLS (static key) is not supported by "
                         "trivpn yet: add 'client' or 'server'", "mode")
    tls_role: Role = "client" if tls_client else "server"
    mode_server = st.mode_server or "server" in seen
    if mode_server and tls_role != "server":
        raise _error(st, "'mode server' needs 'tls-server' (or use the 'server' directive)",
                     "mode")
    if o.pull and tls_role != "client":
        raise _error(st, "'pull' needs 'tls-client' (or use 'client')", "pull")
    o = replace(o, tls_role=tls_role, role=tls_role, mode="server" if mode_server else "p2p")

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

    # --- transport (options.c options_postprocess_mutate_ce) ---
    proto = _resolve_proto(st, st.raw_proto, "proto")
    if tls_role == "client" and not o.pull:
        # the client runtime always pulls its settings from a server; a TLS peer-to-peer
        # client would take them from its own config and negotiate with its peer instead
        raise _error(st, "'tls-client' without 'pull' is TLS peer-to-peer mode, which trivpn "
                         "does not support yet: use 'client' (or add 'pull')", "tls-client")
    if o.mode == "server" and proto == "tcp-client":
        raise _error(st, "a server cannot use 'proto tcp-client' (use udp or tcp-server)",
                     "proto")
    if o.pull and proto == "tcp-server":
        raise _error(st, "a client cannot use 'proto tcp-server' (use udp or tcp-client)",
                     "proto")
    remotes = tuple(
        Remote(r.host, r.port if r.port is not None else o.rport,
               _resolve_proto(st, r.proto, "remote", r.directive) if r.proto else proto,
               r.family if r.proto else o.family, r.directive.line)
        for r in st.remotes)
    o = replace(o, proto=proto, remotes=remotes)
    if tls_role == "client" and not remotes and o.pull:
        raise _error(st, "client config has no 'remote' directive (add 'remote HOST PORT')")

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

    # --- connection rate limits (options.c: connect-freq needs a UDP server) ---
    if o.connect_freq is not None:
        if o.mode != "server":
            raise _error(st, "'connect-freq' needs 'mode server' (or the 'server' directive)",
                         "connect-freq")
        if o.proto != "udp":
            raise _error(st, "'connect-freq' only works with 'proto udp' (OpenVPN 2.6 refuses "
                             "it for TCP too); use 'max-clients' instead", "connect-freq")

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
    if "tls-auth" in seen and "tls-crypt" in seen:
        raise _error(st, "'tls-auth' and 'tls-crypt' cannot be used together",
                     _last_of(st, "tls-auth", "tls-crypt"))
    if o.ca is None:
        raise _error(st, "no 'ca' directive: a TLS client or server needs the CA certificate "
                         "that signed its peer's certificate")
    if (o.cert is None) != (o.key is None):
        given, missing = ("cert", "key") if o.key is None else ("key", "cert")
        raise _error(st, f"'{given}' is given without '{missing}'", given)
    if o.cert is None:
        if tls_role == "server":
            raise _error(st, "a server needs its own 'cert' and 'key'")
        if o.auth_user_pass is None:
            raise _error(st, "no 'cert'/'key': a client needs a certificate and key, or "
                             "'auth-user-pass' with a server that sets 'verify-client-cert none'")
    if tls_role == "server" and o.dh is None:
        raise _error(st, "no 'dh' directive: an OpenVPN 2.6 TLS server requires one "
                         "(use 'dh none' for ECDHE key exchange only)")
    if tls_role == "server" and o.auth_user_pass is not None:
        raise _error(st, "'auth-user-pass' is a client option", "auth-user-pass")
    # verify-client-cert: 'require' is the default; the other values need a way to check the
    # client's password, which OpenVPN 2.6 insists on (options.c) and trivpn does not offer
    if o.verify_client_cert != "require":
        if tls_role == "server":
            raise _error(st, f"'verify-client-cert {o.verify_client_cert}' must be used with "
                             "'management-client-auth', an 'auth-user-pass-verify' script, or "
                             "'plugin' (OpenVPN 2.6 refuses it otherwise); trivpn supports "
                             "none of them", "verify-client-cert")
        raise _error(st, "'verify-client-cert' requires 'mode server'", "verify-client-cert")

    o = replace(o, warnings=tuple(st.warnings) + tuple(_warnings(st, o)))
    return replace(
        o,
        directive_lines=MappingProxyType({k: d.line for k, d in st.first_seen.items()}),
        directive_files=MappingProxyType({k: d.path for k, d in st.first_seen.items()}),
    )


def _last_of(st: ParseState, a: str, b: str) -> str:
    """Which of two directives was applied later (with includes expanded)."""
    return a if st.last_position[a] > st.last_position[b] else b


def _dev_type(st: ParseState) -> DevType:
    if st.opts.dev_type != "tun" or "dev-type" in st.last_seen:
        return st.opts.dev_type
    dev = st.opts.dev
    if dev.startswith("tun"):
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
        if o.cipher not in o.data_ciphers:
            warn(f"'cipher {o.cipher}' is not in data-ciphers ({':'.join(o.data_ciphers)}), so "
                 "OpenVPN 2.6 ignores it for cipher negotiation; add it to 'data-ciphers' or "
                 "remove it", "cipher")
    if o.role == "client" and not (o.remote_cert_tls or o.verify_x509_name or o.ns_cert_type
                                   or o.remote_cert_eku or o.remote_cert_ku is not None):
        warn("no server certificate verification is enabled: any certificate from the same CA "
             "(e.g. another client's) is accepted as the server; add 'remote-cert-tls server'")
    if o.key_direction is not None and o.tls_crypt is not None and o.tls_auth is None:
        warn("'key-direction' has no effect on tls-crypt (its direction follows the role)",
             "key-direction")
    return found
