"""TUN offloads (``IFF_VNET_HDR``): the pure packet work, no I/O.

A TUN device opened with ``IFF_VNET_HDR`` prefixes every packet, in both directions, with a
10-byte ``struct virtio_net_hdr`` (little-endian on the hosts trivpn runs on)::

    u8 flags  u8 gso_type  u16 hdr_len  u16 gso_size  u16 csum_start  u16 csum_offset

With ``TUNSETOFFLOAD`` (``TUN_F_CSUM | TUN_F_TSO4``) the kernel's TCP stack hands the device
64 KiB *super-packets* (``gso_type`` TCPV4, one IP/TCP header for up to ~45 segments of
``gso_size`` payload bytes) and leaves checksums to us (``NEEDS_CSUM``: the field at
``csum_start + csum_offset`` holds the pseudo-header sum). Writing works the other way round:
one super-packet with ``NEEDS_CSUM`` runs the kernel's receive path once for many segments,
which is what removes the per-packet ``write()`` that bounded the server (see
docs/performance-notes.md).

The wire never sees any of this: OpenVPN carries one IP packet of at most ``tun-mtu`` bytes per
data packet, with a valid checksum, and its peers write them to a TUN without offloads. So:

* :func:`split_frame` turns what the device gave us into ordinary IP packets — segments a TSO
  super-packet (IP total length, IP id, TCP sequence number, flags and both checksums per
  segment) and completes a ``NEEDS_CSUM`` checksum on anything else.
* :func:`coalesce` turns a batch of decrypted IP packets into device frames: runs of in-order
  TCP/IPv4 segments of one flow become one super-packet (the same rules as the kernel's GRO:
  identical headers but for sequence number, length and IP id; only ACK/PSH flags; PSH or a
  short segment ends a run); every other packet is passed through with an empty header, so the
  kernel verifies its checksum as usual. Order within a flow is kept.

Checksums use the identity that the one's-complement sum of 16-bit big-endian words is
congruent to the whole buffer read as one big integer modulo 0xFFFF (2**16 ≡ 1), which lets
``int.from_bytes`` do the summing in C.

Coalesced super-packets are marked ``NEEDS_CSUM`` and carry only the pseudo-header sum: the
kernel treats them as locally checksummed and does not verify the segments' own checksums.
That is sound here because every such packet came out of an authenticated (AEAD or HMAC) data
channel packet: only the peer that holds the key could have corrupted it.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
PLAIN_HDR = bytes(VNET_HDR_LEN)
"""The header of a packet with no offload: the kernel checks its checksums itself."""

F_NEEDS_CSUM = 1
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80

MAX_SUPER_PACKET = 65535
"""An IPv4 total length cannot say more."""

_TCP_FIN, _TCP_PSH, _TCP_ACK, _TCP_CWR = 0x01, 0x08, 0x10, 0x80
_PROTO_TCP = 6
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")


class OffloadError(ValueError):
    """A frame from the device that cannot be taken apart (the caller drops and counts it)."""


def ones_sum(data: bytes | memoryview) -> int:
    """The one's-complement sum of ``data`` (16-bit big-endian words, odd tail zero-padded),
    modulo 0xFFFF. Only meaningful as a term of :func:`finish_checksum`."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return n % 0xFFFF


def finish_checksum(total: int) -> int:
    """The Internet checksum field for data whose :func:`ones_sum` terms add up to ``total``
    (``total`` must be 0 only if every summed byte was zero)."""
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF
    return ~folded & 0xFFFF


def internet_checksum(data: bytes | memoryview) -> int:
    """RFC 1071 checksum of ``data``."""
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    return finish_checksum(n)


def complete_checksum(packet: bytes, csum_start: int, csum_offset: int) -> bytes:
    """Fill in a ``NEEDS_CSUM`` checksum: the field at ``csum_start + csum_offset`` holds the
    pseudo-header sum; the checksum covers everything from ``csum_start`` on."""
    where = csum_start + csum_offset
    if where + 2 > len(packet) or csum_start < 0:
        raise OffloadError(f"checksum field at {where} outside a {len(packet)}-byte packet")
    csum = internet_checksum(memoryview(packet)[csum_start:])
    if csum == 0 and csum_offset == 6:  # UDP: zero means "no checksum"; send its twin
        csum = 0xFFFF
    out = bytearray(packet)
    out[where:where + 2] = csum.to_bytes(2, "big")
    return bytes(out)


def split_frame(frame: bytes) -> list[bytes]:
    """The IP packets in one frame read from an ``IFF_VNET_HDR`` TUN device.

    Raises :class:`OffloadError` for a frame that is too short, a GSO type that was not
    offered (only TCPV4 is), or headers that do not match the GSO description.
    """
    if len(frame) <= VNET_HDR_LEN:
        raise OffloadError(f"{len(frame)}-byte frame has no packet after the vnet header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            return [complete_checksum(packet, csum_start, csum_offset)]
        return [packet]
    if kind == GSO_TCPV4:
        return segment_tcp4(packet, gso_size)
    raise OffloadError(f"GSO type {gso_type:#x} was not offered to the kernel")


def segment_tcp4(packet: bytes, gso_size: int) -> list[bytes]:
    """Cut a TCP/IPv4 super-packet into segments of ``gso_size`` payload bytes, each a valid
    IP packet with its own total length, IP id (incremented), sequence number, flags (CWR on
    the first only, FIN/PSH on the last only) and checksums."""
    if len(packet) < 40 or packet[0] >> 4 != 4:
        raise OffloadError("TCPV4 super-packet is not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    if ihl < 20 or packet[9] != _PROTO_TCP or len(packet) < ihl + 20:
        raise OffloadError("TCPV4 super-packet does not carry TCP")
    thl = (packet[ihl + 12] >> 4) * 4
    hlen = ihl + thl
    if thl < 20 or len(packet) < hlen or gso_size <= 0:
        raise OffloadError("TCPV4 super-packet has a bad TCP header or segment size")
    payload = memoryview(packet)[hlen:]
    if len(payload) <= gso_size:  # nothing to cut; still needs its checksums
        return [_finish_tcp4(bytearray(packet), ihl, thl, _pseudo_addrs(packet), payload)]
    ip_id = int.from_bytes(packet[4:6], "big")
    seq = int.from_bytes(packet[ihl + 4:ihl + 8], "big")
    flags = packet[ihl + 13]
    addrs = _pseudo_addrs(packet)
    header = bytearray(packet[:hlen])
    segments: list[bytes] = []
    total = len(payload)
    first = True
    for off in range(0, total, gso_size):
        chunk = payload[off:off + gso_size]
        last = off + gso_size >= total
        hdr = bytearray(header)
        hdr[4:6] = ((ip_id + len(segments)) & 0xFFFF).to_bytes(2, "big")
        hdr[ihl + 4:ihl + 8] = ((seq + off) & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags
        if not first:
            f &= ~_TCP_CWR
        if not last:
            f &= ~(_TCP_FIN | _TCP_PSH)
        hdr[ihl + 13] = f
        segments.append(_finish_tcp4(hdr, ihl, thl, addrs, chunk))
        first = False
    return segments


def _pseudo_addrs(packet: bytes) -> int:
    return ones_sum(memoryview(packet)[12:20]) + _PROTO_TCP


def _finish_tcp4(hdr: bytearray, ihl: int, thl: int, addrs: int, payload: memoryview) -> bytes:
    """Set total length and both checksums in ``hdr`` (IP+TCP header, or the whole packet when
    ``hdr`` already holds the payload) and return the packet."""
    hlen = ihl + thl
    payload_len = len(payload)
    hdr[2:4] = (hlen + payload_len).to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    hdr[10:12] = internet_checksum(memoryview(hdr)[:ihl]).to_bytes(2, "big")
    hdr[ihl + 16:ihl + 18] = b"\0\0"
    head = ones_sum(memoryview(hdr)[ihl:hlen])
    body = ones_sum(payload)
    csum = finish_checksum(addrs + thl + payload_len + head + body)
    hdr[ihl + 16:ihl + 18] = csum.to_bytes(2, "big")
    if len(hdr) > hlen:
        return bytes(hdr)
    return b"".join((hdr, payload))


class _Run:
    """Consecutive segments of one TCP flow that will leave as one super-packet."""

    __slots__ = ("closed", "first", "gso_size", "next_seq", "parts", "psh", "sig", "size")

    def __init__(self, packet: bytes, payload_len: int, seq: int, closed: bool,
                 sig: tuple[object, ...]) -> None:
        self.first = packet
        self.parts: list[bytes | memoryview] = []
        self.gso_size = payload_len
        self.next_seq = (seq + payload_len) & 0xFFFFFFFF
        self.size = len(packet)
        self.psh = False
        self.closed = closed
        self.sig = sig


# What coalesce reads of an IPv4+TCP header: version/IHL, TOS, total length, (id), flags and
# fragment offset, TTL, protocol, (checksum), addresses and ports, sequence number, ack
# number, data offset, TCP flags, window.
_TCP4 = struct.Struct("!BBH2xBBBB2x12sI4sBB2s")


def coalesce(packets: Sequence[bytes]) -> list[list[bytes | memoryview]]:
    """Device frames for a batch of IP packets, each as a list of buffers to ``writev``.

    The first buffer of every frame is its vnet header; in-order TCP/IPv4 segments of one flow
    become one ``GSO_TCPV4`` frame, everything else is passed through as it came. Segments
    join a run only with the same TOS, DF, TTL, ack number, header length, window, urgent
    pointer and options as its first (the kernel's GRO rules).
    """
    frames: list[_Run | bytes] = []
    append = frames.append
    runs: dict[bytes, _Run] = {}
    unpack = _TCP4.unpack_from
    for packet in packets:
        n = len(packet)
        if n < 40:
            append(packet)
            continue
        vihl, tos, total, frag_hi, frag_lo, ttl, proto, key, seq, ack, off, flags, window = \
            unpack(packet)
        # TCP over IPv4 without IP options, not a fragment: a candidate.
        if vihl != 0x45 or proto != _PROTO_TCP or frag_hi & 0x3F or frag_lo:
            append(packet)
            continue
        thl = (off >> 4) << 2
        payload_len = n - 20 - thl
        if (flags & ~_TCP_PSH) != _TCP_ACK or payload_len <= 0 or thl < 20 or total != n:
            # SYN/FIN/RST/URG/ECN, pure ACKs, odd lengths: their own frame, and the flow's
            # run ends here so later segments cannot overtake this one.
            run = runs.pop(key, None)
            if run is not None:
                run.closed = True
            append(packet)
            continue
        sig = (tos, frag_hi, ttl, ack, off, window, packet[38:20 + thl])
        run = runs.get(key)
        if (run is not None and not run.closed and seq == run.next_seq
                and payload_len <= run.gso_size and run.size + payload_len <= MAX_SUPER_PACKET
                and sig == run.sig):
            run.parts.append(memoryview(packet)[20 + thl:])
            run.next_seq = (seq + payload_len) & 0xFFFFFFFF
            run.size += payload_len
            if flags & _TCP_PSH:
                run.psh = True
                run.closed = True
            elif payload_len < run.gso_size:
                run.closed = True
            continue
        run = _Run(packet, payload_len, seq, bool(flags & _TCP_PSH), sig)
        runs[key] = run
        append(run)
    return [_frame(item) for item in frames]


def _frame(item: _Run | bytes) -> list[bytes | memoryview]:
    if isinstance(item, bytes):
        return [PLAIN_HDR, item]
    first = item.first
    if not item.parts:
        return [PLAIN_HDR, first]
    thl = (first[32] >> 4) * 4
    hlen = 20 + thl
    hdr = bytearray(first[:hlen])
    total = item.size
    hdr[2:4] = total.to_bytes(2, "big")
    hdr[10:12] = b"\0\0"
    hdr[10:12] = internet_checksum(memoryview(hdr)[:20]).to_bytes(2, "big")
    if item.psh:
        hdr[33] |= _TCP_PSH
    # NEEDS_CSUM: the TCP checksum field holds the (uncomplemented) pseudo-header sum.
    pseudo = ones_sum(memoryview(hdr)[12:20]) + _PROTO_TCP + (total - 20)
    folded = pseudo % 0xFFFF
    hdr[36:38] = (folded or 0xFFFF).to_bytes(2, "big")
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, hlen, item.gso_size, 20, 16)
    return [vnet, bytes(hdr), memoryview(first)[hlen:], *item.parts]
