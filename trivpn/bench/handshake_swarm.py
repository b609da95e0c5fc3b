"""The handshake swarm's event loop: full client handshakes, a few in flight, on plain
non-blocking UDP sockets and one ``epoll``.

The load generator must cost less per handshake than the servers it measures. Under trio every
datagram took a task switch, a cancel scope and an ``epoll`` registration change; here a
datagram costs its ``recv``/``send`` and the session's own work. Each client has its own
socket (so the server sees distinct peers), sends EXIT once it has the push reply and a data
key, and closes; the next client starts in its place.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trivpn.protocol import events as ev
from trivpn.protocol.session import Session, SessionConfig

RECV_SIZE = 65536
_FAILURES = (ev.HandshakeFailed, ev.AuthFailed, ev.KeepaliveTimeout)


@dataclass(frozen=True, slots=True)
class HandshakePlan:
    count: int
    concurrency: int
    timeout: float
    start_at: float | None = None  # Unix time of the first client
    ports: range | None = None  # local ports to use in turn


@dataclass
class HandshakeTally:
    completed: int = 0
    failed: int = 0
    started: float = 0.0  # Unix times
    ended: float = 0.0
    cpu: float = 0.0  # process CPU seconds between them


@dataclass
class _Client:
    sock: socket.socket
    session: Session
    pushed: bool = False
    keyed: bool = False
    deadline: float | None = field(default=None)


class HandshakeSwarm:
    """Runs one :class:`HandshakePlan` against ``server`` (a numeric (host, port))."""

    def __init__(self, config: SessionConfig, server: tuple[str, int], plan: HandshakePlan, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.server = server
        self.plan = plan
        self.clock = clock
        self.tally = HandshakeTally()
        self._clients: dict[int, _Client] = {}
        self._poll = select.epoll()
        self._next = 0  # clients started so far

    def run(self) -> HandshakeTally:
        plan = self.plan
        if plan.start_at is not None:
            time.sleep(max(0.0, plan.start_at - time.time()))
        tally = self.tally
        tally.started, cpu0 = time.time(), time.process_time()
        stop = self.clock() + plan.timeout
        try:
            while self._next < min(plan.concurrency, plan.count):
                self._start_client()
            while self._clients:
                now = self.clock()
                if now >= stop:
                    break
                wake = min((c.deadline for c in self._clients.values()
                            if c.deadline is not None), default=stop)
                for fd, _ in self._poll.poll(max(0.0, min(wake, stop) - now)):
                    client = self._clients.get(fd)
                    if client is not None:
                        self._receive(client)
                now = self.clock()
                for client in list(self._clients.values()):
                    if client.deadline is not None and now >= client.deadline:
                        client.session.handle_timer(now)
                        self._progress(client, now)
        finally:
            for client in list(self._clients.values()):
                self._close(client)
            self._poll.close()
        tally.ended, tally.cpu = time.time(), time.process_time() - cpu0
        return tally

    def _start_client(self) -> None:
        ports, n = self.plan.ports, self._next
        self._next += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if ports:
                with contextlib.suppress(OSError):  # taken: connect() picks a port
                    sock.bind(("", ports[n % len(ports)]))
            sock.connect(self.server)
            sock.setblocking(False)
        except OSError:
            sock.close()
            self.tally.failed += 1
            return
        now = self.clock()
        session = Session(self.config, now)
        session.start(now)
        client = _Client(sock, session)
        self._clients[sock.fileno()] = client
        self._poll.register(sock.fileno(), select.EPOLLIN)
        self._progress(client, now)

    def _receive(self, client: _Client) -> None:
        session = client.session
        while True:
            try:
                data = client.sock.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except ConnectionRefusedError:  # ICMP from a server not (yet) listening
                continue
            session.receive_datagram(data, self.clock())
        self._progress(client, self.clock())

    def _progress(self, client: _Client, now: float) -> None:
        """Send what the session has, act on its events, finish or keep waiting."""
        session = client.session
        self._send(client)
        session.take_tun_packets()
        for event in session.take_events():
            if isinstance(event, ev.PushReceived):
                client.pushed = True
            elif isinstance(event, ev.DataChannelReady):
                client.keyed = True
            elif isinstance(event, _FAILURES) and session.failed:
                self.tally.failed += 1
                self._finish(client)
                return
        if client.pushed and client.keyed:
            session.exit_notify(now)
            self._send(client)
            self.tally.completed += 1
            self._finish(client)
            return
        client.deadline = session.next_timer()

    def _send(self, client: _Client) -> None:
        for data in client.session.take_datagrams():
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                client.sock.send(data)  # a lost datagram is retransmitted by the session

    def _finish(self, client: _Client) -> None:
        self._close(client)
        if self._next < self.plan.count:
            self._start_client()

    def _close(self, client: _Client) -> None:
        fd = client.sock.fileno()
        if self._clients.pop(fd, None) is not None:
            self._poll.unregister(fd)
        client.sock.close()
