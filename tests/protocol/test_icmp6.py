"""block-ipv6: the ICMPv6 no-route answers a client writes back to its TUN."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from trivpn.protocol.icmp6 import FALLBACK_SOURCE, block_ipv6, no_route_reply

SRC = ipaddress.IPv6Address("2001:2:0:8::1000").packed
DST = ipaddress.IPv6Address("2001:2:0:99::1").packed
PEER = ipaddress.IPv6Address("2001:2:0:8::1").packed


def _packet(size: int = 64, hop_limit: int = 64) -> bytes:
    payload = b"\x80\x00\x00\x00" + bytes(range(256)) * 8
    payload = payload[:size - 40]
    return (struct.pack("!IHBB", (6 << 28) | (0x12 << 20) | 0xABCDE, len(payload), 58,
                        hop_limit) + SRC + DST + payload)


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.directive("block-ipv6")
def test_answer_is_a_no_route_unreachable_from_the_peer_to_the_sender():
    packet = _packet()
    reply = no_route_reply(packet, PEER, 1500)
    assert reply is not None
    assert reply[0:4] == packet[0:4] and reply[7] == packet[7]  # copied header fields
    assert reply[6] == 58 and reply[8:24] == PEER and reply[24:40] == SRC
    assert reply[40:42] == b"\x01\x00"  # destination unreachable, no route
    assert reply[48:] == packet
    assert int.from_bytes(reply[4:6], "big") == len(reply) - 40
    pseudo = reply[8:40] + (len(reply) - 40).to_bytes(4, "big") + bytes((0, 0, 0, 58))
    assert _sum16(pseudo + reply[40:]) == 0xFFFF  # a valid ICMPv6 checksum


def test_long_packets_are_quoted_up_to_1280_bytes_or_the_mtu():
    big = _packet(1500)
    assert len(no_route_reply(big, PEER, 1500) or b"") == 48 + 1280
    assert len(no_route_reply(big, PEER, 1000) or b"") == 1000
    assert len(no_route_reply(big, PEER, 80) or b"") == 48 + 64  # at least 64


def test_the_batch_keeps_ipv4_and_answers_every_ipv6_packet():
    v4 = bytes([0x45]) + bytes(19)
    keep, answers = block_ipv6([v4, _packet(), _packet()[:20]], FALLBACK_SOURCE, 1500)
    assert keep == [v4]
    assert len(answers) == 1 and answers[0][8:24] == ipaddress.IPv6Address("fe80::7").packed
