"""Drive a sans-IO :class:`Session` over a real UDP socket, synchronously.

This is the issue's "core before the runtime" harness: no trio, just a socket created inside a
test namespace, ``select`` with a deadline, and the session's timers.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from trivpn.protocol import events as ev
from trivpn.protocol.session import Session, SessionConfig
from trivpn.runtime.netns import enter_netns


def udp_socket_in(netns: str, bind: tuple[str, int]) -> socket.socket:
    with enter_netns(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(bind)
    sock.setblocking(False)
    return sock


@dataclass
class CorePeer:
    """One session bound to one remote address (client), or created on first contact (server)."""

    config: SessionConfig
    sock: socket.socket
    remote: tuple[str, int] | None = None
    session: Session | None = None
    events: list[ev.Event] = field(default_factory=list)
    tun: list[bytes] = field(default_factory=list)
    on_event: Callable[[Session, ev.Event], None] | None = None

    def start_client(self) -> None:
        self.session = Session(self.config, time.monotonic())
        self.session.start(time.monotonic())
        self._flush()

    def send_tun(self, packet: bytes) -> None:
        assert self.session is not None
        wire = self.session.encrypt_data(packet, time.monotonic())
        assert wire is not None, "no data key yet"
        assert self.remote is not None
        self.sock.sendto(wire, self.remote)

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now >= deadline:
                return False
            wait = deadline - now
            if self.session is not None:
                timer = self.session.next_timer()
                if timer is not None:
                    wait = max(0.0, min(wait, timer - now))
            readable, _, _ = select.select([self.sock], [], [], wait)
            now = time.monotonic()
            if readable:
                while True:
                    try:
                        data, addr = self.sock.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if self.session is None:
                        self.session = Session(self.config, now)
                    if self.remote is None:
                        self.remote = addr
                    self.session.receive_datagram(data, now)
            if self.session is not None:
                timer = self.session.next_timer()
                if timer is not None and timer <= now:
                    self.session.handle_timer(now)
            self._flush()
        return True

    def _flush(self) -> None:
        session = self.session
        if session is None:
            return
        for event in session.take_events():
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(session, event)
        self.tun += session.take_tun_packets()
        if self.remote is not None:
            for data in session.take_datagrams():
                self.sock.sendto(data, self.remote)

    def saw(self, kind: type[ev.Event]) -> bool:
        return any(isinstance(e, kind) for e in self.events)
