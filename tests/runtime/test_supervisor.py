"""Reconnect policy: remote order and back-off (OpenVPN 2.6 semantics)."""

from __future__ import annotations

import random

import pytest

from trivpn.runtime.supervisor import (
    RemoteSchedule,
    backoff_delay,
    resolve_attempts,
    resolve_retry_delay,
)


@pytest.mark.parametrize(("failures", "remotes", "expected"), [
    (0, 1, 1), (4, 1, 1),            # five rounds at the base delay
    (5, 1, 2), (6, 1, 4), (7, 1, 8),  # then doubling per round
    (20, 1, 300),                      # capped at the maximum
    (9, 2, 1), (10, 2, 2), (12, 2, 4),  # rounds count over all remotes
])
def test_backoff_doubles_after_five_failed_rounds_up_to_the_maximum(failures, remotes,
                                                                    expected):
    assert backoff_delay(failures, remotes, base=1, maximum=300) == expected


def test_backoff_respects_a_small_maximum_and_a_zero_base():
    assert backoff_delay(8, 1, base=5, maximum=20) == 20
    assert backoff_delay(0, 1, base=0, maximum=300) == 0
    assert backoff_delay(6, 1, base=0, maximum=300) == 4


def test_failed_attempts_walk_through_remotes_in_order():
    schedule = RemoteSchedule(["a", "b", "c"])
    seen = [schedule.first().remote] + [schedule.restart().remote for _ in range(4)]
    assert seen == ["a", "b", "c", "a", "b"]


def test_first_restart_after_an_established_connection_retries_the_same_remote():
    schedule = RemoteSchedule(["a", "b"])
    schedule.first()
    schedule.established()
    assert schedule.restart().remote == "a"
    assert schedule.restart().remote == "b"


def test_server_requested_advance_moves_on_even_after_success():
    schedule = RemoteSchedule(["a", "b"])
    schedule.established()
    assert schedule.restart(advance=True).remote == "b"


def test_success_resets_the_backoff():
    schedule = RemoteSchedule(["a"], base=1, maximum=300)
    delays = [schedule.restart().delay for _ in range(8)]
    assert delays == [1, 1, 1, 1, 1, 2, 4, 8]
    schedule.established()
    assert schedule.restart().delay == 1


def test_from_a_fresh_start_the_wait_doubles_from_the_fifth_restart():
    # openvpn 2.6.14, one unreachable remote: "Restart pause, 1 second(s)" four times, then 2,
    # 4, 8 (tests/interop/test_resolv_retry_vs_openvpn.py compares the timing).
    schedule = RemoteSchedule(["a"], base=1, maximum=300)
    schedule.first()
    assert [schedule.restart().delay for _ in range(7)] == [1, 1, 1, 1, 2, 4, 8]
    two = RemoteSchedule(["a", "b"], base=1, maximum=300)
    two.first()
    assert [two.restart().delay for _ in range(11)] == [1] * 9 + [2, 2]


def test_remote_random_shuffles_once():
    schedule = RemoteSchedule(list(range(10)), shuffle=random.Random(1))
    order = schedule.remotes
    assert sorted(order) == list(range(10)) and order != tuple(range(10))
    walked = [schedule.first().remote] + [schedule.restart().remote for _ in range(19)]
    assert walked == list(order) * 2


@pytest.mark.directive("resolv-retry")
@pytest.mark.parametrize(("resolv_retry", "lookups"), [
    (0, 1), (1, 2), (5, 2), (6, 3), (10, 3), (12, 4), (None, 2),  # None: infinite
])
def test_resolv_retry_gives_one_lookup_plus_one_per_started_5s(resolv_retry, lookups):
    # openvpn 2.6.14 with an unresolvable remote: "RESOLVE: Cannot resolve host address" once
    # (0, then exit), twice (5, infinite), four times (12) per connection attempt
    assert resolve_attempts(resolv_retry) == lookups
    assert [resolve_retry_delay(n) for n in range(1, 4)] == [0, 5, 5]


def test_no_remotes_is_refused():
    with pytest.raises(ValueError, match="remote"):
        RemoteSchedule([])
