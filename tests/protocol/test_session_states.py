"""The session's explicit state: one transition table per machine (key phases, the client's
pull, the server's accept), every edge of each table taken by a real exchange, and the split
between a caller's misuse (raised, never counted) and a peer's violation (counted, never
raised)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from tests.protocol.sessionkit import (
    SUBNET_PUSH,
    Pair,
    client_config,
    events_of,
    make_test_pki,
    server_config,
)
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol import states
from trivpn.protocol.errors import (
    AuthenticationError,
    CallerMisuse,
    DecodeError,
    HandshakeError,
    PeerViolation,
    ReplayError,
    StateError,
)
from trivpn.protocol.packets import Opcode, decode_control, encode_control, split_byte0
from trivpn.protocol.session import PUSH_REPLY_HOLDOFF, PUSH_REQUEST_INTERVAL, Session
from trivpn.protocol.states import (
    ACCEPT_TRANSITIONS,
    KEY_TRANSITIONS,
    PULL_TRANSITIONS,
    AcceptState,
    KeyPhase,
    PullState,
)
from trivpn.tlscontext import build_context

K, P, A = KeyPhase, PullState, AcceptState
Edge = tuple[Any, Any]
TABLES: dict[str, Mapping[Any, frozenset[Any]]] = {
    "key": KEY_TRANSITIONS, "pull": PULL_TRANSITIONS, "accept": ACCEPT_TRANSITIONS}


def _edges(table: Mapping[Any, frozenset[Any]]) -> set[Edge]:
    return {(a, b) for a, targets in table.items() for b in targets}


def _all_pairs() -> Iterator[tuple[str, Any, Any]]:
    for name, table in TABLES.items():
        for current in table:
            for target in table:
                yield name, current, target


# ---------------------------------------------------------------- the tables


@pytest.mark.parametrize(("name", "current", "target"), list(_all_pairs()))
def test_a_move_the_table_lacks_is_a_caller_misuse_and_a_move_it_has_is_made(name, current,
                                                                             target):
    table = TABLES[name]
    if target in table[current]:
        assert states.transition(table, current, target, "test") is target
        return
    with pytest.raises(CallerMisuse) as caught:
        states.transition(table, current, target, "test")
    assert not isinstance(caught.value, PeerViolation)
    assert f"from {current.value} to {target.value}" in str(caught.value)


def test_every_table_names_every_state_and_terminal_states_have_no_way_out():
    for enum_type, table in ((KeyPhase, KEY_TRANSITIONS), (PullState, PULL_TRANSITIONS),
                             (AcceptState, ACCEPT_TRANSITIONS)):
        assert set(table) == set(enum_type)
    assert not KEY_TRANSITIONS[K.FAILED]  # a failed key is never revived
    assert not KEY_TRANSITIONS[K.DATA_READY]  # only failing or retiring ends it
    assert not PULL_TRANSITIONS[P.PUSHED]
    assert not ACCEPT_TRANSITIONS[A.REJECTED]


# ---------------------------------------------------------------- every edge taken


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> set[Edge]:
    """Every (from, to) move any session makes while the test runs."""
    seen: set[Edge] = set()
    real = states.transition

    def recording(table: Any, current: Any, target: Any, where: str) -> Any:
        seen.add((current, target))
        return real(table, current, target, where)

    monkeypatch.setattr(states, "transition", recording)
    return seen


def _up(pair: Pair) -> None:
    assert pair.run_until(pair.established, seconds=60), (pair.client_events, pair.server_events)


def _server(pair: Pair) -> Session:
    assert pair.server is not None
    return pair.server


def _handshake_then_renegotiate() -> None:
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    pair.client.renegotiate(pair.now)
    pair._collect()
    assert pair.run_until(lambda: pair.client.primary_key_id == 1, seconds=10)


def _slow_admission_repeats_the_push_request() -> None:
    pair = Pair.create(client_config(), server_config())
    pair.admit = lambda server, now: None  # the server's caller takes its time
    assert pair.run_until(lambda: pair.server is not None and pair.server.failed is False
                          and bool(events_of(pair.server_events, ev.ClientAuthenticated)),
                          seconds=10)
    pair.run_for(PUSH_REQUEST_INTERVAL * 2)
    _server(pair).accept(pair.now, SUBNET_PUSH, peer_id=0)
    pair._collect()
    _up(pair)


def _unasked_push_before_our_key_is_active() -> None:
    """A 2.6 server pushes as soon as it may when the client announced IV_PROTO_REQUEST_PUSH;
    with the server's acknowledgements lost, its PUSH_REPLY arrives while our first key still
    waits for them: the pull goes from idle to pushed without a PUSH_REQUEST."""
    pair = Pair.create(client_config(), server_config())
    send = pair.net.send

    def lose_server_acks(now: float, to: str, data: bytes) -> None:
        key_method_sent = any(e.phase == ev.PHASE_KEY_METHOD_SENT
                              for e in events_of(pair.client_events, ev.PhaseReached))
        if to == "client" and key_method_sent and pair.client.pushed is None:
            opcode, _ = split_byte0(data[0])
            if opcode == Opcode.ACK_V1:
                return
            if opcode not in (Opcode.DATA_V1, Opcode.DATA_V2):
                packet = decode_control(data)
                data = encode_control(dataclasses.replace(packet, acks=(),
                                                          remote_session_id=None))
        send(now, to, data)

    pair.net.send = lose_server_acks  # type: ignore[method-assign]
    _up(pair)
    assert not [e for e in events_of(pair.client_events, ev.PhaseReached)
                if e.phase == ev.PHASE_PUSH_REQUEST_SENT]


def _push_request_after_the_hold_off_is_answered_again() -> None:
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    pair.run_for(PUSH_REPLY_HOLDOFF + 1)
    pair.client.send_control_message("PUSH_REQUEST", pair.now)
    pair._collect()
    pair.run_for(1)
    assert not _server(pair).drops["push_request_repeated"]


def _rejected_before_the_key_method() -> None:
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(lambda: pair.server is not None, seconds=5)
    _server(pair).reject(pair.now, "not now")
    assert _server(pair).failed


def _rejected_at_admission() -> None:
    pair = Pair.create(client_config(), server_config())
    pair.admit = lambda server, now: server.reject(now, "not today")
    assert pair.run_until(lambda: bool(events_of(pair.client_events, ev.AuthFailed)),
                          seconds=10)


def _rejected_after_accepting() -> None:
    pair = Pair.create(client_config(), server_config())

    def accept_then_change_mind(server: Session, now: float) -> None:
        server.accept(now, SUBNET_PUSH, peer_id=0)
        server.reject(now, "changed my mind")

    pair.admit = accept_then_change_mind
    assert pair.run_until(lambda: bool(events_of(pair.client_events, ev.AuthFailed)),
                          seconds=10)


@functools.cache
def _client_context(cn: str) -> Any:
    pki = make_test_pki()
    cred = issue_cert(pki.ca, "client", cn)
    return build_context(server_side=False, ca_pem=certificate_pem(pki.ca.cert).decode(),
                         cert_pem=certificate_pem(cred.cert).decode(),
                         key_pem=private_key_pem(cred.key).decode())


def _certificate_changes_after_the_push_reply() -> None:
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    pair.client.config = dataclasses.replace(pair.client.config,
                                             tls_context=_client_context("client2"))
    pair.client.renegotiate(pair.now)
    pair._collect()
    pair.run_for(5)
    assert _server(pair).drops["peer_certificate_changed"] == 1


SCENARIOS: dict[str, tuple[Callable[[], None], set[Edge]]] = {
    "handshake_then_renegotiate": (_handshake_then_renegotiate, {
        (K.PRE_START, K.START), (K.START, K.ACTIVE), (K.ACTIVE, K.DATA_READY),
        (P.IDLE, P.REQUESTING), (P.REQUESTING, P.PUSHED),
        (A.HANDSHAKING, A.AUTHENTICATED), (A.AUTHENTICATED, A.ACCEPTED),
        (A.ACCEPTED, A.REPLIED)}),
    "slow_admission": (_slow_admission_repeats_the_push_request, {
        (P.REQUESTING, P.REQUESTING), (P.REQUESTING, P.PUSHED)}),
    "unasked_push": (_unasked_push_before_our_key_is_active, {(P.IDLE, P.PUSHED)}),
    "push_request_after_hold_off": (_push_request_after_the_hold_off_is_answered_again, {
        (A.REPLIED, A.REPLIED)}),
    "rejected_before_key_method": (_rejected_before_the_key_method, {
        (A.HANDSHAKING, A.REJECTED)}),
    "rejected_at_admission": (_rejected_at_admission, {(A.AUTHENTICATED, A.REJECTED)}),
    "rejected_after_accepting": (_rejected_after_accepting, {(A.ACCEPTED, A.REJECTED)}),
    "certificate_changes": (_certificate_changes_after_the_push_reply, {
        (A.REPLIED, A.REJECTED)}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_takes_its_edges(name: str, moves: set[Edge]) -> None:
    run, expected = SCENARIOS[name]
    run()
    assert expected <= moves, expected - moves


def test_the_scenarios_take_every_edge_of_every_table() -> None:
    taken = set().union(*(edges for _, edges in SCENARIOS.values()))
    for table in TABLES.values():
        assert _edges(table) <= taken, _edges(table) - taken


# ---------------------------------------------------------------- misuse vs violation


def _established_server() -> Session:
    pair = Pair.create(client_config(), server_config())
    _up(pair)
    return _server(pair)


def _rejected_server() -> Session:
    pair = Pair.create(client_config(), server_config())
    pair.admit = lambda server, now: server.reject(now, "no")
    assert pair.run_until(lambda: bool(events_of(pair.client_events, ev.AuthFailed)),
                          seconds=10)
    return _server(pair)


def _started_client() -> Session:
    client = Session(client_config(), 1000.0)
    client.start(1000.0)
    return client


def _answer_statelessly(client: Session) -> object:
    return Session.after_stateless_reset(client.config, 1000.0, local_session_id=b"\x01" * 8,
                                         remote_session_id=b"\x02" * 8)


# name: (a session in some state, the call its state does not allow)
MISUSES: dict[str, tuple[Callable[[], Session], Callable[[Session], object]]] = {
    "start_a_server": (lambda: Session(server_config(), 1000.0), lambda s: s.start(1000.0)),
    "start_twice": (_started_client, lambda s: s.start(1001.0)),
    "client_accepts": (_started_client, lambda s: s.accept(1001.0, SUBNET_PUSH)),
    "client_rejects": (_started_client, lambda s: s.reject(1001.0, "no")),
    "client_answers_statelessly": (_started_client, _answer_statelessly),
    "message_before_a_control_channel": (
        _started_client, lambda s: s.send_control_message("EXIT", 1001.0)),
    "accept_twice": (_established_server,
                     lambda s: s.accept(3000.0, SUBNET_PUSH, peer_id=0)),
    "accept_after_reject": (_rejected_server,
                            lambda s: s.accept(3000.0, SUBNET_PUSH, peer_id=0)),
    "reject_twice": (_rejected_server, lambda s: s.reject(3000.0, "no again")),
}


@pytest.mark.parametrize("name", list(MISUSES))
def test_caller_misuse_is_raised_to_the_caller_and_never_counted_as_a_drop(name: str) -> None:
    setup, misuse = MISUSES[name]
    session = setup()
    drops_before = dict(session.drops)
    session.take_events()
    with pytest.raises(CallerMisuse) as caught:
        misuse(session)
    assert not isinstance(caught.value, PeerViolation)
    assert dict(session.drops) == drops_before
    assert not session.take_events()  # refused before it changed anything


def test_a_misuse_met_inside_the_receive_path_is_raised_not_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A move the table lacks while a datagram is processed is a bug to fix, not a bad packet:
    it leaves ``receive_datagram`` instead of becoming a drop or a failed handshake."""
    now = 1000.0
    client = Session(client_config(), now)
    server = Session(server_config(), now)
    client.start(now)
    for data in client.take_datagrams():
        server.receive_datagram(data, now)
    replies = server.take_datagrams()

    def broken(table: Any, current: Any, target: Any, where: str) -> Any:
        raise CallerMisuse(f"cannot go from {current.value} to {target.value}", where)

    monkeypatch.setattr(states, "transition", broken)
    with pytest.raises(CallerMisuse):
        for data in replies:  # the server's reset: the client starts TLS (a key move)
            client.receive_datagram(data, now)
    assert not client.drops
    assert not events_of(client.take_events(), ev.HandshakeFailed)


def test_what_a_peer_can_get_wrong_is_a_peer_violation() -> None:
    for error in (DecodeError, AuthenticationError, ReplayError, StateError, HandshakeError):
        assert issubclass(error, PeerViolation)
        assert not issubclass(error, CallerMisuse)


def test_a_peer_violation_is_counted_and_not_raised() -> None:
    now = 1000.0
    client = Session(client_config(), now)
    client.start(now)
    other_client = Session(client_config(), now)
    other_client.start(now)
    (reset,) = other_client.take_datagrams()
    client.receive_datagram(reset, now)  # a client's reset sent to a client
    client.receive_datagram(b"\xff" * 20, now)
    assert client.drops == {"wrong_direction": 1, "bad_opcode": 1}


def test_a_late_control_packet_does_not_revive_a_failed_key() -> None:
    """The server's first key gave up (hand window) before the client's ClientHello came: the
    late packet is acknowledged but starts no TLS on the dead key."""
    now = 1000.0
    client = Session(client_config(), now)
    server = Session(server_config(hand_window=5.0), now)
    client.start(now)
    for data in client.take_datagrams():
        server.receive_datagram(data, now)
    for data in server.take_datagrams():
        client.receive_datagram(data, now)
    late = client.take_datagrams()  # ack + ClientHello, held back
    assert late
    server.handle_timer(now + 6)
    assert server.failed
    server.take_events()
    server.take_datagrams()
    for data in late:
        server.receive_datagram(data, now + 6)
    phases = [e.phase for e in events_of(server.take_events(), ev.PhaseReached)]
    assert ev.PHASE_TLS_STARTED not in phases
    sent = [split_byte0(d[0])[0] for d in server.take_datagrams()]
    assert Opcode.CONTROL_V1 not in sent  # no ServerHello from a failed key


@pytest.mark.parametrize("seed", range(12))
def test_no_peer_behaviour_on_a_lossy_network_reaches_a_move_the_tables_lack(seed: int) -> None:
    """Loss, duplicates and reordering while both sides renegotiate: whatever arrives, and in
    whatever order, is checked before any state moves, so nothing raises out of the session."""
    pair = Pair.create(client_config(reneg_seconds=20.0), server_config(reneg_seconds=25.0),
                       seed=seed, loss=0.25, duplicate=0.2, reorder=0.3)
    assert pair.run_until(pair.established, seconds=120)
    pair.run_for(120)
    renegotiated = [e for e in events_of(pair.client_events, ev.DataChannelReady)
                    if e.renegotiated]
    assert len(renegotiated) >= 3
