"""The handshake benchmark's bookkeeping: sharing the load between swarm processes and adding
up what they report."""

from __future__ import annotations

import argparse

import pytest

from trivpn.bench.__main__ import _port_range
from trivpn.bench.handshakes import SwarmTotals, split


def test_split_shares_a_total_as_evenly_as_possible():
    assert split(300, 2) == [150, 150]
    assert split(16, 3) == [6, 5, 5]
    assert split(2, 3) == [1, 1, 0]


def test_swarm_totals_add_counts_and_cpu_over_the_span_of_all_processes():
    totals = SwarmTotals.of([
        {"completed": 100, "failed": 1, "started": 10.0, "ended": 11.0, "cpu": 0.3},
        {"completed": 90, "failed": 0, "started": 10.2, "ended": 11.5, "cpu": 0.25},
    ])
    assert (totals.completed, totals.failed, totals.seconds) == (190, 1, 1.5)
    assert totals.cpu == pytest.approx(0.55)


def test_swarm_port_range_is_inclusive_and_checked():
    assert _port_range("2000-2002") == range(2000, 2003)
    for bad in ("2000", "3000-2000", "80-90", "a-b"):
        with pytest.raises(argparse.ArgumentTypeError):
            _port_range(bad)


def test_the_default_swarm_stays_within_the_servers_per_address_handshake_limit():
    """The swarm has one source address: more handshakes in flight than trivpn admits per
    address would measure the refusals and retries, not the server (74/s instead of ~390/s)."""
    from trivpn.bench.handshakes import HandshakeOptions
    from trivpn.protocol.admission import PREAUTH_PER_SOURCE

    assert HandshakeOptions().concurrency <= PREAUTH_PER_SOURCE
