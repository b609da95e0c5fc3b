"""Options the client sets on its link socket: mtu-disc, bind-dev, socket-flags TCP_NODELAY
(read back with getsockopt from the socket the client's host opened)."""

from __future__ import annotations

import socket

import pytest
import trio

from tests.conftest import require_root
from trivpn.config import parse_config
from trivpn.runtime.client import SystemHost
from trivpn.runtime.datapath import LinkSocketOptions
from trivpn.runtime.errors import RuntimeSetupError

BASE = "client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\nkey c.key\n"


def _host(extra: str) -> SystemHost:
    options = parse_config(BASE + extra, "/etc/openvpn/client.conf")
    return SystemHost(options.mark, sockopts=LinkSocketOptions.of(options))


@pytest.mark.directive("mtu-disc")
@pytest.mark.parametrize(("value", "expected"), [("no", 0), ("maybe", 1), ("yes", 2)])
def test_mtu_disc_sets_ip_mtu_discover_on_the_udp_link_socket(value: str, expected: int
                                                               ) -> None:
    link = _host(f"mtu-disc {value}").open_udp(("127.0.0.1", 0), None, None)
    try:
        assert link.socket.getsockopt(socket.IPPROTO_IP, 10) == expected  # IP_MTU_DISCOVER
    finally:
        link.close()


def test_without_mtu_disc_the_kernel_default_stays() -> None:
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link = _host("").open_udp(("127.0.0.1", 0), None, None)
    try:
        assert (link.socket.getsockopt(socket.IPPROTO_IP, 10)
                == plain.getsockopt(socket.IPPROTO_IP, 10))
    finally:
        link.close()
        plain.close()


@pytest.mark.directive("bind-dev")
def test_bind_dev_binds_the_link_socket_to_the_device() -> None:
    require_root()  # SO_BINDTODEVICE needs CAP_NET_RAW
    link = _host("bind-dev lo").open_udp(("127.0.0.1", 0), None, None)
    try:
        assert link.socket.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16
                                      ).rstrip(b"\0") == b"lo"
    finally:
        link.close()


def test_bind_dev_to_a_missing_device_is_a_setup_error_naming_it() -> None:
    require_root()
    with pytest.raises(RuntimeSetupError, match="device tvpn-nosuch"):
        _host("bind-dev tvpn-nosuch").open_udp(("127.0.0.1", 0), None, None)


@pytest.mark.directive("socket-flags")
async def test_socket_flags_tcp_nodelay_is_set_on_the_tcp_link_socket() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with listener:
        stream = await _host("socket-flags TCP_NODELAY").open_stream(
            "127.0.0.1", port, None, None, None)
        async with stream:
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
