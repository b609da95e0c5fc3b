"""A server's front door (sans-IO): what to do with a packet no session has claimed yet.

The server's UDP socket receives datagrams from anywhere. Data packets of a known peer go
straight to that peer's session (the data path, not here); everything else — control packets,
packets from unknown addresses, a TCP connection's first packet — is handed to a
:class:`Gateway` with its source and the time, and the gateway answers with one value:

- :class:`ToPeer`: a packet of a known peer's session; give it to the session.
- :class:`Reply`: send these bytes to the source and keep no state (a stateless server reset
  carrying an HMAC cookie session id, OpenVPN 2.6 ``ssl_pkt.c``; see :mod:`cookie`).
- :class:`NewSession`: the source proved a cookie; here is its session, already counted in the
  pre-authentication ledger under ``key`` (and the peer it replaces when a client restarted
  from the same address).
- :class:`Floated`: a P_DATA_V2 from a new address authenticated under its peer-id's session;
  the peer moved, and this is the packet it carried.
- :class:`Drop`: nothing to do; ``reason`` is the drop counter to bump.

The gateway owns what guards the door before a client authenticates: the cookie secret,
``connect-freq-initial`` (stateless replies) and ``connect-freq`` (new sessions) as fixed-window
limiters (:mod:`ratelimit`), and the pre-authentication :class:`~admission.PreauthLedger`. It
reads no clock and opens no socket: time and addresses are passed in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from trivpn.protocol.admission import (
    Admission,
    PreauthLedger,
    PreauthLimits,
    peek_client_reset,
)
from trivpn.protocol.cookie import (
    cookie_matches,
    cookie_session_id,
    stateless_server_reset,
    timeslot,
)
from trivpn.protocol.errors import DecodeError, ProtocolError
from trivpn.protocol.packets import Header, Opcode, decode_control, peek_header
from trivpn.protocol.ratelimit import WindowLimiter
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tlscryptv2 import (
    RESEND_WKC_TLV,
    ServerKey,
    from_v2,
    has_early_negotiation,
    key_age_ok,
)
from trivpn.protocol.wrap import ControlWrap

UNKNOWN_PEER = "unknown_peer"
EMPTY_PACKET = "empty_packet"
BAD_COOKIE = "bad_cookie"
WRONG_SESSION = "wrong_session"
RESET_RATE_LIMITED = "reset_rate_limited"
CONNECT_FREQ_LIMITED = "connect_freq_limited"
TCP_BAD_FIRST_PACKET = "tcp_bad_first_packet"
TLS_CRYPT_V2_NO_EARLY_NEGOTIATION = "tls_crypt_v2_no_early_negotiation"
TLS_CRYPT_V2_KEY_TOO_OLD = "tls_crypt_v2_key_too_old"


class GatewayPeer(Protocol):
    """What the gateway needs to know about a known peer."""

    @property
    def session(self) -> Session: ...

    @property
    def floatable(self) -> bool:
        """May it move to a new address (connected, over UDP)?"""
        ...


P = TypeVar("P", bound=GatewayPeer)
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ToPeer(Generic[P]):
    peer: P


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes


@dataclass(frozen=True, slots=True)
class NewSession(Generic[P, K]):
    session: Session
    key: K  # its entry in the pre-authentication ledger
    replacing: P | None = None  # the restarted client's old peer, to be removed


@dataclass(frozen=True, slots=True)
class Floated(Generic[P]):
    peer: P
    packet: bytes | None  # the decrypted packet (None: a ping or an OCC message)


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str | None  # the drop counter to bump; None: already counted by a session


Decision = ToPeer[P] | Reply | NewSession[P, K] | Floated[P] | Drop


def address_bytes(address: tuple[object, ...]) -> bytes:
    """A socket address as the cookie's HMAC input: packed IP || port, and for IPv6 the scope
    id (a link-local ``fe80::1%eth0`` arrives as a 4-tuple sockaddr)."""
    host, port = str(address[0]), int(str(address[1]))
    ip = ipaddress.ip_address(host.partition("%")[0])
    packed = ip.packed + port.to_bytes(2, "big")
    if ip.version == 4:
        return packed
    scope = int(str(address[3])) if len(address) > 3 else 0
    return packed + scope.to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class GatewayLimits:
    """``connect-freq-initial`` (max, seconds), ``connect-freq`` (None: unlimited) and the
    pre-authentication quota."""

    reset: tuple[int, float]
    connect: tuple[int, float] | None
    preauth: PreauthLimits


class Gateway(Generic[P, K]):
    """The server's front door; see the module docstring."""

    def __init__(self, secret: bytes, limits: GatewayLimits, *,
                 config: SessionConfig | None = None, unix_offset: float = 0.0) -> None:
        # the sessions' configuration; a server sets it once it knows the clock's offset
        self.config_or_none = config
        self._secret = secret
        self.unix_offset = unix_offset  # trio time + offset = the wall clock tls-crypt sends
        # connect-freq-initial: OpenVPN 2.6 reads a period of 0 as one-second windows
        self.reset_limiter = WindowLimiter(limits.reset[0], max(1.0, limits.reset[1]))
        self.connect_limiter = (WindowLimiter(*limits.connect) if limits.connect is not None
                                else None)
        self.preauth: PreauthLedger[K] = PreauthLedger(limits.preauth)

    @property
    def config(self) -> SessionConfig:
        if self.config_or_none is None:
            raise ValueError("the gateway has no session configuration yet")
        return self.config_or_none

    @config.setter
    def config(self, config: SessionConfig) -> None:
        self.config_or_none = config

    # -- UDP --------------------------------------------------------------------------------

    def datagram(self, data: bytes, source: tuple[object, ...], now: float, *,
                 peer: P | None, by_peer_id: Mapping[int, P],
                 new_key: Callable[[], K]) -> Decision[P, K]:
        """Judge a datagram from ``source`` that is not a known peer's data packet. ``peer``:
        the peer at that address, if any; ``new_key``: makes the ledger key of a session to
        be created (called only when the cookie is proven)."""
        try:
            header = peek_header(data)
        except DecodeError as exc:
            if exc.reason == EMPTY_PACKET:
                return Drop(EMPTY_PACKET)
            if peer is not None:  # its session counts the bad opcode
                return ToPeer(peer)
            return Drop(UNKNOWN_PEER)
        if peer is not None:
            remote_sid = peer.session.remote_session_id
            if (remote_sid is not None and header.key_id == 0
                    and header.session_id != remote_sid):
                # a new client session from the same address: the client restarted
                if self._is_reset(header):
                    return self._stateless_reset(data, source, now)
                if self._is_cookie_reply(header):
                    return self._cookie_contact(data, source, now, new_key, replacing=peer)
            return ToPeer(peer)
        if header.opcode is Opcode.DATA_V2:
            return self._float(data, header.peer_id, now, by_peer_id)
        if self._is_reset(header):
            return self._stateless_reset(data, source, now)
        if self._is_cookie_reply(header):
            return self._cookie_contact(data, source, now, new_key, replacing=None)
        return Drop(UNKNOWN_PEER)

    # tls-crypt-v2 (tlscryptv2.py): the client's v3 reset and its P_CONTROL_WKC_V1 carry its
    # wrapped key; a server with a tls-crypt-v2 key takes nothing else at the door
    def _is_reset(self, header: Header) -> bool:
        if isinstance(self.config.wrap, ServerKey):
            return header.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V3 and header.key_id == 0
        return header.is_client_reset

    def _is_cookie_reply(self, header: Header) -> bool:
        if isinstance(self.config.wrap, ServerKey):
            return header.opcode is Opcode.CONTROL_WKC_V1 and header.key_id == 0
        return header.is_cookie_reply

    def _client_wrap(self, data: bytes) -> tuple[ControlWrap, bytes | None]:
        """The wrapper of the client that sent ``data`` and its key's metadata (None without
        tls-crypt-v2); ProtocolError when its wrapped key is not ours."""
        wrap = self.config.wrap
        if isinstance(wrap, ServerKey):
            return wrap.session_wrap(data)
        return wrap, None

    def _key_too_old(self, metadata: bytes | None, now: float) -> bool:
        max_age = self.config.tls_crypt_v2_max_age
        return (metadata is not None and max_age > 0
                and not key_age_ok(metadata, max_age, now + self.unix_offset))

    def _stateless_reset(self, data: bytes, source: tuple[object, ...],
                         now: float) -> Reply | Drop:
        try:
            wrap, metadata = self._client_wrap(data)
            packet = peek_client_reset(wrap, data)
            if metadata is not None and not has_early_negotiation(wrap.unwrap(data).packet_id):
                # a 2.5 client would need state before its cookie; OpenVPN 2.6 keeps it
                return Drop(TLS_CRYPT_V2_NO_EARLY_NEGOTIATION)
        except ProtocolError as exc:
            return Drop(exc.reason)
        if not self.reset_limiter.allow(now):
            return Drop(RESET_RATE_LIMITED)
        sid = cookie_session_id(self._secret, timeslot(now, self.config.hand_window),
                                address_bytes(source), packet.session_id)
        return Reply(stateless_server_reset(wrap, sid, packet.session_id,
                                            int(now + self.unix_offset),
                                            RESEND_WKC_TLV if metadata is not None else b""))

    def _cookie_contact(self, data: bytes, source: tuple[object, ...], now: float,
                        new_key: Callable[[], K], *,
                        replacing: P | None) -> NewSession[P, K] | Drop:
        try:
            wrap, metadata = self._client_wrap(data)
            packet = decode_control(wrap.unwrap(data).plain)
        except ProtocolError as exc:
            return Drop(exc.reason)
        if metadata is not None:
            packet = from_v2(packet)
        cookie = packet.remote_session_id
        if cookie is None or not cookie_matches(packet, self._secret, now,
                                                self.config.hand_window, address_bytes(source)):
            return Drop(BAD_COOKIE if replacing is None else WRONG_SESSION)
        if self._key_too_old(metadata, now):
            return Drop(TLS_CRYPT_V2_KEY_TOO_OLD)
        key = new_key()
        admission = self.admit(key, source[0], opening=False)
        if admission.refused is not None:
            return Drop(admission.refused)
        if self.connect_limiter is not None and not self.connect_limiter.allow(now):
            self.preauth.release(key)
            return Drop(CONNECT_FREQ_LIMITED)
        # a completed three-way handshake does not count against connect-freq-initial
        self.reset_limiter.give_back()
        config = self.config if wrap is self.config.wrap else replace(self.config, wrap=wrap)
        session = Session.after_stateless_reset(config, now, local_session_id=cookie,
                                                remote_session_id=packet.session_id)
        session.client_key_metadata = metadata
        return NewSession(session, key, replacing)

    def _float(self, data: bytes, peer_id: int | None, now: float,
               by_peer_id: Mapping[int, P]) -> Floated[P] | Drop:
        """P_DATA_V2 from a new address: the peer moved if it authenticates for its peer-id."""
        peer = by_peer_id.get(peer_id) if peer_id is not None else None
        if peer is None or not peer.floatable:
            return Drop(UNKNOWN_PEER)
        authenticated, packet = peer.session.authenticate_data(data, now)
        if not authenticated:
            return Drop(None)  # counted by the session
        return Floated(peer, packet)

    # -- TCP --------------------------------------------------------------------------------

    def tcp_first_packet(self, data: bytes, now: float) -> Session | Drop:
        """A TCP connection's first packet: a session if it is a valid client reset and
        ``connect-freq-initial`` allows it (``connect-freq`` is a config error with TCP, as in
        OpenVPN 2.6). Call :meth:`handshake_answered` when the client answers our reset, or
        :meth:`reset_unused` if the session is not used after all."""
        try:
            wrap, metadata = self._client_wrap(data)
            peek_client_reset(wrap, data)
        except ProtocolError:
            return Drop(TCP_BAD_FIRST_PACKET)
        if self._key_too_old(metadata, now):
            return Drop(TLS_CRYPT_V2_KEY_TOO_OLD)
        if not self.reset_limiter.allow(now):
            return Drop(RESET_RATE_LIMITED)
        config = self.config if wrap is self.config.wrap else replace(self.config, wrap=wrap)
        session = Session(config, now)
        session.client_key_metadata = metadata
        return session

    def handshake_answered(self) -> None:
        """A TCP client answered our reset: like a UDP client proving its cookie, it does not
        count against ``connect-freq-initial``."""
        self.reset_limiter.give_back()

    reset_unused = handshake_answered

    # -- pre-authentication ledger -------------------------------------------------------------

    def admit(self, key: K, source: Hashable, *, opening: bool) -> Admission[K]:
        """Count ``key`` (from host ``source``) as unauthenticated; the caller closes the
        openings it evicts."""
        return self.preauth.admit(key, source, opening=opening)
