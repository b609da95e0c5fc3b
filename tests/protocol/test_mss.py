"""TCP MSS clamping (mssfix) of SYNs crossing the tunnel."""

from __future__ import annotations

import struct

import pytest

from trivpn.protocol.mss import clamp_ipv6_batch, clamp_mss, clamp_mss6, data_overhead, mss_limit

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


def _tcp6_checksum_ok(packet: bytes) -> bool:
    segment = packet[40:]
    pseudo = packet[8:40] + len(segment).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    return _sum16(pseudo + segment) == 0xFFFF


def _tcp6_syn(options: bytes, *, next_header: int = 6) -> bytes:
    src = bytes.fromhex("20010002000000010000000000001000")
    dst = bytes.fromhex("20010002000000010000000000000001")
    doff = (20 + len(options)) // 4
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, doff << 4, 0x02, 64240, 0, 0)
                    + options)
    pseudo = src + dst + len(tcp).to_bytes(4, "big") + bytes([0, 0, 0, 6])
    tcp[16:18] = (~_sum16(pseudo + bytes(tcp)) & 0xFFFF).to_bytes(2, "big")
    header = struct.pack("!IHBB", 6 << 28, len(tcp), next_header, 64) + src + dst
    return header + bytes(tcp)


def test_ipv6_syn_mss_is_lowered_with_a_valid_checksum():
    packet = _tcp6_syn(SYN_OPTIONS)
    assert _tcp6_checksum_ok(packet)
    clamped = clamp_mss6(packet, 1380)
    assert int.from_bytes(clamped[62:64], "big") == 1380
    assert _tcp6_checksum_ok(clamped) and len(clamped) == len(packet)


def test_ipv6_packets_other_than_a_tcp_syn_are_returned_unchanged():
    within = _tcp6_syn(SYN_OPTIONS)
    assert clamp_mss6(within, 1460) is within           # already within the limit
    hop_by_hop = _tcp6_syn(SYN_OPTIONS, next_header=0)   # extension header first
    assert clamp_mss6(hop_by_hop, 1000) is hop_by_hop
    v4 = _tcp_packet(0x02, SYN_OPTIONS)
    assert clamp_mss6(v4, 1000) is v4
    assert clamp_mss(within, 1000) is within             # the IPv4 clamp leaves IPv6 alone


def test_ipv6_batch_clamping_touches_only_ipv6_tcp_syns():
    syn6 = _tcp6_syn(SYN_OPTIONS)
    v4 = _tcp_packet(0x02, SYN_OPTIONS)
    out = clamp_ipv6_batch([v4, syn6], 1380)
    assert out[0] is v4
    assert int.from_bytes(out[1][62:64], "big") == 1380
