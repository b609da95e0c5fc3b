"""Drive a client and a server :class:`Session` against each other in memory.

A fake clock and a simulated network (loss, duplication, reordering, delay from a seeded RNG)
connect them. The server side plays the runtime's role: it admits the client on
``ClientAuthenticated`` with a subnet-style push list.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TypeVar

from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol.keymethod import options_string
from trivpn.protocol.peerinfo import build_peer_info
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tls import PeerVerification
from trivpn.protocol.wrap import ControlWrap, NoWrap
from trivpn.sessionsetup import CLIENT_IV_PROTO
from trivpn.tlscontext import build_context

E = TypeVar("E", bound=ev.Event)
SUBNET_PUSH = ("route-gateway 198.18.8.1", "topology subnet", "ping 10", "ping-restart 60",
               "ifconfig 198.18.8.2 255.255.255.0")
CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")


@dataclass(frozen=True)
class SessionPki:
    ca: Credential
    server: Credential
    client: Credential
    other_ca: Credential
    foreign_client: Credential  # signed by other_ca
    expired_client: Credential


@cache
def make_test_pki() -> SessionPki:
    ca = create_ca("trivpn test CA")
    other = create_ca("some other CA")
    past = datetime.now(UTC) - timedelta(days=30)
    return SessionPki(
        ca=ca,
        server=issue_cert(ca, "server", "server"),
        client=issue_cert(ca, "client", "client1"),
        other_ca=other,
        foreign_client=issue_cert(other, "client", "intruder"),
        expired_client=issue_cert(ca, "client", "old-client", not_before=past - timedelta(1),
                                  not_after=past),
    )


def _pem(cred: Credential) -> tuple[str, str]:
    return certificate_pem(cred.cert).decode(), private_key_pem(cred.key).decode()


def client_config(*, wrap: ControlWrap | None = None, cred: Credential | None = None,
                  ciphers: tuple[str, ...] = CIPHERS, ca: Credential | None = None,
                  **kw: object) -> SessionConfig:
    pki = make_test_pki()
    cert, key = _pem(cred or pki.client)
    ctx = build_context(server_side=False, ca_pem=certificate_pem((ca or pki.ca).cert).decode(),
                        cert_pem=cert, key_pem=key)
    info = build_peer_info(ciphers=ciphers, iv_proto=CLIENT_IV_PROTO)
    return SessionConfig(is_server=False, tls_context=ctx,
                         options_string=options_string(is_server=False),
                         verification=PeerVerification(remote_cert_tls="server"),
                         wrap=wrap or NoWrap(), peer_info=info, data_ciphers=ciphers,
                         **kw)  # type: ignore[arg-type]


def server_config(*, wrap: ControlWrap | None = None, ciphers: tuple[str, ...] = CIPHERS,
                  **kw: object) -> SessionConfig:
    pki = make_test_pki()
    cert, key = _pem(pki.server)
    ctx = build_context(server_side=True, ca_pem=certificate_pem(pki.ca.cert).decode(),
                        cert_pem=cert, key_pem=key)
    return SessionConfig(is_server=True, tls_context=ctx,
                         options_string=options_string(is_server=True),
                         verification=PeerVerification(remote_cert_tls="client"),
                         wrap=wrap or NoWrap(), data_ciphers=ciphers,
                         **kw)  # type: ignore[arg-type]


@dataclass
class Network:
    """Delivers datagrams after ``delay``; may lose, duplicate or reorder them."""

    rng: random.Random
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.005
    _queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    _seq: int = 0
    delivered: int = 0
    lost: int = 0

    def send(self, now: float, to: str, data: bytes) -> None:
        if self.rng.random() < self.loss:
            self.lost += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            at = now + self.delay
            if self.rng.random() < self.reorder:
                at += self.rng.uniform(0.001, 0.05)
            self._seq += 1
            heapq.heappush(self._queue, (at, self._seq, to, data))

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def pop_due(self, now: float) -> list[tuple[str, bytes]]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            _, _, to, data = heapq.heappop(self._queue)
            out.append((to, data))
            self.delivered += 1
        return out


@dataclass
class Pair:
    """A client and a server session and the network between them."""

    client: Session
    server: Session | None
    server_config: SessionConfig
    net: Network
    now: float = 1000.0
    client_events: list[ev.Event] = field(default_factory=list)
    server_events: list[ev.Event] = field(default_factory=list)
    client_tun: list[bytes] = field(default_factory=list)
    server_tun: list[bytes] = field(default_factory=list)
    server_silent: bool = False  # drop everything sent to the server (dead port)
    client_sent_at: list[float] = field(default_factory=list)
    admit: Callable[[Session, float], None] | None = None

    @classmethod
    def create(cls, client_cfg: SessionConfig, server_cfg: SessionConfig, *, seed: int = 1,
               loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
               server_silent: bool = False) -> Pair:
        rng = random.Random(seed)
        net = Network(rng, loss=loss, duplicate=duplicate, reorder=reorder)
        now = 1000.0
        client = Session(client_cfg, now, rng=rng.randbytes)
        pair = cls(client=client, server=None, server_config=server_cfg, net=net, now=now,
                   server_silent=server_silent)
        client.start(now)
        pair._collect()
        return pair

    def _collect(self) -> None:
        for data in self.client.take_datagrams():
            self.client_sent_at.append(self.now)
            if not self.server_silent:
                self.net.send(self.now, "server", data)
        self.client_tun += self.client.take_tun_packets()
        self.client_events += self.client.take_events()
        if self.server is None:
            return
        for data in self.server.take_datagrams():
            self.net.send(self.now, "client", data)
        self.server_tun += self.server.take_tun_packets()
        for event in self.server.take_events():
            self.server_events.append(event)
            if isinstance(event, ev.ClientAuthenticated):
                if self.admit is not None:
                    self.admit(self.server, self.now)
                else:
                    self.server.accept(self.now, SUBNET_PUSH, peer_id=0)
                self._collect()

    def step(self) -> bool:
        """Advance the clock to the next thing that happens. False when nothing is left."""
        candidates = [t for t in (self.net.next_time(), self.client.next_timer(),
                                  self.server.next_timer() if self.server else None)
                      if t is not None]
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        for to, data in self.net.pop_due(self.now):
            if to == "server":
                if self.server is None:
                    self.server = Session(self.server_config, self.now,
                                          rng=self.net.rng.randbytes)
                self.server.receive_datagram(data, self.now)
            else:
                self.client.receive_datagram(data, self.now)
        for session in (self.client, self.server):
            if session is not None:
                deadline = session.next_timer()
                if deadline is not None and deadline <= self.now:
                    session.handle_timer(self.now)
        self._collect()
        return True

    def run_until(self, done: Callable[[], bool], *, seconds: float) -> bool:
        end = self.now + seconds
        for _ in range(200_000):  # a stuck timer must fail the test, not hang it
            if done():
                return True
            if not self.step() or self.now > end:
                return done()
        raise AssertionError("simulation made no progress")

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        self.run_until(lambda: self.now >= end, seconds=seconds + 1)

    def run_to(self, t: float) -> None:
        """Run everything due up to ``t``, then stop the clock exactly at ``t``."""
        for _ in range(200_000):
            due = [d for d in (self.net.next_time(), self.client.next_timer(),
                               self.server.next_timer() if self.server else None)
                   if d is not None]
            if not due or min(due) > t:
                self.now = max(self.now, t)
                return
            self.step()
        raise AssertionError("simulation made no progress")

    def established(self) -> bool:
        return (self.client.established and self.server is not None
                and self.server.established)

    def exchange(self, to_server: bytes, to_client: bytes) -> None:
        """Encrypt one packet each way and deliver it through the network."""
        assert self.server is not None
        wire = self.client.encrypt_data(to_server, self.now)
        assert wire is not None
        self.net.send(self.now, "server", wire)
        wire = self.server.encrypt_data(to_client, self.now)
        assert wire is not None
        self.net.send(self.now, "client", wire)


def events_of(events: list[ev.Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]
