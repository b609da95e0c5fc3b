"""Data-channel encryption (docs/protocol.md §7.1-§7.3, §7.5)."""

from __future__ import annotations

import hashlib
import hmac
import itertools

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from trivpn.protocol.datachannel import (
    PACKET_ID_WRAP_TRIGGER,
    SUPPORTED_CIPHERS,
    DataKey,
    normalize_cipher,
)
from trivpn.protocol.errors import (
    AuthenticationError,
    DecodeError,
    ProtocolError,
    ReplayError,
    StateError,
)
from trivpn.protocol.keys import directional_keys
from trivpn.protocol.occ import PING_MAGIC

BLOCK = bytes((i * 7 + 3) % 256 for i in range(256))
CLIENT_KEYS = directional_keys(BLOCK, is_server=False)
SERVER_KEYS = directional_keys(BLOCK, is_server=True)
AEAD = ["AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305"]
CBC = ["AES-128-CBC", "AES-192-CBC", "AES-256-CBC"]
KEYLEN = {"AES-128-GCM": 16, "AES-192-GCM": 24, "AES-256-GCM": 32, "CHACHA20-POLY1305": 32}
PEER_IDS = [None, 0, 0x123456]


def pair(cipher: str, peer_id: int | None, key_id: int = 0,
         **kw: object) -> tuple[DataKey, DataKey]:
    client = DataKey(cipher, CLIENT_KEYS, key_id, peer_id=peer_id, **kw)  # type: ignore[arg-type]
    server = DataKey(cipher, SERVER_KEYS, key_id, peer_id=peer_id, **kw)  # type: ignore[arg-type]
    return client, server


def aead_for(cipher: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if cipher == "CHACHA20-POLY1305":
        return ChaCha20Poly1305(key[:32])
    return AESGCM(key[:KEYLEN[cipher]])


@pytest.mark.parametrize(("cipher", "peer_id"),
                         list(itertools.product(SUPPORTED_CIPHERS, PEER_IDS)))
def test_round_trip_both_directions(cipher: str, peer_id: int | None) -> None:
    client, server = pair(cipher, peer_id)
    for i, size in enumerate((1, 15, 16, 17, 1400)):
        msg = bytes([i]) * size
        assert server.decrypt(client.encrypt(msg), now=1.0) == msg
        assert client.decrypt(server.encrypt(msg), now=1.0) == msg


@pytest.mark.parametrize(("peer_id", "header"), [(None, b"\x33"), (0x0A0B0C, b"\x4b\x0a\x0b\x0c")])
@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
def test_header_and_packet_ids(cipher: str, peer_id: int | None, header: bytes) -> None:
    client, _ = pair(cipher, peer_id, key_id=3)
    packets = [client.encrypt(b"x") for _ in range(3)]
    for n, packet in enumerate(packets, start=1):
        assert packet.startswith(header)
        if cipher in AEAD:
            assert packet[len(header):len(header) + 4] == n.to_bytes(4, "big")
    assert client.packet_id == 3


@pytest.mark.parametrize("cipher", AEAD)
def test_aead_ping_is_40_bytes_with_data_v2(cipher: str) -> None:
    client, _ = pair(cipher, 0)
    assert len(client.encrypt(PING_MAGIC)) == 40


@pytest.mark.parametrize("cipher", AEAD)
@pytest.mark.parametrize("peer_id", [None, 7])
def test_hand_built_aead_packet_decrypts(cipher: str, peer_id: int | None) -> None:
    # Independent construction per §7.2: tag before ciphertext, nonce = pid || implicit IV
    # (first 8 bytes of the sender's hmac slot), AD = header+pid (V2) or pid (V1).
    header = b"\x30" if peer_id is None else b"\x48" + peer_id.to_bytes(3, "big")
    pid = (5).to_bytes(4, "big")
    ad = header + pid if peer_id is not None else pid
    sealed = aead_for(cipher, BLOCK[0:64]).encrypt(pid + BLOCK[64:72], b"hello tunnel", ad)
    packet = header + pid + sealed[-16:] + sealed[:-16]
    _, server = pair(cipher, peer_id)
    assert server.decrypt(packet, now=0.0) == b"hello tunnel"


@pytest.mark.parametrize("cipher", AEAD)
@pytest.mark.parametrize("peer_id", [None, 7])
def test_encrypted_aead_packet_opens_by_hand(cipher: str, peer_id: int | None) -> None:
    _, server = pair(cipher, peer_id)
    packet = server.encrypt(b"from server")  # server sends with key[1]
    hlen = 1 if peer_id is None else 4
    pid, tag, ct = packet[hlen:hlen + 4], packet[hlen + 4:hlen + 20], packet[hlen + 20:]
    ad = packet[:hlen + 4] if peer_id is not None else pid
    opened = aead_for(cipher, BLOCK[128:192]).decrypt(pid + BLOCK[192:200], ct + tag, ad)
    assert opened == b"from server"
    assert len(ct) == len(b"from server")


def test_v1_and_v2_headers_are_both_accepted() -> None:
    v1_client, _ = pair("AES-256-GCM", None)
    v2_client = DataKey("AES-256-GCM", CLIENT_KEYS, 0, peer_id=9, last_packet_id=1)
    _, server = pair("AES-256-GCM", None)
    assert server.decrypt(v1_client.encrypt(b"a"), now=0.0) == b"a"
    assert server.decrypt(v2_client.encrypt(b"b"), now=0.0) == b"b"


@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
@pytest.mark.parametrize("peer_id", [None, 5])
def test_any_flipped_bit_in_authenticated_part_fails(cipher: str, peer_id: int | None) -> None:
    # AEAD V2 authenticates the peer-id header; CBC authenticates IV || ciphertext only.
    client, server = pair(cipher, peer_id)
    packet = client.encrypt(b"payload bytes 1234567890")
    first = 1 if cipher in AEAD or peer_id is None else 4
    for i in range(first, len(packet)):
        tampered = bytearray(packet)
        tampered[i] ^= 0x04
        with pytest.raises(AuthenticationError):
            server.decrypt(bytes(tampered), now=0.0)
    assert server.decrypt(packet, now=0.0) == b"payload bytes 1234567890"


def test_cbc_does_not_authenticate_the_peer_id() -> None:
    client, server = pair("AES-256-CBC", 5)
    packet = client.encrypt(b"data")
    assert server.decrypt(packet[:1] + b"\x00\x00\x09" + packet[4:], now=0.0) == b"data"


@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
@pytest.mark.parametrize("peer_id", [None, 0])
def test_replayed_packet_is_rejected(cipher: str, peer_id: int | None) -> None:
    client, server = pair(cipher, peer_id)
    packet = client.encrypt(b"once")
    server.decrypt(packet, now=0.0)
    with pytest.raises(ReplayError):
        server.decrypt(packet, now=0.0)


@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
def test_reordering_within_window_is_accepted(cipher: str) -> None:
    client, server = pair(cipher, 0)
    packets = [client.encrypt(bytes([i])) for i in range(10)]
    for i in (9, 0, 5, 3, 8, 1, 2, 4, 6, 7):
        assert server.decrypt(packets[i], now=0.0) == bytes([i])
    assert server.packets_in == 10


def test_reorder_older_than_replay_window_is_rejected() -> None:
    client, server = pair("AES-128-GCM", None, replay_backtrack=4)
    packets = [client.encrypt(b"p") for _ in range(6)]
    server.decrypt(packets[5], now=0.0)
    server.decrypt(packets[2], now=0.0)  # id 3, 6 - 3 < 4
    with pytest.raises(ReplayError):
        server.decrypt(packets[1], now=0.0)  # id 2, 6 - 2 == 4


def test_tampered_packet_does_not_poison_replay_window() -> None:
    client, server = pair("AES-256-GCM", 0)
    packet = client.encrypt(b"data")
    with pytest.raises(AuthenticationError):
        server.decrypt(packet[:-1] + bytes([packet[-1] ^ 1]), now=0.0)
    assert server.decrypt(packet, now=0.0) == b"data"


@pytest.mark.parametrize(("auth", "mac_len"), [("SHA1", 20), ("SHA256", 32), ("SHA512", 64)])
@pytest.mark.parametrize("peer_id", [None, 0])
def test_cbc_layout_by_hand(auth: str, mac_len: int, peer_id: int | None) -> None:
    iv = bytes(range(0xA0, 0xB0))
    client = DataKey("AES-256-CBC", CLIENT_KEYS, 0, auth=auth, peer_id=peer_id,
                     iv_source=lambda n: iv[:n])
    client.encrypt(b"first")
    packet = client.encrypt(PING_MAGIC)
    hlen = 1 if peer_id is None else 4
    mac, got_iv, ct = packet[hlen:hlen + mac_len], packet[hlen + mac_len:hlen + mac_len + 16], \
        packet[hlen + mac_len + 16:]
    assert got_iv == iv
    assert mac == hmac.new(BLOCK[64:64 + mac_len], iv + ct, auth.lower()).digest()
    dec = Cipher(algorithms.AES(BLOCK[0:32]), modes.CBC(iv)).decryptor()
    plain = dec.update(ct) + dec.finalize()
    assert plain == (2).to_bytes(4, "big") + PING_MAGIC + bytes([12]) * 12


def test_cbc_sha256_ping_is_84_bytes_like_the_capture() -> None:
    client, _ = pair("AES-256-CBC", 0, auth="SHA256")
    assert len(client.encrypt(PING_MAGIC)) == 4 + 32 + 16 + 32


def test_cbc_hand_built_packet_decrypts() -> None:
    iv = bytes(16)
    plain = (1).to_bytes(4, "big") + b"abc" + bytes([9]) * 9
    enc = Cipher(algorithms.AES(BLOCK[0:16]), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    mac = hmac.new(BLOCK[64:84], iv + ct, hashlib.sha1).digest()
    _, server = pair("AES-128-CBC", None)
    assert server.decrypt(b"\x30" + mac + iv + ct, now=0.0) == b"abc"


def test_cbc_bad_padding_under_valid_hmac_is_rejected() -> None:
    iv = bytes(16)
    plain = (1).to_bytes(4, "big") + b"abc" + bytes([9]) * 8 + b"\x11"
    enc = Cipher(algorithms.AES(BLOCK[0:16]), modes.CBC(iv)).encryptor()
    ct = enc.update(plain) + enc.finalize()
    mac = hmac.new(BLOCK[64:84], iv + ct, hashlib.sha1).digest()
    _, server = pair("AES-128-CBC", None)
    with pytest.raises(AuthenticationError):
        server.decrypt(b"\x30" + mac + iv + ct, now=0.0)


def test_cbc_wrong_auth_digest_fails() -> None:
    client = DataKey("AES-256-CBC", CLIENT_KEYS, 0, auth="SHA256")
    server = DataKey("AES-256-CBC", SERVER_KEYS, 0, auth="SHA1")
    with pytest.raises((AuthenticationError, DecodeError)):
        server.decrypt(client.encrypt(b"hello"), now=0.0)


@pytest.mark.parametrize("peer_id", [None, 0])
def test_wrong_key_id_is_state_error(peer_id: int | None) -> None:
    client, _ = pair("AES-256-GCM", peer_id, key_id=1)
    _, server = pair("AES-256-GCM", peer_id, key_id=2)
    with pytest.raises(StateError):
        server.decrypt(client.encrypt(b"x"), now=0.0)


@pytest.mark.parametrize("packet", [b"", b"\x20" + bytes(40), b"\x48\x00\x00\x00" + bytes(20),
                                    b"\x30" + bytes(20)])
def test_malformed_packets_are_decode_errors(packet: bytes) -> None:
    _, server = pair("AES-256-GCM", 0)
    with pytest.raises(DecodeError):
        server.decrypt(packet, now=0.0)


@pytest.mark.parametrize("cipher", ["AES-256-GCM", "AES-256-CBC"])
def test_empty_plaintext_is_refused(cipher: str) -> None:
    client, _ = pair(cipher, 0)
    with pytest.raises(ValueError, match="empty"):
        client.encrypt(b"")
    assert client.packet_id == 0


def test_packet_id_roll_over_stops_sending() -> None:
    client = DataKey("AES-256-GCM", CLIENT_KEYS, 0, last_packet_id=0xFFFFFFFE)
    packet = client.encrypt(b"last")
    assert packet[1:5] == b"\xff\xff\xff\xff"
    with pytest.raises(ProtocolError) as info:
        client.encrypt(b"one too many")
    assert info.value.reason == "packet_id_exhausted"


def test_needs_renegotiation_from_wrap_trigger() -> None:
    client = DataKey("AES-256-GCM", CLIENT_KEYS, 0, last_packet_id=PACKET_ID_WRAP_TRIGGER - 2)
    client.encrypt(b"a")
    assert not client.needs_renegotiation
    client.encrypt(b"b")
    assert client.needs_renegotiation


def test_counters_track_plaintext() -> None:
    client, server = pair("CHACHA20-POLY1305", 1)
    for size in (10, 20):
        server.decrypt(client.encrypt(bytes(size)), now=0.0)
    assert (client.packets_out, client.bytes_out) == (2, 30)
    assert (server.packets_in, server.bytes_in) == (2, 30)


@pytest.mark.parametrize(("name", "canonical"),
                         [("aes-256-gcm", "AES-256-GCM"), ("ChaCha20-Poly1305",
                                                           "CHACHA20-POLY1305"),
                          (" AES-128-CBC ", "AES-128-CBC")])
def test_normalize_cipher(name: str, canonical: str) -> None:
    assert normalize_cipher(name) == canonical


@pytest.mark.parametrize("name", ["BF-CBC", "none", "AES-256-CFB", ""])
def test_unsupported_cipher_is_rejected(name: str) -> None:
    with pytest.raises(DecodeError):
        normalize_cipher(name)
    with pytest.raises(DecodeError):
        DataKey(name, CLIENT_KEYS, 0)


def test_repr_hides_keys() -> None:
    text = repr(DataKey("AES-256-GCM", CLIENT_KEYS, 0))
    assert "AES-256-GCM" in text
    assert BLOCK[:4].hex() not in text


@pytest.mark.directive("reneg-bytes")
@pytest.mark.parametrize(("cipher", "peer_id"),
                         list(itertools.product(SUPPORTED_CIPHERS, [None, 7])))
def test_wire_bytes_count_packets_as_openvpn_counts_them_for_reneg_bytes(
        cipher: str, peer_id: int | None) -> None:
    """ssl.c: tls_post_encrypt adds each sent packet whole; tls_pre_decrypt adds each received
    packet without its opcode byte (P_DATA_V1) or opcode and peer id (P_DATA_V2)."""
    client, server = pair(cipher, peer_id)
    sent = received = 0
    for size in (1, 15, 16, 17, 100, 1400):
        wire = client.encrypt(bytes(size))
        sent += len(wire)
        server.decrypt(wire, now=1.0)
        answer = server.encrypt(bytes(size + 3))
        received += len(answer) - (1 if peer_id is None else 4)
        client.decrypt(answer, now=1.0)
    assert client.wire_bytes() == sent + received
