"""no-replay: the data channel accepts repeated packet ids (OpenVPN ssl.c, key_state_init():
no receive packet_id without opt->replay)."""

from __future__ import annotations

import pytest

from tests.protocol.test_datachannel import pair
from trivpn.config import parse_config
from trivpn.protocol.datachannel import SUPPORTED_CIPHERS

BASE = "client\ndev tun\nremote vpn.example.com 1194\nca ca.crt\ncert c.crt\nkey c.key\n"


@pytest.mark.directive("no-replay")
@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
def test_without_replay_protection_a_replayed_packet_is_accepted(cipher: str) -> None:
    client, server = pair(cipher, 0, replay=False)
    packets = [client.encrypt(bytes([i])) for i in range(3)]
    for i in (2, 0, 2, 1, 0):
        assert server.decrypt(packets[i], now=0.0) == bytes([i])
    assert server.replay_window.highest == 3


@pytest.mark.directive("no-replay")
def test_no_replay_switches_replay_protection_off_with_a_warning() -> None:
    o = parse_config(BASE + "no-replay\n", "/c.conf")
    assert o.replay is False
    assert any("replay protection is disabled" in w.message for w in o.warnings)
    assert parse_config(BASE, "/c.conf").replay is True
