"""OpenVPN packet framing over a TCP stream.

On TCP every OpenVPN packet (control or data) is preceded by its length as an unsigned 16-bit
big-endian integer. A length of zero or one larger than the receiver's buffer is fatal for the
connection: OpenVPN logs "Bad encapsulated packet length from peer" and restarts, because the
stream can no longer be resynchronised. :class:`StreamDeframer` raises :class:`DecodeError`
and stays failed; the caller must tear the connection down.
"""

from __future__ import annotations

import struct

from trivpn.protocol.errors import DecodeError, ProtocolError

LENGTH_BYTES = 2
MAX_FRAMED = 0xFFFF
"""The largest packet the 16-bit length prefix can describe."""

_LENGTH = struct.Struct("!H")


def frame(packet: bytes) -> bytes:
    """Prefix ``packet`` with its uint16 big-endian length.

    Raises :class:`ProtocolError` (reason ``too_large``) for packets that cannot be framed,
    and for empty ones, which the peer would treat as a fatal framing error.
    """
    size = len(packet)
    if size == 0:
        raise ProtocolError("cannot frame an empty packet", "tcp framing", reason="empty")
    if size > MAX_FRAMED:
        raise ProtocolError(f"packet of {size} bytes exceeds the {MAX_FRAMED}-byte frame limit",
                            "tcp framing", reason="too_large")
    return _LENGTH.pack(size) + packet


class StreamDeframer:
    """Cut a TCP byte stream into OpenVPN packets.

    ``max_packet`` is the largest packet accepted (OpenVPN: its receive buffer size); the
    runtime should pass a bound derived from the MTU settings. Once :meth:`feed` has raised,
    every later call raises the same error: a desynchronised stream never yields packets again.
    """

    __slots__ = ("_base", "_buffer", "_failed", "_max_packet", "_offset")

    def __init__(self, max_packet: int = MAX_FRAMED) -> None:
        if not 1 <= max_packet <= MAX_FRAMED:
            raise ValueError(f"max_packet must be in 1..{MAX_FRAMED}, got {max_packet}")
        self._max_packet = max_packet
        self._buffer = bytearray()
        self._offset = 0
        self._base = 0  # stream offset of _buffer[0]
        self._failed: DecodeError | None = None

    @property
    def max_packet(self) -> int:
        return self._max_packet

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a complete packet."""
        return len(self._buffer) - self._offset

    @property
    def announced(self) -> int | None:
        """The length prefix of the incomplete packet at the head of the buffer (None while
        fewer than two bytes of it are in)."""
        if len(self._buffer) - self._offset < LENGTH_BYTES:
            return None
        (size,) = _LENGTH.unpack_from(self._buffer, self._offset)
        return int(size)

    def feed(self, data: bytes | bytearray) -> list[bytes]:
        """Add received bytes; return every packet completed by them, in order.

        On a bad length this raises, and packets completed earlier in the same ``data`` are
        not returned: the connection is being torn down anyway.
        """
        if self._failed is not None:
            raise self._failed
        buf = self._buffer
        buf += data
        packets: list[bytes] = []
        pos = self._offset
        end = len(buf)
        while end - pos >= LENGTH_BYTES:
            (size,) = _LENGTH.unpack_from(buf, pos)
            if size == 0 or size > self._max_packet:
                self._failed = DecodeError(
                    f"bad encapsulated packet length {size} from peer "
                    f"(allowed 1..{self._max_packet})",
                    f"tcp stream offset {self._base + pos}",
                    reason="bad_length",
                )
                raise self._failed
            start = pos + LENGTH_BYTES
            if end - start < size:
                break
            packets.append(bytes(buf[start:start + size]))
            pos = start + size
        # Compact: drop consumed bytes once they dominate the buffer, so that a long-lived
        # stream does not grow and the common "all consumed" case costs nothing.
        if pos == end:
            buf.clear()
            self._base += pos
            pos = 0
        elif pos > 65536 or pos > (end >> 1):
            del buf[:pos]
            self._base += pos
            pos = 0
        self._offset = pos
        return packets
