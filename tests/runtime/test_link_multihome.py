"""``multihome``: the server's UDP link answers from the address each client sent to.

On loopback, where every 127.x address is local: a datagram sent to 127.0.0.2 on a socket
bound to the wildcard address is answered from 127.0.0.1 by a plain link (the routing table's
source) and from 127.0.0.2 by the multihome link. IPv6 (IPV6_RECVPKTINFO) in a test namespace
with two addresses from 2001:2::/48 on its loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from tests.netns import NetnsLab
from trivpn.runtime.link import PktinfoUdpLink, UdpLink

pytestmark = pytest.mark.directive("multihome")

SECOND = "127.0.0.2"


@pytest.fixture
def client() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


async def _echo_source(link: UdpLink, client: socket.socket) -> tuple[str, int]:
    """Send to the link's SECOND address, answer with the link; where the answer came from."""
    port = link.local_address[1]
    client.sendto(b"hello", (SECOND, port))
    batch = await link.recv_batch(8)
    assert [data for data, _ in batch] == [b"hello"]
    assert await link.send(b"reply", batch[0][1])
    data, source = await trio.to_thread.run_sync(client.recvfrom, 100)
    assert data == b"reply"
    return source[0], source[1]


async def test_multihome_link_replies_from_the_address_the_client_sent_to(
        client: socket.socket) -> None:
    link = PktinfoUdpLink.bind_multihome("0.0.0.0", 0)
    try:
        host, port = await _echo_source(link, client)
        assert (host, port) == (SECOND, link.local_address[1])
        assert link.source_for(client.getsockname()) == SECOND
    finally:
        link.close()


async def test_plain_link_replies_from_the_routing_tables_source(
        client: socket.socket) -> None:
    # the failure multihome fixes: the answer leaves from another local address
    link = UdpLink.bind("0.0.0.0", 0)
    try:
        host, _ = await _echo_source(link, client)
        assert host == "127.0.0.1"
    finally:
        link.close()


async def test_multihome_link_sends_plainly_to_an_address_never_heard_from(
        client: socket.socket) -> None:
    link = PktinfoUdpLink.bind_multihome("0.0.0.0", 0)
    try:
        assert link.source_for(client.getsockname()) is None
        assert await link.send(b"first", client.getsockname())
        data, _ = await trio.to_thread.run_sync(client.recvfrom, 100)
        assert data == b"first"
    finally:
        link.close()


async def test_multihome_link_forgets_the_least_recently_heard_source_beyond_its_bound(
        client: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PktinfoUdpLink, "MAX_SOURCES", 1)
    link = PktinfoUdpLink.bind_multihome("0.0.0.0", 0)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind(("127.0.0.1", 0))
        port = link.local_address[1]
        client.sendto(b"a", (SECOND, port))
        other.sendto(b"b", (SECOND, port))
        with trio.fail_after(2):
            got: list[object] = []
            while len(got) < 2:
                got += await link.recv_batch(8)
        assert link.source_for(client.getsockname()) is None
        assert link.source_for(other.getsockname()) == SECOND
    finally:
        other.close()
        link.close()


async def test_multihome_link_replies_from_the_ipv6_address_the_client_sent_to(
        netns_lab: NetnsLab) -> None:
    ns = netns_lab.add("v6")
    ns.ip("link", "set", "lo", "up")
    for address in ("2001:2::1/128", "2001:2::2/128"):
        ns.ip("addr", "add", address, "dev", "lo", "nodad")
    link = PktinfoUdpLink.bind_multihome("::", 0, netns=ns.name)
    plain = UdpLink.bind("::", 0, netns=ns.name)
    with ns.enter():
        client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        client.settimeout(2)
        client.bind(("2001:2::1", 0))
        sources = []
        for server in (link, plain):
            client.sendto(b"hello", ("2001:2::2", server.local_address[1]))
            with trio.fail_after(2):
                batch = await server.recv_batch(8)
            assert await server.send(b"reply", batch[0][1])
            _, source = await trio.to_thread.run_sync(client.recvfrom, 100)
            sources.append(source[0])
        # multihome answers from the address written to; the plain link from the source
        # address selection's choice for the destination 2001:2::1 (itself)
        assert sources == ["2001:2::2", "2001:2::1"]
        assert link.source_for(client.getsockname()) == "2001:2::2"
    finally:
        client.close()
        link.close()
        plain.close()
