"""Compression stub framings (docs/protocol.md §7.6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.compression import Compression, frame, unframe
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
