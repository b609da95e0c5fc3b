"""The client runtime end to end in memory: a real :class:`~trivpn.runtime.client.Client` over
the in-memory link and device doubles, against a peer of sans-IO server sessions, on trio's
``MockClock`` (minutes of keepalives and reconnects pass in milliseconds; no root, no
namespaces). The namespace and real-openvpn interop tests remain the truth; these make the
runtime easy to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from tests.runtime.memorykit import CLIENT_TUN_IP, SERVER, Lab
from trivpn.protocol import events as ev
from trivpn.runtime.memory import Conditions


@pytest.mark.parametrize("proto", ["udp", "tcp-client"])
async def test_client_connects_configures_the_tunnel_and_moves_packets(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, proto: str):
    lab = Lab.create(tmp_path, proto=proto)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        tunnel = lab.host.tunnels[-1]
        assert [a.address for a in tunnel.plan.addresses] == [CLIENT_TUN_IP]
        for seq in range(5):
            await lab.roundtrip(seq)
        assert len(lab.peer.peers[0].tun) == 5
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert lab.log.count("tun_configured") == 1
    assert tunnel.closed


async def test_ping_restart_reconnects_after_the_server_goes_silent(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    # the peer pushes "ping 10" and "ping-restart 60"
    lab = Lab.create(tmp_path, "persist-tun\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        started = trio.current_time()
        lab.peer.silent = True
        await lab.wait_for(lambda: lab.log.count("ping_restart") == 1, 120)
        assert 59 <= trio.current_time() - started <= 62
        lab.peer.silent = False
        await lab.wait_for(lambda: lab.peer.established() == 2, 60)
        await lab.wait_for(lambda: lab.log.count("tun_configured") == 2, 30)
        assert len(lab.host.tunnels) == 1  # persist-tun: the device stays
        await lab.roundtrip(2)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert [e["reason"] for e in lab.log.events() if e["event"] == "reconnecting"] == [
        "ping_restart"]


async def test_renegotiation_keeps_the_tunnel_moving(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "reneg-sec 30\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        for seq in range(4):
            await trio.sleep(25)
            await lab.roundtrip(seq)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert lab.log.count("renegotiated") >= 2
    peer = lab.peer.peers[0]
    assert sum(isinstance(e, ev.DataChannelReady) and e.renegotiated
               for e in peer.events) >= 2
    assert lab.log.count("reconnecting") == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_handshake_and_traffic_survive_loss_duplication_and_reordering(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, seed: int):
    conditions = Conditions(loss=0.15, duplicate=0.05, reorder=0.2)
    lab = Lab.create(tmp_path, conditions=conditions, seed=seed)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 120)
        answered = 0
        for seq in range(20):
            with trio.move_on_after(2):
                await lab.roundtrip(seq, seconds=2)
                answered += 1
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert lab.network.lost > 0
    assert answered >= 10  # about 0.85 ** 2 of them come back


@pytest.mark.directive("float")
@pytest.mark.parametrize("float_", [True, False])
async def test_float_adopts_the_servers_new_address_only_with_float(
        tmp_path: Path, autojump_clock: trio.testing.MockClock, float_: bool):
    lab = Lab.create(tmp_path, "float\n" if float_ else "")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        lab.network.translate(SERVER, ("198.18.0.9", 1194))  # the server's answers change
        answered = []
        with trio.move_on_after(5):
            await lab.roundtrip(2, seconds=5)
            answered.append(2)
            lab.network.unreachable.add(SERVER)  # from now on only the new address works
            await lab.roundtrip(3, seconds=5)
            answered.append(3)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert answered == ([2, 3] if float_ else [])
    floated = [e for e in lab.log.events() if e["event"] == "peer_floated"]
    assert [e["peer"] for e in floated] == (["198.18.0.9:1194"] if float_ else [])


@pytest.mark.directive("explicit-exit-notify")
async def test_explicit_exit_notify_tells_the_server_on_stop(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "explicit-exit-notify 2\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert lab.log.count("exit_notify_sent") == 1
    assert any(isinstance(e, ev.PeerExited) for e in lab.peer.peers[0].events)


async def test_twenty_clients_share_one_addressed_server_link(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    first = Lab.create(tmp_path)
    labs = [first]
    for i in range(1, 20):
        directory = tmp_path / str(i)
        directory.mkdir()
        labs.append(Lab.create(directory, peer=first.peer, network=first.network,
                               address=f"198.18.0.{10 + i}"))
    async with trio.open_nursery() as nursery:
        await first.start(nursery)
        for lab in labs[1:]:
            await lab.start(nursery, serve=False)
        with trio.fail_after(60):
            while not all(lab.tunnel_up() for lab in labs):
                await trio.sleep(0.1)
        for seq, lab in enumerate(labs):
            await lab.roundtrip(seq)
        for lab in labs:
            assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert first.peer.established() == 20
    assert all(len(p.tun) == 1 for p in first.peer.peers)
