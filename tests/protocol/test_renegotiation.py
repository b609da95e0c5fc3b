"""Renegotiation rules: the old key's transition window, reneg-bytes / reneg-pkts, packet-id
exhaustion, and the client certificate that must not change (in-memory sessions, time passed
in). OpenVPN's timeline is checked against the real binary in
tests/interop/test_renegotiation_vs_openvpn.py."""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any

import pytest

from tests.protocol.sessionkit import Pair, client_config, events_of, make_test_pki, server_config
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol import session as session_module
from trivpn.protocol.datachannel import PACKET_ID_WRAP_TRIGGER, DataKey
from trivpn.protocol.packets import Opcode, split_byte0
from trivpn.protocol.session import Session
from trivpn.tlscontext import build_context

IP_PACKET = bytes.fromhex("4500001c0001000040017c4cc6120802c6120801" "0800f7ff00000000")
_DATA = (Opcode.DATA_V1, Opcode.DATA_V2)


def _up(pair: Pair) -> None:
    assert pair.run_until(pair.established, seconds=60), (pair.client_events, pair.server_events)


def _sides(pair: Pair, initiator: str) -> tuple[Session, Session, list[ev.Event]]:
    """(the session that renegotiates, its peer, the initiator's event list)."""
    assert pair.server is not None
    if initiator == "client":
        return pair.client, pair.server, pair.client_events
    return pair.server, pair.client, pair.server_events


def _refuse_renegotiation(session: Session, *, let_soft_reset_in: bool = False) -> None:
    """Make ``session`` a peer that never takes part in a renegotiation: control packets for
    any key but 0 never reach it (optionally except the opening SOFT_RESET itself)."""
    receive = session.receive_datagram

    def filtered(data: bytes, now: float) -> None:
        opcode, key_id = split_byte0(data[0])
        if key_id != 0 and opcode not in _DATA and not (
                let_soft_reset_in and opcode == Opcode.CONTROL_SOFT_RESET_V1):
            return
        receive(data, now)

    session.receive_datagram = filtered  # type: ignore[method-assign]


def _reneg_started(events: list[ev.Event], key_id: int = 1) -> float | None:
    for e in events_of(events, ev.PhaseReached):
        if e.key_id == key_id and e.phase in (ev.PHASE_RESET_SENT,):
            return e.at
    return None


def _run_to(pair: Pair, t: float) -> None:
    pair.run_to(t)


def _failed(session: Session) -> bool:
    return session.failed  # (a call: mypy would narrow the attribute across the clock steps)


def _carries_data(sender: Session, receiver: Session, pair: Pair) -> bool:
    """One packet from ``sender`` reaches ``receiver``'s TUN now."""
    wire = sender.encrypt_data(IP_PACKET, pair.now)
    if wire is None:
        return False
    receiver.receive_datagram(wire, pair.now)
    return receiver.take_tun_packets() == [IP_PACKET]


def _configs(initiator: str, **kw: Any) -> tuple[Any, Any]:
    quiet = {"reneg_seconds": None}
    return (client_config(**(kw if initiator == "client" else quiet)),
            server_config(**(kw if initiator == "server" else quiet)))


# ---------------------------------------------------------------- transition window


@pytest.mark.directive("reneg-sec", "hand-window", "tran-window")
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_a_peer_that_ignores_renegotiation_loses_the_tunnel_at_the_end_of_tran_window(
        initiator):
    """OpenVPN 2.6 (hand-window 8 < tran-window 20): the new key fails at R+8, fresh attempts
    follow at once, the old key dies at R+20, the attempt running then fails at R+24 and
    with no key left the session ends (tls-error restart)."""
    pair = Pair.create(*_configs(initiator, reneg_seconds=5.0, hand_window=8.0,
                                 transition_window=20.0))
    _up(pair)
    me, peer, events = _sides(pair, initiator)
    _refuse_renegotiation(peer)
    assert pair.run_until(lambda: _reneg_started(events) is not None, seconds=10)
    start = _reneg_started(events)
    assert start is not None

    _run_to(pair, start + 7.9)
    assert not events_of(events, ev.HandshakeFailed)
    _run_to(pair, start + 8.05)
    failed = events_of(events, ev.HandshakeFailed)
    assert [(f.key_id, f.cause) for f in failed] == [(1, ev.CAUSE_TIMEOUT)]
    assert not me.failed

    _run_to(pair, start + 19.9)
    assert _carries_data(me, peer, pair), "the old key works until its transition window ends"
    _run_to(pair, start + 20.05)
    assert [e.at for e in events_of(events, ev.KeyExpired)] == [start + 20.0]
    assert not _carries_data(me, peer, pair)
    assert me.drops["no_key"] >= 1
    assert not me.failed  # an attempt is still running

    _run_to(pair, start + 23.9)
    assert not _failed(me)
    _run_to(pair, start + 24.05)
    assert _failed(me)
    assert events_of(events, ev.HandshakeFailed)[-1].cause == ev.CAUSE_TIMEOUT


@pytest.mark.directive("reneg-sec", "hand-window", "tran-window")
def test_with_a_short_tran_window_the_old_key_dies_first_and_the_session_ends_at_hand_window():
    pair = Pair.create(*_configs("client", reneg_seconds=5.0, hand_window=20.0,
                                 transition_window=8.0))
    _up(pair)
    assert pair.server is not None
    _refuse_renegotiation(pair.server)
    assert pair.run_until(lambda: _reneg_started(pair.client_events) is not None, seconds=10)
    start = _reneg_started(pair.client_events)
    assert start is not None
    _run_to(pair, start + 8.05)
    assert [e.at for e in events_of(pair.client_events, ev.KeyExpired)] == [start + 8.0]
    assert not _carries_data(pair.client, pair.server, pair)
    _run_to(pair, start + 19.9)
    assert not _failed(pair.client)
    _run_to(pair, start + 20.05)
    assert _failed(pair.client)
    assert [(f.key_id, f.cause) for f in events_of(pair.client_events, ev.HandshakeFailed)] \
        == [(1, ev.CAUSE_TIMEOUT)]


@pytest.mark.directive("tran-window")
def test_the_peers_soft_reset_also_starts_the_old_keys_transition_window():
    """The responder applies the rule too: the client's SOFT_RESET arrives, nothing after it
    does; the server's old key dies tran-window after that SOFT_RESET."""
    pair = Pair.create(client_config(reneg_seconds=5.0, hand_window=8.0),
                       server_config(reneg_seconds=None, hand_window=8.0,
                                     transition_window=12.0))
    _up(pair)
    assert pair.server is not None
    server = pair.server
    _refuse_renegotiation(server, let_soft_reset_in=True)
    assert pair.run_until(lambda: any(e.key_id == 1 and e.phase == ev.PHASE_RESET_RECEIVED
                                      for e in events_of(pair.server_events, ev.PhaseReached)),
                          seconds=10)
    received = next(e.at for e in events_of(pair.server_events, ev.PhaseReached)
                    if e.key_id == 1 and e.phase == ev.PHASE_RESET_RECEIVED)
    _run_to(pair, received + 12.05)
    assert [e.at for e in events_of(pair.server_events, ev.KeyExpired)] == [received + 12.0]
    assert pair.run_until(lambda: server.failed, seconds=30)


@pytest.mark.directive("tran-window")
def test_after_a_successful_renegotiation_the_old_key_lives_tran_window_from_the_soft_reset():
    """Not from the moment the new key was ready: a slow handshake eats into the window."""
    pair = Pair.create(client_config(reneg_seconds=None, transition_window=20.0),
                       server_config(reneg_seconds=None))
    _up(pair)
    pair.net.delay = 1.0  # a 2 s round trip: the renegotiation takes several seconds
    start = pair.now
    pair.client.renegotiate(start)
    assert pair.run_until(lambda: pair.client.primary_key_id == 1, seconds=60)
    ready = pair.now
    assert ready - start > 4
    _run_to(pair, start + 19.9)
    assert 0 in pair.client.key_ids
    _run_to(pair, start + 20.05)
    assert 0 not in pair.client.key_ids
    assert not events_of(pair.client_events, ev.KeyExpired)  # key 1 carries the data
    assert not pair.client.failed


@pytest.mark.directive("tls-timeout", "tran-window")
def test_a_refused_renegotiation_is_retried_every_tls_timeout_until_the_old_key_dies():
    """A TLS refusal fails at once; retrying at once would loop at the speed of round
    trips, so the next attempt waits tls-timeout. When the old key dies with no attempt
    running, the session ends."""
    pki = make_test_pki()
    foreign = build_context(server_side=False, ca_pem=certificate_pem(pki.ca.cert).decode(),
                            cert_pem=certificate_pem(pki.foreign_client.cert).decode(),
                            key_pem=private_key_pem(pki.foreign_client.key).decode())
    pair = Pair.create(client_config(tls_timeout=3.0, transition_window=10.0),
                       server_config(tls_timeout=3.0))
    _up(pair)
    start = pair.now
    pair.client.config = dataclasses.replace(pair.client.config, tls_context=foreign)
    pair.client.renegotiate(start)
    pair._collect()
    _run_to(pair, start + 10.05)
    attempts = [e.at - start for e in events_of(pair.client_events, ev.PhaseReached)
                if e.key_id and e.phase == ev.PHASE_RESET_SENT]
    assert len(attempts) == 4
    assert all(3.0 <= b - a < 3.1 for a, b in itertools.pairwise(attempts)), attempts
    assert {f.cause for f in events_of(pair.client_events, ev.HandshakeFailed)} == {
        "peer_rejected_cert", ev.CAUSE_KEY_EXPIRED}
    assert _failed(pair.client)


# ---------------------------------------------------------------- volume triggers


def _exchange(pair: Pair, count: int, size: int = 0) -> None:
    assert pair.server is not None
    packet = IP_PACKET + bytes(size)
    for _ in range(count):
        pair.exchange(packet, packet)
    pair.run_for(0.05)


@pytest.mark.directive("reneg-pkts")
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_reneg_pkts_counts_packets_both_ways_and_renegotiates_at_the_limit(initiator):
    pair = Pair.create(*_configs(initiator, reneg_seconds=None, reneg_packets=40))
    _up(pair)
    me, _, events = _sides(pair, initiator)
    key = me.data_key
    assert key is not None
    _exchange(pair, (40 - key.packets_in - key.packets_out) // 2 - 1)
    pair.run_for(2.0)  # the check runs every second
    assert key.packets_in + key.packets_out < 40
    assert _reneg_started(events) is None
    _exchange(pair, 2)
    assert key.packets_in + key.packets_out >= 40
    pair.run_for(1.05)
    assert _reneg_started(events) is not None
    assert pair.run_until(lambda: me.primary_key_id == 1, seconds=10)


@pytest.mark.directive("reneg-bytes")
@pytest.mark.parametrize("initiator", ["client", "server"])
def test_reneg_bytes_counts_wire_bytes_both_ways_and_renegotiates_at_the_limit(initiator):
    limit = 20_000
    pair = Pair.create(*_configs(initiator, reneg_seconds=None, reneg_bytes=limit))
    _up(pair)
    me, _, events = _sides(pair, initiator)
    key = me.data_key
    assert key is not None
    per_exchange = 2 * (len(IP_PACKET) + 1000) + 4 + 2 * 20  # V2 header sent, id+tag each way
    while key.wire_bytes() + per_exchange < limit:
        _exchange(pair, 1, size=1000)
    pair.run_for(2.0)
    assert _reneg_started(events) is None
    _exchange(pair, 1, size=1000)
    assert key.wire_bytes() >= limit
    pair.run_for(1.05)
    assert _reneg_started(events) is not None
    assert pair.run_until(lambda: me.primary_key_id == 1, seconds=10)


@pytest.mark.directive("reneg-bytes", "reneg-pkts")
def test_no_volume_limit_means_no_volume_renegotiation():
    pair = Pair.create(client_config(reneg_seconds=None), server_config(reneg_seconds=None))
    _up(pair)
    _exchange(pair, 200, size=1000)
    pair.run_for(30)
    assert _reneg_started(pair.client_events) is None
    assert _reneg_started(pair.server_events) is None


@pytest.mark.parametrize("initiator", ["client", "server"])
def test_a_send_packet_id_near_exhaustion_starts_a_renegotiation_before_the_wrap(
        initiator, monkeypatch):
    """OpenVPN renegotiates once the send packet id reaches 0xFF000000 (packet_id.h
    PACKET_ID_WRAP_TRIGGER); today's 2**32 limit is never reached."""
    def key_0_near_the_trigger(*args: Any, **kw: Any) -> DataKey:
        if args[2] == 0:
            kw["last_packet_id"] = PACKET_ID_WRAP_TRIGGER - 10
        return DataKey(*args, **kw)

    monkeypatch.setattr(session_module, "DataKey", key_0_near_the_trigger)
    pair = Pair.create(*_configs(initiator, reneg_seconds=None))
    _up(pair)
    me, _, events = _sides(pair, initiator)
    key = me.data_key
    assert key is not None
    _exchange(pair, 1)
    pair.run_for(12)  # the check ran (every 10 s), and maybe one keepalive ping
    assert key.packet_id < PACKET_ID_WRAP_TRIGGER
    assert _reneg_started(events) is None
    _exchange(pair, 9)
    assert key.packet_id >= PACKET_ID_WRAP_TRIGGER
    pair.run_for(10.05)
    assert _reneg_started(events) is not None
    assert pair.run_until(lambda: me.primary_key_id == 1, seconds=10)
    new_key = me.data_key
    assert new_key is not None and new_key.packet_id < 10
    _exchange(pair, 1)
    assert len(pair.server_tun) == len(pair.client_tun) == 11


# ---------------------------------------------------------------- certificate lock


@functools.cache
def _client_context(cn: str) -> Any:
    pki = make_test_pki()
    cred = issue_cert(pki.ca, "client", cn)
    return build_context(server_side=False, ca_pem=certificate_pem(pki.ca.cert).decode(),
                         cert_pem=certificate_pem(cred.cert).decode(),
                         key_pem=private_key_pem(cred.key).decode())


def _renegotiate_with(pair: Pair, context: Any) -> None:
    pair.client.config = dataclasses.replace(pair.client.config, tls_context=context)
    pair.client.renegotiate(pair.now)
    pair._collect()
    pair.run_for(5)


def test_server_refuses_a_renegotiation_with_another_common_name_and_disables_the_tunnel():
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    assert pair.server is not None
    _renegotiate_with(pair, _client_context("client2"))
    failures = events_of(pair.server_events, ev.HandshakeFailed)
    assert [(f.cause, f.detail) for f in failures] == [(
        ev.CAUSE_AUTH_FAILED,
        "TLS object CN attempted to change from 'client1' to 'client2' -- tunnel disabled")]
    assert pair.server.failed
    assert pair.server.drops["peer_certificate_changed"] == 1
    assert pair.server.encrypt_data(IP_PACKET, pair.now) is None  # no key carries data
    assert events_of(pair.client_events, ev.AuthFailed)  # the client is told


def test_server_refuses_a_renegotiation_with_another_certificate_of_the_same_name():
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    assert pair.server is not None
    _renegotiate_with(pair, _client_context("client1"))  # re-issued: same CN, new key
    failures = events_of(pair.server_events, ev.HandshakeFailed)
    assert [f.detail for f in failures] == [
        "TLS object CN=client1 client-provided SSL certs unexpectedly changed during "
        "mid-session reauth"]
    assert pair.server.failed


def test_renegotiation_with_the_same_certificate_is_accepted():
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    _renegotiate_with(pair, pair.client.config.tls_context)
    assert pair.server is not None and pair.server.primary_key_id == 1
    assert not events_of(pair.server_events, ev.HandshakeFailed)
