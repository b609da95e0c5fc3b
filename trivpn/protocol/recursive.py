"""Recursive routing: packets read from the device that are addressed to the VPN server itself.

Such a packet would travel inside the tunnel to the address the tunnel runs to. OpenVPN in
point-to-point mode (every client) drops them unless ``allow-recursive-routing`` (forward.c,
drop_if_recursive_routing(): the IPv4 or IPv6 destination equals the link's peer address, for
tun and tap devices alike; it logs "Recursive routing detected, drop tun packet to ...").
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

_ETHERTYPE = {4: b"\x08\x00", 6: b"\x86\xdd"}


@dataclass(frozen=True, slots=True)
class RecursiveFilter:
    """Drops packets to ``server`` (a numeric IPv4 or IPv6 address) from a device batch."""

    address: bytes
    version: int
    tap: bool

    @classmethod
    def for_server(cls, server: str, *, tap: bool = False) -> RecursiveFilter:
        addr = ip_address(server)
        return cls(addr.packed, addr.version, tap)

    def split(self, packets: list[bytes]) -> tuple[list[bytes], int]:
        """(the packets to send on, how many were dropped). The common case (none to the
        server) costs one ``startswith`` a packet, iterated in C."""
        dst, version = self.address, self.version
        where = (16 if version == 4 else 24) + (14 if self.tap else 0)
        n = len(packets)
        if not any(map(bytes.startswith, packets, [dst] * n, [where] * n)):
            return packets, 0
        if self.tap:
            ethertype = _ETHERTYPE[version]
            kept = [p for p in packets
                    if not (p.startswith(dst, where) and p.startswith(ethertype, 12))]
        else:
            kept = [p for p in packets
                    if not (p.startswith(dst, where) and p[0] >> 4 == version)]
        return kept, len(packets) - len(kept)
