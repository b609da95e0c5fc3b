"""Bounded memory on the control channel: packet size, reliable buffers, repeated
PUSH_REQUESTs, and a peer that never acknowledges what we send."""

from __future__ import annotations

import dataclasses
import functools
import gc
import tracemalloc
from collections.abc import Callable

from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol import session as session_module
from trivpn.protocol.keymethod import KeyMethod2, encode_key_method2
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control, encode_control
from trivpn.protocol.session import Session

PUSH_REPLY_HOLDOFF = 30.0  # push.c: sent_push_reply_expiry = now + 30

SERVER = server_config()


def _reset(sid: bytes) -> bytes:
    return encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, sid,
                                        message_id=0))


def _control(sid: bytes, message_id: int, size: int) -> bytes:
    return encode_control(ControlPacket(Opcode.CONTROL_V1, 0, sid, message_id=message_id,
                                        payload=bytes(size)))


def _allocated_by(build: Callable[[], object]) -> int:
    """Bytes still allocated (traced) after ``build()``, while its result is alive."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = build()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert kept is not None
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def test_control_packets_larger_than_openvpn_sends_are_dropped_and_counted():
    server = Session(SERVER, 0.0)
    sid = b"\x01" * 8
    server.receive_datagram(_reset(sid), 0.0)
    server.receive_datagram(_control(sid, 1, 3000), 0.1)
    assert server.drops["oversize_control"] == 1
    phases = [e.phase for e in events_of(server.take_events(), ev.PhaseReached)]
    assert ev.PHASE_TLS_STARTED not in phases
    server.receive_datagram(_control(sid, 1, 1200), 0.2)  # a normal size goes in
    assert server.drops["oversize_control"] == 1


def _fill_receive_windows(count: int, size: int) -> list[Session]:
    """An attacker's sessions: a valid reset, then eleven messages after a gap, so nothing
    is ever released to TLS and the reliable layer has to hold them."""
    sessions = []
    for i in range(count):
        server = Session(SERVER, 0.0)
        sid = (i + 1).to_bytes(8, "big")
        server.receive_datagram(_reset(sid), 0.0)
        for message_id in range(2, 14):
            server.receive_datagram(_control(sid, message_id, size), 0.1)
        server.take_datagrams()
        server.take_events()
        sessions.append(server)
    return sessions


def test_an_unauthenticated_session_holds_little_memory_however_its_peer_fills_the_window():
    """Before the limits a peer could park twelve 64 KB messages: about 705 KiB a session."""
    for size in (1900, 65000):  # the largest accepted, and far beyond
        per_session = _allocated_by(functools.partial(_fill_receive_windows, 20, size)) / 20
        assert per_session < 48 * 1024, (size, per_session)


def _strip_acks(session: Session) -> None:
    """``session`` never sees an acknowledgement from its peer (plain control packets)."""
    receive = session.receive_datagram

    def without_acks(data: bytes, now: float) -> None:
        if data[0] >> 3 in (Opcode.CONTROL_V1, Opcode.ACK_V1):
            packet = decode_control(data)
            if packet.opcode == Opcode.ACK_V1:
                return
            data = encode_control(ControlPacket(packet.opcode, packet.key_id,
                                                packet.session_id,
                                                message_id=packet.message_id,
                                                payload=packet.payload))
        receive(data, now)

    session.receive_datagram = without_acks  # type: ignore[method-assign]


def _flood_push_requests(pair: Pair, count: int) -> Pair:
    for _ in range(count // 100):
        for _ in range(100):
            pair.client.send_control_message("PUSH_REQUEST", pair.now)
        pair._collect()
        pair.run_to(pair.now + 0.15)
    return pair


def test_a_flood_of_push_requests_that_never_acks_gets_one_reply_and_bounded_memory():
    """push.c process_incoming_push_request: within 30 s of a reply, further requests are
    ignored (PUSH_MSG_ALREADY_REPLIED)."""
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(pair.established, seconds=60)
    server = pair.server
    assert server is not None
    _strip_acks(server)
    start = pair.now
    grown = _allocated_by(lambda: _flood_push_requests(pair, 10_000))
    assert pair.now - start < PUSH_REPLY_HOLDOFF
    assert server.drops["push_request_repeated"] == 10_000
    assert not server.failed
    assert grown < 512 * 1024, grown  # answering every request kept about 2 MB
    pair.run_to(start + PUSH_REPLY_HOLDOFF + 1)
    pair.client.send_control_message("PUSH_REQUEST", pair.now)
    pair._collect()
    pair.run_to(pair.now + 0.5)
    assert server.drops["push_request_repeated"] == 10_000  # after the hold-off: answered


def test_a_peer_that_never_acknowledges_control_data_is_dropped():
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(pair.established, seconds=60)
    server = pair.server
    assert server is not None
    pair.server_silent = True  # the client's packets (and acks) no longer arrive
    for _ in range(1000):
        server.send_control_message("INFO," + "x" * 200, pair.now)
        if server.failed:
            break
    failures = events_of(server.take_events(), ev.HandshakeFailed)
    assert [f.cause for f in failures] == [ev.CAUSE_CONTROL_STALLED]
    assert server.failed and server.drops["control_stalled"] == 1


def test_a_key_method_block_that_never_completes_fails_the_handshake_instead_of_growing(
        monkeypatch):
    """A client whose key method block announces a 64 KB peer-info and keeps it coming: the
    server stops buffering at 16 KiB instead of waiting for the hand-window."""
    def endless(block: KeyMethod2, *, from_server: bool) -> bytes:
        honest = encode_key_method2(dataclasses.replace(block, peer_info="ab"),
                                    from_server=from_server)
        return honest[:-5] + b"\xff\xff" + b"A" * 20_000  # peer-info length 65535

    monkeypatch.setattr(session_module, "encode_key_method2", endless)
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(lambda: pair.server is not None and pair.server.failed, seconds=5)
    assert pair.server is not None
    failures = events_of(pair.server_events, ev.HandshakeFailed)
    assert [(f.key_id, f.cause) for f in failures] == [(0, "too_long")]
