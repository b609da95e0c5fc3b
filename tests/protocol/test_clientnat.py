"""client-nat address rewriting (OpenVPN clinat.c; against openvpn 2.6 in
tests/interop/test_more_directives.py)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from trivpn.protocol.clientnat import ClientNat, NatRule


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    if proto == 17:
        l4 = struct.pack("!HHHH", 4000, 53, 8 + len(payload), 0) + payload
        at = 6
    else:
        l4 = struct.pack("!HHIIBBHHH", 4000, 80, 1, 0, 0x50, 0x02, 1024, 0, 0) + payload
        at = 16
    pseudo = s + d + struct.pack("!BBH", 0, proto, len(l4))
    l4 = l4[:at] + struct.pack("!H", _csum(pseudo + l4)) + l4[at + 2:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, proto, 0, s, d)
    head = head[:10] + struct.pack("!H", _csum(head)) + head[12:]
    return head + l4


def _valid(packet: bytes) -> bool:
    proto = packet[9]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, proto, len(packet) - 20)
    return _csum(packet[:20]) == 0 and _csum(pseudo + packet[20:]) == 0


DNAT = ClientNat((NatRule("dnat", _ip("198.18.30.0"), _ip("255.255.255.0"),
                          _ip("198.18.8.0")),))
SNAT = ClientNat((NatRule("snat", _ip("198.18.8.0"), _ip("255.255.255.0"),
                          _ip("198.18.40.0")),))


@pytest.mark.directive("client-nat")
@pytest.mark.parametrize("proto", [6, 17])
def test_dnat_rewrites_the_destination_out_and_the_source_back_in(proto: int):
    out = DNAT.transform(_packet("198.18.8.10", "198.18.30.1", proto, b"hello"),
                         incoming=False)
    assert out[16:20] == ipaddress.IPv4Address("198.18.8.1").packed and _valid(out)
    back = DNAT.transform(_packet("198.18.8.1", "198.18.8.10", proto, b"hi"), incoming=True)
    assert back[12:16] == ipaddress.IPv4Address("198.18.30.1").packed and _valid(back)


@pytest.mark.directive("client-nat")
def test_snat_rewrites_the_source_out_and_the_destination_back_in():
    out = SNAT.transform(_packet("198.18.8.10", "198.18.9.1", 6, b"x"), incoming=False)
    assert out[12:16] == ipaddress.IPv4Address("198.18.40.10").packed and _valid(out)
    back = SNAT.transform(_packet("198.18.9.1", "198.18.40.10", 17, b"y"), incoming=True)
    assert back[16:20] == ipaddress.IPv4Address("198.18.8.10").packed and _valid(back)


@pytest.mark.directive("client-nat")
def test_unmatched_and_non_ipv4_packets_pass_unchanged():
    packet = _packet("198.18.8.10", "198.18.9.1", 17, b"z")
    assert DNAT.transform(packet, incoming=False) is packet
    v6 = b"\x60" + bytes(39)
    assert SNAT.transform(v6, incoming=False) is v6
