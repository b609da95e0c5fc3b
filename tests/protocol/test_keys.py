"""Legacy PRF and key-block slicing (docs/protocol.md §6.1, §6.2)."""

from __future__ import annotations

import hmac

import pytest

from trivpn.protocol.errors import HandshakeError
from trivpn.protocol.keys import (
    KeySource,
    derive_key_block_prf,
    directional_keys,
    master_secret,
    tls1_prf,
)

CLIENT = KeySource(random1=bytes(range(0x30, 0x50)), random2=bytes(range(0x50, 0x70)),
                   pre_master=bytes(range(0x30)))
SERVER = KeySource(random1=bytes(range(0x70, 0x90)), random2=bytes(range(0x90, 0xB0)))
CLIENT_SID = bytes.fromhex("0102030405060708")
SERVER_SID = bytes.fromhex("1112131415161718")


def test_prf_matches_openvpn_unit_test_vector() -> None:
    secret = (b"Lorem ipsum dolor sit amet, consectetur adipisici elit, sed eiusmod tempor "
              b"incidunt ut labore et dolore magna aliqua.")
    seed = b"Quis aute iure reprehenderit in voluptate velit esse cillum dolore"
    assert len(secret) == 117
    assert tls1_prf(secret, seed, 32) == bytes.fromhex(
        "d98c8518c85e946927916acfc2d592fbb1567e4b4b1459e6a904ac2ddab72d67")


def test_prf_output_is_prefix_stable() -> None:
    long = tls1_prf(b"secret", b"seed", 100)
    assert len(long) == 100
    assert tls1_prf(b"secret", b"seed", 37) == long[:37]


def _reference_tls1_prf(secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 2246 section 5 with the standard library's HMAC."""
    def p_hash(digest: str, key: bytes) -> bytes:
        out, a = b"", seed
        while len(out) < length:
            a = hmac.digest(key, a, digest)
            out += hmac.digest(key, a + seed, digest)
        return out[:length]

    half = (len(secret) + 1) // 2
    md5, sha1 = p_hash("md5", secret[:half]), p_hash("sha1", secret[len(secret) - half:])
    return bytes(x ^ y for x, y in zip(md5, sha1, strict=True))


@pytest.mark.parametrize("secret_len", [1, 48, 128, 129, 300])
def test_prf_is_rfc2246_for_secrets_shorter_and_longer_than_a_hash_block(
        secret_len: int) -> None:
    secret, seed = bytes(range(7, 7 + secret_len % 256)) * (1 + secret_len // 256), b"seed" * 9
    secret = secret[:secret_len]
    assert tls1_prf(secret, seed, 256) == _reference_tls1_prf(secret, seed, 256)


def test_master_secret_vector() -> None:
    assert master_secret(CLIENT, SERVER) == bytes.fromhex(
        "229883ac5358fb9089fb5833c52bceac5f3a5e821e5b61ff"
        "489c250ed342fafbf9103f3999f2115fd917576ce0e1b7c5")


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (0, "5083f6ce6e319037168e5cd5d21f9a5b31d696e2dc7a161dadeaaefbeb518fa8"),
        (64, "0d7b8256afc6bd7c9b347fe0e2aa3e1a791aad6dfbb6ee75a6484eb78b798cb5"),
        (128, "d5a3f0b6cd9db39463fabc4ef744e2189b5572846bc2e41e4e56084f431f5715"),
        (192, "022922cf7165ecc97a24ae492ee2b79d2de9e752aeb1d0411a402131078b2b85"),
    ],
)
def test_key_expansion_vector(start: int, expected: str) -> None:
    block = derive_key_block_prf(CLIENT, SERVER, CLIENT_SID, SERVER_SID)
    assert len(block) == 256
    assert block[start:start + 32] == bytes.fromhex(expected)


def test_key_block_depends_on_session_ids() -> None:
    a = derive_key_block_prf(CLIENT, SERVER, CLIENT_SID, SERVER_SID)
    b = derive_key_block_prf(CLIENT, SERVER, SERVER_SID, CLIENT_SID)
    assert a != b


def test_client_encrypts_with_key0_server_with_key1() -> None:
    block = bytes(range(256))
    client = directional_keys(block, is_server=False)
    server = directional_keys(block, is_server=True)
    assert client.encrypt_cipher == block[0:64]
    assert client.encrypt_hmac == block[64:128]
    assert client.decrypt_cipher == block[128:192]
    assert client.decrypt_hmac == block[192:256]
    assert server.encrypt_cipher == client.decrypt_cipher
    assert server.encrypt_hmac == client.decrypt_hmac
    assert server.decrypt_cipher == client.encrypt_cipher
    assert server.decrypt_hmac == client.encrypt_hmac


@pytest.mark.parametrize(
    ("client", "server", "csid", "ssid"),
    [
        pytest.param(KeySource(CLIENT.random1, CLIENT.random2), SERVER, CLIENT_SID, SERVER_SID,
                     id="no-pre-master"),
        pytest.param(KeySource(CLIENT.random1[:31], CLIENT.random2, CLIENT.pre_master), SERVER,
                     CLIENT_SID, SERVER_SID, id="short-random"),
        pytest.param(CLIENT, SERVER, CLIENT_SID[:7], SERVER_SID, id="short-sid"),
    ],
)
def test_derive_rejects_bad_sizes(client: KeySource, server: KeySource, csid: bytes,
                                  ssid: bytes) -> None:
    with pytest.raises(HandshakeError):
        derive_key_block_prf(client, server, csid, ssid)


def test_directional_keys_rejects_short_block() -> None:
    with pytest.raises(HandshakeError):
        directional_keys(bytes(255), is_server=False)


def test_reprs_hide_key_material() -> None:
    keys = directional_keys(bytes(range(256)), is_server=False)
    for obj in (CLIENT, keys):
        text = repr(obj)
        assert "\\x" not in text
        assert "303132" not in text
        assert "000102" not in text
