"""Parsing the server socket directives: multihome, port-share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import server
from trivpn.config import ConfigError, address_pool, parse_config, server_push_options
from trivpn.config.options import PortShare


@pytest.mark.directive("multihome")
def test_multihome_is_off_unless_written() -> None:
    assert server().multihome is False
    assert server("multihome\n").multihome is True


@pytest.mark.directive("port-share")
def test_port_share_reads_host_port_and_a_journal_directory_beside_the_config() -> None:
    o = server("proto tcp-server\nport-share 198.18.0.5 8443 journal\n")
    assert o.port_share == PortShare("198.18.0.5", 8443, o.base_dir / "journal")
    assert server("proto tcp-server\nport-share web.example 443\n").port_share == \
        PortShare("web.example", 443, None)
    assert server("proto tcp-server\nport-share h 1 /var/ps\n").port_share == \
        PortShare("h", 1, Path("/var/ps"))


@pytest.mark.directive("port-share")
def test_port_share_with_a_bad_port_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"server.conf:9"):
        server("proto tcp-server\nport-share 198.18.0.5 70000\n")


BRIDGE_BASE = """dev tap
ca ca.crt
cert server.crt
key server.key
dh none
"""


@pytest.mark.directive("server-bridge")
def test_server_bridge_makes_a_tls_server_with_its_pool_and_route_gateway() -> None:
    o = parse_config(BRIDGE_BASE + "server-bridge 198.18.40.1 255.255.255.0 198.18.40.100 "
                     "198.18.40.150\n", "server.conf")
    assert (o.mode, o.role) == ("server", "server")
    pool = address_pool(o)
    assert pool is not None
    assert (str(pool.start), str(pool.end), str(pool.netmask), len(pool)) == (
        "198.18.40.100", "198.18.40.150", "255.255.255.0", 51)
    assert server_push_options(o)[0] == "route-gateway 198.18.40.1"


@pytest.mark.directive("server-bridge")
@pytest.mark.parametrize(("args", "message"), [
    ("gw", "expects GW MASK"),
    ("198.18.40.1 255.255.255.0 198.18.41.100 198.18.41.150", "not in one"),
    ("198.18.40.1 255.255.255.0 198.18.40.150 198.18.40.100", "after its end"),
    ("198.18.40.1 255.255.255.0 198.18.40.100", "expects GW MASK"),
])
def test_server_bridge_refuses_what_it_cannot_serve(args: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(BRIDGE_BASE + f"server-bridge {args}\n", "server.conf")


@pytest.mark.directive("server-bridge")
@pytest.mark.parametrize(("args", "pushed"), [("", ("route-gateway dhcp",)), ("nogw", ())])
def test_server_bridge_without_a_pool_is_a_tls_server_whose_clients_use_dhcp(
        args: str, pushed: tuple[str, ...]) -> None:
    o = parse_config(BRIDGE_BASE + f"server-bridge {args}\n", "server.conf")
    assert (o.mode, o.role, o.server_bridge_proxy_dhcp) == ("server", "server", True)
    assert address_pool(o) is None
    assert server_push_options(o) == pushed


@pytest.mark.directive("server-bridge")
def test_server_bridge_without_a_pool_refuses_ifconfig_pool() -> None:
    with pytest.raises(ConfigError, match="--server-bridge already defines an ifconfig-pool"):
        parse_config(BRIDGE_BASE + "server-bridge\nifconfig-pool 198.18.40.100 "
                     "198.18.40.150 255.255.255.0\n", "server.conf")
