"""vlan-tagging on a TAP server, the router's decisions (OpenVPN vlan.c vlan_decapsulate(),
vlan_process_outgoing_tun(); multi.c multi_bcast()). The same behaviour against the real
openvpn 2.6: tests/interop/test_srvsmall_vs_openvpn.py."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from trivpn.runtime.peers import PeerTable
from trivpn.runtime.routing import VlanRouter, vlan_tag, vlan_tagged


class _Session:
    def encrypt_data(self, packet: bytes, now: float) -> bytes:
        return packet


@dataclass(eq=False)
class _Peer:
    address: Any
    peer_id: int
    vaddr: bytes | None = None
    vaddr6: bytes | None = None
    mac_refused: tuple[str, ...] = ()
    session: _Session = field(default_factory=_Session)


def _mac(n: int) -> bytes:
    return bytes((2, 0, 0, 0, 0, n))


def _frame(dst: bytes, src: bytes, vid: int | None = None) -> bytes:
    tag = b"" if vid is None else b"\x81\x00" + vid.to_bytes(2, "big")
    return dst + src + tag + b"\x08\x06" + b"\x00" * 28


BCAST = b"\xff" * 6
HOST = _mac(99)


def _router(accept: str, pvids: tuple[int, ...] = (1, 5)) -> tuple[VlanRouter[Any], list[_Peer]]:
    table: PeerTable[Any] = PeerTable()
    peers = [_Peer((f"198.18.0.{10 + i}", 40000 + i), i) for i in range(len(pvids))]
    for peer in peers:
        table.add(peer)
    router: VlanRouter[Any] = VlanRouter(table, Counter(), tap=True, client_to_client=True,
                                         mss=None, on_mac_refused=lambda *_: None,
                                         accept=accept, pvid=1)
    router.connected = tuple(peers)
    for peer, pvid in zip(peers, pvids, strict=True):
        if pvid != 1:
            router.pvids[peer] = pvid
    return router, peers


def _to_device(router: VlanRouter[Any], peer: _Peer, frame: bytes) -> list[bytes]:
    to_device: list[bytes] = []
    router.from_peer(peer, frame, 0.0, [], to_device=to_device)
    return to_device


@pytest.mark.directive("vlan-accept", "vlan-tagging")
@pytest.mark.parametrize(("accept", "untagged_from", "tagged5_from"), [
    ("all", [0], [1]),        # untagged: the server's VLAN; tag 5: its clients, untagged
    ("tagged", [], [1]),      # untagged frames dropped
    ("untagged", [0], []),    # tagged frames dropped
])
def test_vlan_accept_decides_which_device_frames_reach_which_clients(
        accept: str, untagged_from: list[int], tagged5_from: list[int]):
    router, peers = _router(accept)
    got = router.from_device([_frame(BCAST, HOST)], 0.0)
    assert [peers.index(p) for p, _ in got] == untagged_from
    got = router.from_device([_frame(BCAST, HOST, 5)], 0.0)
    assert [peers.index(p) for p, _ in got] == tagged5_from
    assert all(not vlan_tagged(wire) for _, wire in got)  # the tag is removed


@pytest.mark.directive("vlan-accept", "vlan-pvid")
@pytest.mark.parametrize(("accept", "vlan1", "vlan5"), [
    ("all", "untagged", 5),       # the server's VLAN untagged, others tagged
    ("tagged", 1, 5),             # every frame tagged
    ("untagged", "untagged", None),  # only the server's VLAN, untagged
])
def test_vlan_accept_decides_how_client_frames_reach_the_device(
        accept: str, vlan1: object, vlan5: object):
    router, peers = _router(accept)
    seen: list[object] = []
    for i, peer in enumerate(peers):
        out = _to_device(router, peer, _frame(HOST, _mac(i + 1)))
        if not out:
            seen.append(None)
        else:
            [frame] = out
            seen.append(int.from_bytes(frame[14:16], "big") & 0xFFF
                        if frame[12:14] == b"\x81\x00" else "untagged")
    assert seen == [vlan1, vlan5]


@pytest.mark.directive("vlan-tagging")
def test_a_tagged_frame_from_a_client_is_dropped():
    router, peers = _router("all")
    assert _to_device(router, peers[0], _frame(HOST, _mac(1), 5)) == []
    assert router.counts["vlan_tagged_from_client"] == 1


@pytest.mark.directive("vlan-pvid")
def test_client_to_client_stays_inside_a_vlan():
    router, peers = _router("all", (1, 5, 5))
    out: list[tuple[Any, bytes]] = []
    router.from_peer(peers[1], _frame(BCAST, _mac(2)), 0.0, out, to_device=[])
    assert [p for p, _ in out] == [peers[2]]
    # peer 0 learned its MAC; a frame for it from VLAN 5 goes to the device, tagged 5
    router.from_peer(peers[0], _frame(HOST, _mac(1)), 0.0, [], to_device=[])
    out = []
    to_device: list[bytes] = []
    router.from_peer(peers[2], _frame(_mac(1), _mac(3)), 0.0, out, to_device=to_device)
    assert out == []
    assert [f[12:16] for f in to_device] == [b"\x81\x00\x00\x05"]


def test_vlan_tag_keeps_the_priority_of_a_priority_tagged_frame():
    prio = _frame(BCAST, HOST)[:12] + b"\x81\x00\xa0\x00" + b"\x08\x06" + b"\x00" * 28
    assert vlan_tag(prio, 5) == prio[:14] + b"\xa0\x05" + prio[16:]
    assert vlan_tag(_frame(BCAST, HOST, 7), 5) is None  # already tagged: dropped
