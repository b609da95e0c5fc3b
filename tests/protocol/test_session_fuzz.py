"""Garbage into established sessions: nothing escapes, and the tunnel keeps working."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol.sessionkit import Pair, client_config, server_config

PACKET = bytes.fromhex("4500001c00010000400100000000000000000000") + bytes(8)


@cache
def _pair() -> Pair:
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(pair.established, seconds=60)
    return pair


# First bytes worth hitting: every control/data opcode with key ids 0 and 1.
_FIRST = st.sampled_from([op << 3 | kid for op in range(1, 12) for kid in (0, 1)]
                         + [0, 0xFF])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=_FIRST, rest=st.binary(max_size=200))
def test_arbitrary_datagrams_never_escape_a_session(first, rest):
    pair = _pair()
    assert pair.server is not None
    for session in (pair.client, pair.server):
        session.receive_datagram(bytes([first]) + rest, pair.now)
        session.take_tun_packets()
        session.take_events()
    pair.client.take_datagrams()
    pair.server.take_datagrams()


def test_sessions_still_carry_data_after_the_fuzzing():
    pair = _pair()
    pair.exchange(PACKET, PACKET)
    pair.run_for(0.1)
    assert PACKET in pair.server_tun and PACKET in pair.client_tun
