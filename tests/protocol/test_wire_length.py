"""The exact size of the data packet a plaintext becomes (``mtu.path`` sizes its probes with
it): DataKey.wire_length() and Session.data_wire_length() against what encryption produces."""

from __future__ import annotations

import itertools
import os

import pytest

from tests.protocol.sessionkit import Pair, client_config, server_config
from trivpn.protocol.compression import Compression
from trivpn.protocol.datachannel import SUPPORTED_CIPHERS, DataKey
from trivpn.protocol.keys import directional_keys

KEYS = directional_keys(bytes((i * 5 + 1) % 256 for i in range(256)), is_server=False)


@pytest.mark.parametrize(("cipher", "peer_id"),
                         list(itertools.product(SUPPORTED_CIPHERS, [None, 7])))
def test_data_key_wire_length_is_the_length_of_the_encrypted_packet(cipher: str,
                                                                    peer_id: int | None):
    key = DataKey(cipher, KEYS, 0, peer_id=peer_id, auth="SHA256")
    for size in (1, 11, 12, 13, 27, 28, 100, 1399, 1400, 1401, 1500):
        assert key.wire_length(size) == len(key.encrypt(os.urandom(size))), size


@pytest.mark.parametrize(("compression", "fragment"), [
    (Compression.NONE, 0), (Compression.LZO_STUB, 0), (Compression.STUB, 0),
    (Compression.STUB_V2, 0), (Compression.NONE, 600), (Compression.LZO_STUB, 600)])
def test_session_data_wire_length_counts_compression_and_fragment_framing(
        compression: Compression, fragment: int):
    pair = Pair.create(client_config(compression=compression, fragment=fragment),
                       server_config(compression=compression, fragment=fragment))
    assert pair.run_until(pair.established, seconds=60), pair.client_events
    for size in (28, 300, 560, 1400):
        packet = b"\x45" + os.urandom(size - 1)
        predicted = pair.client.data_wire_length(packet)
        wires = pair.client.encrypt_data_many(packet, pair.now)
        if predicted is None:  # split by the fragment layer: no single datagram
            assert fragment and len(wires) > 1
        else:
            assert [len(w) for w in wires] == [predicted], size


def test_session_without_a_data_key_has_no_wire_length():
    pair = Pair.create(client_config(), server_config())
    assert pair.client.data_wire_length(b"\x45" + bytes(99)) is None
