"""Cipher negotiation (docs/protocol.md §10.4)."""

from __future__ import annotations

import pytest

from trivpn.protocol.ncp import (
    NO_SHARED_CIPHER_REASON,
    choose_cipher,
    peer_cipher_list,
    pushed_cipher_allowed,
)
from trivpn.protocol.peerinfo import parse_peer_info

SERVER = ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
OPTS_PLAIN = "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128"
OPTS_CBC = "V4,dev-type tun,link-mtu 1557,tun-mtu 1500,proto UDPv4,cipher AES-256-CBC,auth SHA1"
OPTS_GCM = "V4,dev-type tun,proto UDPv4,cipher AES-128-GCM,auth [null-digest]"

CASES = {
    # name: (server ciphers, peer-info, options string, fallback, expected)
    "first server cipher the client lists": (
        SERVER, "IV_CIPHERS=CHACHA20-POLY1305:AES-128-GCM\n", OPTS_PLAIN, None, "AES-128-GCM"),
    "server order wins over client order": (
        SERVER, "IV_CIPHERS=CHACHA20-POLY1305:AES-256-GCM\n", OPTS_PLAIN, None, "AES-256-GCM"),
    "IV_NCP=2 only means AES-256-GCM:AES-128-GCM": (
        ["CHACHA20-POLY1305", "AES-128-GCM"], "IV_NCP=2\n", OPTS_PLAIN, None, "AES-128-GCM"),
    "IV_NCP=2 without a shared AES-GCM cipher": (
        ["CHACHA20-POLY1305"], "IV_NCP=2\n", OPTS_PLAIN, "AES-256-CBC", None),
    "options-string cipher for an old client": (
        [*SERVER, "AES-256-CBC"], "IV_VER=2.3.18\n", OPTS_CBC, None, "AES-256-CBC"),
    "options-string cipher not in server list: no fallback": (
        SERVER, "IV_VER=2.3.18\n", OPTS_CBC, "AES-256-CBC", None),
    "options-string cipher ignored when IV_CIPHERS is sent": (
        [*SERVER, "AES-256-CBC"], "IV_CIPHERS=AES-192-GCM\n", OPTS_CBC, None, None),
    "IV_NCP=2 and options-string cipher both count": (
        ["AES-128-GCM", "AES-256-GCM"], "IV_NCP=2\n", OPTS_GCM, None, "AES-128-GCM"),
    "nothing known about the peer: fallback": (
        SERVER, "IV_VER=2.3.18\n", OPTS_PLAIN, "AES-256-CBC", "AES-256-CBC"),
    "no peer-info at all: fallback": (SERVER, None, OPTS_PLAIN, "BF-CBC", "BF-CBC"),
    "nothing known and no fallback": (SERVER, None, OPTS_PLAIN, None, None),
    "client list without overlap: no fallback": (
        SERVER, "IV_CIPHERS=AES-256-CBC\n", OPTS_PLAIN, "AES-256-CBC", None),
    "null cipher in options string reads as none": (
        ["none"], "IV_VER=2.4.0\n", "V4,cipher [null-cipher],auth SHA1", None, "none"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_choose_cipher(case):
    server, peer_info, options, fallback, expected = CASES[case]
    assert choose_cipher(server, parse_peer_info(peer_info), options, fallback) == expected


def test_no_shared_cipher_reason_is_the_2_6_text():
    assert NO_SHARED_CIPHER_REASON == "Data channel cipher negotiation failed (no shared cipher)"


def test_peer_cipher_list_prefers_iv_ciphers_over_iv_ncp():
    assert peer_cipher_list(parse_peer_info("IV_NCP=2\nIV_CIPHERS=AES-128-GCM\n")) == (
        "AES-128-GCM",)


@pytest.mark.parametrize(("cipher", "allowed"), [
    ("AES-256-GCM", True), ("aes-128-gcm", True), ("AES-256-CBC", False), ("BF-CBC", False),
])
def test_pushed_cipher_must_be_in_own_data_ciphers(cipher, allowed):
    assert pushed_cipher_allowed(cipher, SERVER) is allowed
