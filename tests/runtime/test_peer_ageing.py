"""stale-routes-check: the TAP server's learned MAC routes age out when no frame uses them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from trivpn.runtime.peers import AgeingPeerTable, Verdict

pytestmark = pytest.mark.directive("stale-routes-check")


@dataclass(eq=False)
class FakePeer:
    address: Any
    peer_id: int
    vaddr: bytes | None = None
    vaddr6: bytes | None = None


def _mac(n: int) -> bytes:
    return bytes((2, 0, 0, 0, 0, n))


def _frame(dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x08\x06" + b"\x00" * 28


DEVICE_MAC = bytes((2, 0, 0, 0, 0, 0xEE))


def _table() -> tuple[AgeingPeerTable[FakePeer], FakePeer]:
    table: AgeingPeerTable[FakePeer] = AgeingPeerTable()
    peer = FakePeer(("198.18.0.10", 40000), 0)
    table.add(peer)
    return table, peer


def test_a_mac_no_frame_used_since_the_cutoff_is_forgotten() -> None:
    table, peer = _table()
    assert table.from_client_frame(peer, _frame(DEVICE_MAC, _mac(1)), False) is Verdict.DEVICE
    table.generation = 3
    assert table.expire(1) == [(_mac(1), peer)]
    assert table.for_frame(_frame(_mac(1), DEVICE_MAC)) is None
    assert table.macs_of(peer) == 0


def test_frames_to_a_mac_keep_its_route() -> None:
    table, peer = _table()
    table.from_client_frame(peer, _frame(DEVICE_MAC, _mac(1)), False)
    table.generation = 2
    assert table.for_frame(_frame(_mac(1), DEVICE_MAC)) is peer  # referenced now
    table.generation = 3
    assert table.expire(2) == []
    assert table.for_frame(_frame(_mac(1), DEVICE_MAC)) is peer


def test_a_forgotten_mac_is_learned_again_from_the_next_client_frame() -> None:
    table, peer = _table()
    table.from_client_frame(peer, _frame(DEVICE_MAC, _mac(1)), False)
    table.generation = 5
    table.expire(5)
    table.from_client_frame(peer, _frame(DEVICE_MAC, _mac(1)), False)
    assert table.for_frame(_frame(_mac(1), DEVICE_MAC)) is peer
    assert table.expire(5) == []
