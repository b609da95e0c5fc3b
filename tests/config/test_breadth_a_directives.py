"""Client directives of issue 12's breadth (socket, link and proxy options): parsing."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, Options, parse_config

BASE = "client\ndev tun\nremote vpn.example.com 1194\nca ca.crt\ncert c.crt\nkey c.key\n"
SERVER = ("mode server\ntls-server\ndev tun\nserver 198.18.8.0 255.255.255.0\nca ca.crt\n"
          "cert s.crt\nkey s.key\ndh none\n")


def client(extra: str) -> Options:
    return parse_config(BASE + extra, "/etc/openvpn/client.conf")


def test_passtos_is_off_unless_written() -> None:
    assert not client("").passtos
    assert client("passtos").passtos


def test_passtos_in_a_server_config_is_refused_saying_it_is_client_only() -> None:
    with pytest.raises(ConfigError, match="'passtos' in a server config"):
        parse_config(SERVER + "passtos\n", "/etc/openvpn/server.conf")
