"""opt-verify and tcp-queue-limit on a trivpn server, in memory (tests/runtime/serverlab.py).

The same refusal by the real ``openvpn`` 2.6 is checked in
tests/interop/test_srvsmall_vs_openvpn.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import ping
from tests.runtime.serverlab import SERVER_TUN_IP, ServerLab
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
