"""Compression in a session: configured and pushed (OpenVPN init.c do_deferred_options)."""

from __future__ import annotations

import pytest

from tests.protocol.sessionkit import SUBNET_PUSH, Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.compression import Compression
from trivpn.protocol.session import Session

PACKET = bytes.fromhex("4500") + bytes(18) + b"compressible payload " * 50


def _pair_with_push(push: str, *, compression_stub_only: bool = True) -> Pair:
    pair = Pair.create(client_config(compression_stub_only=compression_stub_only),
                       server_config(compression=Compression.LZ4_V2, compress_outgoing=True))

    def admit(server: Session, now: float) -> None:
        server.accept(now, (*SUBNET_PUSH, push), peer_id=0)

    pair.admit = admit
    return pair


@pytest.mark.directive("allow-compression")
def test_pushed_lz4_v2_is_refused_when_compression_is_not_allowed() -> None:
    pair = _pair_with_push("compress lz4-v2")  # the default: stub-only
    pair.run_until(lambda: pair.client.failed, seconds=30)
    failures = events_of(pair.client_events, ev.HandshakeFailed)
    assert failures and failures[0].cause == ev.CAUSE_BAD_PUSH
    assert "compression" in failures[0].detail


@pytest.mark.directive("allow-compression")
def test_pushed_lz4_v2_is_decompressed_in_asym_mode() -> None:
    pair = _pair_with_push("compress lz4-v2", compression_stub_only=False)
    assert pair.run_until(pair.established, seconds=60), pair.client_events
    assert pair.server is not None
    wire = pair.server.encrypt_data(PACKET, pair.now)
    assert wire is not None
    assert pair.client.decrypt_data(wire, pair.now) == PACKET
    comp = pair.client.compressor
    assert comp is not None and comp.kind is Compression.LZ4_V2
    assert comp.decompressed_packets == 1 and comp.pre_decompress < len(PACKET) // 4
    # ...and sends uncompressed (asym): the server decompresses nothing
    server_comp = pair.server.compressor
    assert server_comp is not None
    back = pair.client.encrypt_data(PACKET, pair.now)
    assert back is not None
    assert pair.server.decrypt_data(back, pair.now) == PACKET
    assert server_comp.decompressed_packets == 0


def test_pushed_comp_lzo_adaptive_then_comp_noadapt() -> None:
    pair = _pair_with_push("comp-lzo", compression_stub_only=False)
    pair.admit = lambda server, now: server.accept(now, (*SUBNET_PUSH, "comp-lzo",
                                                         "comp-noadapt"), peer_id=0)
    assert pair.run_until(pair.established, seconds=60), pair.client_events
    comp = pair.client.compressor
    assert comp is not None and comp.kind is Compression.LZO and not comp.adaptive


def test_no_compression_configured_means_no_compressor_on_the_data_path() -> None:
    pair = Pair.create(client_config(), server_config())
    assert pair.run_until(pair.established, seconds=60)
    assert pair.client.compressor is None
