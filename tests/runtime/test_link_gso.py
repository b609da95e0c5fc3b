"""UDP GSO (send) and GRO (receive) in UdpLink, between two test namespaces, and the fallback."""

from __future__ import annotations

import socket
import sys

import pytest
import trio

from tests.netns import NetnsPair
from trivpn.runtime.link import GSO_MAX_SEGMENTS, SOL_UDP, UDP_GRO, UdpLink

A_IP = "198.18.0.1"
B_IP = "198.18.0.2"


def _payloads(sizes: list[int]) -> list[bytes]:
    return [bytes([n % 251]) * size for n, size in enumerate(sizes)]


async def _settle(link: UdpLink) -> None:
    await trio.lowlevel.wait_readable(link.socket)
    await trio.sleep(0.05)


async def _receive(link: UdpLink, count: int, max_packets: int = 64) -> list[bytes]:
    got: list[bytes] = []
    with trio.fail_after(5):
        while len(got) < count:
            got += [d for d, _ in await link.recv_batch(max_packets)]
    return got


@pytest.fixture
def links(netns_pair: NetnsPair):
    a = UdpLink.bind(A_IP, 0, netns=netns_pair.a.name)
    b = UdpLink.bind(B_IP, 0, netns=netns_pair.b.name)
    yield a, b
    a.close()
    b.close()


def test_offloads_are_enabled_where_the_kernel_has_them(links) -> None:
    a, b = links
    assert a.gso and a.gro and b.gso and b.gro


async def test_a_same_size_burst_leaves_as_one_gso_datagram(links, netns_pair: NetnsPair):
    a, _ = links
    with netns_pair.b.enter():
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with raw:
        raw.bind((B_IP, 0))
        raw.setsockopt(SOL_UDP, UDP_GRO, 1)
        burst = [b"x" * 1000] * 20 + [b"y" * 300]
        with trio.fail_after(5):
            assert await a.send_many(burst, raw.getsockname()) == 21
        data, ancillary, _, _ = raw.recvmsg(65536, socket.CMSG_SPACE(4))
    sizes = [int.from_bytes(v[:4], sys.byteorder) for lvl, kind, v in ancillary
             if lvl == SOL_UDP and kind == UDP_GRO]
    assert data == b"".join(burst)  # one receive: the kernel kept the burst coalesced
    assert sizes == [1000]
    assert (a.counters.tx_packets, a.counters.tx_bytes) == (21, 20 * 1000 + 300)


async def test_coalesced_receive_is_split_back_into_the_datagrams_in_order(links):
    a, b = links
    sent = _payloads([500] * 10 + [120] + [700] * 3 + [40] + [900])
    with trio.fail_after(5):
        assert await a.send_many(sent, b.local_address) == len(sent)
        await _settle(b)
        got = await _receive(b, len(sent))
    assert got == sent
    assert (b.counters.rx_packets, b.counters.rx_bytes) == (len(sent), sum(map(len, sent)))


async def test_one_coalesced_receive_without_drain_is_split_whole(links):
    a, b = links
    sent = _payloads([600] * 8)
    with trio.fail_after(5):
        assert await a.send_many(sent, b.local_address) == len(sent)
        await _settle(b)
    got = [d for d, _ in b.recv_ready(drain=False)]
    assert got == sent  # one receive held the whole GSO burst
    assert (b.counters.rx_packets, b.counters.rx_bytes) == (len(sent), sum(map(len, sent)))
    assert b.recv_ready(drain=False) == []


async def test_datagrams_beyond_max_packets_wait_for_the_next_call(links):
    a, b = links
    sent = _payloads([200] * 10)
    with trio.fail_after(5):
        await a.send_many(sent, b.local_address)
        await _settle(b)
        batches = [len(await b.recv_batch(max_packets=4)) for _ in range(3)]
    assert batches == [4, 4, 2]


async def test_more_than_the_segment_limit_is_split_into_several_sends(links):
    a, b = links
    sent = _payloads([64] * (GSO_MAX_SEGMENTS * 2 + 5))
    with trio.fail_after(5):
        assert await a.send_many(sent, b.local_address) == len(sent)
        await _settle(b)
        assert await _receive(b, len(sent)) == sent


async def test_connected_socket_sends_bursts_without_an_address(links):
    a, b = links
    a.connect(b.local_address)
    sent = _payloads([300] * 6)
    with trio.fail_after(5):
        assert await a.send_many(sent) == 6
        assert a.try_send_many(sent) == 6
        await _settle(b)
        assert await _receive(b, 12) == sent + sent


async def test_datagrams_above_the_path_mtu_fall_back_to_single_sends(links):
    a, b = links
    sent = _payloads([1600] * 3)  # GSO refuses segments above the MTU; IP fragments them
    with trio.fail_after(5):
        assert await a.send_many(sent, b.local_address) == 3
        await _settle(b)
        assert await _receive(b, 3) == sent
    assert a.gso  # one refusal does not switch GSO off


async def test_without_offload_the_link_sends_and_receives_one_by_one(netns_pair: NetnsPair):
    a = UdpLink.bind(A_IP, 0, netns=netns_pair.a.name, offload=False)
    b = UdpLink.bind(B_IP, 0, netns=netns_pair.b.name, offload=False)
    try:
        assert not (a.gso or a.gro or b.gso or b.gro)
        sent = _payloads([400] * 5 + [100])
        with trio.fail_after(5):
            assert await a.send_many(sent, b.local_address) == 6
            assert a.try_send_many(sent, b.local_address) == 6
            await _settle(b)
            assert await _receive(b, 12) == sent + sent
    finally:
        a.close()
        b.close()


def test_gso_runs_group_equal_sizes_with_a_shorter_tail():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    link = UdpLink(sock, offload=False)
    try:
        sizes = [100, 100, 100, 60, 100, 200, 200, 300, 0, 50]
        runs = [[len(d) for d in run] for run in link._runs(_payloads(sizes))]
    finally:
        link.close()
    # an empty datagram never rides in a GSO run (it would vanish): it goes alone
    assert runs == [[100, 100, 100, 60], [100], [200, 200], [300], [0], [50]]
