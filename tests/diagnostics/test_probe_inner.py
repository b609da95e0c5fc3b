"""The inner packets of the probes beyond the server: DNS queries and answers, UDP checksums,
and ICMP errors quoting one of our probes."""

from __future__ import annotations

import ipaddress
import struct

from trivpn.diagnostics.probe_icmp import checksum
from trivpn.diagnostics.probe_inner import (
    dns_query,
    echo_request,
    parse_dns_answer,
    parse_inner,
    udp_packet,
)

LOCAL, FAR, ROUTER = "198.18.8.2", "198.18.20.10", "198.18.8.1"


def _ipv4(src: str, dst: str, proto: int, body: bytes, ttl: int = 64) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, ttl, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + body


def _icmp_error(kind: int, code: int, src: str, quoted: bytes) -> bytes:
    return _ipv4(src, LOCAL, 1, struct.pack("!BBHI", kind, code, 0, 0) + quoted[:28])


def _response(query: bytes, flags: int = 0x8180, answers: bytes = b"", count: int = 0) -> bytes:
    return query[:2] + struct.pack("!HHHHH", flags, 1, count, 0, 0) + query[12:] + answers


def test_dns_query_asks_recursively_for_one_name():
    q = dns_query(0x1234, "vpn.example.", 1)
    assert struct.unpack_from("!HHHHHH", q) == (0x1234, 0x0100, 1, 0, 0, 0)
    assert q[12:] == b"\x03vpn\x07example\x00" + struct.pack("!HH", 1, 1)


def test_nxdomain_is_a_well_formed_answer():
    q = dns_query(7)
    answer = parse_dns_answer(_response(q, flags=0x8183), q)
    assert answer is not None and answer.rcode == "NXDOMAIN"


def test_a_records_are_read_from_the_answer():
    q = dns_query(9, "host.example", 1)
    record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([198, 18, 20, 10])
    answer = parse_dns_answer(_response(q, answers=record, count=1), q)
    assert answer is not None and answer.addresses == ("198.18.20.10",)


def test_answers_to_another_query_are_not_taken():
    q = dns_query(7, "a.example", 1)
    assert parse_dns_answer(_response(dns_query(8, "a.example", 1)), q) is None  # other id
    assert parse_dns_answer(_response(dns_query(7, "b.example", 1)), q) is None  # other name
    assert parse_dns_answer(q, q) is None  # a query, not a response
    assert parse_dns_answer(_response(q, answers=b"\x03ab", count=1), q) is None  # truncated


def test_udp_packet_checksum_verifies():
    packet = udp_packet(LOCAL, FAR, 40000, 53, dns_query(1))
    udp = packet[20:]
    pseudo = (ipaddress.IPv4Address(LOCAL).packed + ipaddress.IPv4Address(FAR).packed
              + struct.pack("!BBH", 0, 17, len(udp)))
    assert checksum(pseudo + udp) == 0
    assert checksum(packet[:20]) == 0


def test_echo_request_carries_the_ttl():
    assert echo_request(LOCAL, FAR, 1, 2, ttl=1)[8] == 1


def test_time_exceeded_names_the_echo_probe_it_quotes():
    probe = echo_request(LOCAL, FAR, 0xBEEF, 5, ttl=1)
    inner = parse_inner(_icmp_error(11, 0, ROUTER, probe))
    assert inner is not None
    assert (inner.kind, inner.src, inner.quoted_dst) == ("time_exceeded", ROUTER, FAR)
    assert (inner.quoted_proto, inner.quoted_ident, inner.quoted_seq) == (1, 0xBEEF, 5)


def test_port_unreachable_names_the_udp_probe_it_quotes():
    probe = udp_packet(LOCAL, FAR, 40001, 53, dns_query(1))
    inner = parse_inner(_icmp_error(3, 3, FAR, probe))
    assert inner is not None
    assert (inner.kind, inner.code, inner.quoted_ident, inner.quoted_seq) == (
        "unreachable", "port_unreachable", 40001, 53)


def test_host_unreachable_and_echo_reply_are_told_apart():
    probe = echo_request(LOCAL, FAR, 1, 1)
    down = parse_inner(_icmp_error(3, 1, "198.18.20.1", probe))
    assert down is not None and down.code == "host_unreachable"
    reply = parse_inner(_ipv4(FAR, LOCAL, 1, struct.pack("!BBHHH", 0, 0, 0, 1, 1)))
    assert reply is not None and (reply.kind, reply.ident, reply.seq) == ("echo_reply", 1, 1)


def test_garbage_is_not_an_answer():
    assert parse_inner(b"") is None
    assert parse_inner(b"\x60" + bytes(40)) is None  # IPv6
    assert parse_inner(_icmp_error(3, 1, ROUTER, b"short")) is None
