"""Inner IPv4 and IPv6 packets for the probes beyond the server, built and read in memory: ICMP
(ICMPv6) echo requests with a chosen TTL (hop limit), DNS queries over UDP, and the answers —
echo replies, DNS responses and ICMP errors (time exceeded, destination unreachable) quoting
one of our probes. The family of a packet is that of its destination address.

Nothing here touches a socket: the packets travel through the doctor's tunnel session
(tunnel_session.py).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from trivpn.diagnostics.probe_icmp import checksum

ICMP, UDP, ICMP6 = 1, 17, 58
ECHO6_REQUEST, ECHO6_REPLY, UNREACH6, TIME_EXCEEDED6 = 128, 129, 1, 3
UNREACH6_CODES = {0: "net_unreachable", 1: "admin_prohibited", 3: "host_unreachable",
                  4: "port_unreachable", 5: "admin_prohibited", 6: "admin_prohibited"}
ECHO_REPLY, DEST_UNREACH, ECHO_REQUEST, TIME_EXCEEDED = 0, 3, 8, 11
DNS_PORT = 53
QTYPE_A, QTYPE_NS = 1, 2
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
UNREACH_CODES = {0: "net_unreachable", 1: "host_unreachable", 2: "protocol_unreachable",
                 3: "port_unreachable", 4: "fragmentation_needed", 6: "net_unknown",
                 7: "host_unknown", 9: "net_prohibited", 10: "host_prohibited",
                 13: "admin_prohibited"}


def _ipv4(src: str, dst: str, proto: int, payload: bytes, *, ttl: int = 64,
          ident: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000,
                         ttl, proto, 0, ipaddress.IPv4Address(src).packed,
                         ipaddress.IPv4Address(dst).packed)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def _is6(address: str) -> bool:
    return ":" in address


def _ipv6(src: str, dst: str, next_header: int, payload: bytes, *, hops: int = 64) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, hops,
                       ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + payload


def _checksum6(src: str, dst: str, next_header: int, body: bytes) -> int:
    pseudo = (ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
              + struct.pack("!IxxxB", len(body), next_header))
    return checksum(pseudo + body)


def echo_request(src: str, dst: str, ident: int, seq: int, *, ttl: int = 64,
                 payload: bytes = b"trivpn doctor") -> bytes:
    """An ICMP echo request with IP time-to-live ``ttl`` (ICMPv6 and hop limit for IPv6)."""
    if _is6(dst):
        icmp6 = struct.pack("!BBHHH", ECHO6_REQUEST, 0, 0, ident, seq) + payload
        csum = _checksum6(src, dst, ICMP6, icmp6)
        return _ipv6(src, dst, ICMP6, icmp6[:2] + struct.pack("!H", csum) + icmp6[4:],
                     hops=ttl)
    icmp = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    return _ipv4(src, dst, ICMP, icmp, ttl=ttl, ident=seq)


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes, *,
               ttl: int = 64) -> bytes:
    """A UDP datagram with its checksum."""
    length = 8 + len(payload)
    if _is6(dst):
        udp6 = struct.pack("!HHHH", sport, dport, length, 0) + payload
        csum6 = _checksum6(src, dst, UDP, udp6) or 0xFFFF
        return _ipv6(src, dst, UDP, udp6[:6] + struct.pack("!H", csum6) + udp6[8:], hops=ttl)
    pseudo = (ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
              + struct.pack("!BBH", 0, UDP, length))
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return _ipv4(src, dst, UDP, udp, ttl=ttl, ident=sport)


def _qname(name: str) -> bytes:
    labels = [label for label in name.rstrip(".").split(".") if label]
    return b"".join(bytes([len(x)]) + x.encode("ascii") for x in labels) + b"\0"


def dns_query(query_id: int, name: str = ".", qtype: int = QTYPE_NS) -> bytes:
    """A recursive DNS query (RD set) for ``name``/``qtype``, class IN."""
    return (struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + _qname(name)
            + struct.pack("!HH", qtype, 1))


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    query_id: int
    rcode: str
    answers: int
    addresses: tuple[str, ...]  # A records in the answer section


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        if pos >= len(data):
            raise ValueError("name runs past the end")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse_dns_answer(payload: bytes, query: bytes) -> DnsAnswer | None:
    """The response to ``query`` in a UDP payload, or None when it is not a well-formed
    response to it (wrong id, not a response, another question, truncated)."""
    if len(payload) < 12 or payload[:2] != query[:2]:
        return None
    qid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", payload)
    if not flags & 0x8000:
        return None
    question = query[12:]
    if qd >= 1 and payload[12:12 + len(question)].lower() != question.lower():
        return None
    addresses: list[str] = []
    try:
        pos = 12 + (len(question) if qd >= 1 else 0)
        for _ in range(an):
            pos = _skip_name(payload, pos)
            rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", payload, pos)
            pos += 10
            if rtype == QTYPE_A and rdlen == 4:
                addresses.append(str(ipaddress.IPv4Address(payload[pos:pos + 4])))
            pos += rdlen
            if pos > len(payload):
                return None
    except (ValueError, struct.error):
        return None
    return DnsAnswer(qid, RCODES.get(flags & 0x0F, str(flags & 0x0F)), an, tuple(addresses))


@dataclass(frozen=True, slots=True)
class Inner:
    """What came back: ``kind`` is ``echo_reply``, ``udp``, ``time_exceeded`` or
    ``unreachable``. For ICMP errors, ``quoted_*`` describe the probe they quote."""

    kind: str
    src: str
    dst: str
    ident: int = 0  # echo: identifier; udp: destination port (our source port)
    seq: int = 0  # echo: sequence; udp: source port
    payload: bytes = b""
    code: str = ""
    quoted_proto: int = 0
    quoted_dst: str = ""
    quoted_ident: int = 0  # ICMP: echo identifier; UDP: source port
    quoted_seq: int = 0  # ICMP: echo sequence; UDP: destination port


def _addr(b: bytes) -> str:
    return str(ipaddress.ip_address(b))


def _icmp_error(src: str, dst: str, code: str, *, qproto: int, qdst: str,
               head: bytes) -> Inner | None:
    """An ICMP(v6) error (``code`` ``ttl_exceeded`` for time exceeded) quoting a probe of
    ``qproto`` (ICMP for an echo, UDP) to ``qdst`` whose transport header starts ``head`` (8
    bytes); None for another protocol."""
    if qproto == ICMP:
        qident, qseq = struct.unpack_from("!HH", head, 4)
    elif qproto == UDP:
        qident, qseq = struct.unpack_from("!HH", head, 0)
    else:
        return None
    return Inner("time_exceeded" if code == "ttl_exceeded" else "unreachable", src, dst,
                 code=code, quoted_proto=qproto, quoted_dst=qdst, quoted_ident=qident,
                 quoted_seq=qseq)


def _parse_inner6(packet: bytes) -> Inner | None:
    if len(packet) < 48:
        return None
    nh, src, dst, body = packet[6], _addr(packet[8:24]), _addr(packet[24:40]), packet[40:]
    if nh == UDP:
        sport, dport = struct.unpack_from("!HH", body)
        return Inner("udp", src, dst, ident=dport, seq=sport, payload=body[8:])
    if nh != ICMP6:
        return None
    kind = body[0]
    if kind == ECHO6_REPLY:
        ident, seq = struct.unpack_from("!HH", body, 4)
        return Inner("echo_reply", src, dst, ident=ident, seq=seq)
    if kind not in (UNREACH6, TIME_EXCEEDED6):
        return None
    quoted = body[8:]
    if len(quoted) < 48 or quoted[0] >> 4 != 6:
        return None
    qproto = {ICMP6: ICMP, UDP: UDP}.get(quoted[6], 0)  # an echo probe is ICMP in both families
    code = "ttl_exceeded" if kind == TIME_EXCEEDED6 else UNREACH6_CODES.get(body[1], str(body[1]))
    return _icmp_error(src, dst, code, qproto=qproto, qdst=_addr(quoted[24:40]),
                       head=quoted[40:48])


def parse_inner(packet: bytes) -> Inner | None:
    """An IPv4 or IPv6 packet from the tunnel as a probe answer, or None. ``quoted_proto``
    is ICMP (1) for a quoted echo probe of either family."""
    if packet[:1] and packet[0] >> 4 == 6:
        return _parse_inner6(packet)
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    proto, src, dst = packet[9], _addr(packet[12:16]), _addr(packet[16:20])
    body = packet[ihl:]
    if proto == UDP and len(body) >= 8:
        sport, dport = struct.unpack_from("!HH", body)
        return Inner("udp", src, dst, ident=dport, seq=sport, payload=body[8:])
    if proto != ICMP or len(body) < 8:
        return None
    kind = body[0]
    if kind == ECHO_REPLY:
        ident, seq = struct.unpack_from("!HH", body, 4)
        return Inner("echo_reply", src, dst, ident=ident, seq=seq)
    if kind not in (DEST_UNREACH, TIME_EXCEEDED):
        return None
    quoted = body[8:]
    if len(quoted) < 28 or quoted[0] >> 4 != 4:
        return None
    qihl = (quoted[0] & 0x0F) * 4
    inner = quoted[qihl:qihl + 8]
    if len(inner) < 8:
        return None
    code = "ttl_exceeded" if kind == TIME_EXCEEDED else UNREACH_CODES.get(body[1], str(body[1]))
    return _icmp_error(src, dst, code, qproto=quoted[9], qdst=_addr(quoted[16:20]), head=inner)
