"""The LZO1X decompressor against the real liblzo2 (the library OpenVPN compresses with)."""

from __future__ import annotations

import ctypes
import ctypes.util
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.lzo import lzo1x_decompress


def _liblzo2() -> ctypes.CDLL:
    try:
        return ctypes.CDLL(ctypes.util.find_library("lzo2") or "liblzo2.so.2")
    except OSError:
        pytest.skip("liblzo2 is not installed (it comes with openvpn)")


@pytest.fixture(scope="module")
def compress() -> object:
    lib = _liblzo2()
    work = ctypes.create_string_buffer(1 << 20)  # enough for lzo1x_999 too

    def run(data: bytes, fn: str = "lzo1x_1_15_compress") -> bytes:
        out = ctypes.create_string_buffer(len(data) + len(data) // 16 + 64 + 3)
        size = ctypes.c_size_t(0)
        f = getattr(lib, fn)
        f.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                      ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
        assert f(data, len(data), out, ctypes.byref(size), work) == 0
        return out.raw[:size.value]

    return run


def _samples(rng: random.Random, count: int) -> list[bytes]:
    out = []
    for i in range(count):
        n = rng.randint(0, 3000)
        kind = i % 4
        if kind == 0:
            out.append(rng.randbytes(n))
        elif kind == 1:
            out.append(bytes(rng.choice(b"ab") for _ in range(n)))
        elif kind == 2:
            out.append(bytes(n))
        else:  # an IP-like packet: header, text, random tail
            out.append(rng.randbytes(20) + (b"GET /index.html HTTP/1.1\r\n" * (n // 26))
                       + rng.randbytes(rng.randint(0, 60)))
    return out


@pytest.mark.parametrize("fn", ["lzo1x_1_15_compress", "lzo1x_1_compress", "lzo1x_999_compress"])
def test_decompresses_what_liblzo2_compresses(compress, fn: str) -> None:
    for data in _samples(random.Random(fn), 400):
        assert lzo1x_decompress(compress(data, fn), 65536) == data


def test_decompresses_long_runs_and_long_matches(compress) -> None:
    data = b"\x00" * 5000 + bytes(range(256)) * 20 + b"x" * 1000 + random.Random(1).randbytes(300)
    assert lzo1x_decompress(compress(data), 65536) == data


def test_output_is_capped_at_the_max_size(compress) -> None:
    packed = compress(b"a" * 2000)
    with pytest.raises(DecodeError) as info:
        lzo1x_decompress(packed, 1500)
    assert info.value.reason == "lzo_too_long"


@pytest.mark.parametrize("bad", [
    b"", b"\x00", b"\x11", b"\x11\x00", b"\x20\x00\x00\x11\x00\x00",  # match before any output
    b"\x15abcd\x11\x00\x00junk",  # trailing bytes after the end marker
    b"\x00\x00\x00\x00",  # literal-run length bytes with nothing after them
])
def test_malformed_input_raises_decode_error(bad: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        lzo1x_decompress(bad, 1500)
    assert info.value.reason in ("bad_lzo", "lzo_too_long")


def test_truncated_and_corrupted_streams_never_crash(compress) -> None:
    rng = random.Random(7)
    for data in _samples(rng, 200):
        packed = bytearray(compress(data))
        cut = bytes(packed[:rng.randint(0, len(packed))])
        for candidate in (cut, _flip(packed, rng)):
            try:
                out = lzo1x_decompress(candidate, 1600)
            except DecodeError:
                continue
            assert len(out) <= 1600


def _flip(packed: bytearray, rng: random.Random) -> bytes:
    copy = bytearray(packed)
    for _ in range(rng.randint(1, 4)):
        if copy:
            copy[rng.randrange(len(copy))] = rng.randrange(256)
    return bytes(copy)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    try:
        out = lzo1x_decompress(data, 1600)
    except DecodeError:
        return
    assert len(out) <= 1600


def test_liblzo2_decoder_and_trivpns_agree_on_good_and_bad_streams(compress) -> None:
    from trivpn.lzo2 import lzo1x_decompressor

    theirs = lzo1x_decompressor()
    rng = random.Random(11)
    for data in _samples(rng, 200):
        packed = compress(data)
        for candidate in (packed, _flip(bytearray(packed), rng),
                          packed[:rng.randint(0, len(packed))]):
            outcomes: list[bytes | None] = []
            for decoder in (theirs, lzo1x_decompress):
                try:
                    outcomes.append(decoder(candidate, 4000))
                except DecodeError:
                    outcomes.append(None)
            assert outcomes[0] == outcomes[1], candidate.hex()
