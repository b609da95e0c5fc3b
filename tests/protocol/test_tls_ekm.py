"""TLS-EKM (docs/protocol.md §6.3): data keys from the TLS exporter when both ends can,
the PRF otherwise; the server pushes it as a 2.6 server does."""

from __future__ import annotations

from dataclasses import replace

from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.peerinfo import IV_PROTO_TLS_KEY_EXPORT, build_peer_info
from trivpn.protocol.session import SessionConfig
from trivpn.protocol.tls import KeyExporter
from trivpn.tlsnative import keying_material_exporter

IP_PACKET = bytes.fromhex("4500001c000000004001f90cc6120802c6120801") + b"\x08\x00\xf7\xff" + \
    bytes(4)


def _with_exporter(cfg: SessionConfig, *, announce: bool = True) -> SessionConfig:
    exporter: KeyExporter | None = keying_material_exporter(cfg.tls_context)
    assert exporter is not None
    cfg = replace(cfg, key_exporter=exporter)
    if not cfg.is_server and announce:
        assert cfg.peer_info is not None
        proto = int(cfg.peer_info.split("IV_PROTO=")[1].split("\n")[0])
        cfg = replace(cfg, peer_info=build_peer_info(
            ciphers=cfg.data_ciphers, iv_proto=proto | IV_PROTO_TLS_KEY_EXPORT))
    return cfg


def _up(pair: Pair) -> None:
    assert pair.run_until(pair.established, seconds=60), (pair.client_events,
                                                          pair.server_events)


def _derivation(events: list[ev.Event]) -> set[str]:
    return {e.key_derivation for e in events_of(events, ev.DataChannelReady)}


def test_both_ends_with_an_exporter_derive_data_keys_with_tls_ekm():
    pair = Pair.create(_with_exporter(client_config()), _with_exporter(server_config()))
    _up(pair)
    assert _derivation(pair.client_events) == _derivation(pair.server_events) == {"tls-ekm"}
    pair.exchange(IP_PACKET, IP_PACKET[::-1])
    pair.run_for(0.1)
    assert pair.server_tun == [IP_PACKET] and pair.client_tun == [IP_PACKET[::-1]]


def test_server_pushes_tls_ekm_in_protocol_flags_to_a_client_that_announced_it():
    pair = Pair.create(_with_exporter(client_config()), _with_exporter(server_config()))
    _up(pair)
    assert pair.client.pushed is not None
    assert "tls-ekm" in pair.client.pushed.protocol_flags


def test_a_client_that_does_not_announce_it_gets_the_prf():
    pair = Pair.create(client_config(), _with_exporter(server_config()))
    _up(pair)
    assert _derivation(pair.server_events) == {"prf"}
    assert pair.client.pushed is not None
    assert "tls-ekm" not in pair.client.pushed.protocol_flags


def test_a_server_without_an_exporter_keeps_the_prf_for_an_announcing_client():
    pair = Pair.create(_with_exporter(client_config()), server_config())
    _up(pair)
    assert _derivation(pair.client_events) == _derivation(pair.server_events) == {"prf"}
    pair.exchange(IP_PACKET, IP_PACKET[::-1])
    pair.run_for(0.1)
    assert pair.server_tun == [IP_PACKET]


def test_renegotiated_keys_are_exported_from_the_new_tls_session():
    pair = Pair.create(_with_exporter(client_config()), _with_exporter(server_config()))
    _up(pair)
    pair.client.renegotiate(pair.now)
    assert pair.run_until(lambda: len(events_of(pair.client_events, ev.DataChannelReady)) == 2,
                          seconds=60)
    ready = events_of(pair.client_events, ev.DataChannelReady)
    assert [e.key_derivation for e in ready] == ["tls-ekm", "tls-ekm"]
    pair.exchange(IP_PACKET, IP_PACKET[::-1])
    pair.run_for(0.1)
    assert pair.client_tun[-1] == IP_PACKET[::-1]
