"""The server runtime end to end in memory: a real :class:`~trivpn.runtime.server.Server` and
real :class:`~trivpn.runtime.client.Client`\\ s over the in-memory link and device doubles, on
trio's ``MockClock`` (no root, no namespaces; minutes of keepalives pass in milliseconds). The
namespace and real-openvpn interop tests remain the truth; these make the runtime easy to
change."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import SERVER
from tests.runtime.serverlab import ServerLab
from trivpn.runtime.memory import Conditions, MemoryClientHost


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_client_and_server_connect_and_move_packets_both_ways(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, proto: str):
    async with ServerLab(tmp_path, proto=proto) as lab:
        server = lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        assert c.vpn_ip == "198.18.8.2"
        for seq in range(5):
            await lab.client_to_server(c, seq)
            await lab.server_to_client(c, seq)
        [peer] = server.connected
        assert peer.common_name == "alice"
        assert (peer.tcp is not None) == (proto == "tcp")
        assert await lab.stop_client(c) == 0
        assert await lab.stop_server() == 0
    [connected] = lab.server_events("peer_connected")
    assert connected["cn"] == "alice" and connected["vpn_ip"] == "198.18.8.2"
    assert connected["proto"] == proto
    assert lab.server_device.closed


@pytest.mark.directive("explicit-exit-notify")
async def test_server_removes_a_client_that_says_it_exits(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()
        c = lab.start_client("alice", "explicit-exit-notify 1\n")
        await lab.wait_for(c.tunnel_up, 30)
        assert await lab.stop_client(c) == 0
        await lab.wait_for(lambda: not server.connected, 5)
        assert await lab.stop_server() == 0
    [gone] = lab.server_events("peer_disconnected")
    assert gone["reason"] == "exit" and gone["cn"] == "alice"


async def test_client_reconnects_after_the_server_restarts(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    # the server pushes "ping 10" and "ping-restart 60": the client notices the new server
    # (which knows nothing of it) by silence, then reconnects
    async with ServerLab(tmp_path) as lab:
        lab.start_server()
        c = lab.start_client("alice", "persist-tun\n")
        await lab.wait_for(c.tunnel_up, 30)
        await lab.client_to_server(c, 1)
        assert await lab.stop_server() == 0
        stopped = trio.current_time()
        server = lab.start_server()
        await lab.wait_for(lambda: len(lab.client_events("ping_restart")) == 1, 120)
        assert 55 <= trio.current_time() - stopped <= 65
        await lab.wait_for(lambda: len(server.connected) == 1, 60)
        await lab.wait_for(lambda: len(lab.client_events("tun_configured")) == 2, 30)
        await lab.client_to_server(c, 2)
        await lab.server_to_client(c, 2)
        assert await lab.stop_client(c) == 0
    assert len(c.host.tunnels) == 1  # persist-tun


async def test_tcp_client_reconnects_when_the_server_restarts(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, proto="tcp") as lab:
        lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        assert await lab.stop_server() == 0  # closes the connection
        server = lab.start_server()
        await lab.wait_for(lambda: len(server.connected) == 1, 60)
        await lab.wait_for(lambda: len(lab.client_events("tun_configured")) == 2, 30)
        await lab.client_to_server(c, 1)
        await lab.server_to_client(c, 1)
        assert await lab.stop_client(c) == 0
    reasons = [e["reason"] for e in lab.client_events("reconnecting")]
    assert reasons == ["connection_closed"]


async def test_a_restarted_client_replaces_its_old_session(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()
        first = lab.start_client("alice", address="198.18.0.10", lport=40500)
        await lab.wait_for(first.tunnel_up, 30)
        first.client.stop.set()  # no explicit-exit-notify: the server is not told
        await first.done.wait()
        # the same address and port: the server sees a new session from a known peer
        second = lab.start_client("alice", address="198.18.0.10", lport=40500)
        await lab.wait_for(second.tunnel_up, 30)
        await lab.wait_for(lambda: len(lab.server_events("peer_connected")) == 2, 30)
        assert len(server.connected) == 1
        await lab.client_to_server(second, 1)
        await lab.server_to_client(second, 1)
        assert await lab.stop_client(second) == 0
    reasons = [e["reason"] for e in lab.server_events("peer_disconnected")]
    assert reasons[0] == "client_restarted"


@pytest.mark.directive("reneg-sec")
async def test_renegotiation_under_traffic_loses_no_tunnel(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, "reneg-sec 30\n") as lab:
        lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        for seq in range(8):
            await trio.sleep(12)
            await lab.client_to_server(c, seq)
            await lab.server_to_client(c, seq)
        assert await lab.stop_client(c) == 0
    assert len(lab.server_events("renegotiated")) >= 2
    assert len(lab.client_events("reconnecting")) == 0
    assert len(lab.server_events("peer_connected")) == 1


async def test_server_floats_a_client_whose_address_changes(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path) as lab:
        server = lab.start_server()
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        await lab.client_to_server(c, 1)
        inside = c.host.links[-1].local_address
        lab.network.translate(inside, ("198.18.1.77", 5555))  # NAT rebinding
        await lab.client_to_server(c, 2)
        lab.network.unreachable.add(inside)  # the old address is gone
        await lab.server_to_client(c, 2)
        assert server.connected[0].address == ("198.18.1.77", 5555)
        assert await lab.stop_client(c) == 0
    [floated] = lab.server_events("peer_floated")
    assert floated["peer"] == "198.18.1.77:5555"
    assert floated["previous"] == f"{inside[0]}:{inside[1]}"


@pytest.mark.directive("client-to-client")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_twenty_clients_at_once_reach_the_server_and_each_other(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, proto: str):
    async with ServerLab(tmp_path, "client-to-client\n", proto=proto) as lab:
        server = lab.start_server()
        clients = [lab.start_client(f"client{i}") for i in range(20)]
        await lab.wait_for(lambda: all(c.tunnel_up() for c in clients), 60)
        assert len({c.vpn_ip for c in clients}) == 20
        for seq, c in enumerate(clients):
            await lab.client_to_server(c, seq)
            await lab.server_to_client(c, seq)
            await lab.client_to_client(c, clients[(seq + 1) % 20], seq)
        assert len(server.connected) == 20
        for c in clients:
            assert await lab.stop_client(c) == 0
        assert await lab.stop_server() == 0


@pytest.mark.parametrize("seed", [1, 2])
async def test_handshake_and_traffic_survive_loss_duplication_and_reordering(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, seed: int):
    conditions = Conditions(loss=0.15, duplicate=0.05, reorder=0.2)
    async with ServerLab(tmp_path, conditions=conditions, seed=seed) as lab:
        lab.start_server()
        clients = [lab.start_client(f"client{i}") for i in range(3)]
        await lab.wait_for(lambda: all(c.tunnel_up() for c in clients), 120)
        answered = 0
        for seq in range(20):
            with trio.move_on_after(2):
                await lab.client_to_server(clients[seq % 3], seq, seconds=2)
                answered += 1
        assert await lab.stop_server() == 0
    assert lab.network.lost > 0
    assert answered >= 12  # about 0.85 of them arrive


@pytest.mark.directive("max-clients")
async def test_max_clients_turns_away_clients_beyond_the_limit(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, "max-clients 2\n") as lab:
        server = lab.start_server()
        admitted = [lab.start_client(f"client{i}", "explicit-exit-notify 1\n") for i in range(2)]
        await lab.wait_for(lambda: all(c.tunnel_up() for c in admitted), 30)
        late = lab.start_client("late")
        await trio.sleep(30)
        assert not late.tunnel_up()
        assert sorted(p.common_name or "" for p in server.connected) == ["client0", "client1"]
        assert await lab.stop_client(admitted[0]) == 0
        await lab.wait_for(late.tunnel_up, 120)  # a place is free again
        assert await lab.stop_server() == 0


async def test_silent_tcp_openings_from_one_source_do_not_lock_out_a_client(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    async with ServerLab(tmp_path, proto="tcp") as lab:
        server = lab.start_server()
        await trio.sleep(1)
        flood = MemoryClientHost(lab.network, address="198.18.2.1")
        links = [await flood.open_tcp(*SERVER, None, None, None) for _ in range(40)]
        await trio.sleep(0.5)
        c = lab.start_client("alice")
        await lab.wait_for(c.tunnel_up, 30)
        await lab.client_to_server(c, 1)
        assert len(server.preauth) <= server.preauth.limits.per_source
        await trio.sleep(70)  # the first-packet timeout closes what is left of the flood
        assert len(server.preauth) == 0
        await lab.client_to_server(c, 2)
        assert await lab.stop_server() == 0
        for link in links:
            await link.aclose()
    per_source = server.preauth.limits.per_source
    assert 0 < per_source < 40
    dropped = {str(e["reason"]): int(str(e["count"]))
               for e in lab.server_events("packet_dropped")}
    # each new opening beyond the per-source limit evicted that source's oldest one
    assert dropped["preauth_evicted"] == 40 - per_source
    assert dropped["tcp_first_packet_timeout"] == per_source


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_server_exits_1_when_its_port_is_taken(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, proto: str):
    async with ServerLab(tmp_path, proto=proto) as lab:
        lab.start_server()
        await lab.wait_for(lambda: bool(lab.server_events("link_open")), 5)
        first = lab.server
        second = lab.start_server()
        await lab.wait_for(lambda: lab.server_exit is not None, 5)
        assert lab.server_exit == 1
        assert second.tunnel is None and lab.server_host.tunnels[-1].closed  # closed again
        assert first is not None
        first.stop.set()
    [failed] = lab.server_events("setup_failed")
    assert failed["where"] == f"{SERVER[0]}:{SERVER[1]}"
