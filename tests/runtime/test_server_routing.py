"""The server's peer table and routing decisions, as pure functions over packets."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import pytest

from tests.runtime.packets import ICMP, build_ipv4
from trivpn.protocol.gateway import address_bytes
from trivpn.runtime.peers import PeerTable, Verdict
from trivpn.runtime.serverpeer import format_address

BROADCAST = b"\xff" * 6
MULTICAST = bytes.fromhex("01005e000001")


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


def _table(n: int = 3) -> tuple[PeerTable[FakePeer], list[FakePeer]]:
    table: PeerTable[FakePeer] = PeerTable()
    peers = []
    for i in range(n):
        peer = FakePeer((f"198.18.0.{10 + i}", 40000 + i), i,
                        ipaddress.IPv4Address(f"198.18.8.{2 + i}").packed)
        table.add(peer)
        table.route_vaddr(peer)
        peers.append(peer)
    return table, peers


def _ip(src: str, dst: str) -> bytes:
    return build_ipv4(src, dst, ICMP, b"\x08\x00\x00\x00" + b"x" * 8)


def test_device_packet_goes_to_the_peer_owning_the_destination():
    table, (_a, b, _) = _table()
    assert table.for_ipv4(_ip("198.18.8.1", "198.18.8.3")) is b
    assert table.for_ipv4(_ip("198.18.8.1", "198.18.8.99")) is None
    assert table.for_ipv4(b"\x60" + b"\x00" * 39) is None  # IPv6: no owner


@pytest.mark.parametrize(("c2c", "dst", "expected"), [
    (False, "198.18.8.3", Verdict.DEVICE),
    (True, "198.18.8.3", 1),                  # straight to client 1
    (True, "198.18.8.2", Verdict.DEVICE),     # to itself: the device decides
    (True, "198.18.8.1", Verdict.DEVICE),     # the server
    (True, "198.18.9.9", Verdict.DEVICE),
])
def test_client_packet_routing_with_and_without_client_to_client(c2c: bool, dst: str,
                                                                 expected: object):
    table, peers = _table()
    verdict = table.from_client_ipv4(peers[0], _ip("198.18.8.2", dst), c2c)
    assert verdict is (peers[expected] if isinstance(expected, int) else expected)


def test_client_packet_with_another_source_address_is_a_spoof():
    table, (a, _, _) = _table()
    assert table.from_client_ipv4(a, _ip("198.18.8.3", "198.18.8.1"), True) is Verdict.SPOOFED
    assert table.from_client_ipv4(a, b"\x45\x00", True) is Verdict.MALFORMED
    assert table.from_client_ipv4(a, b"\x60" + b"\x00" * 39, True) is Verdict.IPV6
    assert table.from_client_ipv4(a, b"\x50" + b"\x00" * 39, True) is Verdict.NOT_IPV4


def test_tap_frames_teach_the_source_mac_and_route_to_its_owner():
    table, (a, b, c) = _table()
    assert table.from_client_frame(a, _frame(BROADCAST, _mac(1)), False) is Verdict.DEVICE
    assert table.for_frame(_frame(_mac(1), _mac(9))) is a
    assert table.for_frame(_frame(_mac(7), _mac(9))) is None  # unknown: flood
    assert table.from_client_frame(b, _frame(_mac(1), _mac(2)), True) is a
    assert table.from_client_frame(c, _frame(_mac(3), _mac(3)), True) is Verdict.DEVICE


@pytest.mark.parametrize("dst", [BROADCAST, MULTICAST])
def test_tap_group_frames_with_client_to_client_are_flooded(dst: bytes):
    table, (a, _, _) = _table()
    assert table.from_client_frame(a, _frame(dst, _mac(1)), True) is Verdict.FLOOD


def test_tap_frame_from_a_group_source_mac_is_a_spoof():
    table, (a, _, _) = _table()
    assert table.from_client_frame(a, _frame(_mac(1), BROADCAST), True) is Verdict.SPOOFED
    assert table.from_client_frame(a, b"\x00" * 10, True) is Verdict.MALFORMED


def test_a_client_cannot_take_over_a_mac_another_connected_client_owns():
    table, (a, b, _) = _table()
    assert table.from_client_frame(a, _frame(BROADCAST, _mac(5)), False) is Verdict.DEVICE
    assert table.from_client_frame(b, _frame(BROADCAST, _mac(5)), True) is Verdict.MAC_TAKEN
    assert table.for_frame(_frame(_mac(5), _mac(9))) is a
    assert table.macs_of(b) == 0


def test_a_mac_is_free_again_once_its_owner_is_gone():
    table, (a, b, _) = _table()
    table.from_client_frame(a, _frame(BROADCAST, _mac(5)), False)
    table.remove(a)
    assert table.from_client_frame(b, _frame(BROADCAST, _mac(5)), False) is Verdict.DEVICE
    assert table.for_frame(_frame(_mac(5), _mac(9))) is b


@pytest.mark.directive("max-routes-per-client")
def test_a_client_learns_at_most_max_routes_per_client_macs():
    table: PeerTable[FakePeer] = PeerTable(max_macs=3)
    a, b = FakePeer(("198.18.0.10", 1), 0), FakePeer(("198.18.0.11", 1), 1)
    table.add(a)
    table.add(b)
    for n in range(3):
        assert table.from_client_frame(a, _frame(BROADCAST, _mac(n)), False) is Verdict.DEVICE
    assert table.from_client_frame(a, _frame(BROADCAST, _mac(3)), False) is Verdict.MAC_QUOTA
    assert table.for_frame(_frame(_mac(3), _mac(9))) is None
    # frames from MACs it already owns still pass; the quota is per client
    assert table.from_client_frame(a, _frame(BROADCAST, _mac(0)), False) is Verdict.DEVICE
    assert table.from_client_frame(b, _frame(BROADCAST, _mac(3)), False) is Verdict.DEVICE
    assert table.macs_of(a) == 3 and table.macs_of(b) == 1


@pytest.mark.directive("max-routes-per-client")
def test_max_routes_per_client_defaults_to_256_and_reaches_the_server_table():
    from tests.config.helpers import server
    from trivpn.logging import get_logger
    from trivpn.runtime.server import Server

    assert server().max_routes_per_client == 256
    options = server("max-routes-per-client 7\n")
    assert Server(options, get_logger()).table.max_macs == 7


def test_removing_a_peer_forgets_every_index_and_frees_its_peer_id():
    table, (_a, b, _c) = _table()
    table.from_client_frame(b, _frame(BROADCAST, _mac(2)), False)
    table.remove(b)
    assert b not in table and len(table) == 2
    assert table.by_address.get(b.address) is None
    assert table.for_ipv4(_ip("198.18.8.1", "198.18.8.3")) is None
    assert table.for_frame(_frame(_mac(2), _mac(9))) is None
    assert table.free_peer_id(10) == 1
    assert table.free_peer_id(3) == 1
    table.remove(b)  # idempotent


def test_peer_id_assignment_is_lowest_free_below_the_limit():
    table, _ = _table(3)
    assert table.free_peer_id(3) is None
    assert table.free_peer_id(4) == 3


def test_float_reindexes_the_peer_under_its_new_address():
    table, (a, b, _) = _table()
    old = a.address
    a.address = ("198.18.0.99", 5555)
    table.move(a, old)
    assert table.by_address.get(old) is None and table.by_address[a.address] is a
    b_old = b.address
    b.address = a.address
    with pytest.raises(ValueError):
        table.move(b, b_old)


def test_duplicate_address_or_peer_id_is_refused():
    table, (a, _, _) = _table()
    with pytest.raises(ValueError):
        table.add(FakePeer(a.address, 99))
    with pytest.raises(ValueError):
        table.add(FakePeer(("198.18.0.50", 1), a.peer_id))


def test_cookie_address_bytes_distinguish_ports_and_format_is_readable():
    assert address_bytes(("198.18.0.2", 1194)) == bytes([198, 18, 0, 2, 0x04, 0xAA])
    assert address_bytes(("198.18.0.2", 1)) != address_bytes(("198.18.0.2", 2))
    assert format_address(("198.18.0.2", 1194)) == "198.18.0.2:1194"


@pytest.mark.directive("max-routes-per-client")
def test_server_drops_counts_and_logs_once_a_frame_from_another_clients_mac():
    from structlog.testing import capture_logs

    from tests.config.helpers import SERVER_BASE
    from trivpn.config import ConfigError, parse_config
    from trivpn.logging import get_logger
    from trivpn.runtime.server import Server
    from trivpn.runtime.serverpeer import Peer

    with pytest.raises(ConfigError):
        parse_config(SERVER_BASE + "max-routes-per-client 0\n", "server.conf")
    with capture_logs() as logs:
        server = Server(parse_config(SERVER_BASE.replace("dev tun", "dev tap")
                                     + "max-routes-per-client 1\n", "server.conf"),
                        get_logger())
        a = Peer(None, ("198.18.0.10", 1), 0, 0.0)  # type: ignore[arg-type]
        b = Peer(None, ("198.18.0.11", 1), 1, 0.0)  # type: ignore[arg-type]
        a.common_name, b.common_name = "alice", "mallory"
        server.table.add(a)
        server.table.add(b)
        to_device: list[bytes] = []
        server.router.from_peer(a, _frame(BROADCAST, _mac(1)), 0.0, [], to_device=to_device)
        for _ in range(5):
            server.router.from_peer(b, _frame(BROADCAST, _mac(1)), 0.0, [], to_device=to_device)
        server.router.from_peer(a, _frame(BROADCAST, _mac(2)), 0.0, [], to_device=to_device)
    assert len(to_device) == 1
    assert server.counts == {"mac_owned_by_other_client": 5, "max_routes_per_client": 1}
    refused = [e for e in logs if e["event"] == "mac_refused"]
    assert [(e["cn"], e["reason"], e["owner"]) for e in refused] == [
        ("mallory", "mac_owned_by_other_client", "alice"),
        ("alice", "max_routes_per_client", None)]
