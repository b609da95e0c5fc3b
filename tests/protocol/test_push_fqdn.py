"""allow-pull-fqdn: host names in pushed ifconfig/route/route-gateway (OpenVPN socket.c,
ip_or_dns_addr_safe(); behaviour against openvpn 2.6 in tests/interop/test_more_directives.py)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.push import (
    PullPolicy,
    parse_pushed_options,
    unresolved_names,
    with_resolved_names,
)

PUSH = ["route net.example 255.255.255.0", "route 198.18.10.0 255.255.255.0 gw.example",
        "route 198.18.11.0 255.255.255.0 vpn_gateway", "route-gateway gw.example",
        "ifconfig 198.18.8.10 255.255.255.0"]
FQDN = PullPolicy(allow_fqdn=True)


@pytest.mark.directive("allow-pull-fqdn")
def test_names_are_kept_aside_until_resolved():
    pushed = parse_pushed_options(PUSH, FQDN)
    assert len(pushed.routes) == 1 and pushed.route_gateway is None
    assert unresolved_names(pushed) == ("net.example", "gw.example")


@pytest.mark.directive("allow-pull-fqdn")
def test_resolved_names_become_routes_and_gateway():
    pushed = parse_pushed_options(PUSH, FQDN)
    merged, skipped = with_resolved_names(pushed, {"net.example": IPv4Address("198.18.9.0"),
                                                   "gw.example": IPv4Address("198.18.8.1")})
    assert skipped == () and merged.unresolved == ()
    assert {str(r.network) for r in merged.routes} == {"198.18.9.0", "198.18.10.0",
                                                       "198.18.11.0"}
    assert merged.route_gateway == IPv4Address("198.18.8.1")
    assert merged.ifconfig is not None


@pytest.mark.directive("allow-pull-fqdn")
def test_a_route_whose_name_does_not_resolve_is_skipped_but_a_gateway_is_an_error():
    pushed = parse_pushed_options(PUSH[:1], FQDN)
    merged, skipped = with_resolved_names(pushed, {})
    assert skipped == (PUSH[0],) and merged.routes == ()
    with pytest.raises(ProtocolError, match=r"cannot resolve 'gw\.example'"):
        with_resolved_names(parse_pushed_options(["route-gateway gw.example"], FQDN), {})


@pytest.mark.directive("allow-pull-fqdn")
def test_without_allow_pull_fqdn_a_name_is_refused_with_a_hint():
    with pytest.raises(ProtocolError, match="needs allow-pull-fqdn"):
        parse_pushed_options(PUSH[:1])
    with pytest.raises(ProtocolError, match="not an IPv4 address"):
        parse_pushed_options(["route bad_name!"], FQDN)
