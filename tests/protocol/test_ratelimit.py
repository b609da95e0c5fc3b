"""The fixed-window limiters behind connect-freq-initial and connect-freq."""

from __future__ import annotations

import pytest

from trivpn.protocol.ratelimit import WindowLimiter


def test_window_admits_the_limit_then_refuses_until_it_ends():
    limiter = WindowLimiter(3, 10.0)
    assert [limiter.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(9.9) is False
    assert limiter.allow(10.0) is True


def test_new_window_starts_at_the_first_event_after_the_old_one_ended():
    limiter = WindowLimiter(1, 10.0)
    assert limiter.allow(0.0) is True
    assert limiter.allow(25.0) is True  # window 25..35, not 20..30
    assert limiter.allow(34.0) is False
    assert limiter.allow(35.0) is True


def test_given_back_event_makes_room_for_another():
    limiter = WindowLimiter(2, 10.0)
    assert limiter.allow(0.0) and limiter.allow(0.0)
    limiter.give_back()
    assert limiter.allow(1.0) is True
    assert limiter.allow(1.0) is False


def test_refused_events_keep_a_flooded_window_full_despite_give_backs():
    limiter = WindowLimiter(2, 10.0)
    for _ in range(5):
        limiter.allow(0.0)
    limiter.give_back()
    assert limiter.allow(1.0) is False


def test_give_back_in_an_empty_window_does_not_add_credit():
    limiter = WindowLimiter(1, 10.0)
    limiter.give_back()
    assert [limiter.allow(0.0), limiter.allow(0.0)] == [True, False]


def test_zero_limit_refuses_everything():
    assert WindowLimiter(0, 10.0).allow(0.0) is False


def test_zero_period_is_refused():
    with pytest.raises(ValueError):
        WindowLimiter(1, 0)
