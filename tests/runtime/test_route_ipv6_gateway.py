"""route-ipv6-gateway: the gateway of IPv6 routes that name none, on a tap device only
(OpenVPN route.c, add_route_ipv6(); init.c, do_init_route_ipv6_list()). The kernel routes of
both the real openvpn and trivpn are compared in tests/interop/test_srvsmall_vs_openvpn.py."""

from __future__ import annotations

import pytest

from trivpn.config import parse_config
from trivpn.protocol.push import parse_pushed_options
from trivpn.runtime.server import server_tunnel_plan
from trivpn.runtime.tunnel import RouteAssignment, plan_client_tunnel

PUSH = ["ifconfig 198.18.8.2 255.255.255.0", "ifconfig-ipv6 2001:2:0:8::1000/64 2001:2:0:8::1",
        "route-ipv6 2001:2:0:31::/64", "route-ipv6 2001:2:0:32::/64 2001:2:0:8::7"]


def _routes6(dev: str, extra: str) -> dict[str, str | None]:
    options = parse_config(f"client\ndev {dev}\nremote 198.18.0.1 1194\nca ca.crt\n"
                           f"cert c.crt\nkey c.key\n{extra}", "/etc/c.conf")
    plan = plan_client_tunnel(options, parse_pushed_options(PUSH), remote_host="198.18.0.1",
                              net_gateway=None)
    return {r.destination: r.gateway for r in plan.routes if ":" in r.destination}


@pytest.mark.directive("route-ipv6-gateway")
def test_route_ipv6_gateway_is_the_gateway_of_tap_routes_that_name_none():
    assert _routes6("tap", "route-ipv6-gateway 2001:2:0:8::99\n") == {
        "2001:2:0:31::/64": "2001:2:0:8::99", "2001:2:0:32::/64": "2001:2:0:8::7"}


@pytest.mark.directive("route-ipv6-gateway")
def test_route_ipv6_gateway_is_not_used_on_a_tun_device():
    assert _routes6("tun", "route-ipv6-gateway 2001:2:0:8::99\n")["2001:2:0:31::/64"] is None


@pytest.mark.directive("route-ipv6-gateway")
def test_a_tap_server_routes_its_route_ipv6_lines_through_route_ipv6_gateway():
    options = parse_config(
        "mode server\ntls-server\ndev tap\nifconfig 198.18.8.1 255.255.255.0\n"
        "ifconfig-ipv6 2001:2:0:8::1/64 2001:2:0:8::2\nca ca.crt\ncert s.crt\nkey s.key\n"
        "dh none\nroute-ipv6 2001:2:0:40::/64\nroute-ipv6-gateway 2001:2:0:8::50\n",
        "/etc/s.conf")
    assert RouteAssignment("2001:2:0:40::/64", "2001:2:0:8::50") in \
        server_tunnel_plan(options).routes
