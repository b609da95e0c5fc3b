"""Compression framing inside decrypted data payloads (docs/protocol.md §7.6).

trivpn never compresses; it only speaks the "stub" framings a 2.6 peer may be configured or
pushed to use, and refuses payloads that are really compressed (reason ``compressed``).
"""

from __future__ import annotations

from enum import Enum
from typing import NoReturn

from trivpn.protocol.errors import DecodeError

NO_COMPRESS_BYTE = 0xFA  # comp-lzo stub: prepended
LZO_COMPRESS_BYTE = 0x66
NO_COMPRESS_BYTE_SWAP = 0xFB  # compress stub: replaces the first byte, which moves to the end
LZ4_COMPRESS_BYTE = 0x69
V2_INDICATOR = 0x50  # compress stub-v2 escape
V2_UNCOMPRESSED = 0x00
V2_UNCOMPRESSED_ALT = 0x0A  # what the 2.6 stub-v2 encoder writes (docs/protocol.md §7.6); accepted
V2_COMPRESSED = frozenset({0x01, 0x02, 0x03})  # LZ4, LZO, Snappy after 0x50
_V1_COMPRESSED = frozenset({LZO_COMPRESS_BYTE, LZ4_COMPRESS_BYTE})


class Compression(Enum):
    NONE = "none"  # no compression context: no framing byte at all
    LZO_STUB = "comp-lzo no"
    STUB = "compress stub"  # also plain "compress"
    STUB_V2 = "compress stub-v2"


def frame(kind: Compression, payload: bytes) -> bytes:
    """Add the framing ``kind`` requires to an outgoing plaintext (empty stays empty)."""
    if kind is Compression.NONE or not payload:
        return payload
    if kind is Compression.LZO_STUB:
        return b"\xfa" + payload
    if kind is Compression.STUB:
        return b"\xfb" + payload[1:] + payload[:1]
    if payload[0] == V2_INDICATOR:
        return b"\x50\x00" + payload
    return payload


def unframe(kind: Compression, payload: bytes) -> bytes:
    """Strip the framing from a received plaintext.

    DecodeError reason ``compressed`` for really compressed packets (LZO, LZ4, LZ4-v2) and
    ``bad_compression_byte`` for any other unexpected framing byte (OpenVPN drops both).
    """
    if kind is Compression.NONE or not payload:
        return payload
    first = payload[0]
    if kind is Compression.LZO_STUB:
        if first == NO_COMPRESS_BYTE:
            return payload[1:]
        _reject(first, _V1_COMPRESSED)
    if kind is Compression.STUB:
        if first == NO_COMPRESS_BYTE_SWAP:
            return payload[-1:] + payload[1:-1] if len(payload) > 1 else b""
        _reject(first, _V1_COMPRESSED)
    if first != V2_INDICATOR:
        return payload
    if len(payload) == 1:
        return b""
    if payload[1] in (V2_UNCOMPRESSED, V2_UNCOMPRESSED_ALT):
        return payload[2:]
    _reject(payload[1], V2_COMPRESSED)


def _reject(byte: int, compressed: frozenset[int]) -> NoReturn:
    if byte in compressed:
        raise DecodeError("peer sent a compressed packet; compression is not supported",
                          "compression", reason="compressed")
    raise DecodeError(f"unexpected compression framing byte 0x{byte:02x}", "compression",
                      reason="bad_compression_byte")
