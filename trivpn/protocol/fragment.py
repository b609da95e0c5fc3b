"""OpenVPN's fragment layer (``fragment N [mtu]``; OpenVPN src/openvpn/fragment.c, fragment.h).

Inside every decrypted data-channel plaintext (before compression framing) a 4-byte big-endian
header: bits 0-1 the type (0 whole, 1 a fragment that is not the last, 2 the last fragment),
bits 2-9 the sequence id of the fragmented packet, bits 10-14 the fragment id (0..31), and,
in the last fragment only, bits 15-28 the fragment size divided by 4. Every fragment of a
packet but the last has that size; the receiver puts fragment ``n`` at offset ``n * size``.

Sans-IO: time is passed in. A bad header raises :class:`DecodeError` (the caller drops and
counts the packet); a partly reassembled packet expires after :data:`FRAG_TTL_SEC`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from trivpn.protocol.errors import DecodeError, ProtocolError

FRAG_WHOLE, FRAG_YES_NOTLAST, FRAG_YES_LAST, FRAG_TEST = 0, 1, 2, 3
HEADER_SIZE = 4
MAX_FRAGS = 32  # fragments per packet
N_SEQ_ID = 256
N_FRAG_BUF = 25  # packets reassembled at once (a window of sequence ids)
FRAG_TTL_SEC = 10.0
FRAG_WAKEUP_INTERVAL = 5.0
_SIZE_MASK = 0x3FFF
_MAP_FULL = 0xFFFFFFFF
_WHOLE_HEADER = b"\x00\x00\x00\x00"
_HEADER = struct.Struct(">I")


def max_fragment_size(fragment: int, *, aead: bool, hmac_len: int = 20, block_size: int = 16,
                      encap: int = 0) -> int:
    """Plaintext bytes per fragment for ``fragment N`` (OpenVPN mss.c frame_calculate_fragment):
    N minus the data packet's overhead (opcode and peer id 4, packet id 4, AEAD tag 16, or CBC
    IV and HMAC with block rounding) minus the 4-byte fragment header; ``encap`` is the outer
    IP+UDP header size for ``fragment N mtu``."""
    header = 4  # P_DATA_V2 opcode and peer id
    if aead:
        return fragment - encap - header - 4 - 16 - HEADER_SIZE
    target = fragment - encap - header - block_size - hmac_len
    return (target // block_size) * block_size - 1 - HEADER_SIZE - 4


def _optimal_size(length: int, max_size: int) -> int:
    """fragment.c optimal_fragment_size: as many fragments, but of similar sizes."""
    aligned = max_size & ~3
    div, mod = divmod(length, aligned)
    if div > 0 and 0 < mod < aligned * 3 // 4:
        return min(aligned, (max_size - (max_size - mod) // (div + 1) + 3) & ~3)
    return aligned


def _header(kind: int, seq_id: int, frag_id: int, size: int = 0) -> bytes:
    flags = kind | (seq_id & 0xFF) << 2 | (frag_id & 0x1F) << 10
    if kind == FRAG_YES_LAST:
        flags |= ((size >> 2) & _SIZE_MASK) << 15
    return _HEADER.pack(flags)


def _bad(what: str, reason: str = "bad_fragment") -> DecodeError:
    return DecodeError(f"fragment: {what}", "fragment header", reason=reason)


@dataclass(slots=True)
class _Slot:
    defined: bool = False
    size: int = 0
    map: int = 0
    stamp: float = 0.0
    buf: bytearray = field(default_factory=bytearray)


class FragmentLayer:
    """Both directions of one session's fragment layer.

    ``max_size``: plaintext bytes per fragment (:func:`max_fragment_size`); ``max_packet``:
    the largest packet reassembled; ``seq_id``: the first outgoing sequence id (OpenVPN picks
    it at random).
    """

    def __init__(self, max_size: int, *, max_packet: int, seq_id: int = 0) -> None:
        if max_size < 4:
            raise ValueError(f"fragment size {max_size} is too small")
        self.max_size = max_size
        self.max_packet = max_packet
        self._seq_out = seq_id % N_SEQ_ID
        self._slots = [_Slot() for _ in range(N_FRAG_BUF)]
        self._seq_in = 0  # highest sequence id seen (fragment_list.seq_id)
        self._index = 0  # its slot
        self._next_reap = 0.0
        # counters
        self.fragmented = 0  # packets sent in fragments
        self.fragments_out = 0
        self.reassembled = 0
        self.fragments_in = 0
        self.expired = 0

    # --- outgoing ------------------------------------------------------------------------
    def fragment(self, payload: bytes) -> list[bytes]:
        """The plaintexts to encrypt for ``payload``: one whole, or 2..32 fragments."""
        if len(payload) <= self.max_size:
            return [_WHOLE_HEADER + payload]
        size = _optimal_size(len(payload), self.max_size)
        if len(payload) > size * MAX_FRAGS:
            raise ProtocolError("too many fragments would be required to send the packet",
                                "fragment", reason="fragment_too_big")
        self._seq_out = seq = (self._seq_out + 1) % N_SEQ_ID
        out = []
        count = -(-len(payload) // size)
        for n in range(count):
            last = n == count - 1
            out.append(_header(FRAG_YES_LAST if last else FRAG_YES_NOTLAST, seq, n, size)
                       + payload[n * size:(n + 1) * size])
        self.fragmented += 1
        self.fragments_out += count
        return out

    # --- incoming ------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> bytes | None:
        """The packet carried by ``data``: itself if whole, the reassembled packet when
        ``data`` completed one, None while fragments are missing. DecodeError: drop it."""
        if now >= self._next_reap:
            self.expire(now)
        if len(data) < HEADER_SIZE:
            raise _bad("flags not found in packet")
        (flags,) = _HEADER.unpack_from(data)
        kind = flags & 3
        if kind == FRAG_WHOLE:
            if flags & (0xFF << 2 | 0x1F << 10):  # fragment.c: FRAG_SEQ_ID_MASK | FRAG_ID_MASK
                raise _bad("spurious FRAG_WHOLE flags")
            return data[HEADER_SIZE:]
        if kind == FRAG_TEST:
            raise _bad("FRAG_TEST not implemented")
        body = memoryview(data)[HEADER_SIZE:]
        seq_id = (flags >> 2) & 0xFF
        n = (flags >> 10) & 0x1F
        size = ((flags >> 15) & _SIZE_MASK) << 2 if kind == FRAG_YES_LAST else len(body)
        if size & 3:
            raise _bad("bad fragment size")
        slot = self._slot(seq_id)
        if not slot.defined or slot.size != size:
            slot.defined = True
            slot.size = size
            slot.map = 0
            slot.buf.clear()
        start = n * size
        end = start + len(body)
        if end > self.max_packet:
            slot.defined = False
            raise _bad("fragment buffer overflow", "fragment_too_big")
        buf = slot.buf
        if len(buf) < end:
            buf.extend(bytes(end - len(buf)))
        buf[start:end] = body
        slot.map |= ((_MAP_FULL << n) if kind == FRAG_YES_LAST else (1 << n)) & _MAP_FULL
        slot.stamp = now
        self.fragments_in += 1
        if slot.map == _MAP_FULL:
            slot.defined = False
            self.reassembled += 1
            return bytes(buf)
        return None

    def _slot(self, seq_id: int) -> _Slot:
        """fragment.c fragment_list_get_buf: a sliding window of N_FRAG_BUF sequence ids."""
        diff = (seq_id - self._seq_in) % N_SEQ_ID
        if diff >= N_SEQ_ID // 2:
            diff -= N_SEQ_ID
        if abs(diff) >= N_FRAG_BUF:
            for slot in self._slots:
                slot.defined = False
            self._index = 0
            self._seq_in = seq_id
            diff = 0
        while diff > 0:
            self._index = (self._index + 1) % N_FRAG_BUF
            self._slots[self._index].defined = False
            self._seq_in = (self._seq_in + 1) % N_SEQ_ID
            diff -= 1
        return self._slots[(self._index + diff) % N_FRAG_BUF]

    def expire(self, now: float) -> None:
        """fragment.c fragment_ttl_reap: forget packets whose last fragment came
        FRAG_TTL_SEC ago (OpenVPN looks every FRAG_WAKEUP_INTERVAL)."""
        self._next_reap = now + FRAG_WAKEUP_INTERVAL
        for slot in self._slots:
            if slot.defined and slot.stamp + FRAG_TTL_SEC <= now:
                slot.defined = False
                self.expired += 1
