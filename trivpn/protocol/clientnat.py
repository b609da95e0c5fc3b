"""``client-nat snat|dnat NETWORK NETMASK ALIAS``: one-to-one address rewriting of IPv4
packets between the device and the tunnel (OpenVPN clinat.c, client_nat_transform()).

Each rule maps NETWORK/NETMASK to ALIAS (the host bits are kept). Going out (device →
tunnel), ``snat`` rewrites a source inside NETWORK to ALIAS and ``dnat`` a destination;
coming in (tunnel → device) the reverse: ``snat`` rewrites a destination inside ALIAS back to
NETWORK, ``dnat`` a source. The first matching rule wins for each of the two addresses. The IP
header checksum and the TCP/UDP checksum (its pseudo-header holds the addresses) are adjusted.
Other packets (IPv6, too short) pass unchanged.

Differences from OpenVPN, both on packets it would damage: the TCP/UDP header is found from the
header length (OpenVPN assumes 20 bytes), and a UDP checksum of 0 (none) and the checksum
bytes of later fragments are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_CLIENT_NAT = 32  # OpenVPN clinat.h
_TCP, _UDP = 6, 17


@dataclass(frozen=True, slots=True)
class NatRule:
    kind: Literal["snat", "dnat"]
    network: int
    netmask: int
    alias: int


def _fold(total: int) -> int:
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _adjust(checksum: int, old: int, new: int) -> int:
    """RFC 1624 incremental update for a 32-bit field changing from ``old`` to ``new``."""
    total = (~checksum & 0xFFFF) + (~(old >> 16) & 0xFFFF) + (~old & 0xFFFF) \
        + (new >> 16) + (new & 0xFFFF)
    return ~_fold(total) & 0xFFFF


class ClientNat:
    """The rules, applied to batches of packets in either direction."""

    __slots__ = ("rules",)

    def __init__(self, rules: tuple[NatRule, ...]) -> None:
        self.rules = rules

    def outgoing(self, packets: list[bytes]) -> list[bytes]:
        return [self.transform(p, incoming=False) for p in packets]

    def incoming(self, packets: list[bytes]) -> list[bytes]:
        return [self.transform(p, incoming=True) for p in packets]

    def transform(self, packet: bytes, *, incoming: bool) -> bytes:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return packet
        addrs = [int.from_bytes(packet[12:16], "big"), int.from_bytes(packet[16:20], "big")]
        done = [False, False]
        for rule in self.rules:
            # which address: OpenVPN's "e->type ^ direction" (snat=0/dnat=1, out=0/in=1)
            which = 1 if (rule.kind == "dnat") != incoming else 0
            src, dst = (rule.alias, rule.network) if incoming else (rule.network, rule.alias)
            if not done[which] and addrs[which] & rule.netmask == src:
                addrs[which] = (addrs[which] & ~rule.netmask & 0xFFFFFFFF) | dst
                done[which] = True
        if not (done[0] or done[1]):
            return packet
        out = bytearray(packet)
        ip_sum = int.from_bytes(out[10:12], "big")
        l4_sum: int | None = None
        ihl = (out[0] & 0x0F) * 4
        proto = out[9]
        first_fragment = int.from_bytes(out[6:8], "big") & 0x1FFF == 0
        at = ihl + (16 if proto == _TCP else 6)
        if first_fragment and proto in (_TCP, _UDP) and len(out) >= ihl + (20 if proto == _TCP
                                                                          else 8):
            l4_sum = int.from_bytes(out[at:at + 2], "big")
            if proto == _UDP and l4_sum == 0:
                l4_sum = None  # no checksum
        for which, offset in ((0, 12), (1, 16)):
            if done[which]:
                old = int.from_bytes(out[offset:offset + 4], "big")
                ip_sum = _adjust(ip_sum, old, addrs[which])
                if l4_sum is not None:
                    l4_sum = _adjust(l4_sum, old, addrs[which])
                out[offset:offset + 4] = addrs[which].to_bytes(4, "big")
        out[10:12] = ip_sum.to_bytes(2, "big")
        if l4_sum is not None:
            if proto == _UDP and l4_sum == 0:
                l4_sum = 0xFFFF
            out[at:at + 2] = l4_sum.to_bytes(2, "big")
        return bytes(out)
