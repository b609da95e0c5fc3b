"""Compression framing inside decrypted data payloads (docs/protocol.md §7.6).

The stub framings (``frame``/``unframe``) add or strip a framing byte only and refuse
really compressed payloads (reason ``compressed``). :class:`Compressor` speaks the real ones
as OpenVPN 2.6 does (OpenVPN src/openvpn/lzo.c, comp-lz4.c): it decompresses LZO and LZ4 from
the peer, and compresses outgoing packets only when ``compress_outgoing`` is set
(``allow-compression yes``); otherwise it sends them uncompressed with the "not compressed"
framing, which is what 2.6 does in its default ``asym`` mode.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import NoReturn

import lz4.block

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.lzo import lzo1x_decompress

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
    LZO = "comp-lzo yes"  # also comp-lzo adaptive, compress lzo: 0x66 / 0xFA prepended
    LZ4 = "compress lz4"  # 0x69 / 0xFB replacing the first byte, which moves to the end
    LZ4_V2 = "compress lz4-v2"  # 0x50 0x01 / the stub-v2 escape


STUBS = frozenset({Compression.NONE, Compression.LZO_STUB, Compression.STUB,
                   Compression.STUB_V2})
COMPRESS_THRESHOLD = 100  # OpenVPN comp.h: shorter packets are never compressed
# lzo.h adaptive compression: sample for 2 s; when fewer than 5 % of >1000 bytes were saved,
# stop compressing for 60 s
AC_SAMP_SEC = 2.0
AC_MIN_BYTES = 1000
AC_SAVE_PCT = 5
AC_OFF_SEC = 60.0


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


def _bad_byte(byte: int, algo: str) -> NoReturn:
    raise DecodeError(f"bad {algo} decompression header byte 0x{byte:02x}", "compression",
                      reason="bad_compression_byte")


class Compressor:
    """The compression context of one session (sans-IO; time is passed in).

    ``max_size`` caps every decompressed packet (reason ``decompressed_too_long``).
    ``lzo_compress`` is the LZO1X compressor to use when ``compress_outgoing`` (the runtime
    passes liblzo2's); without it LZO packets go out uncompressed with the ``0xFA`` byte, which
    every LZO peer reads. ``lzo_decompress`` replaces trivpn's own LZO1X decoder (the runtime
    passes liblzo2's, which is faster). Counters follow OpenVPN's (comp_print_stats).
    """

    def __init__(self, kind: Compression, *, max_size: int, compress_outgoing: bool = False,
                 adaptive: bool = False,
                 lzo_compress: Callable[[bytes], bytes] | None = None,
                 lzo_decompress: Callable[[bytes, int], bytes] | None = None) -> None:
        self.kind = kind
        self.max_size = max_size
        self.compress_outgoing = compress_outgoing
        self.adaptive = adaptive
        self._lzo_compress = lzo_compress
        self._lzo_decompress = lzo_decompress or lzo1x_decompress
        self.pre_compress = 0
        self.post_compress = 0
        self.pre_decompress = 0
        self.post_decompress = 0
        self.compressed_packets = 0
        self.decompressed_packets = 0
        # adaptive state (lzo.c lzo_adaptive_compress_test)
        self._ac_off = False
        self._ac_next = 0.0
        self._ac_total = 0
        self._ac_comp = 0

    # --- outgoing ------------------------------------------------------------------------
    def frame(self, payload: bytes, now: float) -> bytes:
        kind = self.kind
        if kind in STUBS:
            return frame(kind, payload)
        if not payload:
            return payload
        if kind is Compression.LZO:
            return self._frame_lzo(payload, now)
        packed = self._lz4(payload)
        if kind is Compression.LZ4:
            if packed is not None and len(packed) < len(payload):
                return b"\x69" + packed[1:] + packed[:1]
            return b"\xfb" + payload[1:] + payload[:1]
        if packed is not None and len(packed) + 2 < len(payload):
            return b"\x50\x01" + packed
        if payload[0] == V2_INDICATOR:
            return b"\x50\x00" + payload
        return payload

    def _lz4(self, payload: bytes) -> bytes | None:
        if not self.compress_outgoing or len(payload) < COMPRESS_THRESHOLD:
            return None
        packed: bytes = lz4.block.compress(payload, store_size=False)
        self.pre_compress += len(payload)
        self.post_compress += len(packed)
        self.compressed_packets += len(packed) < len(payload)
        return packed

    def _frame_lzo(self, payload: bytes, now: float) -> bytes:
        compress = self._lzo_compress
        if (compress is None or not self.compress_outgoing or len(payload) < COMPRESS_THRESHOLD
                or not self._adaptive_allows(now)):
            return b"\xfa" + payload
        packed = compress(payload)
        self.pre_compress += len(payload)
        self.post_compress += len(packed)
        if self.adaptive:
            self._ac_total += len(payload)
            self._ac_comp += len(packed)
        if len(packed) < len(payload):
            self.compressed_packets += 1
            return b"\x66" + packed
        return b"\xfa" + payload

    def _adaptive_allows(self, now: float) -> bool:
        """lzo.c lzo_adaptive_compress_test: whether to try compressing now."""
        if not self.adaptive:
            return True
        if now >= self._ac_next:
            if not self._ac_off:
                total, saved = self._ac_total, self._ac_total - self._ac_comp
                if total > AC_MIN_BYTES and saved < total // (100 // AC_SAVE_PCT):
                    self._ac_off = True
                    self._ac_next = now + AC_OFF_SEC
                else:
                    self._ac_next = now + AC_SAMP_SEC
            else:
                self._ac_off = False
                self._ac_next = now + AC_SAMP_SEC
            self._ac_total = self._ac_comp = 0
        return not self._ac_off

    # --- incoming ------------------------------------------------------------------------
    def unframe(self, payload: bytes) -> bytes:
        """The plaintext inside a received payload; DecodeError for a packet to drop."""
        kind = self.kind
        if kind in STUBS:
            return unframe(kind, payload)
        if not payload:
            return payload
        first = payload[0]
        if kind is Compression.LZO:
            if first == NO_COMPRESS_BYTE:
                return payload[1:]
            if first != LZO_COMPRESS_BYTE:
                _bad_byte(first, "LZO")
            return self._count(payload, self._lzo_decompress(payload[1:], self.max_size))
        if kind is Compression.LZ4:
            body = payload[-1:] + payload[1:-1] if len(payload) > 1 else b""
            if first == NO_COMPRESS_BYTE_SWAP:
                return body
            if first != LZ4_COMPRESS_BYTE:
                _bad_byte(first, "LZ4")
            return self._count(payload, self._lz4_decompress(body))
        if first != V2_INDICATOR:
            return payload
        if len(payload) < 2:
            raise DecodeError("LZ4v2 packet too short", "compression",
                              reason="bad_compression_byte")
        if payload[1] == V2_UNCOMPRESSED:
            return payload[2:]
        if payload[1] != 0x01:
            _bad_byte(payload[1], "LZ4v2")
        return self._count(payload, self._lz4_decompress(payload[2:]))

    def _lz4_decompress(self, body: bytes) -> bytes:
        try:
            out: bytes = lz4.block.decompress(body, uncompressed_size=self.max_size)
        except lz4.block.LZ4BlockError:
            raise DecodeError("malformed LZ4 data", "lz4", reason="bad_lz4") from None
        if not out:
            raise DecodeError("empty LZ4 block", "lz4", reason="bad_lz4")
        return out

    def _count(self, payload: bytes, out: bytes) -> bytes:
        self.decompressed_packets += 1
        self.pre_decompress += len(payload)
        self.post_decompress += len(out)
        return out
