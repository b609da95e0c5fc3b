"""What the tunnel carries, as tunnel.beyond and tunnel.dns_reachable see it: routes, the VPN
subnet, redirect-gateway (and its '!ipv4'), the DNS servers a client would use."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from tests.diagnostics.doctorkit import CLIENT, write_config
from trivpn.config import load_config
from trivpn.diagnostics.checks_beyond import dns_servers, routed_by
from trivpn.protocol.push import DhcpOption, Ifconfig, PushedOptions, Route

PUSHED = PushedOptions(ifconfig=Ifconfig(IPv4Address("198.18.8.2"),
                                         IPv4Address("255.255.255.0")),
                       topology="subnet", route_gateway=IPv4Address("198.18.8.1"),
                       routes=(Route(IPv4Address("198.18.20.0"), IPv4Address("255.255.255.0")),),
                       dhcp_options=(DhcpOption("DNS", "198.18.20.53"),))


def _options(tmp_path: Path, extra: str = ""):
    return load_config(write_config(tmp_path, CLIENT + extra), read_files=False)


def test_an_address_inside_a_pushed_route_is_routed_by_it(tmp_path: Path):
    o = _options(tmp_path)
    assert routed_by(IPv4Address("198.18.20.10"), o, PUSHED) == "route 198.18.20.0/24"
    assert routed_by(IPv4Address("198.18.8.1"), o, PUSHED) == "the VPN subnet 198.18.8.0/24"
    assert routed_by(IPv4Address("198.18.30.1"), o, PUSHED) is None


def test_a_config_route_counts_too(tmp_path: Path):
    o = _options(tmp_path, "route 198.18.30.0 255.255.255.0\n")
    assert routed_by(IPv4Address("198.18.30.1"), o, PUSHED) == "route 198.18.30.0/24"


def test_redirect_gateway_carries_everything_but_not_with_not_ipv4(tmp_path: Path):
    o = _options(tmp_path)
    pushed = PushedOptions(redirect_gateway=("def1",))
    assert routed_by(IPv4Address("198.18.40.1"), o, pushed) == "redirect-gateway"
    only6 = PushedOptions(redirect_gateway=("ipv6", "!ipv4"))
    assert routed_by(IPv4Address("198.18.40.1"), o, only6) is None


def test_dns_servers_come_from_the_push_and_the_config(tmp_path: Path):
    o = _options(tmp_path, "dhcp-option DNS 198.18.0.53\n")
    assert dns_servers(o, PUSHED) == [("198.18.0.53", 53), ("198.18.20.53", 53)]
    with_dns = _options(tmp_path, "dns server 0 address 198.18.21.1:5353\n")
    assert dns_servers(with_dns, PUSHED) == [("198.18.21.1", 5353)]  # 'dns' beats dhcp-option
