"""What the server's transports (:mod:`.serverudp`, :mod:`.servertcp`) see of the server.

The transports move packets between the link, the device and the peers; the server owns the
peer lifecycle (:mod:`.serverpeers`). :class:`PeerHub` is the part of
:class:`~trivpn.runtime.server.Server` a transport calls, so the transports depend on this small
Protocol and not on the server module (which imports them): no import circle, and a transport
can be driven by a stand-in.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

import structlog

from trivpn.config import Options
from trivpn.protocol.admission import PreauthLedger
from trivpn.protocol.gateway import Gateway
from trivpn.protocol.session import Session, SessionConfig
from trivpn.runtime.link import Address
from trivpn.runtime.peers import PeerTable
from trivpn.runtime.routing import Router
from trivpn.runtime.serverpeer import Peer, Pending
from trivpn.runtime.supervision import TaskNursery
from trivpn.runtime.transport import (
    DatagramLink,
    PacketListener,
    ServerPacketLink,
    TunnelHandle,
)


class PeerHub(Protocol):
    """The server as its transports use it."""

    # what the transports read
    @property
    def options(self) -> Options: ...
    @property
    def log(self) -> structlog.stdlib.BoundLogger: ...
    @property
    def config(self) -> SessionConfig | None: ...
    @property
    def counts(self) -> Counter[str]: ...
    @property
    def direct_wait(self) -> bool: ...
    @property
    def gateway(self) -> Gateway[Peer, Pending]: ...
    @property
    def router(self) -> Router[Peer]: ...
    @property
    def table(self) -> PeerTable[Peer]: ...
    @property
    def preauth(self) -> PreauthLedger[Pending]: ...
    @property
    def tunnel(self) -> TunnelHandle | None: ...
    @property
    def udp(self) -> DatagramLink | None: ...
    @property
    def listener(self) -> PacketListener | None: ...
    @property
    def peers_nursery(self) -> TaskNursery | None:
        """Where per-connection tasks run (None before the server runs); a bug in one of them
        costs that peer only (trivpn/runtime/supervision.py, GuardedNursery)."""
        ...

    # the peer lifecycle (runtime/serverpeers.py, bound onto the server)
    def create_peer(self, address: Address, session: Session, now: float,
                    tcp: ServerPacketLink | None = None, *, pending: Pending) -> Peer | None: ...
    def remove_peer(self, peer: Peer, reason: str, **fields: Any) -> None: ...
    def drain(self, peer: Peer, now: float) -> None: ...
    def wake_if_sooner(self, peer: Peer) -> None: ...
    def peer_failed(self, peer: Peer | None, exc: Exception) -> None: ...
    def preauth_admit(self, pending: Pending, now: float, *, opening: bool = False) -> bool: ...
    def preauth_refused(self, reason: str, address: Address, now: float) -> None: ...

    # packets out
    async def transmit(self, out: list[tuple[Peer, bytes]]) -> None: ...
    def write_device(self, packets: list[bytes]) -> None: ...
    async def read_device(self) -> None:
        """Device → peers in a task of its own (links without a file descriptor)."""
        ...
