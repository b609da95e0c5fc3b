"""tls-crypt-v2, sans-IO: wrapped client keys, the v3 reset and P_CONTROL_WKC_V1 through the
server's front door, foreign keys, max-age."""

from __future__ import annotations

import os
from dataclasses import replace
from itertools import count
from typing import Any

import pytest

from tests.protocol.sessionkit import client_config, server_config
from trivpn.protocol.admission import PreauthLimits
from trivpn.protocol.errors import AuthenticationError
from trivpn.protocol.gateway import Drop, Gateway, GatewayLimits, NewSession, Reply
from trivpn.protocol.packets import Opcode, peek_header
from trivpn.protocol.session import Session
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.tlscryptv2 import (
    EARLY_NEG_START,
    ClientKey,
    ServerKey,
    TlsCryptV2,
    client_wrap,
    key_age_ok,
    timestamp_metadata,
)

SECRET = bytes(range(32))
SOURCE = ("198.18.0.2", 40000)
NOW_UNIX = 1_800_000_000


def _server_key() -> ServerKey:
    return ServerKey(os.urandom(128))


def _client_key(server: ServerKey, metadata: bytes) -> ClientKey:
    key = StaticKey(os.urandom(256))
    return ClientKey(key, server.wrap_client_key(key, metadata))


def _gateway(server: ServerKey, max_age: int = 0) -> Gateway[Any, int]:
    limits = GatewayLimits(reset=(100, 10.0), connect=None,
                           preauth=PreauthLimits(total=16, per_source=8))
    config = replace(server_config(), wrap=server, tls_crypt_v2_max_age=max_age)
    return Gateway(SECRET, limits, config=config, unix_offset=NOW_UNIX)


def _decide(gateway: Gateway[Any, int], data: bytes, now: float = 0.0) -> object:
    keys = count()
    return gateway.datagram(data, SOURCE, now, peer=None, by_peer_id={},
                            new_key=lambda: next(keys))


def _client(client: ClientKey) -> Session:
    session = Session(replace(client_config(), wrap=client_wrap(client)), 0.0)
    session.start(0.0)
    return session


@pytest.mark.directive("tls-crypt-v2")
def test_wrapped_client_key_round_trips_with_its_metadata():
    server = _server_key()
    client = _client_key(server, b"\x00team=ok")
    unwrapped = server.unwrap_client_key(client.wkc)
    assert unwrapped.key == client.key and unwrapped.metadata == b"\x00team=ok"


def test_a_client_key_wrapped_by_another_server_key_does_not_authenticate():
    client = _client_key(_server_key(), b"\x00x")
    with pytest.raises(AuthenticationError):
        _server_key().unwrap_client_key(client.wkc)


@pytest.mark.directive("tls-crypt-v2")
def test_v3_reset_cookie_and_wkc_packet_make_a_session_with_the_clients_key():
    server = _server_key()
    gateway = _gateway(server)
    client = _client(_client_key(server, timestamp_metadata(NOW_UNIX)))
    (reset,) = client.take_datagrams()
    assert peek_header(reset).opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V3
    reply = _decide(gateway, reset)
    assert isinstance(reply, Reply)
    client.receive_datagram(reply.data, 0.0)
    second = client.take_datagrams()[0]
    # the server asked (early-negotiation TLV): the key comes again with the TLS hello
    assert peek_header(second).opcode is Opcode.CONTROL_WKC_V1
    decision = _decide(gateway, second)
    assert isinstance(decision, NewSession), decision
    assert decision.session.client_key_metadata == timestamp_metadata(NOW_UNIX)
    decision.session.receive_datagram(second, 0.0)
    answers = decision.session.take_datagrams()
    assert answers
    for data in answers:
        client.receive_datagram(data, 0.0)
    assert not client.failed and not decision.session.failed


def test_client_announces_early_negotiation_in_its_first_replay_id():
    server = _server_key()
    client_key = _client_key(server, b"\x00")
    client = _client(client_key)
    (reset,) = client.take_datagrams()
    unwrapped = TlsCryptV2(client_key.key, is_server=True).unwrap(reset)
    assert unwrapped.packet_id is not None
    assert unwrapped.packet_id & 0xFF000000 == EARLY_NEG_START


@pytest.mark.directive("tls-crypt-v2")
def test_reset_with_a_foreign_client_key_is_dropped_and_counted():
    gateway = _gateway(_server_key())
    client = _client(_client_key(_server_key(), b"\x00x"))
    (reset,) = client.take_datagrams()
    decision = _decide(gateway, reset)
    assert decision == Drop("bad_client_key")


def test_plain_v2_reset_is_dropped_by_a_tls_crypt_v2_server():
    gateway = _gateway(_server_key())
    session = Session(client_config(), 0.0)
    session.start(0.0)
    (reset,) = session.take_datagrams()
    assert isinstance(_decide(gateway, reset), Drop)


@pytest.mark.directive("tls-crypt-v2-max-age")
@pytest.mark.parametrize(("metadata", "admitted"), [
    (timestamp_metadata(NOW_UNIX - 86400), True),
    (timestamp_metadata(NOW_UNIX - 3 * 86400), False),
    (b"\x00user data", False),  # no timestamp: refused, as OpenVPN does
])
def test_max_age_refuses_keys_older_than_n_days_or_without_a_timestamp(
        metadata: bytes, admitted: bool):
    server = _server_key()
    gateway = _gateway(server, max_age=2)
    client = _client(_client_key(server, metadata))
    (reset,) = client.take_datagrams()
    reply = _decide(gateway, reset)
    assert isinstance(reply, Reply)
    client.receive_datagram(reply.data, 0.0)
    decision = _decide(gateway, client.take_datagrams()[0])
    if admitted:
        assert isinstance(decision, NewSession)
    else:
        assert decision == Drop("tls_crypt_v2_key_too_old")


def test_key_age_counts_whole_days_from_the_timestamp():
    assert key_age_ok(timestamp_metadata(1000), 1, 1000 + 86400)
    assert not key_age_ok(timestamp_metadata(1000), 1, 1000 + 86401)
