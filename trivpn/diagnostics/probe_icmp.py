"""The IPv4 ICMP echo packets ``tunnel.traffic`` sends through the data channel (no TUN device:
the session encrypts and decrypts them directly)."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ICMP = 1
ECHO_REPLY = 0
ECHO_REQUEST = 8


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(src: str, dst: str, ident: int, seq: int, payload: bytes) -> bytes:
    """An IPv4 packet carrying an ICMP echo request."""
    icmp = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq & 0xFFFF, 0x4000, 64,
                         ICMP, 0, ipaddress.IPv4Address(src).packed,
                         ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + icmp


@dataclass(frozen=True, slots=True)
class EchoReply:
    src: str
    dst: str
    ident: int
    seq: int


def parse_echo_reply(packet: bytes) -> EchoReply | None:
    """The echo reply in an IPv4 packet, or None for anything else."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != ICMP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 8 or packet[ihl] != ECHO_REPLY:
        return None
    ident, seq = struct.unpack_from("!HH", packet, ihl + 4)
    return EchoReply(str(ipaddress.IPv4Address(packet[12:16])),
                     str(ipaddress.IPv4Address(packet[16:20])), ident, seq)
