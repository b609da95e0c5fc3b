"""A server's admission of clients before they authenticate (sans-IO).

Two pieces, both free of sockets and clocks:

- :func:`peek_client_reset` checks that a packet is a client's hard reset that authenticates
  under the configured tls-auth / tls-crypt wrapping, without creating a session. The TCP
  server uses it on a connection's first packet (anything else closes the connection at once);
  the UDP server on a datagram from an unknown address before answering it statelessly.
- :class:`PreauthLedger` counts everything that costs the server state before the client has
  authenticated — a TCP connection waiting for its first packet (an *opening*), a session in
  its TLS handshake — against a quota of its own, separate from ``max-clients``, and against a
  per-source-address limit. When a new arrival finds either limit reached, the oldest opening
  that has not yet sent a valid reset is evicted to make room (it has proven nothing and costs
  nothing to drop); only when there is no such opening is the arrival refused. A flood of idle
  TCP connections therefore cannot lock out a client that sends its reset promptly, and one
  address cannot take the whole quota.

OpenVPN 2.6 has neither limit: its TCP server creates a client instance for every accepted
connection, counted against ``max-clients`` and held until ``hand-window`` expires
(``mtcp.c`` ``multi_create_instance_tcp`` → ``multi.c`` ``multi_create_instance``). The
defaults and the reasons for them are in docs/server-admission.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from trivpn.protocol.errors import DecodeError
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control
from trivpn.protocol.tlscryptv2 import TlsCryptV2, from_v2
from trivpn.protocol.wrap import ControlWrap

MAX_FIRST_PACKET = 1500
"""Largest first TCP packet read before :func:`peek_client_reset` judges it. A client reset is
14 bytes plus OpenVPN 2.6's early-negotiation TLV and the wrapping (at most 72 bytes for
tls-auth with SHA512): about 100 bytes. A larger announced length closes the connection before
its bytes arrive."""

FIRST_PACKET_TIMEOUT = 5.0
"""Seconds a TCP connection may take to deliver a valid client reset (never more than
``hand-window``). A client sends its reset as soon as TCP is connected, so one round trip
suffices; 5 s leaves room for slow links and for proxies that connect before the client talks.
OpenVPN 2.6 waits ``hand-window`` (60 s by default)."""

PREAUTH_PER_MAX_CLIENTS = 4
"""The quota of unauthenticated sessions is ``max-clients`` / 4 ..."""
PREAUTH_MIN = 16
"""... but at least 16, so a small server survives a burst of reconnects ..."""
PREAUTH_PER_SOURCE = 8
"""... and one source address holds at most 8 of them (several clients behind one NAT may
reconnect at the same moment; a single attacker address gets no more than that)."""

REFUSED_QUOTA = "preauth_quota_full"
REFUSED_PER_SOURCE = "preauth_source_limit"


def peek_client_reset(wrap: ControlWrap, data: bytes) -> ControlPacket:
    """The client's P_CONTROL_HARD_RESET_CLIENT_V2 in ``data``, or :class:`ProtocolError`.

    ``data`` must authenticate under ``wrap`` (tls-auth HMAC / tls-crypt tag) and be a hard
    reset with key id 0, message id 0 and no acknowledgements, as the first packet of a client
    session is. Its replay id is not checked (the session that receives it does). The v3 reset
    counts only under a tls-crypt-v2 client key's wrapper (and is returned as a v2 one).
    """
    packet = decode_control(wrap.unwrap(data).plain)
    if isinstance(wrap, TlsCryptV2):
        packet = from_v2(packet)
    if packet.opcode is not Opcode.CONTROL_HARD_RESET_CLIENT_V2:
        raise DecodeError(f"{packet.opcode.name} where a client's hard reset was expected",
                          "first packet", reason="unexpected_reset")
    if packet.key_id != 0 or packet.message_id != 0 or packet.acks:
        raise DecodeError(f"hard reset with key id {packet.key_id}, message id "
                          f"{packet.message_id} and {len(packet.acks)} acks (0, 0, 0 expected)",
                          "first packet", reason="unexpected_reset")
    return packet


@dataclass(frozen=True, slots=True)
class PreauthLimits:
    """How many unauthenticated sessions the server holds, in total and per source address."""

    total: int
    per_source: int

    def __post_init__(self) -> None:
        if self.total < 1 or self.per_source < 1:
            raise ValueError("pre-authentication limits must be at least 1")

    @classmethod
    def for_max_clients(cls, max_clients: int) -> PreauthLimits:
        """The defaults for a server of ``max-clients`` clients."""
        total = max(PREAUTH_MIN, max_clients // PREAUTH_PER_MAX_CLIENTS)
        return cls(total=total, per_source=min(PREAUTH_PER_SOURCE, total))


def first_packet_timeout(hand_window: float) -> float:
    """How long a TCP connection may stay silent before its first valid reset."""
    return min(FIRST_PACKET_TIMEOUT, hand_window)


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Admission(Generic[K]):
    """The ledger's answer: admitted or refused (``refused`` names the limit), and the
    openings evicted to make room, which the caller must close."""

    refused: str | None
    evicted: tuple[K, ...] = ()

    @property
    def admitted(self) -> bool:
        return self.refused is None


class PreauthLedger(Generic[K]):
    """Unauthenticated sessions and openings, keyed by an object of the caller's choosing."""

    __slots__ = ("_entries", "_openings", "_per_source", "evicted", "limits", "refused")

    def __init__(self, limits: PreauthLimits) -> None:
        self.limits = limits
        self._entries: dict[K, Hashable] = {}  # key -> source, oldest first
        self._openings: dict[K, Hashable] = {}  # the evictable subset, oldest first
        self._per_source: Counter[Hashable] = Counter()
        self.evicted = 0
        self.refused: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def openings(self) -> int:
        """Entries that have not yet sent a valid first packet."""
        return len(self._openings)

    def from_source(self, source: Hashable) -> int:
        return self._per_source[source]

    def admit(self, key: K, source: Hashable, *, opening: bool) -> Admission[K]:
        """Count ``key`` from ``source``. ``opening``: a TCP connection that has sent nothing
        valid yet (evictable until :meth:`settle`)."""
        if key in self._entries:
            raise ValueError("key already admitted")
        evicted: list[K] = []
        if self._per_source[source] >= self.limits.per_source:
            victim = self._oldest_opening(source)
            if victim is None:
                self.refused[REFUSED_PER_SOURCE] += 1
                return Admission(REFUSED_PER_SOURCE)
            evicted.append(victim)
            self._drop(victim)
            self.evicted += 1
        if len(self._entries) >= self.limits.total:
            victim = self._oldest_opening(None)
            if victim is None:
                self.refused[REFUSED_QUOTA] += 1
                return Admission(REFUSED_QUOTA, tuple(evicted))
            evicted.append(victim)
            self._drop(victim)
            self.evicted += 1
        self._entries[key] = source
        self._per_source[source] += 1
        if opening:
            self._openings[key] = source
        return Admission(None, tuple(evicted))

    def settle(self, key: K) -> None:
        """``key`` sent a valid reset: it is a session now and no longer evicted for room."""
        self._openings.pop(key, None)

    def release(self, key: K) -> bool:
        """``key`` authenticated or went away; False if it was not counted (any more)."""
        if key not in self._entries:
            return False
        self._drop(key)
        return True

    def _oldest_opening(self, source: Hashable | None) -> K | None:
        for key, where in self._openings.items():
            if source is None or where == source:
                return key
        return None

    def _drop(self, key: K) -> None:
        source = self._entries.pop(key)
        self._openings.pop(key, None)
        left = self._per_source[source] - 1
        if left:
            self._per_source[source] = left
        else:
            del self._per_source[source]
