"""TCP MSS clamping for packets crossing the tunnel (OpenVPN's ``mssfix``).

OpenVPN 2.6 clamps the MSS option of every TCP SYN inside the tunnel, in both directions, so
that full-size TCP segments fit into one outer datagram of at most ``mssfix`` bytes (default
``1492 mtu``: the whole outer IP packet). Without it a 1500-byte TUN MTU produces outer packets
above a 1500-byte path MTU: every full segment is IP-fragmented (and UDP GSO cannot be used).

:func:`clamp_mss` is on the data path: for anything but an IPv4 TCP SYN it returns the packet
object unchanged after a few byte comparisons. :func:`clamp_mss6` does the same for a TCP SYN
directly after the IPv6 header (next header 6); its callers pass the IPv4 limit minus 20, as
OpenVPN's mss.c mss_fixup_ipv6 does (the IPv6 header is 20 bytes longer). Extension headers
before TCP are left alone, as OpenVPN leaves them.
"""

from __future__ import annotations

IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8
TCP_HEADER = 20
TCP_FRAMING = 2  # OpenVPN over TCP: the 2-byte length before each packet
IPPROTO_TCP = 6
"""Byte 9 of an IPv4 header for TCP: callers on the data path may test ``packet[9]`` against
it (with ``len(packet) >= 40``) to skip the call to :func:`clamp_mss` for anything else."""
_SYN = 0x02
_OPT_EOL, _OPT_NOP, _OPT_MSS = 0, 1, 2


def data_overhead(cipher_aead: bool, *, peer_id: bool = True, hmac_len: int = 20) -> int:
    """Bytes a data packet adds to its plaintext (worst case for CBC: a full pad block)."""
    header = 4 if peer_id else 1
    if cipher_aead:
        return header + 4 + 16  # packet id, tag
    return header + hmac_len + 16 + 4 + 16  # HMAC, IV, packet id, padding up to a block


def mss_limit(mssfix: int, *, mtu_mode: bool, fixed: bool, overhead: int, transport: str,
              ipv6_link: bool = False, compression_bytes: int = 0) -> int | None:
    """The largest MSS for ``mssfix MAX [mtu|fixed]``; None when clamping is off (MAX 0).

    ``fixed``: MAX is the MSS plus the inner IPv4+TCP headers. ``mtu_mode``: MAX is the whole
    outer IP packet. Otherwise MAX is the outer payload (the encrypted OpenVPN packet).
    """
    if mssfix <= 0:
        return None
    inner = IPV4_HEADER + TCP_HEADER
    if fixed:
        return max(mssfix - inner, 1)
    budget = mssfix
    if mtu_mode:
        budget -= (IPV6_HEADER if ipv6_link else IPV4_HEADER)
        budget -= UDP_HEADER if transport == "udp" else TCP_HEADER
    if transport != "udp":
        budget -= TCP_FRAMING
    return max(budget - overhead - compression_bytes - inner, 1)


def _checksum_adjust(checksum: int, old: int, new: int) -> int:
    """RFC 1624 incremental update of a ones'-complement checksum for one 16-bit word."""
    total = (~checksum & 0xFFFF) + (~old & 0xFFFF) + new
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def clamp_mss(packet: bytes, limit: int) -> bytes:
    """``packet`` with the MSS option of an IPv4 TCP SYN lowered to ``limit``; any other
    packet (or a SYN already within the limit) is returned as the same object."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != IPPROTO_TCP:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + TCP_HEADER or not packet[ihl + 13] & _SYN:
        return packet
    if (packet[6] & 0x1F) or packet[7]:  # a fragment: no TCP header to trust
        return packet
    return _clamp_tcp(packet, ihl, limit)


def clamp_mss6(packet: bytes, limit: int) -> bytes:
    """``packet`` with the MSS option of an IPv6 TCP SYN (TCP right after the fixed header)
    lowered to ``limit``; anything else is returned as the same object."""
    if (len(packet) < IPV6_HEADER + TCP_HEADER or packet[0] >> 4 != 6
            or packet[6] != IPPROTO_TCP or not packet[IPV6_HEADER + 13] & _SYN):
        return packet
    return _clamp_tcp(packet, IPV6_HEADER, limit)


def _clamp_tcp(packet: bytes, ihl: int, limit: int) -> bytes:
    """Lower the MSS option of the TCP header at ``ihl`` (the TCP checksum covers no IP
    header field that changes, so one incremental update suffices for both families)."""
    doff = (packet[ihl + 12] >> 4) * 4
    end = ihl + doff
    if doff <= TCP_HEADER or end > len(packet):
        return packet
    pos = ihl + TCP_HEADER
    while pos < end - 1:
        kind = packet[pos]
        if kind == _OPT_EOL:
            break
        if kind == _OPT_NOP:
            pos += 1
            continue
        size = packet[pos + 1]
        if size < 2 or pos + size > end:
            break
        if kind == _OPT_MSS and size == 4:
            old = int.from_bytes(packet[pos + 2:pos + 4], "big")
            if old <= limit:
                return packet
            out = bytearray(packet)
            out[pos + 2:pos + 4] = limit.to_bytes(2, "big")
            check_at = ihl + 16
            old_sum = int.from_bytes(packet[check_at:check_at + 2], "big")
            out[check_at:check_at + 2] = _checksum_adjust(old_sum, old, limit).to_bytes(2, "big")
            return bytes(out)
        pos += size
    return packet


def clamp_ipv6_batch(packets: list[bytes], limit: int) -> list[bytes]:
    """``packets`` with every IPv6 TCP SYN's MSS lowered to ``limit`` (a client whose tunnel
    carries IPv6 runs this over each batch; IPv4-only tunnels never do)."""
    return [clamp_mss6(p, limit) if len(p) >= 60 and p[0] >> 4 == 6 and p[6] == IPPROTO_TCP
            else p for p in packets]
