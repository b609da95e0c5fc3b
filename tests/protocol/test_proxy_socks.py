"""SOCKS5 as OpenVPN 2.6 speaks it (socks.c): greeting, RFC 1929 auth, CONNECT, UDP ASSOCIATE,
and the UDP relay header."""

from __future__ import annotations

import pytest

from trivpn.protocol.proxy_socks import (
    ProxyError,
    SocksHandshake,
    SocksResult,
    unwrap_udp,
    wrap_udp,
)

IPV4_REPLY = bytes([5, 0, 0, 1, 198, 18, 1, 1, 0x04, 0x38])


def _run(hs: SocksHandshake, replies: bytes) -> list[bytes]:
    """Drive ``hs`` like the runtime does; the bytes it sent, in order."""
    sent = [hs.start()]
    pos = 0
    while not hs.done:
        n = hs.want()
        assert n > 0
        out = hs.feed(replies[pos:pos + n])
        pos += n
        if out:
            sent.append(out)
    assert pos == len(replies)
    return sent


@pytest.mark.directive("socks-proxy")
def test_connect_without_auth_names_the_server_as_a_domain() -> None:
    hs = SocksHandshake("vpn.example.net", 1194)
    sent = _run(hs, bytes([5, 0]) + IPV4_REPLY)
    assert sent == [b"\x05\x01\x00", b"\x05\x01\x00\x03\x0fvpn.example.net\x04\xaa"]
    assert hs.result == SocksResult("198.18.1.1", 1080)


@pytest.mark.directive("socks-proxy")
def test_username_password_sub_negotiation() -> None:
    hs = SocksHandshake("198.18.2.1", 1194, username="bob", password="pw")
    sent = _run(hs, bytes([5, 2]) + bytes([1, 0]) + IPV4_REPLY)
    assert sent[0] == b"\x05\x01\x02"
    assert sent[1] == b"\x01\x03bob\x02pw"
    assert sent[2].startswith(b"\x05\x01\x00\x03")


def test_rejected_credentials_are_an_error() -> None:
    hs = SocksHandshake("h", 1, username="bob", password="bad")
    hs.start()
    hs.feed(bytes([5, 2]))
    with pytest.raises(ProxyError, match="rejected the username/password"):
        hs.feed(bytes([1, 1]))


def test_method_not_offered_is_an_error() -> None:
    hs = SocksHandshake("h", 1)
    hs.start()
    with pytest.raises(ProxyError, match="did not accept"):
        hs.feed(bytes([5, 0xFF]))


def test_refused_connect_names_the_socks_reason() -> None:
    hs = SocksHandshake("h", 1)
    hs.start()
    hs.feed(bytes([5, 0]))
    with pytest.raises(ProxyError, match="connection not allowed by ruleset"):
        hs.feed(bytes([5, 2, 0, 1, 0]))


@pytest.mark.directive("socks-proxy")
def test_udp_associate_returns_the_relay_address() -> None:
    hs = SocksHandshake("198.18.2.1", 1194, udp=True)
    sent = _run(hs, bytes([5, 0]) + bytes([5, 0, 0, 1, 198, 18, 1, 1, 0x9c, 0x40]))
    assert sent[1] == b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
    assert hs.result == SocksResult("198.18.1.1", 40000)


def test_reply_with_domain_and_ipv6_addresses_is_sized_from_its_type() -> None:
    hs = SocksHandshake("h", 1)
    _run(hs, bytes([5, 0]) + bytes([5, 0, 0, 3, 4]) + b"prox" + b"\x00\x50")
    assert hs.result == SocksResult("prox", 80)
    hs6 = SocksHandshake("h", 1)
    _run(hs6, bytes([5, 0]) + bytes([5, 0, 0, 4]) + bytes(15) + b"\x01" + b"\x00\x51")
    assert hs6.result == SocksResult("::1", 81)


@pytest.mark.directive("socks-proxy")
def test_udp_header_round_trip() -> None:
    wire = wrap_udp(b"payload", "198.18.2.1", 1194)
    assert wire[:10] == b"\x00\x00\x00\x01\xc6\x12\x02\x01\x04\xaa"
    assert unwrap_udp(wire) == (b"payload", ("198.18.2.1", 1194))


@pytest.mark.parametrize(("datagram", "reason"), [
    (b"\x00\x00\x00\x01\x01", "truncated"),
    (b"\x00\x00\x01\x01" + bytes(6), "fragmented"),
    (b"\x00\x00\x00\x04" + bytes(6), "bad_address_type"),
])
def test_bad_udp_datagrams_are_errors_with_a_reason(datagram: bytes, reason: str) -> None:
    with pytest.raises(ProxyError) as info:
        unwrap_udp(datagram)
    assert info.value.reason == reason
