"""The pure builders of OpenVPN's script command lines and environment (the exact names and
values were taken from a real openvpn 2.6 client: tests/interop/test_scripts_vs_openvpn.py
compares both end to end)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.config.helpers import client
from tests.protocol.sessionkit import make_test_pki
from trivpn.protocol.push import PushedOptions, parse_pushed_options
from trivpn.runtime import scriptenv as se


def _push(text: str) -> PushedOptions:
    return parse_pushed_options(text.split(","))


@pytest.mark.directive("up")
def test_up_down_command_line_is_the_command_then_device_mtu_zero_addresses_context() -> None:
    argv = se.up_down_argv("/etc/openvpn/up.sh 'a b'", dev="tun0", tun_mtu=1500,
                           local="198.18.8.2", remote="255.255.255.0", context="init")
    assert argv == ["/etc/openvpn/up.sh", "a b", "tun0", "1500", "0", "198.18.8.2",
                    "255.255.255.0", "init"]


@pytest.mark.directive("ipchange")
def test_ipchange_gets_address_and_port_in_one_argument() -> None:
    assert se.ipchange_argv("/bin/ipc", "198.18.0.1", 1194) == [
        "/bin/ipc", "[AF_INET]198.18.0.1 1194"]


def test_a_command_that_does_not_split_is_an_error() -> None:
    with pytest.raises(se.CommandError):
        se.command_argv('/bin/x "unterminated')


@pytest.mark.directive("script-security")
@pytest.mark.parametrize(("level", "user", "builtin"), [
    (0, False, False), (1, False, True), (2, True, True), (3, True, True)])
def test_script_security_levels(level: int, user: bool, builtin: bool) -> None:
    assert se.allowed(level, user_script=True) is user
    assert se.allowed(level, user_script=False) is builtin


@pytest.mark.directive("script-security")
def test_password_reaches_scripts_only_at_level_3() -> None:
    env = {"username": "alice", "password": "secret"}
    assert se.filter_passwords(env, 2) == {"username": "alice"}
    assert se.filter_passwords(env, 3) == env


def test_certificate_variables_per_depth() -> None:
    pki = make_test_pki()
    chain = se.chain_of(pki.server.cert, [pki.other_ca.cert, pki.ca.cert])
    assert chain == [pki.server.cert, pki.ca.cert]
    env = se.peer_env(chain, "server")
    der = pki.server.cert.public_bytes(Encoding.DER)
    assert env["X509_0_CN"] == "server" and env["X509_1_CN"] == "trivpn test CA"
    assert env["tls_id_0"] == "CN=server"
    assert env["tls_serial_0"] == str(pki.server.cert.serial_number)
    assert env["tls_digest_sha256_0"] == ":".join(
        f"{b:02x}" for b in hashlib.sha256(der).digest())
    assert env["common_name"] == "server"


def test_serial_hex_is_colon_separated_bytes() -> None:
    assert se.serial_hex(0x315790) == "31:57:90"
    assert se.serial_hex(0) == "00"


@pytest.mark.directive("dhcp-option", "route")
def test_client_env_from_config_and_push() -> None:
    o = client("route 198.18.11.0 255.255.255.0 vpn_gateway 7\n"
               "dhcp-option DNS 198.18.7.7\n")
    pushed = _push("dhcp-option DNS 198.18.9.9,route 198.18.10.0 255.255.255.0,"
                   "route-gateway 198.18.8.1,topology subnet,ifconfig 198.18.8.2 255.255.255.0")
    info = se.client_tunnel_info(o, pushed, "tun0")
    assert se.tunnel_env(info) == {"dev": "tun0", "dev_type": "tun", "tun_mtu": "1500",
                                   "ifconfig_local": "198.18.8.2",
                                   "ifconfig_netmask": "255.255.255.0"}
    gw = se.vpn_gateway(o, pushed, info)
    routes = se.client_routes(o, pushed, vpn_gw=gw, net_gw="0.0.0.0", remote_ip="198.18.0.1")
    assert se.routes_env(routes, vpn_gateway=gw, net_gateway="0.0.0.0") == {
        "route_vpn_gateway": "198.18.8.1", "route_net_gateway": "0.0.0.0",
        "route_network_1": "198.18.11.0", "route_netmask_1": "255.255.255.0",
        "route_gateway_1": "198.18.8.1", "route_metric_1": "7",
        "route_network_2": "198.18.10.0", "route_netmask_2": "255.255.255.0",
        "route_gateway_2": "198.18.8.1"}
    assert se.foreign_options_env(se.client_foreign_options(o, pushed)) == {
        "foreign_option_1": "dhcp-option DNS 198.18.7.7",
        "foreign_option_2": "dhcp-option DNS 198.18.9.9"}


def test_point_to_point_topologies_name_the_peer_ifconfig_remote() -> None:
    o = client("topology net30\n")
    pushed = _push("ifconfig 198.18.8.6 198.18.8.5")
    info = se.client_tunnel_info(o, pushed, "tun1")
    env = se.tunnel_env(info)
    assert env["ifconfig_remote"] == "198.18.8.5" and "ifconfig_netmask" not in env
    assert se.vpn_gateway(o, pushed, info) == "198.18.8.5"


@pytest.mark.directive("dev")
def test_dev_null_reports_dev_type_null() -> None:
    info = se.client_tunnel_info(client("dev null\n"), None, "null")
    assert se.tunnel_env(info)["dev_type"] == "null"


@pytest.mark.directive("setenv", "setenv-safe")
def test_process_env_has_openvpns_process_values_and_setenv() -> None:
    info = se.ProcessInfo(config="client.conf", verb=3, daemon=False, daemon_pid=42,
                          daemon_start_time=1700000000, log_redirect=True)
    env = se.process_env(info, (("FOO", "bar"), ("OPENVPN_SAFE", "val")))
    assert env == {"config": "client.conf", "verb": "3", "daemon": "0",
                   "daemon_start_time": "1700000000", "daemon_pid": "42",
                   "daemon_log_redirect": "1", "FOO": "bar", "OPENVPN_SAFE": "val"}


def test_remotes_and_link_env() -> None:
    assert se.remotes_env([se.RemoteEntry("198.18.0.1", 1194, "udp")]) == {
        "remote_1": "198.18.0.1", "remote_port_1": "1194", "proto_1": "udp"}
    assert se.link_env("198.18.0.1", 1194, trusted=False) == {
        "untrusted_ip": "198.18.0.1", "untrusted_port": "1194"}
    assert se.link_env("2001:2::1", 1194, trusted=True)["trusted_ip6"] == "2001:2::1"
