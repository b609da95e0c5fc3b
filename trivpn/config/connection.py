"""Connection handling and proxies: ``<connection>`` blocks, ``http-proxy``/``socks-proxy``
and the client's retry/reconnect directives.

The handlers are plain functions over the parse state (``directives.py`` wraps them into its
``Spec`` table under its ``connection handling and proxies`` anchor).

``<connection>`` blocks follow OpenVPN src/openvpn/options.c: add_option() parses each block
into a copy of the connection options in effect where the block starts (global ``proto``,
``port``, ``http-proxy``... written *before* the block are its defaults); a block needs a
``remote`` (the last one in the block counts); only connection options are allowed inside;
once a block was read, connection options outside blocks are ignored with a warning, and
``remote`` lines outside blocks are ignored (options_postprocess_mutate() builds the profile
list from the ``remote`` lines only when there is no block).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from trivpn.config import values as v
from trivpn.config.options import FileSource, HttpProxy, Options, SocksProxy
from trivpn.config.reader import Directive, read_config_text, resolve

if TYPE_CHECKING:
    from trivpn.config.directives import ParseState, PendingRemote, RawProto

Handler = Callable[["ParseState", Directive], Options]

# Options OpenVPN 2.6 allows inside a <connection> block (VERIFY_PERMISSION with
# OPT_P_CONNECTION in options.c add_option()).
CONNECTION_OPTIONS = frozenset({
    "local", "remote", "connect-retry", "connect-timeout", "server-poll-timeout",
    "connect-retry-max", "float", "link-mtu", "udp-mtu", "tun-mtu", "tun-mtu-max",
    "tun-mtu-extra", "max-packet-size", "mtu-dynamic", "fragment", "mtu-disc", "port",
    "lport", "rport", "bind", "nobind", "proto", "http-proxy", "http-proxy-retry",
    "socks-proxy-retry", "http-proxy-timeout", "http-proxy-option", "socks-proxy",
    "explicit-exit-notify", "mssfix", "key-direction", "tls-auth", "tls-crypt",
    "tls-crypt-v2",
})

# Connection options trivpn applies to the whole client rather than per profile: every
# block must then agree on them (checked against these Options fields).
SHARED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "local": ("local",), "lport": ("lport",), "bind": ("nobind",), "nobind": ("nobind",),
    "float": ("float_",), "connect-retry": ("connect_retry",), "tun-mtu": ("tun_mtu",),
    "mssfix": ("mssfix",), "max-packet-size": ("max_packet_size",),
    "key-direction": ("key_direction",), "tls-auth": ("tls_auth",),
    "tls-crypt": ("tls_crypt",),
    # --- static ---
    "link-mtu": ("link_mtu",), "udp-mtu": ("link_mtu",),
}


@dataclass(slots=True)
class PendingConnection:
    """One <connection> block, resolved into a Remote when the whole file is read."""

    remote: PendingRemote
    raw_proto: RawProto
    opts: Options
    directive: Directive
    seen: frozenset[str]


# --- the block --------------------------------------------------------------------------------

def read_block(st: ParseState, d: Directive,
               apply: Callable[[ParseState, Directive], None]) -> None:
    """Parse one ``<connection>`` block into ``st.connections``."""
    from trivpn.config.directives import ParseState  # noqa: PLC0415 - import cycle

    if d.inline is None:
        raise v.fail(d, "'connection' must be written as a <connection> … </connection> block")
    inner = read_config_text(d.inline, d.path).directives
    sub = ParseState(st.opts, raw_proto=st.raw_proto, lenient=st.lenient,
                     forward_compatible=st.forward_compatible)
    sub.in_connection = True
    sub.connections = []
    for raw in inner:
        item = replace(raw, line=d.line + raw.line)
        if item.name not in CONNECTION_OPTIONS:
            raise v.fail(item, f"'{item.name}' is not allowed inside a <connection> block "
                               "(only connection options such as remote, proto, port, "
                               "http-proxy, socks-proxy, connect-timeout are)")
        apply(sub, item)
    if not sub.remotes:
        raise v.fail(d, "each <connection> block must contain a 'remote' directive")
    st.warnings.extend(sub.warnings)
    if "connect-retry-max" in sub.last_seen:  # a client-wide limit (see docs/connections.md)
        st.opts = replace(st.opts, connect_retry_max=sub.opts.connect_retry_max)
    st.connections.append(PendingConnection(sub.remotes[-1], sub.raw_proto, sub.opts, d,
                                            frozenset(sub.last_seen)))


def shared_options(st: ParseState, o: Options) -> Options:
    """The global options with what every block agrees on (tun-mtu, tls-auth...), or a
    ConfigError naming the block that differs."""
    if not st.connections:
        return o
    first = st.connections[0]
    changes: dict[str, object] = {}
    for name, fields in SHARED_FIELDS.items():
        if not any(name in c.seen for c in st.connections):
            continue
        for field_name in fields:
            want = _comparable(getattr(first.opts, field_name))
            for c in st.connections[1:]:
                if _comparable(getattr(c.opts, field_name)) != want:
                    raise v.fail(c.directive, f"'{name}' differs between <connection> blocks; "
                                              "trivpn needs the same value in every block")
            changes[field_name] = getattr(first.opts, field_name)
    return replace(o, **changes) if changes else o  # type: ignore[arg-type]


def _comparable(value: object) -> object:
    if isinstance(value, FileSource):
        return (value.path, value.inline)
    return value


def warn_ignored_after_blocks(st: ParseState, d: Directive) -> bool:
    """A connection option outside blocks after a block: OpenVPN ignores it with a warning
    (options.c add_option(), "is ignored by previous <connection> blocks"); True if so."""
    if not st.connections or st.in_connection or d.name not in CONNECTION_OPTIONS:
        return False
    st.warn(d, f"Option '{d.name}' is ignored by previous <connection> blocks")
    return True


# --- handlers ---------------------------------------------------------------------------------

def connect_retry_max(st: ParseState, d: Directive) -> Options:
    n = v.integer(d, 0, 0)
    return replace(st.opts, connect_retry_max=n or None)


def flag(st: ParseState, d: Directive) -> Options:
    if d.name == "remote-random-hostname":
        return replace(st.opts, remote_random_hostname=True)
    if d.name == "persist-remote-ip":
        return replace(st.opts, persist_remote_ip=True)
    raise AssertionError(d.name)


def route_delay(st: ParseState, d: Directive) -> Options:
    seconds = v.integer(d, 0, 0) if d.args else 0
    window = v.integer(d, 1, 0) if len(d.args) == 2 else 30
    return replace(st.opts, route_delay=(seconds, window))


def route_metric(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, route_metric=v.integer(d, 0, 0))


def mark(st: ParseState, d: Directive) -> Options:
    """``mark VALUE``: decimal, as OpenVPN's atoi() reads it (hex would silently be 0 there)."""
    return replace(st.opts, mark=v.integer(d, 0, 0, 2**32 - 1))


# OpenVPN 2.6 (proxy.c, http_proxy_new()): none, basic, ntlm (NTLMv1), ntlm2 (NTLMv2); Digest
# only through 'auto' when the proxy asks for it
HTTP_AUTH_METHODS = frozenset({"none", "basic", "ntlm", "ntlm2"})


def http_proxy(st: ParseState, d: Directive) -> Options:
    if len(d.args) < 2:
        raise v.fail(d, "http-proxy port number not defined")
    base = st.opts.http_proxy or HttpProxy()
    proxy = replace(base, host=d.args[0], port=v.port(d, 1), auth="none", credentials=None,
                    line=d.line)
    if len(d.args) >= 3:
        third = d.args[2]
        if third in ("auto", "auto-nct"):
            proxy = replace(proxy, auth=third)  # type: ignore[arg-type]
            if len(d.args) == 4:
                raise v.fail(d, f"'http-proxy ... {third}' takes no authentication method")
        else:
            method = d.args[3].lower() if len(d.args) == 4 else "basic"
            if method not in HTTP_AUTH_METHODS:
                raise v.fail(d, f"http-proxy authentication method '{d.args[3]}' is not "
                                "supported by trivpn (only 'none', 'basic', 'ntlm' and "
                                "'ntlm2' are)")
            if third == "stdin":
                raise v.fail(d, "reading the proxy password from the terminal ('stdin') is "
                                "not supported by trivpn: give a file with the username and "
                                "password on two lines")
            src = FileSource(d.name, d.path, d.line, resolve(st.opts.base_dir, third))
            proxy = replace(proxy, auth=method, credentials=src if method != "none" else None)  # type: ignore[arg-type]
    return replace(st.opts, http_proxy=proxy)


def http_proxy_user_pass(st: ParseState, d: Directive) -> Options:
    base = st.opts.http_proxy or HttpProxy()
    return replace(st.opts, http_proxy=replace(base, credentials=st.file(d)))


def http_proxy_option(st: ParseState, d: Directive) -> Options:
    base = st.opts.http_proxy or HttpProxy()
    kind, rest = d.args[0], d.args[1:]
    if kind == "VERSION" and len(rest) == 1:
        if rest[0] not in ("1.0", "1.1"):
            raise v.fail(d, f"http-proxy-option VERSION must be 1.0 or 1.1, got '{rest[0]}'")
        proxy = replace(base, version=rest[0])
    elif kind == "AGENT" and len(rest) == 1:
        proxy = replace(base, agent=rest[0])
    elif kind in ("EXT1", "EXT2", "CUSTOM-HEADER") and rest:
        if len(base.headers) >= 10:  # OpenVPN's MAX_CUSTOM_HTTP_HEADER
            raise v.fail(d, "Cannot use more than 10 http-proxy-option CUSTOM-HEADER")
        header = (rest[0], rest[1] if len(rest) == 2 else None)
        proxy = replace(base, headers=(*base.headers, header))
    else:
        raise v.fail(d, f"Bad http-proxy-option or missing or extra parameter: '{kind}'")
    return replace(st.opts, http_proxy=proxy)


def socks_proxy(st: ParseState, d: Directive) -> Options:
    port = v.port(d, 1) if len(d.args) >= 2 else 1080
    creds = (FileSource(d.name, d.path, d.line, resolve(st.opts.base_dir, d.args[2]))
             if len(d.args) == 3 else None)
    return replace(st.opts, socks_proxy=SocksProxy(d.args[0], port, creds, d.line))


def deprecated_proxy_option(st: ParseState, d: Directive) -> Options:
    st.warn(d, f"'{d.name}' is deprecated and does nothing: proxy connections are retried "
               "like any connection (connect-retry-max, connect-timeout)")
    return st.opts


def connection_block(st: ParseState, d: Directive) -> Options:
    """Never reached: the parser reads blocks itself (:func:`read_block`)."""
    raise v.fail(d, "a <connection> block cannot be nested")


# name -> (min args, max args, handler, inline, inert reason)
SPECS: Mapping[str, tuple[int, int | None, Handler, bool, str | None]] = {
    "connection": (0, 0, connection_block, True, None),
    "connect-retry-max": (1, 1, connect_retry_max, False, None),
    "remote-random-hostname": (0, 0, flag, False, None),
    "persist-remote-ip": (0, 0, flag, False, None),
    "route-delay": (0, 2, route_delay, False, None),
    "route-metric": (1, 1, route_metric, False, None),
    "mark": (1, 1, mark, False, None),
    "http-proxy": (1, 4, http_proxy, False, None),
    "http-proxy-user-pass": (1, 1, http_proxy_user_pass, True, None),
    "http-proxy-option": (1, 3, http_proxy_option, False, None),
    "socks-proxy": (1, 3, socks_proxy, False, None),
    "http-proxy-retry": (0, 0, deprecated_proxy_option, False, (
        "OpenVPN 2.6 only warns that it is deprecated (options.c add_option(): proxy "
        "connections are retried like regular connections)")),
    "socks-proxy-retry": (0, 0, deprecated_proxy_option, False, (
        "OpenVPN 2.6 only warns that it is deprecated (options.c add_option(): proxy "
        "connections are retried like regular connections)")),
    "http-proxy-timeout": (1, 1, deprecated_proxy_option, False, (
        "OpenVPN 2.6 only warns that it is deprecated (options.c add_option(): the time to "
        "connect is governed by connect-timeout alone)")),
}
