"""The server scripts' command lines and variables, as pure builders (OpenVPN 2.6 multi.c:
multi_client_connect_setenv, multi_set_virtual_addr_env, multi_client_disconnect_setenv,
learn_address_script)."""

from __future__ import annotations

import pytest

from trivpn.runtime import scriptenv as se


@pytest.mark.directive("client-connect")
def test_client_connect_gets_the_config_file_as_its_only_added_argument() -> None:
    assert se.client_connect_argv('/etc/cc.sh "a b"', "/tmp/openvpn_cc_x.tmp") == [
        "/etc/cc.sh", "a b", "/tmp/openvpn_cc_x.tmp"]


@pytest.mark.directive("learn-address")
def test_learn_address_argv_has_the_common_name_only_while_the_client_exists() -> None:
    assert se.learn_address_argv("/bin/la", "add", "198.18.8.2", "alice") == [
        "/bin/la", "add", "198.18.8.2", "alice"]
    assert se.learn_address_argv("/bin/la", "delete", "198.18.8.2", None) == [
        "/bin/la", "delete", "198.18.8.2"]


@pytest.mark.directive("learn-address")
def test_learn_address_prints_a_host_bare_and_an_iroute_with_its_bits() -> None:
    network = (198 << 24) | (18 << 16) | (30 << 8)
    assert se.learn_address_text(network | 2, None) == "198.18.30.2"
    assert se.learn_address_text(network, 24) == "198.18.30.0/24"
    assert se.learn_address_text(network | 9, 32) == "198.18.30.9/32"


@pytest.mark.directive("client-connect")
def test_pool_variables_follow_the_topology() -> None:
    assert se.pool_env("198.18.8.2", "255.255.255.0", point_to_point=False) == {
        "ifconfig_pool_remote_ip": "198.18.8.2", "ifconfig_pool_netmask": "255.255.255.0"}
    assert se.pool_env("198.18.8.6", "198.18.8.5", point_to_point=True) == {
        "ifconfig_pool_remote_ip": "198.18.8.6", "ifconfig_pool_local_ip": "198.18.8.5"}


@pytest.mark.directive("client-connect")
def test_peer_info_variables_are_the_iv_and_uv_lines_only() -> None:
    raw = {"IV_VER": "2.6.14", "UV_X": "1", "FOO": "no", "IV_BAD-NAME": "x",
           "IV_PLAT": "linux"}
    assert se.peer_info_env(raw) == {"IV_VER": "2.6.14", "UV_X": "1", "IV_PLAT": "linux"}


@pytest.mark.directive("client-disconnect")
def test_disconnect_variables_are_byte_counts_and_duration() -> None:
    assert se.disconnect_env(2318, 2329, 3) == {
        "bytes_received": "2318", "bytes_sent": "2329", "time_duration": "3"}


@pytest.mark.directive("client-connect")
def test_server_connection_entry_variables() -> None:
    assert se.server_link_env("198.18.0.1", 1194, "udp", 1194) == {
        "local_1": "198.18.0.1", "local_port_1": "1194", "proto_1": "udp",
        "remote_port_1": "1194"}
    assert "local_1" not in se.server_link_env(None, 1194, "tcp-server", 1194)


@pytest.mark.directive("client-connect")
def test_connect_time_variables() -> None:
    assert se.connect_time_env(1796389712, "2026-12-04 13:08:32") == {
        "time_unix": "1796389712", "time_ascii": "2026-12-04 13:08:32"}


@pytest.mark.directive("client-connect", "server-ipv6")
def test_ipv6_pool_variables() -> None:
    assert se.pool6_env("2001:2:0:8::1000", "2001:2:0:8::1", 64) == {
        "ifconfig_pool_remote_ip6": "2001:2:0:8::1000",
        "ifconfig_pool_local_ip6": "2001:2:0:8::1", "ifconfig_pool_ip6_netbits": "64"}
