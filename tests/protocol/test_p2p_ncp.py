"""TLS peer-to-peer NCP (OpenVPN 2.6 ssl_ncp.c, p2p_mode_ncp()): what each end decides from
the other's peer-info, and a trivpn tls-server and tls-client in p2p mode agreeing on it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.peerinfo import (
    IV_PROTO_CC_EXIT_NOTIFY,
    IV_PROTO_DATA_V2,
    IV_PROTO_DNS_OPTION,
    IV_PROTO_NCP_P2P,
    IV_PROTO_TLS_KEY_EXPORT,
    build_p2p_peer_info,
    parse_peer_info,
)
from trivpn.protocol.session import (
    P2P_PEER_ID,
    Session,
    SessionConfig,
    is_new_peer_reset,
    p2p_decision,
)
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.tls import KeyExporter
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth
from trivpn.tlsnative import keying_material_exporter

# what an OpenVPN 2.6 p2p peer announces (ssl.c push_peer_info, detail 1; DYN_TLS_CRYPT 512)
OPENVPN_P2P = (IV_PROTO_DATA_V2 | IV_PROTO_DNS_OPTION | IV_PROTO_CC_EXIT_NOTIFY
               | IV_PROTO_NCP_P2P | IV_PROTO_TLS_KEY_EXPORT | 512)
STATIC = StaticKey(bytes(range(256)))
IP_PACKET = bytes.fromhex("4500001c000000004001f90cc6120802c6120801") + b"\x08\x00\xf7\xff" + \
    bytes(4)


def _peer(ciphers: str | None, proto: int) -> str:
    text = f"IV_PROTO={proto}\n"
    return text if ciphers is None else f"IV_CIPHERS={ciphers}\n" + text


def test_p2p_server_takes_its_own_first_cipher_that_the_client_lists() -> None:
    peer = parse_peer_info(_peer("AES-128-GCM:CHACHA20-POLY1305:AES-256-GCM", OPENVPN_P2P))
    decision = p2p_decision(peer, ("CHACHA20-POLY1305", "AES-256-GCM"), is_server=True,
                            can_export=True)
    assert decision.cipher == "CHACHA20-POLY1305"


def test_p2p_client_takes_the_servers_first_cipher_that_it_lists() -> None:
    peer = parse_peer_info(_peer("AES-128-GCM:CHACHA20-POLY1305", OPENVPN_P2P))
    decision = p2p_decision(peer, ("CHACHA20-POLY1305", "AES-128-GCM"), is_server=False,
                            can_export=True)
    assert decision.cipher == "AES-128-GCM"


def test_p2p_decision_without_a_common_cipher_is_none() -> None:
    peer = parse_peer_info(_peer("AES-128-GCM", OPENVPN_P2P))
    assert p2p_decision(peer, ("CHACHA20-POLY1305",), is_server=True,
                        can_export=True).cipher is None


def test_p2p_peer_with_data_v2_and_key_export_gets_an_exported_peer_id_and_tls_ekm() -> None:
    decision = p2p_decision(parse_peer_info(_peer("AES-256-GCM", OPENVPN_P2P)),
                            ("AES-256-GCM",), is_server=True, can_export=True)
    assert decision.peer_id == P2P_PEER_ID
    assert decision.peer_id_from_ekm
    assert decision.key_derivation == "tls-ekm"
    assert decision.flags == ("cc-exit",)


def test_p2p_end_that_cannot_export_keys_keeps_the_fixed_peer_id_and_the_prf() -> None:
    decision = p2p_decision(parse_peer_info(_peer("AES-256-GCM", OPENVPN_P2P)),
                            ("AES-256-GCM",), is_server=True, can_export=False)
    assert decision.peer_id == 0x76706E
    assert not decision.peer_id_from_ekm
    assert decision.key_derivation is None


def test_p2p_peer_without_ncp_p2p_gets_data_v1_the_prf_and_no_flags() -> None:
    """A pre-2.6 peer (no IV_PROTO_NCP_P2P): p2p_ncp_set_options() changes nothing, only
    the common cipher (if it lists ciphers at all) is used."""
    peer = parse_peer_info(_peer("AES-256-GCM", IV_PROTO_DATA_V2 | IV_PROTO_TLS_KEY_EXPORT))
    decision = p2p_decision(peer, ("AES-256-GCM",), is_server=True, can_export=True)
    assert decision == replace(decision, cipher="AES-256-GCM", peer_id=None,
                               peer_id_from_ekm=False, key_derivation=None, flags=())


def test_p2p_peer_without_iv_ciphers_negotiates_no_cipher() -> None:
    peer = parse_peer_info(_peer(None, OPENVPN_P2P))
    assert p2p_decision(peer, ("AES-256-GCM",), is_server=True, can_export=True).cipher is None


def test_p2p_server_peer_info_is_openvpns_detail_1() -> None:
    text = build_p2p_peer_info(ciphers=("AES-256-GCM", "AES-128-GCM"), iv_proto=OPENVPN_P2P)
    assert text == f"IV_CIPHERS=AES-256-GCM:AES-128-GCM\nIV_PROTO={OPENVPN_P2P}\n"


# --- two trivpn sessions in p2p mode ---------------------------------------------------------

def _exporter(cfg: SessionConfig) -> KeyExporter | None:
    return keying_material_exporter(cfg.tls_context)


def _p2p_pair(*, server_ciphers: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM"),
              client_ciphers: tuple[str, ...] = ("AES-128-GCM", "AES-256-GCM"),
              server_proto: int = OPENVPN_P2P, client_proto: int = OPENVPN_P2P,
              server_fallback: str | None = None, client_fallback: str | None = None,
              ekm: bool = True) -> Pair:
    server = server_config(ciphers=server_ciphers, p2p=True,
                           data_ciphers_fallback=server_fallback,
                           peer_info=build_p2p_peer_info(ciphers=server_ciphers,
                                                         iv_proto=server_proto))
    client = replace(client_config(ciphers=client_ciphers, p2p=True,
                                   data_ciphers_fallback=client_fallback),
                     peer_info=build_p2p_peer_info(ciphers=client_ciphers,
                                                   iv_proto=client_proto))
    if ekm:
        server = replace(server, key_exporter=_exporter(server))
        client = replace(client, key_exporter=_exporter(client))
    pair = Pair.create(client, server)
    pair.admit = lambda session, now: pytest.fail("a p2p server admits without accept()")
    return pair


def test_p2p_server_and_client_agree_on_the_servers_cipher_and_carry_data() -> None:
    pair = _p2p_pair()
    assert pair.run_until(pair.established, seconds=30), (pair.client_events,
                                                          pair.server_events)
    assert pair.server is not None
    assert pair.server.cipher == pair.client.cipher == "AES-256-GCM"
    assert pair.server.peer_id == pair.client.peer_id is not None
    assert pair.server.key_derivation == pair.client.key_derivation == "tls-ekm"
    assert pair.server.cc_exit and pair.client.cc_exit
    pair.exchange(IP_PACKET, IP_PACKET)
    pair.run_for(0.1)
    assert pair.server_tun == [IP_PACKET] and pair.client_tun == [IP_PACKET]


def test_p2p_server_announces_its_ciphers_in_its_key_method() -> None:
    """OpenVPN's p2p tls-client reads IV_CIPHERS from the server's key method (ssl.c,
    key_method_2_write() calls push_peer_info() on both ends outside 'mode server')."""
    pair = _p2p_pair()
    assert pair.run_until(pair.established, seconds=30)
    assert pair.client.peer_info is not None
    assert pair.client.peer_info.ciphers == ("AES-256-GCM", "AES-128-GCM")
    assert pair.client.peer_info.iv_proto == OPENVPN_P2P


def test_p2p_server_key_method_of_a_mode_server_config_has_no_peer_info() -> None:
    pair = Pair.create(client_config(), server_config(peer_info="IV_PROTO=1\n"))
    assert pair.run_until(pair.established, seconds=30)
    key = pair.client._keys[0]  # the server's key method as the client read it
    assert key.remote_km is not None and key.remote_km.peer_info is None


def test_p2p_without_ekm_uses_the_fixed_peer_id_and_the_prf() -> None:
    pair = _p2p_pair(ekm=False)
    assert pair.run_until(pair.established, seconds=30)
    assert pair.server is not None
    assert pair.server.peer_id == pair.client.peer_id == P2P_PEER_ID
    assert pair.server.key_derivation == pair.client.key_derivation == "prf"


def test_p2p_old_client_gets_data_v1_and_the_fallback_cipher() -> None:
    """A peer that announces no IV_CIPHERS and no P2P NCP (OpenVPN before 2.6, or
    push-peer-info off): the fallback cipher on both ends, P_DATA_V1, the PRF."""
    pair = _p2p_pair(server_fallback="AES-128-GCM", client_fallback="AES-128-GCM")
    old = f"IV_PROTO={IV_PROTO_DATA_V2}\n"  # what both ends see of the other
    pair.server_config = replace(pair.server_config, peer_info=old)
    pair.client.config = replace(pair.client.config, peer_info=old)
    assert pair.run_until(pair.established, seconds=30), (pair.client_events,
                                                          pair.server_events)
    assert pair.server is not None
    assert pair.server.cipher == "AES-128-GCM"
    assert pair.server.peer_id is None
    assert pair.server.key_derivation == "prf"
    pair.exchange(IP_PACKET, IP_PACKET)
    pair.run_for(0.1)
    assert pair.server_tun == [IP_PACKET] and pair.client_tun == [IP_PACKET]


@pytest.mark.directive("cipher")
def test_p2p_fallback_cipher_need_not_be_in_data_ciphers() -> None:
    """OpenVPN ssl_ncp.c, check_session_cipher(): the fallback is allowed as such."""
    pair = _p2p_pair(server_ciphers=("AES-256-GCM",), client_ciphers=("AES-128-GCM",),
                     server_fallback="CHACHA20-POLY1305",
                     client_fallback="CHACHA20-POLY1305")
    assert pair.run_until(pair.established, seconds=30), (pair.client_events,
                                                          pair.server_events)
    assert pair.server is not None
    assert pair.server.cipher == pair.client.cipher == "CHACHA20-POLY1305"


def test_p2p_server_without_common_cipher_or_fallback_fails_as_openvpn_does() -> None:
    pair = _p2p_pair(server_ciphers=("AES-256-GCM",), client_ciphers=("AES-128-GCM",))
    pair.run_for(10)
    assert pair.server is not None
    failed = events_of(pair.server_events, ev.HandshakeFailed)
    assert failed and failed[0].cause == ev.CAUSE_NO_COMMON_CIPHER
    assert "data-ciphers-fallback not enabled" in failed[0].detail
    assert not pair.server.established


def test_p2p_server_emits_no_admission_event() -> None:
    pair = _p2p_pair()
    assert pair.run_until(pair.established, seconds=30)
    assert not events_of(pair.server_events, ev.ClientAuthenticated)
    assert events_of(pair.server_events, ev.PushReceived)


# --- a new peer session at a p2p server ------------------------------------------------------

def _client_reset(wrap: ControlWrap) -> bytes:
    client = Session(replace(client_config(), wrap=wrap), 1000.0)
    client.start(1000.0)
    (reset,) = client.take_datagrams()
    return reset


def test_client_reset_before_any_peer_opens_a_session() -> None:
    assert is_new_peer_reset(_client_reset(NoWrap()), NoWrap(), None)


def test_client_reset_of_another_session_opens_a_new_one() -> None:
    reset = _client_reset(NoWrap())
    assert is_new_peer_reset(reset, NoWrap(), b"\x01" * 8)


def test_retransmitted_reset_of_the_current_session_is_not_a_new_one() -> None:
    reset = _client_reset(NoWrap())
    assert not is_new_peer_reset(reset, NoWrap(), reset[1:9])


def test_reset_that_fails_tls_auth_is_not_a_new_session() -> None:
    good = TlsAuth(STATIC, 1)
    reset = _client_reset(good)
    assert is_new_peer_reset(reset, TlsAuth(STATIC, 0), b"\x01" * 8)
    other = StaticKey(bytes(255 - i for i in range(256)))
    assert not is_new_peer_reset(reset, TlsAuth(other, 0), b"\x01" * 8)


def test_data_and_server_packets_are_not_new_sessions() -> None:
    assert not is_new_peer_reset(bytes([0x48]) + bytes(20), NoWrap(), None)  # P_DATA_V2
    assert not is_new_peer_reset(bytes([0x40]) + bytes(20), NoWrap(), None)  # server reset
    assert not is_new_peer_reset(b"\x38", NoWrap(), None)  # truncated
