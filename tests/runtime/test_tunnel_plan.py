"""What to configure for a tunnel: the pure plan computed from config and push."""

from __future__ import annotations

import pytest

from trivpn.config import Options, parse_config
from trivpn.protocol.push import parse_pushed_options
from trivpn.runtime.tunnel import (
    AddressAssignment,
    NetGateway,
    RouteAssignment,
    RouteRequest,
    TunnelPlan,
    TunnelPlanError,
    device_name,
    plan_client_tunnel,
    plan_tunnel,
)

SERVER = "198.18.0.1"
VIA_VETH = NetGateway(gateway="198.18.0.254", ifname="veth0")


def _client(extra: str = "") -> Options:
    return parse_config("client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\n"
                        "key c.key\n" + extra, "/etc/c.conf")


def _plan(push: list[str], extra: str = "", net_gateway: NetGateway | None = VIA_VETH
          ) -> TunnelPlan:
    options = _client(extra)
    return plan_client_tunnel(options, parse_pushed_options(push), remote_host=SERVER,
                              net_gateway=net_gateway)


@pytest.mark.parametrize(("push", "addresses", "routes"), [
    # topology subnet: address with netmask; pushed routes via route-gateway
    (["route 198.18.9.0 255.255.255.0", "route-gateway 198.18.8.1", "topology subnet",
      "ifconfig 198.18.8.2 255.255.255.0"],
     (AddressAssignment("198.18.8.2", 24),),
     (RouteAssignment("198.18.9.0/24", "198.18.8.1"),)),
    # topology net30: point-to-point address; routes via the ifconfig peer
    (["route 198.18.8.1", "topology net30", "ifconfig 198.18.8.6 198.18.8.5"],
     (AddressAssignment("198.18.8.6", 32, "198.18.8.5"),),
     (RouteAssignment("198.18.8.1/32", "198.18.8.5"),)),
    # topology p2p behaves like net30 for the address
    (["topology p2p", "ifconfig 198.18.8.2 198.18.8.1"],
     (AddressAssignment("198.18.8.2", 32, "198.18.8.1"),), ()),
    # redirect-gateway def1: exception route first, then the two halves
    (["route-gateway 198.18.8.1", "topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
      "redirect-gateway def1"],
     (AddressAssignment("198.18.8.2", 24),),
     (RouteAssignment("198.18.0.1/32", "198.18.0.254", via_tunnel=False, ifname="veth0"),
      RouteAssignment("0.0.0.0/1", "198.18.8.1"),
      RouteAssignment("128.0.0.0/1", "198.18.8.1"))),
    # redirect-gateway local def1: no exception route
    (["topology net30", "ifconfig 198.18.8.6 198.18.8.5", "redirect-gateway local def1"],
     (AddressAssignment("198.18.8.6", 32, "198.18.8.5"),),
     (RouteAssignment("0.0.0.0/1", "198.18.8.5"),
      RouteAssignment("128.0.0.0/1", "198.18.8.5"))),
    # explicit gateway, metric, and the route-metric default
    (["topology subnet", "ifconfig 198.18.8.2 255.255.255.0", "route-gateway 198.18.8.1",
      "route-metric 7", "route 198.18.10.0 255.255.255.0 198.18.8.3 5",
      "route 198.18.11.0 255.255.255.0"],
     (AddressAssignment("198.18.8.2", 24),),
     (RouteAssignment("198.18.10.0/24", "198.18.8.3", 5),
      RouteAssignment("198.18.11.0/24", "198.18.8.1", 7))),
    # a net_gateway route leaves through the physical path
    (["topology subnet", "ifconfig 198.18.8.2 255.255.255.0", "route-gateway 198.18.8.1",
      "route 198.18.12.0 255.255.255.0 net_gateway"],
     (AddressAssignment("198.18.8.2", 24),),
     (RouteAssignment("198.18.12.0/24", "198.18.0.254", via_tunnel=False, ifname="veth0"),)),
])
def test_client_plan_follows_topology_and_routes(push, addresses, routes):
    plan = _plan(push)
    assert plan.addresses == addresses
    assert plan.routes == routes


@pytest.mark.directive("route")
def test_configured_routes_come_before_pushed_ones():
    plan = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                  "route-gateway 198.18.8.1", "route 198.18.9.0 255.255.255.0"],
                 "route 198.18.20.0 255.255.255.0\n")
    assert [r.destination for r in plan.routes] == ["198.18.20.0/24", "198.18.9.0/24"]


@pytest.mark.directive("tun-mtu")
def test_pushed_tun_mtu_overrides_the_configured_one():
    assert _plan(["tun-mtu 1400"], "tun-mtu 1500\n").mtu == 1400
    assert _plan([], "tun-mtu 1420\n").mtu == 1420


@pytest.mark.directive("dev")
@pytest.mark.parametrize(("dev", "kind", "name"), [
    ("tun", "tun", "tun%d"), ("tap", "tap", "tap%d"), ("tun3", "tun", "tun3"),
    ("vpn0", "tun", "vpn0"),
])
def test_device_name_lets_the_kernel_choose_only_for_the_bare_type(dev, kind, name):
    assert device_name(dev, kind) == name


def test_tap_always_gets_address_and_netmask():
    plan = plan_tunnel(kind="tap", dev="tap", mtu=1500, topology="net30",
                       ifconfig=("198.18.8.2", "255.255.255.0"))
    assert plan.addresses == (AddressAssignment("198.18.8.2", 24),)


def test_redirect_gateway_without_a_known_path_to_the_server_is_skipped_with_a_warning():
    plan = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                  "route-gateway 198.18.8.1", "redirect-gateway def1"], net_gateway=None)
    assert plan.routes == ()
    assert any("not redirecting" in w for w in plan.warnings)


def test_redirect_gateway_without_def1_is_installed_as_def1_and_says_so():
    plan = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                  "route-gateway 198.18.8.1", "redirect-gateway"])
    assert [r.destination for r in plan.routes] == ["198.18.0.1/32", "0.0.0.0/1", "128.0.0.0/1"]
    assert any("def1" in w for w in plan.warnings)


def test_route_that_is_not_a_numeric_network_is_skipped_with_a_warning():
    plan = plan_tunnel(kind="tun", dev="tun", mtu=1500, topology="subnet",
                       ifconfig=("198.18.8.2", "255.255.255.0"), route_gateway="198.18.8.1",
                       routes=[RouteRequest("vpn.example.org"),
                               RouteRequest("198.18.9.1", "255.255.255.0")])
    assert plan.routes == ()
    assert len([w for w in plan.warnings if "skipped" in w]) == 2


def test_bad_netmask_is_a_plan_error():
    with pytest.raises(TunnelPlanError, match="netmask"):
        plan_tunnel(kind="tun", dev="tun", mtu=1500, topology="subnet",
                    ifconfig=("198.18.8.2", "255.0.255.0"))


def test_plans_compare_equal_regardless_of_warnings():
    a = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0"])
    b = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0"], net_gateway=None)
    assert a == b
    c = _plan(["topology subnet", "ifconfig 198.18.8.3 255.255.255.0"])
    assert a != c


@pytest.mark.directive("ifconfig")
def test_client_config_ifconfig_is_used_when_nothing_is_pushed():
    plan = _plan([], "ifconfig 198.18.8.2 198.18.8.1\n")
    assert plan.addresses == (AddressAssignment("198.18.8.2", 32, "198.18.8.1"),)


# Pushed routes are validated before they are installed --------------------------------------

_SUBNET = ["topology subnet", "ifconfig 198.18.8.2 255.255.255.0", "route-gateway 198.18.8.1"]


@pytest.mark.parametrize(("route", "why"), [
    ("route 198.18.9.0 255.0.255.0", "not a contiguous IPv4 netmask"),
    ("route 198.18.9.1 255.255.255.0", "host bits set"),
    ("route 0.0.0.0 0.0.0.0", "replace this host's default route"),
])
def test_bad_pushed_route_is_skipped_with_a_warning_and_the_others_installed(route, why):
    plan = _plan([*_SUBNET, route, "route 198.18.10.0 255.255.255.0"])
    assert [r.destination for r in plan.routes] == ["198.18.10.0/24"]
    assert any(why in w and route in w for w in plan.warnings), plan.warnings


def test_a_configured_default_route_is_the_users_choice():
    plan = _plan(_SUBNET, "route 0.0.0.0 0.0.0.0\n")
    assert [r.destination for r in plan.routes] == ["198.18.0.1/32", "0.0.0.0/0"]


def test_route_metric_applies_to_routes_but_not_to_the_redirect_gateway_halves():
    # OpenVPN 2.6 (route.c add_route3) installs the def1 halves and the exception route
    # without a metric; pushed routes get route-metric
    plan = _plan([*_SUBNET, "route-metric 7", "redirect-gateway def1",
                  "route 198.18.9.0 255.255.255.0"])
    assert {r.destination: r.metric for r in plan.routes} == {
        "198.18.0.1/32": None, "0.0.0.0/1": None, "128.0.0.0/1": None, "198.18.9.0/24": 7}


def test_a_route_covering_the_server_keeps_the_server_outside_the_tunnel():
    plan = _plan([*_SUBNET, "route 198.18.0.0 255.255.255.0"])
    assert plan.routes == (
        RouteAssignment("198.18.0.1/32", "198.18.0.254", via_tunnel=False, ifname="veth0"),
        RouteAssignment("198.18.0.0/24", "198.18.8.1"))
    assert any("cover the VPN server's address 198.18.0.1" in w for w in plan.warnings)


def test_a_route_covering_the_server_is_skipped_when_the_path_to_the_server_is_unknown():
    plan = _plan([*_SUBNET, "route 198.18.0.0 255.255.0.0", "route 198.18.20.0 255.255.255.0"],
                 net_gateway=None)
    assert [r.destination for r in plan.routes] == ["198.18.20.0/24"]
    assert any("198.18.0.0/16" in w and "skipped" in w for w in plan.warnings)


def test_redirect_gateway_exception_route_is_not_doubled():
    plan = _plan([*_SUBNET, "redirect-gateway def1", "route 198.18.0.0 255.255.255.0"])
    assert [r.destination for r in plan.routes].count("198.18.0.1/32") == 1


@pytest.mark.directive("route-gateway")
def test_configured_route_gateway_is_the_default_next_hop_when_none_is_pushed():
    plan = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0"],
                 "route-gateway 198.18.8.9\nroute 198.18.20.0 255.255.255.0\n")
    assert plan.routes == (RouteAssignment("198.18.20.0/24", "198.18.8.9"),)
    pushed = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                    "route-gateway 198.18.8.1"],
                   "route-gateway 198.18.8.9\nroute 198.18.20.0 255.255.255.0\n")
    assert pushed.routes == (RouteAssignment("198.18.20.0/24", "198.18.8.1"),)


@pytest.mark.directive("redirect-gateway")
def test_configured_redirect_gateway_sends_everything_through_the_tunnel():
    plan = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                  "route-gateway 198.18.8.1"], "redirect-gateway def1\n")
    assert [r.destination for r in plan.routes] == ["198.18.0.1/32", "0.0.0.0/1", "128.0.0.0/1"]
    local = _plan(["topology subnet", "ifconfig 198.18.8.2 255.255.255.0",
                   "route-gateway 198.18.8.1"], "redirect-gateway local def1\n")
    assert [r.destination for r in local.routes] == ["0.0.0.0/1", "128.0.0.0/1"]


@pytest.mark.directive("dev-type", "dev")
@pytest.mark.parametrize(("extra", "kind", "name"), [
    ("dev vpn0\ndev-type tap\n", "tap", "vpn0"), ("dev vpn0\ndev-type tun\n", "tun", "vpn0"),
    ("dev tap\n", "tap", "tap%d"), ("dev tap3\ndev-type tun\n", "tun", "tap3"),
])
def test_dev_type_decides_the_device_kind_whatever_its_name(extra, kind, name):
    options = parse_config("client\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\n"
                           "key c.key\n" + extra, "/etc/c.conf")
    plan = plan_client_tunnel(options, None, remote_host=SERVER, net_gateway=VIA_VETH)
    assert (plan.kind, plan.name) == (kind, name)


@pytest.mark.directive("txqueuelen")
def test_txqueuelen_is_part_of_the_plan_and_zero_means_the_kernels_default():
    assert _plan([], "txqueuelen 321\n").txqueuelen == 321
    assert _plan([], "txqueuelen 0\n").txqueuelen is None
    assert _plan([]).txqueuelen is None


PUSH6 = ["topology subnet", "ifconfig 198.18.8.2 255.255.255.0", "route-gateway 198.18.8.1",
         "ifconfig-ipv6 2001:2:0:7::1000/64 2001:2:0:7::1"]


def test_pushed_ifconfig_ipv6_puts_the_ipv6_address_on_the_device():
    plan = _plan(PUSH6)
    assert AddressAssignment("2001:2:0:7::1000", 64) in plan.addresses


@pytest.mark.directive("ifconfig-ipv6")
def test_configured_ifconfig_ipv6_is_used_when_none_is_pushed():
    plan = _plan(PUSH6[:3], "ifconfig-ipv6 2001:2:0:9::5/64 2001:2:0:9::1\n")
    assert AddressAssignment("2001:2:0:9::5", 64) in plan.addresses
    plan = _plan(PUSH6, "ifconfig-ipv6 2001:2:0:9::5/64 2001:2:0:9::1\n")
    assert AddressAssignment("2001:2:0:7::1000", 64) in plan.addresses  # the push wins


@pytest.mark.directive("route-ipv6")
def test_configured_ipv6_routes_come_before_pushed_ones_and_go_out_of_the_device():
    plan = _plan([*PUSH6, "route-ipv6 2001:2:0:20::/64"], "route-ipv6 2001:2:0:21::/64 default 9\n")
    assert [r for r in plan.routes if ":" in r.destination] == [
        RouteAssignment("2001:2:0:21::/64", None, 9), RouteAssignment("2001:2:0:20::/64")]


@pytest.mark.directive("redirect-gateway")
def test_redirect_gateway_ipv6_installs_openvpns_four_ipv6_routes_and_not_ipv4_ones():
    plan = _plan([*PUSH6, "redirect-gateway ipv6 !ipv4"])
    assert [r.destination for r in plan.routes] == ["::/3", "2000::/4", "3000::/4", "fc00::/7"]


def test_redirect_gateway_ipv6_without_an_ipv6_address_installs_no_ipv6_route():
    plan = _plan([*PUSH6[:3], "redirect-gateway def1 ipv6"])
    assert not [r for r in plan.routes if ":" in r.destination]


def test_redirect_gateway_ipv6_keeps_an_ipv6_vpn_server_outside_the_tunnel():
    options = _client()
    via6 = NetGateway(gateway=None, ifname="veth0")
    plan = plan_client_tunnel(options, parse_pushed_options([*PUSH6, "redirect-gateway ipv6"]),
                              remote_host="2001:2:0:ff::1", net_gateway=via6)
    assert plan.routes[0] == RouteAssignment("2001:2:0:ff::1/128", None, via_tunnel=False,
                                             ifname="veth0")
    assert "2000::/4" in [r.destination for r in plan.routes]


# --- client breadth b ---

@pytest.mark.directive("redirect-private")
def test_redirect_private_routes_the_server_outside_but_keeps_the_default_route():
    plan = _plan(["route-gateway 198.18.8.1", "topology subnet",
                  "ifconfig 198.18.8.2 255.255.255.0", "route 198.18.9.0 255.255.255.0"],
                 "redirect-private\n")
    assert plan.routes == (
        RouteAssignment("198.18.0.1/32", "198.18.0.254", via_tunnel=False, ifname="veth0"),
        RouteAssignment("198.18.9.0/24", "198.18.8.1"))


@pytest.mark.directive("redirect-private")
def test_redirect_private_local_adds_no_route_and_a_pushed_redirect_gateway_wins():
    base = ["route-gateway 198.18.8.1", "topology subnet", "ifconfig 198.18.8.2 255.255.255.0"]
    assert _plan(base, "redirect-private local\n").routes == ()
    pushed = _plan([*base, "redirect-gateway def1"], "redirect-private\n")
    assert RouteAssignment("0.0.0.0/1", "198.18.8.1") in pushed.routes
