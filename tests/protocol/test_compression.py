"""Compression stub framings (docs/protocol.md §7.6)."""

from __future__ import annotations

import random
from collections.abc import Callable

import lz4.block
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.lzo2 import LzoUnavailable, lzo1x_compressor
from trivpn.protocol.compression import Compression, Compressor, frame, unframe
from trivpn.protocol.errors import DecodeError
from trivpn.protocol.occ import PING_MAGIC

# §7.6 live: the ping plaintext as each framing puts it on the wire
PING_FRAMED = {
    Compression.NONE: PING_MAGIC,
    Compression.LZO_STUB: bytes.fromhex("fa 2a187bf3641eb4cb07ed2d0a981fc748"),
    Compression.STUB: bytes.fromhex("fb 187bf3641eb4cb07ed2d0a981fc748 2a"),
    Compression.STUB_V2: PING_MAGIC,
}


@pytest.mark.parametrize(("kind", "wire"), PING_FRAMED.items())
def test_ping_framing_matches_capture(kind: Compression, wire: bytes) -> None:
    assert frame(kind, PING_MAGIC) == wire
    assert unframe(kind, wire) == PING_MAGIC


def test_stub_v2_escapes_leading_0x50() -> None:
    assert frame(Compression.STUB_V2, b"\x50abc") == b"\x50\x00\x50abc"
    assert unframe(Compression.STUB_V2, b"\x50\x00\x50abc") == b"\x50abc"


def test_stub_v2_accepts_escape_byte_written_by_2_6_encoder() -> None:
    assert unframe(Compression.STUB_V2, b"\x50\x0a\x50abc") == b"\x50abc"


@pytest.mark.parametrize(
    ("kind", "wire"),
    [
        (Compression.LZO_STUB, b"\x66compressed"),
        (Compression.STUB, b"\x69compressed"),
        (Compression.STUB_V2, b"\x50\x01compressed"),
    ],
)
def test_really_compressed_packets_are_refused(kind: Compression, wire: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        unframe(kind, wire)
    assert info.value.reason == "compressed"


@pytest.mark.parametrize(
    ("kind", "wire"),
    [
        (Compression.LZO_STUB, b"\x45ipv4"),
        (Compression.STUB, b"\xfaabc"),
        (Compression.STUB_V2, b"\x50\x7fabc"),
    ],
)
def test_unknown_framing_byte_is_refused(kind: Compression, wire: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        unframe(kind, wire)
    assert info.value.reason == "bad_compression_byte"


@pytest.mark.parametrize("kind", list(Compression))
def test_empty_payload_stays_empty(kind: Compression) -> None:
    assert frame(kind, b"") == b""
    assert unframe(kind, b"") == b""


@pytest.mark.parametrize(("kind", "wire"), [(Compression.LZO_STUB, b"\xfa"),
                                            (Compression.STUB, b"\xfb"),
                                            (Compression.STUB_V2, b"\x50")])
def test_framing_byte_alone_is_empty_payload(kind: Compression, wire: bytes) -> None:
    assert unframe(kind, wire) == b""


@given(st.sampled_from(list(Compression)), st.binary(max_size=64))
def test_frame_then_unframe_round_trips(kind: Compression, payload: bytes) -> None:
    assert unframe(kind, frame(kind, payload)) == payload


# --- real compression (Compressor): OpenVPN src/openvpn/lzo.c, comp-lz4.c ------------------
COMPRESSIBLE = bytes.fromhex("4500") + b"\x00" * 18 + b"compressible text " * 60
REAL = (Compression.LZO, Compression.LZ4, Compression.LZ4_V2)


def _lzo_compress() -> Callable[[bytes], bytes]:
    try:
        return lzo1x_compressor()
    except LzoUnavailable:
        pytest.skip("liblzo2 is not installed (it comes with openvpn)")


def _sender(kind: Compression, **kw: object) -> Compressor:
    lzo = _lzo_compress() if kind is Compression.LZO else None
    return Compressor(kind, max_size=1600, lzo_compress=lzo, **kw)  # type: ignore[arg-type]


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize(("kind", "first"), [(Compression.LZO, b"\xfa"),
                                             (Compression.LZ4, b"\xfb"),
                                             (Compression.LZ4_V2, b"\x45")])
def test_asym_mode_sends_compressible_packets_uncompressed(kind: Compression,
                                                           first: bytes) -> None:
    wire = _sender(kind).frame(COMPRESSIBLE, 0.0)
    assert wire[:1] == first and len(wire) >= len(COMPRESSIBLE)


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize(("kind", "head"), [(Compression.LZO, b"\x66"),
                                            (Compression.LZ4, b"\x69"),
                                            (Compression.LZ4_V2, b"\x50\x01")])
def test_allow_compression_yes_compresses_and_the_peer_decompresses(kind: Compression,
                                                                   head: bytes) -> None:
    sender = _sender(kind, compress_outgoing=True)
    wire = sender.frame(COMPRESSIBLE, 0.0)
    assert wire.startswith(head) and len(wire) < len(COMPRESSIBLE) // 4
    receiver = Compressor(kind, max_size=1600)
    assert receiver.unframe(wire) == COMPRESSIBLE
    assert (receiver.decompressed_packets, receiver.post_decompress) == (1, len(COMPRESSIBLE))
    assert sender.compressed_packets == 1


@pytest.mark.parametrize("kind", REAL)
def test_short_or_incompressible_packets_go_uncompressed_even_with_compression(
        kind: Compression) -> None:
    sender = _sender(kind, compress_outgoing=True)
    receiver = Compressor(kind, max_size=1600)
    for payload in (COMPRESSIBLE[:99], random.Random(3).randbytes(1200), b"\x50" + bytes(20)):
        wire = sender.frame(payload, 0.0)
        assert receiver.unframe(wire) == payload
    assert sender.compressed_packets == receiver.decompressed_packets == 0


def test_lz4_v1_framing_swaps_the_first_byte_of_the_compressed_block() -> None:
    block = lz4.block.compress(COMPRESSIBLE, store_size=False)
    wire = b"\x69" + block[1:] + block[:1]  # comp-lz4.c lz4_compress: head byte moved to tail
    assert Compressor(Compression.LZ4, max_size=1600).unframe(wire) == COMPRESSIBLE


@pytest.mark.directive("comp-noadapt")
def test_adaptive_lzo_stops_compressing_after_a_sample_that_saved_too_little() -> None:
    noise = random.Random(5).randbytes(1200)
    sender = _sender(Compression.LZO, compress_outgoing=True, adaptive=True)
    for t in (0.0, 0.5, 1.0, 1.5):  # the first 2 s sample: incompressible traffic
        sender.frame(noise, t)
    tried = sender.pre_compress
    assert tried > 0
    assert sender.frame(COMPRESSIBLE, 2.0)[:1] == b"\xfa"  # off for 60 s
    assert sender.frame(COMPRESSIBLE, 61.0)[:1] == b"\xfa"
    assert sender.pre_compress == tried
    assert sender.frame(COMPRESSIBLE, 62.5)[:1] == b"\x66"  # back on after AC_OFF_SEC
    # comp-noadapt (adaptive=False) keeps compressing whatever the sample said
    steady = _sender(Compression.LZO, compress_outgoing=True, adaptive=False)
    for t in (0.0, 0.5, 1.0, 1.5):
        steady.frame(noise, t)
    assert steady.frame(COMPRESSIBLE, 2.0)[:1] == b"\x66"


@pytest.mark.parametrize(("kind", "wire", "reason"), [
    (Compression.LZO, b"\x66\x00\x00\x00", "bad_lzo"),
    (Compression.LZO, b"\x69abc", "bad_compression_byte"),
    (Compression.LZ4, b"\x69\xff\xff\xff\xff", "bad_lz4"),
    (Compression.LZ4, b"\xfaabc", "bad_compression_byte"),
    (Compression.LZ4_V2, b"\x50\x01\xff\xff\xff", "bad_lz4"),
    (Compression.LZ4_V2, b"\x50\x02abc", "bad_compression_byte"),
    (Compression.LZ4_V2, b"\x50", "bad_compression_byte"),
])
def test_bad_compressed_packets_raise_a_decode_error_with_a_reason(
        kind: Compression, wire: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        Compressor(kind, max_size=1600).unframe(wire)
    assert info.value.reason == reason


@pytest.mark.parametrize("kind", REAL)
def test_decompressed_size_is_capped(kind: Compression) -> None:
    wire = _sender(kind, compress_outgoing=True).frame(b"\x45" + bytes(3000), 0.0)
    with pytest.raises(DecodeError) as info:
        Compressor(kind, max_size=1600).unframe(wire)
    assert info.value.reason in ("lzo_too_long", "bad_lz4")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(REAL), st.binary(max_size=200))
def test_arbitrary_payloads_unframe_or_raise_decode_error(kind: Compression,
                                                          data: bytes) -> None:
    try:
        out = Compressor(kind, max_size=1600).unframe(data)
    except DecodeError:
        return
    assert len(out) <= 1600
