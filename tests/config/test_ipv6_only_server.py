"""An IPv6-only server: ``server-ipv6`` without ``server`` is a server as in OpenVPN 2.6
(helper.c helper_client_server sets 'mode server' and 'tls-server'); the runtime serves it
from the IPv6 pool alone (tests/interop/test_server_ipv6_only_vs_openvpn.py)."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.config.derive import server_push_options
from trivpn.runplan import _server
from trivpn.runtime.server import server_device_ifconfig, server_pool

BASE = "dev tun\nca ca.crt\ncert server.crt\nkey server.key\ndh none\n"


@pytest.mark.directive("server-ipv6")
def test_server_ipv6_alone_makes_a_tls_server_in_mode_server():
    o = parse_config(BASE + "server-ipv6 2001:2:0:8::/64\n", "server.conf")
    assert (o.mode, o.role, o.server) == ("server", "server", None)
    assert server_pool(o) is None and server_device_ifconfig(o) is None
    assert server_push_options(o) == ("tun-ipv6",)


@pytest.mark.directive("server-ipv6")
def test_ipv6_only_server_summary_has_an_ipv6_pool_only():
    o = parse_config(BASE + "server-ipv6 2001:2:0:8::/64\n", "server.conf")
    summary = _server(o)
    assert summary["pool"] is None
    assert summary["pool_ipv6"] == {"first": "2001:2:0:8::1000", "last": "2001:2:0:8::1:fff",
                                    "size": 65536, "prefix": 64}


@pytest.mark.directive("server-ipv6")
def test_server_ipv6_with_client_is_refused():
    with pytest.raises(ConfigError, match="'server-ipv6' and 'client' cannot be used together"):
        parse_config("client\nremote 198.18.0.1\n" + BASE + "server-ipv6 2001:2:0:8::/64\n",
                     "c.conf")


@pytest.mark.directive("ifconfig-pool-persist")
def test_ifconfig_pool_persist_on_an_ipv6_only_server_is_refused():
    with pytest.raises(ConfigError, match="IPv6-only server"):
        parse_config(BASE + "server-ipv6 2001:2:0:8::/64\nifconfig-pool-persist ipp.txt\n",
                     "server.conf")
