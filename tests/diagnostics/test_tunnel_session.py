"""The doctor's shared tunnel session: one handshake for tls.handshake and every lease, one
lease at a time, a failed handshake remembered, socket options put back after a lease."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
import trio

from trivpn.diagnostics.model import DoctorContext
from trivpn.diagnostics.tunnel_session import (
    Handshake,
    Tunnel,
    TunnelBroker,
    TunnelUnavailable,
    tunnel_lease,
)
from trivpn.protocol.push import Ifconfig, Ifconfig6, PushedOptions

PUSHED = PushedOptions(ifconfig=Ifconfig(IPv4Address("198.18.8.2"),
                                         IPv4Address("255.255.255.0")),
                       ifconfig_ipv6=Ifconfig6(IPv6Address("2001:2:0:8::1000"), 64,
                                               IPv6Address("2001:2:0:8::1")),
                       topology="subnet", route_gateway=IPv4Address("198.18.8.1"))


class LoopLink:
    """A fake session: every packet sent comes straight back, on a real UDP socket."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tunnel: Tunnel | None = None
        self.sent: list[bytes] = []
        self.errors: list[tuple[float, OSError]] = []

    async def send_inner(self, packet: bytes) -> None:
        self.sent.append(packet)
        assert self.tunnel is not None
        self.tunnel.deliver([packet])

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.sock

    def counters(self) -> dict[str, Any]:
        return {"drops": {"replay": 1}, "sent_packets": len(self.sent),
                "received_packets": len(self.sent), "link_error": None, "transport": "udp",
                "socket_errors": list(self.errors)}


class FakeConnector:
    def __init__(self, fail: TunnelUnavailable | None = None, delay: float = 0.0,
                 record: Handshake | None = None) -> None:
        self.fail, self.delay, self.record = fail, delay, record
        self.opened = 0
        self.closed = 0
        self.link = LoopLink()

    @asynccontextmanager
    async def __call__(self, ctx: DoctorContext) -> AsyncIterator[Tunnel]:
        self.opened += 1
        await trio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        tunnel = Tunnel(PUSHED, self.link, "198.18.0.1:1194/udp", "AES-256-GCM",
                        handshake=self.record)
        self.link.tunnel = tunnel
        try:
            yield tunnel
        finally:
            self.closed += 1
            self.link.sock.close()


def _ctx() -> DoctorContext:
    return DoctorContext(Path("client.conf"), None, "client", 5.0)


async def test_one_handshake_serves_every_lease():
    connect = FakeConnector(delay=0.1)
    async with TunnelBroker(connect) as broker:
        async def use() -> None:
            async with broker.lease(_ctx()) as t:
                assert t.gateway == "198.18.8.1"

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(use)
        async with broker.lease(_ctx()):
            pass
    assert connect.opened == 1
    assert broker.handshakes == 1
    assert broker.leases == 6
    assert connect.closed == 1  # goodbye once, when the broker closes


async def test_leases_are_exclusive():
    connect = FakeConnector()
    holders: list[int] = []
    overlap: list[int] = []
    async with TunnelBroker(connect) as broker:
        async def use(n: int) -> None:
            async with broker.lease(_ctx()):
                if holders:
                    overlap.append(n)
                holders.append(n)
                await trio.sleep(0.05)
                holders.remove(n)

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(use, n)
    assert overlap == []
    assert broker.leases == 4


async def test_failed_handshake_is_remembered_and_raised_to_every_lease():
    failure = TunnelUnavailable("handshake_failed", "the handshake did not complete "
                                "(auth_failed: AUTH_FAILED)", handshake_cause="auth_failed")
    connect = FakeConnector(fail=failure)
    async with TunnelBroker(connect) as broker:
        for _ in range(3):
            with pytest.raises(TunnelUnavailable) as info:
                async with broker.lease(_ctx()):
                    pytest.fail("a lease without a session")
            assert info.value.cause == "handshake_failed"
            assert info.value.evidence["handshake_cause"] == "auth_failed"
    assert connect.opened == 1
    result = failure.skip_result("tunnel.traffic")
    assert result.status == "skip"
    assert "auth_failed" in result.summary


async def test_a_waiter_cancelled_during_the_handshake_does_not_abort_it():
    connect = FakeConnector(delay=0.3)
    async with TunnelBroker(connect) as broker:
        with trio.move_on_after(0.05):
            async with broker.lease(_ctx()):
                pytest.fail("the handshake takes 0.3 s")
        async with broker.lease(_ctx()) as t:
            assert t.local_ipv4 == "198.18.8.2"
    assert connect.opened == 1


async def test_receive_returns_the_matching_packet_and_keeps_the_others():
    connect = FakeConnector()
    async with TunnelBroker(connect) as broker, broker.lease(_ctx()) as t:
        await t.send(b"first")
        await t.send(b"second")
        got = await t.receive(lambda p: p if p == b"second" else None,
                              trio.current_time() + 1)
        assert got == b"second"
        assert await t.receive(lambda p: p, trio.current_time() + 1) == b"first"
        assert await t.receive(lambda p: p, trio.current_time() + 0.05) is None
        assert t.drops == {"replay": 1}
        assert (t.local_ipv6, t.gateway_ipv6) == ("2001:2:0:8::1000", "2001:2:0:8::1")


async def test_packets_of_an_earlier_lease_are_not_seen_by_the_next():
    connect = FakeConnector()
    async with TunnelBroker(connect) as broker:
        async with broker.lease(_ctx()) as t:
            await t.send(b"left over")
        async with broker.lease(_ctx()) as t:
            assert await t.receive(lambda p: p, trio.current_time() + 0.05) is None


async def test_socket_options_set_in_a_lease_are_restored_after_it():
    connect = FakeConnector()
    async with TunnelBroker(connect) as broker:
        async with broker.lease(_ctx()) as t:
            before = t.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
            t.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 3)
            assert t.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 3
        async with broker.lease(_ctx()) as t:
            assert t.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == before


async def test_lease_after_close_is_refused():
    connect = FakeConnector()
    async with TunnelBroker(connect) as broker:
        async with broker.lease(_ctx()):
            pass
        await broker.aclose()
        with pytest.raises(TunnelUnavailable) as info:
            async with broker.lease(_ctx()):
                pass
        assert info.value.cause == "closed"


async def test_a_context_without_broker_gets_a_private_session():
    ctx = _ctx()  # options=None: the real connector explains why there is no session
    with pytest.raises(TunnelUnavailable) as info:
        async with tunnel_lease(ctx):
            pass
    assert info.value.cause == "no_inputs"
    assert "did not parse" in info.value.summary


async def test_socket_errors_are_those_of_the_current_lease():
    connect = FakeConnector()
    async with TunnelBroker(connect) as broker:
        async with broker.lease(_ctx()):
            connect.link.errors.append((trio.current_time(), OSError(90, "Message too long")))
            await trio.sleep(0.01)
        async with broker.lease(_ctx()) as t:
            assert t.socket_errors() == []
            await trio.sleep(0.01)
            connect.link.errors.append((trio.current_time(), OSError(111, "refused")))
            assert [e.errno for e in t.socket_errors()] == [111]


def _record() -> Handshake:
    nothing: Any = None
    return Handshake(nothing, nothing, nothing, 5.0, False, 0.0, nothing)


async def test_tls_handshake_and_the_leases_share_one_handshake():
    record = _record()
    connect = FakeConnector(delay=0.1, record=record)
    async with TunnelBroker(connect) as broker:
        async def use() -> None:
            async with broker.lease(_ctx()):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(use)
            assert await broker.handshake(_ctx()) is record
            nursery.start_soon(use)
    assert connect.opened == 1 and broker.handshakes == 1 and broker.leases == 2


async def test_a_failed_handshake_is_reported_to_tls_handshake_and_refused_to_leases():
    record = _record()
    connect = FakeConnector(fail=TunnelUnavailable("handshake_failed", "no PUSH_REPLY",
                                                   handshake=record))
    async with TunnelBroker(connect) as broker:
        assert await broker.handshake(_ctx()) is record
        with pytest.raises(TunnelUnavailable):
            async with broker.lease(_ctx()):
                pytest.fail("a lease without a session")
    assert connect.opened == 1


async def test_no_handshake_attempted_is_raised_to_tls_handshake():
    connect = FakeConnector(fail=TunnelUnavailable("no_inputs", "the config did not parse"))
    async with TunnelBroker(connect) as broker:
        with pytest.raises(TunnelUnavailable) as info:
            await broker.handshake(_ctx())
    assert info.value.cause == "no_inputs"
