"""Timers that end a session for good: ping-exit, inactive, session-timeout (OpenVPN's SIGTERM
reasons in forward.c and ping.c), in both roles, from the config or from a push."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.protocol.sessionkit import SUBNET_PUSH, Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.push import parse_pushed_options
from trivpn.protocol.session import Session

IP_PACKET = bytes.fromhex("4500001c0001000040017c4cc6120802c6120801" "0800f7ff00000000")
# the usual push without its ping-restart (which would replace a client's ping-exit)
PUSH_NO_RESTART = tuple(o for o in SUBNET_PUSH if not o.startswith("ping-restart"))


def _pushing(options: tuple[str, ...]) -> Callable[[Session, float], None]:
    def admit(server: Session, now: float) -> None:
        server.accept(now, options, peer_id=0)
    return admit


def _up(pair: Pair) -> float:
    """Bring the pair up; returns when the client applied the push."""
    assert pair.run_until(pair.established, seconds=60), (pair.client_events, pair.server_events)
    return pair.now


def _exits(events: list[ev.Event]) -> list[ev.TimeoutExit]:
    return events_of(events, ev.TimeoutExit)


def _silence_server(pair: Pair) -> None:
    pair.server = None
    pair.server_silent = True


@pytest.mark.directive("ping-exit")
def test_ping_exit_ends_the_client_when_the_server_falls_silent() -> None:
    pair = Pair.create(client_config(ping_restart=30.0, ping_exit=True),
                       server_config(ping_interval=10.0))
    pair.admit = _pushing(PUSH_NO_RESTART)
    _up(pair)
    pair.run_for(45)  # the server's pings keep it alive
    assert not _exits(pair.client_events)
    _silence_server(pair)
    silent_from = pair.now
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=60)
    exit_ = _exits(pair.client_events)[0]
    assert exit_.cause == ev.TIMEOUT_PING_EXIT
    assert 20 <= exit_.after <= 30.5 and pair.now - silent_from <= 31
    assert not events_of(pair.client_events, ev.KeepaliveTimeout)  # exit, not restart


@pytest.mark.directive("ping-exit")
def test_ping_exit_fires_against_an_unreachable_server_as_openvpn_does() -> None:
    # OpenVPN arms the timer when the instance starts, not when the tunnel is up
    pair = Pair.create(client_config(ping_restart=5.0, ping_exit=True), server_config(),
                       server_silent=True)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=10)
    assert _exits(pair.client_events)[0].cause == ev.TIMEOUT_PING_EXIT
    assert pair.now == pytest.approx(1005.0, abs=0.01)


@pytest.mark.directive("ping-exit")
def test_ping_exit_on_the_server_drops_a_silent_client() -> None:
    pair = Pair.create(client_config(), server_config(ping_restart=15.0, ping_exit=True))
    _up(pair)
    pair.server_silent = True  # the client's packets stop arriving
    assert pair.run_until(lambda: bool(_exits(pair.server_events)), seconds=20)
    assert _exits(pair.server_events)[0].cause == ev.TIMEOUT_PING_EXIT


@pytest.mark.directive("ping-exit")
def test_a_pushed_ping_exit_replaces_the_clients_ping_restart() -> None:
    pair = Pair.create(client_config(ping_restart=100.0), server_config())
    pair.admit = _pushing((*PUSH_NO_RESTART, "ping-exit 20"))
    _up(pair)
    _silence_server(pair)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=25)
    assert _exits(pair.client_events)[0].cause == ev.TIMEOUT_PING_EXIT


@pytest.mark.directive("ping-exit")
def test_ping_exit_and_ping_restart_in_one_push_the_last_one_wins() -> None:
    both = parse_pushed_options(["ping-restart 60", "ping-exit 20"])
    assert (both.ping_restart, both.ping_exit) == (None, 20)
    both = parse_pushed_options(["ping-exit 20", "ping-restart 60"])
    assert (both.ping_restart, both.ping_exit) == (60, None)


@pytest.mark.directive("inactive")
def test_inactive_ends_the_client_when_the_tunnel_carries_no_traffic() -> None:
    pair = Pair.create(client_config(inactive=30.0), server_config(ping_interval=10.0))
    _up(pair)
    for _ in range(6):  # a packet each way every 10 s: active
        pair.exchange(IP_PACKET, IP_PACKET)
        pair.run_for(10)
    assert not _exits(pair.client_events)
    last_traffic = pair.now - 10
    # pings (ping 10) still flow both ways but are not activity
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=40)
    exit_ = _exits(pair.client_events)[0]
    assert exit_.cause == ev.TIMEOUT_INACTIVE
    assert pair.now == pytest.approx(last_traffic + 30, abs=0.1)
    assert not events_of(pair.client_events, ev.KeepaliveTimeout)


@pytest.mark.directive("inactive")
def test_inactive_with_bytes_counts_only_enough_traffic_as_activity() -> None:
    # 36-byte packets every 5 s: 6 per period, about 300 bytes in + out, below 1000
    pair = Pair.create(client_config(), server_config(inactive=30.0, inactive_bytes=1000))
    started = _up(pair)
    fired = False
    for _ in range(12):
        pair.exchange(IP_PACKET, IP_PACKET)
        pair.run_for(5)
        if _exits(pair.server_events):
            fired = True
            break
    assert fired
    assert _exits(pair.server_events)[0].cause == ev.TIMEOUT_INACTIVE
    assert pair.now - started <= 31

    big = IP_PACKET + bytes(1200)
    pair = Pair.create(client_config(), server_config(inactive=30.0, inactive_bytes=1000))
    _up(pair)
    for _ in range(12):  # more than 1000 bytes each period: active
        pair.exchange(big, big)
        pair.run_for(5)
    assert not _exits(pair.server_events)


@pytest.mark.directive("inactive")
def test_a_pushed_inactive_applies_to_the_client() -> None:
    pair = Pair.create(client_config(), server_config())
    pair.admit = _pushing((*SUBNET_PUSH, "inactive 20"))
    pushed_at = _up(pair)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=25)
    assert _exits(pair.client_events)[0].cause == ev.TIMEOUT_INACTIVE
    assert pair.now == pytest.approx(pushed_at + 20, abs=0.5)


@pytest.mark.directive("session-timeout")
def test_session_timeout_ends_the_server_side_session_despite_traffic() -> None:
    pair = Pair.create(client_config(), server_config(session_timeout=40.0))
    _up(pair)
    for _ in range(10):
        if _exits(pair.server_events):
            break
        pair.exchange(IP_PACKET, IP_PACKET)
        pair.run_for(5)
    exits = _exits(pair.server_events)
    assert exits and exits[0].cause == ev.TIMEOUT_SESSION
    assert exits[0].after == pytest.approx(40.0, abs=0.5)


@pytest.mark.directive("session-timeout")
def test_client_session_timeout_counts_from_a_push_that_sets_a_timer() -> None:
    # OpenVPN re-initialises its timers when the push carries ping/ping-restart/...
    pair = Pair.create(client_config(session_timeout=50.0), server_config())
    pushed_at = _up(pair)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=60)
    assert _exits(pair.client_events)[0].cause == ev.TIMEOUT_SESSION
    assert pair.now == pytest.approx(pushed_at + 50, abs=0.5)


@pytest.mark.directive("session-timeout")
def test_a_pushed_session_timeout_applies_to_the_client() -> None:
    pair = Pair.create(client_config(), server_config())
    pair.admit = _pushing((*SUBNET_PUSH, "session-timeout 15"))
    pushed_at = _up(pair)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=20)
    assert pair.now == pytest.approx(pushed_at + 15, abs=0.5)


@pytest.mark.directive("session-timeout", "inactive", "ping-exit")
def test_an_exit_timer_fires_once_and_stops_scheduling() -> None:
    pair = Pair.create(client_config(session_timeout=3.0, inactive=3.0, ping_restart=3.0,
                                     ping_exit=True), server_config(), server_silent=True)
    assert pair.run_until(lambda: bool(_exits(pair.client_events)), seconds=5)
    fired_at = pair.now
    # only the retransmit/handshake deadlines remain, none at or before the fired one
    deadline = pair.client.next_timer()
    assert deadline is None or deadline > fired_at
    pair.run_for(20)
    exits = _exits(pair.client_events)
    assert [e.cause for e in exits] == [ev.TIMEOUT_INACTIVE]  # OpenVPN checks inactive first


@pytest.mark.directive("server-poll-timeout", "connect-timeout")
def test_client_gives_up_on_a_server_that_never_answers_after_server_poll_timeout() -> None:
    pair = Pair.create(client_config(server_poll_timeout=5.0), server_config(),
                       server_silent=True)
    assert pair.run_until(lambda: bool(events_of(pair.client_events, ev.ServerPollTimeout)),
                          seconds=10)
    assert pair.now == pytest.approx(1005.0, abs=0.01)
    assert events_of(pair.client_events, ev.ServerPollTimeout)[0].seconds == 5.0
    pair.run_for(10)  # fired once
    assert len(events_of(pair.client_events, ev.ServerPollTimeout)) == 1


@pytest.mark.directive("server-poll-timeout", "connect-timeout")
def test_server_poll_timeout_does_not_fire_once_the_server_answered() -> None:
    pair = Pair.create(client_config(server_poll_timeout=5.0), server_config(ping_interval=1.0))
    _up(pair)
    pair.run_for(20)
    assert not events_of(pair.client_events, ev.ServerPollTimeout)
