"""Replay window semantics of OpenVPN packet_id.c (docs/protocol.md §3.2, §7.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.errors import ReplayError
from trivpn.protocol.replay import ReplayWindow


def accepted(w: ReplayWindow, pid: int, now: float = 0.0, ts: int | None = None) -> bool:
    try:
        w.check_and_add(pid, now, ts)
    except ReplayError:
        return False
    return True


def test_packet_id_zero_is_never_valid() -> None:
    w = ReplayWindow()
    assert not accepted(w, 0)
    assert not accepted(w, 0, ts=100)


def test_increasing_ids_are_accepted() -> None:
    w = ReplayWindow()
    assert all(accepted(w, i) for i in range(1, 200))
    assert w.highest == 199


def test_duplicate_is_rejected() -> None:
    w = ReplayWindow()
    assert accepted(w, 1)
    assert accepted(w, 2)
    assert not accepted(w, 2)
    assert not accepted(w, 1)


def test_reordering_within_window_is_accepted_once() -> None:
    w = ReplayWindow()
    for pid in (1, 2, 5, 4, 3):
        assert accepted(w, pid)
    assert not accepted(w, 4)


def test_window_covers_backtrack_ids_below_highest() -> None:
    w = ReplayWindow(backtrack=64)
    assert accepted(w, 100)
    assert accepted(w, 37)  # 100 - 37 = 63 < 64
    assert not accepted(w, 36)  # 64 behind: outside


def test_first_packet_allows_lower_ids_down_to_1() -> None:
    w = ReplayWindow()
    assert accepted(w, 5)
    assert accepted(w, 1)


def test_jump_beyond_window_restarts_it() -> None:
    w = ReplayWindow(backtrack=8)
    assert accepted(w, 1)
    assert accepted(w, 1000)
    assert not accepted(w, 2)
    assert accepted(w, 993)
    assert not accepted(w, 992)


def test_check_alone_does_not_record() -> None:
    w = ReplayWindow()
    w.check(1, 0.0)
    w.check(1, 0.0)
    w.add(1, 0.0)
    with pytest.raises(ReplayError):
        w.check(1, 0.0)


@pytest.mark.parametrize(("now", "ok"), [(110.0, True), (115.0, True), (115.5, False)])
def test_lower_id_expires_when_a_higher_id_arrived_over_time_backtrack_ago(now: float,
                                                                          ok: bool) -> None:
    w = ReplayWindow(time_backtrack=15.0)
    assert accepted(w, 10, now=100.0)
    assert accepted(w, 9, now=now) is ok


def test_time_backtrack_uses_the_oldest_higher_received_id() -> None:
    w = ReplayWindow(time_backtrack=15.0)
    assert accepted(w, 10, now=0.0)
    assert accepted(w, 20, now=14.0)
    # at t=16: id 15 only has 20 (received at 14) above it among received ids -> ok
    assert accepted(w, 15, now=16.0)
    # id 5 has 10 above it, received at 0, more than 15 s ago -> expired
    assert not accepted(w, 5, now=16.0)


def test_new_highest_ids_never_expire() -> None:
    w = ReplayWindow(time_backtrack=15.0)
    assert accepted(w, 1, now=0.0)
    assert accepted(w, 2, now=10_000.0)


def test_time_backtrack_zero_disables_expiry() -> None:
    w = ReplayWindow(time_backtrack=0)
    assert accepted(w, 10, now=0.0)
    assert accepted(w, 9, now=10_000.0)


def test_long_form_older_timestamp_is_rejected() -> None:
    w = ReplayWindow()
    assert accepted(w, 5, ts=1000)
    assert not accepted(w, 6, ts=999)


def test_long_form_newer_timestamp_starts_new_sequence() -> None:
    w = ReplayWindow()
    assert accepted(w, 50, ts=1000)
    assert accepted(w, 1, ts=1001)  # lower id, but newer time
    assert not accepted(w, 51, ts=1000)  # the old sequence is gone
    assert accepted(w, 2, ts=1001)
    assert not accepted(w, 1, ts=1001)


def test_long_form_same_timestamp_compares_ids() -> None:
    w = ReplayWindow()
    assert accepted(w, 1, ts=7)
    assert accepted(w, 3, ts=7)
    assert accepted(w, 2, ts=7)
    assert not accepted(w, 3, ts=7)


def test_backtrack_zero_requires_consecutive_ids() -> None:
    w = ReplayWindow(backtrack=0)
    assert accepted(w, 4)  # the first id of a sequence is free
    assert accepted(w, 5)
    assert not accepted(w, 7)
    assert not accepted(w, 5)
    assert accepted(w, 6)
    assert not accepted(w, 2, ts=9)  # new timestamp must start at 1
    assert accepted(w, 1, ts=9)


@pytest.mark.parametrize(("backtrack", "time_backtrack"), [(-1, 15.0), (65537, 15.0), (64, -1)])
def test_invalid_parameters_are_rejected(backtrack: int, time_backtrack: float) -> None:
    with pytest.raises(ValueError):
        ReplayWindow(backtrack, time_backtrack)


class ReferenceWindow:
    """The rule stated in ReplayWindow's docstring, written as plainly as possible."""

    def __init__(self, backtrack: int, time_backtrack: float) -> None:
        self.backtrack, self.time_backtrack = backtrack, time_backtrack
        self.highest = 0
        self.received: dict[int, float] = {}

    def offer(self, pid: int, now: float) -> bool:
        if pid == 0 or pid in self.received:
            return False
        if pid < self.highest:
            if self.highest - pid >= self.backtrack:
                return False
            if any(t + self.time_backtrack < now
                   for other, t in self.received.items() if pid < other <= self.highest):
                return False
        self.received[pid] = now
        self.highest = max(self.highest, pid)
        return True


@given(st.lists(st.tuples(st.integers(0, 60), st.floats(0, 4)), max_size=60))
def test_window_matches_reference_model(offers: list[tuple[int, float]]) -> None:
    w, ref = ReplayWindow(backtrack=8, time_backtrack=5.0), ReferenceWindow(8, 5.0)
    now = 0.0
    for pid, dt in offers:
        now += dt
        assert accepted(w, pid, now) == ref.offer(pid, now), (pid, now)


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3), st.floats(0, 4)), max_size=60))
def test_check_and_add_equals_check_then_add(offers: list[tuple[int, int, float]]) -> None:
    fast, slow = ReplayWindow(8, 5.0), ReplayWindow(8, 5.0)
    now = 0.0
    for pid, ts, dt in offers:
        now += dt
        try:
            slow.check(pid, now, ts)
        except ReplayError:
            ok = False
        else:
            slow.add(pid, now, ts)
            ok = True
        assert accepted(fast, pid, now, ts) == ok
