"""Build and parse the few IPv4/ICMP packets the runtime tests exchange with the kernel."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from trivpn.diagnostics.probe_icmp import ECHO_REPLY, ECHO_REQUEST, ICMP, checksum

__all__ = ["ECHO_REPLY", "ECHO_REQUEST", "ICMP", "checksum"]

@dataclass(frozen=True)
class Ipv4:
    src: str
    dst: str
    proto: int
    payload: bytes


def parse_ipv4(packet: bytes) -> Ipv4 | None:
    """The header fields of an IPv4 packet, or None for anything else (IPv6, runts)."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    return Ipv4(src=str(ipaddress.IPv4Address(packet[12:16])),
                dst=str(ipaddress.IPv4Address(packet[16:20])),
                proto=packet[9], payload=packet[ihl:total])


def build_ipv4(src: str, dst: str, proto: int, payload: bytes, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x1234, 0, ttl, proto,
                         0, ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def build_ipv6(src: str, dst: str, next_header: int, payload: bytes, hop_limit: int = 64
               ) -> bytes:
    """An IPv6 packet with no extension headers (checksums of the payload are the caller's)."""
    return (struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit)
            + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload)


def build_icmp_echo(kind: int, ident: int, seq: int, data: bytes) -> bytes:
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


@dataclass(frozen=True)
class Echo:
    kind: int
    ident: int
    seq: int
    data: bytes


def parse_icmp_echo(icmp: bytes) -> Echo | None:
    if len(icmp) < 8 or icmp[0] not in (ECHO_REQUEST, ECHO_REPLY):
        return None
    kind, _code, _csum, ident, seq = struct.unpack_from("!BBHHH", icmp)
    return Echo(kind, ident, seq, icmp[8:])
