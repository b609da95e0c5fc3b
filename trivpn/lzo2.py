"""LZO1X compression through the system's liblzo2 (ctypes), for ``allow-compression yes``.

OpenVPN compresses LZO with ``lzo1x_1_15_compress`` (OpenVPN src/openvpn/lzo.h); so does this.
Only used when the config asks trivpn to compress LZO packets it sends; decompression needs no
library (trivpn/protocol/lzo.py). Debian's liblzo2-2 is installed wherever openvpn is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_WORKMEM = 32768 * 8  # LZO1X_1_15_MEM_COMPRESS on 64-bit: 32768 * sizeof(lzo_voidp)


class LzoUnavailable(Exception):
    """liblzo2 could not be loaded."""


def lzo1x_compressor() -> Callable[[bytes], bytes]:
    """A function compressing one buffer with liblzo2's lzo1x_1_15_compress."""
    name = ctypes.util.find_library("lzo2") or "liblzo2.so.2"
    try:
        lib = ctypes.CDLL(name)
        fn = lib.lzo1x_1_15_compress
    except (OSError, AttributeError) as exc:
        raise LzoUnavailable(f"cannot load liblzo2 ({name}): {exc}") from exc
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                   ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
    fn.restype = ctypes.c_int
    work = ctypes.create_string_buffer(_WORKMEM)

    def compress(data: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(data) + len(data) // 16 + 64 + 3)
        out_len = ctypes.c_size_t(0)
        if fn(data, len(data), out, ctypes.byref(out_len), work) != 0:
            return data + b"\xff"  # never shorter: the caller sends it uncompressed
        return out.raw[:out_len.value]

    return compress
