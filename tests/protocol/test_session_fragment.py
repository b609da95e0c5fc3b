"""The fragment layer in a session (OpenVPN forward.c: compress, fragment, then encrypt)."""

from __future__ import annotations

import pytest

from tests.protocol.sessionkit import Pair, client_config, server_config
from trivpn.protocol.compression import Compression

BIG = bytes.fromhex("4500") + bytes(range(256)) * 5  # 1282 bytes


def _pair(compression: Compression = Compression.NONE, ping: float | None = None) -> Pair:
    pair = Pair.create(
        client_config(fragment=500, compression=compression, ping_interval=ping,
                      ping_restart=None if ping is None else 5 * ping),
        server_config(fragment=500, compression=compression, ping_interval=ping,
                      ping_restart=None if ping is None else 5 * ping))
    assert pair.run_until(pair.established, seconds=60), pair.client_events
    assert pair.server is not None
    return pair


@pytest.mark.directive("fragment")
def test_big_packet_crosses_as_fragments_no_larger_than_the_fragment_size() -> None:
    pair = _pair()
    assert pair.server is not None
    wires = pair.client.encrypt_data_many(BIG, pair.now)
    assert len(wires) == 3 and all(len(w) <= 500 for w in wires)
    got = [pair.server.decrypt_data(w, pair.now) for w in reversed(wires)]
    assert got == [None, None, BIG]
    layer = pair.server.fragment_layer
    assert layer is not None and layer.reassembled == 1


def test_fragments_carry_compression_framing_inside() -> None:
    pair = _pair(compression=Compression.LZO_STUB)
    assert pair.server is not None
    wires = pair.client.encrypt_data_many(BIG, pair.now)
    out = [pair.server.decrypt_data(w, pair.now) for w in wires]
    assert out[-1] == BIG


def test_encrypt_data_queues_the_other_fragments_with_the_datagrams() -> None:
    pair = _pair()
    assert pair.server is not None
    pair.client.take_datagrams()
    first = pair.client.encrypt_data(BIG, pair.now)
    rest = pair.client.take_datagrams()
    assert first is not None and len(rest) == 2
    out = [pair.server.decrypt_data(w, pair.now) for w in (first, *rest)]
    assert out[-1] == BIG


def test_small_packets_and_keepalives_still_pass_with_a_fragment_header() -> None:
    pair = _pair(ping=1.0)
    assert pair.server is not None
    wire = pair.client.encrypt_data(b"\x45small", pair.now)
    assert wire is not None and pair.server.decrypt_data(wire, pair.now) == b"\x45small"
    pair.run_for(12.0)  # pings both ways keep the session alive
    assert not pair.client.failed and pair.client.established


def test_bad_fragment_header_is_dropped_and_counted() -> None:
    pair = _pair()
    assert pair.server is not None
    layer = pair.server.fragment_layer
    assert layer is not None
    # a whole packet with spurious sequence bits, encrypted with the real key
    key = pair.client._primary
    assert key is not None and key.data_key is not None
    wire = key.data_key.encrypt(b"\x00\x00\x00\x04payload")
    assert pair.server.decrypt_data(wire, pair.now) is None
    assert pair.server.drops["bad_fragment"] == 1
