"""The TCP server before authentication, over loopback TCP: the first packet of a connection
must be a valid client reset (closed at once otherwise, or after the first-packet timeout),
connect-freq-initial counts TCP resets that go nowhere, and idle connections live in a
pre-authentication quota of their own instead of taking max-clients slots. The UDP cookie path
shares the quota and its per-address limit (connect-freq itself is UDP-only: the config parser
refuses it with a TCP server, as OpenVPN 2.6 does)."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from tests.config.helpers import SERVER_BASE
from tests.protocol.sessionkit import client_config, server_config
from tests.runtime.test_server_admission import (
    _client,
    _complete_cookie,
    _exchange,
    _receive,
    _server,
)
from trivpn.config import parse_config
from trivpn.logging import get_logger
from trivpn.protocol.admission import REFUSED_PER_SOURCE, REFUSED_QUOTA, PreauthLimits
from trivpn.protocol.framing import StreamDeframer, frame
from trivpn.protocol.packets import Opcode
from trivpn.protocol.session import Session
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.wrap import ControlWrap, TlsAuth
from trivpn.runtime.link import open_tcp_listener
from trivpn.runtime.metrics import MetricsSnapshot, render_metrics
from trivpn.runtime.server import Server

KEY = StaticKey(bytes(range(256)))
CLOSED_AT_ONCE = 1.0  # seconds: "at once", generously for a loaded test machine


@dataclass
class Lab:
    server: Server
    port: int
    logs: list[MutableMapping[str, Any]]

    def events(self, name: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e.get("event") == name]


@asynccontextmanager
async def tcp_server(extra: str = "", *, hand_window: float = 60.0,
                     server_wrap: ControlWrap | None = None,
                     limits: PreauthLimits | None = None) -> AsyncIterator[Lab]:
    with capture_logs() as logs:
        options = parse_config(SERVER_BASE + "proto tcp-server\n" + extra, "server.conf")
        server = Server(options, get_logger())
        server.config = server_config(wrap=server_wrap, hand_window=hand_window)
        if limits is not None:
            server.preauth.limits = limits
        server.listener = await open_tcp_listener("127.0.0.1", 0)
        async with trio.open_nursery() as nursery:
            server.peers_nursery = nursery
            nursery.start_soon(server.tcp_transport.run_acceptor)
            try:
                yield Lab(server, server.listener.local_address[1], logs)
            finally:
                nursery.cancel_scope.cancel()
        await server.listener.aclose()


async def _connect(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=source)


async def _closed_within(stream: trio.SocketStream, seconds: float) -> bool:
    """True if the server closes (EOF or reset) within ``seconds``."""
    with trio.move_on_after(seconds):
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def _server_answer(stream: trio.SocketStream, seconds: float = 5.0) -> list[bytes]:
    """The server's first framed packets on ``stream`` (empty if it closed or said nothing)."""
    deframer = StreamDeframer()
    with trio.move_on_after(seconds):
        while True:
            try:
                data = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                return []
            if not data:
                return []
            packets = deframer.feed(data)
            if packets:
                return packets
    return []


def _client_reset(wrap: ControlWrap | None = None) -> tuple[Session, bytes]:
    client = Session(client_config(wrap=wrap), 0.0)
    client.start(0.0)
    (reset,) = client.take_datagrams()
    return client, reset


async def _valid_client(port: int, source: str = "127.0.0.1") -> trio.SocketStream:
    """A connection that sends a client reset and gets the server's reset back."""
    stream = await _connect(port, source)
    await stream.send_all(frame(_client_reset()[1]))
    (answer, *_) = await _server_answer(stream)
    assert answer[0] >> 3 == Opcode.CONTROL_HARD_RESET_SERVER_V2
    return stream


def _count(lab: Lab, reason: str) -> int:
    return lab.server.counts[reason]


@pytest.mark.directive("proto")
@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: vpn\r\n\r\n",           # length 0x4745: announced too long
    frame(b"\x20" + bytes(20)),                       # a CONTROL_V1, not a reset
    frame(bytes(range(1, 40))),                       # a framed packet of noise
    b"\x00\x00",                                      # the impossible length 0
])
async def test_tcp_connection_whose_first_packet_is_not_a_client_reset_is_closed_at_once(
        garbage: bytes):
    async with tcp_server() as lab:
        stream = await _connect(lab.port)
        await stream.send_all(garbage)
        assert await _closed_within(stream, CLOSED_AT_ONCE)
        await trio.sleep(0.05)
        assert _count(lab, "tcp_bad_first_packet") == 1
        assert len(lab.server.table) == 0 and len(lab.server.preauth) == 0
        assert not lab.events("tls_handshake_started")


@pytest.mark.directive("proto", "tls-auth")
async def test_tcp_reset_that_fails_tls_auth_is_closed_at_once_and_a_good_one_answered():
    async with tcp_server(server_wrap=TlsAuth(KEY, 0)) as lab:
        bad = await _connect(lab.port)
        await bad.send_all(frame(_client_reset(TlsAuth(StaticKey(bytes(256)), 1))[1]))
        assert await _closed_within(bad, CLOSED_AT_ONCE)
        good = await _connect(lab.port)
        await good.send_all(frame(_client_reset(TlsAuth(KEY, 1))[1]))
        (answer, *_) = await _server_answer(good)
        assert answer[0] >> 3 == Opcode.CONTROL_HARD_RESET_SERVER_V2
        assert len(lab.server.table) == 1
        assert _count(lab, "tcp_bad_first_packet") == 1


@pytest.mark.directive("proto", "hand-window")
async def test_silent_tcp_connection_is_closed_after_the_first_packet_timeout():
    async with tcp_server(hand_window=1.0) as lab:  # timeout: min(5 s, hand-window)
        stream = await _connect(lab.port)
        start = trio.current_time()
        assert await _closed_within(stream, 4.0)
        assert 0.8 <= trio.current_time() - start < 3.0
        assert _count(lab, "tcp_first_packet_timeout") == 1
        assert len(lab.server.preauth) == 0 and len(lab.server.table) == 0


@pytest.mark.directive("max-clients", "proto")
async def test_idle_tcp_connections_take_no_max_clients_slot_and_are_evicted_for_a_client():
    limits = PreauthLimits(total=8, per_source=8)
    async with tcp_server("max-clients 1\n", limits=limits) as lab:
        idle = [await _connect(lab.port) for _ in range(20)]  # all from 127.0.0.1
        await trio.sleep(0.2)
        assert len(lab.server.preauth) == 8 and len(lab.server.table) == 0
        assert _count(lab, "preauth_evicted") == 12
        client = await _valid_client(lab.port)  # evicts one more idle opening
        assert len(lab.server.table) == 1
        closed = [s for s in idle if await _closed_within(s, 0.05)]
        assert len(closed) == 13
        for stream in [*idle, client]:
            await stream.aclose()


@pytest.mark.directive("max-clients", "proto")
async def test_unauthenticated_sessions_use_the_quota_not_max_clients_and_refusal_is_logged():
    limits = PreauthLimits(total=2, per_source=2)
    async with tcp_server("max-clients 50\n", limits=limits) as lab:
        first, second = await _valid_client(lab.port), await _valid_client(lab.port)
        assert len(lab.server.preauth) == 2 and lab.server.preauth.openings == 0
        third = await _connect(lab.port)  # sessions are never evicted: refused at once
        assert await _closed_within(third, CLOSED_AT_ONCE)
        assert _count(lab, REFUSED_PER_SOURCE) == 1
        (line,) = lab.events("preauth_limit_reached")
        assert line["reason"] == REFUSED_PER_SOURCE and line["per_source"] == 2
        assert line["log_level"] == "warning"
        for stream in (first, second):
            await stream.aclose()
        await trio.sleep(0.1)  # their peers go, and with them their quota entries
        assert len(lab.server.preauth) == 0 and len(lab.server.table) == 0
        await (await _valid_client(lab.port)).aclose()


@pytest.mark.directive("max-clients", "proto")
async def test_sessions_beyond_the_quota_are_refused_whatever_their_address():
    limits = PreauthLimits(total=2, per_source=2)
    async with tcp_server("max-clients 50\n", limits=limits) as lab:
        first = await _valid_client(lab.port, "127.0.0.2")
        second = await _valid_client(lab.port, "127.0.0.3")
        third = await _connect(lab.port, "127.0.0.4")
        assert await _closed_within(third, CLOSED_AT_ONCE)
        assert _count(lab, REFUSED_QUOTA) == 1
        (line,) = lab.events("preauth_limit_reached")
        assert line["reason"] == REFUSED_QUOTA and line["quota"] == 2
        assert line["unauthenticated"] == 2 and line["peer"].startswith("127.0.0.4:")
        for stream in (first, second):
            await stream.aclose()


@pytest.mark.directive("connect-freq-initial", "proto")
async def test_connect_freq_initial_counts_tcp_resets_that_go_nowhere():
    async with tcp_server("connect-freq-initial 2 60\n") as lab:
        # two clients that send their reset and then nothing use up the budget
        silent = [await _valid_client(lab.port) for _ in range(2)]
        late = await _connect(lab.port)
        await late.send_all(frame(_client_reset()[1]))
        assert await _server_answer(late) == []
        assert _count(lab, "reset_rate_limited") == 1
        for stream in [*silent, late]:
            await stream.aclose()


@pytest.mark.directive("connect-freq-initial", "proto")
async def test_tcp_client_that_answers_the_server_reset_gives_its_reset_back():
    async with tcp_server("connect-freq-initial 1 60\n") as lab:
        client, reset = _client_reset()
        stream = await _connect(lab.port)
        await stream.send_all(frame(reset))
        (answer,) = await _server_answer(stream)
        client.receive_datagram(answer, 0.0)  # the client goes on: ack + ClientHello
        await stream.send_all(b"".join(frame(d) for d in client.take_datagrams()))
        with trio.fail_after(5):
            while not lab.events("tls_handshake_started"):
                await trio.sleep(0.02)
        await (await _valid_client(lab.port)).aclose()  # the budget of 1 is free again
        assert _count(lab, "reset_rate_limited") == 0
        await stream.aclose()


# ---------------------------------------------------------------- UDP cookie path


def _udp_server(extra: str, limits: PreauthLimits) -> Any:
    server, link = _server(extra)
    server.preauth.limits = limits
    return server, link


@pytest.mark.directive("max-clients")
def test_udp_sessions_from_one_address_stop_at_the_per_source_limit():
    server, link = _udp_server("max-clients 100\n", PreauthLimits(total=10, per_source=2))
    for port in range(3):
        addr = ("198.18.0.2", 40000 + port)
        client, reset = _client(0.0)
        _receive(server, reset, addr, 0.0)
        _complete_cookie(server, link, client, addr, 0.0)
    assert len(server.table) == 2
    assert server.counts[REFUSED_PER_SOURCE] == 1
    client, reset = _client(0.0)  # another address still gets in
    _receive(server, reset, ("198.18.0.3", 40000), 0.0)
    _complete_cookie(server, link, client, ("198.18.0.3", 40000), 0.0)
    assert len(server.table) == 3


def test_udp_reset_flood_from_many_ports_takes_nothing_from_the_quota():
    server, link = _udp_server("connect-freq-initial 1000 10\n",
                               PreauthLimits(total=4, per_source=4))
    for port in range(500):  # resets whose cookie is never proven
        _receive(server, _client(0.0)[1], ("198.18.0.2", 20000 + port), 0.0)
    assert len(link.sent) == 500
    assert len(server.preauth) == 0 and len(server.table) == 0
    client, reset = _client(0.0)
    link.sent.clear()
    _receive(server, reset, ("198.18.0.3", 1194), 0.0)
    _complete_cookie(server, link, client, ("198.18.0.3", 1194), 0.0)
    assert len(server.table) == 1 and len(server.preauth) == 1


def test_quota_entry_is_released_when_the_client_authenticates():
    server, link = _udp_server("", PreauthLimits(total=4, per_source=4))
    addr = ("198.18.0.2", 40000)
    client, reset = _client(0.0)
    _receive(server, reset, addr, 0.0)
    _complete_cookie(server, link, client, addr, 0.0)
    peer = server.table.by_address[addr]
    assert len(server.preauth) == 1 and peer.preauth is not None
    for step in range(40):
        if peer.connected:
            break
        _exchange(server, link, client, addr, 0.01 * step)
    assert peer.connected
    assert len(server.preauth) == 0 and peer.preauth is None


def _snapshot(role: str, unauthenticated: int) -> MetricsSnapshot:
    return MetricsSnapshot(role=role, start_time=0.0, bytes_in=0, bytes_out=0, packets_in=0,
                           packets_out=0, connected=0, handshakes=0, renegotiations=0,
                           reconnects=0, unauthenticated=unauthenticated)


def test_metrics_expose_the_pre_authentication_quota_in_use_on_a_server_only():
    server = render_metrics(_snapshot("server", 3)).splitlines()
    assert "# TYPE trivpn_unauthenticated_sessions gauge" in server
    assert "trivpn_unauthenticated_sessions 3" in server
    assert "trivpn_unauthenticated_sessions" not in render_metrics(_snapshot("client", 0))
