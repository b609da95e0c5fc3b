"""The DNS directives of a config file: ``dhcp-option`` and OpenVPN 2.6's ``dns`` (the values
live in trivpn/protocol/dns.py; what is applied is described in docs/dns.md)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from trivpn.config import values as v
from trivpn.protocol.dns import DnsOptionError, dhcp_dns_address

if TYPE_CHECKING:
    from trivpn.config.directives import ParseState
    from trivpn.config.options import Options
    from trivpn.config.reader import Directive


def dhcp_option_directive(st: ParseState, d: Directive) -> Options:
    """``dhcp-option KIND [VALUE]``: OpenVPN on Linux hands it, from the config file or pushed,
    to the scripts as foreign_option_N (options.c, add_option(), setenv_foreign_option());
    trivpn applies the DNS kinds itself."""
    try:
        dhcp_dns_address(d.args[0], d.args[1] if len(d.args) > 1 else None)
    except DnsOptionError as exc:
        raise v.fail(d, str(exc)) from None
    return replace(st.opts, dhcp_options=(*st.opts.dhcp_options, d.args))


def dns_directive(st: ParseState, d: Directive) -> Options:
    """``dns server N ...`` / ``dns search-domains ...`` (OpenVPN 2.6, options.c add_option())."""
    try:
        return replace(st.opts, dns=st.opts.dns.with_line(d.args))
    except DnsOptionError as exc:
        raise v.fail(d, f"'dns': {exc}") from None
