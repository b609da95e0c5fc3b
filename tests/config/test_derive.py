"""server/keepalive helper expansion, push order and pool layout (docs/protocol.md §8.3,
§10.5)."""

from __future__ import annotations

import ipaddress

import pytest

from tests.config.helpers import client
from trivpn.config import (
    Ifconfig,
    Options,
    PingSettings,
    address_pool,
    parse_config,
    ping_settings,
    server_push_options,
    server_tun_ifconfig,
)

IP = ipaddress.IPv4Address


def server_opts(extra: str, dev: str = "tun") -> Options:
    return parse_config(f"dev {dev}\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n{extra}\n",
                        "server.conf")


@pytest.mark.directive("server", "topology", "push")
def test_push_order_matches_live_openvpn_subnet() -> None:
    o = server_opts('server 198.18.8.0 255.255.255.0\ntopology subnet\nkeepalive 3 30\n'
                    'push "route 198.19.77.0 255.255.255.0"')
    assert server_push_options(o) == ("route 198.19.77.0 255.255.255.0",
                                      "route-gateway 198.18.8.1", "topology subnet",
                                      "ping 3", "ping-restart 30")


def test_push_order_matches_live_openvpn_net30() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0\nkeepalive 3 30")
    assert server_push_options(o) == ("route 198.18.8.1", "topology net30", "ping 3",
                                      "ping-restart 30")


@pytest.mark.directive("push")
def test_config_pushes_come_first_even_when_written_after_server() -> None:
    o = server_opts('keepalive 10 60\nserver 198.18.8.0 255.255.255.0\ntopology subnet\n'
                    'push "dhcp-option DNS 198.18.8.1"\npush "redirect-gateway def1"')
    assert server_push_options(o)[:2] == ("dhcp-option DNS 198.18.8.1", "redirect-gateway def1")


@pytest.mark.directive("client-to-client")
def test_net30_with_client_to_client_pushes_the_whole_subnet() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0\nclient-to-client")
    assert server_push_options(o) == ("route 198.18.8.0 255.255.255.0", "topology net30")


def test_p2p_topology_pushes_no_route() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0\ntopology p2p")
    assert server_push_options(o) == ("topology p2p",)


def test_tap_server_pushes_only_route_gateway() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0", dev="tap")
    assert server_push_options(o) == ("route-gateway 198.18.8.1",)


@pytest.mark.directive("tcp-nodelay")
def test_tcp_nodelay_adds_socket_flags_last() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0\ntopology subnet\nkeepalive 10 60\n"
                    "tcp-nodelay")
    assert server_push_options(o)[-1] == "socket-flags TCP_NODELAY"


def test_keepalive_on_server_doubles_own_restart_and_pushes_the_plain_values() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0\nkeepalive 10 120")
    assert ping_settings(o) == PingSettings(10, 240, None)
    assert server_push_options(o)[-2:] == ("ping 10", "ping-restart 120")


def test_keepalive_on_client_is_used_as_is() -> None:
    assert ping_settings(client("keepalive 10 60")) == PingSettings(10, 60, None)
    assert server_push_options(client("keepalive 10 60")) == ()


@pytest.mark.directive("ping")
def test_explicit_ping_directives() -> None:
    assert ping_settings(client("ping 15\nping-exit 90")) == PingSettings(15, None, 90)


@pytest.mark.parametrize(
    ("extra", "dev", "ifconfig"),
    [
        ("", "tun", Ifconfig(IP("198.18.8.1"), IP("198.18.8.2"))),
        ("topology p2p", "tun", Ifconfig(IP("198.18.8.1"), IP("198.18.8.2"))),
        ("topology subnet", "tun", Ifconfig(IP("198.18.8.1"), IP("255.255.255.0"))),
        ("", "tap", Ifconfig(IP("198.18.8.1"), IP("255.255.255.0"))),
    ],
)
def test_server_tun_address(extra: str, dev: str, ifconfig: Ifconfig) -> None:
    o = server_opts(f"server 198.18.8.0 255.255.255.0\n{extra}", dev=dev)
    assert server_tun_ifconfig(o) == ifconfig


@pytest.mark.parametrize(
    ("extra", "dev", "layout"),
    [
        ("", "tun", ("198.18.8.4", "198.18.8.251", 62,
                     "ifconfig 198.18.8.6 198.18.8.5", "ifconfig 198.18.8.10 198.18.8.9")),
        ("topology subnet", "tun", ("198.18.8.2", "198.18.8.254", 253,
                                    "ifconfig 198.18.8.2 255.255.255.0",
                                    "ifconfig 198.18.8.3 255.255.255.0")),
        ("topology p2p", "tun", ("198.18.8.4", "198.18.8.251", 248,
                                 "ifconfig 198.18.8.4 198.18.8.1",
                                 "ifconfig 198.18.8.5 198.18.8.1")),
        ("", "tap", ("198.18.8.2", "198.18.8.254", 253,
                     "ifconfig 198.18.8.2 255.255.255.0", "ifconfig 198.18.8.3 255.255.255.0")),
    ],
)
def test_pool_layout(extra: str, dev: str, layout: tuple[str, str, int, str, str]) -> None:
    start, end, size, first, second = layout
    pool = address_pool(server_opts(f"server 198.18.8.0 255.255.255.0\n{extra}", dev=dev))
    assert pool is not None
    assert (pool.start, pool.end, len(pool)) == (IP(start), IP(end), size)
    assert [e.ifconfig_option() for e in list(pool)[:2]] == [first, second]


def test_net30_pool_of_a_slash_29_has_one_block() -> None:
    pool = address_pool(server_opts("server 198.18.8.0 255.255.255.248"))
    assert pool is not None
    assert [e.ifconfig_option() for e in pool] == ["ifconfig 198.18.8.6 198.18.8.5"]


def test_pool_index_of_client_address() -> None:
    pool = address_pool(server_opts("server 198.18.8.0 255.255.255.0"))
    assert pool is not None
    assert pool.index_of(IP("198.18.8.10")) == 1
    assert pool.index_of(IP("198.18.8.9")) is None
    assert pool.index_of(IP("198.18.9.2")) is None
    with pytest.raises(IndexError):
        pool.entry(62)


def test_nopool_gives_no_pool_but_keeps_pushes() -> None:
    o = server_opts("server 198.18.8.0 255.255.255.0 nopool\ntopology subnet")
    assert address_pool(o) is None
    assert server_push_options(o) == ("route-gateway 198.18.8.1", "topology subnet")
    assert o.warnings == ()
