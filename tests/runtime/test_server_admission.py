"""How the UDP server admits new clients: stateless resets under connect-freq-initial, the
cookie-proven second packet under connect-freq. Driven in memory: real client sessions, the
server's datagram entry point, a recording socket instead of the link."""

from __future__ import annotations

import math
from typing import Any

from tests.config.helpers import SERVER_BASE
from tests.protocol.sessionkit import client_config, server_config
from trivpn.config import parse_config
from trivpn.logging import get_logger
from trivpn.protocol.packets import Opcode
from trivpn.protocol.session import Session
from trivpn.runtime.server import Server


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any]] = []

    def try_send(self, data: bytes, addr: Any = None) -> bool:
        self.sent.append((data, addr))
        return True

    def to(self, addr: Any) -> list[bytes]:
        return [data for data, a in self.sent if a == addr]


class NoTasks:
    def start_soon(self, *args: object) -> None:
        pass


def _server(extra: str) -> tuple[Server, RecordingLink]:
    server = Server(parse_config(SERVER_BASE + extra, "server.conf"), get_logger())
    server.config = server_config()
    link = RecordingLink()
    server.udp = link  # type: ignore[assignment]
    server.peers_nursery = NoTasks()  # type: ignore[assignment]
    return server, link


def _receive(server: Server, data: bytes, addr: tuple[str, int], now: float) -> None:
    server.udp_transport.other(server.table.by_address.get(addr), data, addr, now, [],
                      to_device=[])


def _client(now: float) -> tuple[Session, bytes]:
    client = Session(client_config(), now)
    client.start(now)
    (reset,) = client.take_datagrams()
    return client, reset


def _complete_cookie(server: Server, link: RecordingLink, client: Session,
                     addr: tuple[str, int], now: float) -> None:
    """The client takes the server's stateless reset and sends its next packets back."""
    (reply,) = link.to(addr)
    client.receive_datagram(reply, now)
    for data in client.take_datagrams():
        _receive(server, data, addr, now)


def _addr(n: int) -> tuple[str, int]:
    return ("198.18.0.2", 40000 + n)


def test_server_answers_at_most_connect_freq_initial_resets_per_window():
    server, link = _server("connect-freq-initial 3 10\n")
    for n in range(5):
        _receive(server, _client(0.0)[1], _addr(n), 0.0)
    assert len(link.sent) == 3
    assert all(data[0] >> 3 == Opcode.CONTROL_HARD_RESET_SERVER_V2 for data, _ in link.sent)
    assert server.counts["reset_rate_limited"] == 2
    _receive(server, _client(10.0)[1], _addr(9), 10.0)
    assert len(link.to(_addr(9))) == 1


def test_client_that_proves_its_cookie_gives_its_reset_back():
    server, link = _server("connect-freq-initial 2 10\n")
    client, reset = _client(0.0)
    _receive(server, reset, _addr(0), 0.0)
    _receive(server, _client(0.0)[1], _addr(1), 0.0)
    _complete_cookie(server, link, client, _addr(0), 0.0)
    assert server.table.by_address.get(_addr(0)) is not None
    _receive(server, _client(0.0)[1], _addr(2), 0.0)
    assert len(link.to(_addr(2))) == 1
    _receive(server, _client(0.0)[1], _addr(3), 0.0)
    assert link.to(_addr(3)) == []


def test_connect_freq_limits_new_client_instances_per_window():
    server, link = _server("connect-freq 1 10\n")
    clients = []
    for n in range(2):
        client, reset = _client(0.0)
        _receive(server, reset, _addr(n), 0.0)
        clients.append(client)
    for n, client in enumerate(clients):
        _complete_cookie(server, link, client, _addr(n), 0.0)
    assert len(server.table) == 1
    assert server.counts["connect_freq_limited"] >= 1


def _exchange(server: Server, link: RecordingLink, client: Session, addr: tuple[str, int],
              now: float) -> None:
    """The server's pending datagrams to the client, and the client's answers back."""
    for data in link.to(addr):
        client.receive_datagram(data, now)
    link.sent.clear()
    for data in client.take_datagrams():
        _receive(server, data, addr, now)


def test_packet_wakes_the_peer_timer_task_only_when_its_deadline_comes_sooner():
    server, link = _server("")
    client, reset = _client(0.0)
    _receive(server, reset, _addr(0), 0.0)
    _complete_cookie(server, link, client, _addr(0), 0.0)
    peer = server.table.by_address[_addr(0)]
    peer.sleeping_until = 0.5  # the timer task sleeps until before any new deadline
    _exchange(server, link, client, _addr(0), 0.1)
    assert not peer.wakeup.is_set()
    peer.sleeping_until = math.inf  # it sleeps with nothing due: a new retransmission is sooner
    _exchange(server, link, client, _addr(0), 0.2)
    assert peer.wakeup.is_set()
