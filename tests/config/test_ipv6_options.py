"""IPv6 directives: server-ipv6 and its expansion, ifconfig-ipv6(-pool), route-ipv6."""

from __future__ import annotations

import ipaddress

import pytest

from tests.config.helpers import client, server
from trivpn.config import ConfigError
from trivpn.config.derive import address_pool6, server_push_options, server_tun_ifconfig6
from trivpn.config.options import Ifconfig6

IP6 = ipaddress.IPv6Address


@pytest.mark.directive("server-ipv6")
def test_server_ipv6_expands_as_openvpn_helper_does():
    o = server("server-ipv6 2001:2:0:7::/64\n")
    assert server_tun_ifconfig6(o) == Ifconfig6(IP6("2001:2:0:7::1"), 64, IP6("2001:2:0:7::2"))
    pool = address_pool6(o)
    assert pool is not None
    assert pool.address(0) == IP6("2001:2:0:7::1000")
    assert pool.ifconfig_option(1) == "ifconfig-ipv6 2001:2:0:7::1001/64 2001:2:0:7::1"
    assert server_push_options(o)[0] == "tun-ipv6"


def test_server_ipv6_small_prefix_pool_starts_at_net_plus_2_and_ends_with_the_prefix():
    pool = address_pool6(server("server-ipv6 2001:2:0:7::/120\n"))
    assert pool is not None
    assert pool.address(0) == IP6("2001:2:0:7::2")
    assert pool.size == 254
    with pytest.raises(IndexError):
        pool.address(254)


@pytest.mark.parametrize(("line", "message"), [
    ("server-ipv6 2001:2:0:7::/56", "between /64 and /124"),
    ("server-ipv6 2001:2:0:7::5/64", "host bits"),
    ("server-ipv6 198.18.0.0/16", "IPv6-ADDRESS/BITS"),
])
def test_bad_server_ipv6_is_refused_with_its_line(line: str, message: str):
    with pytest.raises(ConfigError, match=message) as err:
        server(line + "\n")
    assert err.value.line == 8


def test_server_ipv6_on_a_client_is_refused():
    with pytest.raises(ConfigError, match="'server-ipv6' and 'client'"):
        client("server-ipv6 2001:2:0:7::/64\n")


def test_server_ipv6_with_an_explicit_pool_is_refused():
    with pytest.raises(ConfigError, match="already defines the IPv6 pool"):
        server("server-ipv6 2001:2:0:7::/64\nifconfig-ipv6 2001:2:0:7::1/64 2001:2:0:7::2\n"
               "ifconfig-ipv6-pool 2001:2:0:7::100/64\n")


@pytest.mark.directive("ifconfig-ipv6", "ifconfig-ipv6-pool")
def test_explicit_ipv6_pool_starts_at_its_base_and_skips_a_zero_host_part():
    o = server("ifconfig-ipv6 2001:2:0:9::1/64 2001:2:0:9::2\n"
               "ifconfig-ipv6-pool 2001:2:0:9::/64\n")
    pool = address_pool6(o)
    assert pool is not None
    assert pool.address(0) == IP6("2001:2:0:9::1")  # pool.c: never the ::0 anycast address
    assert pool.ifconfig_option(0) == "ifconfig-ipv6 2001:2:0:9::1/64 2001:2:0:9::1"


def test_ifconfig_ipv6_pool_needs_the_servers_own_ifconfig_ipv6():
    with pytest.raises(ConfigError, match="needs 'ifconfig-ipv6'"):
        server("ifconfig-ipv6-pool 2001:2:0:9::100/64\n")


@pytest.mark.directive("ifconfig-ipv6")
def test_ifconfig_ipv6_reads_address_bits_and_remote():
    o = client("ifconfig-ipv6 2001:2:0:9::5/64 2001:2:0:9::1\n")
    assert o.ifconfig_ipv6 == Ifconfig6(IP6("2001:2:0:9::5"), 64, IP6("2001:2:0:9::1"))


@pytest.mark.directive("route-ipv6")
def test_route_ipv6_reads_network_gateway_and_metric():
    o = client("route-ipv6 2001:2:0:a::/64\nroute-ipv6 2001:2:0:b::/64 2001:2:0:9::1 7\n"
               "route-ipv6 2001:2:0:c::/64 default 5\n")
    got = [(str(r.network), r.gateway and str(r.gateway), r.metric) for r in o.routes_ipv6]
    assert got == [("2001:2:0:a::/64", None, None),
                   ("2001:2:0:b::/64", "2001:2:0:9::1", 7),
                   ("2001:2:0:c::/64", None, 5)]


def test_route_ipv6_with_host_bits_is_refused():
    with pytest.raises(ConfigError, match="host bits"):
        client("route-ipv6 2001:2:0:a::1/64\n")


@pytest.mark.directive("block-ipv6")
def test_block_ipv6_is_taken_on_a_client_and_a_tun_server_and_refused_on_a_tap_server():
    assert client("block-ipv6\n").block_ipv6
    assert server("block-ipv6\n").block_ipv6
    with pytest.raises(ConfigError, match="'block-ipv6' on a 'dev tap' server"):
        server("dev tap\nblock-ipv6\n")
