"""TCP MSS clamping (mssfix) of SYNs crossing the tunnel."""

from __future__ import annotations

import struct

import pytest

from trivpn.protocol.mss import clamp_mss, data_overhead, mss_limit

SRC, DST = bytes([198, 18, 8, 2]), bytes([198, 18, 8, 1])


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _tcp_checksum_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 15) * 4
    segment = packet[ihl:]
    pseudo = packet[12:16] + packet[16:20] + bytes([0, 6]) + len(segment).to_bytes(2, "big")
    return _sum16(pseudo + segment) == 0xFFFF


def _tcp_packet(flags: int, options: bytes, *, frag: int = 0, proto: int = 6) -> bytes:
    doff = (20 + len(options)) // 4
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, doff << 4, flags, 64240, 0, 0)
                    + options)
    total = 20 + len(tcp)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, frag, 64, proto, 0,
                               SRC, DST))
    pseudo = SRC + DST + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    tcp[16:18] = (~_sum16(pseudo + bytes(tcp)) & 0xFFFF).to_bytes(2, "big")
    return bytes(ip + tcp)


SYN_OPTIONS = bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7])


def _mss_of(packet: bytes) -> int:
    at = packet.index(bytes([2, 4]), 40)
    return int.from_bytes(packet[at + 2:at + 4], "big")


@pytest.mark.parametrize("flags", [0x02, 0x12])  # SYN, SYN-ACK
def test_syn_mss_above_the_limit_is_lowered_with_a_valid_checksum(flags: int):
    packet = _tcp_packet(flags, SYN_OPTIONS)
    assert _tcp_checksum_ok(packet) and _mss_of(packet) == 1460
    clamped = clamp_mss(packet, 1400)
    assert _mss_of(clamped) == 1400
    assert _tcp_checksum_ok(clamped)
    assert len(clamped) == len(packet)


def test_mss_option_after_nops_is_found():
    packet = _tcp_packet(0x02, bytes([1, 1, 2, 4, 0x05, 0xB4, 1, 0]))
    clamped = clamp_mss(packet, 1300)
    assert _mss_of(clamped) == 1300 and _tcp_checksum_ok(clamped)


@pytest.mark.parametrize(("packet", "why"), [
    (_tcp_packet(0x02, bytes([2, 4, 0x05, 0x00])), "mss already below the limit"),
    (_tcp_packet(0x10, bytes([1, 1, 8, 10]) + bytes(8)), "not a SYN"),
    (_tcp_packet(0x02, b""), "no options"),
    (_tcp_packet(0x02, SYN_OPTIONS, proto=17), "not TCP"),
    (_tcp_packet(0x02, SYN_OPTIONS, frag=0x2000 | 5), "a fragment"),
    (bytes(60), "not IPv4"),
    (b"\x45\x00", "truncated"),
])
def test_other_packets_are_returned_unchanged(packet: bytes, why: str):
    assert clamp_mss(packet, 1280) is packet, why


def test_default_mssfix_for_aes_gcm_over_udp_is_1400():
    limit = mss_limit(1492, mtu_mode=True, fixed=False, overhead=data_overhead(True),
                      transport="udp")
    assert limit == 1492 - 20 - 8 - 24 - 40


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"mtu_mode": False, "fixed": False, "transport": "udp"}, 1450 - 24 - 40),
    ({"mtu_mode": False, "fixed": True, "transport": "udp"}, 1450 - 40),
    ({"mtu_mode": True, "fixed": False, "transport": "tcp"}, 1450 - 20 - 20 - 2 - 24 - 40),
])
def test_mssfix_variants(kwargs: dict[str, object], expected: int):
    assert mss_limit(1450, overhead=24, **kwargs) == expected  # type: ignore[arg-type]


def test_mssfix_zero_turns_clamping_off():
    assert mss_limit(0, mtu_mode=True, fixed=False, overhead=24, transport="udp") is None
