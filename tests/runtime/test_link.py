"""UDP and TCP links between two test namespaces joined by a veth."""

from __future__ import annotations

import socket

import pytest
import trio

from tests.netns import NetnsPair
from trivpn.protocol.errors import DecodeError
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.link import (
    SOCKET_BUFFER,
    LinkClosed,
    TcpLink,
    TcpLinkListener,
    UdpLink,
    open_tcp_link,
    open_tcp_listener,
)

A_IP = "198.18.0.1"
B_IP = "198.18.0.2"


@pytest.fixture
def udp_pair(netns_pair: NetnsPair):
    a = UdpLink.bind(A_IP, 0, netns=netns_pair.a.name)
    b = UdpLink.bind(B_IP, 0, netns=netns_pair.b.name)
    yield a, b
    a.close()
    b.close()


async def _queued(link: UdpLink) -> None:
    """Let the kernel finish delivering what was just sent (veth hands off via softirq)."""
    await trio.lowlevel.wait_readable(link.socket)
    await trio.sleep(0.05)


async def test_udp_recv_batch_drains_all_queued_datagrams(udp_pair) -> None:
    a, b = udp_pair
    sent = [b"datagram-%d" % i for i in range(8)]
    with trio.fail_after(5):
        assert a.try_send_many(sent, b.local_address) == 8
        await _queued(b)
        batch = await b.recv_batch()
    assert [d for d, _ in batch] == sent
    assert {addr for _, addr in batch} == {a.local_address}
    assert (b.counters.rx_packets, b.counters.rx_bytes) == (8, sum(map(len, sent)))


async def test_udp_recv_batch_stops_at_max_packets(udp_pair) -> None:
    a, b = udp_pair
    with trio.fail_after(5):
        a.try_send_many([b"x"] * 5, b.local_address)
        await _queued(b)
        assert len(await b.recv_batch(max_packets=3)) == 3
        assert len(await b.recv_batch(max_packets=3)) == 2


async def test_udp_recv_batch_waits_for_first_datagram(udp_pair) -> None:
    a, b = udp_pair
    got: list[list[tuple[bytes, object]]] = []

    async def receiver() -> None:
        got.append(await b.recv_batch())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.sleep(0.05)
            assert got == []
            assert await a.send(b"late", b.local_address)
    assert [d for d, _ in got[0]] == [b"late"]


def test_udp_recv_ready_returns_nothing_when_nothing_is_queued(udp_pair) -> None:
    _, b = udp_pair
    assert b.recv_ready() == []
    assert b.counters.rx_packets == 0


async def test_udp_recv_ready_drains_what_is_queued(udp_pair) -> None:
    a, b = udp_pair
    sent = [b"d%d" % i for i in range(5)]
    with trio.fail_after(5):
        assert a.try_send_many(sent, b.local_address) == 5
        await _queued(b)
    assert [d for d, _ in b.recv_ready()] == sent
    assert b.recv_ready() == []


async def test_udp_recv_ready_without_drain_receives_once(udp_pair) -> None:
    a, b = udp_pair
    with trio.fail_after(5):
        a.try_send_many([b"first", b"second-one"], b.local_address)  # sizes differ: no GRO
        await _queued(b)
    assert [d for d, _ in b.recv_ready(drain=False)] == [b"first"]
    assert [d for d, _ in b.recv_ready(drain=False)] == [b"second-one"]
    assert b.counters.rx_packets == 2


async def test_udp_send_nowait_sends_and_counts(udp_pair) -> None:
    a, b = udp_pair
    assert a.send_nowait(b"lone", b.local_address) is True
    assert (a.counters.tx_packets, a.counters.tx_bytes) == (1, 4)
    with trio.fail_after(5):
        await _queued(b)
    assert [d for d, _ in b.recv_ready(drain=False)] == [b"lone"]


async def test_udp_send_many_counts_sent_datagrams(udp_pair) -> None:
    a, b = udp_pair
    with trio.fail_after(5):
        assert await a.send_many([b"1", b"22", b"333"], b.local_address) == 3
    assert (a.counters.tx_packets, a.counters.tx_bytes) == (3, 6)


async def test_udp_icmp_error_on_connected_socket_is_counted_and_skipped(
        netns_pair: NetnsPair) -> None:
    probe = UdpLink.bind(B_IP, 0, netns=netns_pair.b.name)
    port = probe.local_address[1]
    probe.close()  # nothing listens on B_IP:port now
    client = UdpLink.bind(A_IP, 0, netns=netns_pair.a.name)
    client.connect((B_IP, port))
    with trio.fail_after(5):
        assert client.try_send(b"hello?")
        await trio.sleep(0.05)  # ICMP port unreachable comes back
        server = UdpLink.bind(B_IP, port, netns=netns_pair.b.name)
        assert await server.send(b"answer", client.local_address)
        batch = await client.recv_batch()
    assert [d for d, _ in batch] == [b"answer"]
    assert client.counters.rx_errors == 1
    client.close()
    server.close()


def test_udp_socket_buffers_are_enlarged(udp_pair) -> None:
    a, _ = udp_pair
    # the kernel doubles the requested value for bookkeeping
    assert a.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= SOCKET_BUFFER
    assert a.socket.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= SOCKET_BUFFER


def test_udp_bind_to_foreign_address_fails_with_where(netns_pair: NetnsPair) -> None:
    with pytest.raises(RuntimeSetupError) as info:
        UdpLink.bind(B_IP, 0, netns=netns_pair.a.name)  # B_IP lives in namespace b
    assert info.value.where == f"{B_IP}:0"


async def test_udp_recv_after_close_raises_closed(udp_pair) -> None:
    a, _ = udp_pair
    a.close()
    with pytest.raises(trio.ClosedResourceError):
        await a.recv_batch()


async def _tcp_pair(pair: NetnsPair) -> tuple[TcpLink, TcpLink, TcpLinkListener]:
    listener = await open_tcp_listener(B_IP, 0, netns=pair.b.name)
    port = listener.local_address[1]
    async with trio.open_nursery() as nursery:
        accepted: list[TcpLink] = []

        async def accept() -> None:
            accepted.append(await listener.accept())

        nursery.start_soon(accept)
        client = await open_tcp_link(B_IP, port, netns=pair.a.name)
    return client, accepted[0], listener


async def test_tcp_packets_round_trip_with_framing(netns_pair: NetnsPair) -> None:
    with trio.fail_after(5):
        client, server, listener = await _tcp_pair(netns_pair)
        await client.send_packet(b"\x38hard-reset")
        await client.send_packets([b"one", b"two" * 500, b"three"])
        received: list[bytes] = []
        while len(received) < 4:
            received += await server.recv_packets()
        await server.send_packet(b"reply")
        assert await client.recv_packets() == [b"reply"]
        assert server.peer_address == client.local_address
        await client.aclose()
        await server.aclose()
        await listener.aclose()
    assert received == [b"\x38hard-reset", b"one", b"two" * 500, b"three"]
    assert client.counters.tx_packets == 4
    assert server.counters.rx_packets == 4


async def test_tcp_bad_length_from_peer_raises_decode_error(netns_pair: NetnsPair) -> None:
    with trio.fail_after(5):
        client, server, listener = await _tcp_pair(netns_pair)
        await client.stream.send_all(b"\x00\x00garbage")
        with pytest.raises(DecodeError):
            await server.recv_packets()
        await client.aclose()
        await server.aclose()
        await listener.aclose()


async def test_tcp_eof_raises_link_closed(netns_pair: NetnsPair) -> None:
    with trio.fail_after(5):
        client, server, listener = await _tcp_pair(netns_pair)
        await client.stream.send_all(b"\x00\x05ab")  # half a packet, then EOF
        await client.aclose()
        with pytest.raises(LinkClosed, match="4 bytes"):
            await server.recv_packets()
        await server.aclose()
        await listener.aclose()


async def test_tcp_connect_to_closed_port_fails_with_where(netns_pair: NetnsPair) -> None:
    with trio.fail_after(5), pytest.raises(RuntimeSetupError) as info:
        await open_tcp_link(B_IP, 1, netns=netns_pair.a.name)
    assert info.value.where == f"{B_IP}:1"


async def test_udp_close_wakes_a_waiting_receiver(udp_pair) -> None:
    _, b = udp_pair
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def closer() -> None:
                await trio.sleep(0.05)
                b.close()

            nursery.start_soon(closer)
            with pytest.raises(trio.ClosedResourceError):
                await b.recv_batch()
