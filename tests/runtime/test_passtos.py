"""passtos: the TOS byte of IPv4 packets read from the TUN onto the link socket."""

from __future__ import annotations

import socket

from trivpn.runtime.datapath import PassTos


def _ipv4(tos: int) -> bytes:
    return bytes([0x45, tos]) + bytes(18)


def _ipv6() -> bytes:
    return bytes([0x60]) + bytes(39)


def test_a_batch_is_cut_into_runs_of_one_tos_and_ipv6_keeps_the_last_byte() -> None:
    p = PassTos(None)
    for packet, wires in ((_ipv4(0x10), 1), (_ipv4(0x10), 2), (_ipv6(), 1), (_ipv4(0), 1)):
        p.note(packet, wires)
    wire = [b"a", b"b", b"c", b"d", b"e"]
    assert p.take(wire) == [(0x10, [b"a", b"b", b"c", b"d"]), (0, [b"e"])]
    assert p.take([]) == []  # the marks belong to one batch


def test_packets_before_any_ipv4_leave_the_socket_alone() -> None:
    p = PassTos(None)
    p.note(_ipv6(), 1)
    assert p.take([b"a"]) == [(None, [b"a"])]


def test_the_socket_option_follows_the_tos_and_is_set_only_when_it_changes() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    calls: list[int] = []
    try:
        p = PassTos(sock)
        for tos in (None, 0x10, 0x10, 0xB8):
            before = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
            p.apply(tos)
            after = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
            if after != before:
                calls.append(after)
        assert calls == [0x10, 0xB8]
        assert p.applied == 0xB8
    finally:
        sock.close()
