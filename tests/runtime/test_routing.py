"""The server's router between the device and its peers, without sockets or tasks."""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.runtime.packets import ICMP, build_ipv4
from trivpn.runtime.peers import PeerTable, Verdict
from trivpn.runtime.routing import Router


class SealingSession:
    """Stands in for a session's data channel: 'encrypts' by tagging the packet."""

    def __init__(self, tag: int) -> None:
        self.tag = tag

    def encrypt_data(self, packet: bytes, now: float) -> bytes:
        return bytes((self.tag,)) + packet


@dataclass(eq=False)
class RPeer:
    address: Any
    peer_id: int
    vaddr: bytes | None
    session: Any
    vaddr6: bytes | None = None
    mac_refused: tuple[str, ...] = ()


@dataclass
class Refusals:
    seen: list[tuple[int, bytes, Verdict]] = field(default_factory=list)

    def __call__(self, peer: RPeer, frame: bytes, verdict: Verdict) -> None:
        self.seen.append((peer.peer_id, frame[6:12], verdict))


def _router(*, tap: bool = False, c2c: bool = False, n: int = 3, max_macs: int = 256
            ) -> tuple[Router[RPeer], list[RPeer], Counter[str], Refusals]:
    table: PeerTable[RPeer] = PeerTable(max_macs)
    counts: Counter[str] = Counter()
    refusals = Refusals()
    router = Router(table, counts, tap=tap, client_to_client=c2c, mss=None,
                    on_mac_refused=refusals)
    peers = []
    for i in range(n):
        peer = RPeer(("198.18.0.9", 40000 + i), i,
                     ipaddress.IPv4Address(f"198.18.8.{2 + i}").packed, SealingSession(i))
        table.add(peer)
        table.route_vaddr(peer)
        peers.append(peer)
    router.connected = tuple(peers)
    return router, peers, counts, refusals


def _ip(src: str, dst: str) -> bytes:
    return build_ipv4(src, dst, ICMP, b"\x08\x00\x00\x00" + b"x" * 8)


def test_device_packets_are_encrypted_for_their_owner_and_strays_counted():
    router, _, counts, _ = _router()
    to_b = _ip("198.18.8.1", "198.18.8.3")
    out = router.from_device([to_b, _ip("198.18.8.1", "198.18.8.99"), b"\x60" + bytes(39),
                              b"\x50" + bytes(39)], 0.0)
    assert [(p.peer_id, wire) for p, wire in out] == [(1, b"\x01" + to_b)]
    assert counts == {"no_route": 2, "not_ipv4": 1}  # IPv6 without an owner; not IP at all


def test_client_packet_goes_to_device_or_with_client_to_client_to_the_other_client():
    for c2c, expect_device in ((False, True), (True, False)):
        router, (a, _, _), _, _ = _router(c2c=c2c)
        packet = _ip("198.18.8.2", "198.18.8.3")
        out: list[tuple[RPeer, bytes]] = []
        to_device: list[bytes] = []
        router.from_peer(a, packet, 0.0, out, to_device=to_device)
        assert (to_device == [packet]) is expect_device
        assert [(p.peer_id, w) for p, w in out] == ([] if expect_device
                                                    else [(1, b"\x01" + packet)])


def test_spoofed_client_packet_is_dropped_and_counted():
    router, (a, _, _), counts, _ = _router()
    out: list[tuple[RPeer, bytes]] = []
    to_device: list[bytes] = []
    router.from_peer(a, _ip("198.18.8.3", "198.18.8.1"), 0.0, out, to_device=to_device)
    assert (out, to_device, counts) == ([], [], Counter({"spoofed_source": 1}))


def test_tap_broadcast_floods_every_other_client_and_the_device():
    router, (a, _, _), _, _ = _router(tap=True, c2c=True)
    frame = b"\xff" * 6 + bytes((2, 0, 0, 0, 0, 1)) + b"\x08\x06" + bytes(28)
    out: list[tuple[RPeer, bytes]] = []
    to_device: list[bytes] = []
    router.from_peer(a, frame, 0.0, out, to_device=to_device)
    assert to_device == [frame]
    assert sorted(p.peer_id for p, _ in out) == [1, 2]


def test_mac_refusal_is_reported_once_per_peer_and_reason_and_counted_always():
    router, (a, _, _), counts, refusals = _router(tap=True, max_macs=1)
    for last in (1, 2, 3):
        frame = b"\xff" * 6 + bytes((2, 0, 0, 0, 0, last)) + b"\x08\x06" + bytes(28)
        router.from_peer(a, frame, 0.0, [], to_device=[])
    assert counts == {"max_routes_per_client": 2}
    assert refusals.seen == [(0, bytes((2, 0, 0, 0, 0, 2)), Verdict.MAC_QUOTA)]


def _net(text: str) -> tuple[int, int]:
    n = ipaddress.IPv4Network(text)
    return int(n.network_address), n.prefixlen


@pytest.mark.directive("iroute")
def test_device_packet_for_a_network_behind_a_client_goes_to_that_client():
    router, (a, b, _), counts, _ = _router()
    router.table.add_iroutes(b, [_net("198.18.30.0/24")])
    router.table.add_iroutes(a, [_net("198.18.30.128/25")])  # more specific wins
    low, high = _ip("198.18.8.1", "198.18.30.7"), _ip("198.18.8.1", "198.18.30.200")
    out = router.from_device([low, high, _ip("198.18.8.1", "198.18.31.1")], 0.0)
    assert [(p.peer_id, w) for p, w in out] == [(1, b"\x01" + low), (0, b"\x00" + high)]
    assert counts == {"no_route": 1}


@pytest.mark.directive("iroute")
def test_client_may_send_from_its_iroute_network_and_no_other():
    router, (a, b, _), counts, _ = _router()
    router.table.add_iroutes(a, [_net("198.18.30.0/24")])
    router.table.add_iroutes(b, [_net("198.18.31.0/24")])
    to_device: list[bytes] = []
    ok, spoof = _ip("198.18.30.2", "198.18.8.1"), _ip("198.18.31.2", "198.18.8.1")
    router.from_peer(a, ok, 0.0, [], to_device=to_device)
    router.from_peer(a, spoof, 0.0, [], to_device=to_device)
    assert to_device == [ok] and counts == {"spoofed_source": 1}


@pytest.mark.directive("iroute", "client-to-client")
def test_client_to_client_reaches_a_network_behind_another_client():
    router, (a, b, _), _, _ = _router(c2c=True)
    router.table.add_iroutes(b, [_net("198.18.30.0/24")])
    out: list[tuple[RPeer, bytes]] = []
    there = _ip("198.18.8.2", "198.18.30.2")
    router.from_peer(a, there, 0.0, out, to_device=[])
    back = _ip("198.18.30.2", "198.18.8.2")  # the reply, from b's network to a
    router.from_peer(b, back, 0.0, out, to_device=[])
    assert [(p.peer_id, w) for p, w in out] == [(1, b"\x01" + there), (0, b"\x00" + back)]


@pytest.mark.directive("iroute")
def test_iroutes_go_with_their_client_and_the_latest_claim_wins():
    router, (a, b, _), counts, _ = _router()
    router.table.add_iroutes(a, [_net("198.18.30.0/24")])
    router.table.add_iroutes(b, [_net("198.18.30.0/24")])
    packet = _ip("198.18.8.1", "198.18.30.2")
    assert [p.peer_id for p, _ in router.from_device([packet], 0.0)] == [1]
    router.table.remove(b)
    assert router.from_device([packet], 0.0) == [] and counts == {"no_route": 1}
    assert router.table.iroutes == {}
