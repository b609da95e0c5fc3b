"""OpenVPN's fragment layer (OpenVPN src/openvpn/fragment.c): bytes in, packets out."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.protocol.errors import DecodeError, ProtocolError
from trivpn.protocol.fragment import (
    FRAG_TTL_SEC,
    FragmentLayer,
    max_fragment_size,
)

PACKET = bytes(range(256)) * 5 + b"tail"  # 1284 bytes


def _layer(max_size: int = 472, seq_id: int = 0) -> FragmentLayer:
    return FragmentLayer(max_size, max_packet=1600, seq_id=seq_id)


def test_small_packet_goes_whole_with_a_zero_header() -> None:
    assert _layer().fragment(b"\x45abc") == [b"\x00\x00\x00\x00\x45abc"]
    assert _layer().receive(b"\x00\x00\x00\x00\x45abc", 0.0) == b"\x45abc"


def test_large_packet_is_split_with_openvpn_headers() -> None:
    frags = _layer(472, seq_id=9).fragment(PACKET)
    assert len(frags) == 3 and all(len(f) <= 472 + 4 for f in frags)
    heads = [struct.unpack(">I", f[:4])[0] for f in frags]
    # type, sequence id (incremented first: 10), fragment id; size/4 in the last one only
    assert [h & 3 for h in heads] == [1, 1, 2]
    assert {(h >> 2) & 0xFF for h in heads} == {10}
    assert [(h >> 10) & 0x1F for h in heads] == [0, 1, 2]
    size = ((heads[2] >> 15) & 0x3FFF) << 2
    assert heads[0] >> 15 == 0 and len(frags[0]) - 4 == size
    assert b"".join(f[4:] for f in frags) == PACKET


def test_fragment_sizes_are_balanced_as_openvpn_does() -> None:
    # fragment.c optimal_fragment_size: 1284 bytes, at most 472 each: 3 of (472 - 132 // 3 + 3) & ~3
    frags = _layer(472).fragment(PACKET)
    assert [len(f) - 4 for f in frags] == [428, 428, 428]


def test_fragments_reassemble_in_any_order() -> None:
    frags = _layer().fragment(PACKET)
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        rx = _layer()
        results = [rx.receive(frags[i], 1.0) for i in order]
        assert results[:-1] == [None, None] and results[-1] == PACKET
        assert rx.reassembled == 1


def test_interleaved_packets_reassemble_separately() -> None:
    tx = _layer()
    a, b = tx.fragment(PACKET), tx.fragment(PACKET[::-1])
    rx = _layer()
    got = [rx.receive(x, 0.0) for x in (a[0], b[0], b[1], a[1], b[2], a[2])]
    assert [g for g in got if g is not None] == [PACKET[::-1], PACKET]


def test_lost_fragment_expires_after_the_ttl() -> None:
    frags = _layer().fragment(PACKET)
    rx = _layer()
    assert rx.receive(frags[0], 100.0) is None
    assert rx.receive(frags[1], 100.0) is None
    rx.expire(100.0 + FRAG_TTL_SEC)
    assert rx.expired == 1
    # the late last fragment no longer completes anything
    assert rx.receive(frags[2], 100.0 + FRAG_TTL_SEC) is None


def test_expiry_runs_when_packets_arrive_later() -> None:
    frags = _layer().fragment(PACKET)
    rx = _layer()
    assert rx.receive(frags[0], 0.0) is None
    assert rx.receive(b"\x00\x00\x00\x00hello", 20.0) == b"hello"
    assert rx.expired == 1


def test_a_retransmitted_duplicate_fragment_is_harmless() -> None:
    frags = _layer().fragment(PACKET)
    rx = _layer()
    assert rx.receive(frags[0], 0.0) is None
    assert rx.receive(frags[0], 0.0) is None
    assert rx.receive(frags[1], 0.0) is None
    assert rx.receive(frags[2], 0.0) == PACKET


def test_sequence_ids_wrap_around() -> None:
    tx, rx = _layer(seq_id=254), _layer()
    for _ in range(5):
        out = [rx.receive(f, 0.0) for f in tx.fragment(PACKET)]
        assert out[-1] == PACKET


@pytest.mark.parametrize(("data", "what"), [
    (b"\x00\x00", "flags not found"),
    (struct.pack(">I", 0 | 5 << 2) + b"x", "spurious FRAG_WHOLE"),
    (struct.pack(">I", 3) + b"x", "FRAG_TEST"),
    (struct.pack(">I", 1) + b"abc", "bad fragment size"),  # not a multiple of 4
    (struct.pack(">I", 2 | 31 << 10 | (1000 >> 2) << 15) + b"abcd", "overflow"),
])
def test_bad_headers_raise_decode_error(data: bytes, what: str) -> None:
    with pytest.raises(DecodeError) as info:
        _layer().receive(data, 0.0)
    assert what in str(info.value)


def test_packet_needing_more_than_32_fragments_is_refused() -> None:
    with pytest.raises(ProtocolError) as info:
        FragmentLayer(68, max_packet=9000).fragment(bytes(68 * 33))
    assert info.value.reason == "fragment_too_big"


@pytest.mark.parametrize(("fragment", "aead", "expected"), [
    (500, True, 472),  # 500 - (4 opcode/peer id + 4 packet id + 16 tag) - 4
    (1300, True, 1272),
    (500, False, 439),  # CBC, SHA1: round_down(500-4-16-20, 16) - 1 - 4 (header) - 4 (id)
])
def test_max_fragment_size_follows_openvpn(fragment: int, aead: bool, expected: int) -> None:
    assert max_fragment_size(fragment, aead=aead) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=600), max_size=8), st.randoms())
def test_arbitrary_input_never_crashes(chunks: list[bytes], rng: random.Random) -> None:
    rx = _layer()
    for i, chunk in enumerate(chunks):
        try:
            out = rx.receive(chunk, float(i))
        except DecodeError:
            continue
        assert out is None or len(out) <= 1600


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=1500), st.integers(68, 1400), st.randoms())
def test_any_packet_round_trips_in_any_order(packet: bytes, size: int,
                                             rng: random.Random) -> None:
    frags = FragmentLayer(size, max_packet=1600).fragment(packet)
    rng.shuffle(frags)
    rx = FragmentLayer(size, max_packet=1600)
    out = [rx.receive(f, 0.0) for f in frags]
    assert out[-1] == packet and all(o is None for o in out[:-1])
