"""``block-ipv6`` on a client: IPv6 packets read from the TUN are not sent through the tunnel
but answered with an ICMPv6 "destination unreachable, no route" (type 1, code 0), as OpenVPN's
forward.c ipv6_send_icmp_unreachable builds it:

* version, traffic class, flow label and hop limit copied from the packet; destination its
  source; source the tunnel's IPv6 peer (``ifconfig-ipv6`` REMOTE) or ``fe80::7`` without one;
* as much of the packet as fits in min(1280, tun-mtu - 48) bytes (at least 64) after the
  8-byte ICMPv6 header.

Pure functions over bytes, run only when block-ipv6 is in effect.
"""

from __future__ import annotations

import ipaddress

IPV6_HEADER = 40
ICMP6_HEADER = 8
NEXT_HEADER_ICMPV6 = 58
DEST_UNREACHABLE, NO_ROUTE = 1, 0
MAX_ICMPV6LEN = 1280
FALLBACK_SOURCE = ipaddress.IPv6Address("fe80::7").packed


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF  # ones' complement sum of 16-bit words
    return ~(total or 0xFFFF) & 0xFFFF


def no_route_reply(packet: bytes, source: bytes, tun_mtu: int) -> bytes | None:
    """The ICMPv6 no-route answer to IPv6 ``packet`` (None for a runt or non-IPv6)."""
    if len(packet) < IPV6_HEADER or packet[0] >> 4 != 6:
        return None
    room = max(min(MAX_ICMPV6LEN, tun_mtu - IPV6_HEADER - ICMP6_HEADER), 64)
    payload = packet[:room]
    length = ICMP6_HEADER + len(payload)
    dst = packet[8:24]
    message = bytes((DEST_UNREACHABLE, NO_ROUTE, 0, 0, 0, 0, 0, 0)) + payload
    pseudo = source + dst + length.to_bytes(4, "big") + bytes((0, 0, 0, NEXT_HEADER_ICMPV6))
    csum = _checksum(pseudo + message)
    message = message[:2] + csum.to_bytes(2, "big") + message[4:]
    header = (packet[0:4] + length.to_bytes(2, "big") + bytes((NEXT_HEADER_ICMPV6, packet[7]))
              + source + dst)
    return header + message


def block_ipv6(packets: list[bytes], source: bytes, tun_mtu: int
               ) -> tuple[list[bytes], list[bytes]]:
    """Split a batch read from the TUN: (packets for the tunnel, ICMPv6 answers for the TUN).
    Every IPv6 packet is held back."""
    keep: list[bytes] = []
    answers: list[bytes] = []
    for packet in packets:
        if packet and packet[0] >> 4 == 6:
            reply = no_route_reply(packet, source, tun_mtu)
            if reply is not None:
                answers.append(reply)
        else:
            keep.append(packet)
    return keep, answers
