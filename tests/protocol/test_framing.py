"""TCP stream framing: uint16 big-endian length prefix per OpenVPN packet."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.errors import DecodeError, ProtocolError
from trivpn.protocol.framing import MAX_FRAMED, StreamDeframer, frame

packets_st = st.lists(st.binary(min_size=1, max_size=300), max_size=20)


def _chunk(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (b"\x38", b"\x00\x01\x38"),
        (b"ab" * 150, b"\x01\x2c" + b"ab" * 150),
        (b"\xff" * MAX_FRAMED, b"\xff\xff" + b"\xff" * MAX_FRAMED),
    ],
)
def test_frame_prefixes_big_endian_length(packet: bytes, expected: bytes) -> None:
    assert frame(packet) == expected


@pytest.mark.parametrize("packet", [b"", b"\x00" * (MAX_FRAMED + 1)])
def test_frame_rejects_unframeable_packets(packet: bytes) -> None:
    with pytest.raises(ProtocolError):
        frame(packet)


def test_deframer_returns_packets_in_order_from_one_chunk() -> None:
    stream = frame(b"one") + frame(b"two") + frame(b"three")
    assert StreamDeframer().feed(stream) == [b"one", b"two", b"three"]


def test_deframer_holds_partial_packet_until_complete() -> None:
    d = StreamDeframer()
    data = frame(b"hello")
    assert d.feed(data[:1]) == []
    assert d.feed(data[1:4]) == []
    assert d.pending == 4
    assert d.feed(data[4:]) == [b"hello"]
    assert d.pending == 0


@pytest.mark.parametrize(
    ("max_packet", "stream"),
    [
        (MAX_FRAMED, b"\x00\x00"),  # zero length
        (100, b"\x00\x65" + b"x" * 101),  # 101 > max
        (1500, b"\x05\xdd"),  # 1501 > max: fails before the body arrives
    ],
)
def test_deframer_rejects_bad_length(max_packet: int, stream: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        StreamDeframer(max_packet).feed(stream)
    assert info.value.reason == "bad_length"


def test_deframer_error_names_stream_offset() -> None:
    d = StreamDeframer(10)
    d.feed(frame(b"abc"))
    with pytest.raises(DecodeError) as info:
        d.feed(b"\x00\x00")
    assert "offset 5" in info.value.where


def test_deframer_stays_failed_after_bad_length() -> None:
    d = StreamDeframer()
    with pytest.raises(DecodeError):
        d.feed(b"\x00\x00")
    with pytest.raises(DecodeError):
        d.feed(frame(b"valid"))


def test_deframer_accepts_packet_of_exactly_max_size() -> None:
    assert StreamDeframer(4).feed(frame(b"abcd")) == [b"abcd"]


@pytest.mark.parametrize("max_packet", [0, MAX_FRAMED + 1])
def test_deframer_rejects_impossible_limit(max_packet: int) -> None:
    with pytest.raises(ValueError):
        StreamDeframer(max_packet)


@given(packets=packets_st, cuts=st.lists(st.integers(min_value=0), max_size=40))
def test_any_chunking_yields_the_same_packets(packets: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in packets)
    d = StreamDeframer(300)
    out: list[bytes] = []
    for chunk in _chunk(stream, cuts):
        out.extend(d.feed(chunk))
    assert out == packets
    assert d.pending == 0


@given(chunks=st.lists(st.binary(max_size=200), max_size=20),
       max_packet=st.integers(min_value=1, max_value=MAX_FRAMED))
def test_garbage_raises_only_protocol_errors(chunks: list[bytes], max_packet: int) -> None:
    d = StreamDeframer(max_packet)
    for chunk in chunks:
        try:
            packets = d.feed(chunk)
        except ProtocolError:
            return
        assert all(1 <= len(p) <= max_packet for p in packets)


def _announced(d: StreamDeframer) -> int | None:
    return d.announced  # a call, so that mypy does not carry narrowing across feeds


def test_deframer_announces_the_length_of_the_incomplete_packet_at_its_head():
    d = StreamDeframer()
    assert _announced(d) is None
    d.feed(b"\x05")
    assert _announced(d) is None  # one byte of the prefix only
    assert d.feed(b"\xdcabc") == []
    assert _announced(d) == 0x05DC
    d2 = StreamDeframer()
    assert d2.feed(frame(b"one") + b"\x00\x09ab") == [b"one"]
    assert _announced(d2) == 9  # the next packet's prefix once the first is returned
