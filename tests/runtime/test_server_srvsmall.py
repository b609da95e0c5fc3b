"""opt-verify, tcp-queue-limit and bcast-buffers on a trivpn server (in memory: tests/runtime/
serverlab.py; the router alone for bcast-buffers).

The same refusal by the real ``openvpn`` 2.6 is checked in
tests/interop/test_srvsmall_vs_openvpn.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import ping
from tests.runtime.serverlab import SERVER_TUN_IP, ServerLab
from trivpn.runtime.peers import PeerTable
from trivpn.runtime.routing import Router, power_of_two_at_least
from trivpn.runtime.serverpeers import options_consistent


@pytest.mark.directive("opt-verify")
async def test_opt_verify_refuses_a_client_whose_options_differ(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, "opt-verify\n") as lab:
        lab.start_server()
        c = lab.start_client("alice", "tun-mtu 1400\n")
        await lab.wait_for(lambda: bool(lab.server_events("opt_verify_refused")), 30)
        await trio.sleep(5)
        assert not c.tunnel_up()
    [refused] = lab.server_events("opt_verify_refused")
    assert "tun-mtu 1400" in str(refused["received"])
    assert "tun-mtu 1500" in str(refused["expected"])
    assert not lab.server_events("peer_connected")


@pytest.mark.directive("opt-verify")
async def test_opt_verify_admits_a_client_whose_options_match(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, "opt-verify\n") as lab:
        lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        await lab.client_to_server(c, 1)
    assert not lab.server_events("opt_verify_refused")


async def test_without_opt_verify_a_client_whose_options_differ_connects(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        lab.start_server()
        c = lab.start_client("alice", "tun-mtu 1400\n")
        await lab.wait_for(c.tunnel_up, 30)


def test_options_of_another_version_only_warn_as_in_openvpn():
    expected = "V4,dev-type tun,link-mtu 1559,tun-mtu 1500,proto UDPv4,auth SHA1,tls-client"
    assert options_consistent(expected, expected)
    assert not options_consistent(expected.replace("1500", "1400"), expected)
    assert options_consistent("V3,dev-type tun", expected)  # options_cmp_equal_safe()


async def _burst_to_client(tmp_path: Path, server_extra: str, burst: int) -> tuple[int, int]:
    """``burst`` packets for the client put on the server's device at once; (delivered to
    the client, counted as dropped by the server)."""
    async with ServerLab(tmp_path, server_extra, proto="tcp") as lab:
        server = lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        await lab.server_to_client(c, 0)
        for seq in range(1, burst + 1):
            lab.server_device.device.inject(ping(seq, src=SERVER_TUN_IP, dst=c.vpn_ip))
        await trio.sleep(5)
        delivered = len(c.tunnel.device.delivered_nowait())
        return delivered, (server.counts["tcp_send_queue_full"]
                           + server.drops.totals["tcp_send_queue_full"])


@pytest.mark.directive("tcp-queue-limit")
async def test_tcp_queue_limit_drops_a_tcp_clients_packets_beyond_it(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    delivered, dropped = await _burst_to_client(tmp_path, "tcp-queue-limit 4\n", 40)
    assert delivered < 40 and dropped > 0
    assert delivered + dropped == 40


async def test_without_tcp_queue_limit_a_burst_reaches_the_tcp_client(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    assert await _burst_to_client(tmp_path, "", 40) == (40, 0)


class _Session:
    def encrypt_data(self, packet: bytes, now: float) -> bytes:
        return b"wire:" + packet


@dataclass(eq=False)
class _Peer:
    address: Any
    peer_id: int
    vaddr: bytes | None = None
    vaddr6: bytes | None = None
    mac_refused: tuple[str, ...] = ()
    session: _Session = field(default_factory=_Session)


def _tap_router(clients: int, bcast_buffers: int | None) -> tuple[Router[Any], list[_Peer]]:
    table: PeerTable[Any] = PeerTable()
    peers = [_Peer((f"198.18.0.{10 + i}", 40000 + i), i) for i in range(clients)]
    for peer in peers:
        table.add(peer)
    router: Router[Any] = Router(table, Counter(), tap=True, client_to_client=True, mss=None,
                                 on_mac_refused=lambda *_: None)
    router.connected = tuple(peers)
    if bcast_buffers is not None:
        router.flood_limit = power_of_two_at_least(bcast_buffers)
    return router, peers


BROADCAST_FRAME = b"\xff" * 6 + bytes((2, 0, 0, 0, 0, 1)) + b"\x08\x06" + b"\x00" * 28


@pytest.mark.directive("bcast-buffers")
def test_bcast_buffers_lets_a_flood_from_the_device_reach_only_that_many_clients():
    router, peers = _tap_router(6, 3)  # 3 rounds up to 4, as OpenVPN's adjust_power_of_2()
    out = router.from_device([BROADCAST_FRAME], 0.0)
    assert [p for p, _ in out] == peers[2:]  # the oldest copies are the ones dropped
    assert router.counts["bcast_buffers"] == 2


@pytest.mark.directive("bcast-buffers")
def test_bcast_buffers_bounds_a_clients_flood_to_the_others():
    router, peers = _tap_router(4, 2)
    frame = b"\xff" * 6 + bytes((2, 0, 0, 0, 0, 9)) + b"\x08\x06" + b"\x00" * 28
    out: list[tuple[Any, bytes]] = []
    to_device: list[bytes] = []
    router.from_peer(peers[0], frame, 0.0, out, to_device=to_device)
    assert to_device == [frame]  # the device still gets it (not in OpenVPN's queue either)
    assert [p for p, _ in out] == peers[2:]
    assert router.counts["bcast_buffers"] == 1


def test_without_bcast_buffers_a_flood_reaches_every_client():
    router, peers = _tap_router(300, None)
    assert [p for p, _ in router.from_device([BROADCAST_FRAME], 0.0)] == peers


@pytest.mark.parametrize(("n", "capacity"), [(1, 1), (2, 2), (3, 4), (256, 256), (257, 512)])
def test_bcast_buffers_rounds_up_to_a_power_of_two(n: int, capacity: int):
    assert power_of_two_at_least(n) == capacity
