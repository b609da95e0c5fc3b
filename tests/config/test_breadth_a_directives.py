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




def test_socket_flags_knows_only_tcp_nodelay_as_openvpn_2_6() -> None:
    assert client("socket-flags TCP_NODELAY").socket_flags_nodelay
    with pytest.raises(ConfigError, match="unknown socket flag: SO_KEEPALIVE"):
        client("socket-flags SO_KEEPALIVE")


@pytest.mark.parametrize("value", ["no", "maybe", "yes"])
def test_mtu_disc_takes_no_maybe_or_yes(value: str) -> None:
    assert client(f"mtu-disc {value}").mtu_disc == value


def test_mtu_disc_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match="'mtu-disc' expects one of no, maybe, yes"):
        client("mtu-disc always")


@pytest.mark.directive("tun-mtu-max")
def test_tun_mtu_max_is_between_68_and_65536() -> None:
    assert client("tun-mtu-max 9000").tun_mtu_max == 9000
    with pytest.raises(ConfigError, match="tun-mtu-max"):
        client("tun-mtu-max 67")


@pytest.mark.parametrize("line", ["passtos", "socket-flags TCP_NODELAY", "bind-dev eth0",
                                  "mtu-disc yes", "tun-mtu-max 9000"])
def test_link_socket_directives_in_a_server_config_are_refused_as_client_only(line: str
                                                                               ) -> None:
    with pytest.raises(ConfigError, match="in a server config is not supported by trivpn yet"):
        parse_config(SERVER + line + "\n", "/etc/openvpn/server.conf")


def test_tun_max_mtu_is_refused_as_not_an_openvpn_2_6_option() -> None:
    with pytest.raises(ConfigError, match=r"not an OpenVPN 2.6 option \(2.6 spells it "
                                          r"'tun-mtu-max'\)"):
        client("tun-max-mtu 1600")


@pytest.mark.parametrize(("line", "why"), [
    ("mtu-test", "empirically measure and report the MTU")])
def test_mtu_directives_trivpn_refuses_say_what_they_do_in_openvpn(line: str, why: str
                                                                   ) -> None:
    with pytest.raises(ConfigError, match="not supported by trivpn yet") as info:
        client(line)
    assert why in str(info.value)
