"""The stateless server reset: cookie session ids, the answer packet, and admitting the client."""

from __future__ import annotations

from tests.protocol.sessionkit import SUBNET_PUSH, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.cookie import (
    cookie_matches,
    cookie_session_id,
    stateless_server_reset,
    timeslot,
)
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control
from trivpn.protocol.session import Session
from trivpn.protocol.wrap import NoWrap

SECRET = b"s" * 32
PEER = b"\xc6\x12\x00\x02\x04\xd2"
CLIENT_SID = bytes.fromhex("31e7f7c06bd93f39")


def _ack(remote_sid: bytes, *, opcode=Opcode.ACK_V1, acks=(0,), message_id=None):
    return ControlPacket(opcode=opcode, key_id=0, session_id=CLIENT_SID, acks=acks,
                         remote_session_id=remote_sid, message_id=message_id,
                         payload=b"" if message_id is None else b"hello")


def test_cookie_is_stable_within_a_slot_and_differs_per_peer():
    a = cookie_session_id(SECRET, 5, PEER, CLIENT_SID)
    assert a == cookie_session_id(SECRET, 5, PEER, CLIENT_SID)
    assert a != cookie_session_id(SECRET, 5, PEER[:-1] + b"\x00", CLIENT_SID)
    assert a != cookie_session_id(SECRET, 6, PEER, CLIENT_SID)


def test_stateless_reset_acks_the_client_reset_with_message_id_zero():
    sid = cookie_session_id(SECRET, 1, PEER, CLIENT_SID)
    packet = decode_control(stateless_server_reset(NoWrap(), sid, CLIENT_SID, 0))
    assert packet.opcode == Opcode.CONTROL_HARD_RESET_SERVER_V2
    assert packet.acks == (0,) and packet.remote_session_id == CLIENT_SID
    assert packet.message_id == 0 and packet.session_id == sid


def test_cookie_is_accepted_for_three_slots_then_expires():
    now = 1000.0
    sid = cookie_session_id(SECRET, timeslot(now, 60), PEER, CLIENT_SID)
    assert cookie_matches(_ack(sid), SECRET, now, 60, PEER)
    assert cookie_matches(_ack(sid), SECRET, now + 60, 60, PEER)
    assert not cookie_matches(_ack(sid), SECRET, now + 95, 60, PEER)


def test_cookie_rejects_wrong_sid_peer_or_acks():
    now = 1000.0
    sid = cookie_session_id(SECRET, timeslot(now, 60), PEER, CLIENT_SID)
    assert not cookie_matches(_ack(b"\x01" * 8), SECRET, now, 60, PEER)
    assert not cookie_matches(_ack(sid), SECRET, now, 60, b"\x00" * 6)
    assert not cookie_matches(_ack(sid, acks=(2,)), SECRET, now, 60, PEER)
    assert not cookie_matches(_ack(sid, opcode=Opcode.CONTROL_V1, message_id=5), SECRET, now,
                              60, PEER)


def test_session_created_after_the_cookie_completes_the_handshake():
    now = 1000.0
    client = Session(client_config(), now)
    client.start(now)
    (reset,) = client.take_datagrams()
    client_sid = decode_control(reset).session_id
    server_sid = cookie_session_id(SECRET, timeslot(now, 60), PEER, client_sid)
    client.receive_datagram(stateless_server_reset(NoWrap(), server_sid, client_sid, 0), now)
    server = Session.after_stateless_reset(server_config(), now, local_session_id=server_sid,
                                           remote_session_id=client_sid)
    to_server = client.take_datagrams()
    assert cookie_matches(decode_control(to_server[0]), SECRET, now, 60, PEER)
    for _ in range(50):
        for data in to_server:
            server.receive_datagram(data, now)
        for event in server.take_events():
            if isinstance(event, ev.ClientAuthenticated):
                server.accept(now, SUBNET_PUSH, peer_id=0)
        for data in server.take_datagrams():
            client.receive_datagram(data, now)
        to_server = client.take_datagrams()
        if client.established and server.established:
            break
    assert client.established and server.established
    assert events_of(client.take_events(), ev.HandshakeFailed) == []
