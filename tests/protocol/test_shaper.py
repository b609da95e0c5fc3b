"""shaper N (OpenVPN shaper.c/forward.c; the rate against openvpn 2.6 in
tests/interop/test_more_directives.py)."""

from __future__ import annotations

import pytest

from trivpn.protocol.shaper import Shaper, datagram_overhead


@pytest.mark.directive("shaper")
def test_each_datagram_sets_the_wait_for_the_next_one():
    shaper = Shaper(1000, datagram_overhead(ipv6=False, tcp=False))
    assert shaper.delay(0.0) == 0.0
    shaper.wrote(472, 10.0)  # 472 + 28 header bytes at 1000 B/s: half a second
    assert shaper.delay(10.1) == pytest.approx(0.4)
    assert shaper.delay(10.4995) == 0.0  # under a millisecond: go
    shaper.wrote(1, 20.0)  # at least 100 bytes count
    assert shaper.delay(20.0) == pytest.approx(0.1)


@pytest.mark.directive("shaper")
def test_the_wait_is_at_most_ten_seconds_and_the_rate_is_bounded():
    shaper = Shaper(100, datagram_overhead(ipv6=True, tcp=True))
    shaper.wrote(60_000, 0.0)
    assert shaper.delay(0.0) == 10.0
    with pytest.raises(ValueError):
        Shaper(99, 28)
