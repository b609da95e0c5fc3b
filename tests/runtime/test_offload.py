"""TUN offload packet work: TSO super-packets cut into wire packets, TCP runs coalesced.

Checksums are checked with a plain RFC 1071 word loop, independent of the module's big-integer
arithmetic.
"""

from __future__ import annotations

import random
import struct

import pytest

from trivpn.runtime.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    PLAIN_HDR,
    VNET_HDR,
    OffloadError,
    coalesce,
    complete_checksum,
    internet_checksum,
    split_frame,
)

SRC, DST = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
ACK, PSH, FIN, SYN, CWR = 0x10, 0x08, 0x01, 0x02, 0x80
TS_OPTION = bytes([1, 1, 8, 10]) + (123456).to_bytes(4, "big") + (654321).to_bytes(4, "big")


def word_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def reference_checksum(data: bytes) -> int:
    return ~word_sum(data) & 0xFFFF


def tcp_checksum_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 15) * 4
    segment = packet[ihl:]
    pseudo = packet[12:20] + bytes([0, 6]) + len(segment).to_bytes(2, "big")
    return word_sum(pseudo + segment) == 0xFFFF


def ip_checksum_ok(packet: bytes) -> bool:
    ihl = (packet[0] & 15) * 4
    return word_sum(packet[:ihl]) == 0xFFFF


def tcp4(payload: bytes, seq: int, *, flags: int = ACK, ack: int = 7777, window: int = 502,
         options: bytes = TS_OPTION, sport: int = 40000, dport: int = 5201, ip_id: int = 100,
         src: bytes = SRC, dst: bytes = DST, checksum: bool = True) -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags, window, 0,
                      0) + options
    total = 20 + thl + len(payload)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ip_id, 0x4000, 64, 6, 0, src,
                               dst))
    ip[10:12] = reference_checksum(bytes(ip)).to_bytes(2, "big")
    tcp_b = bytearray(tcp)
    if checksum:
        pseudo = src + dst + bytes([0, 6]) + (thl + len(payload)).to_bytes(2, "big")
        tcp_b[16:18] = reference_checksum(pseudo + bytes(tcp_b) + payload).to_bytes(2, "big")
    return bytes(ip) + bytes(tcp_b) + payload


def tso_frame(payload: bytes, gso_size: int, *, flags: int = ACK | PSH, seq: int = 1000,
              ip_id: int = 100) -> bytes:
    """What the kernel hands a TUN with TSO: one header, a pseudo-header partial checksum."""
    packet = bytearray(tcp4(payload, seq, flags=flags, ip_id=ip_id, checksum=False))
    tcp_len = len(packet) - 20
    partial = word_sum(SRC + DST + bytes([0, 6]) + tcp_len.to_bytes(2, "big"))
    packet[36:38] = partial.to_bytes(2, "big")
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 52, gso_size, 20, 16) + bytes(packet)


def payload_of(packet: bytes) -> bytes:
    return packet[20 + (packet[32] >> 4) * 4:]


def joined(frame: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in frame)


# --- checksum arithmetic ------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, 2, 3, 20, 1399, 1400, 9001])
def test_internet_checksum_matches_rfc1071_word_loop(size: int) -> None:
    data = random.Random(size).randbytes(size)
    assert internet_checksum(data) == reference_checksum(data)


def test_internet_checksum_of_all_ones_words_is_zero() -> None:
    assert internet_checksum(b"\xff\xff\xff\xff") == reference_checksum(b"\xff\xff\xff\xff") == 0


def test_complete_checksum_fills_a_partial_udp_checksum() -> None:
    body = b"hello, udp"
    udp = struct.pack("!HHHH", 5000, 53, 8 + len(body), 0) + body
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, SRC,
                               DST))
    partial = word_sum(SRC + DST + bytes([0, 17]) + len(udp).to_bytes(2, "big"))
    packet = bytes(ip) + udp[:6] + partial.to_bytes(2, "big") + udp[8:]
    done = complete_checksum(packet, 20, 6)
    pseudo = SRC + DST + bytes([0, 17]) + len(udp).to_bytes(2, "big")
    assert word_sum(pseudo + done[20:]) == 0xFFFF


def test_complete_checksum_outside_the_packet_is_an_error() -> None:
    with pytest.raises(OffloadError):
        complete_checksum(b"\x45" + bytes(30), 20, 16)


# --- reading: TSO super-packets cut into wire packets --------------------------------------------

def test_plain_frame_gives_the_packet_unchanged() -> None:
    packet = tcp4(b"x" * 100, 5)
    assert split_frame(PLAIN_HDR + packet) == [packet]


def test_needs_csum_frame_without_gso_gets_a_valid_tcp_checksum() -> None:
    frame = tso_frame(b"y" * 500, gso_size=1400)
    [packet] = split_frame(frame)
    assert tcp_checksum_ok(packet) and ip_checksum_ok(packet)
    assert payload_of(packet) == b"y" * 500


def test_super_packet_is_cut_into_gso_size_segments_carrying_the_whole_payload() -> None:
    payload = random.Random(1).randbytes(1388 * 5 + 300)
    segments = split_frame(tso_frame(payload, 1388))
    assert [len(payload_of(s)) for s in segments] == [1388] * 5 + [300]
    assert b"".join(payload_of(s) for s in segments) == payload


def test_every_segment_has_valid_ip_and_tcp_checksums() -> None:
    payload = random.Random(2).randbytes(1388 * 3 + 1)  # odd tail
    for segment in split_frame(tso_frame(payload, 1388)):
        assert ip_checksum_ok(segment)
        assert tcp_checksum_ok(segment)


def test_segments_have_own_length_sequence_number_and_ip_id() -> None:
    segments = split_frame(tso_frame(bytes(1000 * 3), 1000, seq=0xFFFFFC00, ip_id=0xFFFF))
    assert [int.from_bytes(s[2:4], "big") for s in segments] == [len(s) for s in segments]
    assert [int.from_bytes(s[24:28], "big") for s in segments] == [
        0xFFFFFC00, (0xFFFFFC00 + 1000) & 0xFFFFFFFF, (0xFFFFFC00 + 2000) & 0xFFFFFFFF]
    assert [int.from_bytes(s[4:6], "big") for s in segments] == [0xFFFF, 0, 1]


def test_psh_and_fin_stay_on_the_last_segment_and_cwr_on_the_first() -> None:
    segments = split_frame(tso_frame(bytes(300), 100, flags=ACK | PSH | FIN | CWR))
    assert [s[33] for s in segments] == [ACK | CWR, ACK, ACK | PSH | FIN]


def test_tcp_options_are_copied_to_every_segment() -> None:
    for segment in split_frame(tso_frame(bytes(300), 100)):
        assert segment[40:52] == TS_OPTION


@pytest.mark.parametrize("frame", [
    b"",
    PLAIN_HDR,
    VNET_HDR.pack(0, 3, 0, 1400, 0, 0) + tcp4(b"u", 1),  # UDP GSO: never offered
    VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 1400, 20, 16) + b"\x60" + bytes(60),  # not IPv4
    VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, 40, 0, 20, 16) + tcp4(bytes(100), 1),  # gso_size 0
])
def test_frames_that_cannot_be_taken_apart_raise_offload_error(frame: bytes) -> None:
    with pytest.raises(OffloadError):
        split_frame(frame)


# --- writing: TCP runs coalesced into super-packets ---------------------------------------------

def _stream(count: int, size: int = 1388, seq: int = 1, **kw: object) -> list[bytes]:
    rng = random.Random(count)
    return [tcp4(rng.randbytes(size), seq + i * size, **kw) for i in range(count)]  # type: ignore[arg-type]


def test_in_order_segments_of_one_flow_become_one_gso_frame() -> None:
    packets = _stream(10)
    [frame] = coalesce(packets)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack(frame[0])
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        F_NEEDS_CSUM, GSO_TCPV4, 52, 1388, 20, 16)
    packet = joined(frame[1:])
    assert payload_of(packet) == b"".join(payload_of(p) for p in packets)
    assert int.from_bytes(packet[2:4], "big") == len(packet)
    assert ip_checksum_ok(packet)


def test_gso_frame_carries_the_pseudo_header_sum_for_the_kernel_to_finish() -> None:
    [frame] = coalesce(_stream(4))
    packet = joined(frame[1:])
    tcp_len = len(packet) - 20
    expected = word_sum(SRC + DST + bytes([0, 6]) + tcp_len.to_bytes(2, "big"))
    assert int.from_bytes(packet[36:38], "big") == expected


def test_coalesced_frame_cut_again_gives_back_the_original_packets() -> None:
    packets = _stream(7, ip_id=100)
    [frame] = coalesce(packets)
    again = split_frame(joined(frame))
    assert [payload_of(p) for p in again] == [payload_of(p) for p in packets]
    assert [p[20:] for p in again] == [p[20:] for p in packets]  # same TCP headers, checksums


def test_single_packet_is_passed_through_with_a_plain_header() -> None:
    packet = tcp4(b"z" * 50, 1)
    assert coalesce([packet]) == [[PLAIN_HDR, packet]]


def test_non_tcp_packets_pass_through_in_place() -> None:
    udp = bytes([0x45, 0, 0, 28]) + bytes(5) + bytes([17]) + bytes(18)
    packets = [*_stream(2), udp, *_stream(2, seq=1 + 2 * 1388)]
    frames = coalesce(packets)
    assert [len(f) for f in frames] == [2 + 4, 2]  # header parts + 4 payloads; the UDP packet
    assert frames[1] == [PLAIN_HDR, udp]


def test_a_sequence_gap_starts_a_new_run() -> None:
    first = _stream(3)
    later = _stream(3, seq=1 + 10 * 1388)
    frames = coalesce(first + later)
    assert len(frames) == 2
    assert all(VNET_HDR.unpack(f[0])[1] == GSO_TCPV4 for f in frames)


def test_psh_ends_a_run_and_is_kept_on_the_frame() -> None:
    packets = _stream(3)
    packets[1] = tcp4(payload_of(packets[1]), 1 + 1388, flags=ACK | PSH)
    frames = coalesce(packets)
    assert len(frames) == 2
    assert joined(frames[0][1:])[33] == ACK | PSH
    assert frames[1][0] == PLAIN_HDR


def test_short_segment_ends_a_run() -> None:
    packets = [*_stream(2), tcp4(b"s" * 10, 1 + 2 * 1388),
               tcp4(b"t" * 1388, 1 + 2 * 1388 + 10)]
    frames = coalesce(packets)
    assert [VNET_HDR.unpack(f[0])[1] for f in frames] == [GSO_TCPV4, GSO_NONE]
    assert len(payload_of(joined(frames[0][1:]))) == 2 * 1388 + 10


@pytest.mark.parametrize("change", [
    {"ack": 9999}, {"window": 100}, {"options": bytes([1, 1, 8, 10]) + bytes(8)},
])
def test_segments_with_different_headers_are_not_merged(change: dict[str, object]) -> None:
    packets = [*_stream(2), tcp4(b"d" * 1388, 1 + 2 * 1388, **change)]  # type: ignore[arg-type]
    assert len(coalesce(packets)) == 2


def test_syn_fin_and_pure_acks_are_never_merged_and_keep_flow_order() -> None:
    data = _stream(2)
    fin = tcp4(b"", 1 + 2 * 1388, flags=ACK | FIN)
    after = tcp4(b"late" * 10, 1 + 2 * 1388)
    frames = coalesce([*data, fin, after])
    assert [joined(f[1:]) for f in frames[1:]] == [fin, after]
    syn = tcp4(b"", 1, flags=SYN, options=b"")
    assert coalesce([syn, syn]) == [[PLAIN_HDR, syn], [PLAIN_HDR, syn]]


def test_interleaved_flows_are_coalesced_separately() -> None:
    a = _stream(3, sport=1111)
    b = _stream(3, sport=2222)
    frames = coalesce([a[0], b[0], a[1], b[1], a[2], b[2]])
    assert len(frames) == 2
    assert [joined(f[1:])[20:22] for f in frames] == [(1111).to_bytes(2, "big"),
                                                       (2222).to_bytes(2, "big")]


def test_a_run_stops_below_the_ipv4_length_limit() -> None:
    packets = _stream(60)  # 60 x 1388 bytes > 65,535
    frames = coalesce(packets)
    assert len(frames) == 2
    assert all(len(joined(f[1:])) <= 65535 for f in frames)
    assert sum(len(payload_of(joined(f[1:]))) for f in frames) == 60 * 1388
