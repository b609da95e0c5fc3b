"""LZO1X decompression (decompression only), for ``comp-lzo`` / ``compress lzo`` peers.

OpenVPN compresses with liblzo2's ``lzo1x_1_15_compress`` and decompresses with
``lzo1x_decompress_safe`` (OpenVPN src/openvpn/lzo.h). Any LZO1X compressor's output is decoded
here; the stream format is the one liblzo2's ``lzo1x_d.ch`` reads. Every read and every
back-reference is bounds-checked: malformed input raises :class:`DecodeError` (reason
``bad_lzo``), and the output never grows past ``max_out`` bytes (reason ``lzo_too_long``).
"""

from __future__ import annotations

from trivpn.protocol.errors import DecodeError

_M2_MAX_OFFSET = 0x0800


def _bad(what: str) -> DecodeError:
    return DecodeError(f"malformed LZO data: {what}", "lzo", reason="bad_lzo")


def _too_long() -> DecodeError:
    return DecodeError("decompressed packet too long", "lzo", reason="lzo_too_long")


def lzo1x_decompress(src: bytes, max_out: int) -> bytes:  # noqa: PLR0912, PLR0915
    """Decode one complete LZO1X stream (ending with its end-of-stream marker)."""
    n = len(src)
    out = bytearray()
    ip = 0
    try:
        state = 0  # literals to copy after the current match (0..3), set by match_done
        if n and src[0] > 17:
            t = src[0] - 17
            ip = 1
            if t < 4:
                state = t
                t = -1  # go straight to "match_next"
            else:
                _literals(src, ip, t, out, max_out)
                ip += t
                t = -2  # go to "first_literal_run"
        else:
            t = -3  # start of the main loop
        while True:
            if t == -3:  # main loop: a literal run or a match
                t = src[ip]
                ip += 1
                if t < 16:
                    if t == 0:
                        while src[ip] == 0:
                            t += 255
                            ip += 1
                            if t > max_out:
                                raise _too_long()
                        t += 15 + src[ip]
                        ip += 1
                    t += 3
                    _literals(src, ip, t, out, max_out)
                    ip += t
                    t = -2
                # else t >= 16: a match, handled below
            if t == -2:  # first_literal_run: after a literal run, a short match may follow
                t = src[ip]
                ip += 1
                if t < 16:
                    dist = 1 + _M2_MAX_OFFSET + (t >> 2) + (src[ip] << 2)
                    ip += 1
                    _match(out, dist, 3, max_out)
                    state = src[ip - 2] & 3
                    t = -1
            if t == -1:  # match_next: 0..3 trailing literals, then the next match opcode
                if state == 0:
                    t = -3
                    continue
                _literals(src, ip, state, out, max_out)
                ip += state
                t = src[ip]
                ip += 1
            # a match opcode t (>= 0)
            if t >= 64:  # M2
                dist = 1 + ((t >> 2) & 7) + (src[ip] << 3)
                ip += 1
                length = (t >> 5) + 1
            elif t >= 32:  # M3
                t &= 31
                if t == 0:
                    while src[ip] == 0:
                        t += 255
                        ip += 1
                        if t > max_out:
                            raise _too_long()
                    t += 31 + src[ip]
                    ip += 1
                dist = 1 + (src[ip] >> 2) + (src[ip + 1] << 6)
                ip += 2
                length = t + 2
            elif t >= 16:  # M4 (also the end-of-stream marker)
                high = (t & 8) << 11
                t &= 7
                if t == 0:
                    while src[ip] == 0:
                        t += 255
                        ip += 1
                        if t > max_out:
                            raise _too_long()
                    t += 7 + src[ip]
                    ip += 1
                dist = high + (src[ip] >> 2) + (src[ip + 1] << 6)
                ip += 2
                if dist == 0:  # end of stream
                    if ip != n:
                        raise _bad("input not consumed")
                    return bytes(out)
                dist += 0x4000
                length = t + 2
            else:  # M1: a 2-byte match after a match
                dist = 1 + (t >> 2) + (src[ip] << 2)
                ip += 1
                length = 2
            _match(out, dist, length, max_out)
            state = src[ip - 2] & 3
            t = -1
    except IndexError:
        raise _bad("input overrun") from None


def _literals(src: bytes, ip: int, count: int, out: bytearray, max_out: int) -> None:
    if ip + count > len(src):
        raise _bad("input overrun")
    if len(out) + count > max_out:
        raise _too_long()
    out += src[ip:ip + count]


def _match(out: bytearray, dist: int, length: int, max_out: int) -> None:
    start = len(out) - dist
    if start < 0:
        raise _bad("lookbehind overrun")
    if len(out) + length > max_out:
        raise _too_long()
    if dist >= length:
        out += out[start:start + length]
    else:  # overlapping: the pattern repeats
        pattern = out[start:]
        out += (pattern * (length // dist + 1))[:length]
