"""The in-memory doubles behave like the transports they stand in for."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trivpn.protocol.errors import DecodeError
from trivpn.runtime.link import LinkClosed
from trivpn.runtime.memory import (
    Conditions,
    MemoryDevice,
    MemoryNetwork,
    memory_packet_link_pair,
)

A = ("198.18.0.1", 1194)


async def test_datagrams_arrive_after_the_delay_with_their_source(
        autojump_clock: trio.testing.MockClock):
    net = MemoryNetwork(Conditions(delay=0.25))
    server, client = net.bind(*A), net.bind("198.18.0.2")
    start = trio.current_time()
    client.try_send_many([b"one", b"two"], A)
    assert await server.recv_batch() == [(b"one", client.local_address),
                                         (b"two", client.local_address)]
    assert trio.current_time() - start == pytest.approx(0.25)
    assert server.counters.rx_packets == 2 and client.counters.tx_packets == 2


async def test_one_addressed_link_serves_many_peers(autojump_clock: trio.testing.MockClock):
    net = MemoryNetwork()
    server = net.bind(*A)
    clients = [net.bind("198.18.0.2") for _ in range(20)]
    for i, c in enumerate(clients):
        c.try_send_many([bytes([i])], A)
    batch = await server.recv_batch()
    assert {addr for _, addr in batch} == {c.local_address for c in clients}
    for data, addr in batch:
        server.try_send_many([data * 2], addr)
    for i, c in enumerate(clients):
        assert await c.recv_batch() == [(bytes([i]) * 2, A)]


async def test_a_connected_link_receives_only_from_its_peer(
        autojump_clock: trio.testing.MockClock):
    net = MemoryNetwork()
    server, other = net.bind(*A), net.bind("198.18.0.3", 1194)
    client = net.bind("198.18.0.2")
    client.connect(A)
    other.try_send_many([b"stranger"], client.local_address)
    server.try_send_many([b"peer"], client.local_address)
    assert await client.recv_batch() == [(b"peer", A)]


async def test_loss_is_seeded_and_counted(autojump_clock: trio.testing.MockClock):
    net1 = MemoryNetwork(Conditions(loss=0.3), seed=5)
    net2 = MemoryNetwork(Conditions(loss=0.3), seed=5)
    got = []
    for net in (net1, net2):
        server, client = net.bind(*A), net.bind("198.18.0.2")
        client.try_send_many([bytes([i]) for i in range(100)], A)
        batch = await server.recv_batch(max_packets=1000)
        got.append([d for d, _ in batch])
        assert net.lost + len(batch) == 100
    assert 10 < net1.lost < 50
    assert got[0] == got[1]


async def test_reordering_changes_the_arrival_order(autojump_clock: trio.testing.MockClock):
    net = MemoryNetwork(Conditions(reorder=0.5), seed=3)
    server, client = net.bind(*A), net.bind("198.18.0.2")
    sent = [bytes([i]) for i in range(50)]
    client.try_send_many(sent, A)
    received: list[bytes] = []
    while len(received) < 50:
        received += [d for d, _ in await server.recv_batch()]
    assert sorted(received) == sent and received != sent


async def test_closing_wakes_a_waiting_receiver(autojump_clock: trio.testing.MockClock):
    net = MemoryNetwork()
    link = net.bind(*A)

    async def close_later() -> None:
        await trio.sleep(0.5)
        link.close()

    failed: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        try:
            await link.recv_batch()
        except trio.ClosedResourceError as exc:
            failed.append(exc)
    assert len(failed) == 1 and trio.current_time() == pytest.approx(0.5)


async def test_framed_pair_carries_packets_and_rejects_a_bad_length():
    client, server = memory_packet_link_pair()
    await client.send_packets([b"a" * 10, b"b" * 300])
    got: list[bytes] = []
    while len(got) < 2:
        got += await server.recv_packets()
    assert got == [b"a" * 10, b"b" * 300]
    await client._stream.send_all(b"\x00\x00")  # a zero length: a framing error
    with pytest.raises(DecodeError):
        await server.recv_packets()
    await client.aclose()


async def test_framed_pair_reports_the_peer_closing():
    client, server = memory_packet_link_pair()
    await client.aclose()
    with pytest.raises(LinkClosed):
        await server.recv_packets()


async def test_device_queues_both_ways_and_counts_write_drops():
    device = MemoryDevice(queue=2)
    device.inject(b"p1")
    device.inject(b"p2")
    assert await device.read_batch() == [b"p1", b"p2"]
    assert device.write_many([b"x", b"y", b"z"]) == 2
    assert device.write_drops == 1
    assert device.delivered_nowait() == [b"x", b"y"]
    device.close()
    with pytest.raises(trio.ClosedResourceError):
        device.write(b"late")
    with pytest.raises(trio.ClosedResourceError):
        await device.read_batch()
