"""Server sockets (issue 13): ``multihome`` and ``port-share``.

The handlers are plain functions over the parse state (``directives.py`` wraps them into its
``Spec`` table under its ``server sockets`` anchor). OpenVPN 2.6 reads them in
src/openvpn/options.c, add_option(): ``multihome`` takes no argument (sets SF_USE_IP_PKTINFO);
``port-share HOST PORT [DIR]`` needs a TCP server (options_postprocess_verify_ce()).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from trivpn.config import values as v
from trivpn.config.options import Options, PortShare
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


# name -> (min args, max args, handler, inline, inert reason)
SPECS: Mapping[str, tuple[int, int | None, Handler, bool, str | None]] = {
    "multihome": (0, 0, multihome, False, None),
    "port-share": (2, 3, port_share, False, None),
}
