"""client-config-dir files: parsing into a ClientConfig, file names, and the server's pure
per-client decisions (push list edits, fixed addresses); the main-config side
(client-config-dir, ccd-exclusive, ifconfig-pool)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.config.helpers import SERVER_BASE, server
from trivpn.config import ConfigError, address_pool, parse_config
from trivpn.config.ccd import (
    IfconfigIpv6Push,
    IfconfigPush,
    PushEdit,
    ccd_file_name,
    check_fixed_address,
    check_fixed_address6,
    client_push_list,
    parse_client_config,
    read_client_config,
)

NET = ipaddress.IPv4Network("198.18.8.0/24")
A = ipaddress.IPv4Address
A6 = ipaddress.IPv6Address


def ccd(text: str, path: str = "/etc/openvpn/ccd/alice"):
    return parse_client_config(text, path)


# --- parsing -----------------------------------------------------------------------------------

@pytest.mark.directive("ifconfig-push")
def test_ifconfig_push_gives_the_local_address_and_the_netmask_or_peer():
    c = ccd("ifconfig-push 198.18.8.50 255.255.255.0\n")
    assert c.ifconfig_push == IfconfigPush(A("198.18.8.50"), A("255.255.255.0"), None, 1)
    assert c.ifconfig_push.pushed() == "ifconfig 198.18.8.50 255.255.255.0"


@pytest.mark.directive("ifconfig-push")
def test_ifconfig_push_alias_is_what_the_client_is_told():
    c = ccd("ifconfig-push 198.18.8.50 198.18.8.49 198.18.9.50\n")
    assert c.ifconfig_push is not None
    assert c.ifconfig_push.local == A("198.18.8.50")
    assert c.ifconfig_push.pushed() == "ifconfig 198.18.9.50 198.18.8.49"


@pytest.mark.directive("ifconfig-push")
def test_ifconfig_push_with_a_bad_address_names_the_ccd_file_and_line():
    with pytest.raises(ConfigError) as err:
        ccd("# alice\nifconfig-push 198.18.8.500 255.255.255.0\n")
    assert str(err.value).startswith("/etc/openvpn/ccd/alice:2: ")


@pytest.mark.directive("iroute")
def test_iroute_without_a_netmask_is_one_host():
    c = ccd("iroute 198.18.30.7\n")
    assert c.iroutes == (ipaddress.IPv4Network("198.18.30.7/32"),)


@pytest.mark.directive("iroute")
def test_iroute_keeps_the_network_bits_of_its_address():
    c = ccd("iroute 198.18.30.0 255.255.255.0\niroute 198.18.31.9 255.255.255.0\n")
    assert c.iroutes == (ipaddress.IPv4Network("198.18.30.0/24"),
                         ipaddress.IPv4Network("198.18.31.0/24"))


@pytest.mark.directive("iroute")
def test_iroute_with_a_bad_netmask_is_refused():
    with pytest.raises(ConfigError, match="alice:1: 'iroute' expects a netmask"):
        ccd("iroute 198.18.30.0 255.0.255.0\n")


@pytest.mark.directive("push-reset", "push-remove", "push")
def test_push_lines_are_kept_in_file_order():
    c = ccd('push "route 198.18.40.0 255.255.255.0"\npush-reset\npush-remove route\n')
    assert c.push_edits == (PushEdit("push", "route 198.18.40.0 255.255.255.0"),
                            PushEdit("push-reset"), PushEdit("push-remove", "route"))


@pytest.mark.directive("disable")
def test_disable_marks_the_client_refused():
    assert ccd("disable\n").disable
    assert not ccd("").disable


@pytest.mark.directive("ifconfig-ipv6-push")
def test_ifconfig_ipv6_push_gives_the_address_its_prefix_and_the_remote():
    c = ccd("ifconfig-ipv6-push 2001:2:0:8::50/64 2001:2:0:8::1\n")
    assert c.ifconfig_ipv6_push == IfconfigIpv6Push(A6("2001:2:0:8::50"), 64,
                                                    A6("2001:2:0:8::1"), 1)
    assert (c.ifconfig_ipv6_push.pushed(A6("2001:2:0:8::99"))
            == "ifconfig-ipv6 2001:2:0:8::50/64 2001:2:0:8::1")


@pytest.mark.directive("ifconfig-ipv6-push")
def test_ifconfig_ipv6_push_without_remote_pushes_the_servers_address_and_bits_default_64():
    push = ccd("ifconfig-ipv6-push 2001:2:0:8::50\n").ifconfig_ipv6_push
    assert push is not None and push.bits == 64 and push.remote is None
    assert push.pushed(A6("2001:2:0:8::1")) == "ifconfig-ipv6 2001:2:0:8::50/64 2001:2:0:8::1"


@pytest.mark.directive("ifconfig-ipv6-push")
@pytest.mark.parametrize("line", ["ifconfig-ipv6-push 2001:2::zz/64",
                                  "ifconfig-ipv6-push 2001:2::5/129",
                                  "ifconfig-ipv6-push 198.18.8.5/24",
                                  "ifconfig-ipv6-push 2001:2::5/64 nonsense"])
def test_bad_ifconfig_ipv6_push_names_file_and_line(line: str):
    with pytest.raises(ConfigError, match="alice:1: cannot parse 'ifconfig-ipv6-push'"):
        ccd(line + "\n")


@pytest.mark.directive("iroute-ipv6")
def test_iroute_ipv6_keeps_the_network_bits_and_defaults_to_64():
    c = ccd("iroute-ipv6 2001:2:0:40::7/64\niroute-ipv6 2001:2:0:41::\n")
    assert c.iroutes_ipv6 == (ipaddress.IPv6Network("2001:2:0:40::/64"),
                              ipaddress.IPv6Network("2001:2:0:41::/64"))
    with pytest.raises(ConfigError, match="alice:1: 'iroute-ipv6' expects an IPv6 network"):
        ccd("iroute-ipv6 198.18.0.0/16\n")


@pytest.mark.directive("push-remove", "ifconfig-ipv6-push")
def test_push_remove_ifconfig_ipv6_withholds_it_unless_an_ifconfig_ipv6_push_follows():
    assert ccd('push-remove "ifconfig-ipv6"\n').ifconfig_ipv6_blocked
    assert not ccd('push-remove "ifconfig-ipv6"\n'
                   "ifconfig-ipv6-push 2001:2:0:8::50/64\n").ifconfig_ipv6_blocked
    assert ccd("ifconfig-ipv6-push 2001:2:0:8::50/64\n"
               'push-remove "ifconfig-ipv6"\n').ifconfig_ipv6_blocked


@pytest.mark.directive("ifconfig-ipv6-push")
def test_fixed_ipv6_address_must_be_in_the_servers_ipv6_network_and_not_its_own():
    net6, own6 = ipaddress.IPv6Network("2001:2:0:8::/64"), A6("2001:2:0:8::1")
    ok = ccd("ifconfig-ipv6-push 2001:2:0:8::50/64\n").ifconfig_ipv6_push
    outside = ccd("ifconfig-ipv6-push 2001:2:0:9::50/64\n").ifconfig_ipv6_push
    own = ccd("ifconfig-ipv6-push 2001:2:0:8::1/64\n").ifconfig_ipv6_push
    assert ok is not None and outside is not None and own is not None
    assert check_fixed_address6(ok, net6, own6) is None
    assert "outside the server's IPv6 network 2001:2:0:8::/64" in str(
        check_fixed_address6(outside, net6, own6))
    assert "server's own address" in str(check_fixed_address6(own, net6, own6))
    assert "needs IPv6 in the tunnel" in str(check_fixed_address6(ok, None, None))


def test_config_includes_another_file_named_as_the_server_config_names_files(tmp_path: Path):
    (tmp_path / "ccd").mkdir()
    (tmp_path / "common").write_text("iroute 198.18.30.0 255.255.255.0\n")
    (tmp_path / "ccd" / "alice").write_text("config common\ndisable\n")
    c = read_client_config(tmp_path / "ccd", "alice", exclusive=False, base_dir=tmp_path)
    assert not isinstance(c, str) and c is not None
    assert c.iroutes == (ipaddress.IPv4Network("198.18.30.0/24"),) and c.disable


def test_directive_not_allowed_in_a_ccd_file_is_refused_with_file_and_line():
    with pytest.raises(ConfigError, match=r"alice:2: 'dev' cannot be used in a "
                                          r"client-config-dir file"):
        ccd("iroute 198.18.30.0\ndev tun\n")
    with pytest.raises(ConfigError, match="alice:1: unknown directive 'frobnicate'"):
        ccd("frobnicate\n")
    with pytest.raises(ConfigError, match="alice:1: 'disable' takes 0 arguments, got 1"):
        ccd("disable now\n")


# --- file names --------------------------------------------------------------------------------

def test_ccd_file_name_replaces_slashes_and_unprintable_bytes_and_refuses_dot_names():
    assert ccd_file_name("alice") == "alice"
    assert ccd_file_name("../etc/passwd") == ".._etc_passwd"
    assert ccd_file_name("a\u00e9") == "a__"  # each non-ASCII byte
    assert ccd_file_name("a_b c") == "a_b c"
    assert ccd_file_name(".") is None
    assert ccd_file_name("..") is None


@pytest.mark.directive("client-config-dir")
def test_client_file_wins_over_default_which_serves_the_others(tmp_path: Path):
    (tmp_path / "alice").write_text("iroute 198.18.30.0 255.255.255.0\n")
    (tmp_path / "DEFAULT").write_text("disable\n")
    alice = read_client_config(tmp_path, "alice", exclusive=False)
    bob = read_client_config(tmp_path, "bob", exclusive=False)
    assert not isinstance(alice, str) and alice is not None and not alice.disable
    assert not isinstance(bob, str) and bob is not None and bob.disable
    assert bob.path == tmp_path / "DEFAULT"


@pytest.mark.directive("client-config-dir")
def test_no_file_and_no_default_means_no_client_config(tmp_path: Path):
    assert read_client_config(tmp_path, "alice", exclusive=False) is None
    assert read_client_config(tmp_path, "..", exclusive=False) is None


@pytest.mark.directive("ccd-exclusive")
def test_ccd_exclusive_needs_the_clients_own_file_not_default(tmp_path: Path):
    (tmp_path / "DEFAULT").write_text("\n")
    (tmp_path / "alice").write_text("\n")
    refused = read_client_config(tmp_path, "bob", exclusive=True)
    assert isinstance(refused, str) and "does not exist" in refused
    assert isinstance(read_client_config(tmp_path, "DEFAULT", exclusive=True), str)
    assert isinstance(read_client_config(tmp_path, "..", exclusive=True), str)
    alice = read_client_config(tmp_path, "alice", exclusive=True)
    assert alice is not None and not isinstance(alice, str)


# --- decisions ---------------------------------------------------------------------------------

GLOBAL = ("route 198.18.40.0 255.255.255.0", "route-gateway 198.18.8.1", "topology subnet",
          "ping 10", "ping-restart 60")


@pytest.mark.directive("push")
def test_ccd_push_is_added_after_the_global_push_list():
    pushes, blocked = client_push_list(GLOBAL, (PushEdit("push", "route 198.18.41.0"),))
    assert pushes == (*GLOBAL, "route 198.18.41.0") and not blocked


@pytest.mark.directive("push-reset")
def test_push_reset_drops_everything_inherited_before_it():
    pushes, _ = client_push_list(GLOBAL, (PushEdit("push", "ping 5"), PushEdit("push-reset"),
                                          PushEdit("push", "route 198.18.41.0")))
    assert pushes == ("route 198.18.41.0",)


@pytest.mark.directive("push-remove")
def test_push_remove_drops_every_option_starting_with_its_text():
    pushes, blocked = client_push_list(GLOBAL, (PushEdit("push-remove", "route"),))
    assert pushes == ("topology subnet", "ping 10", "ping-restart 60") and not blocked
    pushes, _ = client_push_list(GLOBAL, (PushEdit("push-remove", "ping"),))
    assert pushes == GLOBAL[:3]


@pytest.mark.directive("push-remove")
def test_push_remove_ifconfig_withholds_the_address():
    pushes, blocked = client_push_list(GLOBAL, (PushEdit("push-remove", "ifconfig"),))
    assert pushes == GLOBAL and blocked


@pytest.mark.directive("ifconfig-push")
def test_fixed_address_outside_the_subnet_is_refused_for_topology_subnet_only():
    outside = IfconfigPush(A("198.18.9.5"), A("255.255.255.0"))
    reason = check_fixed_address(outside, tap=False, topology="subnet", server_network=NET,
                                 server_address=A("198.18.8.1"))
    assert reason is not None and "outside the server's subnet 198.18.8.0/24" in reason
    assert check_fixed_address(outside, tap=False, topology="net30", server_network=NET,
                               server_address=A("198.18.8.1")) is None
    own = IfconfigPush(A("198.18.8.1"), A("255.255.255.0"))
    assert check_fixed_address(own, tap=False, topology="subnet", server_network=NET,
                               server_address=A("198.18.8.1")) is not None


# --- main config -------------------------------------------------------------------------------

@pytest.mark.directive("client-config-dir")
def test_client_config_dir_resolves_against_the_config_directory():
    o = parse_config(SERVER_BASE + "client-config-dir ccd\n", "/etc/openvpn/server.conf")
    assert o.client_config_dir == Path("/etc/openvpn/ccd")


@pytest.mark.directive("ccd-exclusive")
def test_ccd_exclusive_needs_client_config_dir():
    with pytest.raises(ConfigError, match="'ccd-exclusive' must be used with"):
        server("ccd-exclusive\n")
    assert server("client-config-dir ccd\nccd-exclusive\n").ccd_exclusive


@pytest.mark.parametrize("name", ["ifconfig-push 198.18.8.9 255.255.255.0",
                                  "iroute 198.18.30.0", "push-reset", "push-remove route",
                                  "disable", "iroute-ipv6 2001:2::/64",
                                  "ifconfig-ipv6-push 2001:2::9/64"])
def test_per_client_directives_are_refused_in_the_main_config(name: str):
    with pytest.raises(ConfigError, match="can only be used in a client-config-dir file"):
        server(name + "\n")


@pytest.mark.directive("ifconfig-pool")
def test_ifconfig_pool_with_server_is_refused_as_openvpn_does():
    with pytest.raises(ConfigError, match="'server' already defines an ifconfig-pool"):
        server("ifconfig-pool 198.18.8.100 198.18.8.200\n")


@pytest.mark.directive("ifconfig-pool")
def test_ifconfig_pool_with_server_nopool_is_the_pool():
    o = parse_config(SERVER_BASE.replace("255.255.255.0", "255.255.255.0 nopool")
                     + "ifconfig-pool 198.18.8.100 198.18.8.109\n", "server.conf")
    pool = address_pool(o)
    assert pool is not None and pool.size == 10
    assert pool.entry(0).ifconfig_option() == "ifconfig 198.18.8.100 255.255.255.0"
    assert pool.server == A("198.18.8.1")


@pytest.mark.directive("ifconfig-pool")
def test_ifconfig_pool_without_server_uses_ifconfig_and_its_own_netmask():
    text = ("mode server\ntls-server\ndev tun\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n"
            "topology subnet\nifconfig 198.18.8.1 255.255.255.0\n"
            "ifconfig-pool 198.18.8.10 198.18.8.20 255.255.255.128\n")
    pool = address_pool(parse_config(text, "server.conf"))
    assert pool is not None and pool.size == 11
    assert pool.entry(10).ifconfig_option() == "ifconfig 198.18.8.20 255.255.255.128"


@pytest.mark.directive("ifconfig-pool")
def test_ifconfig_pool_net30_is_whole_blocks():
    text = ("mode server\ntls-server\ndev tun\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n"
            "ifconfig 198.18.8.1 198.18.8.2\nifconfig-pool 198.18.8.5 198.18.8.14\n")
    pool = address_pool(parse_config(text, "server.conf"))
    assert pool is not None and pool.size == 3  # 198.18.8.4/30, .8/30, .12/30
    assert pool.entry(0).ifconfig_option() == "ifconfig 198.18.8.6 198.18.8.5"


@pytest.mark.directive("ifconfig-pool")
def test_ifconfig_pool_range_checks():
    with pytest.raises(ConfigError, match=r"start address 198\.18\.8\.20 is greater"):
        server("ifconfig-pool 198.18.8.20 198.18.8.10\n")
    with pytest.raises(ConfigError, match="is too large"):
        server("ifconfig-pool 198.18.0.0 198.19.255.255\n")
    with pytest.raises(ConfigError, match="requires 'mode server'"):
        parse_config("client\ndev tun\nremote h\nca ca.crt\ncert c.crt\nkey c.key\n"
                     "ifconfig-pool 198.18.8.10 198.18.8.20\n", "client.conf")


@pytest.mark.directive("client-config-dir")
def test_a_common_name_too_long_for_a_file_name_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read the client config file"):
        read_client_config(tmp_path, "x" * 300, exclusive=False)
