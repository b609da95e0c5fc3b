"""Static-key mode (``secret``): packet format, key directions, replay, and the session that
has its data channel from the start (docs/protocol.md §13). Packets in the fixture were sent
by the real openvpn 2.6.14 (tests/protocol/fixtures/openvpn_static_key_packets.json)."""

from __future__ import annotations

import json
import ssl
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from trivpn.protocol import events as ev
from trivpn.protocol.errors import AuthenticationError, ReplayError
from trivpn.protocol.occ import OCC_MAGIC, PING_MAGIC, OccOpcode, build_occ, parse_occ
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.statickey import StaticKey, parse_static_key
from trivpn.protocol.staticmode import StaticDataKey, static_directional_keys

FIXTURE = json.loads((Path(__file__).parent / "fixtures" /
                      "openvpn_static_key_packets.json").read_text())
KEY = StaticKey(bytes(range(256)))
IPV4 = (bytes.fromhex("4500001c0000000040010000c6120901c6120902")
        + bytes.fromhex("0800f7ff00000000"))


def _key(direction: int | None, *, start: int = 1_700_000_000, cipher: str = "AES-256-CBC",
         auth: str = "SHA1", replay: bool = True) -> StaticDataKey:
    return StaticDataKey(cipher, static_directional_keys(KEY, direction), auth=auth,
                         start_time=start, replay=replay, iv_source=bytes)


@pytest.mark.directive("secret")
def test_trivpn_decrypts_the_pings_openvpn_sent_with_a_static_key() -> None:
    key = parse_static_key(FIXTURE["key"])
    assert FIXTURE["direction"] == 1
    rx = StaticDataKey(FIXTURE["cipher"], static_directional_keys(key, 0), auth=FIXTURE["auth"],
                       start_time=0)
    for wire in FIXTURE["packets"]:
        assert rx.decrypt(bytes.fromhex(wire), 0.0) == PING_MAGIC
    assert rx.replay_window.highest == len(FIXTURE["packets"])


def test_openvpn_static_key_packets_have_no_opcode_byte_and_a_long_form_packet_id() -> None:
    """[HMAC-SHA256 32][IV 16][CBC(packet id 4, time 4, 16-byte ping, padding 8)] = 80."""
    key = parse_static_key(FIXTURE["key"])
    keys = static_directional_keys(key, 0)
    first = bytes.fromhex(FIXTURE["packets"][0])
    assert len(first) == 32 + 16 + 32
    dec = Cipher(algorithms.AES(keys.decrypt_cipher[:32]), modes.CBC(first[32:48])).decryptor()
    plain = dec.update(first[48:]) + dec.finalize()
    pid, sent_at = struct.unpack_from(">II", plain)
    assert pid == 1
    assert abs(sent_at - FIXTURE["started"]) <= 2  # the sender's Unix time
    assert plain[8:24] == PING_MAGIC


def test_packets_trivpn_encrypts_decrypt_with_the_opposite_direction() -> None:
    tx, rx = _key(0), _key(1)
    wire = tx.encrypt(IPV4)
    assert rx.decrypt(wire, 0.0) == IPV4
    assert len(wire) == 20 + 16 + 48  # HMAC-SHA1, IV, CBC(8 + 28 + padding 12)


def test_bidirectional_keys_use_key_zero_both_ways() -> None:
    keys = static_directional_keys(KEY, None)
    assert keys.encrypt_cipher == keys.decrypt_cipher == KEY.cipher(0)
    assert keys.encrypt_hmac == keys.decrypt_hmac == KEY.hmac(0)
    assert _key(None).decrypt(_key(None).encrypt(IPV4), 0.0) == IPV4


def test_direction_one_sends_with_key_one_and_receives_with_key_zero() -> None:
    keys = static_directional_keys(KEY, 1)
    assert (keys.encrypt_cipher, keys.decrypt_cipher) == (KEY.cipher(1), KEY.cipher(0))
    assert (keys.encrypt_hmac, keys.decrypt_hmac) == (KEY.hmac(1), KEY.hmac(0))


def test_the_same_direction_on_both_sides_fails_the_hmac() -> None:
    with pytest.raises(AuthenticationError):
        _key(0).decrypt(_key(0).encrypt(IPV4), 0.0)


def test_a_replayed_static_key_packet_is_refused() -> None:
    tx, rx = _key(0), _key(1)
    wire = tx.encrypt(IPV4)
    rx.decrypt(wire, 0.0)
    with pytest.raises(ReplayError):
        rx.decrypt(wire, 0.0)


def test_a_later_start_time_opens_a_new_sequence_an_earlier_one_is_refused() -> None:
    rx = _key(1)
    rx.decrypt(_key(0, start=2000).encrypt(IPV4), 0.0)
    rx.decrypt(_key(0, start=3000).encrypt(IPV4), 0.0)  # the peer restarted: id 1 again
    with pytest.raises(ReplayError):
        rx.decrypt(_key(0, start=2000).encrypt(IPV4), 0.0)


@pytest.mark.directive("no-replay")
def test_no_replay_sends_no_packet_id() -> None:
    tx, rx = _key(0, replay=False), _key(1, replay=False)
    wire = tx.encrypt(IPV4)
    assert len(wire) == 20 + 16 + 32  # CBC(28 + padding 4): no 8-byte packet id
    assert rx.decrypt(wire, 0.0) == rx.decrypt(wire, 0.0) == IPV4  # and no replay check


def test_aead_ciphers_are_refused_in_static_key_mode() -> None:
    with pytest.raises(ValueError, match="mode not supported"):
        _key(0, cipher="AES-256-GCM")


def _config(direction: int | None, *, ping: float | None = None) -> SessionConfig:
    return SessionConfig(is_server=False, tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
                         options_string="V4,dev-type tun,secret", data_ciphers=("AES-256-CBC",),
                         data_ciphers_fallback="AES-256-CBC", reneg_seconds=None,
                         ping_interval=ping, static_keys=static_directional_keys(KEY, direction))


def test_a_static_key_session_is_ready_at_start_without_any_packet() -> None:
    session = Session(_config(0), 0.0)
    session.start(0.0)
    assert session.take_datagrams() == []  # no handshake
    events = session.take_events()
    assert [type(e) for e in events] == [ev.PushReceived, ev.DataChannelReady]
    ready = events[1]
    assert isinstance(ready, ev.DataChannelReady)
    assert (ready.cipher, ready.key_derivation) == ("AES-256-CBC", "static")


def test_two_static_key_sessions_carry_packets_both_ways() -> None:
    a, b = Session(_config(0), 0.0), Session(_config(1), 0.0)
    a.start(0.0)
    b.start(0.0)
    wire = a.encrypt_data(IPV4, 1.0)
    assert wire is not None
    b.receive_datagram(wire, 1.0)
    assert b.take_tun_packets() == [IPV4]
    back = b.encrypt_data(IPV4, 1.0)
    assert back is not None and a.decrypt_data(back, 1.0) == IPV4


def test_a_packet_under_another_key_is_dropped_and_counted() -> None:
    a, b = Session(_config(0), 0.0), Session(_config(0), 0.0)
    a.start(0.0)
    b.start(0.0)
    wire = a.encrypt_data(IPV4, 1.0)
    assert wire is not None
    b.receive_datagram(wire, 1.0)
    assert b.take_tun_packets() == []
    assert b.drops["hmac_mismatch"] == 1


@pytest.mark.directive("ping")
def test_a_static_key_session_pings_its_peer() -> None:
    a, b = Session(_config(0, ping=1.0), 0.0), Session(_config(1), 0.0)
    a.start(0.0)
    b.start(0.0)
    a.handle_timer(1.5)
    pings = a.take_datagrams()
    assert len(pings) == 1
    b.receive_datagram(pings[0], 1.5)
    assert b.take_tun_packets() == []  # a ping is not a tunnel packet


def test_an_occ_request_gets_the_options_string_back() -> None:
    a, b = Session(_config(0), 0.0), Session(_config(1), 0.0)
    a.start(0.0)
    b.start(0.0)
    request = a._encrypt_internal(build_occ(OccOpcode.REQUEST), 1.0)
    assert request is not None
    b.receive_datagram(request, 1.0)
    (reply,) = b.take_datagrams()
    plain = StaticDataKey("AES-256-CBC", static_directional_keys(KEY, 0), start_time=0) \
        .decrypt(reply, 1.0)
    assert plain.startswith(OCC_MAGIC)
    assert parse_occ(plain) == (OccOpcode.REPLY, b"V4,dev-type tun,secret\0")


@pytest.mark.directive("explicit-exit-notify")
def test_exit_notify_reaches_a_static_key_peer_as_occ_exit() -> None:
    a, b = Session(_config(0), 0.0), Session(_config(1), 0.0)
    a.start(0.0)
    b.start(0.0)
    b.take_events()
    a.exit_notify(1.0)
    (wire,) = a.take_datagrams()
    b.receive_datagram(wire, 1.0)
    assert [type(e) for e in b.take_events()] == [ev.PeerExited]
