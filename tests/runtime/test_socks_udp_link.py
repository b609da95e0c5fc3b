"""SocksUdpLink: datagrams to a SOCKS5 UDP relay carry the 10-byte header naming the server;
what comes back loses it, and anything malformed or from elsewhere is dropped and counted."""

from __future__ import annotations

import trio
import trio.testing

from trivpn.protocol.proxy_socks import unwrap_udp, wrap_udp
from trivpn.runtime.memory import MemoryNetwork
from trivpn.runtime.proxy import SocksUdpLink

RELAY = ("198.18.0.1", 40000)
SERVER = ("198.18.1.2", 1194)


def _pair() -> tuple[SocksUdpLink, MemoryNetwork]:
    network = MemoryNetwork()
    inner = network.bind("198.18.0.2", 5000)
    near, _ = trio.testing.memory_stream_pair()
    return SocksUdpLink(inner, RELAY, SERVER, near), network


async def test_sent_datagrams_go_to_the_relay_with_the_server_in_the_header() -> None:
    link, network = _pair()
    relay = network.bind(*RELAY)
    link.try_send_many([b"one", b"two"])
    got = await relay.recv_batch()
    if len(got) == 1:  # each datagram has its own arrival time: "two" may come a moment later
        got += await relay.recv_batch()
    assert [unwrap_udp(d) for d, _ in got] == [(b"one", SERVER), (b"two", SERVER)]
    assert all(src == ("198.18.0.2", 5000) for _, src in got)


async def test_received_datagrams_lose_the_header_and_strangers_are_dropped() -> None:
    link, network = _pair()
    relay = network.bind(*RELAY)
    relay.try_send_many([b"\x00\x00\x00\x01\x01", wrap_udp(b"x", "198.18.1.99", 1194),
                         wrap_udp(b"payload", *SERVER)], ("198.18.0.2", 5000))
    assert await link.recv_batch() == [(b"payload", SERVER)]
    assert link.dropped == 2
