"""``block-ipv6`` on a TUN server: what its router does with IPv6 (no sockets). Checked against
a real openvpn 2.6 server in tests/interop/test_server_block_ipv6_vs_openvpn.py."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from tests.runtime.packets import build_ipv4, build_ipv6
from tests.runtime.test_ipv6_routing import ICMPV6, SERVER6, Peer6, SealingSession, _v6
from trivpn.protocol.icmp6 import no_route_reply
from trivpn.runtime.peers import PeerTable
from trivpn.runtime.routing import BlockIpv6Router

SOURCE = ipaddress.IPv6Address("2001:2:0:1::2").packed


def _router(c2c: bool = True) -> tuple[BlockIpv6Router[Peer6], list[Peer6], Counter[str],
                                       list[bytes]]:
    table: PeerTable[Peer6] = PeerTable()
    counts: Counter[str] = Counter()
    written: list[bytes] = []
    router = BlockIpv6Router(table, counts, tap=False, client_to_client=c2c, mss=None,
                             on_mac_refused=lambda *_: None, block6_source=SOURCE,
                             tun_mtu=1500, write_device=written.extend)
    peers = []
    for i in range(2):
        peer = Peer6(("198.18.0.9", 40000 + i), i,
                     ipaddress.IPv4Address(f"198.18.8.{2 + i}").packed, SealingSession(i),
                     ipaddress.IPv6Address(_v6(i)).packed)
        table.add(peer)
        table.route_vaddr(peer)
        peers.append(peer)
    router.connected = tuple(peers)
    return router, peers, counts, written


def _ping6(src: str, dst: str) -> bytes:
    return build_ipv6(src, dst, ICMPV6, b"\x80\x00\x00\x00" + b"x" * 8)


@pytest.mark.directive("block-ipv6")
def test_device_ipv6_for_a_client_is_answered_no_route_on_the_device_and_not_sent():
    router, _, counts, written = _router()
    to_b = _ping6(SERVER6, _v6(1))
    v4 = build_ipv4("198.18.8.1", "198.18.8.3", 1, b"\x08\x00\x00\x00" + b"x" * 8)
    out = router.from_device([to_b, v4], 0.0)
    assert [(p.peer_id, w) for p, w in out] == [(1, b"\x01" + v4)]  # IPv4 still goes
    assert written == [no_route_reply(to_b, SOURCE, 1500)]
    assert written[0][8:24] == SOURCE and written[0][24:40] == to_b[8:24]
    assert counts == {"block_ipv6": 1}


@pytest.mark.directive("block-ipv6", "client-to-client")
def test_client_to_client_ipv6_is_dropped_without_an_answer():
    router, (a, _), counts, written = _router()
    out: list[tuple[Peer6, bytes]] = []
    to_device: list[bytes] = []
    router.from_peer(a, _ping6(_v6(0), _v6(1)), 0.0, out, to_device=to_device)
    assert (out, to_device, written) == ([], [], [])
    assert counts == {"block_ipv6": 1}


@pytest.mark.directive("block-ipv6")
def test_client_ipv6_to_the_server_still_reaches_the_device():
    router, (a, _), counts, written = _router()
    out: list[tuple[Peer6, bytes]] = []
    to_device: list[bytes] = []
    packet = _ping6(_v6(0), SERVER6)
    router.from_peer(a, packet, 0.0, out, to_device=to_device)
    assert to_device == [packet] and out == [] and written == [] and not counts
