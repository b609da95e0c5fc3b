"""LZO1X through the system's liblzo2 (ctypes): the library OpenVPN itself uses.

OpenVPN compresses with ``lzo1x_1_15_compress`` and decompresses with
``lzo1x_decompress_safe`` (OpenVPN src/openvpn/lzo.h); so does this. The compressor is used
only with ``allow-compression yes``. The decompressor is a faster stand-in for trivpn's own
(trivpn/protocol/lzo.py, used when liblzo2 is missing): same inputs, same outputs, same
errors (tests/protocol/test_lzo.py compares them). Debian's liblzo2-2 comes with openvpn.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

from trivpn.protocol.errors import DecodeError

_WORKMEM = 32768 * 8  # LZO1X_1_15_MEM_COMPRESS on 64-bit: 32768 * sizeof(lzo_voidp)
_LZO_E_OUTPUT_OVERRUN = -5
_SIGNATURE = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
              ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]


class LzoUnavailable(Exception):
    """liblzo2 could not be loaded."""


def _function(symbol: str) -> ctypes._NamedFuncPointer:
    name = ctypes.util.find_library("lzo2") or "liblzo2.so.2"
    try:
        fn = getattr(ctypes.CDLL(name), symbol)
    except (OSError, AttributeError) as exc:
        raise LzoUnavailable(f"cannot load liblzo2 ({name}): {exc}") from exc
    fn.argtypes = _SIGNATURE
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def lzo1x_compressor() -> Callable[[bytes], bytes]:
    """A function compressing one buffer with liblzo2's lzo1x_1_15_compress."""
    fn = _function("lzo1x_1_15_compress")
    work = ctypes.create_string_buffer(_WORKMEM)

    def compress(data: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(data) + len(data) // 16 + 64 + 3)
        out_len = ctypes.c_size_t(0)
        if fn(data, len(data), out, ctypes.byref(out_len), work) != 0:
            return data + b"\xff"  # never shorter: the caller sends it uncompressed
        return out.raw[:out_len.value]

    return compress


def lzo1x_decompressor() -> Callable[[bytes, int], bytes]:
    """A function decoding one LZO1X stream with liblzo2's lzo1x_decompress_safe, at most
    ``max_out`` bytes; DecodeError (reasons as trivpn/protocol/lzo.py) for bad input."""
    fn = _function("lzo1x_decompress_safe")

    def decompress(data: bytes, max_out: int) -> bytes:
        out = ctypes.create_string_buffer(max_out)
        out_len = ctypes.c_size_t(max_out)
        status = fn(data, len(data), out, ctypes.byref(out_len), None)
        if status == _LZO_E_OUTPUT_OVERRUN:
            raise DecodeError("decompressed packet too long", "lzo", reason="lzo_too_long")
        if status != 0:
            raise DecodeError(f"malformed LZO data (liblzo2 error {status})", "lzo",
                              reason="bad_lzo")
        return out.raw[:out_len.value]

    return decompress
