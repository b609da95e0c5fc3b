"""The server's front door, sans-IO: datagrams, sources and times in, one decision out."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from itertools import count

from tests.protocol.sessionkit import Pair, client_config, server_config
from trivpn.protocol.admission import REFUSED_PER_SOURCE, PreauthLimits
from trivpn.protocol.gateway import (
    Drop,
    Floated,
    Gateway,
    GatewayLimits,
    NewSession,
    Reply,
    ToPeer,
    address_bytes,
)
from trivpn.protocol.occ import OCC_MAGIC, PING_MAGIC
from trivpn.protocol.packets import Opcode, peek_header
from trivpn.protocol.session import Session

SECRET = bytes(range(32))


@dataclass(eq=False)
class FakePeer:
    session: Session
    floatable: bool = True


@dataclass
class Door:
    gateway: Gateway[FakePeer, int]
    keys: count[int] = field(default_factory=count)
    peers_by_id: dict[int, FakePeer] = field(default_factory=dict)

    def receive(self, data: bytes, source: tuple[object, ...], now: float,
                peer: FakePeer | None = None) -> object:
        return self.gateway.datagram(data, source, now, peer=peer, by_peer_id=self.peers_by_id,
                                     new_key=lambda: next(self.keys))


def _door(*, reset: tuple[int, float] = (100, 10.0), connect: tuple[int, float] | None = None,
          preauth: PreauthLimits | None = None) -> Door:
    limits = GatewayLimits(reset=reset, connect=connect,
                           preauth=preauth or PreauthLimits(total=16, per_source=8))
    return Door(Gateway(SECRET, limits, config=server_config()))


def _client(now: float = 0.0) -> tuple[Session, bytes]:
    client = Session(client_config(), now)
    client.start(now)
    (reset,) = client.take_datagrams()
    return client, reset


def _addr(n: int = 0) -> tuple[str, int]:
    return ("198.18.0.2", 40000 + n)


def _cookie_reply(door: Door, source: tuple[str, int], now: float = 0.0
                  ) -> tuple[Session, bytes]:
    """A client's reset answered statelessly, and the client's next packet."""
    client, reset = _client(now)
    reply = door.receive(reset, source, now)
    assert isinstance(reply, Reply)
    client.receive_datagram(reply.data, now)
    return client, client.take_datagrams()[0]


def test_client_reset_from_unknown_address_gets_a_stateless_server_reset():
    door = _door()
    client, reset = _client()
    reply = door.receive(reset, _addr(), 0.0)
    assert isinstance(reply, Reply)
    header = peek_header(reply.data)
    assert header.is_server_reset
    client.receive_datagram(reply.data, 0.0)
    assert client.remote_session_id == header.session_id
    assert len(door.gateway.preauth) == 0  # no state for a reset


def test_proven_cookie_yields_a_session_counted_as_unauthenticated():
    door = _door()
    client, second = _cookie_reply(door, _addr())
    decision = door.receive(second, _addr(), 0.0)
    assert isinstance(decision, NewSession)
    assert decision.replacing is None
    assert decision.session.remote_session_id == client.local_session_id
    assert decision.session.local_session_id == client.remote_session_id
    assert decision.key in door.gateway.preauth


def test_cookie_from_another_address_is_refused():
    door = _door()
    _, second = _cookie_reply(door, _addr(0))
    assert door.receive(second, _addr(1), 0.0) == Drop("bad_cookie")


def test_cookie_expires_after_its_time_slots():
    door = _door()
    _, second = _cookie_reply(door, _addr(), now=0.0)
    assert door.receive(second, _addr(), 200.0) == Drop("bad_cookie")


def test_connect_freq_initial_bounds_stateless_replies_per_window():
    door = _door(reset=(2, 10.0))
    assert isinstance(door.receive(_client()[1], _addr(0), 0.0), Reply)
    assert isinstance(door.receive(_client()[1], _addr(1), 0.0), Reply)
    assert door.receive(_client()[1], _addr(2), 0.0) == Drop("reset_rate_limited")
    assert isinstance(door.receive(_client()[1], _addr(2), 10.0), Reply)  # a new window


def test_proven_cookie_gives_its_reply_back_to_connect_freq_initial():
    door = _door(reset=(1, 10.0))
    _, second = _cookie_reply(door, _addr(0))
    assert isinstance(door.receive(second, _addr(0), 0.0), NewSession)
    assert isinstance(door.receive(_client()[1], _addr(1), 0.0), Reply)
    assert door.receive(_client()[1], _addr(2), 0.0) == Drop("reset_rate_limited")


def test_cookie_of_another_server_secret_is_refused():
    other = Door(Gateway(bytes(32), GatewayLimits((9, 1.0), None, PreauthLimits(16, 8)),
                         config=server_config()))
    _, second = _cookie_reply(other, _addr(0))
    assert _door().receive(second, _addr(0), 0.0) == Drop("bad_cookie")


def test_connect_freq_refuses_new_sessions_and_releases_their_quota():
    door = _door(connect=(1, 10.0))
    _, first = _cookie_reply(door, _addr(0))
    _, second = _cookie_reply(door, _addr(1))
    assert isinstance(door.receive(first, _addr(0), 0.0), NewSession)
    assert door.receive(second, _addr(1), 0.0) == Drop("connect_freq_limited")
    assert len(door.gateway.preauth) == 1


def test_per_source_preauth_limit_refuses_a_proven_cookie():
    door = _door(preauth=PreauthLimits(total=16, per_source=1))
    _, first = _cookie_reply(door, _addr(0))
    _, second = _cookie_reply(door, _addr(1))  # same host, another port
    assert isinstance(door.receive(first, _addr(0), 0.0), NewSession)
    assert door.receive(second, _addr(1), 0.0) == Drop(REFUSED_PER_SOURCE)


def test_known_peer_control_packet_goes_to_its_session():
    door = _door()
    client, second = _cookie_reply(door, _addr())
    decision = door.receive(second, _addr(), 0.0)
    assert isinstance(decision, NewSession)
    peer = FakePeer(decision.session)
    client.handle_timer(5.0)  # a retransmission of the same client session
    for data in client.take_datagrams():
        assert door.receive(data, _addr(), 5.0, peer=peer) == ToPeer(peer)


def test_client_restart_from_the_same_address_replaces_the_old_peer_once_proven():
    door = _door()
    _, second = _cookie_reply(door, _addr())
    decision = door.receive(second, _addr(), 0.0)
    assert isinstance(decision, NewSession)
    old = FakePeer(decision.session)
    client, reset = _client(1.0)  # the client restarted: a new session id
    reply = door.receive(reset, _addr(), 1.0, peer=old)
    assert isinstance(reply, Reply)
    client.receive_datagram(reply.data, 1.0)
    (next_packet,) = client.take_datagrams()
    decision = door.receive(next_packet, _addr(), 1.0, peer=old)
    assert isinstance(decision, NewSession) and decision.replacing is old


def test_empty_and_unknown_packets_from_strangers_are_dropped_by_reason():
    door = _door()
    assert door.receive(b"", _addr(), 0.0) == Drop("empty_packet")
    assert door.receive(bytes([0xF8]) + bytes(20), _addr(), 0.0) == Drop("unknown_peer")
    ack_key1 = bytes([(int(Opcode.ACK_V1) << 3) | 1]) + bytes(20)
    assert door.receive(ack_key1, _addr(), 0.0) == Drop("unknown_peer")
    v1 = bytes([int(Opcode.DATA_V1) << 3]) + bytes(40)
    assert door.receive(v1, _addr(), 0.0) == Drop("unknown_peer")


def _established() -> Pair:
    pair = Pair.create(client_config(), server_config(), seed=3)
    assert pair.run_until(pair.established, seconds=30)
    return pair


def _float_door(pair: Pair, *, floatable: bool = True) -> tuple[Door, FakePeer]:
    assert pair.server is not None
    door = _door()
    peer = FakePeer(pair.server, floatable=floatable)
    door.peers_by_id[0] = peer  # the kit's server pushes peer-id 0
    return door, peer


def test_data_v2_that_authenticates_from_a_new_address_floats_its_peer():
    pair = _established()
    door, peer = _float_door(pair)
    wire = pair.client.encrypt_data(b"\x45" + bytes(27), pair.now)
    assert wire is not None and peek_header(wire).peer_id == 0
    assert door.receive(wire, _addr(7), pair.now) == Floated(peer, b"\x45" + bytes(27))


def test_forged_data_v2_does_not_float_and_is_counted_by_the_session():
    pair = _established()
    door, peer = _float_door(pair)
    wire = bytearray(pair.client.encrypt_data(b"\x45" + bytes(27), pair.now) or b"")
    wire[-1] ^= 1
    assert door.receive(bytes(wire), _addr(7), pair.now) == Drop(None)
    assert sum(peer.session.drops.values()) == 1


def test_authenticated_ping_and_bad_occ_still_float():
    """Authentication is what the session reports, not whether its drop counters moved: an
    authenticated OCC message with an unknown opcode is counted as a drop, yet it proves the
    sender."""
    pair = _established()
    door, peer = _float_door(pair)
    ping = pair.client.encrypt_data(PING_MAGIC, pair.now)
    assert ping is not None
    assert door.receive(ping, _addr(7), pair.now) == Floated(peer, None)
    bad_occ = pair.client.encrypt_data(OCC_MAGIC + b"\xfe", pair.now)
    assert bad_occ is not None
    assert door.receive(bad_occ, _addr(8), pair.now) == Floated(peer, None)
    assert sum(peer.session.drops.values()) == 1  # the OCC message, counted


def test_unknown_peer_id_or_unfloatable_peer_does_not_float():
    pair = _established()
    door, _ = _float_door(pair, floatable=False)
    wire = pair.client.encrypt_data(b"\x45" + bytes(27), pair.now)
    assert wire is not None
    assert door.receive(wire, _addr(7), pair.now) == Drop("unknown_peer")
    door.peers_by_id.clear()
    assert door.receive(wire, _addr(7), pair.now) == Drop("unknown_peer")
    assert door.receive(wire[:3], _addr(7), pair.now) == Drop("unknown_peer")


def test_tcp_first_packet_must_be_a_client_reset_within_connect_freq_initial():
    door = _door(reset=(1, 10.0))
    _, reset = _client()
    assert isinstance(door.gateway.tcp_first_packet(reset, 0.0), Session)
    door.gateway.handshake_answered()  # the client answered: its reset is given back
    assert isinstance(door.gateway.tcp_first_packet(reset, 0.0), Session)
    assert door.gateway.tcp_first_packet(reset, 0.0) == Drop("reset_rate_limited")
    ack = bytes([int(Opcode.ACK_V1) << 3]) + bytes(range(1, 9)) + b"\x00"
    assert door.gateway.tcp_first_packet(ack, 0.0) == Drop("tcp_bad_first_packet")


def test_cookie_input_distinguishes_ports_and_ipv6_scopes():
    assert address_bytes(("198.18.0.2", 1194)) == bytes([198, 18, 0, 2, 0x04, 0xAA])
    assert address_bytes(("2001:2::1", 1, 0, 0)) != address_bytes(("2001:2::1", 1, 0, 2))
    assert address_bytes(("fe80::1%eth0", 1, 0, 3)) == address_bytes(("fe80::1", 1, 0, 3))


def test_reset_replies_are_bounded_however_many_sources_flood():
    door = _door(reset=(5, 10.0))
    rng = random.Random(1)
    replies = 0
    for n in range(200):
        source: tuple[Hashable, ...] = (f"198.18.{rng.randrange(256)}.{rng.randrange(256)}", n)
        replies += isinstance(door.receive(_client()[1], source, 1.0), Reply)
    assert replies == 5
