"""Server sockets (issue 13): ``multihome``, ``port-share`` and the ``server-bridge`` helper.

The handlers are plain functions over the parse state (``directives.py`` wraps them into its
``Spec`` table under its ``server sockets`` anchor). OpenVPN 2.6 reads them in
src/openvpn/options.c, add_option(): ``multihome`` takes no argument (sets SF_USE_IP_PKTINFO);
``port-share HOST PORT [DIR]`` needs a TCP server (options_postprocess_verify_ce());
``server-bridge GW MASK POOL_START POOL_END`` is expanded in src/openvpn/helper.c,
helper_client_server() (mode server, tls-server, an ifconfig-pool and ``push "route-gateway
GW"``); ``server-bridge`` alone to mode server, tls-server and ``push "route-gateway dhcp"``,
``server-bridge nogw`` without that push.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from trivpn.config import values as v
from trivpn.config.options import Options, PortShare, ServerBridge
from trivpn.config.reader import Directive, resolve

if TYPE_CHECKING:
    from trivpn.config.directives import ParseState

Handler = Callable[["ParseState", Directive], Options]


def multihome(st: ParseState, d: Directive) -> Options:
    return replace(st.opts, multihome=True)


def port_share(st: ParseState, d: Directive) -> Options:
    host = d.args[0]
    port = v.integer(d, 1, 1, 65535)
    journal = resolve(st.opts.base_dir, d.args[2]) if len(d.args) > 2 else None
    return replace(st.opts, port_share=PortShare(host, port, journal))


def server_bridge(st: ParseState, d: Directive) -> Options:
    """``server-bridge GW MASK POOL_START POOL_END``, or without arguments (clients take their
    addresses by DHCP through the bridge; OpenVPN pushes ``route-gateway dhcp``), or ``nogw``
    (the same without that push) -- options.c add_option(), helper.c helper_client_server()."""
    if not d.args or tuple(d.args) == ("nogw",):
        return replace(st.opts, server_bridge_proxy_dhcp=True,
                       server_bridge_nogw=bool(d.args))
    if len(d.args) != 4:
        raise v.fail(d, "'server-bridge' expects GW MASK POOL_START POOL_END, 'nogw' or no "
                        "argument")
    bridge = ServerBridge(v.ipv4(d, 0), v.netmask(d, 1), v.ipv4(d, 2), v.ipv4(d, 3), d.line)
    return replace(st.opts, server_bridge=bridge)


def stale_routes_check(st: ParseState, d: Directive) -> Options:
    """``stale-routes-check N [T]``: N seconds of ageing, checked every T (default N) seconds;
    both at least 1 (OpenVPN options.c add_option())."""
    ageing = v.integer(d, 0, 1)
    interval = v.integer(d, 1, 1) if len(d.args) > 1 else ageing
    return replace(st.opts, stale_routes=(ageing, interval))


# name -> (min args, max args, handler, inline, inert reason)
SPECS: Mapping[str, tuple[int, int | None, Handler, bool, str | None]] = {
    "multihome": (0, 0, multihome, False, None),
    "port-share": (2, 3, port_share, False, None),
    "server-bridge": (0, 4, server_bridge, False, None),
    "stale-routes-check": (1, 2, stale_routes_check, False, None),
}
