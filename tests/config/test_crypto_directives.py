"""Parsing of the crypto and PKI breadth directives (peer-fingerprint, tls-crypt-v2...)."""

from __future__ import annotations

import pytest

from tests.config.helpers import CLIENT_BASE, client
from trivpn.config import ConfigError, parse_config

FP1 = ":".join(["AB"] * 32)
FP2 = ":".join(["0c"] * 32)


@pytest.mark.directive("peer-fingerprint")
def test_peer_fingerprints_add_up_from_lines_and_blocks_skipping_comments():
    o = client(f"peer-fingerprint {FP1}\n<peer-fingerprint>\n# a comment\n; another\n\n"
               f"  {FP2}\n</peer-fingerprint>\n")
    assert o.peer_fingerprints == (bytes([0xAB] * 32), bytes([0x0C] * 32))


@pytest.mark.parametrize(("value", "message"), [
    (":".join(["AB"] * 31), "wrong length - expected 32 bytes, got 31"),
    (":".join(["AB"] * 33), "wrong length - expected 32 bytes, got 33"),
    ("SHA256:" + FP1, "format error in hash fingerprint"),
    (FP1.replace(":", ""), "format error in hash fingerprint"),
])
def test_malformed_fingerprint_names_the_line(value: str, message: str):
    with pytest.raises(ConfigError) as info:
        client(f"peer-fingerprint {value}\n")
    assert message in str(info.value) and "client.conf:8" in str(info.value)


def test_peer_fingerprint_replaces_the_ca_requirement():
    text = CLIENT_BASE.replace("ca ca.crt\n", "") + f"peer-fingerprint {FP1}\n"
    assert parse_config(text, "client.conf").ca is None
    with pytest.raises(ConfigError, match="no 'ca' directive"):
        parse_config(CLIENT_BASE.replace("ca ca.crt\n", ""), "client.conf")


@pytest.mark.directive("tls-crypt-v2")
def test_tls_crypt_v2_beside_tls_crypt_is_refused():
    with pytest.raises(ConfigError, match="mutually exclusive"):
        client("tls-crypt-v2 v2.key\ntls-crypt ta.key\n")


@pytest.mark.directive("tls-crypt-v2-max-age")
def test_tls_crypt_v2_max_age_must_be_positive():
    with pytest.raises(ConfigError, match="tls-crypt-v2-max-age"):
        client("tls-crypt-v2-max-age 0\n")
    assert client("tls-crypt-v2-max-age 7\n").tls_crypt_v2_max_age == 7


@pytest.mark.directive("verify-hash")
def test_verify_hash_is_sha1_unless_sha256_is_named_and_warns_deprecated():
    sha1 = ":".join(["12"] * 20)
    o = client(f"verify-hash {sha1}\n")
    assert o.verify_hash == (bytes([0x12] * 20),) and o.verify_hash_algo == "SHA1"
    o = client(f"verify-hash {FP1} SHA256\n")
    assert o.verify_hash_algo == "SHA256"
    with pytest.raises(ConfigError, match="wrong length - expected 20 bytes"):
        client(f"verify-hash {FP1}\n")


def test_verify_hash_and_peer_fingerprint_are_mutually_exclusive():
    with pytest.raises(ConfigError, match="mutually exclusive"):
        client(f"peer-fingerprint {FP1}\nverify-hash {FP1} SHA256\n")
