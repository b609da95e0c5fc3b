"""Parsing of route-ipv6-gateway, opt-verify and tcp-queue-limit (OpenVPN options.c,
add_option() and options_postprocess_verify_ce(); the messages are checked against the real
openvpn in tests/interop/test_srvsmall_vs_openvpn.py)."""

from __future__ import annotations

import ipaddress

import pytest

from trivpn.config import ConfigError, parse_config

SERVER = ("mode server\ntls-server\ndev tun\nproto tcp-server\n"
          "ifconfig 198.18.8.1 198.18.8.2\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n")
CLIENT = "client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\nkey c.key\n"


@pytest.mark.directive("route-ipv6-gateway")
def test_route_ipv6_gateway_must_be_an_ipv6_address():
    with pytest.raises(ConfigError, match=r"route-ipv6-gateway parm '198\.18\.0\.1' must be "
                                          r"a valid address") as info:
        parse_config(CLIENT + "route-ipv6-gateway 198.18.0.1\n", "/etc/c.conf")
    assert info.value.line == 7
    o = parse_config(CLIENT + "route-ipv6-gateway 2001:2:0:8::1\n", "/etc/c.conf")
    assert o.route_ipv6_gateway == ipaddress.IPv6Address("2001:2:0:8::1")


@pytest.mark.directive("opt-verify")
def test_opt_verify_needs_mode_server_and_warns_it_is_deprecated():
    with pytest.raises(ConfigError, match="--opt-verify requires --mode server"):
        parse_config(CLIENT + "opt-verify\n", "/etc/c.conf")
    o = parse_config(SERVER + "opt-verify\n", "/etc/s.conf")
    assert o.opt_verify
    assert any("opt-verify is deprecated" in w.message for w in o.warnings)


@pytest.mark.directive("tcp-queue-limit")
@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_tcp_queue_limit_must_be_positive(value: str):
    with pytest.raises(ConfigError, match="--tcp-queue-limit parameter must be > 0"):
        parse_config(SERVER + f"tcp-queue-limit {value}\n", "/etc/s.conf")
    assert parse_config(SERVER + "tcp-queue-limit 8\n", "/etc/s.conf").tcp_queue_limit == 8
