"""The server's IPv6 routing between its device and clients (server-ipv6), without sockets."""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from tests.runtime.packets import ICMP, build_ipv4, build_ipv6
from trivpn.runtime.peers import PeerTable
from trivpn.runtime.routing import Router

ICMPV6, TCP = 58, 6
SERVER6 = "2001:2:0:1::1"


class SealingSession:
    def __init__(self, tag: int) -> None:
        self.tag = tag

    def encrypt_data(self, packet: bytes, now: float) -> bytes:
        return bytes((self.tag,)) + packet


@dataclass(eq=False)
class Peer6:
    address: Any
    peer_id: int
    vaddr: bytes | None
    session: Any
    vaddr6: bytes | None = None
    mac_refused: tuple[str, ...] = ()


def _v6(n: int) -> str:
    return f"2001:2:0:1::{0x1000 + n:x}"


def _router(*, c2c: bool = False, mss: int | None = None, with_v6: bool = True
            ) -> tuple[Router[Peer6], list[Peer6], Counter[str]]:
    table: PeerTable[Peer6] = PeerTable()
    counts: Counter[str] = Counter()
    router = Router(table, counts, tap=False, client_to_client=c2c, mss=mss,
                    on_mac_refused=lambda *_: None)
    peers = []
    for i in range(2):
        peer = Peer6(("2001:2:ff::9", 40000 + i, 0, 0), i,
                     ipaddress.IPv4Address(f"198.18.8.{2 + i}").packed, SealingSession(i),
                     ipaddress.IPv6Address(_v6(i)).packed if with_v6 else None)
        table.add(peer)
        table.route_vaddr(peer)
        peers.append(peer)
    router.connected = tuple(peers)
    return router, peers, counts


def _ping6(src: str, dst: str) -> bytes:
    return build_ipv6(src, dst, ICMPV6, b"\x80\x00\x00\x00" + b"x" * 8)


def _from_peer(router: Router[Peer6], peer: Peer6, packet: bytes
               ) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    out: list[tuple[Peer6, bytes]] = []
    to_device: list[bytes] = []
    router.from_peer(peer, packet, 0.0, out, to_device=to_device)
    return [(p.peer_id, w) for p, w in out], to_device


@pytest.mark.directive("server-ipv6")
def test_device_ipv6_packet_goes_to_the_client_owning_its_destination():
    router, _, counts = _router()
    to_b = _ping6(SERVER6, _v6(1))
    stray = _ping6(SERVER6, _v6(7))
    out = router.from_device([to_b, stray], 0.0)
    assert [(p.peer_id, wire) for p, wire in out] == [(1, b"\x01" + to_b)]
    assert counts == {"no_route": 1}


@pytest.mark.directive("server-ipv6")
def test_client_ipv6_packet_from_its_own_address_goes_to_the_device():
    router, (a, _), counts = _router()
    packet = _ping6(_v6(0), SERVER6)
    assert _from_peer(router, a, packet) == ([], [packet])
    assert not counts


@pytest.mark.directive("server-ipv6")
def test_client_ipv6_packet_from_a_foreign_source_is_dropped_and_counted():
    router, (a, _), counts = _router()
    for src in (_v6(1), "2001:2:0:1::dead", "2001:2:77::1"):
        assert _from_peer(router, a, _ping6(src, SERVER6)) == ([], [])
    assert counts == {"spoofed_source": 3}


def test_client_ipv6_packet_without_an_ipv6_pool_is_dropped_as_not_ipv4():
    router, (a, _), counts = _router(with_v6=False)
    assert _from_peer(router, a, _ping6(_v6(0), SERVER6)) == ([], [])
    assert counts == {"not_ipv4": 1}


def test_truncated_ipv6_packet_from_a_client_is_malformed():
    router, (a, _), counts = _router()
    assert _from_peer(router, a, _ping6(_v6(0), SERVER6)[:30]) == ([], [])
    assert counts == {"malformed_packet": 1}


@pytest.mark.directive("client-to-client")
def test_client_to_client_ipv6_goes_straight_to_the_other_client():
    router, (a, _), _ = _router(c2c=True)
    packet = _ping6(_v6(0), _v6(1))
    assert _from_peer(router, a, packet) == ([(1, b"\x01" + packet)], [])


def test_ipv4_packets_still_route_beside_ipv6():
    router, (a, _), counts = _router()
    packet = build_ipv4("198.18.8.2", "198.18.8.1", ICMP, b"\x08\x00\x00\x00" + b"x" * 8)
    assert _from_peer(router, a, packet) == ([], [packet])
    out = router.from_device([build_ipv4("198.18.8.1", "198.18.8.3", ICMP, b"x" * 12)], 0.0)
    assert [p.peer_id for p, _ in out] == [1]
    assert not counts


def _syn6(src: str, dst: str, mss: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, 6 << 4, 0x02, 64240, 0, 0)
    tcp += bytes([2, 4]) + mss.to_bytes(2, "big")
    return build_ipv6(src, dst, TCP, tcp)


def _mss_of6(packet: bytes) -> int:
    return int.from_bytes(packet[62:64], "big")


@pytest.mark.directive("mssfix")
def test_ipv6_syns_are_clamped_20_bytes_below_the_ipv4_limit_both_ways():
    router, (a, _), _ = _router(mss=1400)
    _, to_device = _from_peer(router, a, _syn6(_v6(0), SERVER6, 1440))
    assert _mss_of6(to_device[0]) == 1380
    out = router.from_device([_syn6(SERVER6, _v6(1), 1440)], 0.0)
    assert _mss_of6(out[0][1][1:]) == 1380
