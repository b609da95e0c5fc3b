"""Parsing of route-ipv6-gateway, opt-verify and tcp-queue-limit (OpenVPN options.c,
add_option() and options_postprocess_verify_ce(); the messages are checked against the real
openvpn in tests/interop/test_srvsmall_vs_openvpn.py)."""

from __future__ import annotations

import ipaddress

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.config.ccd import parse_client_config

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


TAP_SERVER = SERVER.replace("dev tun", "dev tap").replace("ifconfig 198.18.8.1 198.18.8.2",
                                                           "ifconfig 198.18.8.1 255.255.255.0")


@pytest.mark.directive("vlan-tagging", "vlan-accept", "vlan-pvid")
@pytest.mark.parametrize(("config", "message"), [
    (CLIENT.replace("dev tun", "dev tap") + "vlan-tagging\n",
     "--vlan-tagging requires --mode server"),
    (SERVER + "vlan-tagging\n", "--vlan-tagging must be used with --dev tap"),
    (TAP_SERVER + "vlan-accept tagged\n", "--vlan-accept requires --vlan-tagging"),
    (TAP_SERVER + "vlan-pvid 5\n", "--vlan-pvid requires --vlan-tagging"),
    (TAP_SERVER + "vlan-tagging\nvlan-pvid 4095\n",
     "the parameter of --vlan-pvid parameters must be >= 1 and <= 4094"),
    (TAP_SERVER + "vlan-tagging\nvlan-accept some\n", "'vlan-accept' expects one of"),
])
def test_vlan_directives_are_refused_where_openvpn_refuses_them(config: str, message: str):
    with pytest.raises(ConfigError) as info:
        parse_config(config, "/etc/s.conf")
    assert message in str(info.value)


@pytest.mark.directive("vlan-tagging", "vlan-accept", "vlan-pvid")
def test_vlan_directives_on_a_tap_server():
    o = parse_config(TAP_SERVER + "vlan-tagging\nvlan-accept untagged\nvlan-pvid 7\n",
                     "/etc/s.conf")
    assert (o.vlan_tagging, o.vlan_accept, o.vlan_pvid) == (True, "untagged", 7)
    # the defaults alone need no vlan-tagging (OpenVPN compares with them)
    assert parse_config(TAP_SERVER + "vlan-accept all\nvlan-pvid 1\n", "/etc/s.conf")


@pytest.mark.directive("vlan-pvid")
def test_vlan_pvid_in_a_client_config_dir_file():
    assert parse_client_config("vlan-pvid 12\n", "/etc/ccd/alice").vlan_pvid == 12
    with pytest.raises(ConfigError, match="must be >= 1 and <= 4094"):
        parse_client_config("vlan-pvid 0\n", "/etc/ccd/alice")
