"""Control-channel wrapping: tls-auth and tls-crypt (docs/protocol.md §1.5, §1.6, §3.2, §3.3).

The worked examples are captures from OpenVPN 2.6.14 with the key file bytes 00 01 .. ff.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from trivpn.protocol.errors import AuthenticationError, DecodeError
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control, encode_control
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.wrap import NoWrap, TlsAuth, TlsCrypt, Unwrapped, _AesCtr

KEY = StaticKey(bytes(range(256)))

# §1.5: client reset, client key-direction 1, --auth SHA1
TLS_AUTH_CLIENT_RESET = bytes.fromhex(
    "38 01cb56a626f89d14 937d0778905addec1dd8f19bc9ad36f5779193ac 00000001 6b060256 00 00000000")
TLS_AUTH_CLIENT_SID = bytes.fromhex("01cb56a626f89d14")
TLS_AUTH_SERVER_SID = bytes.fromhex("34708eaf51ecdf55")
TLS_AUTH_TIME = 0x6B060256

# §1.6: client reset
TLS_CRYPT_CLIENT_RESET = bytes.fromhex(
    "38 7bedef842310b8fb 00000001 6b06041a"
    " 305cb53b049f2f5d71ad01777e5ca6a5b9550e13f088f539e4d662f252356111"
    " 85cc43d01e")
TLS_CRYPT_CLIENT_SID = bytes.fromhex("7bedef842310b8fb")


def test_tls_auth_client_reset_example_verifies_on_server() -> None:
    server = TlsAuth(KEY, direction=0)
    u = server.unwrap(TLS_AUTH_CLIENT_RESET)
    assert u == Unwrapped(bytes.fromhex("38 01cb56a626f89d14 00 00000000"), 1, TLS_AUTH_TIME)
    assert decode_control(u.plain) == ControlPacket(
        Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, TLS_AUTH_CLIENT_SID, message_id=0)


def test_tls_auth_client_rewraps_example_byte_for_byte() -> None:
    client = TlsAuth(KEY, direction=1)
    plain = encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0,
                                         TLS_AUTH_CLIENT_SID, message_id=0))
    assert client.wrap(plain, 1, TLS_AUTH_TIME) == TLS_AUTH_CLIENT_RESET


def test_tls_auth_example_hmac_is_key_bytes_192_over_reordered_packet() -> None:
    # independent of TlsAuth: HMAC-SHA1 keyed with file bytes 192..211 over replay || plain
    data = bytes.fromhex("00000001 6b060256 38 01cb56a626f89d14 00 00000000")
    expected = hmac.new(bytes(range(192, 212)), data, hashlib.sha1).digest()
    assert TLS_AUTH_CLIENT_RESET[9:29] == expected


def test_tls_auth_server_reply_uses_key_bytes_64() -> None:
    # §1.5 server reply (54 bytes): 40 34708eaf51ecdf55 73f096e8…eb34 00000001 6b060256 01 ...
    server = TlsAuth(KEY, direction=0)
    plain = encode_control(ControlPacket(
        Opcode.CONTROL_HARD_RESET_SERVER_V2, 0, TLS_AUTH_SERVER_SID, acks=(0,),
        remote_session_id=TLS_AUTH_CLIENT_SID, message_id=0))
    wire = server.wrap(plain, 1, TLS_AUTH_TIME)
    assert len(wire) == 54
    assert wire[:9] == bytes.fromhex("40 34708eaf51ecdf55")
    assert wire[9:13] == bytes.fromhex("73f096e8")
    assert wire[27:29] == bytes.fromhex("eb34")
    assert wire[29:] == bytes.fromhex("00000001 6b060256 01 00000000 01cb56a626f89d14 00000000")
    independent = hmac.new(bytes(range(64, 84)), wire[29:37] + plain, hashlib.sha1).digest()
    assert wire[9:29] == independent
    assert TlsAuth(KEY, direction=1).unwrap(wire).plain == plain


@pytest.mark.parametrize(("sender", "receiver"), [(None, None), (0, 1), (1, 0)])
def test_tls_auth_matching_directions_interoperate(sender: int | None,
                                                   receiver: int | None) -> None:
    plain = b"\x20" + TLS_AUTH_CLIENT_SID + b"\x00\x00\x00\x00\x05hello"
    wire = TlsAuth(KEY, sender).wrap(plain, 7, 1234)
    assert TlsAuth(KEY, receiver).unwrap(wire) == Unwrapped(plain, 7, 1234)


@pytest.mark.parametrize(("sender", "receiver"), [(0, 0), (1, 1), (None, 0), (1, None)])
def test_tls_auth_mismatched_directions_fail(sender: int | None, receiver: int | None) -> None:
    wire = TlsAuth(KEY, sender).wrap(b"\x38" + TLS_AUTH_CLIENT_SID + bytes(5), 1, 0)
    with pytest.raises(AuthenticationError):
        TlsAuth(KEY, receiver).unwrap(wire)


@pytest.mark.parametrize(("digest", "hmac_len"),
                         [("SHA1", 20), ("sha256", 32), ("SHA384", 48), ("SHA512", 64)])
def test_tls_auth_digest_sets_hmac_length(digest: str, hmac_len: int) -> None:
    client, server = TlsAuth(KEY, 1, digest), TlsAuth(KEY, 0, digest)
    plain = b"\x38" + TLS_AUTH_CLIENT_SID + bytes(5)
    wire = client.wrap(plain, 1, 99)
    assert client.overhead == hmac_len + 8
    assert len(wire) == len(plain) + client.overhead
    name = digest.lower()
    independent = hmac.new(KEY.hmac(1)[:hmac_len], wire[9 + hmac_len:17 + hmac_len] + plain,
                           name).digest()
    assert wire[9:9 + hmac_len] == independent
    assert server.unwrap(wire).plain == plain


def test_tls_auth_rejects_unknown_digest() -> None:
    with pytest.raises(DecodeError):
        TlsAuth(KEY, 0, "WHIRLPOOL")


def test_tls_auth_detects_any_flipped_bit() -> None:
    server = TlsAuth(KEY, 0)
    for i in range(len(TLS_AUTH_CLIENT_RESET)):
        tampered = bytearray(TLS_AUTH_CLIENT_RESET)
        tampered[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            server.unwrap(bytes(tampered))


def test_tls_auth_truncated_packet_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        TlsAuth(KEY, 0).unwrap(TLS_AUTH_CLIENT_RESET[:36])


def test_tls_crypt_client_reset_example_decrypts_on_server() -> None:
    u = TlsCrypt(KEY, is_server=True).unwrap(TLS_CRYPT_CLIENT_RESET)
    assert u.packet_id == 1
    assert u.timestamp == 0x6B06041A
    assert u.plain == b"\x38" + TLS_CRYPT_CLIENT_SID + bytes.fromhex("00 00000000")


def test_tls_crypt_client_rewraps_example_byte_for_byte() -> None:
    plain = b"\x38" + TLS_CRYPT_CLIENT_SID + bytes.fromhex("00 00000000")
    assert TlsCrypt(KEY, is_server=False).wrap(plain, 1, 0x6B06041A) == TLS_CRYPT_CLIENT_RESET


def test_tls_crypt_example_uses_client_key_slices_independently() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    header, tag, ct = (TLS_CRYPT_CLIENT_RESET[:17], TLS_CRYPT_CLIENT_RESET[17:49],
                       TLS_CRYPT_CLIENT_RESET[49:])
    dec = Cipher(algorithms.AES(bytes(range(128, 160))), modes.CTR(tag[:16])).decryptor()
    body = dec.update(ct) + dec.finalize()
    assert body == bytes.fromhex("00 00000000")
    assert hmac.new(bytes(range(192, 224)), header + body, hashlib.sha256).digest() == tag


def test_tls_crypt_server_to_client_uses_key_0() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    plain = encode_control(ControlPacket(
        Opcode.CONTROL_HARD_RESET_SERVER_V2, 0, TLS_AUTH_SERVER_SID, acks=(0,),
        remote_session_id=TLS_CRYPT_CLIENT_SID, message_id=0))
    wire = TlsCrypt(KEY, is_server=True).wrap(plain, 1, 5)
    assert len(wire) == len(plain) + 40
    tag = wire[17:49]
    dec = Cipher(algorithms.AES(bytes(range(0, 32))), modes.CTR(tag[:16])).decryptor()
    assert dec.update(wire[49:]) + dec.finalize() == plain[9:]
    assert hmac.new(bytes(range(64, 96)), wire[:17] + plain[9:], hashlib.sha256).digest() == tag
    assert TlsCrypt(KEY, is_server=False).unwrap(wire) == Unwrapped(plain, 1, 5)


IV_NEAR_COUNTER_WRAP = [bytes(16), b"\x00" * 8 + b"\xff" * 8, b"\xff" * 15 + b"\xf0",
                        b"\xff" * 16, bytes(range(16))]


@pytest.mark.parametrize("iv", IV_NEAR_COUNTER_WRAP)
def test_tls_crypt_ctr_is_openssl_aes_ctr_for_every_length(iv: bytes) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes(range(32, 64))
    ctr = _AesCtr(key)
    data = bytes((7 * i) % 256 for i in range(600))
    for size in [*range(0, 300), 513, 600]:
        reference = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        assert ctr.apply(iv, data[:size]) == reference.update(data[:size]) + \
            reference.finalize(), size


def test_tls_crypt_cannot_unwrap_own_direction() -> None:
    with pytest.raises(AuthenticationError):
        TlsCrypt(KEY, is_server=False).unwrap(TLS_CRYPT_CLIENT_RESET)


def test_tls_crypt_detects_any_flipped_bit() -> None:
    server = TlsCrypt(KEY, is_server=True)
    for i in range(len(TLS_CRYPT_CLIENT_RESET)):
        tampered = bytearray(TLS_CRYPT_CLIENT_RESET)
        tampered[i] ^= 0x80
        with pytest.raises(AuthenticationError):
            server.unwrap(bytes(tampered))


def test_tls_crypt_truncated_packet_is_decode_error() -> None:
    with pytest.raises(DecodeError):
        TlsCrypt(KEY, is_server=True).unwrap(TLS_CRYPT_CLIENT_RESET[:48])


def test_tls_crypt_overhead_is_40() -> None:
    assert TlsCrypt(KEY, is_server=True).overhead == 40


def test_no_wrap_passes_bytes_through() -> None:
    w = NoWrap()
    plain = bytes.fromhex("38 31e7f7c06bd93f39 00 00000000")
    assert w.overhead == 0
    assert w.wrap(plain, 1, 2) == plain
    assert w.unwrap(plain) == Unwrapped(plain, None, None)


@pytest.mark.parametrize("wrapper", [TlsAuth(KEY, 0), TlsCrypt(KEY, True)])
def test_wrap_rejects_replay_id_zero(wrapper: TlsAuth | TlsCrypt) -> None:
    with pytest.raises(ValueError):
        wrapper.wrap(b"\x38" + TLS_AUTH_CLIENT_SID + bytes(5), 0, 1)


@pytest.mark.parametrize("wrapper", [TlsAuth(KEY, 0), TlsCrypt(KEY, True)])
def test_wrapper_repr_hides_key(wrapper: TlsAuth | TlsCrypt) -> None:
    assert "0001020304" not in repr(wrapper)
    assert "<key>" in repr(wrapper)
